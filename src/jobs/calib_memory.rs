//! How many calibration images fit in memory. The quantization pipeline
//! runs the FP and the quantized network side by side on the whole
//! calibration batch, so its memory grows with images × activation size:
//! nothing for CIFAR ResNets (0.4 MB per image), gigabytes for 224×224
//! models (ResNet-18: 19 MB per image, 1024 images would need 20 GB).
use crate::model::Graph;
use crate::util::available_memory_bytes;
use crate::{Error, Result};

/// What a default calibration set may hold: a size that suits every
/// machine this runs on. Explicit sizes may use more, up to what is free.
const DEFAULT_BUDGET: u64 = 2 << 30;

/// Live activations per image, counted in copies of the largest one.
/// Measured: ResNet-18 at 224×224 peaked at 4.1 GB for 256 images, 5.0×
/// their largest activations; 6 leaves room.
const COPIES: u64 = 6;

/// Bytes the pipeline holds per calibration image for `graph`.
pub fn bytes_per_image(graph: &Graph) -> u64 {
    let largest = graph
        .value_shapes()
        .iter()
        .map(|&(c, h, w)| (c * h * w) as u64)
        .max()
        .unwrap_or(0);
    COPIES * 4 * largest
}

/// The most images a default calibration set takes for `graph`: what fits
/// 2 GiB, or half the free memory if that is less (at least 16).
pub fn default_cap(graph: &Graph) -> usize {
    let budget = available_memory_bytes().map_or(DEFAULT_BUDGET, |a| DEFAULT_BUDGET.min(a / 2));
    (budget / bytes_per_image(graph).max(1)).max(16) as usize
}

/// An error, before anything is allocated, when `n` calibration images
/// would not fit in the memory that is free (so the job fails with a
/// reason instead of the process being killed).
pub fn check(graph: &Graph, n: usize) -> Result<()> {
    let need = n as u64 * bytes_per_image(graph);
    match available_memory_bytes() {
        Some(free) if need > free / 10 * 9 => Err(Error::Invalid(format!(
            "calibrating on {n} images needs about {:.1} GB for this model's activations, \
             more than the {:.1} GB free: use at most {} images",
            need as f64 / 1e9,
            free as f64 / 1e9,
            (free / 10 * 9 / bytes_per_image(graph).max(1)).max(1)
        ))),
        _ => Ok(()),
    }
}

/// Copies of a layer's `d × d` f64 Gram matrix a Gram-based quantizer holds
/// at once (GPTQ: the Hessian, its permuted copy, and two of the reversed
/// copy, its Cholesky factor, the factor's inverse and `U` while they are
/// computed; the f32 sums of the threads building the Hessian), and
/// of its `N × d` weights in f64 (the working copy, the permuted one and
/// the codes).
const GRAM_COPIES: u64 = 6;
const WEIGHT_COPIES: u64 = 3;

/// An error, before calibration, when a quantizer that builds each layer's
/// input Gram matrix (GPTQ, GPFQ, AWQ) would need more memory for the
/// widest layer's than is free: ImageNet VGGs' first linear reads 25 088
/// features, a 5 GB Hessian per copy.
pub fn check_gram(graph: &Graph, method: crate::quant::Method) -> Result<()> {
    use crate::quant::Method;
    if !matches!(
        method,
        Method::Gptq | Method::Gpfq | Method::Awq | Method::AwqSalient
    ) {
        return Ok(());
    }
    let widest = graph
        .layer_nodes()
        .into_iter()
        .filter_map(|i| {
            let (_, shape) = graph.weight(i)?;
            let (n, d) = (shape[0] as u64, (shape[1] * shape[2] * shape[3]) as u64);
            let need = 8 * (GRAM_COPIES * d * d + WEIGHT_COPIES * n * d);
            Some((graph.nodes[i].name.clone(), d, need))
        })
        .max_by_key(|l| l.2);
    let (Some((name, d, need)), Some(free)) = (widest, available_memory_bytes()) else {
        return Ok(());
    };
    if need > free / 10 * 9 {
        return Err(Error::Invalid(format!(
            "{} builds each layer's input Gram matrix: layer {name} reads {d} inputs, a {d}×{d} \
             matrix, about {:.1} GB with its working copies, more than the {:.1} GB free; \
             quantize this model with rtn or smoothquant",
            method.name(),
            need as f64 / 1e9,
            free as f64 / 1e9
        )));
    }
    Ok(())
}

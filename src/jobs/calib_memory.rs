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

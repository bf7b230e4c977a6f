//! Quantization job time on the bundled ResNet-20 (evaluation excluded),
//! 256 calibration images from the bundled sample (`qscope quantize --calib 1024`
//! on the full train split gives the headline figures).
use qscope::data::{sample_spread, DatasetRoot, Preprocess, SplitKind};
use qscope::quant::{quantize_model, Method, QuantConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn main() {
    divan::main();
}

#[divan::bench(args = ["rtn", "gptq", "gpfq"], sample_count = 3, sample_size = 1)]
fn resnet20_w4_calib256(bencher: divan::Bencher, method: &str) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors")).expect("load");
    let train = DatasetRoot::open(&base.join("cifar10"))
        .expect("data")
        .split(SplitKind::Train)
        .expect("train");
    let idx = sample_spread(&train, &(0..10).collect::<Vec<_>>(), 256, 0).expect("sample");
    let calib = Preprocess::for_model(&g.meta).batch(&train, &idx);
    let cfg = QuantConfig::new(Method::parse(method).expect("method"), 4);
    bencher.bench_local(|| {
        quantize_model(&g, &calib, &cfg, &AtomicBool::new(false), &mut |_, _, _| {})
            .expect("quantize")
    });
}

/// One 3×3 stride-1 conv's backward pass (dX, dW, db) at CoRa's and
/// fine-tuning's batch of 32, on ResNet-20's three stages: what training
/// and the CoRa rank search spend most of their time in.
#[divan::bench(args = [(16, 32), (32, 16), (64, 8)], sample_count = 20)]
fn backward_conv3x3_batch32(bencher: divan::Bencher, (c, s): (usize, usize)) {
    use qscope::engine::ops::ConvGeom;
    let mut rng = qscope::util::Rng::new(1);
    let x = qscope::engine::Tensor::from_shape_fn((32, c, s, s), |_| rng.normal() as f32);
    let dy = qscope::engine::Tensor::from_shape_fn((32, c, s, s), |_| rng.normal() as f32);
    let w: Vec<f32> = (0..c * c * 9).map(|_| rng.normal() as f32 * 0.1).collect();
    bencher
        .counter(divan::counter::ItemsCount::new(
            2 * 2 * 32 * c * c * 9 * s * s,
        ))
        .bench_local(|| {
            qscope::train::backward::conv(&x, &w, [c, c, 3, 3], ConvGeom::new(1, 1), &dy)
                .expect("backward")
        });
}

/// GPTQ's Hessian `X Xᵀ` of one 3×3 layer over 128 calibration images, on
/// ResNet-20's three stages: the bulk of a GPTQ run.
#[divan::bench(args = [(16, 32), (32, 16), (64, 8)], sample_count = 10)]
fn gram_conv3x3_calib128(bencher: divan::Bencher, (c, s): (usize, usize)) {
    gram_bench(bencher, c, s, "best");
}

/// The same on the AVX2 Gram kernel (what AVX2-only CPUs run)...
#[divan::bench(args = [(16, 32), (32, 16), (64, 8)], sample_count = 10)]
fn gram_conv3x3_calib128_avx2(bencher: divan::Bencher, (c, s): (usize, usize)) {
    gram_bench(bencher, c, s, "avx2");
}

/// ...and on the GEMM crate (CPUs with neither AVX2 nor AVX-512; here it
/// runs its own AVX-512 kernels).
#[divan::bench(args = [(16, 32), (32, 16), (64, 8)], sample_count = 10)]
fn gram_conv3x3_calib128_gemm(bencher: divan::Bencher, (c, s): (usize, usize)) {
    gram_bench(bencher, c, s, "gemm");
}

fn gram_bench(bencher: divan::Bencher, c: usize, s: usize, path: &str) {
    use qscope::engine::ops::ConvGeom;
    use qscope::quant::stats::{gram_on, LayerGeom};
    let mut rng = qscope::util::Rng::new(1);
    let x = qscope::engine::Tensor::from_shape_fn((128, c, s, s), |_| rng.normal() as f32);
    let lg = LayerGeom::Conv {
        shape: [c, c, 3, 3],
        geom: ConvGeom::new(1, 1),
    };
    bencher
        .counter(divan::counter::ItemsCount::new(
            2 * 128 * (c * 9).pow(2) * s * s,
        ))
        .bench_local(|| {
            qscope::engine::kernels::direct_conv::force_avx2(path == "avx2");
            let h = gram_on(&x, lg, path != "gemm");
            qscope::engine::kernels::direct_conv::force_avx2(false);
            h
        });
}

/// GPTQ's solve for one 3×3 layer of `d / 9` inputs channels to as many
/// outputs (ResNet-18's 64-, 256- and 512-channel layers), from a Hessian
/// of 2·d random positions: the damped inverse's Cholesky factor and the
/// column-by-column quantization with its lazy updates.
#[divan::bench(args = [576, 2304, 4608], sample_count = 3, sample_size = 1)]
fn gptq_solve(bencher: divan::Bencher, d: usize) {
    use qscope::quant::gptq::{gptq, GptqOptions};
    use qscope::quant::grid::{fit_rows, GridKind};
    let n = d / 9;
    let mut rng = qscope::util::Rng::new(2);
    let m = 2 * d;
    let x: Vec<f32> = (0..d * m).map(|_| rng.normal() as f32).collect();
    let mut h32 = vec![0f32; d * d];
    qscope::engine::kernels::sgemm(
        qscope::engine::kernels::MatRef::row_major(&x, d, m),
        qscope::engine::kernels::MatRef::transposed(&x, m, d),
        &mut h32,
        false,
        qscope::engine::threads(),
    );
    let h: Vec<f64> = h32.iter().map(|&v| v as f64).collect();
    let w: Vec<f32> = (0..n * d).map(|_| 0.05 * rng.normal() as f32).collect();
    let grids = fit_rows(&w, n, 4, GridKind::Asym, true, false);
    bencher
        .bench_local(|| gptq(&w, n, d, &h, &grids, GptqOptions::default(), "bench").expect("gptq"));
}

//! Engine throughput: the conv kernel on ResNet-20's shapes and whole forward
//! passes of the bundled ResNet-20 at batch 1 and 256. Compare with ONNX
//! Runtime in the same run (`qscope bench` prints the figures as JSON too).
use qscope::engine::ops::{conv2d, ConvGeom, Epilogue};
use qscope::engine::Tensor;
use qscope::model::forward;
use qscope::model::lower::CodeOrder;
use std::path::Path;

fn main() {
    divan::main();
}

/// A rayon pool of `threads` (the engine splits work by its size).
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool")
}

fn input(n: usize, c: usize, s: usize) -> Tensor {
    let mut rng = qscope::util::Rng::new(1);
    Tensor::from_shape_fn((n, c, s, s), |_| rng.normal() as f32)
}

/// (channels, spatial) of ResNet-20's three stages, and ImageNet ResNets'
/// 14- and 7-wide maps (the Winograd kernel's gathered path). Counted as
/// direct-convolution multiply-adds (×2), so Winograd shows an effective rate.
#[divan::bench(args = [(16, 32), (32, 16), (64, 8), (128, 14), (256, 7)])]
fn conv3x3_batch64(bencher: divan::Bencher, (c, s): (usize, usize)) {
    conv3x3(bencher, c, s, true);
}

/// The same convolutions on the direct kernel (Winograd off).
#[divan::bench(args = [(16, 32), (32, 16), (64, 8), (128, 14), (256, 7)])]
fn conv3x3_batch64_direct(bencher: divan::Bencher, (c, s): (usize, usize)) {
    conv3x3(bencher, c, s, false);
}

fn conv3x3(bencher: divan::Bencher, c: usize, s: usize, winograd: bool) {
    qscope::engine::ops::conv::set_winograd(winograd);
    let x = input(64, c, s);
    let w = vec![0.01f32; c * c * 9];
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 64 * c * c * 9 * s * s))
        .bench_local(|| {
            conv2d(
                &x,
                &w,
                [c, c, 3, 3],
                ConvGeom::new(1, 1),
                Epilogue {
                    relu: true,
                    ..Default::default()
                },
            )
        });
}

#[divan::bench(args = [1, 256])]
fn resnet20_forward(bencher: divan::Bencher, batch: usize) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/resnet20.safetensors");
    let g = qscope::model::load(&p).expect("load").fused();
    let x = input(batch, 3, 32);
    bencher
        .counter(divan::counter::ItemsCount::new(batch))
        .bench_local(|| forward(&g, x.clone()));
}

/// A 4-bit layer's per-call weight transform (codes → Winograd weights),
/// (channels in = out): ResNet-20's stages and a 128-channel layer.
#[divan::bench(args = [16, 32, 64, 128])]
fn winograd_transform_4bit(bencher: divan::Bencher, c: usize) {
    use qscope::engine::kernels::winograd;
    let lb = grid_layer(c);
    let nib = nibbles(&lb);
    let mut u = vec![];
    bencher
        .counter(divan::counter::ItemsCount::new(c * c))
        .bench_local(|| {
            winograd::transform_nibbles_into(nib, c, c, &mut u);
        });
}

/// The same layer transformed in 32 KB chunks of output channels into one
/// reused buffer, as a single image does (`winograd::conv_image_4bit`): the
/// output stays in L1.
#[divan::bench(args = [16, 32, 64, 128])]
fn winograd_transform_4bit_chunked(bencher: divan::Bencher, c: usize) {
    use qscope::engine::kernels::winograd;
    let lb = grid_layer(c);
    let nib = nibbles(&lb);
    let per = (32 * 1024 / (16 * c * winograd::OR * 4)).max(1);
    let obs = c.div_ceil(winograd::OR);
    let mut u = vec![];
    bencher
        .counter(divan::counter::ItemsCount::new(c * c))
        .bench_local(|| {
            let mut ob = 0;
            while ob < obs {
                let n = per.min(obs - ob);
                winograd::transform_nibbles_into(
                    nib.from_block(ob, c),
                    n * winograd::OR,
                    c,
                    &mut u,
                );
                ob += n;
            }
        });
}

/// A `c`×`c` 3×3 layer whose rows lie on 16-level grids, lowered to 4-bit
/// codes in the Winograd kernel's order.
fn grid_layer(c: usize) -> qscope::model::lower::LowBitWeights {
    let w: Vec<f32> = (0..c * c * 9)
        .map(|i| -0.2 + 0.03 * ((i * 7919) % 16) as f32)
        .collect();
    qscope::model::lower::lower_lowbit(&w, [c, c, 3, 3], CodeOrder::Winograd).expect("4-bit grid")
}

fn nibbles(
    lb: &qscope::model::lower::LowBitWeights,
) -> qscope::engine::kernels::winograd::Nibbles<'_> {
    qscope::engine::kernels::winograd::Nibbles {
        codes: &lb.codes,
        step: &lb.step,
        lo: &lb.lo,
    }
}

/// The same on the AVX2 body (what AVX2-only CPUs run).
#[divan::bench(args = [16, 32, 64, 128])]
fn winograd_transform_4bit_avx2(bencher: divan::Bencher, c: usize) {
    qscope::engine::kernels::direct_conv::force_avx2(true);
    winograd_transform_4bit(bencher, c);
    qscope::engine::kernels::direct_conv::force_avx2(false);
}

/// One image through a stage of 19 different 3×3 layers (as ResNet-56's
/// stages: the weights cycle through L2/L3 as in a real pass, instead of
/// staying hot), FP32 with its transform cached as a model keeps it,
/// against 4-bit codes transformed per call. Args: (channels, spatial,
/// threads).
#[divan::bench(args = STAGES)]
fn stage19_batch1_fp32(bencher: divan::Bencher, (c, s, t): (usize, usize, usize)) {
    stage19_batch1(bencher, c, s, t, false);
}

/// The same stage with 4-bit weights (`winograd::conv_image_4bit`).
#[divan::bench(args = STAGES)]
fn stage19_batch1_w4(bencher: divan::Bencher, (c, s, t): (usize, usize, usize)) {
    stage19_batch1(bencher, c, s, t, true);
}

/// The same stage in W8A8 on the AVX2 kernels (integer Winograd), to
/// compare with `stage19_batch1_fp32` under `--avx2`-like conditions.
#[divan::bench(args = STAGES)]
fn stage19_batch1_int8_avx2(bencher: divan::Bencher, (c, s, t): (usize, usize, usize)) {
    use qscope::engine::kernels::int8_conv::Kernel;
    use qscope::engine::ops::qconv::{conv2d_int8, Int8Weights};
    if !Kernel::Avx2Pairs.supported() {
        return;
    }
    qscope::engine::ops::conv::set_winograd(true);
    let pool = pool(t);
    let layers: Vec<Int8Weights> = (0..19)
        .map(|l| {
            let codes: Vec<i8> = (0..c * c * 9)
                .map(|i| ((i * 7919 + l) % 255) as i32 - 127)
                .map(|v| v as i8)
                .collect();
            let mut w = Int8Weights::new(&codes, vec![0.001; c], [c, c, 3, 3]);
            w.kernel = Kernel::Avx2Pairs;
            w
        })
        .collect();
    let x = input(1, c, s);
    bencher
        .counter(divan::counter::ItemsCount::new(19usize))
        .bench_local(|| {
            pool.install(|| {
                for w in &layers {
                    let y = conv2d_int8(&x, w, ConvGeom::new(1, 1), 0.02, None, None, true, None);
                    divan::black_box(y.expect("conv"));
                }
            })
        });
}

const STAGES: [(usize, usize, usize); 6] = [
    (16, 32, 1),
    (32, 16, 1),
    (64, 8, 1),
    (16, 32, 2),
    (32, 16, 2),
    (64, 8, 2),
];

fn stage19_batch1(bencher: divan::Bencher, c: usize, s: usize, threads: usize, w4: bool) {
    use qscope::engine::kernels::winograd;
    use qscope::engine::ops::conv::{conv2d_with, WinoWeights};
    qscope::engine::ops::conv::set_winograd(true);
    let pool = pool(threads);
    let layers: Vec<_> = (0..19)
        .map(|l| {
            let w: Vec<f32> = (0..c * c * 9)
                .map(|i| -0.2 + 0.03 * ((i * 7919 + l) % 16) as f32)
                .collect();
            let lb = qscope::model::lower::lower_lowbit(&w, [c, c, 3, 3], CodeOrder::Winograd)
                .expect("4-bit");
            let u = winograd::transform_dense(&w, c, c);
            (w, lb, u)
        })
        .collect();
    let x = input(1, c, s);
    bencher
        .counter(divan::counter::ItemsCount::new(19usize))
        .bench_local(|| {
            pool.install(|| {
                for (w, lb, u) in &layers {
                    let wino = if w4 {
                        WinoWeights::Nibbles(nibbles(lb))
                    } else {
                        WinoWeights::Transformed(u)
                    };
                    let y = conv2d_with(
                        &x,
                        w,
                        None,
                        Some(wino),
                        [c, c, 3, 3],
                        ConvGeom::new(1, 1),
                        Epilogue {
                            relu: true,
                            ..Default::default()
                        },
                    );
                    divan::black_box(y.expect("conv"));
                }
            })
        });
}

/// ResNet-50's 1×1 stride-1 layers (out, in, spatial), one image.
const POINTWISE: [(usize, usize, usize); 4] = [
    (256, 64, 56),
    (64, 256, 56),
    (1024, 256, 14),
    (512, 2048, 7),
];

/// A 1×1 layer at batch 1 on f32 weights (the GEMM an f32 model runs)...
#[divan::bench(args = POINTWISE)]
fn pointwise_batch1_fp32(bencher: divan::Bencher, (o, c, s): (usize, usize, usize)) {
    pointwise_batch1(bencher, o, c, s, false);
}

/// ...and on 4-bit codes decoded per call in L2-sized chunks.
#[divan::bench(args = POINTWISE)]
fn pointwise_batch1_w4(bencher: divan::Bencher, (o, c, s): (usize, usize, usize)) {
    pointwise_batch1(bencher, o, c, s, true);
}

fn pointwise_batch1(bencher: divan::Bencher, o: usize, c: usize, s: usize, w4: bool) {
    use qscope::engine::kernels::direct_conv::Weights;
    use qscope::engine::ops::conv::conv2d_with;
    let pool = pool(1);
    let w: Vec<f32> = (0..o * c)
        .map(|i| -0.2 + 0.03 * ((i * 7919) % 16) as f32)
        .collect();
    let lb =
        qscope::model::lower::lower_lowbit(&w, [o, c, 1, 1], CodeOrder::Rows).expect("4-bit grid");
    let x = input(1, c, s);
    bencher.bench_local(|| {
        pool.install(|| {
            let direct = w4.then_some(Weights::Nibbles {
                nibbles: &lb.codes,
                step: &lb.step,
                lo: &lb.lo,
            });
            let y = conv2d_with(
                &x,
                &w,
                direct,
                None,
                [o, c, 1, 1],
                ConvGeom::new(1, 0),
                Epilogue::default(),
            );
            divan::black_box(y.expect("conv"));
        })
    });
}

/// VGG's classifier shapes (out, in) and thread counts.
const LINEAR: &[((usize, usize), usize)] = &[
    ((4096, 25088), 1),
    ((4096, 25088), 2),
    ((4096, 4096), 2),
    ((1000, 4096), 2),
];

/// A linear layer at batch 1 on f32 weights (the GEMM reads 4 bytes a
/// weight)...
#[divan::bench(args = LINEAR)]
fn linear_batch1_fp32(bencher: divan::Bencher, (shape, threads): ((usize, usize), usize)) {
    linear_batch(bencher, shape, 1, threads, 32);
}

/// ...and on 4-bit codes decoded in registers (half a byte a weight).
/// Counted in weights read per second.
#[divan::bench(args = LINEAR)]
fn linear_batch1_w4(bencher: divan::Bencher, (shape, threads): ((usize, usize), usize)) {
    linear_batch(bencher, shape, 1, threads, 4);
}

/// ...and on 3-bit codes held packed (3/8 of a byte a weight), each row
/// unpacked to nibbles in L1 before the same loop.
#[divan::bench(args = LINEAR)]
fn linear_batch1_w3(bencher: divan::Bencher, (shape, threads): ((usize, usize), usize)) {
    linear_batch(bencher, shape, 1, threads, 3);
}

/// The same layers at batch 64 on 2 threads: the GEMM against the 4-bit
/// GEMV's groups of four images (each group streams the codes once).
#[divan::bench(args = [(4096, 4096), (4096, 25088)])]
fn linear_batch64_fp32(bencher: divan::Bencher, shape: (usize, usize)) {
    linear_batch(bencher, shape, 64, 2, 32);
}

#[divan::bench(args = [(4096, 4096), (4096, 25088)])]
fn linear_batch64_w4(bencher: divan::Bencher, shape: (usize, usize)) {
    linear_batch(bencher, shape, 64, 2, 4);
}

/// A linear layer on `bits`-bit codes (3 or 4) or, for 32, f32 weights.
fn linear_batch(
    bencher: divan::Bencher,
    (o, d): (usize, usize),
    n: usize,
    threads: usize,
    bits: u8,
) {
    use qscope::engine::ops::{linear, linear_w4, Codes4};
    let pool = pool(threads);
    let levels = if bits == 3 { 8 } else { 16 };
    let w: Vec<f32> = (0..o * d)
        .map(|i| -0.2 + 0.03 * ((i * 7919) % levels) as f32)
        .collect();
    let lb = qscope::model::lower::lower_lowbit(&w, [o, d, 1, 1], CodeOrder::Rows)
        .expect("4-bit grid")
        .hold_3bit();
    assert_eq!(bits == 3, lb.packed3);
    let x = input(n, d, 1);
    bencher
        .counter(divan::counter::ItemsCount::new(n * o * d))
        .bench_local(|| {
            pool.install(|| {
                let y = if bits <= 4 {
                    let codes = Codes4 {
                        codes: lb.row_codes(),
                        step: &lb.step,
                        lo: &lb.lo,
                        out_features: o,
                        in_features: d,
                    };
                    linear_w4(&x, codes, None)
                } else {
                    linear(&x, &w, o, None)
                };
                divan::black_box(y.expect("linear"));
            })
        });
}

/// W8A8 3×3 convolutions on AVX2-only CPUs' kernels (run here even on
/// AVX-512): the integer Winograd kernel against the direct ones, 8-bit
/// weights on 16-bit pairs and 7-bit on `vpmaddubsw`. Counted as direct
/// multiply-adds (×2): GOP/s, Winograd's effective.
#[divan::bench(args = [(16, 32), (32, 16), (64, 8), (128, 14), (256, 7)])]
fn int8_conv3x3_batch64_avx2_winograd(bencher: divan::Bencher, (c, s): (usize, usize)) {
    int8_conv3x3(bencher, c, s, None);
}

#[divan::bench(args = [(16, 32), (32, 16), (64, 8), (128, 14), (256, 7)])]
fn int8_conv3x3_batch64_avx2_pairs(bencher: divan::Bencher, (c, s): (usize, usize)) {
    use qscope::engine::kernels::int8_conv::Kernel;
    int8_conv3x3(bencher, c, s, Some(Kernel::Avx2Pairs));
}

#[divan::bench(args = [(16, 32), (32, 16), (64, 8), (128, 14), (256, 7)])]
fn int8_conv3x3_batch64_avx2_maddubs(bencher: divan::Bencher, (c, s): (usize, usize)) {
    use qscope::engine::kernels::int8_conv::Kernel;
    int8_conv3x3(bencher, c, s, Some(Kernel::Avx2));
}

fn int8_conv3x3(
    bencher: divan::Bencher,
    c: usize,
    s: usize,
    direct: Option<qscope::engine::kernels::int8_conv::Kernel>,
) {
    use qscope::engine::kernels::int8_conv::Kernel;
    use qscope::engine::ops::qconv::{conv2d_int8, Int8Weights};
    if !Kernel::Avx2Pairs.supported() {
        return;
    }
    qscope::engine::ops::conv::set_winograd(true);
    let mut rng = qscope::util::Rng::new(2);
    // 7-bit codes for the maddubs kernel, 8-bit for the others.
    let max = if direct == Some(Kernel::Avx2) {
        64
    } else {
        127
    };
    let codes: Vec<i8> = (0..c * c * 9)
        .map(|_| (rng.below(2 * max + 1) as i32 - max as i32) as i8)
        .collect();
    let mut w = Int8Weights::new(&codes, vec![0.01; c], [c, c, 3, 3]);
    w.kernel = Kernel::Avx2Pairs;
    let x = input(64, c, s);
    bencher
        .counter(divan::counter::ItemsCount::new(2 * 64 * c * c * 9 * s * s))
        .bench_local(|| {
            conv2d_int8(&x, &w, ConvGeom::new(1, 1), 0.02, None, None, true, direct)
                .expect("int8 conv")
        });
}

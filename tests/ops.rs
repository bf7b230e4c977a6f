//! Every engine op against an independent naive implementation (direct loops
//! in f64). Tolerance: 1e-5 relative to the output's max magnitude (f32 GEMM
//! accumulation order differs from the naive sum).
mod common;
use common::{max_rel_diff, on_threads, random_input, same_bits};
use qscope::engine::ops::{self, ConvGeom, Epilogue};
use qscope::engine::Tensor;
use qscope::model::lower::CodeOrder;
use qscope::util::Rng;

/// Tests that flip the engine's global kernel switches take this lock, so
/// they do not change the kernels under each other.
static SWITCHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn naive_conv(
    x: &Tensor,
    w: &[f32],
    [o, cg, kh, kw]: [usize; 4],
    stride: usize,
    pad: usize,
    groups: usize,
    bias: Option<&[f32]>,
) -> Tensor {
    let (n, c, h, wd) = x.dim();
    let ho = (h + 2 * pad - kh) / stride + 1;
    let wo = (wd + 2 * pad - kw) / stride + 1;
    let og = o / groups;
    let _ = c;
    Tensor::from_shape_fn((n, o, ho, wo), |(b, oc, oy, ox)| {
        let g = oc / og;
        let mut s = bias.map_or(0.0, |bv| bv[oc] as f64);
        for ci in 0..cg {
            for ky in 0..kh {
                for kx in 0..kw {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    let ix = (ox * stride + kx) as isize - pad as isize;
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        s += x[[b, g * cg + ci, iy as usize, ix as usize]] as f64
                            * w[((oc * cg + ci) * kh + ky) * kw + kx] as f64;
                    }
                }
            }
        }
        s as f32
    })
}

#[test]
fn conv_matches_direct_loops_across_shapes_strides_groups_and_batch_sizes() {
    let mut rng = Rng::new(3);
    // (n, c, h, o, k, stride, pad, groups): batch 1 exercises the row-block path.
    let cases = [
        (1, 3, 32, 16, 3, 1, 1, 1),
        (4, 16, 8, 32, 3, 2, 1, 1),
        (3, 8, 9, 8, 1, 1, 0, 1),
        (2, 8, 7, 16, 1, 2, 0, 1),
        (1, 4, 11, 6, 7, 2, 3, 2),
        (5, 6, 6, 6, 3, 1, 1, 6),
        (1, 16, 16, 16, 3, 1, 1, 1),
    ];
    for &(n, c, h, o, k, s, p, g) in &cases {
        let x = random_input(n, c, h, rng.next_u64());
        let shape = [o, c / g, k, k];
        let w: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        let bias: Vec<f32> = (0..o).map(|_| rng.normal() as f32).collect();
        let got = ops::conv2d(
            &x,
            &w,
            shape,
            ConvGeom {
                stride: s,
                pad: p,
                groups: g,
            },
            Epilogue {
                bias: Some(&bias),
                ..Default::default()
            },
        )
        .expect("conv");
        let want = naive_conv(&x, &w, shape, s, p, g, Some(&bias));
        assert!(
            max_rel_diff(&got, &want) < 1e-5,
            "case {:?}: {}",
            (n, c, h, o, k, s, p, g),
            max_rel_diff(&got, &want)
        );
    }
}

#[test]
fn conv_epilogue_adds_residual_then_applies_relu() {
    let x = random_input(2, 4, 6, 1);
    let res = random_input(2, 5, 6, 2);
    let mut rng = Rng::new(5);
    let w: Vec<f32> = (0..5 * 4 * 9).map(|_| rng.normal() as f32).collect();
    let got = ops::conv2d(
        &x,
        &w,
        [5, 4, 3, 3],
        ConvGeom::new(1, 1),
        Epilogue {
            bias: None,
            residual: Some(&res),
            relu: true,
        },
    )
    .expect("conv");
    let want = (naive_conv(&x, &w, [5, 4, 3, 3], 1, 1, 1, None) + &res).mapv(|v| v.max(0.0));
    assert!(max_rel_diff(&got, &want) < 1e-5);
}

#[test]
fn conv_rejects_mismatched_channels_instead_of_panicking() {
    let x = random_input(1, 3, 8, 1);
    let err = ops::conv2d(
        &x,
        &[0.0; 16 * 4 * 9],
        [16, 4, 3, 3],
        ConvGeom::new(1, 1),
        Epilogue::default(),
    )
    .unwrap_err();
    assert!(err.contains("3 channels"), "{err}");
}

#[test]
fn linear_pools_and_shortcut_match_direct_loops() {
    let x = random_input(3, 6, 5, 9);
    let mut rng = Rng::new(11);
    let w: Vec<f32> = (0..4 * 150).map(|_| rng.normal() as f32).collect();
    let b: Vec<f32> = (0..4).map(|_| rng.normal() as f32).collect();
    let got = ops::linear(&x, &w, 4, Some(&b)).expect("linear");
    let want = Tensor::from_shape_fn((3, 4, 1, 1), |(n, o, _, _)| {
        let flat: Vec<f32> = x
            .slice(ndarray::s![n, .., .., ..])
            .iter()
            .copied()
            .collect();
        b[o] + flat
            .iter()
            .enumerate()
            .map(|(i, v)| v * w[o * 150 + i])
            .sum::<f32>()
    });
    assert!(max_rel_diff(&got, &want) < 1e-5);

    let gap = ops::global_avg_pool(&x);
    assert!(
        (gap[[1, 2, 0, 0]] - x.slice(ndarray::s![1, 2, .., ..]).mean().expect("mean")).abs() < 1e-6
    );

    let mp = ops::max_pool(&x, 3, 2, 1).expect("pool");
    assert_eq!(mp.dim(), (3, 6, 3, 3));
    // Window at (1,1) covers rows 1..=3, cols 1..=3.
    let m = x
        .slice(ndarray::s![0, 0, 1..4, 1..4])
        .iter()
        .fold(f32::MIN, |a, &v| a.max(v));
    assert_eq!(mp[[0, 0, 1, 1]], m);
    // Top-left window includes padding: only rows/cols 0..=1 are real.
    let m0 = x
        .slice(ndarray::s![0, 0, 0..2, 0..2])
        .iter()
        .fold(f32::MIN, |a, &v| a.max(v));
    assert_eq!(mp[[0, 0, 0, 0]], m0);

    let ap = ops::avg_pool(&x, 2, 2, 0).expect("pool");
    let a = x.slice(ndarray::s![2, 5, 2..4, 0..2]).sum() / 4.0;
    assert!((ap[[2, 5, 1, 0]] - a).abs() < 1e-6);

    let sc = ops::shortcut_pad(&x, 2, 1, 2);
    assert_eq!(sc.dim(), (3, 9, 3, 3));
    assert_eq!(sc[[0, 0, 1, 1]], 0.0);
    assert_eq!(sc[[0, 1, 1, 2]], x[[0, 0, 2, 4]]);
    assert_eq!(sc[[2, 6, 2, 0]], x[[2, 5, 4, 0]]);
    assert_eq!(sc[[2, 8, 0, 0]], 0.0);
    // Every element against the definition, on odd and unequal sizes.
    for (h, w, stride) in [(5, 7, 2), (6, 5, 3), (4, 4, 1)] {
        let x = random_input(2, 3, 1, 4)
            .broadcast((2, 3, h, w))
            .expect("b")
            .to_owned()
            + &Tensor::from_shape_fn((2, 3, h, w), |(b, c, y, z)| {
                (b * 1000 + c * 100 + y * 10 + z) as f32
            });
        let sc = ops::shortcut_pad(&x, stride, 2, 1);
        let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
        assert_eq!(sc.dim(), (2, 6, ho, wo));
        for ((b, c, y, z), &v) in sc.indexed_iter() {
            let want = if (2..5).contains(&c) {
                x[[b, c - 2, y * stride, z * stride]]
            } else {
                0.0
            };
            assert_eq!(v, want, "{h}x{w} stride {stride} at {:?}", (b, c, y, z));
        }
    }
}

/// Max and average pooling against the window loop they replace, over
/// windows, strides and paddings (padding rows and columns on every side,
/// windows that overhang the last row), and a map large enough to be split
/// across threads. Max is exact; the average within 2 ulp-ish (its sum is
/// taken row by row instead of in window order).
#[test]
fn pools_match_a_naive_window_loop() {
    fn naive(x: &Tensor, k: usize, s: usize, p: usize, is_max: bool) -> Tensor {
        let (n, c, h, w) = x.dim();
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        Tensor::from_shape_fn((n, c, ho, wo), |(b, ch, oy, ox)| {
            let mut acc = if is_max { f32::NEG_INFINITY } else { 0.0 };
            for ky in 0..k {
                for kx in 0..k {
                    let (iy, ix) = (
                        (oy * s + ky) as isize - p as isize,
                        (ox * s + kx) as isize - p as isize,
                    );
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                        let v = x[[b, ch, iy as usize, ix as usize]];
                        acc = if is_max { acc.max(v) } else { acc + v };
                    }
                }
            }
            if is_max {
                acc
            } else {
                acc / (k * k) as f32
            }
        })
    }
    for (shape, k, s, p) in [
        ((2, 3, 7, 9), 3, 2, 1),
        ((2, 3, 8, 8), 2, 2, 0),
        ((1, 2, 9, 6), 3, 1, 1),
        ((1, 2, 10, 11), 3, 3, 0),
        ((1, 1, 12, 12), 5, 2, 2),
        ((1, 64, 57, 57), 3, 2, 1),
    ] {
        let x = random_input(shape.0, shape.1, shape.2, shape.3);
        let mp = ops::max_pool(&x, k, s, p).expect("max pool");
        assert_eq!(
            mp,
            naive(&x, k, s, p, true),
            "max pool {shape:?} k{k} s{s} p{p}"
        );
        let ap = ops::avg_pool(&x, k, s, p).expect("avg pool");
        let want = naive(&x, k, s, p, false);
        assert_eq!(ap.dim(), want.dim());
        assert!(
            ap.iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() <= 1e-6 * (1.0 + b.abs())),
            "avg pool {shape:?} k{k} s{s} p{p}"
        );
    }
    assert!(ops::max_pool(&random_input(1, 1, 4, 4), 3, 0, 1).is_err());
    // An empty map padded into a window: all padding, no panic.
    let empty = Tensor::zeros((1, 2, 0, 3));
    let ap = ops::avg_pool(&empty, 1, 1, 1).expect("pool");
    assert_eq!(ap.dim(), (1, 2, 2, 5));
    assert!(ap.iter().all(|&v| v == 0.0));
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let x = random_input(3, 8, 12, 4);
    let mut rng = Rng::new(8);
    let w: Vec<f32> = (0..16 * 8 * 9).map(|_| rng.normal() as f32).collect();
    let run = |t: usize| {
        on_threads(t, || {
            ops::conv2d(
                &x,
                &w,
                [16, 8, 3, 3],
                ConvGeom::new(1, 1),
                Epilogue::default(),
            )
            .expect("conv")
        })
    };
    assert_eq!(run(1), run(4));
}

/// A split int8 image is quantized group by group by all parts
/// (`qconv::split_image`): a partial last channel group, stride 2 (the
/// column split) and more parts than some layers have groups, on 1–3
/// threads, equal one thread bit for bit.
#[test]
fn int8_split_quantizes_the_input_in_parts_exactly() {
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    use qscope::engine::ops::qconv::{conv2d_int8, Int8Weights};
    let mut rng = Rng::new(11);
    for (c, o, s, stride) in [(18, 40, 48, 2), (5, 24, 96, 1), (64, 64, 16, 1)] {
        let x = random_input(1, c, s, 7);
        let ho = s / stride;
        let res = random_input(1, o, ho, 8);
        let codes: Vec<i8> = (0..o * c * 9)
            .map(|_| (rng.below(255) as i32 - 127) as i8)
            .collect();
        let w8 = Int8Weights::new(&codes, vec![0.01; o], [o, c, 3, 3]);
        assert!(o * ho * ho * c * 9 >= 1_000_000, "too small to be split");
        let run = |t: usize| {
            on_threads(t, || {
                conv2d_int8(
                    &x,
                    &w8,
                    ConvGeom::new(stride, 1),
                    0.05,
                    None,
                    Some(&res),
                    true,
                    None,
                )
                .expect("int8")
            })
        };
        let one = run(1);
        for t in [2, 3, 2, 3] {
            assert!(run(t) == one, "c {c}, stride {stride}: {t} threads differ");
        }
    }
}

#[test]
fn batch_one_split_over_the_spinning_team_equals_one_thread() {
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // Big enough (≥ 1 M MACs) that batch 1 is split over the team, with a
    // channel count that leaves a partial last block; f32 and int8.
    use qscope::engine::ops::qconv::{conv2d_int8, Int8Weights};
    let mut rng = Rng::new(9);
    let (c, o, s) = (24, 40, 32);
    let x = random_input(1, c, s, 5);
    let res = random_input(1, o, s, 6);
    let w: Vec<f32> = (0..o * c * 9).map(|_| rng.normal() as f32).collect();
    let codes: Vec<i8> = (0..o * c * 9)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect();
    let w8 = Int8Weights::new(&codes, vec![0.01; o], [o, c, 3, 3]);
    let run = |t: usize| {
        on_threads(t, || {
            let epi = Epilogue {
                bias: None,
                residual: Some(&res),
                relu: true,
            };
            let f = ops::conv2d(&x, &w, [o, c, 3, 3], ConvGeom::new(1, 1), epi).expect("conv");
            let q = conv2d_int8(
                &x,
                &w8,
                ConvGeom::new(1, 1),
                0.05,
                None,
                Some(&res),
                true,
                None,
            )
            .expect("int8");
            (f, q)
        })
    };
    let one = run(1);
    for _ in 0..20 {
        let three = run(3);
        assert!(
            three.0 == one.0,
            "f32 differs: {}",
            max_rel_diff(&three.0, &one.0)
        );
        assert!(three.1 == one.1, "int8 differs");
    }
}

#[test]
fn direct_kernel_matches_the_im2col_gemm_fallback() {
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // The AVX-512 direct kernel (where the CPU has it) against the portable
    // im2col + GEMM path, odd sizes and channel counts not multiple of 8.
    direct_matches_gemm(
        12,
        &[
            (1, 3, 32, 16, 3, 1, 1),
            (3, 16, 16, 32, 3, 1, 1),
            (2, 5, 9, 13, 3, 1, 1),
            (1, 7, 13, 11, 5, 2, 1),
            (4, 64, 8, 64, 3, 1, 1),
            (2, 16, 16, 32, 3, 1, 2),
            (1, 5, 11, 9, 3, 1, 2),
            (2, 16, 8, 24, 1, 0, 2),
            (1, 4, 13, 8, 7, 3, 2),
            (1, 3, 10, 8, 3, 0, 3),
            // Exact tiles (width 16, 8 or 4) with a partial channel block.
            (2, 6, 16, 13, 3, 1, 1),
            (1, 8, 4, 24, 3, 1, 1),
            (2, 8, 16, 20, 3, 1, 2),
        ],
        false,
    );
}

/// Conv with bias-free epilogue (residual + ReLU) on the direct kernel
/// (AVX2 variant if `avx2`) against im2col + GEMM, per `(n, c, h, o, k, pad, stride)`.
/// Tolerance: 1e-5 relative (summation order differs).
fn direct_matches_gemm(
    seed: u64,
    cases: &[(usize, usize, usize, usize, usize, usize, usize)],
    avx2: bool,
) {
    let mut rng = Rng::new(seed);
    for &(n, c, h, o, k, p, s) in cases {
        let x = random_input(n, c, h, rng.next_u64());
        let w: Vec<f32> = (0..o * c * k * k).map(|_| rng.normal() as f32).collect();
        let res = random_input(n, o, (h + 2 * p - k) / s + 1, rng.next_u64());
        let epi = Epilogue {
            bias: None,
            residual: Some(&res),
            relu: true,
        };
        qscope::engine::kernels::direct_conv::force_avx2(avx2);
        let fast = ops::conv2d(&x, &w, [o, c, k, k], ConvGeom::new(s, p), epi).expect("direct");
        qscope::engine::kernels::direct_conv::force_avx2(false);
        ops::set_direct_conv(false);
        let slow = ops::conv2d(&x, &w, [o, c, k, k], ConvGeom::new(s, p), epi).expect("gemm");
        ops::set_direct_conv(true);
        let err = max_rel_diff(&fast, &slow);
        assert!(
            err < 1e-5,
            "{:?} (avx2 {avx2}): {err}",
            (n, c, h, o, k, p, s)
        );
    }
}

#[test]
fn avx2_direct_kernel_matches_the_gemm_fallback() {
    let _switches = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // The AVX2 + FMA variant (forced here; AVX2-only CPUs pick it by
    // themselves) against im2col + GEMM, f32 and 4-bit weights.
    let isa_ok =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    if !isa_ok {
        eprintln!("skipping: no AVX2 + FMA");
        return;
    }
    direct_matches_gemm(
        31,
        &[
            (2, 16, 16, 32, 3, 1, 1),
            (1, 5, 9, 13, 3, 1, 2),
            (1, 3, 32, 16, 3, 1, 1),
        ],
        true,
    );
    // 4-bit weights through the AVX2 body (portable decode).
    use qscope::engine::kernels::direct_conv::Weights;
    let (o, c, k) = (20, 8, 3);
    let d = c * k * k;
    let w: Vec<f32> = (0..o * d)
        .map(|i| -0.2 + 0.03 * ((i * 7 + i / d) % 16) as f32)
        .collect();
    let lb = qscope::model::lower::lower_lowbit(&w, [o, c, k, k], CodeOrder::Direct)
        .expect("4-bit grid");
    let nib = Weights::Nibbles {
        nibbles: &lb.codes,
        step: &lb.step,
        lo: &lb.lo,
    };
    // One image decodes block by block in the kernel; a batch decodes the
    // layer once up front.
    for n in [1, 2] {
        let x = random_input(n, c, 12, 77);
        qscope::engine::kernels::direct_conv::force_avx2(true);
        let w4 = ops::conv::conv2d_with(
            &x,
            &w,
            Some(nib),
            None,
            [o, c, k, k],
            ConvGeom::new(1, 1),
            Epilogue::default(),
        )
        .expect("w4 avx2");
        qscope::engine::kernels::direct_conv::force_avx2(false);
        let f32_out = ops::conv2d(
            &x,
            &w,
            [o, c, k, k],
            ConvGeom::new(1, 1),
            Epilogue::default(),
        )
        .expect("f32");
        assert!(max_rel_diff(&w4, &f32_out) < 1e-5, "batch {n}");
    }
}

#[test]
fn four_bit_weights_decoded_in_the_kernel_equal_the_f32_weights() {
    // Forces AVX2 below, and reads the Winograd switch other tests flip.
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // Weights on a per-channel 4-bit affine grid (as RTN leaves them, BN
    // scale folded in): the nibble-reading direct kernel against the f32 one.
    use qscope::engine::kernels::direct_conv::Weights;
    use qscope::model::lower::lower_lowbit;
    let mut rng = Rng::new(21);
    // The third layer is one a single image streams (its transformed
    // weights, 1.6 MB, would not stay in L2).
    let streamed = qscope::engine::kernels::winograd::WinoGeom {
        c: 160,
        h: 8,
        w: 8,
        o: 160,
        pad: 1,
    };
    assert!(streamed.streams_weights());
    // 1×1 stride-1 layers decode their codes for the GEMM: a batch the
    // whole layer, a single image in chunks of channels (72 channels of
    // 1024 inputs are two chunks, the second a partial block).
    for &(n, c, h, o, k, p, s) in &[
        (2, 16, 8, 13, 3, 1, 1),
        (1, 5, 9, 16, 3, 1, 2),
        (1, 160, 8, 160, 3, 1, 1),
        (2, 24, 5, 20, 1, 0, 1),
        (1, 1024, 3, 72, 1, 0, 1),
        (1, 7, 6, 9, 1, 0, 1),
    ] {
        let d = c * k * k;
        let mut w = vec![0f32; o * d];
        for row in w.chunks_mut(d) {
            let (step, lo) = (0.01 + 0.05 * rng.unit() as f32, -0.3 * rng.unit() as f32);
            for v in row.iter_mut() {
                *v = lo + step * rng.below(16) as f32;
            }
        }
        // Each kernel reads its own code order: 3×3 stride 1 the Winograd
        // kernel's, 1×1 stride 1 (the GEMM) rows, the rest the direct one's.
        let order = match (k, s) {
            (3, 1) => CodeOrder::Winograd,
            (1, 1) => CodeOrder::Rows,
            _ => CodeOrder::Direct,
        };
        let lb = lower_lowbit(&w, [o, c, k, k], order).expect("on a 4-bit grid");
        assert!(lb.levels <= 16);
        assert_eq!(lb.order, order);
        let x = random_input(n, c, h, rng.next_u64());
        let geom = ConvGeom::new(s, p);
        let f32_out = ops::conv2d(&x, &w, [o, c, k, k], geom, Epilogue::default()).expect("f32");
        let (codes, step, lo) = (&lb.codes[..], &lb.step[..], &lb.lo[..]);
        let (direct, winograd) = match order {
            CodeOrder::Winograd => {
                let nib = qscope::engine::kernels::winograd::Nibbles { codes, step, lo };
                (None, Some(ops::conv::WinoWeights::Nibbles(nib)))
            }
            CodeOrder::Rows => (Some(Weights::Rows { codes, step, lo }), None),
            CodeOrder::Direct => {
                let nib = Weights::Nibbles {
                    nibbles: codes,
                    step,
                    lo,
                };
                (Some(nib), None)
            }
        };
        // Zeros where the f32 weights go: every 4-bit path must read the codes.
        let zeros = vec![0f32; w.len()];
        for avx2 in [false, true] {
            qscope::engine::kernels::direct_conv::force_avx2(avx2);
            let w4_out = ops::conv::conv2d_with(
                &x,
                &zeros,
                direct,
                winograd,
                [o, c, k, k],
                geom,
                Epilogue::default(),
            );
            qscope::engine::kernels::direct_conv::force_avx2(false);
            let err = max_rel_diff(&w4_out.expect("w4"), &f32_out);
            assert!(err < 1e-5, "{:?} avx2 {avx2}: {err}", (n, c, h, o, k, p, s));
        }
    }
    // A float row is not on any 16-level grid.
    let w: Vec<f32> = (0..8 * 27).map(|_| rng.normal() as f32).collect();
    assert!(lower_lowbit(&w, [8, 3, 3, 3], CodeOrder::Direct).is_none());
}

/// Rows on 2- and 3-bit grids get their own step, not a 16-level one whose
/// codes are multiples (a 2-bit row fits 0, 5, 10, 15 too), so the layer
/// holds 3 bits a code; the decoded values stay the row's.
#[test]
fn coarse_grids_lower_to_small_codes_and_are_held_in_3_bits() {
    use qscope::model::lower::{lower_lowbit, CodeOrder};
    for levels in [2usize, 3, 4, 8] {
        let (o, d) = (16, 72);
        let w: Vec<f32> = (0..o * d)
            .map(|i| {
                let r = i / d;
                let (lo, step) = (-0.3 - 0.01 * r as f32, 0.05 + 0.002 * r as f32);
                // Every row spans all its levels.
                lo + step * ((i * 7 + r) % levels) as f32
            })
            .collect();
        for order in [CodeOrder::Rows, CodeOrder::Direct, CodeOrder::Winograd] {
            let lb = lower_lowbit(&w, [o, d / 9, 3, 3], order).expect("on a grid");
            assert_eq!(lb.levels, levels, "{levels} levels, {order:?}");
            for r in 0..o {
                assert!((lb.step[r] - (0.05 + 0.002 * r as f32)).abs() < 1e-6);
            }
            let held = lb.hold_3bit();
            assert!(held.packed3, "{levels} levels, {order:?}");
            assert_eq!(held.held_bits(), 3);
        }
    }
}

/// Winograd F(2×2, 3×3) kernel, called directly so it surely runs, against
/// the f64 naive convolution: tile rows of 16k (32 and 64 wide maps), 8 and
/// 4 tiles, other widths and odd sizes (gathered), pads 0–2, non-square
/// maps, channel counts that leave partial 8-channel blocks, and bias +
/// residual + ReLU. Tolerance 2e-5 of the max
/// magnitude: the transforms add a few roundings per output. The team split
/// (batch-1 latency) must equal the one-thread result bit for bit.
#[test]
fn winograd_matches_the_naive_convolution_and_splits_exactly() {
    use qscope::engine::kernels::direct_conv;
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    if !qscope::engine::kernels::winograd::is_available() {
        eprintln!("no AVX-512 or AVX2: Winograd kernel not tested on this CPU");
        return;
    }
    // Both bodies: the CPU's best, then AVX2 + FMA (forced where AVX-512 exists).
    winograd_cases();
    direct_conv::force_avx2(true);
    let forced = std::panic::catch_unwind(winograd_cases);
    direct_conv::force_avx2(false);
    forced.expect("AVX2 body");
}

fn winograd_cases() {
    use qscope::engine::kernels::direct_conv::Epilogue as DEpi;
    use qscope::engine::kernels::winograd::{self, WinoGeom};
    let mut rng = Rng::new(21);
    // (c, h, w, o, pad)
    let cases = [
        (16, 32, 32, 16, 1),
        (5, 16, 16, 12, 1),
        (32, 8, 8, 20, 1),
        (3, 10, 10, 8, 0),
        (7, 14, 14, 9, 2),
        (4, 16, 32, 8, 1),
        (6, 4, 64, 16, 1),
        // Other widths and odd sizes: gathered loads, masked edge tiles.
        (5, 7, 7, 9, 1),
        (3, 14, 14, 16, 1),
        (4, 28, 28, 8, 1),
        (8, 9, 13, 8, 0),
        (2, 5, 6, 3, 2),
        (3, 3, 3, 4, 0),
    ];
    for &(c, h, w, o, p) in &cases {
        let g = WinoGeom { c, h, w, o, pad: p };
        assert!(g.supported(), "{g:?}");
        let (ho, wo) = g.out();
        let x = Tensor::from_shape_fn((1, c, h, w), |_| rng.normal() as f32);
        let wt: Vec<f32> = (0..o * c * 9).map(|_| rng.normal() as f32 * 0.2).collect();
        let bias: Vec<f32> = (0..o).map(|_| rng.normal() as f32).collect();
        let res = Tensor::from_shape_fn((1, o, ho, wo), |_| rng.normal() as f32);
        let want =
            (naive_conv(&x, &wt, [o, c, 3, 3], 1, p, 1, Some(&bias)) + &res).mapv(|v| v.max(0.0));
        let u = winograd::transform_weights(o, c, |oc, ic, k| wt[(oc * c + ic) * 9 + k]);
        let epi = DEpi {
            bias: Some(&bias),
            residual: Some(res.as_slice().expect("contiguous")),
            relu: true,
        };
        let xs = x.as_slice().expect("contiguous");
        let mut got = Tensor::zeros((1, o, ho, wo));
        winograd::conv_image(&g, xs, &u, got.as_slice_mut().expect("c"), epi);
        let err = max_rel_diff(&got, &want);
        assert!(err < 2e-5, "{:?} {g:?}: {err}", winograd::isa());
        for threads in [2, 3] {
            let mut split = Tensor::zeros((1, o, ho, wo));
            winograd::conv_image_split(&g, xs, &u, split.as_slice_mut().expect("c"), epi, threads);
            assert!(
                same_bits(&split, &got),
                "{g:?}: split over {threads} differs"
            );
        }
    }
    // Padding beyond 2 goes to the direct kernel.
    let g = WinoGeom {
        c: 4,
        h: 7,
        w: 7,
        o: 4,
        pad: 3,
    };
    assert!(!g.supported(), "{g:?}");
}

/// Through `conv2d`, a batch of 3 on a 3×3 stride-1 conv: the Winograd path
/// (default) and the direct kernel (Winograd off) agree within the same
/// tolerance, and both match the naive convolution.
#[test]
fn conv2d_with_and_without_winograd_agree() {
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(22);
    let (c, o) = (16, 24);
    let x = random_input(3, c, 16, 23);
    let w: Vec<f32> = (0..o * c * 9).map(|_| rng.normal() as f32 * 0.2).collect();
    let run = || {
        ops::conv2d(
            &x,
            &w,
            [o, c, 3, 3],
            ConvGeom::new(1, 1),
            Epilogue::default(),
        )
        .expect("conv")
    };
    let with = run();
    ops::conv::set_winograd(false);
    let without = run();
    ops::conv::set_winograd(true);
    let want = naive_conv(&x, &w, [o, c, 3, 3], 1, 1, 1, None);
    assert!(max_rel_diff(&with, &want) < 2e-5);
    assert!(max_rel_diff(&without, &want) < 1e-5);
}

/// 4-bit codes straight to Winograd weights (no decoded copy) agree with
/// the transform of the decoded weights, computed in f64, to a few ulp of
/// the layer's largest value; the AVX-512 and AVX2 bodies agree bit for
/// bit. Includes output-channel counts that leave padding and odd inputs.
#[test]
fn winograd_transform_of_4bit_codes_matches_the_decoded_weights() {
    use qscope::engine::kernels::{direct_conv, winograd};
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(24);
    for (o, c) in [(16, 16), (40, 7), (64, 64), (24, 9)] {
        // Each row on its own affine grid of 16 levels.
        let mut w = vec![0f32; o * c * 9];
        for row in w.chunks_mut(c * 9) {
            let (lo, step) = (0.1 * rng.normal() as f32, 0.01 + 0.02 * rng.unit() as f32);
            for v in row.iter_mut() {
                *v = lo + step * (rng.below(16) as f32);
            }
        }
        // The direct kernel's decoding is the reference; the transform reads
        // the same codes in the Winograd order.
        let lb = qscope::model::lower::lower_lowbit(&w, [o, c, 3, 3], CodeOrder::Direct)
            .expect("4-bit grid");
        let direct = direct_conv::Weights::Nibbles {
            nibbles: &lb.codes,
            step: &lb.step,
            lo: &lb.lo,
        };
        let decoded = direct_conv::decode_all(direct, o, 9 * c);
        let lw = qscope::model::lower::lower_lowbit(&w, [o, c, 3, 3], CodeOrder::Winograd)
            .expect("4-bit grid");
        let nib = winograd::Nibbles {
            codes: &lw.codes,
            step: &lw.step,
            lo: &lw.lo,
        };
        let ob = direct_conv::OB;
        let tap = |oc: usize, ic: usize, k: usize| {
            decoded[((oc / ob) * c * 9 + ic * 9 + k) * ob + oc % ob] as f64
        };
        let want = f64_transform(o, c, tap);
        let mut buf = vec![];
        let got = winograd::transform_nibbles_into(nib, o, c, &mut buf).to_vec();
        assert_eq!(got.len(), want.len());
        let top = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
        assert!(
            worst <= 4.0 * f32::EPSILON as f64 * top,
            "(o, c) = ({o}, {c}): off by {worst:e} of {top}"
        );
        if winograd::isa() == Some(direct_conv::Isa::Avx512) {
            direct_conv::force_avx2(true);
            let mut buf = vec![];
            let avx2 = winograd::transform_nibbles_into(nib, o, c, &mut buf).to_vec();
            direct_conv::force_avx2(false);
            assert!(
                same_bits(&avx2, &got),
                "(o, c) = ({o}, {c}): AVX2 and AVX-512 bodies differ"
            );
        }
    }
}

/// `winograd::transform_weights` in f64, in its `[16 ξ][⌈O/8⌉][C][8]` layout.
fn f64_transform(o: usize, c: usize, w: impl Fn(usize, usize, usize) -> f64) -> Vec<f64> {
    let g = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let obs = o.div_ceil(8);
    let mut u = vec![0f64; 16 * obs * c * 8];
    for oc in 0..o {
        for ic in 0..c {
            for a in 0..4 {
                for b in 0..4 {
                    let mut v = 0.0;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            v += g[a][ky] * w(oc, ic, 3 * ky + kx) * g[b][kx];
                        }
                    }
                    u[(((4 * a + b) * obs + oc / 8) * c + ic) * 8 + oc % 8] = v;
                }
            }
        }
    }
    u
}

/// A single image with 4-bit weights (`conv_image_4bit`: each part decodes
/// and transforms only its own channel blocks, in L1-sized chunks when they
/// do not fit one, or by 16-channel input slices when the part has one
/// tile block) equals the kernel on the whole layer's transform bit for
/// bit, on 1–3 threads and both ISAs: one-tile-block maps (split by
/// channel blocks; one slice, several, an odd last one; odd and even
/// counts of channel blocks), many-block and odd maps (a tile-block split
/// leaves one block per part), layers of one chunk and of several, and one
/// streamed whole (`streams_weights`).
#[test]
fn winograd_split_with_4_bit_weights_equals_one_thread() {
    use qscope::engine::kernels::direct_conv::{self, Epilogue as DEpi};
    use qscope::engine::kernels::winograd::{self, WinoGeom};
    let _g = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    if !winograd::is_available() {
        eprintln!("no AVX-512 or AVX2: Winograd kernel not tested on this CPU");
        return;
    }
    let mut rng = Rng::new(25);
    for (c, s, o) in [
        (16, 8, 40),
        (8, 32, 24),
        (5, 7, 24),
        (64, 16, 40),
        (33, 8, 24),
        (160, 8, 160),
    ] {
        let d = c * 9;
        let w: Vec<f32> = (0..o * d)
            .map(|i| -0.2 + 0.03 * ((i * 7 + i / d) % 16) as f32)
            .collect();
        let lb = qscope::model::lower::lower_lowbit(&w, [o, c, 3, 3], CodeOrder::Winograd)
            .expect("4-bit grid");
        let nib = winograd::Nibbles {
            codes: &lb.codes,
            step: &lb.step,
            lo: &lb.lo,
        };
        let mut buf = vec![];
        let u = winograd::transform_nibbles_into(nib, o, c, &mut buf);
        let g = WinoGeom {
            c,
            h: s,
            w: s,
            o,
            pad: 1,
        };
        let x = Tensor::from_shape_fn((1, c, s, s), |_| rng.normal() as f32);
        let xs = x.as_slice().expect("contiguous");
        let bias: Vec<f32> = (0..o).map(|_| rng.normal() as f32).collect();
        let epi = DEpi {
            bias: Some(&bias),
            residual: None,
            relu: true,
        };
        if c == 160 {
            assert!(g.streams_weights());
        }
        for avx2 in [false, true] {
            direct_conv::force_avx2(avx2);
            let mut reference = vec![0f32; o * s * s];
            winograd::conv_image(&g, xs, u, &mut reference, epi);
            for threads in [1, 2, 3] {
                let mut got = vec![0f32; o * s * s];
                winograd::conv_image_4bit(&g, xs, nib, &mut got, epi, threads);
                assert!(
                    same_bits(&got, &reference),
                    "{g:?}: 4-bit on {threads} thread(s), avx2 {avx2}, differs"
                );
            }
        }
        direct_conv::force_avx2(false);
    }
}

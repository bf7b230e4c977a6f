//! The integer convolution (W8A8) against the f32 convolution of the same
//! quantized values (a naive f64 loop), and every SIMD kernel against the
//! portable one, bit for bit (integer accumulation is exact, the epilogue is
//! the same code). Tolerance 2e-6 of the output range: f32 rounding measures
//! ≤ 4e-7, and an accumulator off by a single unit already gives 1e-5.
mod common;
use common::{max_rel_diff, on_threads, random_input, same_bits};
use qscope::engine::kernels::int8_conv::Kernel;
use qscope::engine::ops::qconv::{conv2d_int8, Int8Weights};
use qscope::engine::ops::{self, ConvGeom, Epilogue};
use qscope::engine::Tensor;
use qscope::util::Rng;

struct Case {
    c: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    size: usize,
}

const CASES: &[Case] = &[
    // Exact-tile shapes (outputs 16 and 32 wide, stride 1 and 2, a partial
    // channel block), then padded-width ones.
    Case {
        c: 16,
        o: 13,
        k: 3,
        stride: 1,
        pad: 1,
        size: 16,
    },
    Case {
        c: 8,
        o: 16,
        k: 3,
        stride: 2,
        pad: 1,
        size: 32,
    },
    Case {
        c: 4,
        o: 8,
        k: 3,
        stride: 1,
        pad: 1,
        size: 32,
    },
    Case {
        c: 16,
        o: 16,
        k: 3,
        stride: 1,
        pad: 1,
        size: 8,
    },
    Case {
        c: 3,
        o: 16,
        k: 3,
        stride: 1,
        pad: 1,
        size: 9,
    },
    Case {
        c: 6,
        o: 13,
        k: 3,
        stride: 2,
        pad: 1,
        size: 11,
    },
    Case {
        c: 16,
        o: 32,
        k: 1,
        stride: 2,
        pad: 0,
        size: 8,
    },
    Case {
        c: 8,
        o: 9,
        k: 5,
        stride: 1,
        pad: 2,
        size: 7,
    },
    Case {
        c: 5,
        o: 8,
        k: 3,
        stride: 1,
        pad: 0,
        size: 6,
    },
    Case {
        c: 4,
        o: 24,
        k: 7,
        stride: 2,
        pad: 3,
        size: 13,
    },
];

fn weights(case: &Case, max_code: i32, seed: u64) -> (Vec<i8>, Vec<f32>, [usize; 4]) {
    let mut rng = Rng::new(seed);
    let shape = [case.o, case.c, case.k, case.k];
    let n: usize = shape.iter().product();
    let codes = (0..n)
        .map(|_| (rng.below(2 * max_code as usize + 1) as i32 - max_code) as i8)
        .collect();
    let scale = (0..case.o)
        .map(|_| 0.001 + 0.01 * rng.unit() as f32)
        .collect();
    (codes, scale, shape)
}

/// The simulation the integer path must equal: quantize the input, run the f32 conv.
fn simulated(
    x: &Tensor,
    codes: &[i8],
    scale: &[f32],
    shape: [usize; 4],
    case: &Case,
    act: f32,
    bias: &[f32],
    residual: &Tensor,
) -> Tensor {
    let inv = 1.0 / act;
    let xq = x.mapv(|v| (v * inv).round_ties_even().clamp(-127.0, 127.0) * act);
    let d = codes.len() / shape[0];
    let w: Vec<f32> = codes
        .iter()
        .enumerate()
        .map(|(i, &q)| q as f32 * scale[i / d])
        .collect();
    ops::conv::conv2d(
        &xq,
        &w,
        shape,
        ConvGeom::new(case.stride, case.pad),
        Epilogue {
            bias: Some(bias),
            residual: Some(residual),
            relu: true,
        },
    )
    .expect("reference conv")
}

#[test]
fn int8_conv_equals_the_quantized_f32_conv() {
    for (i, case) in CASES.iter().enumerate() {
        for n in [1, 3] {
            let (codes, scale, shape) = weights(case, 127, i as u64);
            let w = Int8Weights::new(&codes, scale.clone(), shape);
            let x = random_input(n, case.c, case.size, 10 + i as u64);
            let act = 3.0 / 127.0;
            let ho = (case.size + 2 * case.pad - case.k) / case.stride + 1;
            let residual = random_input(n, case.o, ho, 20 + i as u64);
            let bias: Vec<f32> = (0..case.o).map(|k| 0.1 * k as f32 - 0.5).collect();
            let got = conv2d_int8(
                &x,
                &w,
                ConvGeom::new(case.stride, case.pad),
                act,
                Some(&bias),
                Some(&residual),
                true,
                None,
            )
            .expect("int8 conv");
            let want = simulated(&x, &codes, &scale, shape, case, act, &bias, &residual);
            let err = max_rel_diff(&got, &want);
            assert!(err < 2e-6, "case {i}, batch {n}: relative error {err}");
        }
    }
}

#[test]
fn every_simd_kernel_matches_the_portable_one_bit_for_bit() {
    for kernel in [Kernel::Vnni512, Kernel::Avx2, Kernel::Avx2Pairs] {
        if !kernel.supported() {
            eprintln!("skipping {}: not supported on this CPU", kernel.name());
            continue;
        }
        for (i, case) in CASES.iter().enumerate() {
            // AVX2's maddubs is exact only for 7-bit weights.
            let max_code = if kernel == Kernel::Avx2 { 64 } else { 127 };
            let (codes, scale, shape) = weights(case, max_code, 100 + i as u64);
            let w = Int8Weights::new(&codes, scale, shape);
            // Large activations so the u8 side reaches 0 and 255.
            let x = random_input(2, case.c, case.size, 30 + i as u64).mapv(|v| 4.0 * v);
            let run = |k| {
                conv2d_int8(
                    &x,
                    &w,
                    ConvGeom::new(case.stride, case.pad),
                    0.02,
                    None,
                    None,
                    false,
                    Some(k),
                )
                .expect("int8 conv")
            };
            let (simd, portable) = (run(kernel), run(Kernel::Portable));
            assert!(
                same_bits(&simd, &portable),
                "{} differs from portable on case {i}",
                kernel.name()
            );
        }
    }
}

#[test]
fn avx2_kernel_refuses_weights_that_could_saturate() {
    let case = &CASES[0];
    let (codes, scale, shape) = weights(case, 127, 7);
    let w = Int8Weights::new(&codes, scale, shape);
    assert!(w.max_abs > 64);
    let x = random_input(1, case.c, case.size, 1);
    let r = conv2d_int8(
        &x,
        &w,
        ConvGeom::new(1, 1),
        0.02,
        None,
        None,
        false,
        Some(Kernel::Avx2),
    );
    assert!(
        r.is_err(),
        "8-bit weights must not run on the maddubs kernel"
    );
}

#[test]
fn int8_conv_rejects_bad_shapes() {
    let case = &CASES[0];
    let (codes, scale, shape) = weights(case, 127, 8);
    let w = Int8Weights::new(&codes, scale, shape);
    let x = random_input(1, case.c + 1, case.size, 1);
    let err = conv2d_int8(&x, &w, ConvGeom::new(1, 1), 0.02, None, None, false, None).unwrap_err();
    assert!(err.contains("channels"), "{err}");
}

#[test]
fn w8a8_weights_from_smoothquant_and_qat_lower_to_int8_exactly() {
    use qscope::model::lower::lower_int8;
    use qscope::quant::smoothquant::absmax_grid;
    use qscope::train::tape::fake_quant_weight;
    let mut rng = Rng::new(40);
    let (o, d) = (12, 27);
    let w: Vec<f32> = (0..o * d).map(|_| rng.normal() as f32).collect();
    // SmoothQuant: per-row absmax grid, scale absmax/127.
    let sq: Vec<f32> = w
        .chunks(d)
        .flat_map(|row| {
            let g = absmax_grid(row, 8);
            row.iter().map(move |&v| g.quantize(v)).collect::<Vec<_>>()
        })
        .collect();
    // QAT: PyTorch's symmetric grid, scale absmax/127.5, codes −128..127.
    let (qat, _) = fake_quant_weight(&w, o, 8);
    for (name, q) in [("smoothquant", &sq), ("qat", &qat)] {
        let (low, exact) = lower_int8(q, [o, 3, 3, 3]);
        assert!(exact, "{name}: values on an int8 grid must lower exactly");
        assert_eq!(low.scale.len(), o);
    }
    // 7-bit "reduce range" weights keep |code| ≤ 63, so AVX2 CPUs can run them.
    let sq7: Vec<f32> = w
        .chunks(d)
        .flat_map(|row| {
            let g = absmax_grid(row, 7);
            row.iter().map(move |&v| g.quantize(v)).collect::<Vec<_>>()
        })
        .collect();
    let (low, exact) = lower_int8(&sq7, [o, 3, 3, 3]);
    assert!(
        exact && low.max_abs <= 64,
        "7-bit: exact {exact}, max |code| {}",
        low.max_abs
    );
    // Float weights are not on a grid: requantized, and flagged.
    let (_, exact) = lower_int8(&w, [o, 3, 3, 3]);
    assert!(!exact);
}

/// An odd number of 16-position groups (6×8 outputs = 3) leaves a last
/// exact tile one group wide; 8-wide rows load as pairs. VNNI against the
/// portable kernel, bit for bit, with bias, residual and ReLU.
#[test]
fn exact_int8_tiles_cover_non_square_maps() {
    if !Kernel::Vnni512.supported() {
        eprintln!("skipping: no AVX-512 VNNI");
        return;
    }
    let case = Case {
        c: 12,
        o: 11,
        k: 3,
        stride: 1,
        pad: 1,
        size: 0,
    };
    let (codes, scale, shape) = weights(&case, 127, 5);
    let w = Int8Weights::new(&codes, scale, shape);
    let mut rng = Rng::new(6);
    let x = Tensor::from_shape_fn((2, 12, 6, 8), |_| 3.0 * rng.normal() as f32);
    let residual = Tensor::from_shape_fn((2, 11, 6, 8), |_| rng.normal() as f32);
    let bias: Vec<f32> = (0..11).map(|k| 0.05 * k as f32 - 0.3).collect();
    let run = |k| {
        conv2d_int8(
            &x,
            &w,
            ConvGeom::new(1, 1),
            0.03,
            Some(&bias),
            Some(&residual),
            true,
            Some(k),
        )
        .expect("int8 conv")
    };
    let (simd, portable) = (run(Kernel::Vnni512), run(Kernel::Portable));
    assert!(same_bits(&simd, &portable));
}

/// The simulation's activation quantizer (magic-number rounding) equals
/// `round_ties_even` then clamp, bit for bit: exact ties (k + ½)·s of both
/// signs, random values, values far outside the range, zeros.
#[test]
fn simulated_activation_quantizer_rounds_ties_to_even() {
    use qscope::model::exec::fake_quant;
    let s = 0.037f32;
    let inv = 1.0 / s;
    let mut rng = Rng::new(9);
    let mut vals: Vec<f32> = (-140..140).map(|k| (k as f32 + 0.5) / inv).collect();
    vals.extend((0..2000).map(|_| 6.0 * rng.normal() as f32));
    vals.extend([0.0, -0.0, 1e9, -1e9, 4.69, -4.69, f32::MAX, f32::MIN]);
    let n = vals.len();
    let x = Tensor::from_shape_vec((1, 1, 1, n), vals.clone()).expect("shape");
    let got = fake_quant(&x, Some(s));
    for (g, v) in got.iter().zip(&vals) {
        let want = (v * inv).round_ties_even().clamp(-127.0, 127.0) * s;
        // Equal as floats (the two zeros may differ in sign, which is harmless).
        assert!(*g == want, "{v}: {g} vs {want}");
    }
}

/// The integer Winograd kernel (3×3 stride-1 layers on AVX2-only CPUs)
/// must give the direct kernel's accumulators, so the same floats: every
/// tile layout (rows of 16 and 8 tiles, two rows of 4, gathered odd
/// sizes), padding 0–2, odd channel counts, a partial output block, the
/// team split of one image and a batch, and a layer at the overflow edge
/// (all codes ±max, inputs saturated).
#[test]
fn integer_winograd_equals_the_direct_int8_kernel_bit_for_bit() {
    if !Kernel::Avx2Pairs.supported() {
        eprintln!("skipping: no AVX2 on this CPU");
        return;
    }
    // (c, o, size, pad, saturated). From 1 M multiply-adds one image is
    // split over the team: cases 0 (by tile blocks), 2 (by output
    // channels) and 6 (both, on 3 threads).
    let cases = [
        (16, 16, 32, 1, false),
        (5, 13, 16, 1, false),
        (64, 32, 8, 1, false),
        (3, 8, 7, 1, false),
        (7, 9, 11, 2, false),
        (8, 8, 10, 0, false),
        (32, 24, 14, 1, false),
        (600, 8, 4, 1, true),
    ];
    for (i, &(c, o, size, pad, saturated)) in cases.iter().enumerate() {
        let case = Case {
            c,
            o,
            k: 3,
            stride: 1,
            pad,
            size,
        };
        let (mut codes, scale, shape) = weights(&case, 127, 300 + i as u64);
        if saturated {
            codes.iter_mut().for_each(|q| *q = -128);
        }
        let mut w = Int8Weights::new(&codes, scale, shape);
        // The direct kernel an AVX2-only CPU would pick for 8-bit weights.
        w.kernel = Kernel::Avx2Pairs;
        let geom = ConvGeom::new(1, pad);
        assert!(w.runs_winograd(geom), "case {i}");
        let ho = size + 2 * pad - 2;
        let bias: Vec<f32> = (0..o).map(|k| 0.1 * k as f32 - 0.5).collect();
        for (n, threads) in [(1, 1), (1, 2), (1, 3), (3, 2)] {
            let x = random_input(n, c, size, 40 + i as u64).mapv(|v| {
                if saturated {
                    v.abs() + 10.0
                } else {
                    4.0 * v
                }
            });
            let residual = random_input(n, o, ho, 50 + i as u64);
            let run = |k| {
                on_threads(threads, || {
                    conv2d_int8(
                        &x,
                        &w,
                        geom,
                        0.02,
                        Some(&bias),
                        Some(&residual),
                        i % 2 == 0,
                        k,
                    )
                    .expect("int8 conv")
                })
            };
            let (winograd, direct) = (run(None), run(Some(Kernel::Avx2Pairs)));
            assert!(
                winograd.iter().zip(&direct).all(|(a, b)| a == b),
                "case {i}, batch {n}, {threads} threads: winograd differs from direct"
            );
        }
    }
}

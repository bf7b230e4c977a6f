//! Quantizer identities and orderings that must hold (ALGORITHMS.md §12).
//! Each states its reference and tolerance.
mod common;
use qscope::quant::gpfq::{alphabet_step, gpfq_direct, gpfq_gram};
use qscope::quant::gptq::{gptq, GptqOptions};
use qscope::quant::grid::{fit_rows, GridKind, RowGrid};
use qscope::quant::rtn::rtn;
use qscope::util::Rng;

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// `X ∈ R^{d×m}` with strongly correlated rows (a random mixing of few factors).
fn correlated(rng: &mut Rng, d: usize, m: usize) -> Vec<f64> {
    let f = 3;
    let mix: Vec<f64> = (0..d * f).map(|_| rng.normal()).collect();
    let z: Vec<f64> = (0..f * m).map(|_| rng.normal()).collect();
    (0..d * m)
        .map(|k| {
            let (i, j) = (k / m, k % m);
            (0..f).map(|a| mix[i * f + a] * z[a * m + j]).sum::<f64>() + 0.05 * rng.normal()
        })
        .collect()
}

fn gram(x: &[f64], d: usize, m: usize) -> Vec<f64> {
    let mut h = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            h[i * d + j] = (0..m).map(|k| x[i * m + k] * x[j * m + k]).sum();
        }
    }
    h
}

fn output_err(w: &[f32], q: &[f32], n: usize, d: usize, h: &[f64]) -> f64 {
    // tr((W−Q) H (W−Q)ᵀ) = ‖(W−Q)X‖².
    let mut s = 0.0;
    for r in 0..n {
        let e: Vec<f64> = (0..d)
            .map(|i| (w[r * d + i] - q[r * d + i]) as f64)
            .collect();
        for i in 0..d {
            for j in 0..d {
                s += e[i] * h[i * d + j] * e[j];
            }
        }
    }
    s
}

#[test]
fn grid_values_lie_on_the_grid_and_ties_round_to_even() {
    let mut rng = Rng::new(1);
    let w = randn(&mut rng, 8 * 50);
    for kind in [GridKind::Asym, GridKind::Sym] {
        for bits in [2u8, 3, 4, 8] {
            let grids = fit_rows(&w, 8, bits, kind, true, false);
            let q = rtn(&w, &grids);
            for (r, g) in grids.iter().enumerate() {
                assert!(g.levels().len() == 1 << bits);
                for &v in &q[r * 50..(r + 1) * 50] {
                    let code = (v / g.scale + g.zero).round();
                    assert!((g.dequant(code) - v).abs() < 1e-6 && (0.0..=g.maxq).contains(&code));
                }
            }
        }
    }
    let g = RowGrid {
        scale: 1.0,
        zero: 0.0,
        maxq: 15.0,
    };
    assert_eq!(g.code(2.5), 2.0);
    assert_eq!(g.code(3.5), 4.0);
    // gptq_sym clips the largest positive weight: top level is (2^{b-1}−1)Δ < max.
    let s = RowGrid::fit(&[1.0, -0.2], 4, GridKind::Sym);
    assert!((s.quantize(1.0) - 7.0 * s.scale).abs() < 1e-6 && 7.0 * s.scale < 1.0);
    assert!(
        (s.quantize(-1.06) + 8.0 * s.scale).abs() < 1e-6,
        "the negative side reaches −8Δ"
    );
}

#[test]
fn rtn_error_falls_as_bits_rise() {
    let mut rng = Rng::new(2);
    let w = randn(&mut rng, 16 * 64);
    let errs: Vec<f64> = (2..=8)
        .map(|b| {
            qscope::quant::metrics::mse(
                &w,
                &rtn(&w, &fit_rows(&w, 16, b, GridKind::Asym, true, false)),
            )
        })
        .collect();
    assert!(errs.windows(2).all(|p| p[1] < p[0]), "{errs:?}");
}

#[test]
fn gptq_with_huge_damping_equals_rtn() {
    // H + λI with λ = 1e12·mean(diag H) is ≈ I·λ: no error is propagated.
    let mut rng = Rng::new(3);
    let (n, d, m) = (6, 20, 200);
    let w = randn(&mut rng, n * d);
    let h = gram(&correlated(&mut rng, d, m), d, m);
    let grids = fit_rows(&w, n, 3, GridKind::Asym, true, false);
    let q = gptq(
        &w,
        n,
        d,
        &h,
        &grids,
        GptqOptions {
            damping: 1e12,
            block: 7,
            act_order: false,
        },
        "t",
    )
    .expect("gptq")
    .q;
    let r = rtn(&w, &grids);
    let differ = q
        .iter()
        .zip(&r)
        .filter(|(a, b)| (*a - *b).abs() > 1e-6)
        .count();
    assert!(
        differ <= 1,
        "{differ} of {} values differ from RTN",
        q.len()
    );
}

#[test]
fn gptq_beats_rtn_on_correlated_inputs_and_blocking_does_not_change_q() {
    let mut rng = Rng::new(4);
    let (n, d, m) = (8, 37, 400);
    let w = randn(&mut rng, n * d);
    let h = gram(&correlated(&mut rng, d, m), d, m);
    let grids = fit_rows(&w, n, 3, GridKind::Asym, true, false);
    let base = gptq(
        &w,
        n,
        d,
        &h,
        &grids,
        GptqOptions {
            damping: 0.01,
            block: 128,
            act_order: false,
        },
        "t",
    )
    .expect("gptq");
    for block in [1, 7, 37] {
        let q = gptq(
            &w,
            n,
            d,
            &h,
            &grids,
            GptqOptions {
                damping: 0.01,
                block,
                act_order: false,
            },
            "t",
        )
        .expect("gptq")
        .q;
        let differ = q
            .iter()
            .zip(&base.q)
            .filter(|(a, b)| (*a - *b).abs() > 1e-5)
            .count();
        assert!(differ == 0, "block {block}: {differ} values differ");
    }
    let e_gptq = output_err(&w, &base.q, n, d, &h);
    let e_rtn = output_err(&w, &rtn(&w, &grids), n, d, &h);
    assert!(e_gptq < 0.5 * e_rtn, "gptq {e_gptq} vs rtn {e_rtn}");
    let ao = gptq(
        &w,
        n,
        d,
        &h,
        &grids,
        GptqOptions {
            damping: 0.01,
            block: 16,
            act_order: true,
        },
        "t",
    )
    .expect("gptq")
    .q;
    assert!(output_err(&w, &ao, n, d, &h) < e_rtn);
}

#[test]
fn gptq_loss_identity_holds() {
    // Σ losses = ½·tr((W−Q)(H+λI)(W−Q)ᵀ), exact for the quadratic (§12), 1e-6 relative.
    let mut rng = Rng::new(5);
    let (n, d, m) = (5, 7, 50);
    let w = randn(&mut rng, n * d);
    let mut h = gram(&correlated(&mut rng, d, m), d, m);
    let grids = fit_rows(&w, n, 2, GridKind::Asym, true, false);
    let r = gptq(
        &w,
        n,
        d,
        &h,
        &grids,
        GptqOptions {
            damping: 0.01,
            block: 3,
            act_order: false,
        },
        "t",
    )
    .expect("gptq");
    let lambda = 0.01 * (0..d).map(|i| h[i * d + i]).sum::<f64>() / d as f64;
    for i in 0..d {
        h[i * d + i] += lambda;
    }
    let want = 0.5 * output_err(&w, &r.q, n, d, &h);
    assert!(
        (r.loss - want).abs() <= 1e-6 * want.abs(),
        "{} vs {want}",
        r.loss
    );
}

#[test]
fn gpfq_gram_form_matches_direct_recursion() {
    // Reference: the sample-by-sample recursion of the GPFQ paper, f64; 1e-9 is
    // the spec's tolerance for c_t, so the chosen levels must agree exactly.
    let mut rng = Rng::new(6);
    let (n, d, m) = (4, 12, 60);
    let w = randn(&mut rng, n * d);
    let x = correlated(&mut rng, d, m);
    let xt: Vec<f64> = x.iter().map(|v| v + 0.1 * rng.normal()).collect();
    let mut g = vec![0f64; d * d];
    let mut ht = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            g[i * d + j] = (0..m).map(|k| x[i * m + k] * xt[j * m + k]).sum();
            ht[i * d + j] = (0..m).map(|k| xt[i * m + k] * xt[j * m + k]).sum();
        }
    }
    let (delta, k) = alphabet_step(&w, n, 3, 1.16);
    assert_eq!(
        gpfq_gram(&w, n, d, &g, &ht, delta, k),
        gpfq_direct(&w, n, d, &x, &xt, m, delta, k)
    );
}

#[test]
fn gpfq_single_sample_keeps_running_error_within_half_a_step() {
    // m = 1, X = X̃, |x_t| = 1, no saturation ⇒ |u_t| ≤ δ/2 (§12).
    let mut rng = Rng::new(7);
    let (n, d) = (3, 30);
    let w = randn(&mut rng, n * d);
    let x: Vec<f64> = (0..d)
        .map(|_| if rng.unit() < 0.5 { -1.0 } else { 1.0 })
        .collect();
    let max = w.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
    let k = 8;
    let delta = (max + 0.5) / (k as f64 - 0.5);
    let q = gpfq_direct(&w, n, d, &x, &x, 1, delta, k);
    for r in 0..n {
        let mut u = 0.0;
        for t in 0..d {
            u += (w[r * d + t] as f64 - q[r * d + t] as f64) * x[t];
            assert!(
                u.abs() <= delta / 2.0 + 1e-9,
                "row {r} t {t}: {u} > {}",
                delta / 2.0
            );
        }
    }
}

/// GPTQ's conv Hessian `X Xᵀ` (`quant::stats::gram`) against the definition
/// in f64 (every padded 3×3 window of every image), on the AVX-512 and AVX2
/// Gram kernels and on the GEMM crate (CPUs with neither): odd channels, stride 2,
/// 11 images (a partial group of 8). Tolerance 1e-5 of the largest diagonal
/// entry (f32 sums over 8 images' windows).
#[test]
fn conv_hessian_matches_f64_on_both_kernels() {
    use qscope::engine::kernels::direct_conv::force_avx2;
    use qscope::engine::ops::ConvGeom;
    use qscope::quant::stats::{gram as conv_gram, gram_on, LayerGeom};
    let (n, c, s) = (11usize, 5usize, 9usize);
    let mut rng = Rng::new(12);
    let x = qscope::engine::Tensor::from_shape_fn((n, c, s, s), |_| rng.normal() as f32);
    for (stride, pad) in [(1usize, 1usize), (2, 1), (1, 0)] {
        let lg = LayerGeom::Conv {
            shape: [7, c, 3, 3],
            geom: ConvGeom::new(stride, pad),
        };
        let d = c * 9;
        let out = (s + 2 * pad - 3) / stride + 1;
        let mut want = vec![0f64; d * d];
        for b in 0..n {
            for oy in 0..out {
                for ox in 0..out {
                    let v: Vec<f64> = (0..d)
                        .map(|i| {
                            let (ch, ky, kx) = (i / 9, i / 3 % 3, i % 3);
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            let inside =
                                (0..s as isize).contains(&iy) && (0..s as isize).contains(&ix);
                            if inside {
                                x[[b, ch, iy as usize, ix as usize]] as f64
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    for i in 0..d {
                        for j in 0..d {
                            want[i * d + j] += v[i] * v[j];
                        }
                    }
                }
            }
        }
        let scale = (0..d).map(|i| want[i * d + i]).fold(0f64, f64::max);
        for path in ["avx512", "avx2", "gemm"] {
            force_avx2(path == "avx2");
            let got = if path == "gemm" {
                gram_on(&x, lg, false)
            } else {
                conv_gram(&x, lg)
            };
            force_avx2(false);
            for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "stride {stride} pad {pad} {path}: ({}, {}) {g} vs {w}",
                    k / d,
                    k % d
                );
            }
        }
    }
}

/// On maps large enough that the Gram kernel takes a group of 8 images a
/// few at a time (32 channels at 48×48: 2.7 MB of columns per image), it
/// still equals the GEMM path within 1e-5 of the largest diagonal entry.
#[test]
fn conv_hessian_of_large_maps_matches_the_gemm_path() {
    use qscope::engine::ops::ConvGeom;
    use qscope::quant::stats::{gram_on, LayerGeom};
    let (n, c, s) = (11usize, 32usize, 48usize);
    let mut rng = Rng::new(13);
    let x = qscope::engine::Tensor::from_shape_fn((n, c, s, s), |_| rng.normal() as f32);
    let lg = LayerGeom::Conv {
        shape: [8, c, 3, 3],
        geom: ConvGeom::new(1, 1),
    };
    let (fast, gemm) = (gram_on(&x, lg, true), gram_on(&x, lg, false));
    let d = c * 9;
    let scale = (0..d).map(|i| gemm[i * d + i]).fold(0f64, f64::max);
    let worst = fast
        .iter()
        .zip(&gemm)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(worst <= 1e-5 * scale, "{worst} vs scale {scale}");
}

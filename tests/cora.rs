//! CoRa identities (ALGORITHMS.md §12), reference: exact linear algebra.
use qscope::engine::ops::{conv2d, ConvGeom};
use qscope::engine::Tensor;
use qscope::quant::cora::{butterworth, energy_ranks, residual_svd, uniform_ranks};
use qscope::util::Rng;

fn rand(rng: &mut Rng, n: usize, s: f64) -> Vec<f32> {
    (0..n).map(|_| (rng.normal() * s) as f32).collect()
}

#[test]
fn full_rank_adapter_reproduces_the_residual_and_truncation_obeys_eckart_young() {
    let mut rng = Rng::new(1);
    let (n, d) = (12, 27);
    let w = rand(&mut rng, n * d, 1.0);
    let q: Vec<f32> = w.iter().map(|v| (v * 2.0).round() / 2.0).collect();
    let svd = residual_svd(&w, &q, n, d);
    assert_eq!(svd.rank_max(), 12);
    let full = svd.reconstruct(&[1.0; 12]);
    for k in 0..n * d {
        assert!(
            (q[k] + full[k] - w[k]).abs() < 1e-5,
            "W_q + BA = W at full rank"
        );
    }
    for r in [1, 4, 11] {
        let c: Vec<f64> = (0..12).map(|i| if i < r { 1.0 } else { 0.0 }).collect();
        let part = svd.reconstruct(&c);
        let err: f64 = (0..n * d)
            .map(|k| ((w[k] - q[k] - part[k]) as f64).powi(2))
            .sum();
        let tail: f64 = svd.s[r..].iter().map(|s| s * s).sum();
        assert!(
            (err - tail).abs() <= 1e-4 * tail.max(1e-9),
            "r={r}: {err} vs {tail}"
        );
    }
}

#[test]
fn adapter_pair_as_two_convs_equals_the_residual_conv() {
    // A: k×k conv C_in → R with S^½Vᵀ; B: 1×1 conv R → N with U S^½ (Theorem 1).
    let mut rng = Rng::new(2);
    let (o, c, k) = (6, 4, 3);
    let d = c * k * k;
    let w = rand(&mut rng, o * d, 1.0);
    let q = vec![0f32; o * d];
    let svd = residual_svd(&w, &q, o, d);
    let r = svd.rank_max();
    let a: Vec<f32> = (0..r * d)
        .map(|t| (svd.s[t / d].sqrt() * svd.v[(t % d) * r + t / d]) as f32)
        .collect();
    let b: Vec<f32> = (0..o * r)
        .map(|t| (svd.u[t] * svd.s[t % r].sqrt()) as f32)
        .collect();
    let x = Tensor::from_shape_fn((2, c, 7, 7), |_| rng.normal() as f32);
    let geom = ConvGeom::new(2, 1);
    let hidden = conv2d(&x, &a, [r, c, k, k], geom, Default::default()).expect("A");
    let two = conv2d(
        &hidden,
        &b,
        [o, r, 1, 1],
        ConvGeom::new(1, 0),
        Default::default(),
    )
    .expect("B");
    let one = conv2d(&x, &w, [o, c, k, k], geom, Default::default()).expect("ΔW");
    let scale = one.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(one
        .iter()
        .zip(two.iter())
        .all(|(p, q)| (p - q).abs() <= 1e-4 * scale));
}

#[test]
fn butterworth_kernel_has_unit_dc_and_half_power_at_the_cutoff() {
    let (t2, dt2) = butterworth(100, 0.3, 4);
    assert_eq!(t2[0], 1.0);
    assert!((t2[30] - 0.5).abs() < 1e-12, "T² = ½ at i = r̃R");
    assert!(t2.windows(2).all(|p| p[1] <= p[0]));
    // Finite-difference check of d(T²)/dr̃ at a few indices.
    let eps = 1e-6;
    let (up, _) = butterworth(100, 0.3 + eps, 4);
    let (dn, _) = butterworth(100, 0.3 - eps, 4);
    for i in [10, 30, 50] {
        let fd = (up[i] - dn[i]) / (2.0 * eps);
        assert!(
            (fd - dt2[i]).abs() <= 1e-5 * fd.abs().max(1.0),
            "i={i}: {fd} vs {}",
            dt2[i]
        );
    }
}

#[test]
fn gradient_projection_matches_the_directional_derivative() {
    // d/dc_i ⟨G, Σ_j c_j σ_j u_j v_jᵀ⟩ = σ_i u_iᵀ G v_i.
    let mut rng = Rng::new(3);
    let (n, d) = (5, 9);
    let w = rand(&mut rng, n * d, 1.0);
    let svd = residual_svd(&w, &vec![0.0; n * d], n, d);
    let g = rand(&mut rng, n * d, 1.0);
    let p = svd.project(&g);
    for i in 0..svd.rank_max() {
        let mut c = vec![0.0; svd.rank_max()];
        c[i] = 1.0;
        let comp = svd.reconstruct(&c);
        let dot: f64 = comp
            .iter()
            .zip(&g)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!(
            (dot - svd.s[i] * p[i]).abs() < 1e-4,
            "{i}: {dot} vs {}",
            svd.s[i] * p[i]
        );
    }
}

#[test]
fn energy_ranks_fit_the_budget_and_beat_uniform_on_residual_error() {
    let mut rng = Rng::new(4);
    let svds: Vec<_> = [(16, 144, 0.2), (32, 288, 0.05), (64, 576, 0.02)]
        .iter()
        .map(|&(n, d, s)| {
            let w = rand(&mut rng, n * d, s);
            residual_svd(&w, &vec![0.0; n * d], n, d)
        })
        .collect();
    let refs: Vec<_> = svds.iter().collect();
    let budget = 20_000;
    let err = |ranks: &[usize]| -> f64 {
        svds.iter()
            .zip(ranks)
            .map(|(s, &r)| s.s[r..].iter().map(|v| v * v).sum::<f64>())
            .sum()
    };
    let e = energy_ranks(&refs, budget);
    let u = uniform_ranks(&refs, budget);
    let cost =
        |r: &[usize]| -> usize { svds.iter().zip(r).map(|(s, &k)| s.adapter_params(k)).sum() };
    assert!(cost(&e) <= budget && cost(&u) <= budget);
    assert!(err(&e) <= err(&u), "{} > {}", err(&e), err(&u));
}

/// Output gains are exact: with orthonormal `u_i`, the components' gains
/// add up to `E‖ΔW x‖² = tr(ΔW H ΔWᵀ)`, and the first r of them to what a
/// rank-r adapter removes. Reference: the direct sums in f64.
#[test]
fn output_gains_add_up_to_the_output_error_they_remove() {
    use qscope::quant::cora::output_gains;
    let mut rng = Rng::new(6);
    let (n, d, m) = (6, 10, 40);
    let dw = rand(&mut rng, n * d, 0.1);
    let svd = residual_svd(&dw, &vec![0.0; n * d], n, d);
    // H = X Xᵀ / m from random (correlated) inputs.
    let mix = rand(&mut rng, d * d, 1.0);
    let xs: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            let z = rand(&mut rng, d, 1.0);
            (0..d)
                .map(|a| (0..d).map(|b| (mix[a * d + b] * z[b]) as f64).sum())
                .collect()
        })
        .collect();
    let mut h = vec![0f64; d * d];
    for x in &xs {
        for a in 0..d {
            for b in 0..d {
                h[a * d + b] += x[a] * x[b] / m as f64;
            }
        }
    }
    let err = |w: &[f32]| -> f64 {
        xs.iter()
            .map(|x| {
                (0..n)
                    .map(|a| {
                        (0..d)
                            .map(|b| w[a * d + b] as f64 * x[b])
                            .sum::<f64>()
                            .powi(2)
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / m as f64
    };
    let g = output_gains(&svd, &h, None);
    let total = err(&dw);
    let sum: f64 = g.iter().sum();
    assert!((sum - total).abs() <= 1e-4 * total, "{sum} vs {total}");
    let c: Vec<f64> = (0..svd.rank_max())
        .map(|i| if i < 2 { 1.0 } else { 0.0 })
        .collect();
    let part = svd.reconstruct(&c);
    let rest: Vec<f32> = dw.iter().zip(&part).map(|(a, b)| a - b).collect();
    let removed = total - err(&rest);
    assert!(
        (removed - g[0] - g[1]).abs() <= 1e-4 * total,
        "{removed} vs {}",
        g[0] + g[1]
    );
}

/// The optimal search's integer ranks respect the budget: scaled down to
/// fit when rank ≥ 1 everywhere fits, and with the least-wanted layers
/// dropped to rank 0 when even that does not (a 2 % budget on ResNet-20).
#[test]
fn fitted_ranks_never_exceed_the_budget() {
    use qscope::train::cora_search::fit_budget;
    let mut rng = Rng::new(5);
    let layers: Vec<_> = [(16, 144), (32, 288), (64, 576)]
        .iter()
        .enumerate()
        .map(|(k, &(n, d))| {
            (
                k,
                residual_svd(&rand(&mut rng, n * d, 0.1), &vec![0.0; n * d], n, d),
            )
        })
        .collect();
    let cost = |r: &[usize]| -> usize {
        layers
            .iter()
            .zip(r)
            .map(|((_, s), &k)| s.adapter_params(k))
            .sum()
    };
    let rt = [0.5, 0.3, 0.05];
    // ceil(R·r̃) fits as it is; a smaller budget scales every rank down.
    assert_eq!(fit_budget(&layers, &rt, 20_000), vec![8, 10, 4]);
    let scaled = fit_budget(&layers, &rt, 4_000);
    assert!(
        cost(&scaled) <= 4_000 && scaled.iter().all(|&r| r >= 1),
        "{scaled:?}"
    );
    assert!(
        scaled.iter().zip([8, 10, 4]).all(|(&a, b)| a <= b),
        "{scaled:?}"
    );
    // Rank 1 everywhere costs 160 + 320 + 640; 700 leaves room for the two
    // layers the search wanted most only.
    let tight = fit_budget(&layers, &rt, 700);
    assert!(cost(&tight) <= 700, "{tight:?}");
    assert_eq!(tight[2], 0, "{tight:?}");
    assert!(tight[0] >= 1 && tight[1] >= 1, "{tight:?}");
}

#[test]
fn exported_quantized_model_with_adapters_reloads_to_the_same_logits() {
    use qscope::quant::{quantize_model, Method, QuantConfig};
    use qscope::train::cora_job::{apply, CoraSpec};
    use std::sync::atomic::AtomicBool;
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors")).expect("load");
    let split = qscope::data::DatasetRoot::open(&base.join("cifar10"))
        .expect("data")
        .split(qscope::data::SplitKind::Train)
        .expect("train");
    let pre = qscope::data::Preprocess::for_model(&g.meta);
    let idx: Vec<usize> = (0..64).map(|i| i * 7).collect();
    let calib = pre.batch(&split, &idx);
    let out = quantize_model(
        &g,
        &calib,
        &QuantConfig::new(Method::Rtn, 3),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .expect("rtn");
    let spec = CoraSpec {
        budget: 0.1,
        method: "heuristic".into(),
        iterations: 0,
        batch: 8,
        loss: "ce".into(),
    };
    let co = apply(
        &g,
        &out.graph,
        &spec,
        &split,
        &idx,
        0,
        &AtomicBool::new(false),
        &mut |_| {},
        &mut |_| {},
    )
    .expect("cora");
    assert!(co.adapters.iter().any(|a| a.rank > 0));
    // CoRa-H scored every closed-form rule and kept the lowest calibration loss.
    let rules: Vec<&str> = co.candidates.iter().map(|c| c.rule).collect();
    assert_eq!(
        rules.len(),
        qscope::train::cora_rules::RULES.len(),
        "{rules:?}"
    );
    assert!(co.candidates.windows(2).all(|w| w[0].loss <= w[1].loss));
    assert_eq!(co.ranks, co.candidates[0].ranks);
    assert!(co.extra_params as f64 <= 0.1 * co.conv_params as f64);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("cora.safetensors");
    qscope::model::export::save_with_adapters(&out.graph, &out.packed, &co.adapters, &p)
        .expect("save");
    let back = qscope::model::load(&p).expect("reload").fused();
    let x = pre.batch(&split, &idx[..8]);
    let want = qscope::model::forward(&co.graph.fused(), x.clone()).expect("in memory");
    let got = qscope::model::forward(&back, x).expect("reloaded");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    // f32 B·A on reload vs f64 reconstruction in memory: 1e-4 relative.
    assert!(want
        .iter()
        .zip(got.iter())
        .all(|(a, b)| (a - b).abs() <= 1e-4 * scale));
}

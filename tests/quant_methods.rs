//! AWQ, SmoothQuant, packing and export identities (ALGORITHMS.md §12).
mod common;
use common::{cifar_resnet, max_rel_diff, random_input, Shortcut};
use qscope::model::{forward, load};
use qscope::quant::awq::{awq, AwqOptions};
use qscope::quant::grid::{GridKind, RowGrid};
use qscope::quant::packing::{pack, unpack};
use qscope::quant::smoothquant::{channel_absmax, collect_inputs, fold_bn_into_weights, smooth};
use qscope::quant::{quantize_model, Method, QuantConfig};
use qscope::util::Rng;
use std::sync::atomic::AtomicBool;

fn h_of(x: &[f64], d: usize, m: usize) -> Vec<f64> {
    (0..d * d)
        .map(|k| {
            (0..m)
                .map(|t| x[(k / d) * m + t] * x[(k % d) * m + t])
                .sum()
        })
        .collect()
}

#[test]
fn awq_with_alpha_zero_is_rtn_and_its_choice_never_loses_to_rtn() {
    let mut rng = Rng::new(1);
    let (n, cin, k2, m) = (6, 5, 9, 300);
    let d = cin * k2;
    let w: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
    // Inputs whose channels differ in magnitude, so scaling matters.
    let x: Vec<f64> = (0..d * m)
        .map(|k| rng.normal() * (1.0 + 4.0 * ((k / m) / k2) as f64))
        .collect();
    let h = h_of(&x, d, m);
    let s_x: Vec<f64> = (0..cin)
        .map(|c| {
            (0..k2)
                .flat_map(|k| (0..m).map(move |t| (c * k2 + k, t)))
                .map(|(r, t)| x[r * m + t].abs())
                .sum::<f64>()
                / (k2 * m) as f64
        })
        .collect();
    let fit = |row: &[f32]| RowGrid::fit(row, 3, GridKind::Asym);
    let only_zero = AwqOptions {
        alphas: vec![0.0],
        ..AwqOptions::plain()
    };
    let r0 = awq(&w, n, k2, &h, &s_x, &fit, &only_zero);
    let rtn: Vec<f32> = w
        .chunks(d)
        .flat_map(|row| {
            let g = fit(row);
            row.iter().map(move |&v| g.quantize(v)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(r0.q, rtn, "α = 0 ⇒ s ≡ 1 ⇒ RTN exactly");
    for opt in [AwqOptions::plain(), AwqOptions::salient()] {
        let r = awq(&w, n, k2, &h, &s_x, &fit, &opt);
        assert!(r.loss <= r.rtn_loss, "{} > {}", r.loss, r.rtn_loss);
        // The reported loss is the output error of the effective weight.
        let direct = qscope::quant::awq::output_error(&w, &r.q, n, d, &h);
        assert!((direct - r.loss).abs() <= 1e-9 * direct.max(1.0));
    }
}

fn small_model(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("m.safetensors");
    cifar_resnet(1, &[8, 16], 10, Shortcut::OptionA, 21).write(&p, None);
    p
}

fn normalised_like(x: &qscope::engine::Tensor, from: &[f32], to: &[f32]) -> qscope::engine::Tensor {
    let mut y = x.clone();
    for c in 0..from.len() {
        let r = from[c] / to[c];
        y.index_axis_mut(ndarray::Axis(1), c)
            .mapv_inplace(|v| v * r);
    }
    y
}

#[test]
fn smoothing_preserves_logits_and_balances_ranges_at_half() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = load(&small_model(dir.path())).expect("load");
    let calib = random_input(16, 3, 32, 5);
    let folded = fold_bn_into_weights(&g);
    let want = forward(&g.fused(), calib.clone()).expect("fp");
    // BN fold alone: reference is the unfolded graph, 1e-5 relative.
    assert!(max_rel_diff(&forward(&folded, calib.clone()).expect("folded"), &want) < 1e-5);
    let mut s = folded.clone();
    let smoothed = smooth(&mut s, &calib, 0.5).expect("smooth");
    assert_eq!(
        smoothed.len(),
        3,
        "the stem and each block's conv2 have exclusive producers"
    );
    let x = normalised_like(&calib, &g.meta.std, &s.meta.std);
    let got = forward(&s, x.clone()).expect("smoothed");
    assert!(
        max_rel_diff(&got, &want) < 1e-5,
        "{}",
        max_rel_diff(&got, &want)
    );
    // At α = 0.5: max|X̂_c| = max|Ŵ_c| = √(a_c w_c) for every smoothed layer (§6 check).
    let before = collect_inputs(&folded, &calib, &channel_absmax).expect("a");
    let after = collect_inputs(&s, &x, &channel_absmax).expect("a");
    let mut checked = 0;
    for ((node, a0), (_, a1)) in before.iter().zip(&after) {
        if !smoothed.contains(node) {
            continue;
        }
        let (w, shape) = s.weight(*node).expect("w");
        let (cin, k2) = (shape[1], shape[2] * shape[3]);
        for c in 0..cin {
            let wmax = (0..shape[0])
                .flat_map(|r| (0..k2).map(move |k| (r, k)))
                .fold(0f32, |m, (r, k)| m.max(w[(r * cin + c) * k2 + k].abs()));
            if a0[c] > 0.0 {
                assert!(
                    (a1[c] - wmax).abs() <= 1e-4 * wmax.max(1e-3),
                    "layer {node} ch {c}: {} vs {wmax}",
                    a1[c]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

#[test]
fn packing_round_trips_at_every_width() {
    let mut rng = Rng::new(9);
    for bits in 1..=8u8 {
        for count in [0, 1, 7, 8, 9, 1001] {
            let codes: Vec<u8> = (0..count).map(|_| rng.below(1 << bits) as u8).collect();
            let packed = pack(&codes, bits);
            assert_eq!(packed.len(), (count * bits as usize).div_ceil(8));
            assert_eq!(unpack(&packed, bits, count).expect("unpack"), codes);
        }
    }
    assert!(
        unpack(&[0u8; 3], 4, 7).is_none(),
        "too short is an error, not a panic"
    );
}

#[test]
fn exported_quantized_models_reload_to_the_same_logits() {
    let dir = tempfile::tempdir().expect("tmp");
    let g = load(&small_model(dir.path())).expect("load");
    let calib = random_input(24, 3, 32, 6);
    let x = random_input(4, 3, 32, 7);
    for (method, bits) in [
        (Method::Gptq, 3),
        (Method::Gpfq, 4),
        (Method::Awq, 4),
        (Method::SmoothQuant, 8),
    ] {
        let out = quantize_model(
            &g,
            &calib,
            &QuantConfig::new(method, bits),
            &AtomicBool::new(false),
            &mut |_, _, _| {},
        )
        .expect("q");
        let p = dir.path().join(format!("{}.safetensors", method.name()));
        qscope::model::export::save(&out.graph, &out.packed, &p).expect("save");
        let reloaded = load(&p).expect("reload");
        // The file says what each layer is stored as: its codes' bits (and
        // int8 inputs for W8A8), as `qscope info` and the dashboard show.
        let n = reloaded.layers().len();
        let brief = reloaded.brief();
        // GPFQ's "b bits" are 2^b + 1 levels (ALGORITHMS.md §1): b + 1 stored.
        let stored = bits + u8::from(method == Method::Gpfq);
        assert!(
            brief.contains(&format!("{stored}-bit codes in {n} of {n} layers")),
            "{}: {brief}",
            method.name()
        );
        assert_eq!(
            brief.contains(&format!("int8 inputs in {n} of {n} layers")),
            method == Method::SmoothQuant,
            "{brief}"
        );
        assert_eq!(reloaded.stored_bits("conv1"), Some(stored));
        let back = reloaded.fused();
        let xin = normalised_like(&x, &g.meta.std, &out.graph.meta.std);
        let xin_back = normalised_like(&x, &g.meta.std, &back.meta.std);
        let a = forward(&out.graph, xin).expect("a");
        let b = forward(&back, xin_back).expect("b");
        // f32 round trips of scales: 1e-5 relative.
        assert!(
            max_rel_diff(&b, &a) < 1e-5,
            "{}: {}",
            method.name(),
            max_rel_diff(&b, &a)
        );
        let on_disk = std::fs::metadata(&p).expect("meta").len();
        let fp_path = dir.path().join("fp.safetensors");
        qscope::model::export::save(&g, &[], &fp_path).expect("save fp");
        let fp_bytes = std::fs::metadata(&fp_path).expect("meta").len();
        // Tiny model: headers and FP32 BN/bias weigh a lot, so only ask for 2×.
        if bits <= 4 {
            assert!(
                on_disk * 2 < fp_bytes,
                "{}: {on_disk} bytes on disk vs fp32 {fp_bytes}",
                method.name()
            );
        }
    }
}

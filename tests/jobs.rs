//! Whole jobs on the bundled sample: what a user runs, end to end.
use qscope::jobs::{run, JobEvent, JobSpec, ResultsStore};
use qscope::quant::{BitsMap, Method, QuantConfig};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_models")
        .join(rel)
}

fn spec(method: Option<(Method, u8)>) -> JobSpec {
    let mut s = JobSpec::new(sample("resnet20.safetensors"), sample("cifar10"));
    s.quant = method.map(|(m, b)| QuantConfig::new(m, b));
    s.calib = 64;
    s.eval_limit = Some(500);
    s
}

fn run_quiet(s: &JobSpec) -> qscope::Result<qscope::jobs::RunResult> {
    run(s, &AtomicBool::new(false), &mut |_| {})
}

#[test]
fn eight_bit_rtn_per_channel_stays_within_a_third_of_a_point_of_fp() {
    let fp = run_quiet(&spec(None)).expect("fp");
    let q = run_quiet(&spec(Some((Method::Rtn, 8)))).expect("rtn8");
    assert!(
        (fp.eval.top1_all - q.eval.top1_all).abs() <= 0.3 + 1e-9,
        "fp {} vs rtn8 {}",
        fp.eval.top1_all,
        q.eval.top1_all
    );
    assert!(
        q.layers.iter().all(|l| l.sqnr_db > 30.0),
        "8-bit layers have high SQNR"
    );
    assert!(
        q.size_bytes * 3 < fp.size_bytes,
        "8-bit packed is < 1/3 of fp32"
    );
}

#[test]
fn events_stream_one_layer_at_a_time_and_results_save_atomically() {
    let s = spec(Some((Method::Gptq, 4)));
    let mut seen = Vec::new();
    let r = run(&s, &AtomicBool::new(false), &mut |e| {
        if let JobEvent::LayerDone {
            done,
            total,
            report,
        } = e
        {
            seen.push((done, total, report.name.clone()));
        }
    })
    .expect("gptq");
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[0], (1, 20, "conv1".to_string()));
    assert_eq!(seen[19].2, "linear");
    let dir = tempfile::tempdir().expect("tmp");
    let store = ResultsStore::new(dir.path());
    store.save(&r).expect("save");
    assert_eq!(store.load(&r.key).as_ref(), Some(&r));
    std::fs::write(dir.path().join("junk.json"), "{ not json").expect("w");
    let (all, bad) = store.load_all();
    assert_eq!(all.len(), 1);
    assert!(bad[0].contains("junk.json"));
}

#[test]
fn cancelled_job_stops_with_cancelled() {
    let e = run(
        &spec(Some((Method::Gptq, 4))),
        &AtomicBool::new(true),
        &mut |_| {},
    )
    .expect_err("cancelled");
    assert!(matches!(e, qscope::Error::Cancelled));
}

#[test]
fn mixed_precision_presets_keep_four_bits_on_average() {
    let g = qscope::model::load(&sample("resnet20.safetensors")).expect("load");
    for preset in ["5+3", "3+5"] {
        let m = BitsMap {
            bits: 4,
            preset: preset.into(),
            overrides: vec![],
        };
        let bits = m.resolve(&g).expect("resolve");
        let avg = BitsMap::average(&g, &bits);
        assert!((avg - 4.0).abs() <= 0.5, "{preset}: {avg}");
        assert_eq!(bits[0], if preset == "5+3" { 5 } else { 3 });
    }
    let m = BitsMap {
        bits: 4,
        preset: "8-ends".into(),
        overrides: vec![("layer2.0.conv1".into(), 6)],
    };
    let bits = m.resolve(&g).expect("resolve");
    assert_eq!((bits[0], bits[19], bits[7], bits[8]), (8, 8, 6, 4));
}

#[test]
fn bad_specs_get_clear_errors() {
    let err = |s: JobSpec| run_quiet(&s).expect_err("must fail").to_string();
    let e = err(spec(Some((Method::Rtn, 0))));
    assert!(e.contains("0 bits"), "{e}");
    let mut s = spec(Some((Method::Rtn, 4)));
    if let Some(q) = &mut s.quant {
        q.bits.overrides = vec![("layer9.conv".into(), 4)];
    }
    let e = err(s);
    assert!(
        e.contains("layer9.conv") && e.contains("layer1.0.conv1"),
        "{e}"
    );
    let mut s = spec(Some((Method::Rtn, 4)));
    s.classes = Some(vec![]);
    assert!(err(s).contains("empty class subset"));
    let mut s = spec(Some((Method::Gptq, 4)));
    s.calib = 100_000;
    let e = err(s);
    assert!(e.contains("100000") && e.contains("only 500"), "{e}");
    let mut s = spec(None);
    s.model = sample("missing.safetensors");
    assert!(err(s).contains("missing.safetensors"));
}

/// A CoRa spec that cannot run is refused before the model is even opened
/// (the rank search comes after the whole quantization), so the error is
/// about CoRa although the model path here does not exist.
#[test]
fn impossible_cora_specs_fail_before_anything_runs() {
    use qscope::train::cora_job::CoraSpec;
    let cora = |method: &str, loss: &str, budget: f64| CoraSpec {
        budget,
        method: method.into(),
        iterations: 10,
        batch: 8,
        loss: loss.into(),
    };
    let err = |quant: Option<(Method, u8)>, c: CoraSpec, qat: bool| {
        let mut s = spec(quant);
        s.model = sample("missing.safetensors");
        s.cora = Some(c);
        if qat {
            s.train = Some(qscope::jobs::spec::TrainSpec {
                config: Default::default(),
                qat_bits: Some(4),
                act_bits: None,
            });
        }
        run_quiet(&s).expect_err("must fail").to_string()
    };
    let rtn = Some((Method::Rtn, 3));
    let e = err(rtn, cora("best", "ce", 0.1), false);
    assert!(e.contains("`best`") && e.contains("heuristic"), "{e}");
    let e = err(rtn, cora("optimal", "mse", 0.1), false);
    assert!(e.contains("`mse`") && e.contains("kd"), "{e}");
    let e = err(rtn, cora("optimal", "ce", f64::NAN), false);
    assert!(e.contains("budget"), "{e}");
    let e = err(None, cora("optimal", "ce", 0.1), false);
    assert!(e.contains("needs a quantizer"), "{e}");
    let e = err(Some((Method::Awq, 3)), cora("optimal", "ce", 0.1), false);
    assert!(e.contains("AWQ") || e.contains("awq"), "{e}");
    let e = err(rtn, cora("heuristic", "ce", 0.1), true);
    assert!(e.contains("QAT"), "{e}");
    // The same settings with a real model get past the check.
    let e = err(rtn, cora("heuristic", "ce", 0.1), false);
    assert!(e.contains("missing.safetensors"), "{e}");
}

/// The calibration batch's memory is estimated from the model's largest
/// activation (the pipeline holds about six per image), defaults stay
/// within it, and a size that cannot fit in free memory is refused with
/// a reason instead of the process being killed.
#[test]
fn calibration_memory_is_bounded_before_anything_is_allocated() {
    use qscope::jobs::calib_memory::{bytes_per_image, check, default_cap};
    let g = qscope::model::load(&sample("resnet20.safetensors")).expect("load");
    // ResNet-20's largest activation: 16 × 32 × 32 floats.
    assert_eq!(bytes_per_image(&g), 6 * 4 * 16 * 32 * 32);
    let cap = default_cap(&g);
    assert!(
        cap >= 16 && cap as u64 * bytes_per_image(&g) <= 2 << 30,
        "{cap}"
    );
    assert!(check(&g, 64).is_ok());
    if qscope::util::available_memory_bytes().is_some() {
        // 10⁹ images: 393 TB.
        let e = check(&g, 1_000_000_000)
            .expect_err("cannot fit")
            .to_string();
        assert!(
            e.contains("1000000000 images") && e.contains("use at most"),
            "{e}"
        );
    }
}

#[test]
fn subset_calibration_reports_sub_accuracy_at_least_all() {
    let mut s = spec(Some((Method::Gpfq, 4)));
    s.classes = Some(vec!["cat".into(), "dog".into(), "deer".into()]);
    let r = run_quiet(&s).expect("gpfq");
    let sub = r.eval.top1_sub.expect("sub");
    assert!(sub >= r.eval.top1_all);
    assert_eq!(r.eval.per_class.len(), 3);
}

#[test]
fn what_if_rerun_reuses_every_layer_before_the_change_and_redoes_the_rest() {
    let mut s = spec(Some((Method::Gptq, 4)));
    s.calib = 48;
    let first = run_quiet(&s).expect("first");
    if let Some(q) = &mut s.quant {
        q.bits.overrides = vec![("layer2.0.conv1".into(), 2)];
    }
    let second = run_quiet(&s).expect("what-if");
    for (a, b) in first.layers.iter().zip(&second.layers) {
        let reused = b.detail.as_deref().is_some_and(|d| d.starts_with("reused"));
        if b.index < 7 {
            assert!(reused, "{} precedes the change and must be reused", b.name);
            assert_eq!((a.mse, a.sqnr_db), (b.mse, b.sqnr_db));
        } else {
            assert!(!reused, "{} is at or after the change", b.name);
        }
    }
    assert_eq!(second.layers[7].bits, 2);
    assert!(second.layers[7].mse > first.layers[7].mse);
}

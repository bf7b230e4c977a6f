//! The bundled pretrained ResNet-20 on the bundled 1,000-image CIFAR-10 test
//! sample. Reference: an independent numpy forward gets 81.0 % on the full
//! JPEG test set; on this sample qscope measured 80.9 %. A wrong op, layout
//! or normalisation drops it to chance (10 %), so the bound [78, 84] is tight
//! enough to catch real bugs and loose enough for f32 summation order.
mod common;
use qscope::data::{DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[test]
fn pretrained_resnet20_reaches_published_jpeg_accuracy_on_the_sample() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors"))
        .expect("load")
        .fused();
    assert_eq!(g.meta.arch, "resnet20");
    let split = DatasetRoot::open(&base.join("cifar10"))
        .expect("open")
        .split(SplitKind::Test)
        .expect("split");
    let classes = [2, 3, 5];
    let idx = eval_indices(&split, &(0..10).collect::<Vec<_>>(), None);
    let pre = Preprocess::for_model(&g.meta);
    let r = qscope::eval::evaluate(
        &g,
        &split,
        &idx,
        &pre,
        None,
        200,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .expect("eval");
    assert_eq!(r.images, 1000);
    assert!((78.0..84.0).contains(&r.top1_all), "top-1 {}", r.top1_all);
    assert!(r.top5_all > 97.0);
    // Sub ≥ All always: restricting the argmax can only help.
    let sub_idx = eval_indices(&split, &classes, None);
    let s = qscope::eval::evaluate(
        &g,
        &split,
        &sub_idx,
        &pre,
        Some(&classes),
        200,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )
    .expect("eval");
    assert!(s.top1_sub.expect("sub") >= s.top1_all);
    assert!(
        s.top1_sub.expect("sub") > s.top1_all + 1.0,
        "bird/cat/dog confuse with other classes"
    );
}

/// `qscope info` on the sample: the brief, the kernels it would run, and
/// how each layer is stored, as a user reads them (the real binary); a
/// damaged file and a zero batch get errors that say what is wrong.
#[test]
fn info_command_describes_the_model_and_bad_input_is_refused() {
    // `qscope info M | head -1`: a reader that leaves early ends the command
    // quietly (SIGPIPE), not with a panic about printing to stdout.
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        use std::process::{Command, Stdio};
        let model =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/resnet20.safetensors");
        let mut child = Command::new(env!("CARGO_BIN_EXE_qscope"))
            .arg("info")
            .arg(&model)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            out.status.success() || out.status.signal() == Some(13),
            "{:?}",
            out.status
        );
    }
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_qscope");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/resnet20.safetensors");
    let out = Command::new(bin)
        .arg("info")
        .arg(&model)
        .output()
        .expect("run info");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "resnet20 · 10 classes · 3×32×32 · 269.7 k params · 40.6 MMAC/image · f32 weights"
    );
    assert!(lines[1].starts_with("kernels here: fp32 "), "{}", lines[1]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("layer3.2.conv2") && l.ends_with("f32")),
        "{text}"
    );
    let json = Command::new(bin)
        .args(["info", "--json"])
        .arg(&model)
        .output()
        .expect("run info --json");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(v["params"], 269_722);
    assert_eq!(v["layers"].as_array().map(Vec::len), Some(20));
    assert!(v["layers"][0]["bits"].is_null());

    let dir = tempfile::tempdir().expect("tmp");
    let cut = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(&model).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).expect("write");
    let out = Command::new(bin)
        .arg("info")
        .arg(&cut)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cut.safetensors") && err.contains("truncated"),
        "{err}"
    );
    let out = Command::new(bin)
        .args(["bench", "--batch", "0", "--model"])
        .arg(&model)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("must be at least 1"),
        "{err}"
    );
}

/// `cora --out` saves the quantized model with its adapters: reloaded, it
/// scores what the command reported, and `info` shows each layer's adapter
/// rank as the search chose it. The run is saved in `--results` like any job.
#[test]
fn cora_out_saves_adapters_that_reload_and_show_in_info() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_qscope");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("cora.safetensors");
    let run = Command::new(bin)
        .args([
            "cora",
            "--bits",
            "3",
            "--budget",
            "0.1",
            "--method",
            "heuristic",
        ])
        .args(["--calib", "200", "--limit", "300", "--json", "--model"])
        .arg(base.join("resnet20.safetensors"))
        .arg("--data")
        .arg(base.join("cifar10"))
        .arg("--out")
        .arg(&out)
        .arg("--results")
        .arg(dir.path().join("results"))
        .output()
        .expect("run cora");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    let ranks: Vec<u64> = report["ranks"]
        .as_array()
        .expect("ranks")
        .iter()
        .filter_map(|r| r.as_u64())
        .collect();
    assert_eq!(ranks.len(), 19);
    // Saved with the other runs, so the dashboard's Results list it.
    let file = report["result_file"].as_str().expect("result_file");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file).expect("result file")).expect("json");
    assert_eq!(saved["eval"]["top1_all"], report["top1_all"]);
    assert_eq!(saved["spec"]["cora"]["method"], "heuristic");
    assert_eq!(saved["spec"]["export"].as_str(), out.to_str());

    let info = Command::new(bin)
        .args(["info", "--json"])
        .arg(&out)
        .output()
        .expect("info");
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    // Convs in order, then the classifier (no adapter); a rank-0 layer has none.
    let shown: Vec<u64> = v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["op"] == "conv")
        .map(|l| l["adapter_rank"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(shown, ranks);

    let eval = Command::new(bin)
        .args(["eval", "--limit", "300", "--json", "--model"])
        .arg(&out)
        .arg("--data")
        .arg(base.join("cifar10"))
        .output()
        .expect("eval");
    let e: serde_json::Value = serde_json::from_slice(&eval.stdout).expect("json");
    assert_eq!(e["top1_all"], report["top1_all"], "reloaded vs reported");
}

/// `eval` of a model with more classes than the dataset says how labels
/// line up (the dashboard shows the same line under its form).
#[test]
fn eval_notes_a_model_with_more_classes_than_the_dataset() {
    use std::process::Command;
    let bin = env!("CARGO_BIN_EXE_qscope");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c100.safetensors");
    common::cifar_resnet(1, &[8, 16, 32], 100, common::Shortcut::OptionA, 3).write(&p, None);
    let note = "the model has 100 classes, the dataset 10: labels follow folder order";
    for (model, noted) in [(p, true), (base.join("resnet20.safetensors"), false)] {
        let out = Command::new(bin)
            .args(["eval", "--limit", "20", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(base.join("cifar10"))
            .output()
            .expect("eval");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.contains(note), noted, "{err}");
    }
}

use super::progress::Progress;
use clap::Args;
use qscope::data::{default_calib, parse_classes, DatasetRoot, SplitKind};
use qscope::jobs::{JobEvent, JobSpec, ResultsStore, RunResult};
use qscope::quant::grid::GridKind;
use qscope::quant::{BitsMap, Method, QuantConfig};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root: calibration from train/, evaluation on test/.
    #[arg(long)]
    pub data: PathBuf,
    /// rtn, gptq, gpfq, awq, awq-salient or smoothquant (static int8 activations,
    /// weights at --bits: 8 for W8A8).
    #[arg(long, default_value = "gptq")]
    pub method: String,
    #[arg(long, default_value_t = 4)]
    pub bits: u8,
    /// Bit-map preset: uniform, 5+3, 3+5, 8-ends.
    #[arg(long, default_value = "uniform")]
    pub preset: String,
    /// Per-layer overrides, e.g. `conv1=8,linear=8`.
    #[arg(long)]
    pub bits_map: Option<String>,
    /// Calibration images from the train split [default: 1024, or all the
    /// chosen classes' train images if they have fewer].
    #[arg(long)]
    pub calib: Option<usize>,
    /// Class subset for calibration and Sub evaluation.
    #[arg(long)]
    pub classes: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One grid per tensor instead of per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Symmetric grid (default asymmetric).
    #[arg(long)]
    pub sym: bool,
    /// GPTQ damping (fraction of mean diagonal).
    #[arg(long, default_value_t = 0.01)]
    pub damping: f64,
    /// GPTQ: process columns in order of decreasing Hessian diagonal.
    #[arg(long)]
    pub act_order: bool,
    /// GPFQ alphabet scalar C.
    #[arg(long, default_value_t = 1.16)]
    pub gpfq_c: f64,
    /// Fit grids by an MSE search over clipping ratios instead of min/max.
    #[arg(long)]
    pub mse_clip: bool,
    /// SmoothQuant migration strength α.
    #[arg(long, default_value_t = 0.5)]
    pub sq_alpha: f64,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Export the quantized model (safetensors).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Results folder (one JSON per run).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn build_spec(a: &QuantizeArgs) -> anyhow::Result<JobSpec> {
    let mut q = QuantConfig::new(Method::parse(&a.method)?, a.bits);
    q.bits = BitsMap {
        bits: a.bits,
        preset: a.preset.clone(),
        overrides: a
            .bits_map
            .as_deref()
            .map(BitsMap::parse_overrides)
            .transpose()?
            .unwrap_or_default(),
    };
    q.per_channel = !a.per_tensor;
    q.grid = if a.sym { GridKind::Sym } else { GridKind::Asym };
    q.damping = a.damping;
    q.act_order = a.act_order;
    q.gpfq_c = a.gpfq_c;
    q.mse_clip = a.mse_clip;
    q.sq_alpha = a.sq_alpha;
    let mut spec = JobSpec::new(a.model.clone(), a.data.clone());
    spec.quant = Some(q);
    spec.calib = a.calib.unwrap_or(DEFAULT_CALIB);
    spec.seed = a.seed;
    spec.classes = split_classes(a.classes.as_deref());
    spec.eval_limit = a.limit;
    spec.export = a.out.clone();
    Ok(spec)
}

const DEFAULT_CALIB: usize = 1024;

/// `--classes cat,dog` as the spec's list (None = all classes).
pub fn split_classes(classes: Option<&str>) -> Option<Vec<String>> {
    classes.map(|c| c.split(',').map(|s| s.trim().to_string()).collect())
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<()> {
    let mut spec = build_spec(&a)?;
    if a.calib.is_none() {
        // Settings that cannot work are refused before the calibration
        // notes (with `--calib` there are none; the job checks them).
        let graph = qscope::model::load(&spec.model)?;
        if let Some(q) = &spec.quant {
            q.bits.resolve(&graph)?;
        }
        spec.calib = fit_default_calib(&spec, &graph)?;
    }
    execute(&spec, &a.results, a.json)
}

/// The default calibration size, lowered to what the chosen classes' train
/// split holds and to what fits in memory for this model (with a note), so
/// the defaults work on small datasets and on 224×224 models.
pub fn fit_default_calib(spec: &JobSpec, graph: &qscope::model::Graph) -> anyhow::Result<usize> {
    let root = DatasetRoot::open(&spec.data)?;
    let train = root.split(SplitKind::Train)?;
    let classes = spec.classes.as_ref().map(|c| c.join(","));
    let classes = parse_classes(classes.as_deref().unwrap_or("all"), &train.class_names)?;
    let n = default_calib(&train, &classes, spec.calib);
    if n < spec.calib {
        eprintln!(
            "note: calibrating on all {n} train images of the chosen classes (default {}; --calib sets it)",
            spec.calib
        );
    }
    let cap = qscope::jobs::calib_memory::default_cap(graph);
    if n > cap {
        eprintln!(
            "note: calibrating on {cap} images, as many as this model's activations fit in memory \
             (default {}; --calib sets it)",
            spec.calib
        );
        return Ok(cap);
    }
    Ok(n)
}

/// Run a spec with a progress bar, save its result, print it.
pub fn execute(spec: &JobSpec, results: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let mut progress = Progress::new(&spec.label());
    let r = qscope::jobs::run(spec, &AtomicBool::new(false), &mut |e| match e {
        JobEvent::LayerDone { done, total, .. } => progress.update(done, total),
        JobEvent::Stage { done, total, .. } => progress.update(done, total),
        _ => {}
    })?;
    drop(progress);
    let saved = ResultsStore::new(results).save(&r)?;
    print_result(&r, json, &saved);
    Ok(())
}

fn print_result(r: &RunResult, json: bool, saved: &std::path::Path) {
    if json {
        let layers: Vec<_> = r
            .layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "bits": l.bits, "mse": l.mse, "rel_error": l.rel_error, "sqnr_db": l.sqnr_db, "seconds": l.seconds}))
            .collect();
        let v = serde_json::json!({
            "label": r.label, "top1_all": r.eval.top1_all, "top5_all": r.eval.top5_all, "top1_sub": r.eval.top1_sub,
            "images": r.eval.images, "size_bytes": r.size_bytes, "fp32_bytes": r.fp32_bytes, "bits_avg": r.bits_avg,
            "quantize_seconds": r.quantize_seconds, "total_seconds": r.total_seconds, "latency_ms": r.latency_ms, "latency_kernels": r.latency_path,
            "result_file": saved, "layers": layers,
        });
        println!("{v}");
        return;
    }
    if !r.layers.is_empty() {
        println!(
            "{:<22} {:>4} {:>11} {:>9} {:>9} {:>7}",
            "layer", "bits", "mse", "rel.err", "SQNR dB", "time s"
        );
        for l in &r.layers {
            println!(
                "{:<22} {:>4} {:>11.3e} {:>9.4} {:>9.2} {:>7.3}",
                l.name, l.bits, l.mse, l.rel_error, l.sqnr_db, l.seconds
            );
        }
    }
    println!(
        "{} {}: top-1 All {:.2} %{}  ({} images), size {:.1} KiB ({:.2} bits avg, fp32 {:.1} KiB), quantize {:.2} s",
        r.arch,
        r.label,
        r.eval.top1_all,
        r.eval.top1_sub.map_or(String::new(), |s| format!(", Sub {s:.2} %")),
        r.eval.images,
        r.size_bytes as f64 / 1024.0,
        r.bits_avg,
        r.fp32_bytes as f64 / 1024.0,
        r.quantize_seconds
    );
    println!(
        "batch-1 latency {:.3} ms on {}",
        r.latency_ms, r.latency_path
    );
    if r.spec.quant.as_ref().map(|q| q.method) == Some(qscope::quant::Method::Gpfq) {
        // The size and the kernels would otherwise look inconsistent with "4 bits".
        println!(
            "note: GPFQ's b-bit alphabet has 2^b + 1 levels (its authors' convention): a layer \
             that uses them all stores b + 1-bit codes and runs on the f32 kernels"
        );
    }
    println!("saved {}", saved.display());
}

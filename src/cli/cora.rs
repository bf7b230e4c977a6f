//! `qscope cora`: a quantization plus CoRa adapters, run as the same job
//! the dashboard and `qscope run` build, so its result is saved with theirs.
use super::progress::Progress;
use clap::Args;
use qscope::jobs::{CoraTrace, JobEvent, JobSpec, ResultsStore, RunResult};
use qscope::quant::{Method, QuantConfig};
use qscope::train::cora_job::CoraSpec;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct CoraArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub bits: u8,
    /// Adapter parameters as a fraction of the conv parameters.
    #[arg(long, default_value_t = 0.05)]
    pub budget: f64,
    /// optimal (CoRa-O); heuristic (CoRa-H: of the five rules below, the one
    /// with the lowest calibration loss); or one rule: energy (most residual
    /// energy per parameter), output (most output error removed), fisher
    /// (most loss removed, empirical Fisher), channels (the reference's
    /// ⌊C_in·β⌋), uniform (plain SVD truncation, equal share); none.
    #[arg(long, default_value = "optimal")]
    pub method: String,
    /// Base quantizer whose residual the adapters reclaim: rtn, gptq or gpfq.
    #[arg(long, default_value = "rtn")]
    pub base: String,
    /// Calibration images (the base quantizer and the rank search), from
    /// train/ [default: 1600, or all the chosen classes' train images if
    /// they have fewer].
    #[arg(long)]
    pub calib: Option<usize>,
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    pub batch: usize,
    /// Rank-search loss: ce (cross-entropy on labels) or kd (KL to the FP model).
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// Class subset for calibration and Sub evaluation.
    #[arg(long)]
    pub classes: Option<String>,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
    /// Save the quantized model (packed codes) with its adapters, reloadable
    /// by every command; `info` lists the adapted layers.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Results folder (one JSON per run, shown by the dashboard).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
}

/// Calibration images when `--calib` is not given: the CoRa paper's 1600.
const DEFAULT_CALIB: usize = 1600;

pub fn build_spec(a: &CoraArgs) -> anyhow::Result<JobSpec> {
    let base = Method::parse(&a.base)?;
    if !matches!(base, Method::Rtn | Method::Gptq | Method::Gpfq) {
        anyhow::bail!(
            "--base {}: CoRa's base quantizer is rtn, gptq or gpfq",
            a.base
        );
    }
    let mut spec = JobSpec::new(a.model.clone(), a.data.clone());
    spec.quant = Some(QuantConfig::new(base, a.bits));
    spec.calib = a.calib.unwrap_or(DEFAULT_CALIB);
    spec.seed = a.seed;
    spec.classes = super::quantize::split_classes(a.classes.as_deref());
    spec.eval_limit = a.limit;
    spec.export = a.out.clone();
    // `none`: the base quantization alone, for a baseline at the same settings.
    if a.method != "none" {
        let cora = CoraSpec {
            budget: a.budget,
            method: a.method.clone(),
            iterations: a.iters,
            batch: a.batch,
            loss: a.loss.clone(),
        };
        cora.validate()?;
        spec.cora = Some(cora);
    }
    Ok(spec)
}

pub fn run(a: CoraArgs) -> anyhow::Result<()> {
    let mut spec = build_spec(&a)?;
    if a.calib.is_none() {
        let graph = qscope::model::load(&spec.model)?;
        spec.calib = super::quantize::fit_default_calib(&spec, &graph)?;
    }
    let mut progress = Progress::new(&spec.label());
    // The rank search's time: from its first stage event to its ranks.
    let (mut search_start, mut search_seconds) = (None::<Instant>, 0.0);
    let r = qscope::jobs::run(&spec, &AtomicBool::new(false), &mut |e| match e {
        JobEvent::LayerDone { done, total, .. } => progress.update(done, total),
        JobEvent::Stage { name, done, total } => {
            if name == qscope::jobs::runner::CORA_STAGE && search_start.is_none() {
                search_start = Some(Instant::now());
            }
            progress.update(done, total)
        }
        JobEvent::CoraRanks { .. } => {
            search_seconds = search_start.map_or(0.0, |t| t.elapsed().as_secs_f64())
        }
        _ => {}
    })?;
    drop(progress);
    let saved = ResultsStore::new(&a.results).save(&r)?;
    print_result(&a, &r, search_seconds, &saved);
    Ok(())
}

fn print_result(a: &CoraArgs, r: &RunResult, search_seconds: f64, saved: &std::path::Path) {
    let none = CoraTrace::default();
    let c = r.trace.cora.as_ref().unwrap_or(&none);
    let ranks = c.ranks.as_deref().unwrap_or_default();
    let rule = c.rules.first().map(|(rule, _)| rule);
    let fraction = c.extra_params as f64 / c.conv_params.max(1) as f64;
    if a.json {
        let v = serde_json::json!({
            "label": r.label, "top1_all": r.eval.top1_all, "top1_sub": r.eval.top1_sub, "images": r.eval.images,
            "bits": a.bits, "base": a.base, "method": a.method, "budget": a.budget,
            "extra_params": c.extra_params, "extra_fraction": fraction, "ranks": ranks, "rule": rule,
            "size_bytes": r.size_bytes, "latency_ms": r.latency_ms, "latency_kernels": r.latency_path,
            "quantize_seconds": r.quantize_seconds, "search_seconds": search_seconds,
            "total_seconds": r.total_seconds, "saved": a.out, "result_file": saved,
        });
        println!("{v}");
        return;
    }
    if let Some(path) = &a.out {
        println!("exported {} (packed codes and adapters)", path.display());
    }
    println!(
        "{} {}: top-1 All {:.2} %{} ({} images); size {:.1} KiB{}",
        r.arch,
        r.label,
        r.eval.top1_all,
        r.eval
            .top1_sub
            .map_or(String::new(), |s| format!(", Sub {s:.2} %")),
        r.eval.images,
        r.size_bytes as f64 / 1024.0,
        if r.spec.cora.is_some() {
            " with the adapters"
        } else {
            ""
        },
    );
    if r.spec.cora.is_some() {
        println!(
            "adapters {} params = {:.2} % of conv params (budget {:.0} %); search {:.1} s\nranks {:?}",
            c.extra_params,
            100.0 * fraction,
            100.0 * a.budget,
            search_seconds,
            ranks
        );
    }
    if let Some(rule) = rule {
        println!(
            "CoRa-H chose `{rule}` by calibration cross-entropy: {}",
            c.rules
                .iter()
                .map(|(rule, loss)| format!("{rule} {loss:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "batch-1 latency {:.3} ms on {}",
        r.latency_ms, r.latency_path
    );
    println!("saved {}", saved.display());
}

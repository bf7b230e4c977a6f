use super::progress::Progress;
use clap::Args;
use qscope::data::{default_calib, sample_spread, DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use qscope::quant::{quantize_model, Method, QuantConfig};
use qscope::train::cora_job::{apply, CoraSpec};
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
    /// Base quantizer whose residual the adapters reclaim: rtn or gptq.
    #[arg(long, default_value = "rtn")]
    pub base: String,
    /// Calibration images (GPTQ and the rank search), from train/
    /// [default: 1600, or all train images if there are fewer].
    #[arg(long)]
    pub calib: Option<usize>,
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    #[arg(long, default_value_t = 32, value_parser = super::at_least_one)]
    pub batch: usize,
    /// Rank-search loss: ce (cross-entropy on labels) or kd (KL to the FP model).
    #[arg(long, default_value = "ce")]
    pub loss: String,
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
}

/// Calibration images when `--calib` is not given: the CoRa paper's 1600.
const DEFAULT_CALIB: usize = 1600;

pub fn run(a: CoraArgs) -> anyhow::Result<()> {
    let graph = qscope::model::load(&a.model)?;
    let root = DatasetRoot::open(&a.data)?;
    let train = root.split(SplitKind::Train)?;
    let test = root.split(SplitKind::Test)?;
    let all: Vec<usize> = (0..train.num_classes()).collect();
    let calib = match a.calib {
        Some(n) => n,
        None => {
            let n = default_calib(&train, &all, DEFAULT_CALIB);
            if n < DEFAULT_CALIB {
                eprintln!(
                    "note: calibrating on all {n} train images (default {DEFAULT_CALIB}; --calib sets it)"
                );
            }
            let cap = qscope::jobs::calib_memory::default_cap(&graph);
            if n > cap {
                eprintln!(
                    "note: calibrating on {cap} images, as many as this model's activations fit in memory \
                     (default {DEFAULT_CALIB}; --calib sets it)"
                );
            }
            n.min(cap)
        }
    };
    qscope::jobs::calib_memory::check(&graph, calib.min(1024))?;
    let idx = sample_spread(&train, &all, calib, a.seed)?;
    let pre = Preprocess::for_model(&graph.meta);
    let base = match a.base.as_str() {
        "rtn" => Method::Rtn,
        "gptq" => Method::Gptq,
        b => anyhow::bail!("unknown base quantizer `{b}` (rtn, gptq)"),
    };
    let t0 = Instant::now();
    let calib = pre.batch(&train, &idx[..idx.len().min(1024)]);
    let out = quantize_model(
        &graph,
        &calib,
        &QuantConfig::new(base, a.bits),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )?;
    let quant_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let spec = CoraSpec {
        budget: a.budget,
        method: a.method.clone(),
        iterations: a.iters,
        batch: a.batch,
        loss: a.loss.clone(),
    };
    let mut progress = Progress::new("rank search");
    let (ranks, extra, conv_params, adapted, candidates, adapters) = if a.method == "none" {
        let conv_params: usize = graph
            .layer_nodes()
            .iter()
            .filter(|&&n| matches!(graph.nodes[n].op, qscope::model::Op::Conv(_)))
            .map(|&n| graph.weight(n).map_or(0, |(w, _)| w.len()))
            .sum();
        (vec![], 0, conv_params, out.graph.clone(), vec![], vec![])
    } else {
        let co = apply(
            &graph,
            &out.graph,
            &spec,
            &train,
            &idx,
            a.seed,
            &AtomicBool::new(false),
            &mut |_| {},
            &mut |s| progress.update(s.iteration, a.iters),
        )?;
        (
            co.ranks,
            co.extra_params,
            co.conv_params,
            co.graph,
            co.candidates,
            co.adapters,
        )
    };
    drop(progress);
    let search_secs = t1.elapsed().as_secs_f64();
    let rule = candidates.first().map(|c| c.rule);
    let fused = adapted.fused();
    let tidx = eval_indices(&test, &(0..test.num_classes()).collect::<Vec<_>>(), a.limit);
    let eval = qscope::eval::evaluate(
        &fused,
        &test,
        &tidx,
        &pre,
        None,
        256,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )?;
    // Written before the report, atomically, as `quantize --out` does.
    if let Some(path) = &a.out {
        qscope::model::export::save_with_adapters(&out.graph, &out.packed, &adapters, path)?;
    }
    let v = serde_json::json!({
        "top1_all": eval.top1_all, "images": eval.images, "bits": a.bits, "base": a.base, "method": a.method,
        "budget": a.budget, "extra_params": extra, "extra_fraction": extra as f64 / conv_params as f64,
        "ranks": ranks, "rule": rule, "quantize_seconds": quant_secs, "search_seconds": search_secs,
        "saved": a.out,
    });
    if a.json {
        println!("{v}");
    } else {
        if let Some(path) = &a.out {
            println!("saved {}", path.display());
        }
        println!(
            "{} {}-bit {} + CoRa-{}: top-1 {:.2} % ({} images); adapters {} params = {:.2} % of conv params (budget {:.0} %); search {:.1} s\nranks {:?}",
            graph.meta.arch, a.bits, a.base, a.method, eval.top1_all, eval.images, extra, 100.0 * extra as f64 / conv_params as f64, 100.0 * a.budget, search_secs, ranks
        );
        if let Some(r) = rule {
            println!(
                "CoRa-H chose `{r}` by calibration cross-entropy: {}",
                candidates
                    .iter()
                    .map(|c| format!("{} {:.4}", c.rule, c.loss))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

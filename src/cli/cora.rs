use super::progress::Progress;
use clap::Args;
use qscope::data::{sample_spread, DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use qscope::model::Op;
use qscope::quant::cora::{energy_ranks, heuristic_ranks, residual_svd, uniform_ranks};
use qscope::quant::{quantize_model, Method, QuantConfig};
use qscope::train::cora_search::{search, SearchConfig};
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
    /// optimal (CoRa-O), heuristic (CoRa-H: most residual energy per parameter),
    /// channels (the reference's ⌊C_in·β⌋ rule), uniform (plain SVD truncation), none.
    #[arg(long, default_value = "optimal")]
    pub method: String,
    /// Base quantizer whose residual the adapters reclaim: rtn or gptq.
    #[arg(long, default_value = "rtn")]
    pub base: String,
    /// Calibration images (GPTQ and the rank search), from train/.
    #[arg(long, default_value_t = 1600)]
    pub calib: usize,
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: CoraArgs) -> anyhow::Result<()> {
    let graph = qscope::model::load(&a.model)?;
    let root = DatasetRoot::open(&a.data)?;
    let train = root.split(SplitKind::Train)?;
    let test = root.split(SplitKind::Test)?;
    let all: Vec<usize> = (0..train.num_classes()).collect();
    let idx = sample_spread(&train, &all, a.calib, a.seed)?;
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
    // Q in the unfused graph (BN as nodes), as the search's training pass needs.
    let mut q = graph.clone();
    for n in q.layer_nodes() {
        let name = q.nodes[n].name.clone();
        let src = out.graph.find_layer(&name)?;
        let w = out
            .graph
            .weight(src)
            .map(|(w, _)| w.to_vec())
            .unwrap_or_default();
        if let Some(dst) = q.weight_mut(n) {
            dst.copy_from_slice(&w);
        }
    }
    let convs: Vec<usize> = q
        .layer_nodes()
        .into_iter()
        .filter(|&n| matches!(q.nodes[n].op, Op::Conv(_)))
        .collect();
    let t1 = Instant::now();
    let layers: Vec<(usize, qscope::quant::cora::ResidualSvd)> = convs
        .iter()
        .map(|&n| {
            let (w, shape) = graph
                .weight(n)
                .map(|(w, s)| (w.to_vec(), s))
                .unwrap_or_default();
            let qw = q.weight(n).map(|(w, _)| w.to_vec()).unwrap_or_default();
            (
                n,
                residual_svd(&w, &qw, shape[0], w.len() / shape[0].max(1)),
            )
        })
        .collect();
    let conv_params: usize = convs
        .iter()
        .map(|&n| q.weight(n).map_or(0, |(w, _)| w.len()))
        .sum();
    let budget = (a.budget * conv_params as f64) as usize;
    let ranks: Vec<usize> = match a.method.as_str() {
        "none" => vec![0; layers.len()],
        "uniform" => uniform_ranks(&layers.iter().map(|(_, s)| s).collect::<Vec<_>>(), budget),
        "heuristic" => energy_ranks(&layers.iter().map(|(_, s)| s).collect::<Vec<_>>(), budget),
        "channels" => {
            let info: Vec<(usize, usize, &qscope::quant::cora::ResidualSvd)> = layers
                .iter()
                .map(|(n, s)| (q.weight(*n).map_or(0, |(_, sh)| sh[1]), s.n, s))
                .collect();
            heuristic_ranks(&info, budget)
        }
        "optimal" => {
            let cfg = SearchConfig {
                budget: a.budget,
                iterations: a.iters,
                batch: a.batch,
                seed: a.seed,
                ..Default::default()
            };
            let mut progress = Progress::new("rank search");
            let r = search(
                &q,
                &layers,
                &train,
                &idx,
                &pre,
                &cfg,
                &AtomicBool::new(false),
                &mut |s| progress.update(s.iteration, cfg.iterations),
            )?;
            drop(progress);
            r
        }
        m => {
            anyhow::bail!("unknown CoRa method `{m}` (optimal, heuristic, channels, uniform, none)")
        }
    };
    let search_secs = t1.elapsed().as_secs_f64();
    let mut adapted = q.clone();
    let mut extra = 0usize;
    for ((n, svd), &r) in layers.iter().zip(&ranks) {
        let c: Vec<f64> = (0..svd.rank_max())
            .map(|i| if i < r { 1.0 } else { 0.0 })
            .collect();
        let delta = svd.reconstruct(&c);
        extra += svd.adapter_params(r);
        if let Some(w) = adapted.weight_mut(*n) {
            w.iter_mut().zip(&delta).for_each(|(o, d)| *o += d);
        }
    }
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
    let v = serde_json::json!({
        "top1_all": eval.top1_all, "images": eval.images, "bits": a.bits, "base": a.base, "method": a.method,
        "budget": a.budget, "extra_params": extra, "extra_fraction": extra as f64 / conv_params as f64,
        "ranks": ranks, "quantize_seconds": quant_secs, "search_seconds": search_secs,
    });
    if a.json {
        println!("{v}");
    } else {
        println!(
            "{} {}-bit {} + CoRa-{}: top-1 {:.2} % ({} images); adapters {} params = {:.2} % of conv params (budget {:.0} %); search {:.1} s\nranks {:?}",
            graph.meta.arch, a.bits, a.base, a.method, eval.top1_all, eval.images, extra, 100.0 * extra as f64 / conv_params as f64, 100.0 * a.budget, search_secs, ranks
        );
    }
    Ok(())
}

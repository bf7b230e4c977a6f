//! Command-line interface. Human tables go to stdout, progress bars to stderr;
//! with `--json`, stdout is exactly one JSON object.
mod bench;
mod cora;
mod dashboard;
mod eval;
mod finetune;
mod info;
mod laq;
mod progress;
mod quantize;
mod runspec;
mod subsets;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "qscope",
    version,
    about = "A terminal laboratory for quantizing convolutional networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Worker threads for compute (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the dashboard (the default when no command is given).
    Dashboard(dashboard::DashboardArgs),
    /// Print the layer table of a model: name, op, shape, parameters, MACs.
    Info(info::InfoArgs),
    /// Top-1/top-5 accuracy on a dataset's test split (All and, with --classes, Sub).
    Eval(eval::EvalArgs),
    /// Batch-1 latency and batch-N throughput.
    Bench(bench::BenchArgs),
    /// Quantize a model (RTN, GPTQ, GPFQ, AWQ, SmoothQuant W8A8), evaluate it, save the result.
    Quantize(quantize::QuantizeArgs),
    /// Fine-tune (FT) or quantization-aware train (QAT) a model; evaluates and saves it.
    Finetune(finetune::FinetuneArgs),
    /// CoRa: low-rank adapters on the quantization residual (optimal / heuristic ranks).
    Cora(cora::CoraArgs),
    /// LAQ: class subsets by inter-class distance (features → UMAP → Gaussian KL).
    Subsets(subsets::SubsetsArgs),
    /// LAQ experiment: Original / Quant / FT / FT+Quant × All / Sub over subsets (resumable).
    Laq(laq::LaqArgs),
    /// Run a saved job spec (JSON) or every spec in a folder; finished specs are skipped.
    Run(runspec::RunArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(t) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .ok();
    }
    match cli.command {
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Eval(a)) => eval::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Quantize(a)) => quantize::run(a),
        Some(Command::Run(a)) => runspec::run(a),
        Some(Command::Finetune(a)) => finetune::run(a),
        Some(Command::Cora(a)) => cora::run(a),
        Some(Command::Subsets(a)) => subsets::run(a),
        Some(Command::Laq(a)) => laq::run_cli(a),
        Some(Command::Dashboard(a)) => dashboard::run(a),
        None => dashboard::run(dashboard::DashboardArgs {
            results: "results".into(),
            ..Default::default()
        }),
    }
}

/// The bundled sample, found next to the working directory or the source tree.
pub fn sample_path(rel: &str) -> PathBuf {
    let here = Path::new("sample_models").join(rel);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_models")
        .join(rel)
}

/// A count that must be at least 1 (batch sizes): `--batch 0` is refused
/// by the parser, naming the flag, instead of running something else.
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

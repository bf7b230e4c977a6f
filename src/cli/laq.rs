use clap::Args;
use qscope::laq::experiment::{run, ExperimentConfig};
use qscope::train::TrainConfig;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct LaqArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Subsets file written by `qscope subsets --out`.
    #[arg(long)]
    pub subsets: PathBuf,
    /// Results folder: laq.csv, charts, fine-tuned checkpoints (resumable).
    #[arg(long, default_value = "results/laq")]
    pub out: PathBuf,
    #[arg(long, default_value = "4,3,2,5+3,3+5")]
    pub bits: String,
    /// GPFQ calibration images from each subset's train split (at most:
    /// a smaller subset uses all its images).
    #[arg(long, default_value_t = 256)]
    pub calib: usize,
    #[arg(long, default_value_t = 1.0)]
    pub ft_epochs: f64,
    #[arg(long, default_value_t = 0.01)]
    pub ft_lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run_cli(a: LaqArgs) -> anyhow::Result<()> {
    let graph = qscope::model::load(&a.model)?;
    let text = std::fs::read_to_string(&a.subsets)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.subsets.display()))?;
    // The same parser the dashboard's Subsets screen uses.
    let view = qscope::app::state::LaqView::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.subsets.display()))?;
    let subsets: Vec<(Vec<usize>, f64)> = view
        .subsets
        .into_iter()
        .map(|(_, classes, median)| (classes, median))
        .collect();
    let cfg = ExperimentConfig {
        subsets,
        bits: a.bits.split(',').map(|s| s.trim().to_string()).collect(),
        calib: a.calib,
        ft: TrainConfig {
            epochs: a.ft_epochs,
            lr: a.ft_lr,
            seed: a.seed,
            ..Default::default()
        },
        seed: a.seed,
    };
    std::fs::create_dir_all(&a.out)?;
    let cells = run(
        &graph,
        &a.data,
        &cfg,
        &a.out,
        &AtomicBool::new(false),
        &mut |c, done, total| {
            eprintln!(
                "[{done}/{total}] {} {} {}: All {:.2} Sub {:.2}",
                c.subset, c.variant, c.bits, c.top1_all, c.top1_sub
            );
        },
    )?;
    for b in &cfg.bits {
        for sub in [false, true] {
            let p = a.out.join(format!(
                "laq_{}_{}.svg",
                b.replace('+', "p"),
                if sub { "sub" } else { "all" }
            ));
            qscope::util::write_atomic(&p, qscope::laq::chart::svg(&cells, b, sub).as_bytes())?;
        }
    }
    println!(
        "{} cells in {}",
        cells.len(),
        a.out.join("laq.csv").display()
    );
    Ok(())
}

use super::progress::Progress;
use clap::Args;
use qscope::data::{parse_classes, DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root (train/ and test/ class folders, CIFAR binaries, MNIST IDX) or one split folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Class subset, by name or index (comma-separated); reports Sub accuracy too.
    #[arg(long)]
    pub classes: Option<String>,
    /// Evaluate at most N images, spread evenly over the classes.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256, value_parser = super::at_least_one)]
    pub batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run quantized layers as the f32 simulation instead of their integer kernels.
    #[arg(long)]
    pub simulate: bool,
    /// Use the AVX2 kernels even on an AVX-512 CPU (as `bench --avx2`): the
    /// accuracy AVX2-only machines get.
    #[arg(long)]
    pub avx2: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    let mut graph = qscope::model::load(&a.model)?.into_fused();
    qscope::model::exec::set_integer_paths(!a.simulate);
    qscope::engine::kernels::direct_conv::force_avx2(a.avx2);
    // After the path switches: they decide which layers run from codes.
    graph.release_f32_weights();
    let root = DatasetRoot::open(&a.data)?;
    let split = root.split(SplitKind::Test)?;
    if let Some(w) =
        qscope::eval::accuracy::class_count_warning(graph.meta.num_classes, split.num_classes())
    {
        eprintln!("note: {w}");
    }
    let subset = a
        .classes
        .as_deref()
        .map(|c| parse_classes(c, &split.class_names))
        .transpose()?;
    let classes: Vec<usize> = subset
        .clone()
        .unwrap_or_else(|| (0..split.num_classes()).collect());
    let indices = eval_indices(&split, &classes, a.limit);
    let pre = Preprocess::for_model(&graph.meta);
    let mut progress = Progress::new("evaluating");
    let report = qscope::eval::evaluate(
        &graph,
        &split,
        &indices,
        &pre,
        subset.as_deref(),
        a.batch,
        &AtomicBool::new(false),
        &mut |d, t| progress.update(d, t),
    )?;
    drop(progress);
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["model"] = serde_json::json!(a.model);
        v["kernels"] = serde_json::json!(qscope::model::exec::path_summary(&graph));
        v["peak_rss_bytes"] = serde_json::json!(qscope::util::peak_rss_bytes());
        println!("{v}");
        return Ok(());
    }
    println!(
        "{} on {} ({} images, {:.2} s)",
        graph.meta.arch, split.source, report.images, report.seconds
    );
    println!("  kernels: {}", qscope::model::exec::path_summary(&graph));
    println!(
        "  top-1 All {:6.2} %   top-5 All {:6.2} %",
        report.top1_all, report.top5_all
    );
    if let (Some(s1), Some(s5)) = (report.top1_sub, report.top5_sub) {
        println!("  top-1 Sub {s1:6.2} %   top-5 Sub {s5:6.2} %");
    }
    println!("  per class:");
    for c in &report.per_class {
        println!(
            "    {:<16} {:6.2} %  ({} images)",
            c.class, c.top1, c.images
        );
    }
    Ok(())
}

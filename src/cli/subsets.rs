use clap::Args;
use qscope::data::{sample_per_class, DatasetRoot, SplitKind};
use qscope::laq::{class_gaussians, features, icd_matrix, select_subsets, umap_2d, UmapConfig};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SubsetsArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root; features come from its train split.
    #[arg(long)]
    pub data: PathBuf,
    /// Classes per subset.
    #[arg(long, default_value_t = 4)]
    pub k: usize,
    /// How many subsets, spanning low to high median inter-class distance.
    #[arg(long, default_value_t = 6)]
    pub count: usize,
    /// Train images per class fed to UMAP [default: 500, or the smallest
    /// class's count if lower].
    #[arg(long)]
    pub per_class: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save subsets, distance matrix and embedding (JSON, atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: SubsetsArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let graph = qscope::model::load(&a.model)?;
    let train = DatasetRoot::open(&a.data)?.split(SplitKind::Train)?;
    let classes: Vec<usize> = (0..train.num_classes()).collect();
    if a.k < 2 || a.k > classes.len() {
        anyhow::bail!(
            "--k {}: a subset needs 2 to {} classes ({} has {})",
            a.k,
            classes.len(),
            a.data.display(),
            classes.len()
        );
    }
    let per_class = match a.per_class {
        Some(n) => n,
        None => {
            let fewest = train.by_class().iter().map(Vec::len).min().unwrap_or(0);
            if fewest < 500 {
                eprintln!("note: embedding {fewest} train images per class (the smallest class; default 500, --per-class sets it)");
            }
            fewest.min(500)
        }
    };
    let idx = sample_per_class(&train, &classes, per_class, a.seed)?;
    let (feats, dim) = features(&graph, &train, &idx)?;
    let t_feat = t0.elapsed().as_secs_f64();
    let xy = umap_2d(
        &feats,
        idx.len(),
        dim,
        &UmapConfig {
            seed: a.seed,
            ..Default::default()
        },
    );
    let t_umap = t0.elapsed().as_secs_f64() - t_feat;
    let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
    let icd = icd_matrix(&class_gaussians(&xy, &labels, classes.len()));
    let subsets = select_subsets(&icd, classes.len(), a.k, a.count, a.seed);
    let named: Vec<serde_json::Value> = subsets
        .iter()
        .map(|s| {
            serde_json::json!({"kind": s.kind, "classes": s.classes.iter().map(|&c| train.class_names[c].clone()).collect::<Vec<_>>(),
                               "median_icd": s.median_icd, "mean_icd": s.mean_icd})
        })
        .collect();
    let out = serde_json::json!({
        "subsets": named, "class_names": train.class_names, "icd": icd, "points": idx.len(),
        "embedding": xy, "labels": labels, "feature_seconds": t_feat, "umap_seconds": t_umap,
    });
    if let Some(p) = &a.out {
        qscope::util::write_atomic(p, serde_json::to_string(&out)?.as_bytes())?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"subsets": out["subsets"], "feature_seconds": t_feat, "umap_seconds": t_umap})
        );
        return Ok(());
    }
    println!(
        "{} points, features {t_feat:.1} s, UMAP {t_umap:.1} s",
        idx.len()
    );
    for s in &subsets {
        let names: Vec<&str> = s
            .classes
            .iter()
            .map(|&c| train.class_names[c].as_str())
            .collect();
        println!(
            "  {:<10} median ICD {:>8.3}  {}",
            format!("{:?}", s.kind),
            s.median_icd,
            names.join(", ")
        );
    }
    Ok(())
}

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Default)]
pub struct DashboardArgs {
    /// Model file(s) to offer besides the bundled sample.
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// Dataset root(s) to offer besides the bundled sample.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Theme: dark, light, high-contrast, or a name from --theme-dir.
    #[arg(long)]
    pub theme: Option<String>,
    /// Folder with extra theme *.toml files.
    #[arg(long)]
    pub theme_dir: Option<PathBuf>,
    /// Results folder (one JSON per run; reloaded at start).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Evaluate jobs on at most N test images (faster feedback on big test sets).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Subsets file from `qscope subsets --out`, for the Subsets screen.
    #[arg(long)]
    pub subsets: Option<PathBuf>,
    /// `laq.csv` from `qscope laq`: accuracy vs median ICD on the Subsets screen.
    #[arg(long)]
    pub laq_results: Option<PathBuf>,
}

fn sample_entries(want_dirs: bool) -> Vec<PathBuf> {
    let dir = super::sample_path("");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    if want_dirs {
                        p.is_dir()
                    } else {
                        p.extension().is_some_and(|x| x == "safetensors")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn run(a: DashboardArgs) -> anyhow::Result<()> {
    let mut models = a.model.clone();
    models.extend(sample_entries(false));
    let mut datasets = a.data.clone();
    datasets.extend(sample_entries(true));
    qscope::tui::run_dashboard(qscope::tui::DashboardOptions {
        models,
        datasets,
        results_dir: a.results,
        theme: a.theme,
        theme_dir: a.theme_dir.or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/qscope/themes"))
        }),
        eval_limit: a.limit,
        subsets: a.subsets,
        laq_results: a.laq_results,
    })?;
    Ok(())
}

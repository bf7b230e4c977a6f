use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A job spec (JSON), as the dashboard saves it. A folder runs every spec in it.
    pub spec: PathBuf,
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let files: Vec<PathBuf> = if a.spec.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&a.spec)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        v.sort();
        v
    } else {
        vec![a.spec.clone()]
    };
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let spec: qscope::jobs::JobSpec = serde_json::from_str(&text).map_err(|e| {
            // A saved result holds its spec under "spec": say so.
            let result = serde_json::from_str::<serde_json::Value>(&text)
                .is_ok_and(|v| v.get("spec").is_some() && v.get("eval").is_some());
            if result {
                anyhow::anyhow!(
                    "{}: a saved result, not a job spec; its spec is the \"spec\" field (e.g. `jq .spec {} > job.json`; \
                     a spec whose result exists is skipped, so change it or pass another --results folder)",
                    f.display(),
                    f.display()
                )
            } else {
                anyhow::anyhow!("{}: not a job spec: {e}", f.display())
            }
        })?;
        let store = qscope::jobs::ResultsStore::new(&a.results);
        if let Some(done) = store.load(&spec.key()) {
            eprintln!(
                "{}: already done ({}), skipping",
                f.display(),
                store.path_for(&done.key).display()
            );
            continue;
        }
        super::quantize::execute(&spec, &a.results, a.json)?;
    }
    Ok(())
}

//! Results as JSON files, one per run, written atomically (temp file + rename),
//! so a crash or kill never corrupts what was saved.
use crate::jobs::runner::RunResult;
use crate::util::write_atomic;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

pub struct ResultsStore {
    pub dir: PathBuf,
}

impl ResultsStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ResultsStore { dir: dir.into() }
    }

    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    pub fn save(&self, r: &RunResult) -> Result<PathBuf> {
        let path = self.path_for(&r.key);
        let json = serde_json::to_vec_pretty(r)
            .map_err(|e| Error::Invalid(format!("cannot serialise result: {e}")))?;
        write_atomic(&path, &json)?;
        Ok(path)
    }

    pub fn load(&self, key: &str) -> Option<RunResult> {
        load_file(&self.path_for(key)).ok()
    }

    /// Every readable result, oldest first; unreadable files are reported, not fatal.
    pub fn load_all(&self) -> (Vec<RunResult>, Vec<String>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (ok, bad);
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                match load_file(&p) {
                    Ok(r) => ok.push(r),
                    Err(err) => bad.push(err.to_string()),
                }
            }
        }
        ok.sort_by(|a, b| a.finished_unix.total_cmp(&b.finished_unix));
        (ok, bad)
    }
}

fn load_file(p: &Path) -> Result<RunResult> {
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::dataset(p, format!("not a qscope result: {e}")))
}

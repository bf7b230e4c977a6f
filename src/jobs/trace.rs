//! What a job's events draw: the Training curves and the CoRa screen. The
//! dashboard folds events into a `Trace` as they arrive, and the runner folds
//! the same events into the one it saves with the result, so a run reopened
//! from Results draws what was seen live.
use crate::jobs::{JobEvent, JobSpec};
use crate::train::TrainEvent;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Training steps (loss and batch-accuracy curves).
    #[serde(default)]
    pub train: Vec<TrainEvent>,
    #[serde(default)]
    pub cora: Option<CoraTrace>,
}

/// CoRa: the residual spectra, the rank search and its outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CoraTrace {
    /// Per conv: name and residual singular values.
    pub spectra: Vec<(String, Vec<f64>)>,
    /// Relaxed ranks r̃ (fractions of the maximum rank), latest iteration.
    pub relaxed: Vec<f64>,
    /// (loss, budget used) per iteration of CoRa-O's search.
    pub history: Vec<(f64, f64)>,
    pub ranks: Option<Vec<usize>>,
    pub extra_params: usize,
    pub conv_params: usize,
    pub budget: f64,
    /// CoRa-H: each closed-form rule with its calibration loss, the chosen first.
    #[serde(default)]
    pub rules: Vec<(String, f64)>,
}

impl Trace {
    /// Fold in one event of `spec`'s job (events that draw nothing are
    /// ignored).
    pub fn record(&mut self, e: &JobEvent, spec: &JobSpec) {
        match e {
            JobEvent::TrainStep(t) => self.train.push(t.clone()),
            JobEvent::CoraSpectra(sp) => {
                self.cora = Some(CoraTrace {
                    spectra: sp.clone(),
                    budget: spec.cora.as_ref().map_or(0.0, |c| c.budget),
                    ..Default::default()
                })
            }
            JobEvent::CoraStep(st) => {
                if let Some(c) = self.cora.as_mut() {
                    c.history.push((st.loss, st.budget_used));
                    c.relaxed = st.relaxed.clone();
                }
            }
            JobEvent::CoraRanks {
                ranks,
                extra_params,
                conv_params,
                candidates,
                ..
            } => {
                if let Some(c) = self.cora.as_mut() {
                    c.ranks = Some(ranks.clone());
                    c.extra_params = *extra_params;
                    c.conv_params = *conv_params;
                    c.rules = candidates
                        .iter()
                        .map(|c| (c.rule.to_string(), c.loss))
                        .collect();
                }
            }
            _ => {}
        }
    }
}

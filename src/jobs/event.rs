//! The one message type from a job to whoever watches it.
use crate::eval::EvalReport;
use crate::jobs::runner::RunResult;
use crate::quant::LayerReport;

#[derive(Clone, Debug)]
pub enum JobEvent {
    /// The model is loaded: its quantizable layers, in order.
    Started {
        layers: Vec<String>,
    },
    /// A long phase is under way (loading data, calibration, evaluation).
    Stage {
        name: String,
        done: usize,
        total: usize,
    },
    /// One layer quantized, with its metrics and histograms.
    LayerDone {
        report: Box<LayerReport>,
        done: usize,
        total: usize,
    },
    Evaluated(Box<EvalReport>),
    /// One training step: loss, batch accuracy, images/s.
    TrainStep(crate::train::TrainEvent),
    /// CoRa: each conv's residual singular values (for the spectrum plot).
    CoraSpectra(Vec<(String, Vec<f64>)>),
    /// CoRa-O: one rank-search iteration.
    CoraStep(crate::train::cora_search::SearchStep),
    /// CoRa: the final integer ranks.
    CoraRanks {
        ranks: Vec<usize>,
        rank_max: Vec<usize>,
        extra_params: usize,
        conv_params: usize,
        /// CoRa-H: every closed-form rule with its calibration loss, the
        /// chosen first (empty for CoRa-O and a named rule).
        candidates: Vec<crate::train::cora_rules::Candidate>,
    },
    Finished(Box<RunResult>),
    Failed(String),
    Cancelled,
}

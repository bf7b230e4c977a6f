//! What to run, as data. A spec is a file, so a sweep is a folder of specs.
use crate::quant::QuantConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobSpec {
    pub model: PathBuf,
    pub data: PathBuf,
    /// Class subset (names or indices): calibration draws from it and
    /// evaluation reports Sub accuracy on its test images. None = all classes.
    #[serde(default)]
    pub classes: Option<Vec<String>>,
    /// None evaluates the model as it is (the FP baseline).
    #[serde(default)]
    pub quant: Option<QuantConfig>,
    /// Calibration images drawn from the train split.
    #[serde(default = "calib")]
    pub calib: usize,
    #[serde(default)]
    pub seed: u64,
    /// Evaluate on at most this many test images (balanced over classes).
    #[serde(default)]
    pub eval_limit: Option<usize>,
    /// Also export the quantized model here (training jobs: the checkpoint,
    /// also written when the job is cancelled).
    #[serde(default)]
    pub export: Option<PathBuf>,
    /// Fine-tune (or, with `qat_bits`, quantization-aware train) first.
    #[serde(default)]
    pub train: Option<TrainSpec>,
    /// Add CoRa adapters to the quantized model (needs `quant`).
    #[serde(default)]
    pub cora: Option<crate::train::cora_job::CoraSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainSpec {
    pub config: crate::train::TrainConfig,
    #[serde(default)]
    pub qat_bits: Option<u8>,
    #[serde(default)]
    pub act_bits: Option<u8>,
}

fn calib() -> usize {
    1024
}

impl JobSpec {
    pub fn new(model: PathBuf, data: PathBuf) -> Self {
        JobSpec {
            model,
            data,
            classes: None,
            quant: None,
            calib: calib(),
            seed: 0,
            eval_limit: None,
            export: None,
            train: None,
            cora: None,
        }
    }

    /// Stable key for result files: the spec's content hash.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", crate::util::fnv1a64(&json))
    }

    /// A one-line description for tables and progress bars.
    pub fn label(&self) -> String {
        let mut label = match (&self.train, &self.quant) {
            (Some(t), _) if t.qat_bits.is_some() => {
                format!(
                    "qat w{}{}",
                    t.qat_bits.unwrap_or(0),
                    t.act_bits.map_or(String::new(), |a| format!("a{a}"))
                )
            }
            (train, None) => if train.is_some() { "ft" } else { "fp32" }.into(),
            (train, Some(q)) => {
                let bits = if q.bits.preset == "uniform" {
                    format!("w{}", q.bits.bits)
                } else {
                    q.bits.preset.clone()
                };
                format!(
                    "{}{} {bits}",
                    if train.is_some() { "ft+" } else { "" },
                    q.method.name()
                )
            }
        };
        if let Some(c) = &self.cora {
            label.push_str(&format!(" +cora-{} {:.0}%", c.method, 100.0 * c.budget));
        }
        label
    }
}

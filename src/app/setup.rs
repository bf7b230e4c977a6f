//! The Setup screen's form: model, dataset, class subset, quantizer and its
//! parameters. Defaults are chosen so that Enter alone starts a meaningful job
//! (4-bit GPTQ on the first model and dataset).
use crate::jobs::JobSpec;
use crate::quant::grid::GridKind;
use crate::quant::{BitsMap, Method, QuantConfig};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Model,
    Data,
    Classes,
    Method,
    Bits,
    Preset,
    Calib,
    PerChannel,
    Damping,
    GpfqC,
    Epochs,
    CoraBudget,
    Start,
}

impl Field {
    pub const ALL: [Field; 13] = [
        Field::Model,
        Field::Data,
        Field::Classes,
        Field::Method,
        Field::Bits,
        Field::Preset,
        Field::Calib,
        Field::PerChannel,
        Field::Damping,
        Field::GpfqC,
        Field::Epochs,
        Field::CoraBudget,
        Field::Start,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Field::Model => "Model",
            Field::Data => "Dataset",
            Field::Classes => "Classes",
            Field::Method => "Quantizer",
            Field::Bits => "Bits",
            Field::Preset => "Bit map",
            Field::Calib => "Calibration images",
            Field::PerChannel => "Per channel",
            Field::Damping => "GPTQ damping",
            Field::GpfqC => "GPFQ C",
            Field::Epochs => "Epochs (ft/qat)",
            Field::CoraBudget => "CoRa budget",
            Field::Start => "▶ Start job",
        }
    }
}

/// How a dataset summary (`Action::DatasetInfo`) that is an error starts:
/// the Setup view shows it as one.
pub const DATASET_ERROR: &str = "cannot open: ";

pub const PRESETS: [&str; 4] = ["uniform", "5+3", "3+5", "8-ends"];
/// "fp32" evaluates the model unquantized (the baseline row).
/// `+cora`: CoRa-O (the rank search); `+cora-h`: CoRa-H (the best of the
/// closed-form rules, seconds instead of the search's tens of seconds).
pub const METHODS: [&str; 13] = [
    "gptq",
    "gpfq",
    "rtn",
    "awq",
    "awq-salient",
    "smoothquant",
    "rtn+cora",
    "gptq+cora",
    "rtn+cora-h",
    "gptq+cora-h",
    "finetune",
    "qat",
    "fp32",
];
pub const EPOCH_STEPS: [f64; 7] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0];
pub const BUDGET_STEPS: [f64; 4] = [0.02, 0.05, 0.1, 0.2];
pub const CALIB_STEPS: [usize; 8] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
pub const DAMPING_STEPS: [f64; 6] = [0.001, 0.01, 0.1, 1.0, 10.0, 1e6];

#[derive(Clone, Debug)]
pub struct SetupForm {
    pub focus: usize,
    pub models: Vec<PathBuf>,
    pub model: usize,
    pub datasets: Vec<PathBuf>,
    pub dataset: usize,
    /// Class names of the chosen dataset and which are selected (none = all).
    pub class_names: Vec<String>,
    pub selected: Vec<bool>,
    pub class_cursor: usize,
    pub method: usize,
    pub bits: u8,
    pub preset: usize,
    pub calib: usize,
    pub per_channel: bool,
    pub damping: usize,
    pub gpfq_c: f64,
    /// Index into `EPOCH_STEPS`.
    pub epochs: usize,
    /// Index into `BUDGET_STEPS`.
    pub cora_budget: usize,
    /// Text being typed into the Model or Dataset field (`e` to edit).
    pub editing: Option<String>,
    /// What loading each model found (`Action::ModelInfo`), by path: shown
    /// while that model is the chosen one, so choosing it again is instant.
    pub model_info: Vec<(PathBuf, Result<crate::app::ModelInfo, String>)>,
    /// Models being loaded for their info (asked once, however often the
    /// user passes over them).
    pub inspecting: Vec<PathBuf>,
    /// What each dataset holds (`Action::DatasetInfo`), by path.
    pub dataset_info: Vec<(PathBuf, String)>,
    /// Per-layer bit overrides set from the Layers screen (what-if).
    pub overrides: Vec<(String, u8)>,
    pub eval_limit: Option<usize>,
}

impl SetupForm {
    pub fn new(models: Vec<PathBuf>, datasets: Vec<PathBuf>) -> Self {
        SetupForm {
            focus: Field::ALL.len() - 1,
            models,
            model: 0,
            datasets,
            dataset: 0,
            class_names: vec![],
            selected: vec![],
            class_cursor: 0,
            method: 0,
            bits: 4,
            preset: 0,
            calib: 3,
            per_channel: true,
            damping: 1,
            gpfq_c: 1.16,
            epochs: 1,
            cora_budget: 1,
            editing: None,
            model_info: vec![],
            inspecting: vec![],
            dataset_info: vec![],
            overrides: vec![],
            eval_limit: None,
        }
    }

    pub fn field(&self) -> Field {
        Field::ALL[self.focus.min(Field::ALL.len() - 1)]
    }

    pub fn chosen_classes(&self) -> Option<Vec<String>> {
        let names: Vec<String> = self
            .class_names
            .iter()
            .zip(&self.selected)
            .filter(|(_, s)| **s)
            .map(|(n, _)| n.clone())
            .collect();
        (!names.is_empty()).then_some(names)
    }

    /// The chosen model's info, once loaded.
    pub fn chosen_model_info(&self) -> Option<&Result<crate::app::ModelInfo, String>> {
        entry_for(&self.model_info, self.models.get(self.model)?)
    }

    /// The chosen dataset's summary, once read.
    pub fn chosen_dataset_info(&self) -> Option<&str> {
        entry_for(&self.dataset_info, self.datasets.get(self.dataset)?).map(String::as_str)
    }

    /// The value shown next to a field.
    pub fn value(&self, f: Field) -> String {
        let path = |v: &[PathBuf], i: usize| {
            v.get(i)
                .map_or("(none — press e to type a path)".into(), |p| {
                    p.display().to_string()
                })
        };
        match f {
            Field::Model => self
                .editing
                .clone()
                .filter(|_| self.field() == Field::Model)
                .unwrap_or_else(|| path(&self.models, self.model)),
            Field::Data => self
                .editing
                .clone()
                .filter(|_| self.field() == Field::Data)
                .unwrap_or_else(|| path(&self.datasets, self.dataset)),
            Field::Classes => match self.chosen_classes() {
                None => format!("all ({})", self.class_names.len()),
                Some(c) => c.join(", "),
            },
            Field::Method => METHODS[self.method].to_string(),
            Field::Bits => self.bits.to_string(),
            Field::Preset => PRESETS[self.preset].to_string(),
            Field::Calib => CALIB_STEPS[self.calib].to_string(),
            Field::PerChannel => if self.per_channel {
                "yes"
            } else {
                "no (per tensor)"
            }
            .into(),
            Field::Damping => format!("{}", DAMPING_STEPS[self.damping]),
            Field::GpfqC => format!("{:.2}", self.gpfq_c),
            Field::Epochs => format!("{}", EPOCH_STEPS[self.epochs]),
            Field::CoraBudget => format!(
                "{:.0} % of conv params",
                100.0 * BUDGET_STEPS[self.cora_budget]
            ),
            Field::Start => String::new(),
        }
    }

    /// ←/→ on the focused field.
    pub fn adjust(&mut self, delta: i32) {
        let step = |i: usize, n: usize| ((i as i32 + delta).rem_euclid(n as i32)) as usize;
        match self.field() {
            Field::Model if !self.models.is_empty() => {
                self.model = step(self.model, self.models.len())
            }
            Field::Data if !self.datasets.is_empty() => {
                self.dataset = step(self.dataset, self.datasets.len())
            }
            Field::Classes if !self.class_names.is_empty() => {
                self.class_cursor = step(self.class_cursor, self.class_names.len())
            }
            Field::Method => self.method = step(self.method, METHODS.len()),
            Field::Bits => self.bits = (self.bits as i32 + delta).clamp(2, 8) as u8,
            Field::Preset => self.preset = step(self.preset, PRESETS.len()),
            Field::Calib => {
                self.calib =
                    (self.calib as i32 + delta).clamp(0, CALIB_STEPS.len() as i32 - 1) as usize
            }
            Field::PerChannel => self.per_channel = !self.per_channel,
            Field::Damping => {
                self.damping =
                    (self.damping as i32 + delta).clamp(0, DAMPING_STEPS.len() as i32 - 1) as usize
            }
            Field::GpfqC => self.gpfq_c = (self.gpfq_c + 0.05 * delta as f64).clamp(0.3, 4.0),
            Field::Epochs => {
                self.epochs =
                    (self.epochs as i32 + delta).clamp(0, EPOCH_STEPS.len() as i32 - 1) as usize
            }
            Field::CoraBudget => {
                self.cora_budget = (self.cora_budget as i32 + delta)
                    .clamp(0, BUDGET_STEPS.len() as i32 - 1)
                    as usize
            }
            _ => {}
        }
    }

    /// The job this form describes, or why it cannot run yet.
    pub fn spec(&self) -> Result<JobSpec, String> {
        let model = self
            .models
            .get(self.model)
            .cloned()
            .ok_or("choose a model first (press e on Model to type a path)")?;
        let data = self
            .datasets
            .get(self.dataset)
            .cloned()
            .ok_or("choose a dataset first (press e on Dataset to type a path)")?;
        let mut spec = JobSpec::new(model, data);
        spec.classes = self.chosen_classes();
        spec.calib = CALIB_STEPS[self.calib];
        spec.eval_limit = self.eval_limit;
        let choice = METHODS[self.method];
        if matches!(choice, "finetune" | "qat") {
            let config = crate::train::TrainConfig {
                epochs: EPOCH_STEPS[self.epochs],
                ..Default::default()
            };
            let qat = choice == "qat";
            spec.train = Some(crate::jobs::spec::TrainSpec {
                config: crate::train::TrainConfig {
                    lr: if qat {
                        crate::train::qat::DEFAULT_LR
                    } else {
                        config.lr
                    },
                    ..config
                },
                qat_bits: qat.then_some(self.bits),
                act_bits: (qat && self.bits == 8).then_some(8),
            });
            // The checkpoint: also written if the job is cancelled.
            spec.export = Some(std::path::PathBuf::from(format!(
                "results/checkpoints/{choice}-{}.safetensors",
                spec.key()
            )));
            return Ok(spec);
        }
        if choice != "fp32" {
            let (base, cora) = match choice.split_once('+') {
                Some((base, "cora")) => (base, Some("optimal")),
                Some((base, "cora-h")) => (base, Some("heuristic")),
                _ => (choice, None),
            };
            if let Some(cora) = cora {
                spec.cora = Some(crate::train::cora_job::CoraSpec {
                    budget: BUDGET_STEPS[self.cora_budget],
                    method: cora.into(),
                    iterations: 200,
                    batch: 32,
                    loss: "ce".into(),
                });
            }
            let method = Method::parse(base).map_err(|e| e.to_string())?;
            let mut q = QuantConfig::new(method, self.bits);
            q.bits = BitsMap {
                bits: self.bits,
                preset: PRESETS[self.preset].into(),
                overrides: self.overrides.clone(),
            };
            q.per_channel = self.per_channel;
            q.grid = GridKind::Asym;
            q.damping = DAMPING_STEPS[self.damping];
            q.gpfq_c = self.gpfq_c;
            spec.quant = Some(q);
        }
        Ok(spec)
    }
}

/// `path`'s entry in a list kept per path (model and dataset info).
fn entry_for<'a, T>(list: &'a [(PathBuf, T)], path: &PathBuf) -> Option<&'a T> {
    list.iter().find(|(p, _)| p == path).map(|(_, v)| v)
}

/// Set `path`'s entry, replacing an older one.
pub fn set_entry<T>(list: &mut Vec<(PathBuf, T)>, path: PathBuf, value: T) {
    list.retain(|(p, _)| *p != path);
    list.push((path, value));
}

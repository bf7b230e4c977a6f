//! Everything the dashboard shows, as plain data.
use crate::app::setup::SetupForm;
use crate::jobs::{JobSpec, RunResult};
use crate::quant::LayerReport;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Setup,
    Layers,
    Histogram,
    Results,
    Compare,
    Training,
    Cora,
    Subsets,
}

impl Screen {
    pub const TABS: [Screen; 8] = [
        Screen::Setup,
        Screen::Layers,
        Screen::Histogram,
        Screen::Results,
        Screen::Compare,
        Screen::Training,
        Screen::Cora,
        Screen::Subsets,
    ];
    pub fn title(self) -> &'static str {
        match self {
            Screen::Setup => "1 Setup",
            Screen::Layers => "2 Layers",
            Screen::Histogram => "3 Histogram",
            Screen::Results => "4 Results",
            Screen::Compare => "5 Compare",
            Screen::Training => "6 Training",
            Screen::Cora => "7 CoRa",
            Screen::Subsets => "8 Subsets",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum RunStatus {
    Queued,
    Running,
    Done,
    Failed(String),
    Cancelled,
}

/// A job of this session, queued, running or finished, with its live metrics.
#[derive(Clone, Debug)]
pub struct LiveRun {
    pub job: u64,
    pub spec: JobSpec,
    pub label: String,
    pub layer_names: Vec<String>,
    pub layers: Vec<Option<LayerReport>>,
    /// The phase under way: name, done, total.
    pub stage: Option<(String, usize, usize)>,
    pub status: RunStatus,
    pub result: Option<RunResult>,
    /// What its events drew so far: training curves, CoRa search (a run
    /// reopened from Results has the saved one).
    pub trace: crate::jobs::Trace,
}

impl LiveRun {
    pub fn done_layers(&self) -> usize {
        self.layers.iter().filter(|l| l.is_some()).count()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Time,
    Model,
    Method,
    Bits,
    Top1All,
    Top1Sub,
    Size,
    Latency,
}

impl SortKey {
    pub const ALL: [SortKey; 8] = [
        SortKey::Time,
        SortKey::Model,
        SortKey::Method,
        SortKey::Bits,
        SortKey::Top1All,
        SortKey::Top1Sub,
        SortKey::Size,
        SortKey::Latency,
    ];
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Time => "time",
            SortKey::Model => "model",
            SortKey::Method => "method",
            SortKey::Bits => "bits",
            SortKey::Top1All => "top-1 All",
            SortKey::Top1Sub => "top-1 Sub",
            SortKey::Size => "size",
            SortKey::Latency => "latency",
        }
    }
}

/// LAQ subsets loaded from `qscope subsets --out` (embedding, ICD, subsets).
#[derive(Clone, Debug, Default)]
pub struct LaqView {
    pub class_names: Vec<String>,
    /// 2-D points, row-major, with their class labels.
    pub embedding: Vec<f32>,
    pub labels: Vec<u32>,
    /// `classes × classes` inter-class distances.
    pub icd: Vec<f64>,
    /// (kind, class indices, median ICD).
    pub subsets: Vec<(String, Vec<usize>, f64)>,
    /// Results of `qscope laq`, if loaded: accuracy vs median ICD.
    pub cells: Vec<crate::laq::experiment::Cell>,
    /// Which bit setting the chart shows (index into `bit_settings()`), and Sub vs All.
    pub chart_bits: usize,
    pub chart_sub: bool,
}

impl LaqView {
    /// Bit settings present in the loaded cells (FP rows excluded).
    pub fn bit_settings(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cells
            .iter()
            .filter(|c| c.bits != "fp")
            .map(|c| c.bits.clone())
            .collect();
        v.dedup();
        let mut seen = vec![];
        v.retain(|b| {
            if seen.contains(b) {
                false
            } else {
                seen.push(b.clone());
                true
            }
        });
        v
    }
}

impl LaqView {
    /// Parse the JSON written by `qscope subsets --out`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not a subsets file: {e}"))?;
        let names: Vec<String> = serde_json::from_value(v["class_names"].clone())
            .map_err(|e| format!("class_names: {e}"))?;
        let mut subsets = vec![];
        for s in v["subsets"].as_array().ok_or("no `subsets`")? {
            let cls: Vec<String> = serde_json::from_value(s["classes"].clone())
                .map_err(|e| format!("classes: {e}"))?;
            let idx = cls
                .iter()
                .map(|c| {
                    names
                        .iter()
                        .position(|n| n == c)
                        .ok_or(format!("unknown class {c}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            subsets.push((
                s["kind"].as_str().unwrap_or("").to_string(),
                idx,
                s["median_icd"].as_f64().unwrap_or(0.0),
            ));
        }
        Ok(LaqView {
            embedding: serde_json::from_value(v["embedding"].clone())
                .map_err(|e| format!("embedding: {e}"))?,
            labels: serde_json::from_value(v["labels"].clone())
                .map_err(|e| format!("labels: {e}"))?,
            icd: serde_json::from_value(v["icd"].clone()).map_err(|e| format!("icd: {e}"))?,
            class_names: names,
            subsets,
            ..Default::default()
        })
    }
}

/// Timings the loop measures and the status bar shows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Perf {
    pub render_ms: f64,
    pub key_to_draw_ms: f64,
}

#[derive(Clone, Debug)]
pub struct State {
    pub screen: Screen,
    pub setup: SetupForm,
    pub runs: Vec<LiveRun>,
    /// Index into `runs` shown on the Layers and Histogram screens.
    pub current: Option<usize>,
    pub next_job: u64,
    /// Saved results (from disk and from this session), oldest first.
    pub results: Vec<RunResult>,
    pub result_cursor: usize,
    /// The selected layer row on the Compare screen (it scrolls with it).
    pub compare_cursor: usize,
    pub sort: SortKey,
    pub sort_desc: bool,
    /// Results marked for comparison (indices into `results`).
    pub marked: Vec<usize>,
    pub layer_cursor: usize,
    /// Histogram screen: FP and quantized overlaid (true) or stacked.
    pub overlay: bool,
    pub theme: usize,
    pub theme_names: Vec<String>,
    pub help: bool,
    /// First help line shown (the list is longer than a small terminal).
    pub help_scroll: usize,
    pub message: Option<String>,
    pub size: (u16, u16),
    pub quit: bool,
    pub perf: Perf,
    pub laq: Option<LaqView>,
    pub subset_cursor: usize,
}

impl State {
    pub fn new(setup: SetupForm, results: Vec<RunResult>, theme_names: Vec<String>) -> Self {
        State {
            screen: Screen::Setup,
            setup,
            runs: vec![],
            current: None,
            next_job: 1,
            results,
            result_cursor: 0,
            compare_cursor: 0,
            sort: SortKey::Time,
            sort_desc: false,
            marked: vec![],
            layer_cursor: 0,
            overlay: true,
            theme: 0,
            theme_names,
            help: false,
            help_scroll: 0,
            message: None,
            size: (120, 40),
            quit: false,
            perf: Perf::default(),
            laq: None,
            subset_cursor: 0,
        }
    }

    pub fn current_run(&self) -> Option<&LiveRun> {
        self.current.and_then(|i| self.runs.get(i))
    }

    pub fn running(&self) -> Option<&LiveRun> {
        self.runs.iter().find(|r| r.status == RunStatus::Running)
    }

    /// Results in display order (indices into `results`).
    pub fn sorted_results(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.results.len()).collect();
        let key = |i: &usize| -> (String, f64) {
            let r = &self.results[*i];
            match self.sort {
                SortKey::Time => (String::new(), r.finished_unix),
                SortKey::Model => (r.arch.clone(), r.finished_unix),
                SortKey::Method => (r.label.clone(), r.finished_unix),
                SortKey::Bits => (String::new(), r.bits_avg),
                SortKey::Top1All => (String::new(), r.eval.top1_all),
                SortKey::Top1Sub => (String::new(), r.eval.top1_sub.unwrap_or(-1.0)),
                SortKey::Size => (String::new(), r.size_bytes as f64),
                SortKey::Latency => (String::new(), r.latency_ms),
            }
        };
        idx.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        });
        if self.sort_desc {
            idx.reverse();
        }
        idx
    }

    /// The FP32 result of the same model and data, for Δ columns.
    pub fn baseline_for(&self, r: &RunResult) -> Option<&RunResult> {
        self.results.iter().rev().find(|b| {
            b.spec.quant.is_none()
                && b.spec.train.is_none()
                && b.spec.model == r.spec.model
                && b.spec.data == r.spec.data
                && b.spec.classes == r.spec.classes
                && b.spec.eval_limit == r.spec.eval_limit
        })
    }

    /// Set the Setup form's class list (after the loop read a dataset).
    pub fn set_classes(&mut self, names: Vec<String>) {
        self.setup.selected = vec![false; names.len()];
        self.setup.class_names = names;
        self.setup.class_cursor = 0;
    }
}

//! Inputs to the app and the effects it asks for.
use crate::jobs::{JobEvent, JobSpec};

/// Keys, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Up,
    Down,
    Left,
    Right,
    Tab,
    BackTab,
    Backspace,
    PageUp,
    PageDown,
    Home,
    End,
    /// A letter with Ctrl held (Ctrl-C never arrives: it quits).
    Ctrl(char),
}

#[derive(Clone, Debug)]
pub enum Action {
    Key(Key),
    /// Left click at (column, row).
    Click(u16, u16),
    Resize(u16, u16),
    Tick,
    /// An event from job number `job` (the id the app gave it).
    Job {
        job: u64,
        event: JobEvent,
    },
    /// The class names of the chosen dataset, or why they could not be read.
    Classes(Result<Vec<String>, String>),
    /// Tab completion of the path `typed` (ignored if the text changed since).
    PathCompleted {
        typed: String,
        completion: crate::app::path_complete::Completion,
    },
    /// What the dataset at `path` holds (`DatasetRoot::describe`), sent with
    /// its class names.
    DatasetInfo {
        path: std::path::PathBuf,
        info: String,
    },
    /// What loading the model at `path` found, or why it failed.
    ModelInfo {
        path: std::path::PathBuf,
        info: Result<ModelInfo, String>,
    },
}

/// A loaded model, in brief, for the Setup screen.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// `Graph::brief`: architecture, classes, input, size, storage.
    pub brief: String,
    pub classes: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    StartJob {
        id: u64,
        spec: Box<JobSpec>,
    },
    CancelJob {
        id: u64,
    },
    /// Write the results table as CSV to this path.
    ExportCsv(std::path::PathBuf),
    /// Save a finished result to the results folder.
    SaveResult(u64),
    /// Read the class names of a dataset (the loop answers with `State::set_classes`).
    LoadClasses(std::path::PathBuf),
    /// List the folder of a path being typed (the loop answers with
    /// `Action::PathCompleted`); `models`: only folders and `.safetensors`
    /// files can complete it, else only folders (datasets).
    CompletePath {
        typed: String,
        models: bool,
    },
    /// Load a model in the background (the loop answers with `Action::ModelInfo`).
    InspectModel(std::path::PathBuf),
    Quit,
}

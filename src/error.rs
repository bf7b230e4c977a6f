//! Typed errors for the library. Every variant says *which* file, tensor or
//! layer was wrong and what was expected, so the CLI and the dashboard can
//! show the message as-is.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The message already includes the cause, so it is not also a `#[source]`
    // (that would print it twice in `error: …` chains).
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}`: {problem}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        problem: String,
    },
    #[error("{path}: cannot infer the architecture: {reason}")]
    Architecture { path: PathBuf, reason: String },
    #[error("{path}: {problem}")]
    Dataset { path: PathBuf, problem: String },
    #[error("{path}: cannot decode image: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("shape mismatch in `{layer}`: {problem}")]
    Shape { layer: String, problem: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
    #[error("unknown layer `{name}` (known layers: {known})")]
    UnknownLayer { name: String, known: String },
    #[error("cancelled")]
    Cancelled,
    #[error("numerical failure in `{layer}`: {problem}")]
    Numerical { layer: String, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
    pub fn dataset(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

//! qscope: a terminal laboratory for quantizing convolutional networks.
//!
//! Data flows one way: `engine` ← `model` ← `quant` ← `jobs` ← `app` ← `tui`
//! (see `DESIGN.md` in the shared docs). Only `tui` imports ratatui; only
//! `engine::kernels` contains `unsafe`.
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod data;
pub mod engine;
pub mod error;
pub mod eval;
pub mod jobs;
pub mod laq;
pub mod model;
pub mod ordered;
pub mod quant;
pub mod train;
pub mod tui;
pub mod util;

pub use error::{Error, Result};

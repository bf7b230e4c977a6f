//! Accuracy (All / Sub, top-1 / top-5, per class), latency and throughput, size.
pub mod accuracy;
pub mod bench;
pub mod size;

pub use accuracy::{evaluate, EvalReport};
pub use bench::{bench, BenchReport};
pub use size::SizeReport;

//! Post-training quantizers. Pure algorithms on `W ∈ R^{N×d}` (grid, rtn, gptq,
//! gpfq) plus the sequential driver that feeds them layer inputs captured
//! through the engine. Specs: ALGORITHMS.md §1–4, §8.
pub mod awq;
pub mod bits;
pub mod cora;
pub mod gpfq;
pub mod gptq;
pub mod grid;
pub mod metrics;
pub mod packing;
pub mod pipeline;
pub mod rtn;
pub mod smoothquant;
pub mod stats;

pub use bits::BitsMap;
pub use pipeline::{quantize_model, LayerReport, Method, QuantConfig, QuantOutcome};

//! Graph IR, architectures, the safetensors loader (all PyTorch-name mapping
//! lives there) and the executor that runs a graph on the engine.
pub mod arch;
pub mod compact;
pub mod exec;
pub mod export;
pub mod fuse;
pub mod graph;
pub mod loader;
pub mod lower;
pub mod meta;
pub mod summary;

pub use exec::{forward, Runner};
pub use graph::{BatchNormParams, ConvLayer, Graph, LinearLayer, Node, Op, PostOps};
pub use loader::load;
pub use meta::{Family, ModelMeta};

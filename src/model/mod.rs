//! Graph IR, architectures, the safetensors loader (other naming
//! conventions mapped to torchvision's in `naming`) and the executor that runs a graph on the engine.
pub mod arch;
pub mod compact;
pub mod exec;
pub mod export;
pub mod fuse;
pub mod graph;
pub mod loader;
pub mod lower;
pub mod meta;
pub mod naming;
pub mod summary;

pub use exec::{forward, Runner};
pub use graph::{BatchNormParams, ConvLayer, Graph, LinearLayer, Node, Op, PostOps};
pub use loader::load;
pub use meta::{Family, ModelMeta};

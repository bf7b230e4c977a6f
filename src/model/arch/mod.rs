//! Architectures as graph builders over a `TensorStore`. A new family is one
//! new file here plus a line in `loader::build`.
pub mod builder;
pub mod resnet;
pub mod vgg;

/// What an architecture builder returns: nodes, value count, output value,
/// number of classes and the network depth (for naming, e.g. `resnet20`).
pub type Built = (Vec<crate::model::Node>, usize, usize, usize, usize);

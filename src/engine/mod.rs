//! Batched NCHW f32 tensors and the ops a CNN needs. Knows nothing of models.
pub mod kernels;
pub mod ops;
pub mod team;
pub mod tensor;

pub use tensor::Tensor;

/// Number of worker threads rayon will use for the engine.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

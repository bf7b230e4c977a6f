//! Tensor ops. Each op is a pure function of its inputs, parallel across
//! images (rayon) and deterministic: no op's result depends on thread count.
pub mod conv;
pub mod elementwise;
pub mod linear;
pub mod pool;
pub mod qconv;

pub use conv::{conv2d, conv_output_size, im2col, set_direct_conv, ConvGeom, Epilogue};
pub use elementwise::{add, batchnorm, relu, shortcut_pad};
pub use linear::{linear, linear_w4, Codes4};
pub use pool::{avg_pool, global_avg_pool, max_pool};

//! The only place for `unsafe`. Each kernel has a safe signature that checks
//! its bounds, a portable fallback, and a test against that fallback.
pub mod conv_geometry;
pub mod direct_conv;
pub mod gram;
pub mod sgemm;
pub use sgemm::{dgemm_acc, sgemm, sgemm_wide, MatRef};
pub mod int8_conv;
pub mod lowbit_linear;
pub mod packed3;
pub mod weight_grad;
pub mod winograd;

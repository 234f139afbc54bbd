//! aotgrad-compiler: transformations of the graph IR.
//!
//! - [`autodiff`]: ahead-of-time reverse-mode differentiation ([`autodiff::grad`]);
//! - [`precision`]: the same program in f64 (for gradient checks and reference runs).

pub mod autodiff;
pub mod precision;

pub use autodiff::{GradError, Seed, grad, grad_named, vjp_in};

//! aotgrad-compiler: transformations of the graph IR.
//!
//! - [`autodiff`]: ahead-of-time reverse-mode differentiation ([`autodiff::grad`]).

pub mod autodiff;

pub use autodiff::{GradError, Seed, grad, grad_named, vjp_in};

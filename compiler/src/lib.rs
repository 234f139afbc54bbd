//! aotgrad-compiler: transformations of the graph IR.
//!
//! - [`autodiff`]: ahead-of-time reverse-mode differentiation ([`autodiff::grad`]);
//! - [`precision`]: the same program in f64 (for gradient checks and reference runs);
//! - [`passes`]: graph-to-graph optimisation (simplify, CSE, DCE) at levels O0-O2;
//! - [`lower`]: a graph with bound symbols becomes a [`program`] of kernels over buffers
//!   with a memory plan;
//! - [`program`]: that kernel program, its printer and bounds check;
//! - [`codegen`]: the program as Cranelift IR (CPU) or WGSL (GPU).

pub mod autodiff;
pub mod precision;

pub use autodiff::{GradError, Seed, grad, grad_named, vjp_in};
pub mod codegen;
pub mod lower;
pub mod passes;
pub mod program;

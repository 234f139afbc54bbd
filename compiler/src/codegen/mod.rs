//! Code generation for a lowered program: Cranelift IR ([`clif`]) for the CPU and WGSL
//! compute shaders ([`wgsl`]) for the GPU.
//!
//! Every loop kernel becomes one Cranelift function `k<i>(bufs)`; the step is one entry
//! function `step(bufs, ctx) -> status` that calls the kernels in schedule order and
//! calls the runtime for matmuls and library kernels. `bufs` is the table of buffer
//! base addresses (see [`crate::lower::BufferId`]).

pub mod clif;
pub mod helpers;
pub mod wgsl;
pub mod windows;

pub use clif::tiles;
pub use clif::{CodegenError, CodegenOptions, Emitted, emit};
pub use helpers::Helper;

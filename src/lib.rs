//! aotgrad: an ahead-of-time compiler for neural-network training steps.
//!
//! Write the program with the builder DSL ([`GraphBuilder`], [`Var`]), get a [`Graph`]
//! you can print, parse, verify and run on the reference interpreter.
//!
//! ```
//! use aotgrad::prelude::*;
//!
//! let g = GraphBuilder::new("demo");
//! let x = g.input("x", DType::F32, shape![2, 3]);
//! g.output("col_sums", x.sum(0, false));
//! let graph = g.finish().unwrap();
//!
//! let x = Tensor::from_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
//! let out = aotgrad::run(&graph, &[("x".to_string(), x)].into()).unwrap();
//! assert_eq!(out.output("col_sums").unwrap().as_f32().unwrap(), &[5.0, 7.0, 9.0]);
//! ```

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod dashboard;
pub mod data;
pub mod distributed;
pub mod executor;
pub mod generate;
mod gradcheck;
pub mod lr_schedule;
pub mod metrics;
pub mod nn;
pub mod optim;
pub mod tensor_file;
pub mod train;

pub use aotgrad_compiler as compiler;
pub use aotgrad_ir as ir;
pub use aotgrad_runtime as runtime;
pub use gradcheck::{GradcheckError, GradcheckOptions, GradcheckReport, InputCheck, gradcheck};

pub use aotgrad_ir::{
    BuildError, DType, Dim, Graph, GraphBuilder, Shape, TensorType, Var, shape, text, verify,
};
pub use aotgrad_runtime::{Evaluation, Ix, RunError, Tensor, TensorOpError, run, run_in_group, s};

/// Everything a training script usually needs.
pub mod prelude {
    pub use crate::nn::{self, Module, Reduction, Scope};
    pub use crate::optim::{Optimizer, Scheduler};
    pub use crate::train::{Backend, Batch, EarlyStopping, Loss, TrainError, TrainStep, Trainer};
    pub use aotgrad_compiler::passes::OptLevel;
    pub use aotgrad_ir::{Axes, DType, Dim, Graph, GraphBuilder, Shape, TensorType, Var, shape};
    pub use aotgrad_runtime::{Ix, Tensor, TensorOpError, s};
}

/// The README's example, compiled and run as a doctest so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

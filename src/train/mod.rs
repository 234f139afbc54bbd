//! Training: a model, a loss and an optimizer compiled into one training-step program.
//!
//! [`Trainer`] describes the job; [`Trainer::compile`] traces the model into graphs and
//! returns a [`TrainStep`], which owns the parameters and optimizer state and runs:
//!
//! - the **step** program: forward, loss, backward (ahead-of-time autodiff) and the
//!   optimizer update, as one graph whose updates write parameters and state;
//! - the **grads** program: forward, loss and backward only, returning gradients;
//! - the **eval** program (dropout off) and the **predict** program (no target);
//! - with gradient accumulation, an **accumulate** and an **apply** program.
//!
//! All programs share the parameter storage. The batch dim is the symbolic `N`, so the
//! last short batch of an epoch runs through the same programs. The learning rate is an
//! input of the step, so schedulers change it between steps without recompiling.

mod controls;
mod early_stopping;
mod gate;
mod loss;
mod observer;
pub mod recipes;
mod step;
mod trainer;

use aotgrad_compiler::GradError;
use aotgrad_ir::BuildError;
use aotgrad_runtime::RunError;

pub use crate::data::{Batch, BatchTensors, TensorDict};
pub use crate::executor::Backend;
pub use crate::nn::Vars;
pub use controls::{ParamGroup, pattern_matches};
pub use early_stopping::EarlyStopping;
pub use loss::Loss;
pub use observer::{StepEvent, StepObserver};
pub use step::{CONFUSION, CORRECT, GRAD_NORM, StepResult, TrainStep};
pub use trainer::{BATCH_DIM, Trainer, output_name};

/// The output of a BCE loss's probability check (checked mode).
const PROB_CHECK: &str = "check.output_in_0_1";

/// Why training could not be compiled or a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("building the {program} program: {error}")]
    Build {
        program: &'static str,
        error: BuildError,
    },
    #[error("differentiating the {program} program: {error}")]
    Grad {
        program: &'static str,
        error: GradError,
    },
    #[error("running the {program} program: {error}")]
    Run {
        program: &'static str,
        error: RunError,
    },
    #[error("optimising the {program} program: {error}")]
    Optimize {
        program: &'static str,
        error: aotgrad_compiler::passes::PassError,
    },
    #[error("the trainer needs {0}")]
    Config(String),
    #[error("initialising parameter {param:?}: {error}")]
    Init {
        param: String,
        error: crate::nn::InitError,
    },
    #[error(
        "step {step}: the model's output is outside [0, 1], which {loss} requires (use a sigmoid, or a with-logits loss)"
    )]
    ProbabilityOutOfRange { step: u64, loss: String },
    #[error("step {step}: the loss is {value}; parameters were left unchanged")]
    NonFiniteLoss { step: u64, value: f64 },
    #[error("state dict: {0}")]
    StateDict(String),
    #[error("batch: {0}")]
    Batch(String),
    #[error(
        "the loss must be a scalar, but {loss} returned {ty} (reduce it, e.g. with .mean_all())"
    )]
    LossNotScalar { loss: String, ty: String },
    #[error("the batch is empty ({what} has shape {shape:?})")]
    EmptyBatch { what: String, shape: Vec<usize> },
    #[error(
        "{layer}: expected more than 1 value per channel when training, got input size {shape:?}"
    )]
    OneValuePerChannel { layer: String, shape: Vec<usize> },
    #[error("target {target} is out of range for {classes} classes (row {row} of the batch)")]
    TargetOutOfRange {
        target: i64,
        classes: usize,
        row: usize,
    },
}

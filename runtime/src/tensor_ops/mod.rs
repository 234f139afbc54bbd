//! Host tensor operations: the tensor lessons' API (`sum(dim, keepdim)`, `x[.., 0..28;2]`,
//! `gather`, `topk`, `cat`, ...) on [`Tensor`], for data preparation, metrics and
//! exploration outside a compiled step.
//!
//! There is one implementation of every op: each method builds a tiny graph with the
//! builder DSL over its operands and evaluates it with the reference interpreter, so a
//! host `sum` is the IR's `sum` (same promotion, broadcasting, NaN and rounding rules,
//! the same error messages) and cannot drift from what a compiled step computes. The
//! cost is a graph build per call (microseconds), which is why these are host tools
//! and not a training path. Only ops whose result size depends on the data (`x[mask]`,
//! [`Tensor::masked_select`], [`Tensor::nonzero`]) cannot be graphs (every IR shape is
//! known before a run): they are host-only and say so.
//!
//! Errors are typed ([`TensorOpError`]) and name the op and the caller's line.

mod creation;
mod index;
mod math;
mod movement;

use std::collections::HashMap;
use std::panic::Location;

use aotgrad_ir::{BuildError, DType, GraphBuilder, Shape, Var};

use crate::{RunError, Tensor, interp};

pub use index::Ix;

type Loc = &'static Location<'static>;

/// A host tensor operation that failed: the op, the caller's line and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorOpError {
    /// The op's operands do not fit it (shapes, dtypes, axes): the DSL's own error,
    /// located at the caller's line.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The op was well-typed but its data was not (an index out of range).
    #[error("`{op}` at {}:{}: {error}", location.file(), location.line())]
    Run {
        op: &'static str,
        location: Loc,
        /// Boxed: a `RunError` carries whole tensor types, and `Result`s stay small.
        error: Box<RunError>,
    },
    /// A host-only op's own check (`x[mask]` with a mask of another shape).
    #[error("`{op}` at {}:{}: {message}", location.file(), location.line())]
    Invalid {
        op: &'static str,
        location: Loc,
        message: String,
    },
}

impl TensorOpError {
    pub(crate) fn invalid(op: &'static str, location: Loc, message: impl Into<String>) -> Self {
        TensorOpError::Invalid {
            op,
            location,
            message: message.into(),
        }
    }
}

/// The right-hand side of an elementwise host op: a tensor or a Python-style number,
/// which takes the tensor's dtype (PyTorch's wrapped-number rule: `x * 0.01` on f32
/// multiplies by `0.01f32`).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Tensor(&'a Tensor),
    Float(f64),
    Int(i64),
}

impl<'a> From<&'a Tensor> for Arg<'a> {
    fn from(t: &'a Tensor) -> Self {
        Arg::Tensor(t)
    }
}
impl From<f64> for Arg<'_> {
    fn from(v: f64) -> Self {
        Arg::Float(v)
    }
}
impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(v as i64)
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl<'a> Arg<'a> {
    /// The tensor operands, in order (numbers become constants in the graph).
    fn tensors(self) -> Vec<&'a Tensor> {
        match self {
            Arg::Tensor(t) => vec![t],
            _ => vec![],
        }
    }

    /// The DSL operand for this argument; `vars` holds the graph inputs made from
    /// [`Arg::tensors`].
    fn operand<'g>(self, vars: &[Var<'g>]) -> aotgrad_ir::Operand<'g> {
        match self {
            Arg::Tensor(_) => aotgrad_ir::Operand::Var(vars[0]),
            Arg::Float(v) => aotgrad_ir::Operand::Float(v),
            Arg::Int(v) => aotgrad_ir::Operand::Int(v),
        }
    }
}

/// Builds `build` over `inputs` (graph inputs `x0`, `x1`, ...) and evaluates its
/// outputs with the reference interpreter. A build error is relocated to `loc`, the
/// caller's line, since the DSL call sites are this module's.
pub(crate) fn eval(
    op: &'static str,
    loc: Loc,
    inputs: &[&Tensor],
    build: impl for<'g> FnOnce(&'g GraphBuilder, &[Var<'g>]) -> Vec<Var<'g>>,
) -> Result<Vec<Tensor>, TensorOpError> {
    let g = GraphBuilder::new(op);
    let mut feeds = HashMap::with_capacity(inputs.len());
    let vars: Vec<Var<'_>> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = format!("x{i}");
            let v = g.input(&name, t.dtype(), Shape::known(t.shape()));
            feeds.insert(name, (*t).clone());
            v
        })
        .collect();
    let outs = build(&g, &vars);
    for (i, v) in outs.iter().enumerate() {
        g.output(&format!("y{i}"), *v);
    }
    let graph = g.finish().map_err(|mut e| {
        e.location = loc;
        e.context.clear();
        TensorOpError::Build(e)
    })?;
    let ev = interp::run(&graph, &feeds).map_err(|error| TensorOpError::Run {
        op,
        location: loc,
        error: Box::new(error),
    })?;
    Ok(ev.outputs.into_iter().map(|(_, t)| t).collect())
}

/// [`eval`] of a graph with one output.
pub(crate) fn eval1(
    op: &'static str,
    loc: Loc,
    inputs: &[&Tensor],
    build: impl for<'g> FnOnce(&'g GraphBuilder, &[Var<'g>]) -> Var<'g>,
) -> Result<Tensor, TensorOpError> {
    let mut out = eval(op, loc, inputs, |g, v| vec![build(g, v)])?;
    Ok(out.remove(0))
}

/// [`eval`] of a graph with two outputs (values and indices).
pub(crate) fn eval2(
    op: &'static str,
    loc: Loc,
    inputs: &[&Tensor],
    build: impl for<'g> FnOnce(&'g GraphBuilder, &[Var<'g>]) -> (Var<'g>, Var<'g>),
) -> Result<(Tensor, Tensor), TensorOpError> {
    let mut out = eval(op, loc, inputs, |g, v| {
        let (a, b) = build(g, v);
        vec![a, b]
    })?;
    let b = out.remove(1);
    Ok((out.remove(0), b))
}

/// The dtype a float-producing op computes in: floats keep theirs, everything else
/// becomes f32 (PyTorch's default dtype, as `torch.mean` of an int tensor refuses and
/// `.float()` is the usual fix; the lessons call it explicitly).
pub(crate) fn float_dtype(d: DType) -> DType {
    if d.is_float() { d } else { DType::F32 }
}

//! Typed errors of the IR: what a shape/dtype rule rejects, and where the user wrote it.

use std::fmt;
use std::panic::Location;

use crate::{DType, Shape, TensorType};

/// Why an op rejected its operands or attributes. Every variant carries the types
/// involved so the message can be acted on without a debugger.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("expected {expected} operand(s), got {got}")]
    Arity { expected: String, got: usize },
    #[error("operand dtypes differ: {lhs} vs {rhs}")]
    DTypeMismatch { lhs: TensorType, rhs: TensorType },
    #[error("operand shapes differ: {lhs} vs {rhs}")]
    ShapeMismatch { lhs: TensorType, rhs: TensorType },
    #[error("shapes {lhs} and {rhs} do not broadcast")]
    NotBroadcastable { lhs: Shape, rhs: Shape },
    #[error("cannot expand {from} to {to}")]
    BadExpand { from: Shape, to: Shape },
    #[error("expected {expected} operand, got {got}")]
    BadDType {
        expected: &'static str,
        got: TensorType,
    },
    #[error("axis {axis} is out of range for {ty}")]
    AxisOutOfRange { axis: i64, ty: TensorType },
    #[error("axis {axis} is repeated in {axes:?}")]
    DuplicateAxis { axis: usize, axes: Vec<i64> },
    #[error("cannot reshape {from} ({from_numel} elements) to {to} ({to_numel} elements)")]
    BadReshape {
        from: Shape,
        to: Shape,
        from_numel: String,
        to_numel: String,
    },
    #[error(
        "cannot reshape {from} ({from_numel} elements) to {to}: the other dims hold {rest_numel} elements, which do not divide it"
    )]
    BadReshapeInfer {
        from: Shape,
        to: String,
        from_numel: String,
        rest_numel: String,
    },
    #[error("{perm:?} is not a permutation of the axes of {ty}")]
    BadPermutation { perm: Vec<usize>, ty: TensorType },
    #[error("matmul operands do not agree: {lhs} @ {rhs} ({why})")]
    BadMatMul {
        lhs: TensorType,
        rhs: TensorType,
        why: &'static str,
    },
    #[error("dim {dim} of {ty} is symbolic; {op} needs a known size there")]
    SymbolicDim {
        op: &'static str,
        dim: usize,
        ty: TensorType,
    },
    #[error("invalid {what} for {ty}: {detail}")]
    BadAttr {
        what: &'static str,
        ty: TensorType,
        detail: String,
    },
    #[error("{0}")]
    TooLarge(crate::TooLarge),
    #[error("{what} overflows: {detail}")]
    SizeOverflow {
        what: &'static str,
        ty: TensorType,
        detail: String,
    },
    #[error("constant holds {got} {dtype} values but its type {ty} needs {need}")]
    BadConst {
        dtype: DType,
        got: usize,
        need: String,
        ty: TensorType,
    },
}

/// An [`OpError`] together with the op that raised it and the user's source line.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildError {
    pub op: String,
    pub location: &'static Location<'static>,
    /// Boxed: `OpError` carries whole tensor types, and `Result`s stay small.
    pub error: Box<BuildErrorKind>,
    /// Where in the user's model the error arose, outermost first (the layers of a
    /// `Sequential`, a built-in loss), each with the user's line that added it; empty
    /// when `location` is already the user's own line. See
    /// [`crate::GraphBuilder::within`].
    pub context: Vec<ErrorContext>,
}

/// One level of [`BuildError::context`]: what was being built (`layer "fc2" (Linear)`,
/// `loss cross_entropy(...)`) and the user's line that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorContext {
    pub what: String,
    pub location: &'static Location<'static>,
}

/// What went wrong while building a graph with the DSL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildErrorKind {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error("name {0:?} is already used by another input, parameter, state or output")]
    DuplicateName(String),
    #[error("{0}")]
    Usage(String),
}

/// `` `op` at file:line:col: message ``; with a context, the layers (and loss) it was
/// raised in follow, each with the user's line that made it: `` `linear` at
/// main.rs:12:10 in model (Sequential) at main.rs:20:5 > layer "fc2" (Linear): ... ``.
impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |l: &Location<'_>| format!("{}:{}:{}", l.file(), l.line(), l.column());
        if self.context.is_empty() {
            return write!(f, "`{}` at {}: {}", self.op, at(self.location), self.error);
        }
        write!(f, "`{}` at {} in ", self.op, at(self.location))?;
        for (i, c) in self.context.iter().enumerate() {
            if i > 0 {
                f.write_str(" > ")?;
            }
            // The innermost context's line is the error's own when library code
            // raised it (the trainer relocates those): said once.
            if i + 1 == self.context.len() && c.location == self.location {
                f.write_str(&c.what)?;
            } else {
                write!(f, "{} at {}", c.what, at(c.location))?;
            }
        }
        write!(f, ": {}", self.error)
    }
}

impl std::error::Error for BuildError {}

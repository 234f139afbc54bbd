//! aotgrad-ir: the graph IR every stage of aotgrad reads and writes.
//!
//! - [`DType`], [`Shape`] with symbolic [`Dim`]s, [`TensorType`];
//! - the primitive [`Op`] set with its shape rules ([`Op::infer`]);
//! - [`Graph`], an arena of SSA nodes with named inputs/params/state, outputs and updates;
//! - the builder DSL ([`GraphBuilder`], [`Var`]);
//! - the text format ([`text::print`], [`text::parse`]) and the [`verify`]er.

mod dsl;
mod dtype;
mod error;
mod graph;
pub mod limits;
pub mod math;
pub mod op;
mod shape;
pub mod text;
mod types;
mod verify;

pub use dsl::{
    Axes, BatchNorm, BatchNormOut, Conv2dOptions, GraphBuilder, Operand, Pair, Pool2dOptions, Var,
};
pub use dtype::{Category, DType, Scalar};
pub use error::{BuildError, BuildErrorKind, ErrorContext, OpError};
pub use graph::{Graph, GraphError, Node, NodeId};
pub use limits::{MAX_TENSOR_BYTES, TooLarge};
pub use op::{
    AllReduceOp, ArgReduceOp, BinaryOp, ConstValue, Cost, CpuCall, Distribution, Op, Operands,
    ReduceOp, SliceAxis, UnaryOp, Window,
};
pub use shape::{Dim, Numel, Shape, normalize_axis};
pub use types::{Data, TensorType};

/// This crate's source directory as `file!()` spells it in this build (its errors'
/// locations inside the DSL start with it).
pub const SOURCE_DIR: &str = {
    let f = file!().as_bytes();
    // `file!()` ends with "lib.rs": keep what precedes it.
    let (dir, _) = f.split_at(f.len() - "lib.rs".len());
    match std::str::from_utf8(dir) {
        Ok(s) => s,
        Err(_) => "",
    }
};
pub use verify::{VerifyError, verify};

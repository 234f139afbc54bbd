//! Which inner loops run as 128-bit vectors (f32x4 / f64x2).

use aotgrad_ir::{BinaryOp, DType, UnaryOp};
use cranelift_codegen::ir::types::{self, Type};

use crate::program::{FlatOp, LoopKernel};

/// The vector type for the inner loop, if every varying node is vectorisable.
pub(super) fn vector_plan(
    k: &LoopKernel,
    invariant: &[bool],
    out_dtype: DType,
    out_strides: &[i64],
    len: i64,
) -> Option<Type> {
    let vt = match out_dtype {
        DType::F32 => types::F32X4,
        DType::F64 => types::F64X2,
        _ => return None,
    };
    let stores_ok = match k.reduce {
        Some(_) => out_strides == [0] || out_strides == [1],
        None => out_strides.iter().all(|&s| s == 1),
    };
    if len < vt.lane_count() as i64 || !stores_ok {
        return None;
    }
    for (i, n) in k.expr.nodes.iter().enumerate() {
        if invariant[i] {
            continue;
        }
        let ok_type = n.dtype == out_dtype || n.dtype == DType::Bool;
        let operands_ok = |xs: &[usize]| {
            xs.iter().all(|&x| {
                k.expr.nodes[x].dtype == out_dtype || k.expr.nodes[x].dtype == DType::Bool
            })
        };
        let ok = ok_type
            && match &n.op {
                // Any stride: contiguous rows load whole vectors, strided ones lane
                // by lane (`strided_load`).
                FlatOp::Load(_) => n.dtype == out_dtype,
                FlatOp::Index(_)
                | FlatOp::Const(_)
                | FlatOp::Cast(_)
                | FlatOp::Checked { .. }
                | FlatOp::Gather { .. } => false,
                // f32 exp and tanh are inline operations (`fastmath.rs`); the other
                // transcendentals are calls.
                FlatOp::Unary(UnaryOp::Exp | UnaryOp::Tanh, a) => {
                    out_dtype == DType::F32 && operands_ok(&[*a])
                }
                FlatOp::Unary(u, a) => {
                    matches!(
                        u,
                        UnaryOp::Neg
                            | UnaryOp::Abs
                            | UnaryOp::Sign
                            | UnaryOp::Sqrt
                            | UnaryOp::Recip
                            | UnaryOp::Floor
                            | UnaryOp::Ceil
                            | UnaryOp::Not
                    ) && operands_ok(&[*a])
                }
                FlatOp::Binary(b, x, y) => !matches!(b, BinaryOp::Pow) && operands_ok(&[*x, *y]),
                FlatOp::Where(cn, x, y) => {
                    k.expr.nodes[*cn].dtype == DType::Bool && operands_ok(&[*x, *y])
                }
            };
        if !ok {
            return None;
        }
    }
    Some(vt)
}

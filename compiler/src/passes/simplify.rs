//! Canonicalisation and algebraic simplification: local rewrites that never change a
//! value, bit for bit (the sign of a zero and NaN included), applied in one forward
//! sweep so each rewrite sees its operands already simplified.
//!
//! | pattern                                  | becomes                        |
//! |------------------------------------------|--------------------------------|
//! | `stop_gradient(x)` (after autodiff)      | `x`                            |
//! | `neg(neg(x))`                            | `x`                            |
//! | `x + (-0.0)`, `(-0.0) + x`, `x - (+0.0)` | `x` (integers: any zero)       |
//! | `x * 1`, `1 * x`, `x / 1`                | `x`                            |
//! | `x * 0` for integer and bool `x`         | `0` (floats keep it: `inf * 0` is NaN) |
//! | op of splat constants (exact ops only)   | a splat constant               |
//! | `where(c, x, x)`, `where(true, x, y)`    | `x`                            |
//! | `cast(x)` to its own dtype               | `x`                            |
//! | `cast(cast(x, wider), dtype(x))`         | `x`                            |
//! | `reshape(x)` to its own shape            | `x`                            |
//! | `reshape(reshape(x))`                    | `reshape(x)`                   |
//! | `expand(x)` to its own shape             | `x`                            |
//! | `expand(expand(x))`                      | `expand(x)`                    |
//! | `reshape`/`expand` of a splat constant   | a splat constant               |
//! | `permute(x)` by the identity             | `x`                            |
//! | `permute(permute(x, p), q)`              | `permute(x, p∘q)`              |
//! | reduction over no axes                   | `x` (not a float sum)          |
//! | reduction over size-1 axes only          | `reshape(x)` (or `x`; not a float sum) |
//!
//! `x + 0.0 -> x` is not here: `-0.0 + 0.0` is `+0.0`, so the rewrite changed the sign
//! of a zero (and `1 / x` from `-inf` to `+inf`). A float sum over one element is
//! `0.0 + x` for the same reason (every backend starts a sum from `+0.0`), so it is no
//! identity either; `-0.0` is the exact additive identity, and `x - 0.0` is exact.
//!
//! Constant folding is limited to operations IEEE rounds exactly (add, sub, mul, div,
//! sqrt, neg, abs, comparisons), computed in f64 and rounded once to the result's dtype,
//! which is the correctly rounded f32 result too. Transcendentals are left to the
//! backends, whose libm may differ from the compiler's in the last bit.

use aotgrad_ir::{
    BinaryOp, ConstValue, DType, Graph, Node, NodeId, Op, ReduceOp, Scalar, TensorType, UnaryOp,
};

use super::rewrite::Rewriter;

/// Runs the simplifier once over `g`.
pub fn simplify(g: &Graph) -> Graph {
    let mut rw = Rewriter::new(g);
    for (_, node) in g.nodes() {
        let ins = rw.inputs(node);
        let id = match rewrite(&mut rw, node, &ins) {
            Some(id) => id,
            None => rw.push(node.op.clone(), ins, node.ty.clone()),
        };
        rw.map.push(id);
    }
    rw.finish()
}

/// The splat value of a constant node of the new graph.
fn splat(g: &Graph, id: NodeId) -> Option<Scalar> {
    match &g.node(id).op {
        Op::Const {
            value: ConstValue::Splat(s),
            ..
        } => Some(*s),
        _ => None,
    }
}

fn is_value(s: Option<Scalar>, v: f64) -> bool {
    // `as_f64` is exact for every dtype at 0 and 1; NaN never equals.
    s.is_some_and(|s| s.as_f64() == v)
}

/// A zero that adding leaves every `x` unchanged: `-0.0` for floats (`-0.0 + +0.0` is
/// `+0.0`, but `+0.0 + -0.0` is `+0.0` too, so only `-0.0` is exact), any zero for
/// integers.
fn is_additive_identity(s: Option<Scalar>) -> bool {
    s.is_some_and(|s| {
        let v = s.as_f64();
        v == 0.0 && (!s.dtype().is_float() || v.is_sign_negative())
    })
}

/// A zero that subtracting leaves every `x` unchanged: `+0.0` for floats (`-0.0 - +0.0`
/// is `-0.0`), any zero for integers.
fn is_subtractive_identity(s: Option<Scalar>) -> bool {
    s.is_some_and(|s| {
        let v = s.as_f64();
        v == 0.0 && (!s.dtype().is_float() || v.is_sign_positive())
    })
}

/// `x` itself, when it already has the type the replaced node had.
fn same(g: &Graph, x: NodeId, ty: &TensorType) -> Option<NodeId> {
    (g.ty(x) == ty).then_some(x)
}

fn constant(rw: &mut Rewriter, value: Scalar, ty: &TensorType) -> NodeId {
    rw.push(
        Op::Const {
            value: ConstValue::Splat(value),
            ty: ty.clone(),
        },
        vec![],
        ty.clone(),
    )
}

/// The replacement of `node` (whose inputs are `ins` in the new graph), if any.
fn rewrite(rw: &mut Rewriter, node: &Node, ins: &[NodeId]) -> Option<NodeId> {
    let ty = &node.ty;
    let g = &rw.new;
    match &node.op {
        Op::Unary(UnaryOp::StopGradient) => same(g, ins[0], ty),
        Op::Unary(UnaryOp::Neg) if matches!(g.node(ins[0]).op, Op::Unary(UnaryOp::Neg)) => {
            same(g, g.node(ins[0]).inputs[0], ty)
        }
        Op::Unary(u) => {
            let v = fold_unary(*u, splat(g, ins[0])?)?;
            Some(constant(rw, v, ty))
        }
        Op::Binary(b) => {
            let (x, y) = (ins[0], ins[1]);
            let (sx, sy) = (splat(g, x), splat(g, y));
            if let (Some(a), Some(c)) = (sx, sy)
                && let Some(v) = fold_binary(*b, a, c, ty.dtype)
            {
                return Some(constant(rw, v, ty));
            }
            match b {
                BinaryOp::Add if is_additive_identity(sy) => same(g, x, ty),
                BinaryOp::Add if is_additive_identity(sx) => same(g, y, ty),
                BinaryOp::Sub if is_subtractive_identity(sy) => same(g, x, ty),
                BinaryOp::Mul if is_value(sy, 1.0) => same(g, x, ty),
                BinaryOp::Mul if is_value(sx, 1.0) => same(g, y, ty),
                BinaryOp::Div if is_value(sy, 1.0) => same(g, x, ty),
                BinaryOp::Mul
                    if !ty.dtype.is_float() && (is_value(sx, 0.0) || is_value(sy, 0.0)) =>
                {
                    Some(constant(rw, Scalar::zero(ty.dtype), ty))
                }
                _ => None,
            }
        }
        Op::Where => {
            if ins[1] == ins[2] {
                return same(g, ins[1], ty);
            }
            match splat(g, ins[0]) {
                Some(Scalar::Bool(true)) => same(g, ins[1], ty),
                Some(Scalar::Bool(false)) => same(g, ins[2], ty),
                _ => None,
            }
        }
        Op::Cast(d) => {
            let x = ins[0];
            if g.ty(x).dtype == *d {
                return same(g, x, ty);
            }
            if let Op::Cast(_) = g.node(x).op {
                let inner = g.node(x).inputs[0];
                if g.ty(inner).dtype == *d && widens(*d, g.ty(x).dtype) {
                    return same(g, inner, ty);
                }
            }
            // Float-to-float only: the integer casts of NaN and of out-of-range values
            // are the backends' business.
            let v = splat(g, x)?;
            if !(v.dtype().is_float() && d.is_float()) {
                return None;
            }
            Some(constant(rw, v.cast(*d), ty))
        }
        Op::Reshape(_) | Op::Expand(_) => view(rw, &node.op, ins[0], ty),
        Op::Permute(q) => {
            let x = ins[0];
            if q.iter().enumerate().all(|(i, &a)| i == a) {
                return same(g, x, ty);
            }
            if let Op::Permute(p) = &g.node(x).op {
                // y = x.permute(p).permute(q): axis i of y is axis p[q[i]] of x.
                let composed: Vec<usize> = q.iter().map(|&a| p[a]).collect();
                let src = g.node(x).inputs[0];
                if composed.iter().enumerate().all(|(i, &a)| i == a) {
                    return same(g, src, ty);
                }
                return rw.build(Op::Permute(composed), &[src], ty);
            }
            None
        }
        Op::Reduce { op, axes, keepdim } => {
            let x = ins[0];
            let xs = g.ty(x).shape.clone();
            let trivial = axes.iter().all(|&a| xs.dims()[a].is_one());
            // A reduction that also converts (a sum of bools) is not an identity, and
            // neither is a float sum (`0.0 + -0.0` is `+0.0`).
            let float_sum = *op == ReduceOp::Sum && ty.dtype.is_float();
            if !trivial || ty.dtype != g.ty(x).dtype || float_sum {
                return None;
            }
            if axes.is_empty() || *keepdim {
                return same(g, x, ty);
            }
            // A reshape, itself simplified (it may undo the reshape that made the axis).
            let reshape = Op::Reshape(ty.shape.clone());
            view(rw, &reshape, x, ty).or_else(|| rw.build(reshape, &[x], ty))
        }
        _ => None,
    }
}

/// The simplified `op` (a reshape or an expand to `ty`) of `x`: `x` itself when it
/// already has that type, a constant for a splat, one op over the source of a chain of
/// the same op; `None` when nothing simplifies.
fn view(rw: &mut Rewriter, op: &Op, x: NodeId, ty: &TensorType) -> Option<NodeId> {
    let g = &rw.new;
    if g.ty(x) == ty {
        return Some(x);
    }
    if let Some(v) = splat(g, x) {
        return Some(constant(rw, v, ty));
    }
    let inner = g.node(x);
    if std::mem::discriminant(&inner.op) == std::mem::discriminant(op) {
        let src = inner.inputs[0];
        if g.ty(src) == ty {
            return Some(src);
        }
        return rw.build(op.clone(), &[src], ty);
    }
    None
}

/// Whether every value of `narrow` survives a round trip through `wide`.
fn widens(narrow: DType, wide: DType) -> bool {
    use DType::*;
    matches!(
        (narrow, wide),
        (F32, F64) | (I32, I64) | (U8, I32) | (U8, I64) | (Bool, U8) | (Bool, I32) | (Bool, I64)
    )
}

fn fold_unary(u: UnaryOp, a: Scalar) -> Option<Scalar> {
    let d = a.dtype();
    if !d.is_float() {
        return None;
    }
    let x = a.as_f64();
    let v = match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sqrt => x.sqrt(),
        // Exact in any rounding.
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Trunc => x.trunc(),
        // Not exactly rounded (libm may differ in the last bit from the backend's), or
        // not worth folding.
        UnaryOp::Sign
        | UnaryOp::Exp
        | UnaryOp::Log
        | UnaryOp::Recip
        | UnaryOp::Sin
        | UnaryOp::Cos
        | UnaryOp::Tanh
        | UnaryOp::Log1p
        | UnaryOp::Expm1
        | UnaryOp::Erf
        | UnaryOp::Not
        | UnaryOp::StopGradient => return None,
    };
    Some(Scalar::from_f64(d, v))
}

fn fold_binary(b: BinaryOp, a: Scalar, c: Scalar, out: DType) -> Option<Scalar> {
    let d = a.dtype();
    if !d.is_float() || c.dtype() != d {
        return None;
    }
    let (x, y) = (a.as_f64(), c.as_f64());
    let v = match b {
        BinaryOp::Add => Scalar::from_f64(out, x + y),
        BinaryOp::Sub => Scalar::from_f64(out, x - y),
        BinaryOp::Mul => Scalar::from_f64(out, x * y),
        BinaryOp::Div => Scalar::from_f64(out, x / y),
        BinaryOp::Lt => Scalar::Bool(x < y),
        BinaryOp::Le => Scalar::Bool(x <= y),
        BinaryOp::Gt => Scalar::Bool(x > y),
        BinaryOp::Ge => Scalar::Bool(x >= y),
        BinaryOp::Eq => Scalar::Bool(x == y),
        BinaryOp::Ne => Scalar::Bool(x != y),
        _ => return None,
    };
    Some(v)
}

//! Shape and dtype rules: one arm per primitive.

use super::{AllReduceOp, BinaryOp, ConstValue, Op, ReduceOp, SliceAxis, UnaryOp};
use crate::{DType, Dim, Numel, OpError, Shape, TensorType};

type R = Result<TensorType, OpError>;

pub(super) fn infer(op: &Op, xs: &[&TensorType]) -> R {
    match op {
        Op::Input { ty, .. } | Op::Param { ty, .. } | Op::State { ty, .. } => {
            arity(xs, 0)?;
            Ok(ty.clone())
        }
        Op::Const { value, ty } => {
            arity(xs, 0)?;
            check_const(value, ty)?;
            Ok(ty.clone())
        }
        Op::Unary(u) => {
            arity(xs, 1)?;
            unary(*u, xs[0])
        }
        Op::Binary(b) => {
            arity(xs, 2)?;
            binary(*b, xs[0], xs[1])
        }
        Op::Where => {
            arity(xs, 3)?;
            if xs[0].dtype != DType::Bool {
                return Err(OpError::BadDType {
                    expected: "a bool condition",
                    got: xs[0].clone(),
                });
            }
            same_type(xs[1], xs[2])?;
            same_shape(xs[0], xs[1])?;
            Ok(xs[1].clone())
        }
        Op::Cast(d) => {
            arity(xs, 1)?;
            Ok(TensorType::new(*d, xs[0].shape.clone()))
        }
        Op::Reduce { op, axes, keepdim } => {
            arity(xs, 1)?;
            let x = xs[0];
            if matches!(op, ReduceOp::Sum | ReduceOp::Prod) && x.dtype == DType::Bool {
                return Err(OpError::BadDType {
                    expected: "a numeric",
                    got: x.clone(),
                });
            }
            check_axes(axes, x)?;
            Ok(TensorType::new(x.dtype, reduced(&x.shape, axes, *keepdim)))
        }
        Op::ArgReduce { axis, keepdim, .. } => {
            arity(xs, 1)?;
            check_axes(&[*axis], xs[0])?;
            Ok(TensorType::new(
                DType::I64,
                reduced(&xs[0].shape, &[*axis], *keepdim),
            ))
        }
        Op::AllReduce { op } => {
            arity(xs, 1)?;
            let x = xs[0];
            let ok = match op {
                AllReduceOp::Sum => x.dtype != DType::Bool,
                AllReduceOp::Mean => x.dtype.is_float(),
            };
            if !ok {
                return Err(OpError::BadDType {
                    expected: if *op == AllReduceOp::Sum {
                        "a numeric"
                    } else {
                        "a floating-point"
                    },
                    got: x.clone(),
                });
            }
            Ok(x.clone())
        }
        Op::TopK { axis, k, .. } => {
            arity(xs, 1)?;
            let x = xs[0];
            check_axes(&[*axis], x)?;
            if x.dtype == DType::Bool {
                return Err(OpError::BadDType {
                    expected: "a numeric",
                    got: x.clone(),
                });
            }
            // k is checked against a known length here; a symbolic one is checked
            // when a run binds it.
            if let Some(n) = x.shape.0[*axis].known()
                && *k > n
            {
                return Err(OpError::BadAttr {
                    what: "topk k",
                    ty: x.clone(),
                    detail: format!("k = {k} is larger than axis {axis}'s {n} elements"),
                });
            }
            let mut shape = x.shape.clone();
            shape.0[*axis] = crate::Dim::Known(*k);
            Ok(TensorType::new(DType::I64, shape))
        }
        Op::Reshape(to) => {
            arity(xs, 1)?;
            let (a, b) = (xs[0].shape.numel(), to.numel());
            if a != b {
                return Err(OpError::BadReshape {
                    from: xs[0].shape.clone(),
                    to: to.clone(),
                    from_numel: a.to_string(),
                    to_numel: b.to_string(),
                });
            }
            Ok(TensorType::new(xs[0].dtype, to.clone()))
        }
        Op::Expand(to) => {
            arity(xs, 1)?;
            let from = &xs[0].shape;
            let ok = from.rank() == to.rank()
                && from.0.iter().zip(&to.0).all(|(f, t)| f == t || f.is_one());
            if !ok {
                return Err(OpError::BadExpand {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            Ok(TensorType::new(xs[0].dtype, to.clone()))
        }
        Op::Permute(perm) => {
            arity(xs, 1)?;
            let x = xs[0];
            let mut seen = vec![false; x.rank()];
            let valid = perm.len() == x.rank()
                && perm
                    .iter()
                    .all(|&p| p < x.rank() && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(OpError::BadPermutation {
                    perm: perm.clone(),
                    ty: x.clone(),
                });
            }
            let shape = Shape(perm.iter().map(|&p| x.shape.0[p].clone()).collect());
            Ok(TensorType::new(x.dtype, shape))
        }
        Op::Slice(axes) => {
            arity(xs, 1)?;
            slice(axes, xs[0])
        }
        Op::Pad { pads, value } => {
            arity(xs, 1)?;
            let x = xs[0];
            let bad = |detail: String| OpError::BadAttr {
                what: "padding",
                ty: x.clone(),
                detail,
            };
            if pads.len() != x.rank() {
                return Err(bad(format!("{} pairs for rank {}", pads.len(), x.rank())));
            }
            if value.dtype() != x.dtype {
                return Err(bad(format!("pad value {value} is not {}", x.dtype)));
            }
            let mut dims = Vec::with_capacity(x.rank());
            for (i, (d, &(lo, hi))) in x.shape.0.iter().zip(pads).enumerate() {
                dims.push(match d {
                    Dim::Known(n) => Dim::Known(
                        n.checked_add(lo)
                            .and_then(|n| n.checked_add(hi))
                            .ok_or_else(|| OpError::SizeOverflow {
                                what: "padding",
                                ty: x.clone(),
                                detail: format!("axis {i}: {n} + {lo} + {hi}"),
                            })?,
                    ),
                    Dim::Sym(_) | Dim::Merged(_) if lo == 0 && hi == 0 => d.clone(),
                    Dim::Sym(_) | Dim::Merged(_) => {
                        return Err(OpError::SymbolicDim {
                            op: "pad",
                            dim: i,
                            ty: x.clone(),
                        });
                    }
                });
            }
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Concat { axis } => concat(*axis, xs),
        Op::MatMul { trans_a, trans_b } => {
            arity(xs, 2)?;
            matmul(xs[0], xs[1], *trans_a, *trans_b)
        }
        Op::Gather { axis } => {
            arity(xs, 2)?;
            let (x, idx) = (xs[0], xs[1]);
            check_index(idx)?;
            check_axes(&[*axis], x)?;
            index_fits(idx, x, *axis, "gather")?;
            Ok(TensorType::new(x.dtype, idx.shape.clone()))
        }
        Op::ScatterAdd { axis } => {
            arity(xs, 3)?;
            let (x, idx, src) = (xs[0], xs[1], xs[2]);
            check_index(idx)?;
            check_axes(&[*axis], x)?;
            if src.dtype != x.dtype {
                return Err(OpError::DTypeMismatch {
                    lhs: x.clone(),
                    rhs: src.clone(),
                });
            }
            if idx.shape != src.shape {
                return Err(OpError::ShapeMismatch {
                    lhs: idx.clone(),
                    rhs: src.clone(),
                });
            }
            index_fits(idx, x, *axis, "scatter_add")?;
            Ok(x.clone())
        }
        Op::Iota { shape, axis, dtype } => {
            arity(xs, 0)?;
            let ty = TensorType::new(*dtype, shape.clone());
            check_axes(&[*axis], &ty)?;
            if *dtype == DType::Bool {
                return Err(OpError::BadDType {
                    expected: "a numeric iota",
                    got: ty,
                });
            }
            Ok(ty)
        }
        Op::Random { shape, dtype, .. } => {
            arity(xs, 1)?;
            let ty = TensorType::new(*dtype, shape.clone());
            if !dtype.is_float() {
                return Err(OpError::BadDType {
                    expected: "a floating-point random",
                    got: ty,
                });
            }
            if *xs[0] != TensorType::scalar(DType::I64) {
                return Err(OpError::BadDType {
                    expected: "an i64[] key",
                    got: xs[0].clone(),
                });
            }
            Ok(ty)
        }
        Op::Unfold(w) => {
            arity(xs, 1)?;
            let x = xs[0];
            let [h, wd] = window_dims(x, "unfold")?;
            let out = [0, 1].map(|a| w.out_len(a, [h, wd][a]));
            let (Some(oh), Some(ow)) = (out[0], out[1]) else {
                return Err(OpError::BadAttr {
                    what: "window",
                    ty: x.clone(),
                    detail: format!(
                        "kernel {:?} dilated by {:?} does not fit in {h}x{wd} (or a size, stride or dilation is 0)",
                        w.kernel, w.dilation
                    ),
                });
            };
            let r = x.rank();
            let mut dims = x.shape.0[..r - 2].to_vec();
            dims.extend([w.kernel[0], w.kernel[1], oh, ow].map(Dim::Known));
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Fold { window: w, size } => {
            arity(xs, 1)?;
            let x = xs[0];
            if x.dtype == DType::Bool {
                return Err(OpError::BadDType {
                    expected: "a numeric",
                    got: x.clone(),
                });
            }
            let [kh, kw, oh, ow] = window_dims(x, "fold")?;
            let expect = [0, 1].map(|a| w.out_len(a, size[a]));
            if [kh, kw] != w.kernel || expect != [Some(oh), Some(ow)] {
                return Err(OpError::BadAttr {
                    what: "fold window",
                    ty: x.clone(),
                    detail: format!(
                        "a {:?} kernel with stride {:?}, dilation {:?} over {:?} needs [.., {}, {}, {:?}, {:?}]",
                        w.kernel,
                        w.stride,
                        w.dilation,
                        size,
                        w.kernel[0],
                        w.kernel[1],
                        expect[0],
                        expect[1]
                    ),
                });
            }
            let r = x.rank();
            let mut dims = x.shape.0[..r - 4].to_vec();
            dims.extend(size.map(Dim::Known));
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
    }
}

/// The known sizes of the last `n` axes of a window op's operand.
fn window_dims<const N: usize>(x: &TensorType, op: &'static str) -> Result<[usize; N], OpError> {
    let (r, n) = (x.rank(), N);
    if r < n {
        return Err(OpError::BadAttr {
            what: "operand rank",
            ty: x.clone(),
            detail: format!("{op} needs at least {n} axes"),
        });
    }
    let mut out = [0; N];
    for (i, o) in out.iter_mut().enumerate() {
        let dim = r - n + i;
        *o = x.shape.0[dim].known().ok_or(OpError::SymbolicDim {
            op,
            dim,
            ty: x.clone(),
        })?;
    }
    Ok(out)
}

fn arity(xs: &[&TensorType], n: usize) -> Result<(), OpError> {
    if xs.len() == n {
        Ok(())
    } else {
        Err(OpError::Arity {
            expected: n.to_string(),
            got: xs.len(),
        })
    }
}

fn check_const(value: &ConstValue, ty: &TensorType) -> Result<(), OpError> {
    let (dtype, got) = match value {
        ConstValue::Splat(s) => (s.dtype(), None),
        ConstValue::Dense(d) => (d.dtype(), Some(d.len())),
    };
    let numel = ty.shape.numel();
    let need = numel.as_dim().known();
    let bad = dtype != ty.dtype || got.is_some_and(|n| need != Some(n));
    if bad {
        return Err(OpError::BadConst {
            dtype,
            got: got.unwrap_or(1),
            need: numel.to_string(),
            ty: ty.clone(),
        });
    }
    Ok(())
}

fn unary(u: UnaryOp, x: &TensorType) -> R {
    let ops = u.operands();
    if ops.accepts(x.dtype) {
        Ok(x.clone())
    } else {
        Err(OpError::BadDType {
            expected: ops.expected(),
            got: x.clone(),
        })
    }
}

fn binary(b: BinaryOp, x: &TensorType, y: &TensorType) -> R {
    same_type(x, y)?;
    let ops = b.operands();
    if !ops.accepts(x.dtype) {
        return Err(OpError::BadDType {
            expected: ops.expected(),
            got: x.clone(),
        });
    }
    let dtype = if b.is_comparison() {
        DType::Bool
    } else {
        x.dtype
    };
    Ok(TensorType::new(dtype, x.shape.clone()))
}

fn same_type(x: &TensorType, y: &TensorType) -> Result<(), OpError> {
    if x.dtype != y.dtype {
        return Err(OpError::DTypeMismatch {
            lhs: x.clone(),
            rhs: y.clone(),
        });
    }
    same_shape(x, y)
}

fn same_shape(x: &TensorType, y: &TensorType) -> Result<(), OpError> {
    if x.shape != y.shape {
        return Err(OpError::ShapeMismatch {
            lhs: x.clone(),
            rhs: y.clone(),
        });
    }
    Ok(())
}

/// Axes must be in range, strictly increasing (the canonical form the DSL produces).
fn check_axes(axes: &[usize], x: &TensorType) -> Result<(), OpError> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= x.rank() {
            return Err(OpError::AxisOutOfRange {
                axis: a as i64,
                ty: x.clone(),
            });
        }
        if i > 0 && axes[i - 1] >= a {
            return Err(OpError::DuplicateAxis {
                axis: a,
                axes: axes.iter().map(|&a| a as i64).collect(),
            });
        }
    }
    Ok(())
}

/// The shape after reducing `axes`, keeping them as size 1 or dropping them.
pub fn reduced(shape: &Shape, axes: &[usize], keepdim: bool) -> Shape {
    let mut out = Vec::with_capacity(shape.rank());
    for (i, d) in shape.0.iter().enumerate() {
        if !axes.contains(&i) {
            out.push(d.clone());
        } else if keepdim {
            out.push(Dim::Known(1));
        }
    }
    Shape(out)
}

fn slice(axes: &[SliceAxis], x: &TensorType) -> R {
    let bad = |detail: String| OpError::BadAttr {
        what: "slice",
        ty: x.clone(),
        detail,
    };
    if axes.len() != x.rank() {
        return Err(bad(format!("{} ranges for rank {}", axes.len(), x.rank())));
    }
    let mut dims = Vec::with_capacity(x.rank());
    for (i, (ax, d)) in axes.iter().zip(&x.shape.0).enumerate() {
        match ax {
            SliceAxis::Full => dims.push(d.clone()),
            SliceAxis::Range { start, stop, step } => {
                let size = d.known().ok_or(OpError::SymbolicDim {
                    op: "slice",
                    dim: i,
                    ty: x.clone(),
                })?;
                if *step == 0 || start > stop || *stop > size {
                    return Err(bad(format!(
                        "axis {i}: {start}:{stop}:{step} is not within 0..={size} with step >= 1"
                    )));
                }
                dims.push(Dim::Known((stop - start).div_ceil(*step)));
            }
        }
    }
    Ok(TensorType::new(x.dtype, Shape(dims)))
}

fn concat(axis: usize, xs: &[&TensorType]) -> R {
    let first = *xs.first().ok_or(OpError::Arity {
        expected: "at least 1".into(),
        got: 0,
    })?;
    check_axes(&[axis], first)?;
    let mut total = 0usize;
    let mut symbolic: Option<&TensorType> = None;
    for x in xs {
        if x.dtype != first.dtype {
            return Err(OpError::DTypeMismatch {
                lhs: first.clone(),
                rhs: (*x).clone(),
            });
        }
        let agree = x.rank() == first.rank()
            && x.shape
                .0
                .iter()
                .zip(&first.shape.0)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !agree {
            return Err(OpError::ShapeMismatch {
                lhs: first.clone(),
                rhs: (*x).clone(),
            });
        }
        let Some(n) = x.shape.0[axis].known() else {
            symbolic.get_or_insert(*x);
            continue;
        };
        total = total.checked_add(n).ok_or_else(|| OpError::SizeOverflow {
            what: "concat",
            ty: (*x).clone(),
            detail: format!("the sizes along axis {axis} add up past {}", usize::MAX),
        })?;
    }
    let mut shape = first.shape.clone();
    shape.0[axis] = match symbolic {
        None => Dim::Known(total),
        // A symbolic axis joins only copies of one dim: `k` operands of `N` make `k*N`
        // (a monomial, so the result is still one dim; `N + 2` would not be). The
        // autodiff's batched products concatenate per-step operands along the batch.
        Some(_) if xs.iter().all(|y| y.shape.0[axis] == first.shape.0[axis]) => Numel {
            coeff: xs.len(),
            syms: Default::default(),
        }
        .mul_dim(&first.shape.0[axis])
        .as_dim(),
        Some(x) => {
            return Err(OpError::SymbolicDim {
                op: "concat",
                dim: axis,
                ty: x.clone(),
            });
        }
    };
    Ok(TensorType::new(first.dtype, shape))
}

fn matmul(a: &TensorType, b: &TensorType, ta: bool, tb: bool) -> R {
    let err = |why| OpError::BadMatMul {
        lhs: a.clone(),
        rhs: b.clone(),
        why,
    };
    if a.rank() < 2 || a.rank() != b.rank() {
        return Err(err("operands need the same rank, at least 2"));
    }
    if a.dtype != b.dtype {
        return Err(err("dtypes differ"));
    }
    if a.dtype == DType::Bool {
        return Err(err("bool operands"));
    }
    let r = a.rank();
    if a.shape.0[..r - 2] != b.shape.0[..r - 2] {
        return Err(err("batch dims differ"));
    }
    let (m, ka) = if ta { (r - 1, r - 2) } else { (r - 2, r - 1) };
    let (kb, n) = if tb { (r - 1, r - 2) } else { (r - 2, r - 1) };
    if a.shape.0[ka] != b.shape.0[kb] {
        return Err(err("inner dims differ"));
    }
    let mut dims = a.shape.0[..r - 2].to_vec();
    dims.push(a.shape.0[m].clone());
    dims.push(b.shape.0[n].clone());
    Ok(TensorType::new(a.dtype, Shape(dims)))
}

fn check_index(idx: &TensorType) -> Result<(), OpError> {
    if matches!(idx.dtype, DType::I32 | DType::I64) {
        Ok(())
    } else {
        Err(OpError::BadDType {
            expected: "an i32 or i64 index",
            got: idx.clone(),
        })
    }
}

/// `torch.gather`/`scatter_add` require the index to have the operand's rank and to be
/// no larger than it on every axis but `axis`.
fn index_fits(
    idx: &TensorType,
    x: &TensorType,
    axis: usize,
    op: &'static str,
) -> Result<(), OpError> {
    let err = |detail: String| OpError::BadAttr {
        what: "index shape",
        ty: x.clone(),
        detail,
    };
    if idx.rank() != x.rank() {
        return Err(err(format!("{op} index {idx} must have rank {}", x.rank())));
    }
    for (i, (a, b)) in idx.shape.0.iter().zip(&x.shape.0).enumerate() {
        let fits =
            i == axis || a == b || matches!((a.known(), b.known()), (Some(p), Some(q)) if p <= q);
        if !fits {
            return Err(err(format!(
                "{op} index {idx} is larger than the operand on axis {i}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(dims: Vec<Dim>) -> TensorType {
        TensorType::new(DType::F32, Shape(dims))
    }

    /// `k` copies of one symbolic dim join into `k*N` (the autodiff's batched products
    /// concatenate per-step operands along the batch); any other mix with a symbolic
    /// dim on the axis is refused, naming it.
    #[test]
    fn concat_joins_copies_of_a_symbolic_dim_only() {
        let n = ty(vec![Dim::sym("N"), Dim::Known(4)]);
        let three = concat(0, &[&n, &n, &n]).unwrap();
        assert_eq!(three.to_string(), "f32[3*N,4]");
        let known = ty(vec![Dim::Known(2), Dim::Known(4)]);
        let m = ty(vec![Dim::sym("M"), Dim::Known(4)]);
        for other in [&known, &m] {
            match concat(0, &[&n, other]) {
                Err(OpError::SymbolicDim {
                    op: "concat",
                    dim: 0,
                    ..
                }) => {}
                r => panic!("{r:?}"),
            }
        }
        // Along a known axis a symbolic batch is fine, as before.
        let joined = concat(1, &[&n, &n]).unwrap();
        assert_eq!(joined.to_string(), "f32[N,8]");
    }
}

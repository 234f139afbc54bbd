//! Elementwise math, comparisons and reductions on host tensors.

use std::panic::Location;

use aotgrad_ir::{Axes, BinaryOp, UnaryOp};

use super::{Arg, TensorOpError, eval1, eval2};
use crate::Tensor;

type R = Result<Tensor, TensorOpError>;

/// `self <op> rhs` through the IR's binary op.
fn binary(x: &Tensor, op: BinaryOp, rhs: Arg<'_>, loc: super::Loc) -> R {
    let mut inputs = vec![x];
    inputs.extend(rhs.tensors());
    eval1(op.name(), loc, &inputs, |_, v| {
        v[0].binary_op(op, rhs.operand(&v[1..]))
    })
}

fn unary(x: &Tensor, op: UnaryOp, loc: super::Loc) -> R {
    eval1(op.name(), loc, &[x], |_, v| v[0].unary_op(op))
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $name<'a>(&self, rhs: impl Into<Arg<'a>>) -> R {
                binary(self, BinaryOp::$op, rhs.into(), Location::caller())
            }
        )*}
    };
}

binary_methods! {
    /// `self + rhs`, broadcast and promoted as PyTorch does.
    add => Add;
    sub => Sub;
    mul => Mul;
    /// True division: integers divide in f32.
    div => Div;
    pow => Pow;
    /// Elementwise maximum (NaN-propagating, `torch.maximum`).
    maximum => Maximum;
    minimum => Minimum;
    /// `self == rhs` elementwise, as a bool tensor.
    eq => Eq;
    ne => Ne;
    lt => Lt;
    le => Le;
    gt => Gt;
    ge => Ge;
    logical_and => And;
    logical_or => Or;
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $name(&self) -> R {
                unary(self, UnaryOp::$op, Location::caller())
            }
        )*}
    };
}

unary_methods! {
    neg => Neg;
    abs => Abs;
    sign => Sign;
    /// Float functions of integer tensors compute in f32, as PyTorch's do.
    exp => Exp;
    log => Log;
    sqrt => Sqrt;
    reciprocal => Recip;
    sin => Sin;
    cos => Cos;
    tanh => Tanh;
    floor => Floor;
    ceil => Ceil;
    /// Rounds toward zero (`torch.trunc`).
    trunc => Trunc;
    log1p => Log1p;
    expm1 => Expm1;
    erf => Erf;
    logical_not => Not;
}

impl Tensor {
    /// `1 / sqrt(x)`.
    #[track_caller]
    pub fn rsqrt(&self) -> R {
        eval1("rsqrt", Location::caller(), &[self], |_, v| v[0].rsqrt())
    }

    /// The fractional part, `x - trunc(x)` (`torch.frac`: the sign of `x`).
    #[track_caller]
    pub fn frac(&self) -> R {
        eval1("frac", Location::caller(), &[self], |_, v| v[0].frac())
    }

    #[track_caller]
    pub fn square(&self) -> R {
        eval1("square", Location::caller(), &[self], |_, v| v[0].square())
    }

    #[track_caller]
    pub fn sigmoid(&self) -> R {
        eval1("sigmoid", Location::caller(), &[self], |_, v| {
            v[0].sigmoid()
        })
    }

    #[track_caller]
    pub fn relu(&self) -> R {
        eval1("relu", Location::caller(), &[self], |_, v| v[0].relu())
    }

    /// `torch.clamp(x, min, max)`; either bound may be absent.
    #[track_caller]
    pub fn clamp(&self, min: Option<f64>, max: Option<f64>) -> R {
        eval1("clamp", Location::caller(), &[self], |_, v| {
            v[0].clamp(min, max)
        })
    }

    /// `torch.where(cond, a, b)`: `a` where `cond` (a bool tensor) holds, else `b`;
    /// the three broadcast.
    #[track_caller]
    pub fn where_cond<'a>(cond: &Tensor, a: impl Into<Arg<'a>>, b: impl Into<Arg<'a>>) -> R {
        let (a, b) = (a.into(), b.into());
        let mut inputs = vec![cond];
        inputs.extend(a.tensors());
        let na = inputs.len();
        inputs.extend(b.tensors());
        eval1("where", Location::caller(), &inputs, |_, v| {
            v[0].where_(a.operand(&v[1..na]), b.operand(&v[na..]))
        })
    }

    /// `torch.matmul` (1-D operands promoted, batch axes broadcast).
    #[track_caller]
    pub fn matmul(&self, other: &Tensor) -> R {
        eval1("matmul", Location::caller(), &[self, other], |_, v| {
            v[0].matmul(v[1])
        })
    }

    /// `torch.equal`: the same shape and every element equal (NaN is unequal).
    #[track_caller]
    pub fn equal(&self, other: &Tensor) -> Result<bool, TensorOpError> {
        if self.shape() != other.shape() {
            return Ok(false);
        }
        let same = eval1("equal", Location::caller(), &[self, other], |_, v| {
            let eq = v[0].equal(v[1]);
            // all(eq) as min over bools: an empty tensor is all-true.
            eq.cast(aotgrad_ir::DType::I64).min(Axes::All, false)
        })?;
        Ok(same.item().is_none_or(|m| m == 1.0))
    }

    /// Sum over `axes` (`1`, `-1`, `[0, 2]`, [`Axes::All`]).
    #[track_caller]
    pub fn sum(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("sum", Location::caller(), &[self], |_, v| {
            v[0].sum(axes, keepdim)
        })
    }

    /// The sum of every element, as a 0-d tensor.
    #[track_caller]
    pub fn sum_all(&self) -> R {
        eval1("sum", Location::caller(), &[self], |_, v| v[0].sum_all())
    }

    /// Mean over `axes` (float tensors; `.float()` an integer one first, as PyTorch
    /// asks).
    #[track_caller]
    pub fn mean(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("mean", Location::caller(), &[self], |_, v| {
            v[0].mean(axes, keepdim)
        })
    }

    #[track_caller]
    pub fn prod(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("prod", Location::caller(), &[self], |_, v| {
            v[0].prod(axes, keepdim)
        })
    }

    /// The maximum over `axes` (`torch.amax`; NaN wins). For the values *and* indices
    /// along one axis, see [`Tensor::max_dim`].
    #[track_caller]
    pub fn max(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("max", Location::caller(), &[self], |_, v| {
            v[0].max(axes, keepdim)
        })
    }

    #[track_caller]
    pub fn min(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("min", Location::caller(), &[self], |_, v| {
            v[0].min(axes, keepdim)
        })
    }

    /// `x.max(dim)`: the maxima along `dim` and the index of the first of each.
    #[track_caller]
    pub fn max_dim(&self, dim: i64, keepdim: bool) -> Result<(Tensor, Tensor), TensorOpError> {
        eval2("max", Location::caller(), &[self], |_, v| {
            (v[0].max(dim, keepdim), v[0].argmax(dim, keepdim))
        })
    }

    /// `x.min(dim)`: the minima along `dim` and the index of the first of each.
    #[track_caller]
    pub fn min_dim(&self, dim: i64, keepdim: bool) -> Result<(Tensor, Tensor), TensorOpError> {
        eval2("min", Location::caller(), &[self], |_, v| {
            (v[0].min(dim, keepdim), v[0].argmin(dim, keepdim))
        })
    }

    /// Index of the first maximum along `dim` (i64).
    #[track_caller]
    pub fn argmax(&self, dim: i64, keepdim: bool) -> R {
        eval1("argmax", Location::caller(), &[self], |_, v| {
            v[0].argmax(dim, keepdim)
        })
    }

    #[track_caller]
    pub fn argmin(&self, dim: i64, keepdim: bool) -> R {
        eval1("argmin", Location::caller(), &[self], |_, v| {
            v[0].argmin(dim, keepdim)
        })
    }

    /// `x.argmax()` with no dim: the flat index of the first maximum.
    #[track_caller]
    pub fn argmax_all(&self) -> R {
        eval1("argmax", Location::caller(), &[self], |_, v| {
            v[0].reshape(&[-1]).argmax(0, false)
        })
    }

    #[track_caller]
    pub fn argmin_all(&self) -> R {
        eval1("argmin", Location::caller(), &[self], |_, v| {
            v[0].reshape(&[-1]).argmin(0, false)
        })
    }

    /// Variance over `axes` with `correction` (1: unbiased, PyTorch's default).
    #[track_caller]
    pub fn var(&self, axes: impl Into<Axes>, correction: usize, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("var", Location::caller(), &[self], |_, v| {
            v[0].var(axes, correction, keepdim)
        })
    }

    #[track_caller]
    pub fn std(&self, axes: impl Into<Axes>, correction: usize, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("std", Location::caller(), &[self], |_, v| {
            v[0].std(axes, correction, keepdim)
        })
    }

    /// Vector norm of order 1 or 2 over `axes` (`x.norm(p, dim)`).
    #[track_caller]
    pub fn norm(&self, ord: u32, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("norm", Location::caller(), &[self], |_, v| {
            v[0].norm(ord, axes, keepdim)
        })
    }

    #[track_caller]
    pub fn logsumexp(&self, axes: impl Into<Axes>, keepdim: bool) -> R {
        let axes = axes.into();
        eval1("logsumexp", Location::caller(), &[self], |_, v| {
            v[0].logsumexp(axes, keepdim)
        })
    }

    #[track_caller]
    pub fn softmax(&self, dim: i64) -> R {
        eval1("softmax", Location::caller(), &[self], |_, v| {
            v[0].softmax(dim)
        })
    }

    #[track_caller]
    pub fn log_softmax(&self, dim: i64) -> R {
        eval1("log_softmax", Location::caller(), &[self], |_, v| {
            v[0].log_softmax(dim)
        })
    }

    /// `torch.topk`: the `k` largest (or smallest) values along `dim`, in order, and
    /// their indices. Ties keep index order; NaN counts as the largest value.
    #[track_caller]
    pub fn topk(
        &self,
        k: usize,
        dim: i64,
        largest: bool,
    ) -> Result<(Tensor, Tensor), TensorOpError> {
        eval2("topk", Location::caller(), &[self], |_, v| {
            v[0].topk(k, dim, largest)
        })
    }

    /// `torch.sort` along `dim` (stable: equal values keep their order).
    #[track_caller]
    pub fn sort(&self, dim: i64, descending: bool) -> Result<(Tensor, Tensor), TensorOpError> {
        eval2("sort", Location::caller(), &[self], |_, v| {
            v[0].sort(dim, descending)
        })
    }

    /// `torch.argsort` along `dim` (stable).
    #[track_caller]
    pub fn argsort(&self, dim: i64, descending: bool) -> R {
        eval1("argsort", Location::caller(), &[self], |_, v| {
            v[0].sort(dim, descending).1
        })
    }

    /// `torch.kthvalue`: the `k`-th smallest value along `dim` (1-based, as PyTorch)
    /// and its index.
    #[track_caller]
    pub fn kthvalue(
        &self,
        k: usize,
        dim: i64,
        keepdim: bool,
    ) -> Result<(Tensor, Tensor), TensorOpError> {
        eval2("kthvalue", Location::caller(), &[self], |_, v| {
            v[0].kthvalue(k, dim, keepdim)
        })
    }

    /// `x.float()`: a copy in f32.
    pub fn float(&self) -> Tensor {
        self.cast(aotgrad_ir::DType::F32)
    }

    /// `x.long()`: a copy in i64 (floats truncate toward zero, as PyTorch's).
    pub fn long(&self) -> Tensor {
        self.cast(aotgrad_ir::DType::I64)
    }
}

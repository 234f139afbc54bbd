//! Reductions and the softmax family.

use std::panic::Location;

use super::Var;
use crate::{
    ArgReduceOp, BuildErrorKind, DType, Dim, Op, OpError, ReduceOp, Shape, normalize_axis,
};

type Loc = &'static Location<'static>;

/// Which axes a reduction runs over: all of them, or a list (negative counts from the
/// end). Built from `1`, `-1`, `[0, 2]`, `&[..]`, `vec![..]` or [`Axes::All`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axes {
    All,
    List(Vec<i64>),
}

impl From<i32> for Axes {
    fn from(a: i32) -> Axes {
        Axes::List(vec![a as i64])
    }
}
impl From<i64> for Axes {
    fn from(a: i64) -> Axes {
        Axes::List(vec![a])
    }
}
impl<const N: usize> From<[i32; N]> for Axes {
    fn from(a: [i32; N]) -> Axes {
        Axes::List(a.iter().map(|&x| x as i64).collect())
    }
}
impl From<&[i64]> for Axes {
    fn from(a: &[i64]) -> Axes {
        Axes::List(a.to_vec())
    }
}
impl From<Vec<i64>> for Axes {
    fn from(a: Vec<i64>) -> Axes {
        Axes::List(a)
    }
}

impl<'g> Var<'g> {
    /// Normalises axes to sorted, unique, in-range indices, or records why not.
    pub(crate) fn axes(self, loc: Loc, name: &str, axes: Axes) -> Option<Vec<usize>> {
        let rank = self.rank();
        let list = match axes {
            Axes::All => return Some((0..rank).collect()),
            Axes::List(l) => l,
        };
        let mut out = Vec::with_capacity(list.len());
        for &a in &list {
            let Some(n) = normalize_axis(a, rank) else {
                self.fail(
                    loc,
                    name,
                    OpError::AxisOutOfRange {
                        axis: a,
                        ty: self.ty(),
                    },
                );
                return None;
            };
            if out.contains(&n) {
                self.fail(
                    loc,
                    name,
                    OpError::DuplicateAxis {
                        axis: n,
                        axes: list.clone(),
                    },
                );
                return None;
            }
            out.push(n);
        }
        out.sort_unstable();
        Some(out)
    }

    pub(crate) fn axis(self, loc: Loc, name: &str, axis: i64) -> Option<usize> {
        self.axes(loc, name, Axes::List(vec![axis])).map(|v| v[0])
    }

    fn reduce(self, loc: Loc, name: &str, op: ReduceOp, axes: Axes, keepdim: bool) -> Var<'g> {
        if self.is_poisoned() {
            return self;
        }
        let Some(axes) = self.axes(loc, name, axes) else {
            return self.b.poison();
        };
        // PyTorch sums bools and small ints in i64.
        let x = match (op, self.dtype()) {
            (ReduceOp::Sum | ReduceOp::Prod, DType::Bool | DType::U8 | DType::I32) => {
                self.cast(DType::I64)
            }
            _ => self,
        };
        x.prim(loc, name, Op::Reduce { op, axes, keepdim }, &[])
    }

    #[track_caller]
    pub fn sum(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        self.reduce(
            Location::caller(),
            "sum",
            ReduceOp::Sum,
            axes.into(),
            keepdim,
        )
    }

    /// Sum of all elements, as a 0-d value.
    #[track_caller]
    pub fn sum_all(self) -> Var<'g> {
        self.reduce(Location::caller(), "sum", ReduceOp::Sum, Axes::All, false)
    }

    #[track_caller]
    pub fn prod(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        self.reduce(
            Location::caller(),
            "prod",
            ReduceOp::Prod,
            axes.into(),
            keepdim,
        )
    }

    /// Maximum over axes (PyTorch's `amax`).
    #[track_caller]
    pub fn max(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        self.reduce(
            Location::caller(),
            "max",
            ReduceOp::Max,
            axes.into(),
            keepdim,
        )
    }

    #[track_caller]
    pub fn min(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        self.reduce(
            Location::caller(),
            "min",
            ReduceOp::Min,
            axes.into(),
            keepdim,
        )
    }

    fn arg(self, loc: Loc, op: ArgReduceOp, axis: i64, keepdim: bool) -> Var<'g> {
        let Some(axis) = self.axis(loc, op.name(), axis) else {
            return self.b.poison();
        };
        // PyTorch refuses an empty reduced axis (there is no first extremum); the
        // primitive defines the index 0 there, which a symbolic axis bound to 0 gets.
        if self.shape().0[axis].known() == Some(0) {
            return self.fail(
                loc,
                op.name(),
                crate::BuildErrorKind::Usage(format!(
                    "expected reduction dim {axis} of {} to have non-zero size",
                    self.ty()
                )),
            );
        }
        self.prim(loc, op.name(), Op::ArgReduce { op, axis, keepdim }, &[])
    }

    /// Index of the first maximum along `axis` (i64).
    #[track_caller]
    pub fn argmax(self, axis: i64, keepdim: bool) -> Var<'g> {
        self.arg(Location::caller(), ArgReduceOp::ArgMax, axis, keepdim)
    }

    #[track_caller]
    pub fn argmin(self, axis: i64, keepdim: bool) -> Var<'g> {
        self.arg(Location::caller(), ArgReduceOp::ArgMin, axis, keepdim)
    }

    /// Number of elements covered by `axes`, as a float value (symbolic dims included).
    fn count(self, loc: Loc, name: &str, axes: &[usize]) -> Var<'g> {
        let shape = self.shape();
        let mut known = 1usize;
        let mut sym: Vec<Dim> = Vec::new();
        for &a in axes {
            match &shape.0[a] {
                Dim::Known(n) => known *= n,
                d => sym.push(d.clone()),
            }
        }
        let mut c = self.splat(
            loc,
            crate::Scalar::F64(known as f64).cast(self.dtype()),
            Shape::scalar(),
        );
        // A symbolic extent is read off the data: the sum of ones along that axis.
        for d in sym {
            let ones = self.splat(loc, crate::Scalar::one(self.dtype()), Shape(vec![d]));
            c = c * ones.reduce(loc, name, ReduceOp::Sum, Axes::All, false);
        }
        c
    }

    fn mean_impl(self, loc: Loc, axes: Axes, keepdim: bool) -> Var<'g> {
        if self.is_poisoned() {
            return self;
        }
        if !self.dtype().is_float() {
            return self.fail(
                loc,
                "mean",
                OpError::BadDType {
                    expected: "a floating-point",
                    got: self.ty(),
                },
            );
        }
        let Some(ax) = self.axes(loc, "mean", axes) else {
            return self.b.poison();
        };
        let n = self.count(loc, "mean", &ax);
        let s = self.reduce(
            loc,
            "mean",
            ReduceOp::Sum,
            Axes::List(ax.iter().map(|&a| a as i64).collect()),
            keepdim,
        );
        s / n
    }

    #[track_caller]
    pub fn mean(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        self.mean_impl(Location::caller(), axes.into(), keepdim)
    }

    #[track_caller]
    pub fn mean_all(self) -> Var<'g> {
        self.mean_impl(Location::caller(), Axes::All, false)
    }

    /// Variance with PyTorch's `correction` (1 = unbiased, divide by N-1; 0 = by N).
    #[track_caller]
    pub fn var(self, axes: impl Into<Axes>, correction: usize, keepdim: bool) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        if !self.dtype().is_float() {
            return self.fail(
                loc,
                "var",
                OpError::BadDType {
                    expected: "a floating-point",
                    got: self.ty(),
                },
            );
        }
        let Some(ax) = self.axes(loc, "var", axes.into()) else {
            return self.b.poison();
        };
        let list = Axes::List(ax.iter().map(|&a| a as i64).collect());
        let mean = self.mean_impl(loc, list.clone(), true);
        let dev = self - mean;
        let ss = (dev * dev).reduce(loc, "var", ReduceOp::Sum, list, keepdim);
        let n = self.count(loc, "var", &ax);
        ss / (n - correction as f64)
    }

    #[track_caller]
    pub fn std(self, axes: impl Into<Axes>, correction: usize, keepdim: bool) -> Var<'g> {
        self.var(axes, correction, keepdim).sqrt()
    }

    /// `log(sum(exp(x)))` over axes, computed as `m + log(sum(exp(x - m)))` with the
    /// max `m` detached: exact for ±100-scale inputs, and its composed gradient is
    /// exactly softmax.
    #[track_caller]
    pub fn logsumexp(self, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let Some(ax) = self.axes(loc, "logsumexp", axes.into()) else {
            return self.b.poison();
        };
        let list = Axes::List(ax.iter().map(|&a| a as i64).collect());
        let m = self
            .reduce(loc, "logsumexp", ReduceOp::Max, list.clone(), true)
            .detach();
        // An all -inf slice would give inf - inf; PyTorch returns -inf there, and so
        // does this with m replaced by 0 where it is infinite.
        let m = m.abs().equal(f64::INFINITY).where_(0.0, m);
        let s = (self - m)
            .exp()
            .reduce(loc, "logsumexp", ReduceOp::Sum, list.clone(), true)
            .log()
            + m;
        if keepdim { s } else { s.squeeze_axes(loc, &ax) }
    }

    /// Softmax along `axis`, max-subtracted.
    #[track_caller]
    pub fn softmax(self, axis: i64) -> Var<'g> {
        let m = self.max(axis, true).detach();
        let e = (self - m).exp();
        e / e.sum(axis, true)
    }

    /// `x - logsumexp(x)` along `axis`.
    #[track_caller]
    pub fn log_softmax(self, axis: i64) -> Var<'g> {
        self - self.logsumexp(axis, true)
    }

    /// Vector norm (`torch.linalg.vector_norm`) of order 1 or 2 over axes.
    #[track_caller]
    pub fn norm(self, ord: u32, axes: impl Into<Axes>, keepdim: bool) -> Var<'g> {
        let loc = Location::caller();
        match ord {
            1 => self.abs().sum(axes, keepdim),
            2 => (self * self).sum(axes, keepdim).sqrt(),
            _ => self.fail(
                loc,
                "norm",
                BuildErrorKind::Usage(format!("norm order {ord} is not supported (1 or 2)")),
            ),
        }
    }
}

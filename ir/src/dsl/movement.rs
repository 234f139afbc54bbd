//! Shape manipulation, concatenation and matrix products.

use std::panic::Location;

use super::{GraphBuilder, Var};
use crate::{BuildErrorKind, Dim, Op, OpError, Scalar, Shape, SliceAxis, normalize_axis};

type Loc = &'static Location<'static>;

fn usage(msg: String) -> BuildErrorKind {
    BuildErrorKind::Usage(msg)
}

impl<'g> Var<'g> {
    /// Reshape with PyTorch's conventions: one `-1` is inferred from the element count
    /// (which may be symbolic: `[N,28,28].reshape(&[-1, 784])` is `[N,784]`).
    #[track_caller]
    pub fn reshape(self, dims: &[i64]) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let mut known = Vec::with_capacity(dims.len());
        let mut infer_at = None;
        for (i, &d) in dims.iter().enumerate() {
            match d {
                -1 if infer_at.is_none() => {
                    infer_at = Some(i);
                    known.push(Dim::Known(1));
                }
                d if d >= 0 => known.push(Dim::Known(d as usize)),
                _ => {
                    return self.fail(
                        loc,
                        "reshape",
                        usage(format!(
                            "invalid target shape {dims:?}: only one -1 and sizes >= 0"
                        )),
                    );
                }
            }
        }
        if let Some(i) = infer_at {
            let rest = Shape(known.clone()).numel();
            match self.shape().numel().div(&rest).map(|n| n.as_dim()) {
                Some(d) => known[i] = d,
                None => {
                    // Said with the -1 where the user wrote it (not the placeholder 1).
                    let to = dims
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return self.fail(
                        loc,
                        "reshape",
                        OpError::BadReshapeInfer {
                            from: self.shape(),
                            to: format!("[{to}]"),
                            from_numel: self.shape().numel().to_string(),
                            rest_numel: rest.to_string(),
                        },
                    );
                }
            }
        }
        self.reshape_to(loc, Shape(known))
    }

    /// PyTorch's `view` (all values here are contiguous, so it is `reshape`).
    #[track_caller]
    pub fn view(self, dims: &[i64]) -> Var<'g> {
        self.reshape(dims)
    }

    pub(crate) fn reshape_to(self, loc: Loc, shape: Shape) -> Var<'g> {
        if !self.is_poisoned() && self.shape() == shape {
            return self;
        }
        self.prim(loc, "reshape", Op::Reshape(shape), &[])
    }

    /// Reshape to an explicit (possibly symbolic) shape.
    #[track_caller]
    pub fn reshape_shape(self, shape: Shape) -> Var<'g> {
        self.reshape_to(Location::caller(), shape)
    }

    /// Merges axes `start..=end` into one (`torch.flatten`).
    #[track_caller]
    pub fn flatten(self, start: i64, end: i64) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let shape = self.shape();
        if shape.rank() == 0 {
            return self.reshape_to(loc, Shape(vec![Dim::Known(1)]));
        }
        let (Some(s), Some(e)) = (
            self.axis(loc, "flatten", start),
            self.axis(loc, "flatten", end),
        ) else {
            return self.b.poison();
        };
        if s > e {
            return self.fail(
                loc,
                "flatten",
                usage(format!("start_dim {start} comes after end_dim {end}")),
            );
        }
        let d = Shape(shape.0[s..=e].to_vec()).numel().as_dim();
        let mut dims = shape.0[..s].to_vec();
        dims.push(d);
        dims.extend_from_slice(&shape.0[e + 1..]);
        self.reshape_to(loc, Shape(dims))
    }

    #[track_caller]
    pub fn permute(self, perm: &[i64]) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let rank = self.rank();
        let p: Option<Vec<usize>> = perm.iter().map(|&a| normalize_axis(a, rank)).collect();
        match p {
            Some(p) => self.prim(loc, "permute", Op::Permute(p), &[]),
            None => self.fail(
                loc,
                "permute",
                usage(format!(
                    "{perm:?} has an axis out of range for {}",
                    self.ty()
                )),
            ),
        }
    }

    /// Swaps two axes.
    #[track_caller]
    pub fn transpose(self, a: i64, b: i64) -> Var<'g> {
        let loc = Location::caller();
        let (Some(a), Some(b)) = (
            self.axis(loc, "transpose", a),
            self.axis(loc, "transpose", b),
        ) else {
            return self.b.poison();
        };
        if a == b {
            return self;
        }
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.prim(loc, "transpose", Op::Permute(perm), &[])
    }

    /// Matrix transpose (`.t()`); like PyTorch, rank 0 and 1 are returned unchanged and
    /// rank > 2 is an error.
    #[track_caller]
    pub fn t(self) -> Var<'g> {
        let loc = Location::caller();
        match self.rank() {
            0 | 1 => self,
            2 => self.transpose(0, 1),
            r => self.fail(
                loc,
                "t",
                usage(format!("t() expects a tensor of rank <= 2, got rank {r}")),
            ),
        }
    }

    /// Inserts a size-1 axis at `axis` (in `[-rank-1, rank]`).
    #[track_caller]
    pub fn unsqueeze(self, axis: i64) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let mut dims = self.shape().0;
        let Some(a) = normalize_axis(axis, dims.len() + 1) else {
            return self.fail(
                loc,
                "unsqueeze",
                OpError::AxisOutOfRange {
                    axis,
                    ty: self.ty(),
                },
            );
        };
        dims.insert(a, Dim::Known(1));
        self.reshape_to(loc, Shape(dims))
    }

    /// Removes `axis` if it has size 1 (a no-op otherwise, as in PyTorch).
    #[track_caller]
    pub fn squeeze(self, axis: i64) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "squeeze", axis) else {
            return self.b.poison();
        };
        if self.shape().0[a].is_one() {
            self.squeeze_axes(loc, &[a])
        } else {
            self
        }
    }

    /// Removes every size-1 axis.
    #[track_caller]
    pub fn squeeze_all(self) -> Var<'g> {
        let ones: Vec<usize> = self
            .shape()
            .0
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_one())
            .map(|(i, _)| i)
            .collect();
        self.squeeze_axes(Location::caller(), &ones)
    }

    pub(crate) fn squeeze_axes(self, loc: Loc, axes: &[usize]) -> Var<'g> {
        let dims = self
            .shape()
            .0
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, d)| d)
            .collect();
        self.reshape_to(loc, Shape(dims))
    }

    /// `expand` with PyTorch's `-1` (keep this dim) and new leading dims.
    #[track_caller]
    pub fn expand(self, sizes: &[i64]) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let shape = self.shape();
        if sizes.len() < shape.rank() {
            return self.fail(
                loc,
                "expand",
                OpError::BadExpand {
                    from: shape,
                    to: Shape(vec![]),
                },
            );
        }
        let lead = sizes.len() - shape.rank();
        let mut dims = Vec::with_capacity(sizes.len());
        for (i, &s) in sizes.iter().enumerate() {
            dims.push(match s {
                -1 if i >= lead => shape.0[i - lead].clone(),
                s if s >= 0 => Dim::Known(s as usize),
                _ => {
                    return self.fail(
                        loc,
                        "expand",
                        usage(format!("invalid expand sizes {sizes:?}")),
                    );
                }
            });
        }
        self.broadcast_as(loc, "expand", &Shape(dims))
    }

    /// Broadcasts to an explicit (possibly symbolic) shape.
    #[track_caller]
    pub fn broadcast_to(self, shape: &Shape) -> Var<'g> {
        self.broadcast_as(Location::caller(), "broadcast_to", shape)
    }

    /// `x[..., start:stop:step, ...]` along `axis`, with Python's index rules (negative
    /// indices count from the end, out-of-range bounds are clipped).
    #[track_caller]
    pub fn slice(self, axis: i64, start: Option<i64>, stop: Option<i64>, step: usize) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "slice", axis) else {
            return self.b.poison();
        };
        if step == 0 {
            return self.fail(loc, "slice", usage("slice step must be at least 1".into()));
        }
        let shape = self.shape();
        let Some(n) = shape.0[a].known() else {
            if start.is_none() && stop.is_none() && step == 1 {
                return self;
            }
            return self.fail(
                loc,
                "slice",
                OpError::SymbolicDim {
                    op: "slice",
                    dim: a,
                    ty: self.ty(),
                },
            );
        };
        let clip = |v: i64| -> usize {
            let v = if v < 0 { v + n as i64 } else { v };
            v.clamp(0, n as i64) as usize
        };
        let s = start.map_or(0, clip);
        let e = stop.map_or(n, clip).max(s);
        let mut ranges = vec![SliceAxis::Full; shape.rank()];
        ranges[a] = SliceAxis::Range {
            start: s,
            stop: e,
            step,
        };
        self.prim(loc, "slice", Op::Slice(ranges), &[])
    }

    /// `x.narrow(axis, start, length)`.
    #[track_caller]
    pub fn narrow(self, axis: i64, start: i64, length: i64) -> Var<'g> {
        self.slice(axis, Some(start), Some(start + length), 1)
    }

    /// `x.select(axis, index)`: picks one index and removes the axis.
    #[track_caller]
    pub fn select(self, axis: i64, index: i64) -> Var<'g> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "select", axis) else {
            return self.b.poison();
        };
        let Some(n) = self.shape().0[a].known() else {
            return self.fail(
                loc,
                "select",
                OpError::SymbolicDim {
                    op: "select",
                    dim: a,
                    ty: self.ty(),
                },
            );
        };
        let i = if index < 0 { index + n as i64 } else { index };
        if !(0..n as i64).contains(&i) {
            return self.fail(
                loc,
                "select",
                usage(format!(
                    "index {index} is out of range for axis {a} of {}",
                    self.ty()
                )),
            );
        }
        self.slice(a as i64, Some(i), Some(i + 1), 1)
            .squeeze_axes(loc, &[a])
    }

    /// Constant padding in PyTorch's `F.pad` order: `(before, after)` pairs starting
    /// from the **last** axis. Negative amounts crop.
    #[track_caller]
    pub fn pad(self, pads: &[(i64, i64)], value: f64) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let rank = self.rank();
        if pads.len() > rank {
            return self.fail(
                loc,
                "pad",
                usage(format!("{} padding pairs for rank {rank}", pads.len())),
            );
        }
        let mut v = self;
        let mut grow = vec![(0usize, 0usize); rank];
        for (k, &(lo, hi)) in pads.iter().enumerate() {
            let axis = rank - 1 - k;
            let n = match v.shape().0[axis].known() {
                Some(n) => n as i64,
                None if lo == 0 && hi == 0 => continue,
                None => {
                    return self.fail(
                        loc,
                        "pad",
                        OpError::SymbolicDim {
                            op: "pad",
                            dim: axis,
                            ty: self.ty(),
                        },
                    );
                }
            };
            if lo < 0 || hi < 0 {
                let (s, e) = (lo.min(0).abs(), n - hi.min(0).abs());
                if s > e {
                    return self.fail(
                        loc,
                        "pad",
                        usage(format!(
                            "cropping {lo},{hi} removes more than the {n} elements of axis {axis}"
                        )),
                    );
                }
                v = v.slice(axis as i64, Some(s), Some(e), 1);
            }
            grow[axis] = (lo.max(0) as usize, hi.max(0) as usize);
        }
        if grow.iter().all(|&p| p == (0, 0)) {
            return v;
        }
        let value = Scalar::F64(value).cast(self.dtype());
        v.prim(loc, "pad", Op::Pad { pads: grow, value }, &[])
    }

    /// Splits into pieces of `size` along `axis` (the last may be shorter).
    #[track_caller]
    pub fn split(self, size: usize, axis: i64) -> Vec<Var<'g>> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "split", axis) else {
            return vec![self.b.poison()];
        };
        let Some(n) = self.shape().0[a].known() else {
            return vec![self.fail(
                loc,
                "split",
                OpError::SymbolicDim {
                    op: "split",
                    dim: a,
                    ty: self.ty(),
                },
            )];
        };
        if size == 0 {
            return vec![self.fail(loc, "split", usage("split size must be at least 1".into()))];
        }
        (0..n)
            .step_by(size)
            .map(|s| self.slice(a as i64, Some(s as i64), Some((s + size).min(n) as i64), 1))
            .collect()
    }

    /// Splits into pieces of the given sizes along `axis` (`x.split([2, 3], axis)`);
    /// the sizes must add up to the axis length.
    #[track_caller]
    pub fn split_sizes(self, sizes: &[usize], axis: i64) -> Vec<Var<'g>> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "split", axis) else {
            return vec![self.b.poison()];
        };
        let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
        if total.is_none() || self.shape().0[a].known() != total {
            return vec![self.fail(
                loc,
                "split",
                usage(format!(
                    "split sizes {sizes:?} do not add up to axis {a} of {}",
                    self.ty()
                )),
            )];
        }
        let mut start = 0i64;
        sizes
            .iter()
            .map(|&s| {
                let v = self.slice(a as i64, Some(start), Some(start + s as i64), 1);
                start += s as i64;
                v
            })
            .collect()
    }

    /// `x.repeat(reps)`: tiles the value `reps[i]` times along axis `i`; extra leading
    /// reps add axes. An expand of interleaved size-1 axes and a reshape, so no copy
    /// is made until something reads it.
    #[track_caller]
    pub fn repeat(self, reps: &[usize]) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        let shape = self.shape();
        if reps.len() < shape.rank() {
            return self.fail(
                loc,
                "repeat",
                usage(format!(
                    "repeat needs at least one count per axis: {} counts for {}",
                    reps.len(),
                    self.ty()
                )),
            );
        }
        let mut dims = vec![Dim::Known(1); reps.len() - shape.rank()];
        dims.extend(shape.0.iter().cloned());
        let mut spread = Vec::with_capacity(2 * dims.len());
        let mut tiled = Vec::with_capacity(2 * dims.len());
        let mut merged = Vec::with_capacity(dims.len());
        for (d, &r) in dims.iter().zip(reps) {
            spread.extend([Dim::Known(1), d.clone()]);
            tiled.extend([Dim::Known(r), d.clone()]);
            merged.push(
                crate::Numel::one()
                    .mul_dim(&Dim::Known(r))
                    .mul_dim(d)
                    .as_dim(),
            );
        }
        self.reshape_to(loc, Shape(spread))
            .broadcast_as(loc, "repeat", &Shape(tiled))
            .reshape_to(loc, Shape(merged))
    }

    /// Reverses the order along each of `axes` (`torch.flip`).
    #[track_caller]
    pub fn flip(self, axes: &[i64]) -> Var<'g> {
        let loc = Location::caller();
        let mut v = self;
        for &axis in axes {
            let Some(a) = self.axis(loc, "flip", axis) else {
                return self.b.poison();
            };
            let Some(n) = self.shape().0[a].known() else {
                return self.fail(
                    loc,
                    "flip",
                    OpError::SymbolicDim {
                        op: "flip",
                        dim: a,
                        ty: self.ty(),
                    },
                );
            };
            let rev = self
                .b
                .constant(crate::Data::I64((0..n as i64).rev().collect()), &[n]);
            v = v.index_select(a as i64, rev);
        }
        v
    }

    /// `torch.chunk`: `chunks` pieces of size `ceil(n / chunks)`.
    #[track_caller]
    pub fn chunk(self, chunks: usize, axis: i64) -> Vec<Var<'g>> {
        let loc = Location::caller();
        let Some(a) = self.axis(loc, "chunk", axis) else {
            return vec![self.b.poison()];
        };
        match (self.shape().0[a].known(), chunks) {
            (_, 0) => vec![self.fail(loc, "chunk", usage("chunk count must be at least 1".into()))],
            (Some(n), c) => self.split(n.div_ceil(c).max(1), a as i64),
            (None, _) => vec![self.fail(
                loc,
                "chunk",
                OpError::SymbolicDim {
                    op: "chunk",
                    dim: a,
                    ty: self.ty(),
                },
            )],
        }
    }

    /// `torch.matmul`: 1-D operands are promoted to matrices and the added axis is
    /// removed again; batch axes broadcast.
    #[track_caller]
    pub fn matmul(self, other: Var<'g>) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() || other.is_poisoned() {
            return self.b.poison();
        }
        let (ra, rb) = (self.rank(), other.rank());
        if ra == 0 || rb == 0 {
            return self.fail(
                loc,
                "matmul",
                OpError::BadMatMul {
                    lhs: self.ty(),
                    rhs: other.ty(),
                    why: "both operands need at least one dim",
                },
            );
        }
        let dtype = crate::DType::promote(self.dtype(), other.dtype());
        let a = if ra == 1 { self.unsqueeze(0) } else { self }.cast(dtype);
        let b = if rb == 1 { other.unsqueeze(1) } else { other }.cast(dtype);
        let (sa, sb) = (a.shape(), b.shape());
        let (ba, bb) = (
            Shape(sa.0[..sa.rank() - 2].to_vec()),
            Shape(sb.0[..sb.rank() - 2].to_vec()),
        );
        let Some(batch) = Shape::broadcast(&ba, &bb) else {
            return self.fail(
                loc,
                "matmul",
                OpError::BadMatMul {
                    lhs: self.ty(),
                    rhs: other.ty(),
                    why: "batch dims do not broadcast",
                },
            );
        };
        let full = |s: &Shape| {
            let mut d = batch.0.clone();
            d.extend_from_slice(&s.0[s.rank() - 2..]);
            Shape(d)
        };
        let a = a.broadcast_as(loc, "matmul", &full(&sa));
        let b = b.broadcast_as(loc, "matmul", &full(&sb));
        let mut out = a.prim(
            loc,
            "matmul",
            Op::MatMul {
                trans_a: false,
                trans_b: false,
            },
            &[b],
        );
        if out.is_poisoned() {
            return out;
        }
        let r = out.rank();
        if rb == 1 {
            out = out.squeeze_axes(loc, &[r - 1]);
        }
        if ra == 1 {
            out = out.squeeze_axes(loc, &[out.rank() - if rb == 1 { 1 } else { 2 }]);
        }
        out
    }

    /// `x @ weight.T + bias` with PyTorch's `[out, in]` weight layout. The transpose is
    /// a matmul flag, never a materialised permute.
    #[track_caller]
    pub fn linear(self, weight: Var<'g>, bias: Option<Var<'g>>) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() || weight.is_poisoned() {
            return self.b.poison();
        }
        if weight.rank() != 2 || self.rank() == 0 {
            return self.fail(
                loc,
                "linear",
                OpError::BadMatMul {
                    lhs: self.ty(),
                    rhs: weight.ty(),
                    why: "linear needs input [..., in] and weight [out, in]",
                },
            );
        }
        let shape = self.shape();
        let x2 = if shape.rank() == 2 {
            self
        } else {
            // Leading dims merge into one (a merged dim `N*T` when symbolic).
            let rows = Shape(shape.0[..shape.rank() - 1].to_vec()).numel().as_dim();
            self.reshape_to(loc, Shape(vec![rows, shape.0[shape.rank() - 1].clone()]))
        };
        let mut y = x2.prim(
            loc,
            "linear",
            Op::MatMul {
                trans_a: false,
                trans_b: true,
            },
            &[weight],
        );
        if y.is_poisoned() {
            return y;
        }
        if shape.rank() != 2 {
            let mut d = shape.0[..shape.rank() - 1].to_vec();
            d.push(weight.shape().0[0].clone());
            y = y.reshape_to(loc, Shape(d));
        }
        match bias {
            Some(b) => y + b,
            None => y,
        }
    }
}

impl GraphBuilder {
    /// Concatenates along `axis` (`torch.cat`), promoting dtypes.
    #[track_caller]
    pub fn cat<'g>(&'g self, values: &[Var<'g>], axis: i64) -> Var<'g> {
        let loc = Location::caller();
        let Some(first) = values.first().copied() else {
            return self.fail(loc, "cat", usage("cat needs at least one value".into()));
        };
        if values.iter().any(|v| v.is_poisoned()) {
            return first.b.poison();
        }
        let Some(a) = first.axis(loc, "cat", axis) else {
            return first.b.poison();
        };
        let dtype = values
            .iter()
            .map(|v| v.dtype())
            .reduce(crate::DType::promote)
            .unwrap_or(first.dtype());
        let vs: Vec<Var<'g>> = values.iter().map(|v| v.cast(dtype)).collect();
        if vs.len() == 1 {
            return vs[0];
        }
        vs[0].prim(loc, "cat", Op::Concat { axis: a }, &vs[1..])
    }

    /// Stacks along a new axis (`torch.stack`).
    #[track_caller]
    pub fn stack<'g>(&'g self, values: &[Var<'g>], axis: i64) -> Var<'g> {
        let loc = Location::caller();
        let Some(first) = values.first() else {
            return self.fail(loc, "stack", usage("stack needs at least one value".into()));
        };
        let rank = first.rank() as i64;
        let a = if axis < 0 { axis + rank + 1 } else { axis };
        if !(0..=rank).contains(&a) {
            return first.fail(
                loc,
                "stack",
                OpError::AxisOutOfRange {
                    axis,
                    ty: first.ty(),
                },
            );
        }
        let vs: Vec<Var<'g>> = values.iter().map(|v| v.unsqueeze(a)).collect();
        self.cat(&vs, a)
    }
}

//! Python-style indexing (`x[:, 0, ::2]`, `x[..., :2]`, `x[None]`), boolean masks and
//! `nonzero`. Indexing by positions and ranges is a graph (select, slice, unsqueeze);
//! mask selection is host-only, because its result size depends on the data.

use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};
use std::panic::Location;

use aotgrad_ir::{BinaryOp, DType, Data, Shape};

use super::{Arg, TensorOpError, eval1};
use crate::Tensor;

type R = Result<Tensor, TensorOpError>;

/// Rebuilds a [`Data`] of the same dtype from `$body`, a `Vec` computed from the
/// variant's vector `$v`.
macro_rules! same_variant {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::Bool($v) => Data::Bool($body),
            Data::U8($v) => Data::U8($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
        }
    };
}

/// One position of an index expression, as in Python: an integer (removes the axis;
/// negative counts from the end), a range with an optional step (`start:stop:step`,
/// bounds clipped as Python's), the whole axis (`:`), `...` ([`Ix::Ellipsis`], the
/// axes not named) and `None` ([`Ix::NewAxis`]). Build lists with [`crate::s!`]:
/// `s![.., 0, 0..28;2, -1..]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ix {
    At(i64),
    Range {
        start: Option<i64>,
        stop: Option<i64>,
        step: usize,
    },
    Full,
    Ellipsis,
    NewAxis,
}

impl Ix {
    /// `range` with a step: `start:stop:step`. A step after anything but a range (an
    /// integer, `...`, `None`) is not a Python index: it becomes a range with step 0,
    /// which [`Tensor::index`] reports as an error.
    pub fn stepped(range: impl Into<Ix>, step: usize) -> Ix {
        match range.into() {
            Ix::Range { start, stop, .. } => Ix::Range { start, stop, step },
            Ix::Full => Ix::Range {
                start: None,
                stop: None,
                step,
            },
            Ix::At(_) | Ix::Ellipsis | Ix::NewAxis => Ix::Range {
                start: None,
                stop: None,
                step: 0,
            },
        }
    }
}

macro_rules! ix_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Ix {
            fn from(i: $t) -> Ix {
                Ix::At(i as i64)
            }
        }
        impl From<Range<$t>> for Ix {
            fn from(r: Range<$t>) -> Ix {
                Ix::Range { start: Some(r.start as i64), stop: Some(r.end as i64), step: 1 }
            }
        }
        impl From<RangeInclusive<$t>> for Ix {
            fn from(r: RangeInclusive<$t>) -> Ix {
                let stop = *r.end() as i64 + 1;
                // `a..=-1` is "through the end": stop 0 would mean empty.
                let stop = if stop == 0 { None } else { Some(stop) };
                Ix::Range { start: Some(*r.start() as i64), stop, step: 1 }
            }
        }
        impl From<RangeFrom<$t>> for Ix {
            fn from(r: RangeFrom<$t>) -> Ix {
                Ix::Range { start: Some(r.start as i64), stop: None, step: 1 }
            }
        }
        impl From<RangeTo<$t>> for Ix {
            fn from(r: RangeTo<$t>) -> Ix {
                Ix::Range { start: None, stop: Some(r.end as i64), step: 1 }
            }
        }
        impl From<RangeToInclusive<$t>> for Ix {
            fn from(r: RangeToInclusive<$t>) -> Ix {
                let stop = r.end as i64 + 1;
                let stop = if stop == 0 { None } else { Some(stop) };
                Ix::Range { start: None, stop, step: 1 }
            }
        }
    )*};
}
ix_from_int!(i32, i64, usize);

impl From<RangeFull> for Ix {
    fn from(_: RangeFull) -> Ix {
        Ix::Full
    }
}

/// An index expression for [`Tensor::index`], as Python writes it:
/// `s![.., 0..28;2]` is `[:, 0:28:2]`, `s![Ix::Ellipsis, ..2]` is `[..., :2]`,
/// `s![0, -1]` picks one element. Each item is an integer, a Rust range (`a..b`,
/// `a..`, `..b`, `..`, `a..=b`), optionally followed by `;step`, or an [`Ix`].
#[macro_export]
macro_rules! s {
    (@one $e:expr ; $step:expr) => { $crate::tensor_ops::Ix::stepped($e, $step) };
    (@one $e:expr) => { $crate::tensor_ops::Ix::from($e) };
    ($($e:expr $(; $step:expr)?),* $(,)?) => {
        [$( $crate::s!(@one $e $(; $step)?) ),*]
    };
}

impl Tensor {
    /// `x[index]` with Python's rules: see [`Ix`] and [`crate::s!`]. Integers remove
    /// their axis, ranges keep it, `...` stands for the axes not named, `None` adds a
    /// size-1 axis. Out-of-range integers are errors; range bounds clip.
    #[track_caller]
    pub fn index(&self, index: &[Ix]) -> R {
        let loc = Location::caller();
        let rank = self.shape().len();
        let named = index
            .iter()
            .filter(|i| !matches!(i, Ix::Ellipsis | Ix::NewAxis))
            .count();
        let ellipses = index.iter().filter(|i| **i == Ix::Ellipsis).count();
        if index.iter().any(|i| matches!(i, Ix::Range { step: 0, .. })) {
            return Err(TensorOpError::invalid(
                "index",
                loc,
                "a step must follow a range and be at least 1 (`a..b;2`, `..;2`)",
            ));
        }
        if ellipses > 1 {
            return Err(TensorOpError::invalid(
                "index",
                loc,
                "an index can have only one ellipsis (`...`)",
            ));
        }
        if named > rank {
            return Err(TensorOpError::invalid(
                "index",
                loc,
                format!(
                    "too many indices for a tensor of shape {:?}: {named} given",
                    self.shape()
                ),
            ));
        }
        // Expand `...` (or an implied trailing one) into full slices.
        let mut items: Vec<Ix> = Vec::with_capacity(rank + index.len());
        for &i in index {
            if i == Ix::Ellipsis {
                items.extend(std::iter::repeat_n(Ix::Full, rank - named));
            } else {
                items.push(i);
            }
        }
        if ellipses == 0 {
            items.extend(std::iter::repeat_n(Ix::Full, rank - named));
        }
        eval1("index", loc, &[self], |_, v| {
            let mut x = v[0];
            // `axis` is the position in the result being built.
            let mut axis = 0i64;
            for item in &items {
                match *item {
                    Ix::At(i) => x = x.select(axis, i),
                    Ix::Range { start, stop, step } => {
                        x = x.slice(axis, start, stop, step);
                        axis += 1;
                    }
                    Ix::Full => axis += 1,
                    Ix::NewAxis => {
                        x = x.unsqueeze(axis);
                        axis += 1;
                    }
                    Ix::Ellipsis => unreachable!("expanded above"),
                }
            }
            x
        })
    }

    /// The element at `index` (one integer per axis, negative from the end) as f64:
    /// PyTorch's `x[0, 0, 0].item()`.
    #[track_caller]
    pub fn at(&self, index: &[i64]) -> Result<f64, TensorOpError> {
        let loc = Location::caller();
        if index.len() != self.shape().len() {
            return Err(TensorOpError::invalid(
                "at",
                loc,
                format!(
                    "{} indices for a tensor of rank {}",
                    index.len(),
                    self.shape().len()
                ),
            ));
        }
        let t = eval1("at", loc, &[self], |_, v| {
            index.iter().fold(v[0], |x, &i| x.select(0, i))
        })?;
        Ok(t.item().unwrap_or(f64::NAN))
    }

    /// `x.masked_fill(mask, value)` = PyTorch's `x[mask] = value`: `value` where the
    /// bool `mask` (broadcast to `x`) holds.
    #[track_caller]
    pub fn masked_fill<'a>(&self, mask: &Tensor, value: impl Into<Arg<'a>>) -> R {
        let value = value.into();
        let mut inputs = vec![self, mask];
        inputs.extend(value.tensors());
        let loc = Location::caller();
        check_mask("masked_fill", loc, mask)?;
        let out = eval1("masked_fill", loc, &inputs, |_, v| {
            let x = v[0];
            // The value takes x's dtype, as an assignment into x does.
            match value {
                Arg::Tensor(_) => v[1].where_(v[2].cast(x.dtype()), x),
                other => v[1].where_(other.operand(&[]), x).cast(x.dtype()),
            }
        })?;
        if out.shape() != self.shape() {
            return Err(TensorOpError::invalid(
                "masked_fill",
                loc,
                format!(
                    "the mask's shape {:?} does not broadcast to the tensor's shape {:?}",
                    mask.shape(),
                    self.shape()
                ),
            ));
        }
        Ok(out)
    }

    /// `torch.masked_select(x, mask)`: the elements where the bool `mask` (broadcast
    /// with `x`) holds, in row-major order, as a 1-D tensor.
    ///
    /// Host-only: the result's length depends on the mask's values, which no IR
    /// shape can express, so this has no compiled counterpart (inside a step, use
    /// [`Tensor::masked_fill`]'s graph form `where`, or a masked sum).
    #[track_caller]
    pub fn masked_select(&self, mask: &Tensor) -> R {
        let loc = Location::caller();
        check_mask("masked_select", loc, mask)?;
        // Broadcast both through the IR's rules, then pick on the host.
        let (x, m) = super::eval2("masked_select", loc, &[self, mask], |_, v| {
            match Shape::broadcast(&v[0].shape(), &v[1].shape()) {
                Some(s) => (v[0].broadcast_to(&s), v[1].broadcast_to(&s)),
                // Records the DSL's own not-broadcastable error.
                None => {
                    let bad = v[0].binary_op(BinaryOp::Eq, v[1]);
                    (bad, bad)
                }
            }
        })?;
        let Data::Bool(keep) = m.data() else {
            unreachable!("checked bool above")
        };
        let n = keep.iter().filter(|&&k| k).count();
        Ok(Tensor::new(&[n], keep_blocks(x.data(), keep, 1)).expect("n elements were kept"))
    }

    /// PyTorch's `x[mask]` with a bool mask shaped like `x`'s leading axes: the
    /// sub-tensors where the mask holds, stacked along a new first axis
    /// (`[count, rest...]`).
    ///
    /// Host-only, like [`Tensor::masked_select`]: the count depends on the data.
    #[track_caller]
    pub fn mask(&self, mask: &Tensor) -> R {
        let loc = Location::caller();
        check_mask("mask", loc, mask)?;
        let k = mask.shape().len();
        if k > self.shape().len() || mask.shape() != &self.shape()[..k] {
            return Err(TensorOpError::invalid(
                "mask",
                loc,
                format!(
                    "the mask's shape {:?} is not the leading axes of the tensor's shape {:?}",
                    mask.shape(),
                    self.shape()
                ),
            ));
        }
        let Data::Bool(keep) = mask.data() else {
            unreachable!("checked bool above")
        };
        let inner: usize = self.shape()[k..].iter().product();
        let n = keep.iter().filter(|&&b| b).count();
        let mut shape = vec![n];
        shape.extend_from_slice(&self.shape()[k..]);
        let data = keep_blocks(self.data(), keep, inner);
        Ok(Tensor::new(&shape, data).expect("count x inner elements were kept"))
    }

    /// `torch.nonzero(x)`: the indices of the non-zero (true) elements, `[count,
    /// rank]` i64, in row-major order. Host-only (data-dependent size).
    #[track_caller]
    pub fn nonzero(&self) -> R {
        let loc = Location::caller();
        let nz = self.ne(0)?;
        let Data::Bool(keep) = nz.data() else {
            return Err(TensorOpError::invalid(
                "nonzero",
                loc,
                "ne produced no bool",
            ));
        };
        let shape = self.shape();
        let mut out = Vec::new();
        let mut count = 0;
        for (flat, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            let mut rem = flat;
            let mut idx = vec![0i64; shape.len()];
            for a in (0..shape.len()).rev() {
                idx[a] = (rem % shape[a]) as i64;
                rem /= shape[a];
            }
            out.extend(idx);
            count += 1;
        }
        Ok(Tensor::new(&[count, shape.len()], Data::I64(out)).expect("count x rank indices"))
    }
}

/// The blocks of `inner` consecutive elements of `data` whose `keep` flag is set, in
/// order (`x[mask]` keeps rows; `masked_select` keeps single elements).
fn keep_blocks(data: &Data, keep: &[bool], inner: usize) -> Data {
    if inner == 0 {
        // Zero-size blocks: nothing to keep whatever the flags (`chunks(0)` panics).
        return Data::filled(aotgrad_ir::Scalar::F64(0.0).cast(data.dtype()), 0);
    }
    same_variant!(data, d => d
        .chunks(inner)
        .zip(keep)
        .filter(|(_, k)| **k)
        .flat_map(|(c, _)| c.iter().copied())
        .collect())
}

fn check_mask(op: &'static str, loc: super::Loc, mask: &Tensor) -> Result<(), TensorOpError> {
    if mask.dtype() != DType::Bool {
        return Err(TensorOpError::invalid(
            op,
            loc,
            format!("the mask must be a bool tensor, found {}", mask.dtype()),
        ));
    }
    Ok(())
}

//! Constants, ranges and in-graph random numbers.

use std::panic::Location;

use super::{GraphBuilder, Var};
use crate::{BuildErrorKind, ConstValue, DType, Data, Distribution, Op, Scalar, Shape, TensorType};

impl GraphBuilder {
    /// A 0-d constant.
    #[track_caller]
    pub fn scalar(&self, value: f64, dtype: DType) -> Var<'_> {
        self.full(value, dtype, Shape::scalar())
    }

    /// A constant filled with `value` (the shape may be symbolic).
    #[track_caller]
    pub fn full(&self, value: f64, dtype: DType, shape: Shape) -> Var<'_> {
        let ty = TensorType::new(dtype, shape);
        let value = ConstValue::Splat(Scalar::F64(value).cast(dtype));
        self.add(Location::caller(), "full", Op::Const { value, ty }, &[])
    }

    #[track_caller]
    pub fn zeros(&self, dtype: DType, shape: Shape) -> Var<'_> {
        self.full(0.0, dtype, shape)
    }

    #[track_caller]
    pub fn ones(&self, dtype: DType, shape: Shape) -> Var<'_> {
        self.full(1.0, dtype, shape)
    }

    /// A dense constant from row-major data (`torch.tensor`).
    #[track_caller]
    pub fn constant(&self, data: Data, dims: &[usize]) -> Var<'_> {
        let ty = TensorType::new(data.dtype(), Shape::known(dims));
        self.add(
            Location::caller(),
            "constant",
            Op::Const {
                value: ConstValue::Dense(data),
                ty,
            },
            &[],
        )
    }

    /// f32 data, the common case: `g.tensor_f32(&[1.0, 2.0, 3.0], &[3, 1])`.
    #[track_caller]
    pub fn tensor_f32(&self, data: &[f32], dims: &[usize]) -> Var<'_> {
        self.constant(Data::F32(data.to_vec()), dims)
    }

    /// `0, 1, ..., n-1` (`torch.arange(n)`).
    #[track_caller]
    pub fn arange(&self, n: impl Into<crate::Dim>, dtype: DType) -> Var<'_> {
        self.iota(Shape(vec![n.into()]), 0, dtype)
    }

    /// The index along `axis`, broadcast over `shape`.
    #[track_caller]
    pub fn iota(&self, shape: Shape, axis: usize, dtype: DType) -> Var<'_> {
        self.add(
            Location::caller(),
            "iota",
            Op::Iota { shape, axis, dtype },
            &[],
        )
    }

    /// Uniform `[0, 1)` numbers that are a pure function of `key` (an `i64[]` value,
    /// typically a state counter advanced every step) and the element index.
    #[track_caller]
    pub fn rand<'g>(&'g self, key: Var<'g>, dtype: DType, shape: Shape) -> Var<'g> {
        key.prim(
            Location::caller(),
            "rand",
            Op::Random {
                dist: Distribution::Uniform,
                shape,
                dtype,
            },
            &[],
        )
    }

    /// Standard normal numbers keyed like [`GraphBuilder::rand`].
    #[track_caller]
    pub fn randn<'g>(&'g self, key: Var<'g>, dtype: DType, shape: Shape) -> Var<'g> {
        key.prim(
            Location::caller(),
            "randn",
            Op::Random {
                dist: Distribution::Normal,
                shape,
                dtype,
            },
            &[],
        )
    }

    /// Bernoulli(p) as a bool tensor: `rand < p`.
    #[track_caller]
    pub fn bernoulli<'g>(&'g self, key: Var<'g>, p: f64, shape: Shape) -> Var<'g> {
        let loc = Location::caller();
        if !(0.0..=1.0).contains(&p) {
            return self.fail(
                loc,
                "bernoulli",
                BuildErrorKind::Usage(format!("probability {p} is not in [0, 1]")),
            );
        }
        self.rand(key, DType::F32, shape).lt(p)
    }
}

impl GraphBuilder {
    /// `torch.arange(start, end, step)`: `ceil((end - start) / step)` values
    /// `start + i * step`, computed in f64 and rounded to `dtype`.
    #[track_caller]
    pub fn arange_range(&self, start: f64, end: f64, step: f64, dtype: DType) -> Var<'_> {
        let loc = Location::caller();
        let bad = |why: String| self.fail(loc, "arange", BuildErrorKind::Usage(why));
        if !(start.is_finite() && end.is_finite() && step.is_finite()) || step == 0.0 {
            return bad(format!(
                "arange({start}, {end}, {step}) needs finite bounds and a non-zero step"
            ));
        }
        let n = ((end - start) / step).ceil();
        if n < 0.0 {
            return bad(format!(
                "arange({start}, {end}, {step}): the step's sign does not lead from start to end"
            ));
        }
        // Sizes past 2^53 are not integers in f64; the type check then bounds it.
        if n > 9.007_199_254_740_992e15 {
            return bad(format!("arange({start}, {end}, {step}) has {n} elements"));
        }
        let i = self.add(
            loc,
            "arange",
            Op::Iota {
                shape: Shape::known(&[n as usize]),
                axis: 0,
                dtype: DType::F64,
            },
            &[],
        );
        (i * step + start).cast(dtype)
    }

    /// `torch.linspace(start, end, steps)` with PyTorch's formula: `step = (end -
    /// start) / (steps - 1)` in the dtype, the first half `start + i * step`, the rest
    /// `end - (steps - 1 - i) * step`, so both ends are exact. Integer dtypes compute
    /// in f64 and round toward zero.
    #[track_caller]
    pub fn linspace(&self, start: f64, end: f64, steps: usize, dtype: DType) -> Var<'_> {
        let loc = Location::caller();
        let ct = if dtype.is_float() { dtype } else { DType::F64 };
        if steps == 1 {
            return self.full(start, dtype, Shape::known(&[1]));
        }
        let shape = Shape::known(&[steps]);
        let i = self.add(
            loc,
            "linspace",
            Op::Iota {
                shape: shape.clone(),
                axis: 0,
                dtype: ct,
            },
            &[],
        );
        let (s, e) = (self.scalar(start, ct), self.scalar(end, ct));
        let step = (e - s) / self.scalar((steps - 1) as f64, ct);
        let lo = i * step + s;
        let hi = e - (self.scalar((steps - 1) as f64, ct) - i) * step;
        let first_half = i.lt((steps / 2) as f64);
        first_half.where_(lo, hi).cast(dtype)
    }

    /// `torch.eye(n, m)`: ones where row == column.
    #[track_caller]
    pub fn eye(&self, n: usize, m: usize, dtype: DType) -> Var<'_> {
        let loc = Location::caller();
        let shape = Shape::known(&[n, m]);
        let iota = |axis| {
            self.add(
                loc,
                "eye",
                Op::Iota {
                    shape: shape.clone(),
                    axis,
                    dtype: DType::I64,
                },
                &[],
            )
        };
        iota(0).equal(iota(1)).cast(dtype)
    }

    /// Integers uniform in `[low, high)` keyed like [`GraphBuilder::rand`]
    /// (`torch.randint`), i64: `low + floor(u * (high - low))` from an f64 uniform.
    #[track_caller]
    pub fn randint<'g>(&'g self, key: Var<'g>, low: i64, high: i64, shape: Shape) -> Var<'g> {
        let loc = Location::caller();
        if low >= high {
            return self.fail(
                loc,
                "randint",
                BuildErrorKind::Usage(format!("randint needs low < high, got [{low}, {high})")),
            );
        }
        let span = (high as f64) - (low as f64);
        let u = key.prim(
            loc,
            "randint",
            Op::Random {
                dist: Distribution::Uniform,
                shape,
                dtype: DType::F64,
            },
            &[],
        );
        // `u * span` can round up to `span` itself for spans past 2^53: clamp.
        ((u * span).floor().minimum(span - 1.0) + low as f64).cast(DType::I64)
    }

    /// A random permutation of `0..n` keyed like [`GraphBuilder::rand`]
    /// (`torch.randperm`): the positions of `n` f64 uniforms in sorted order.
    #[track_caller]
    pub fn randperm<'g>(&'g self, key: Var<'g>, n: usize) -> Var<'g> {
        let loc = Location::caller();
        let u = key.prim(
            loc,
            "randperm",
            Op::Random {
                dist: Distribution::Uniform,
                shape: Shape::known(&[n]),
                dtype: DType::F64,
            },
            &[],
        );
        u.prim(
            loc,
            "randperm",
            Op::TopK {
                axis: 0,
                k: n,
                largest: false,
            },
            &[],
        )
    }
}

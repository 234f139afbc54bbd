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

//! Tensor creation beyond `Tensor::new`/`zeros`/`full`: ranges, identity matrices and
//! random tensors, each the IR's definition (so a host `rand` with key `k` is the
//! compiled `rand` with key `k`, bit for bit).
//!
//! Random tensors come from aotgrad's counter-based generator, keyed by a seed. They
//! have PyTorch's distributions but not its values: no two generators share streams,
//! and a seed here names an aotgrad stream.

use std::panic::Location;

use aotgrad_ir::{DType, Data, Shape};

use super::{TensorOpError, eval1};
use crate::Tensor;

type R = Result<Tensor, TensorOpError>;

impl Tensor {
    /// `torch.arange(start, end, step)`: `ceil((end - start) / step)` values
    /// `start + i * step`, computed in f64 and rounded to `dtype` (PyTorch's CPU
    /// kernel accumulates floats in double too).
    #[track_caller]
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> R {
        eval1("arange", Location::caller(), &[], |g, _| {
            g.arange_range(start, end, step, dtype)
        })
    }

    /// `torch.linspace(start, end, steps)`, with PyTorch's two-sided formula (the first
    /// half counts up from `start`, the second down from `end`, so both ends are exact).
    #[track_caller]
    pub fn linspace(start: f64, end: f64, steps: usize, dtype: DType) -> R {
        eval1("linspace", Location::caller(), &[], |g, _| {
            g.linspace(start, end, steps, dtype)
        })
    }

    /// `torch.eye(n, m)`: ones on the diagonal.
    #[track_caller]
    pub fn eye(n: usize, m: usize, dtype: DType) -> R {
        eval1("eye", Location::caller(), &[], |g, _| g.eye(n, m, dtype))
    }

    /// Uniform `[0, 1)` numbers from the stream named `seed` (`torch.rand`).
    #[track_caller]
    pub fn rand(seed: i64, shape: &[usize], dtype: DType) -> R {
        eval1("rand", Location::caller(), &[], |g, _| {
            let key = g.constant(Data::I64(vec![seed]), &[]);
            g.rand(key, dtype, Shape::known(shape))
        })
    }

    /// Standard normal numbers from the stream named `seed` (`torch.randn`).
    #[track_caller]
    pub fn randn(seed: i64, shape: &[usize], dtype: DType) -> R {
        eval1("randn", Location::caller(), &[], |g, _| {
            let key = g.constant(Data::I64(vec![seed]), &[]);
            g.randn(key, dtype, Shape::known(shape))
        })
    }

    /// Integers uniform in `[low, high)` (`torch.randint`), i64.
    #[track_caller]
    pub fn randint(seed: i64, low: i64, high: i64, shape: &[usize]) -> R {
        eval1("randint", Location::caller(), &[], |g, _| {
            let key = g.constant(Data::I64(vec![seed]), &[]);
            g.randint(key, low, high, Shape::known(shape))
        })
    }

    /// A random permutation of `0..n` (`torch.randperm`), i64.
    #[track_caller]
    pub fn randperm(seed: i64, n: usize) -> R {
        eval1("randperm", Location::caller(), &[], |g, _| {
            let key = g.constant(Data::I64(vec![seed]), &[]);
            g.randperm(key, n)
        })
    }

    /// `torch.empty`: host tensors are never uninitialised memory, so this is zeros
    /// (PyTorch's values are whatever the allocator held).
    pub fn empty(dtype: DType, shape: &[usize]) -> Tensor {
        Tensor::zeros(dtype, shape)
    }

    pub fn ones(dtype: DType, shape: &[usize]) -> Tensor {
        Tensor::full(aotgrad_ir::Scalar::F64(1.0).cast(dtype), shape)
    }

    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.dtype(), self.shape())
    }

    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(self.dtype(), self.shape())
    }

    /// `torch.full_like(x, value)`: `value` rounded to `x`'s dtype.
    pub fn full_like(&self, value: f64) -> Tensor {
        Tensor::full(
            aotgrad_ir::Scalar::F64(value).cast(self.dtype()),
            self.shape(),
        )
    }

    /// `torch.rand_like(x)` from the stream named `seed` (float dtypes).
    #[track_caller]
    pub fn rand_like(&self, seed: i64) -> R {
        Tensor::rand(seed, self.shape(), super::float_dtype(self.dtype()))
    }

    #[track_caller]
    pub fn randn_like(&self, seed: i64) -> R {
        Tensor::randn(seed, self.shape(), super::float_dtype(self.dtype()))
    }
}

//! Views, layout changes, joins and splits of host tensors. Host tensors are always
//! dense and row-major, so `contiguous` is a copy and a "view" is a reshaped copy;
//! the values are what PyTorch's views show.

use std::panic::Location;

use super::{TensorOpError, eval, eval1};
use crate::Tensor;

type R = Result<Tensor, TensorOpError>;

impl Tensor {
    /// `x.view(dims)` / `x.reshape(dims)` with PyTorch's `-1` (inferred from the
    /// element count).
    #[track_caller]
    pub fn view(&self, dims: &[i64]) -> R {
        eval1("view", Location::caller(), &[self], |_, v| v[0].view(dims))
    }

    /// `x.flatten(start, end)` (inclusive, negative counts from the end).
    #[track_caller]
    pub fn flatten(&self, start: i64, end: i64) -> R {
        eval1("flatten", Location::caller(), &[self], |_, v| {
            v[0].flatten(start, end)
        })
    }

    #[track_caller]
    pub fn unsqueeze(&self, dim: i64) -> R {
        eval1("unsqueeze", Location::caller(), &[self], |_, v| {
            v[0].unsqueeze(dim)
        })
    }

    /// Removes `dim` if it has size 1 (unchanged otherwise, as PyTorch).
    #[track_caller]
    pub fn squeeze(&self, dim: i64) -> R {
        eval1("squeeze", Location::caller(), &[self], |_, v| {
            v[0].squeeze(dim)
        })
    }

    /// Removes every size-1 axis (`x.squeeze()`).
    #[track_caller]
    pub fn squeeze_all(&self) -> R {
        eval1("squeeze", Location::caller(), &[self], |_, v| {
            v[0].squeeze_all()
        })
    }

    /// `x.expand(sizes)`: size-1 axes (and new leading ones) repeat; `-1` keeps a dim.
    #[track_caller]
    pub fn expand(&self, sizes: &[i64]) -> R {
        eval1("expand", Location::caller(), &[self], |_, v| {
            v[0].expand(sizes)
        })
    }

    /// `x.repeat(reps)`: tiles the tensor `reps[i]` times along axis `i` (leading reps
    /// beyond the rank add axes).
    #[track_caller]
    pub fn repeat(&self, reps: &[usize]) -> R {
        eval1("repeat", Location::caller(), &[self], |_, v| {
            v[0].repeat(reps)
        })
    }

    /// `x.t()`: the transpose of a matrix (vectors and scalars unchanged).
    #[track_caller]
    pub fn t(&self) -> R {
        eval1("t", Location::caller(), &[self], |_, v| v[0].t())
    }

    #[track_caller]
    pub fn transpose(&self, a: i64, b: i64) -> R {
        eval1("transpose", Location::caller(), &[self], |_, v| {
            v[0].transpose(a, b)
        })
    }

    #[track_caller]
    pub fn permute(&self, perm: &[i64]) -> R {
        eval1("permute", Location::caller(), &[self], |_, v| {
            v[0].permute(perm)
        })
    }

    /// Reverses the order along each of `dims` (`torch.flip`).
    #[track_caller]
    pub fn flip(&self, dims: &[i64]) -> R {
        eval1("flip", Location::caller(), &[self], |_, v| v[0].flip(dims))
    }

    /// A dense copy: host tensors are always contiguous, so this only copies
    /// (PyTorch's `transpose(1, 3).contiguous()` has the same values).
    pub fn contiguous(&self) -> Tensor {
        self.clone()
    }

    /// `torch.cat(tensors, dim)` (dtypes promote).
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], dim: i64) -> R {
        eval1("cat", Location::caller(), tensors, |g, v| g.cat(v, dim))
    }

    /// `torch.stack(tensors, dim)`: along a new axis.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], dim: i64) -> R {
        eval1("stack", Location::caller(), tensors, |g, v| g.stack(v, dim))
    }

    /// `x.split(size, dim)`: pieces of `size` (the last may be shorter).
    #[track_caller]
    pub fn split(&self, size: usize, dim: i64) -> Result<Vec<Tensor>, TensorOpError> {
        eval("split", Location::caller(), &[self], |_, v| {
            v[0].split(size, dim)
        })
    }

    /// `x.split([s0, s1, ...], dim)`: pieces of the given sizes, which must add up to
    /// the axis length.
    #[track_caller]
    pub fn split_sizes(&self, sizes: &[usize], dim: i64) -> Result<Vec<Tensor>, TensorOpError> {
        eval("split", Location::caller(), &[self], |_, v| {
            v[0].split_sizes(sizes, dim)
        })
    }

    /// `x.chunk(n, dim)`: `n` pieces of `ceil(len / n)` (fewer when they run out).
    #[track_caller]
    pub fn chunk(&self, chunks: usize, dim: i64) -> Result<Vec<Tensor>, TensorOpError> {
        eval("chunk", Location::caller(), &[self], |_, v| {
            v[0].chunk(chunks, dim)
        })
    }

    /// `x.narrow(dim, start, length)`.
    #[track_caller]
    pub fn narrow(&self, dim: i64, start: i64, length: i64) -> R {
        eval1("narrow", Location::caller(), &[self], |_, v| {
            v[0].narrow(dim, start, length)
        })
    }

    /// `x.select(dim, index)`: one index, the axis removed (negative counts from the
    /// end).
    #[track_caller]
    pub fn select(&self, dim: i64, index: i64) -> R {
        eval1("select", Location::caller(), &[self], |_, v| {
            v[0].select(dim, index)
        })
    }

    /// `x.index_select(dim, index)` with a 1-D integer index (rows may repeat).
    #[track_caller]
    pub fn index_select(&self, dim: i64, index: &Tensor) -> R {
        eval1(
            "index_select",
            Location::caller(),
            &[self, index],
            |_, v| v[0].index_select(dim, v[1]),
        )
    }

    /// `torch.gather(x, dim, index)`.
    #[track_caller]
    pub fn gather(&self, dim: i64, index: &Tensor) -> R {
        eval1("gather", Location::caller(), &[self, index], |_, v| {
            v[0].gather(dim, v[1])
        })
    }

    /// `torch.take(x, index)`: indexes the flattened tensor; the result has the
    /// index's shape.
    #[track_caller]
    pub fn take(&self, index: &Tensor) -> R {
        let dims: Vec<i64> = index.shape().iter().map(|&d| d as i64).collect();
        eval1("take", Location::caller(), &[self, index], |_, v| {
            v[0].view(&[-1])
                .index_select(0, v[1].view(&[-1]))
                .view(&dims)
        })
    }
}

//! Size limits, and the checked arithmetic every size goes through.
//!
//! Dims come from users (the DSL, IR text, `.npy` headers, IDX files), so a product of
//! dims, or a dim plus padding, can exceed `usize`. A wrapped size is the worst kind of
//! bug here: a buffer sized by the wrapped number and a loop bounded by the true one is
//! an out-of-bounds access in generated code. So sizes are computed with checked
//! arithmetic, and every tensor is bounded by [`MAX_TENSOR_BYTES`]: a type whose known
//! part already exceeds it is refused when the node is built, and a symbolic type is
//! checked again when its symbols are bound (interpreter, CPU and GPU executors), before
//! anything is allocated.
//!
//! Why a bound at all, and why 1 TiB: no single tensor of a training step on one host
//! comes near it, and below it every element count, byte count and element offset fits
//! an `i64` with room to spare (the JIT's address arithmetic is 64-bit), so the rest of
//! the compiler can compute offsets without overflow once a program's types are checked.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::{DType, Shape, TensorType};

/// The largest tensor, in bytes, that a graph may declare or a run may bind: 1 TiB.
pub const MAX_TENSOR_BYTES: u64 = 1 << 40;

/// The product of `dims`, or `None` when it does not fit a `usize`.
pub fn checked_numel(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// The byte size of a tensor of `dtype` over `dims`, exact (saturating only past
/// `u128`, far beyond any limit).
pub fn tensor_bytes(dtype: DType, dims: &[usize]) -> u128 {
    dims.iter().fold(dtype.size_bytes() as u128, |n, &d| {
        n.saturating_mul(d as u128)
    })
}

/// [`tensor_bytes`] over the non-zero dims only: what the limit bounds. An empty tensor
/// holds no bytes, but its row-major strides are products of its other dims, so those
/// must stay bounded too (`u8[0, 2^62, 8]` would overflow its first stride).
fn span_bytes(dtype: DType, dims: impl Iterator<Item = usize>) -> u128 {
    dims.filter(|&d| d != 0)
        .fold(dtype.size_bytes() as u128, |n, d| {
            n.saturating_mul(d as u128)
        })
}

/// A tensor too large to exist: its dtype, its (bound) shape and byte size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    pub dtype: DType,
    pub shape: Shape,
    /// The exact byte size (`u128::MAX` when even that overflows).
    pub bytes: u128,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{} needs ", self.dtype, self.shape)?;
        if self.bytes == u128::MAX {
            f.write_str("more than 2^128 bytes")?;
        } else {
            write!(f, "{} bytes", self.bytes)?;
        }
        write!(
            f,
            ", more than the {} bytes (1 TiB) a tensor may hold (aotgrad_ir::MAX_TENSOR_BYTES)",
            MAX_TENSOR_BYTES
        )
    }
}

/// Checks a concrete tensor size against [`MAX_TENSOR_BYTES`]; its element count.
pub fn check_size(dtype: DType, dims: &[usize]) -> Result<usize, TooLarge> {
    let bytes = tensor_bytes(dtype, dims);
    if span_bytes(dtype, dims.iter().copied()) > MAX_TENSOR_BYTES as u128 {
        return Err(TooLarge {
            dtype,
            shape: Shape::known(dims),
            bytes,
        });
    }
    // Within the limit, the count fits a usize on every 64-bit host.
    checked_numel(dims).ok_or(TooLarge {
        dtype,
        shape: Shape::known(dims),
        bytes,
    })
}

/// Checks the known part of a possibly symbolic shape (each symbol counted as 1, the
/// least it can bind to without the tensor being empty).
pub fn check_shape(dtype: DType, shape: &Shape) -> Result<(), TooLarge> {
    let bytes = span_bytes(dtype, shape.dims().iter().filter_map(|d| d.known()));
    if bytes > MAX_TENSOR_BYTES as u128 {
        return Err(TooLarge {
            dtype,
            shape: shape.clone(),
            bytes,
        });
    }
    Ok(())
}

/// Binds the symbols of `ty` from `env` and checks the bound size: the concrete shape,
/// `Ok(None)` when a symbol is unbound, or why the bound tensor cannot exist. Every
/// executor binds a program's types through this before it allocates or runs anything.
pub fn bind_checked(
    ty: &TensorType,
    env: &BTreeMap<Arc<str>, usize>,
) -> Result<Option<Vec<usize>>, TooLarge> {
    let Some(dims) = ty.shape.bind(env) else {
        return Ok(None);
    };
    check_size(ty.dtype, &dims)?;
    Ok(Some(dims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape;

    #[test]
    fn products_are_checked() {
        assert_eq!(checked_numel(&[]), Some(1));
        assert_eq!(checked_numel(&[3, 0, usize::MAX]), Some(0));
        assert_eq!(checked_numel(&[2305843009213693953, 8]), None);
        assert_eq!(checked_numel(&[1 << 32, 1 << 31]), Some(1 << 63));
    }

    #[test]
    fn the_limit_is_exact_and_names_the_size() {
        // 2^38 f32 elements are exactly 1 TiB.
        assert_eq!(check_size(DType::F32, &[1 << 19, 1 << 19]), Ok(1 << 38));
        let e = check_size(DType::F32, &[(1 << 38) + 1]).unwrap_err();
        assert_eq!(e.bytes, (1 << 40) + 4);
        let e = check_size(DType::F32, &[99999999999, 99999999999]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f32[99999999999,99999999999] needs 39999999999200000000004 bytes, more than \
             the 1099511627776 bytes (1 TiB) a tensor may hold (aotgrad_ir::MAX_TENSOR_BYTES)"
        );
        let e = check_size(DType::F64, &[usize::MAX; 8]).unwrap_err();
        assert!(e.to_string().contains("more than 2^128 bytes"), "{e}");
        assert_eq!(check_size(DType::U8, &[1 << 40, 0]), Ok(0));
        // Empty, but its first stride would be 2^65.
        assert!(check_size(DType::U8, &[0, 1 << 62, 8]).is_err());
    }

    #[test]
    fn symbols_count_as_one() {
        assert!(check_shape(DType::F32, &shape!["N", 784]).is_ok());
        assert!(check_shape(DType::F32, &shape!["N", 1usize << 38]).is_ok());
        assert!(check_shape(DType::F32, &shape!["N", (1usize << 38) + 1]).is_err());
        assert!(check_shape(DType::F32, &shape!["N", usize::MAX, 0]).is_err());
        assert!(check_shape(DType::F32, &shape!["N", 1usize << 20, 0]).is_ok());
    }

    #[test]
    fn binding_checks_the_bound_size() {
        let ty = TensorType::new(DType::F32, shape!["N", 1usize << 30]);
        let env = |n: usize| [(Arc::from("N"), n)].into_iter().collect();
        assert_eq!(bind_checked(&ty, &env(256)), Ok(Some(vec![256, 1 << 30])));
        assert!(bind_checked(&ty, &env(257)).is_err());
        // The product wraps in usize arithmetic (2^64 + 2^30); the check does not.
        assert!(bind_checked(&ty, &env(1 << 34)).is_err());
        assert_eq!(bind_checked(&ty, &BTreeMap::new()), Ok(None));
    }
}

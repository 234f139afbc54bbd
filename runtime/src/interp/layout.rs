//! Row-major index arithmetic for the interpreter.

use aotgrad_ir::{Data, Scalar};

pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(multi_index, flat_index)` for every element of `shape` in row-major order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize], usize)) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..n {
        f(&idx, flat);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// `out[i] = data[src[i]]`.
pub(crate) fn take(data: &Data, src: &[usize]) -> Data {
    fn t<T: Copy>(v: &[T], src: &[usize]) -> Vec<T> {
        src.iter().map(|&i| v[i]).collect()
    }
    match data {
        Data::Bool(v) => Data::Bool(t(v, src)),
        Data::U8(v) => Data::U8(t(v, src)),
        Data::I32(v) => Data::I32(t(v, src)),
        Data::I64(v) => Data::I64(t(v, src)),
        Data::F32(v) => Data::F32(t(v, src)),
        Data::F64(v) => Data::F64(t(v, src)),
    }
}

/// `out[i] = data[src[i]]` or `fill` where `src[i]` is `None`.
pub(crate) fn take_or(data: &Data, src: &[Option<usize>], fill: Scalar) -> Data {
    // `fill` has the data's dtype (verified), so from_scalars' cast is exact.
    Data::from_scalars(
        data.dtype(),
        src.iter().map(|s| s.map_or(fill, |i| data.get(i))),
    )
}

//! Tensor types (dtype + shape) and dense literal payloads.

use std::fmt;

use crate::{DType, Scalar, Shape};

/// The static type of a graph value: element type and (possibly symbolic) shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn scalar(dtype: DType) -> TensorType {
        TensorType::new(dtype, Shape::scalar())
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

/// `f32[N,784]`, `i64[]`: the spelling of the text format.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// Dense, row-major element storage of one dtype.
///
/// Shared by constant literals in the IR and by the runtime's host tensors. Equality
/// compares float bit patterns so that NaN payloads round-trip.
#[derive(Debug, Clone)]
pub enum Data {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`Data`] variant, binding it to `$v`.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::Bool($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
        }
    };
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.dtype() == other.dtype()
            && self.len() == other.len()
            && (0..self.len()).all(|i| self.get(i) == other.get(i))
    }
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::Bool(_) => DType::Bool,
            Data::U8(_) => DType::U8,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::F32(_) => DType::F32,
            Data::F64(_) => DType::F64,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a typed scalar. Panics if out of range (internal use only).
    pub fn get(&self, i: usize) -> Scalar {
        match self {
            Data::Bool(v) => Scalar::Bool(v[i]),
            Data::U8(v) => Scalar::U8(v[i]),
            Data::I32(v) => Scalar::I32(v[i]),
            Data::I64(v) => Scalar::I64(v[i]),
            Data::F32(v) => Scalar::F32(v[i]),
            Data::F64(v) => Scalar::F64(v[i]),
        }
    }

    /// `n` copies of one scalar.
    pub fn filled(value: Scalar, n: usize) -> Data {
        match value {
            Scalar::Bool(x) => Data::Bool(vec![x; n]),
            Scalar::U8(x) => Data::U8(vec![x; n]),
            Scalar::I32(x) => Data::I32(vec![x; n]),
            Scalar::I64(x) => Data::I64(vec![x; n]),
            Scalar::F32(x) => Data::F32(vec![x; n]),
            Scalar::F64(x) => Data::F64(vec![x; n]),
        }
    }

    /// Builds storage of `dtype` from scalars, casting each one.
    pub fn from_scalars(dtype: DType, values: impl IntoIterator<Item = Scalar>) -> Data {
        let it = values.into_iter().map(|s| s.cast(dtype));
        match dtype {
            DType::Bool => Data::Bool(it.map(|s| matches!(s, Scalar::Bool(true))).collect()),
            DType::U8 => Data::U8(it.map(|s| s.as_f64() as u8).collect()),
            DType::I32 => Data::I32(it.map(|s| s.as_f64() as i32).collect()),
            DType::I64 => Data::I64(
                it.map(|s| match s {
                    Scalar::I64(v) => v,
                    other => other.as_f64() as i64,
                })
                .collect(),
            ),
            DType::F32 => Data::F32(it.map(|s| s.as_f64() as f32).collect()),
            DType::F64 => Data::F64(it.map(|s| s.as_f64()).collect()),
        }
    }

    /// Element-wise conversion with cast semantics (float to int truncates toward zero,
    /// saturating; anything nonzero to bool is true).
    pub fn cast(&self, dtype: DType) -> Data {
        if self.dtype() == dtype {
            return self.clone();
        }
        Data::from_scalars(dtype, (0..self.len()).map(|i| self.get(i)))
    }

    /// All elements widened to f64 (for comparisons and printing).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i).as_f64()).collect()
    }
}

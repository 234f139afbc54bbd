//! Host tensors: a dtype, a concrete shape and dense row-major data.

use std::fmt;

use aotgrad_ir::{DType, Data, Scalar, TensorType};

/// A dense host tensor. Its data length always equals the product of its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

/// Bad tensor construction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} needs {need} elements but {got} were given")]
    SizeMismatch {
        shape: Vec<usize>,
        need: usize,
        got: usize,
    },
    #[error("expected a {expected} tensor, found {found}")]
    DType { expected: DType, found: DType },
    #[error("shape {shape:?} has more elements than a usize can count")]
    TooLarge { shape: Vec<usize> },
}

impl Tensor {
    /// A tensor of `shape` over `data`, checked for size.
    pub fn new(shape: &[usize], data: Data) -> Result<Tensor, TensorError> {
        // Checked: a product that wraps must not match a short buffer.
        let need =
            aotgrad_ir::limits::checked_numel(shape).ok_or_else(|| TensorError::TooLarge {
                shape: shape.to_vec(),
            })?;
        if need != data.len() {
            return Err(TensorError::SizeMismatch {
                shape: shape.to_vec(),
                need,
                got: data.len(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn from_f32(values: &[f32], shape: &[usize]) -> Result<Tensor, TensorError> {
        Tensor::new(shape, Data::F32(values.to_vec()))
    }

    pub fn from_f64(values: &[f64], shape: &[usize]) -> Result<Tensor, TensorError> {
        Tensor::new(shape, Data::F64(values.to_vec()))
    }

    pub fn from_i64(values: &[i64], shape: &[usize]) -> Result<Tensor, TensorError> {
        Tensor::new(shape, Data::I64(values.to_vec()))
    }

    /// A 0-d tensor.
    pub fn scalar(value: Scalar) -> Tensor {
        Tensor {
            shape: vec![],
            data: Data::filled(value, 1),
        }
    }

    pub fn scalar_f32(value: f32) -> Tensor {
        Tensor::scalar(Scalar::F32(value))
    }

    /// `value` repeated over `shape`.
    ///
    /// # Panics
    /// When the element count overflows `usize` (as `vec!` does for a too-large
    /// capacity): callers size it from a checked shape.
    pub fn full(value: Scalar, shape: &[usize]) -> Tensor {
        let n = aotgrad_ir::limits::checked_numel(shape)
            .unwrap_or_else(|| panic!("Tensor::full: shape {shape:?} overflows usize"));
        Tensor {
            shape: shape.to_vec(),
            data: Data::filled(value, n),
        }
    }

    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        Tensor::full(Scalar::zero(dtype), shape)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    /// Address of the first element (bool as one byte per element), for executors
    /// that hand tensors to generated code.
    pub fn data_ptr(&self) -> *const u8 {
        match &self.data {
            Data::Bool(v) => v.as_ptr() as *const u8,
            Data::U8(v) => v.as_ptr(),
            Data::I32(v) => v.as_ptr() as *const u8,
            Data::I64(v) => v.as_ptr() as *const u8,
            Data::F32(v) => v.as_ptr() as *const u8,
            Data::F64(v) => v.as_ptr() as *const u8,
        }
    }

    /// Mutable [`Tensor::data_ptr`]. Writers must keep bool elements 0 or 1.
    pub fn data_ptr_mut(&mut self) -> *mut u8 {
        match &mut self.data {
            Data::Bool(v) => v.as_mut_ptr() as *mut u8,
            Data::U8(v) => v.as_mut_ptr(),
            Data::I32(v) => v.as_mut_ptr() as *mut u8,
            Data::I64(v) => v.as_mut_ptr() as *mut u8,
            Data::F32(v) => v.as_mut_ptr() as *mut u8,
            Data::F64(v) => v.as_mut_ptr() as *mut u8,
        }
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The static type of this tensor.
    pub fn ty(&self) -> TensorType {
        TensorType::new(self.dtype(), aotgrad_ir::Shape::known(&self.shape))
    }

    /// Same data, new shape of the same size.
    pub fn reshape(self, shape: &[usize]) -> Result<Tensor, TensorError> {
        Tensor::new(shape, self.data)
    }

    pub fn as_f32(&self) -> Result<&[f32], TensorError> {
        match &self.data {
            Data::F32(v) => Ok(v),
            d => Err(TensorError::DType {
                expected: DType::F32,
                found: d.dtype(),
            }),
        }
    }

    pub fn as_f64(&self) -> Result<&[f64], TensorError> {
        match &self.data {
            Data::F64(v) => Ok(v),
            d => Err(TensorError::DType {
                expected: DType::F64,
                found: d.dtype(),
            }),
        }
    }

    pub fn as_i64(&self) -> Result<&[i64], TensorError> {
        match &self.data {
            Data::I64(v) => Ok(v),
            d => Err(TensorError::DType {
                expected: DType::I64,
                found: d.dtype(),
            }),
        }
    }

    /// All elements widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.to_f64_vec()
    }

    /// The single element of a one-element tensor, widened to f64.
    pub fn item(&self) -> Option<f64> {
        (self.len() == 1).then(|| self.data.get(0).as_f64())
    }

    /// Element-wise conversion.
    pub fn cast(&self, dtype: DType) -> Tensor {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.cast(dtype),
        }
    }

    /// `|a - b| <= atol + rtol * |b|` everywhere (NaN equals NaN), same shape required.
    pub fn allclose(&self, expected: &Tensor, rtol: f64, atol: f64) -> bool {
        self.shape == expected.shape
            && self
                .to_f64_vec()
                .iter()
                .zip(expected.to_f64_vec())
                .all(|(&a, b)| {
                    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs()
                })
    }

    /// A tensor of `dtype` and `shape` from little-endian bytes (the inverse of
    /// [`Tensor::to_le_bytes`]).
    pub fn from_le_bytes(
        dtype: DType,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        let w = dtype.size_bytes();
        let need =
            aotgrad_ir::limits::checked_numel(shape).ok_or_else(|| TensorError::TooLarge {
                shape: shape.to_vec(),
            })?;
        if need.checked_mul(w) != Some(bytes.len()) {
            return Err(TensorError::SizeMismatch {
                shape: shape.to_vec(),
                need,
                got: bytes.len() / w.max(1),
            });
        }
        fn words<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
            b.chunks_exact(N)
                .map(|c| f(c.try_into().expect("exact chunks")))
                .collect()
        }
        let data = match dtype {
            DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DType::U8 => Data::U8(bytes.to_vec()),
            DType::I32 => Data::I32(words(bytes, i32::from_le_bytes)),
            DType::I64 => Data::I64(words(bytes, i64::from_le_bytes)),
            DType::F32 => Data::F32(words(bytes, f32::from_le_bytes)),
            DType::F64 => Data::F64(words(bytes, f64::from_le_bytes)),
        };
        Tensor::new(shape, data)
    }

    /// Bytes of the data in little-endian order (bool as 0/1 bytes).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match &self.data {
            Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
            Data::U8(v) => v.clone(),
            Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// `f32[2,3] [1.0, 2.0, ...]`, truncated after 16 elements.
impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [", self.ty())?;
        let n = self.len();
        for i in 0..n.min(16) {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", self.data.get(i))?;
        }
        if n > 16 {
            write!(f, ", ... ({n} elements)")?;
        }
        f.write_str("]")
    }
}

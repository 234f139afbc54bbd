//! Element types and PyTorch's type-promotion rules.

use std::fmt;

/// Element type of a tensor.
///
/// The set is PyTorch's training subset: two floats, two signed ints, bool and the
/// `u8` that image datasets arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    U8,
    I32,
    I64,
    F32,
    F64,
}

/// Coarse kind used by promotion: bool < integer < floating point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Category {
    Bool,
    Int,
    Float,
}

impl DType {
    pub const ALL: [DType; 6] = [
        DType::Bool,
        DType::U8,
        DType::I32,
        DType::I64,
        DType::F32,
        DType::F64,
    ];

    /// The spelling used by the text format and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "bool",
            DType::U8 => "u8",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bytes per element in a dense buffer (bool is stored as one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::Bool | DType::U8 => 1,
            DType::I32 | DType::F32 => 4,
            DType::I64 | DType::F64 => 8,
        }
    }

    pub fn category(self) -> Category {
        match self {
            DType::Bool => Category::Bool,
            DType::U8 | DType::I32 | DType::I64 => Category::Int,
            DType::F32 | DType::F64 => Category::Float,
        }
    }

    pub fn is_float(self) -> bool {
        self.category() == Category::Float
    }

    pub fn is_int(self) -> bool {
        self.category() == Category::Int
    }

    /// Promotion of two *tensor* operands, as `torch.result_type` does for tensors of
    /// equal standing: the higher category wins, within a category the wider type.
    /// `i64 tensor * f32 tensor -> f32`, `u8 + i32 -> i32`, `bool + u8 -> u8`.
    pub fn promote(a: DType, b: DType) -> DType {
        match a.category().cmp(&b.category()) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => a.max(b),
        }
    }

    /// Promotion of a tensor with a Rust literal (a "wrapped number" in PyTorch's terms):
    /// the literal only matters when it is of a higher category than the tensor, and then
    /// the result is that category's default type (f32 for floats, i64 for ints).
    /// So `f32 tensor * 0.01` stays f32 (the literal is rounded to f32) and
    /// `i64 tensor * 0.5` becomes f32.
    pub fn promote_with_literal(tensor: DType, literal: Category) -> DType {
        if literal <= tensor.category() {
            tensor
        } else {
            match literal {
                Category::Float => DType::F32,
                Category::Int => DType::I64,
                Category::Bool => DType::Bool,
            }
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One typed value: the payload of splat constants and of pad values.
///
/// Equality is bitwise for floats so that graphs holding NaN constants still compare
/// equal to themselves after a print/parse round trip.
#[derive(Debug, Clone, Copy)]
pub enum Scalar {
    Bool(bool),
    U8(u8),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        use Scalar::*;
        match (self, other) {
            (Bool(a), Bool(b)) => a == b,
            (U8(a), U8(b)) => a == b,
            (I32(a), I32(b)) => a == b,
            (I64(a), I64(b)) => a == b,
            (F32(a), F32(b)) => a.to_bits() == b.to_bits(),
            (F64(a), F64(b)) => a.to_bits() == b.to_bits(),
            _ => false,
        }
    }
}

impl Scalar {
    pub fn dtype(&self) -> DType {
        match self {
            Scalar::Bool(_) => DType::Bool,
            Scalar::U8(_) => DType::U8,
            Scalar::I32(_) => DType::I32,
            Scalar::I64(_) => DType::I64,
            Scalar::F32(_) => DType::F32,
            Scalar::F64(_) => DType::F64,
        }
    }

    /// The value widened to f64 (exact for every dtype except huge i64).
    pub fn as_f64(&self) -> f64 {
        match *self {
            Scalar::Bool(b) => b as u8 as f64,
            Scalar::U8(v) => v as f64,
            Scalar::I32(v) => v as f64,
            Scalar::I64(v) => v as f64,
            Scalar::F32(v) => v as f64,
            Scalar::F64(v) => v,
        }
    }

    /// Builds a scalar of `dtype` from an f64, rounding (floats) or truncating toward
    /// zero (ints) as a PyTorch cast does. This is how `f32_tensor * 0.01` gets an f32.
    pub fn from_f64(dtype: DType, v: f64) -> Scalar {
        match dtype {
            DType::Bool => Scalar::Bool(v != 0.0),
            DType::U8 => Scalar::U8(v as u8),
            DType::I32 => Scalar::I32(v as i32),
            DType::I64 => Scalar::I64(v as i64),
            DType::F32 => Scalar::F32(v as f32),
            DType::F64 => Scalar::F64(v),
        }
    }

    /// Like [`Scalar::from_f64`] but from an integer, exact for i64.
    pub fn from_i64(dtype: DType, v: i64) -> Scalar {
        match dtype {
            DType::I64 => Scalar::I64(v),
            DType::I32 => Scalar::I32(v as i32),
            _ => Scalar::from_f64(dtype, v as f64),
        }
    }

    /// Converts to another dtype with cast semantics.
    pub fn cast(&self, dtype: DType) -> Scalar {
        match *self {
            Scalar::I64(v) => Scalar::from_i64(dtype, v),
            Scalar::I32(v) => Scalar::from_i64(dtype, v as i64),
            Scalar::U8(v) => Scalar::from_i64(dtype, v as i64),
            Scalar::Bool(v) => Scalar::from_i64(dtype, v as i64),
            _ => Scalar::from_f64(dtype, self.as_f64()),
        }
    }

    pub fn zero(dtype: DType) -> Scalar {
        Scalar::from_i64(dtype, 0)
    }

    pub fn one(dtype: DType) -> Scalar {
        Scalar::from_i64(dtype, 1)
    }
}

/// Text form used by the IR printer: exact and re-parseable. Floats use Rust's shortest
/// round-trip representation; a NaN other than the canonical one is written with its
/// bits (`nan:0x7fc00001`), so every bit pattern survives print/parse.
impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(v) => write!(f, "{v}"),
            Scalar::U8(v) => write!(f, "{v}"),
            Scalar::I32(v) => write!(f, "{v}"),
            Scalar::I64(v) => write!(f, "{v}"),
            Scalar::F32(v) if v.is_nan() && v.to_bits() != f32::NAN.to_bits() => {
                write!(f, "nan:0x{:08x}", v.to_bits())
            }
            Scalar::F64(v) if v.is_nan() && v.to_bits() != f64::NAN.to_bits() => {
                write!(f, "nan:0x{:016x}", v.to_bits())
            }
            Scalar::F32(v) => fmt_float(f, *v as f64, v.is_nan(), &format!("{v:?}")),
            Scalar::F64(v) => fmt_float(f, *v, v.is_nan(), &format!("{v:?}")),
        }
    }
}

fn fmt_float(f: &mut fmt::Formatter<'_>, v: f64, nan: bool, debug: &str) -> fmt::Result {
    if nan {
        f.write_str("nan")
    } else if v.is_infinite() {
        f.write_str(if v > 0.0 { "inf" } else { "-inf" })
    } else {
        f.write_str(debug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_follows_pytorch() {
        assert_eq!(DType::promote(DType::I64, DType::F32), DType::F32);
        assert_eq!(DType::promote(DType::F32, DType::F64), DType::F64);
        assert_eq!(DType::promote(DType::U8, DType::I32), DType::I32);
        assert_eq!(DType::promote(DType::Bool, DType::U8), DType::U8);
        assert_eq!(DType::promote(DType::Bool, DType::Bool), DType::Bool);
        assert_eq!(
            DType::promote_with_literal(DType::F32, Category::Float),
            DType::F32
        );
        assert_eq!(
            DType::promote_with_literal(DType::I64, Category::Float),
            DType::F32
        );
        assert_eq!(
            DType::promote_with_literal(DType::U8, Category::Int),
            DType::U8
        );
        assert_eq!(
            DType::promote_with_literal(DType::Bool, Category::Int),
            DType::I64
        );
        assert_eq!(
            DType::promote_with_literal(DType::F64, Category::Float),
            DType::F64
        );
    }

    #[test]
    fn literal_is_rounded_to_tensor_dtype() {
        let s = Scalar::from_f64(DType::F32, 0.01);
        assert_eq!(s, Scalar::F32(0.01f32));
        assert_ne!(s.as_f64(), 0.01);
    }

    #[test]
    fn scalar_text_is_exact() {
        assert_eq!(Scalar::F32(0.1).to_string(), "0.1");
        assert_eq!(Scalar::F32(1.0).to_string(), "1.0");
        assert_eq!(Scalar::F64(f64::NEG_INFINITY).to_string(), "-inf");
        assert_eq!(Scalar::F32(f32::NAN).to_string(), "nan");
        assert_eq!(Scalar::I64(-3).to_string(), "-3");
        assert_eq!(Scalar::F32(f32::NAN), Scalar::F32(f32::NAN));
        assert_eq!(
            Scalar::F32(f32::from_bits(0xffc0_0001)).to_string(),
            "nan:0xffc00001"
        );
    }
}

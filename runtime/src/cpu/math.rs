//! The math functions JIT code calls for the op table's helper ops (`CpuCall::Helper`):
//! each is the interpreter's own scalar function ([`crate::interp::num::Float`]), so the
//! CPU backend's results are bitwise the interpreter's. Adding such an op means one
//! arm in each match below; an arm left at `None` for a helper op fails every JIT
//! compile with a message naming the op (and the tests that compile one).

use aotgrad_ir::{BinaryOp, DType, UnaryOp};

use crate::interp::num::Float;

/// `extern "C" fn(T) -> T` calling `Float::$f`, for f32 and f64.
macro_rules! unary_fns {
    ($f:ident) => {{
        extern "C" fn f32_(x: f32) -> f32 {
            Float::$f(x)
        }
        extern "C" fn f64_(x: f64) -> f64 {
            Float::$f(x)
        }
        (f32_ as *const u8, f64_ as *const u8)
    }};
}

/// The function computing `u` on `d` (f32 or f64).
///
/// # Panics
/// For an op the table does not compute by a helper: the code generator never imports
/// one, so reaching this is a table row without its function.
pub(crate) fn unary(u: UnaryOp, d: DType) -> *const u8 {
    let fns = match u {
        UnaryOp::Exp => Some(unary_fns!(exp)),
        UnaryOp::Log => Some(unary_fns!(ln)),
        UnaryOp::Sin => Some(unary_fns!(sin)),
        UnaryOp::Cos => Some(unary_fns!(cos)),
        UnaryOp::Tanh => Some(unary_fns!(tanh)),
        UnaryOp::Log1p => Some(unary_fns!(ln_1p)),
        UnaryOp::Expm1 => Some(unary_fns!(exp_m1)),
        UnaryOp::Erf => Some(unary_fns!(erf)),
        UnaryOp::Neg
        | UnaryOp::Abs
        | UnaryOp::Sign
        | UnaryOp::Sqrt
        | UnaryOp::Recip
        | UnaryOp::Floor
        | UnaryOp::Ceil
        | UnaryOp::Trunc
        | UnaryOp::Not
        | UnaryOp::StopGradient => None,
    };
    let (f32_, f64_) = fns.unwrap_or_else(|| panic!("no CPU helper function for `{}`", u.name()));
    if d == DType::F64 { f64_ } else { f32_ }
}

/// The function computing `b` on `d` (f32 or f64); panics as [`unary`].
pub(crate) fn binary(b: BinaryOp, d: DType) -> *const u8 {
    extern "C" fn pow_f32(x: f32, y: f32) -> f32 {
        Float::powf(x, y)
    }
    extern "C" fn pow_f64(x: f64, y: f64) -> f64 {
        Float::powf(x, y)
    }
    let fns = match b {
        BinaryOp::Pow => Some((pow_f32 as *const u8, pow_f64 as *const u8)),
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Maximum
        | BinaryOp::Minimum
        | BinaryOp::Lt
        | BinaryOp::Le
        | BinaryOp::Gt
        | BinaryOp::Ge
        | BinaryOp::Eq
        | BinaryOp::Ne
        | BinaryOp::And
        | BinaryOp::Or => None,
    };
    let (f32_, f64_) = fns.unwrap_or_else(|| panic!("no CPU helper function for `{}`", b.name()));
    if d == DType::F64 { f64_ } else { f32_ }
}

#[cfg(test)]
mod tests {
    /// Every helper the code generator may import has a function (the table and the
    /// matches above agree).
    #[test]
    fn every_helper_has_a_function() {
        assert!(
            super::super::abi::symbols()
                .iter()
                .all(|(_, p)| !p.is_null())
        );
    }
}

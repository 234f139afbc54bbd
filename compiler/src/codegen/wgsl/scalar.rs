//! Scalar semantics in WGSL: literals, reduction identities and combines, unary and
//! binary ops, casts (NaN tested on the bits: WGSL may assume NaN never occurs).

use super::*;

pub(super) fn float_literal(v: f32) -> String {
    let s = format!("{v:?}");
    // The decimal goes through WGSL's abstract (f64) floats: keep it only when that
    // still rounds to exactly `v`.
    if v.is_finite()
        && s.parse::<f64>()
            .is_ok_and(|d| (d as f32).to_bits() == v.to_bits())
    {
        format!("f32({s})")
    } else {
        format!("bitcast<f32>({:#010x}u)", v.to_bits())
    }
}

/// An integer scalar's exact value (floats truncate).
pub(super) fn int_value(s: Scalar) -> i64 {
    match s {
        Scalar::I64(v) => v,
        Scalar::I32(v) => v as i64,
        Scalar::U8(v) => v as i64,
        Scalar::Bool(v) => v as i64,
        Scalar::F32(_) | Scalar::F64(_) => s.as_f64() as i64,
    }
}

pub(super) fn identity(op: ReduceOp, t: DevType) -> String {
    match (op, t) {
        (ReduceOp::Sum, DevType::F32) => "0.0".into(),
        (ReduceOp::Sum, DevType::I32) => "0".into(),
        (ReduceOp::Sum, _) => "0u".into(),
        (ReduceOp::Prod, DevType::F32) => "1.0".into(),
        (ReduceOp::Prod, DevType::I32) => "1".into(),
        (ReduceOp::Prod, _) => "1u".into(),
        (ReduceOp::Max, DevType::F32) => float_literal(f32::NEG_INFINITY),
        (ReduceOp::Max, DevType::I32) => "(i32(-2147483647) - 1)".into(),
        (ReduceOp::Max, _) => "0u".into(),
        (ReduceOp::Min, DevType::F32) => float_literal(f32::INFINITY),
        (ReduceOp::Min, DevType::I32) => "i32(2147483647)".into(),
        (ReduceOp::Min, _) => "255u".into(),
    }
}

/// Folds `x` into the accumulator: the reduction's binary op on the device type.
pub(super) fn combine(op: ReduceOp, t: DevType, acc: &str, x: &str) -> String {
    let b = match op {
        ReduceOp::Sum => BinaryOp::Add,
        ReduceOp::Prod => BinaryOp::Mul,
        ReduceOp::Max => BinaryOp::Maximum,
        ReduceOp::Min => BinaryOp::Minimum,
    };
    binary(b, acc, x, t)
}

pub(super) fn unary(u: UnaryOp, a: &str, d: DType) -> String {
    let t = DevType::of(d);
    match (u, t) {
        (UnaryOp::Neg, DevType::U32) => format!("(0u - {a}) & 255u"),
        (UnaryOp::Neg, _) => format!("-{a}"),
        (UnaryOp::Abs, DevType::U32) => a.to_string(),
        (UnaryOp::Abs, _) => format!("abs({a})"),
        (UnaryOp::Sign, DevType::F32) => format!("sign_({a})"),
        (UnaryOp::Sign, DevType::I32) => format!("sign({a})"),
        (UnaryOp::Sign, _) => format!("min({a}, 1u)"),
        (UnaryOp::Exp, _) => format!("exp({a})"),
        (UnaryOp::Log, _) => format!("log({a})"),
        (UnaryOp::Sqrt, _) => format!("sqrt({a})"),
        (UnaryOp::Recip, _) => format!("1.0 / {a}"),
        (UnaryOp::Sin, _) => format!("sin({a})"),
        (UnaryOp::Cos, _) => format!("cos({a})"),
        (UnaryOp::Tanh, _) => format!("tanh_({a})"),
        (UnaryOp::Log1p, _) => format!("log1p_({a})"),
        (UnaryOp::Expm1, _) => format!("expm1_({a})"),
        (UnaryOp::Erf, _) => format!("erf_({a})"),
        (UnaryOp::Floor, DevType::F32) => format!("floor({a})"),
        (UnaryOp::Ceil, DevType::F32) => format!("ceil({a})"),
        (UnaryOp::Trunc, DevType::F32) => format!("trunc({a})"),
        (UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Trunc | UnaryOp::StopGradient, _) => {
            a.to_string()
        }
        (UnaryOp::Not, _) => format!("!{a}"),
    }
}

/// `x <op> y` for operands of device type `t` (comparisons yield bool).
pub(super) fn binary(b: BinaryOp, x: &str, y: &str, t: DevType) -> String {
    let cmp = |sym: &str| {
        if t == DevType::Bool && !matches!(b, BinaryOp::Eq | BinaryOp::Ne) {
            format!("select(0u, 1u, {x}) {sym} select(0u, 1u, {y})")
        } else if t == DevType::F32 {
            // IEEE, whatever the implementation assumes about NaN: unordered operands
            // compare false, except under `!=`.
            let nan = format!("(isnan_({x}) || isnan_({y}))");
            if b == BinaryOp::Ne {
                format!("({nan} || {x} != {y})")
            } else {
                format!("(!{nan} && {x} {sym} {y})")
            }
        } else {
            format!("{x} {sym} {y}")
        }
    };
    match (b, t) {
        (BinaryOp::Add, DevType::U32) => format!("({x} + {y}) & 255u"),
        (BinaryOp::Sub, DevType::U32) => format!("({x} - {y}) & 255u"),
        (BinaryOp::Mul, DevType::U32) => format!("({x} * {y}) & 255u"),
        (BinaryOp::Add, _) => format!("{x} + {y}"),
        (BinaryOp::Sub, _) => format!("{x} - {y}"),
        (BinaryOp::Mul, _) => format!("{x} * {y}"),
        (BinaryOp::Div, _) => format!("{x} / {y}"),
        (BinaryOp::Pow, _) => format!("pow_({x}, {y})"),
        (BinaryOp::Maximum, DevType::F32) => format!("fmax_({x}, {y})"),
        (BinaryOp::Minimum, DevType::F32) => format!("fmin_({x}, {y})"),
        (BinaryOp::Maximum, DevType::Bool) => format!("{x} | {y}"),
        (BinaryOp::Minimum, DevType::Bool) => format!("{x} & {y}"),
        (BinaryOp::Maximum, _) => format!("max({x}, {y})"),
        (BinaryOp::Minimum, _) => format!("min({x}, {y})"),
        (BinaryOp::Lt, _) => cmp("<"),
        (BinaryOp::Le, _) => cmp("<="),
        (BinaryOp::Gt, _) => cmp(">"),
        (BinaryOp::Ge, _) => cmp(">="),
        (BinaryOp::Eq, _) => cmp("=="),
        (BinaryOp::Ne, _) => cmp("!="),
        (BinaryOp::And, _) => format!("{x} & {y}"),
        (BinaryOp::Or, _) => format!("{x} | {y}"),
    }
}

/// Casts with the interpreter's rules: float to int truncates and saturates (NaN is
/// 0), to u8 saturates, to bool is `!= 0`.
pub(super) fn cast(a: &str, from: DType, to: DType) -> String {
    let (f, t) = (DevType::of(from), DevType::of(to));
    if f == t {
        // f64 <-> f32 and i64 <-> i32 share a device type.
        return a.to_string();
    }
    match (f, t) {
        (DevType::F32, DevType::Bool) => format!("({a} != 0.0 || isnan_({a}))"),
        (DevType::I32, DevType::Bool) => format!("{a} != 0"),
        (DevType::U32, DevType::Bool) => format!("{a} != 0u"),
        (DevType::Bool, DevType::F32) => format!("select(0.0, 1.0, {a})"),
        (DevType::Bool, DevType::I32) => format!("select(0, 1, {a})"),
        (DevType::Bool, DevType::U32) => format!("select(0u, 1u, {a})"),
        (DevType::U32, DevType::F32) => format!("f32({a})"),
        (DevType::U32, DevType::I32) => format!("i32({a})"),
        (DevType::I32, DevType::F32) => format!("f32({a})"),
        (DevType::I32, DevType::U32) => format!("u32(clamp({a}, 0, 255))"),
        (DevType::F32, DevType::I32) => format!("f2i_({a})"),
        (DevType::F32, DevType::U32) => format!("f2u8_({a})"),
        _ => unreachable!("equal device types return above"),
    }
}

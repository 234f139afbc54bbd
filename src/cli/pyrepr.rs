//! Python's `repr` of a float, so that ports of the course print its digits as the
//! course does: the shortest string that round-trips (Rust's `{}` and Python's `repr`
//! choose the same digits), in scientific notation with a two-digit exponent when the
//! decimal exponent is below -4 or at least 16, and with `.0` on whole numbers.

/// `repr(v)` for a Python float.
pub fn py_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // The exponent of the shortest round-trip digits (what Python decides by).
    let sci = format!("{v:e}");
    let (mantissa, e) = sci.split_once('e').expect("`{:e}` has an exponent");
    let e: i32 = e.parse().expect("`{:e}` writes an integer exponent");
    if !(-4..16).contains(&e) {
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", e.abs());
    }
    let s = format!("{v}");
    if s.contains('.') { s } else { format!("{s}.0") }
}

#[cfg(test)]
mod tests {
    use super::py_repr;

    #[test]
    fn matches_python() {
        for (v, want) in [
            (1.752432687141379e-08, "1.752432687141379e-08"),
            (5.250973729513143e-26, "5.250973729513143e-26"),
            (4.666666666666667, "4.666666666666667"),
            (0.0, "0.0"),
            (2.0, "2.0"),
            (1e16, "1e+16"),
            (123456789012345.6, "123456789012345.6"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (14631.285714285714, "14631.285714285714"),
        ] {
            assert_eq!(py_repr(v), want, "{v}");
        }
    }
}

//! The f32 `exp` and `tanh` of the op table, defined here once as a sequence of plain
//! IEEE operations (no fused multiply-add, no table, no branch that a vector cannot
//! take): the reference interpreter calls these functions, and the CPU code generator
//! emits the same operations in the same order on scalars and on 4-lane vectors, so
//! the two agree bit for bit on every input, on every machine.
//!
//! Why not the C library's `expf`/`tanhf`, as before: a call per element kept every loop
//! that contains one scalar (the char LSTM's gate kernels spent 57 of a 238 ms step in
//! such calls, about 5.6 ns each), and the platform's libm differs between machines,
//! which a bitwise-reproducible run cannot have. The polynomials are Cephes' `expf` and
//! `tanhf` (S. L. Moshier, public domain); both stay within 2 ulp of the exact function
//! (`tests` below measures it against f64 over a sweep of the f32 line).
//!
//! f64 keeps the C library's functions (f64 models are for checking, not speed).

/// `log2(e)` rounded to f32.
pub const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `1.5 * 2^23`: adding it rounds a float of magnitude below `2^22` to an integer, left
/// in the low bits of the sum's significand (no float-to-int conversion needed).
pub const ROUND_MAGIC: f32 = 12_582_912.0;
/// `ln 2` split in two: the high part has 9 significant bits, so `n * LN2_HI` is exact
/// for `|n| <= 150`.
pub const LN2_HI: f32 = 0.693_359_4;
pub const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf`: `exp(r) ~ 1 + r + r^2 (P0 r^5 + P1 r^4 + ... + P5)` on `|r| <= ln2/2`.
pub const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
/// Below this every exp rounds to zero, above the other it overflows: the argument is
/// clamped to `[EXP_LO, EXP_HI]` first, so the scale's exponent stays in range.
pub const EXP_LO: f32 = -104.0;
pub const EXP_HI: f32 = 89.0;
/// Cephes `tanhf` for `|x| < TANH_SMALL`: `x + x z (Q0 z^4 + ... + Q4)`, `z = x^2`.
pub const TANH_SMALL: f32 = 0.625;
pub const TANH_Q: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_909e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// `e^x` in f32: `x = n ln2 + r`, the polynomial of `r`, times `2^n` applied as two
/// powers of two (`2^(n>>1)` then `2^(n - (n>>1))`, so a result below the normal range
/// rounds once, as a subnormal should). NaN gives NaN, `+inf` gives `+inf`, `-inf` 0.
pub fn exp_f32(x: f32) -> f32 {
    // The generated code's `fmax` then `fmin`; a NaN (which both propagate) is taken
    // care of at the end.
    let xc = x.clamp(EXP_LO, EXP_HI);
    let t = xc * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let z = r * r;
    let mut p = EXP_P[0];
    for c in &EXP_P[1..] {
        p = p * r + c;
    }
    let p = (p * z + r) + 1.0;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) << 23) as u32);
    let s2 = f32::from_bits((n2.wrapping_add(127) << 23) as u32);
    let y = (p * s1) * s2;
    if x.is_nan() { x } else { y }
}

/// `tanh x` in f32: the odd polynomial below `|x| = 0.625`, `1 - 2 / (e^{2|x|} + 1)`
/// with `x`'s sign above (exact `±1` once `e^{2|x|}` overflows). `-0.0` stays `-0.0`;
/// NaN gives NaN.
pub fn tanh_f32(x: f32) -> f32 {
    let ax = x.abs();
    let z = x * x;
    let mut q = TANH_Q[0];
    for c in &TANH_Q[1..] {
        q = q * z + c;
    }
    let small = x * (z * q) + x;
    // `-0.0 + +0.0` is `+0.0`: where `x * x` is zero, `tanh x` is `x` itself.
    let small = if z == 0.0 { x } else { small };
    let e = exp_f32(ax + ax);
    let big = 1.0 - 2.0 / (e + 1.0);
    let big = if x < 0.0 { -big } else { big };
    if ax < TANH_SMALL { small } else { big }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units of the last place between `got` and the exact `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        if want == 0.0 {
            return if got == 0.0 { 0.0 } else { f64::INFINITY };
        }
        let w = want as f32;
        let ulp = if w.is_infinite() {
            return if got == w { 0.0 } else { f64::INFINITY };
        } else {
            let next = f32::from_bits(w.abs().to_bits() + 1);
            (next - w.abs()) as f64
        };
        ((got as f64) - want).abs() / ulp.max(f32::from_bits(1) as f64)
    }

    /// Every `step`-th f32 bit pattern in `[lo, hi]` (both signs where asked).
    fn sweep(lo: f32, hi: f32, step: u32) -> impl Iterator<Item = f32> {
        let (a, b) = (lo.to_bits(), hi.to_bits());
        (a..=b).step_by(step as usize).map(f32::from_bits)
    }

    #[test]
    fn exp_is_within_two_ulp_over_its_range() {
        let mut worst = 0.0f64;
        for m in sweep(0.0, 104.0, 97) {
            for x in [m, -m] {
                let want = (x as f64).exp();
                let e = ulps(exp_f32(x), want);
                assert!(
                    e <= 2.0,
                    "exp({x:e}) = {:e}, exact {want:e}: {e} ulp",
                    exp_f32(x)
                );
                worst = worst.max(e);
            }
        }
        eprintln!("exp: worst {worst} ulp");
    }

    #[test]
    fn exp_at_the_edges() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(88.8), f32::INFINITY);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        // Subnormal results: rounded once.
        for x in [-87.5f32, -90.0, -95.0, -100.0, -103.0] {
            let want = (x as f64).exp();
            assert!(
                ulps(exp_f32(x), want) <= 1.0,
                "exp({x}) = {:e} vs {want:e}",
                exp_f32(x)
            );
        }
    }

    #[test]
    fn tanh_is_within_two_ulp_and_odd() {
        let mut worst = 0.0f64;
        for m in sweep(1e-30, 12.0, 89) {
            for x in [m, -m] {
                let want = (x as f64).tanh();
                let e = ulps(tanh_f32(x), want);
                assert!(
                    e <= 2.0,
                    "tanh({x:e}) = {:e}, exact {want:e}: {e} ulp",
                    tanh_f32(x)
                );
                worst = worst.max(e);
            }
        }
        eprintln!("tanh: worst {worst} ulp");
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }
}

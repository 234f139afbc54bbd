//! One core's f32 multiply-add peak, measured now: the yardstick for the GEMM rate of
//! a step's matrix products (`aotgrad bench --profile`). It is measured in the same
//! run because a shared machine's speed drifts by tens of percent between runs, and a
//! rate from another day says little about today's.
//!
//! The measurement is `CHAINS` independent chains of fused multiply-adds on the widest
//! vectors the CPU has (`pulp` picks AVX2+FMA, AVX-512 or NEON at run time; safe code),
//! so nothing but the FMA units' throughput bounds it.

use pulp::{Arch, Simd, WithSimd};
use std::time::{Duration, Instant};

/// Independent accumulator chains: more than FMA latency x FMA pipes on current
/// x86-64 and AArch64 cores (4-5 cycles x 2), so the chains never wait on each other.
const CHAINS: usize = 12;
/// Multiply-adds per chain in one timed block (~30 µs at 3 GHz on AVX2).
const ROUNDS: usize = 1 << 14;

/// One timed block: every chain `ROUNDS` times; returns a value that depends on every
/// multiply-add (so none is dropped) and the vector width in f32 lanes.
struct Block;

impl WithSimd for Block {
    type Output = (f32, usize);

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> (f32, usize) {
        let lanes = size_of::<S::f32s>() / size_of::<f32>();
        // Opaque to the optimiser: with constant inputs it folds every chain to its
        // value (measured: 30 ns per block instead of ~30 µs).
        let a = simd.splat_f32s(std::hint::black_box(0.999_999));
        let b = simd.splat_f32s(std::hint::black_box(1e-6));
        let mut acc = [simd.splat_f32s(std::hint::black_box(0.5)); CHAINS];
        for _ in 0..ROUNDS {
            for x in acc.iter_mut() {
                *x = simd.mul_add_e_f32s(*x, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(simd.splat_f32s(0.0), |s, &x| simd.add_f32s(s, x));
        (simd.reduce_sum_f32s(sum), lanes)
    }
}

/// The best f32 FMA rate of this thread over `budget` of timed blocks, in GFLOP/s
/// (a multiply-add counts two operations, as in a GEMM's `2 * m * n * k`). On a CPU
/// without FMA instructions the fused multiply-add is computed exactly in software,
/// so the number is then far below what its GEMMs reach and means little.
pub fn fma_peak_gflops(budget: Duration) -> f64 {
    let arch = Arch::new();
    let start = Instant::now();
    let mut best = 0.0f64;
    loop {
        let t = Instant::now();
        let (value, lanes) = arch.dispatch(Block);
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(value);
        let flops = 2.0 * (CHAINS * ROUNDS * lanes) as f64;
        if secs > 0.0 {
            best = best.max(flops / secs / 1e9);
        }
        if start.elapsed() >= budget {
            return best;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate is a positive, finite number of a plausible size for one core: at
    /// least one multiply-add per few cycles at 100 MHz, at most 64 f32 lanes x 4
    /// pipes at 10 GHz. (A block that the optimiser emptied would read as infinite.)
    #[test]
    fn the_fma_peak_is_a_plausible_rate() {
        let g = fma_peak_gflops(Duration::from_millis(20));
        assert!(
            g.is_finite() && g > 0.05 && g < 64.0 * 4.0 * 2.0 * 10.0,
            "{g}"
        );
    }
}

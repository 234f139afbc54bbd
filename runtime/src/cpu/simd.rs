//! The CPU backend's one module of instruction-set dispatch: library kernels whose
//! portable code the compiler vectorises better with wider instructions than the
//! baseline x86-64 the binary targets (SSE2), compiled a second time with those
//! enabled and chosen at run time. The code is the same Rust either way, so the results
//! are the same bits; `library`'s tests run whichever this machine picks against the
//! interpreter.

use super::library::{self, Uniform};

/// [`library::uniform_fill`], with AVX2 where the CPU has it (measured on the GPT's
/// dropout masks: see docs/decisions/sequence-models.md).
pub(crate) fn uniform_fill<T: Uniform>(key: i64, first: usize, out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the one requirement of a
        // `#[target_feature(enable = "avx2")]` function; its body is safe code.
        unsafe { uniform_fill_avx2(key, first, out) };
        return;
    }
    library::uniform_fill(key, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn uniform_fill_avx2<T: Uniform>(key: i64, first: usize, out: &mut [T]) {
    library::uniform_fill(key, first, out);
}

#[cfg(test)]
mod tests {
    /// The dispatched fill (AVX2 on a machine that has it) gives the interpreter's
    /// uniforms bit for bit, from any start and for any length.
    #[test]
    fn the_dispatched_fill_is_the_interpreters() {
        for key in [0i64, 3, -11, 0x0F0F_1234_5678_9ABC] {
            for (first, n) in [(0, 1), (0, 64), (7, 1000), ((1 << 32) - 5, 29)] {
                let mut a = vec![0f32; n];
                super::uniform_fill(key, first, &mut a);
                let want: Vec<f32> = (0..n)
                    .map(|j| crate::interp::rng::uniform_f32(key, first + j))
                    .collect();
                assert_eq!(a, want, "key {key} first {first} n {n}");
                let mut b = vec![0f64; n];
                super::uniform_fill(key, first, &mut b);
                let want: Vec<f64> = (0..n)
                    .map(|j| crate::interp::rng::uniform_f64(key, first + j))
                    .collect();
                assert_eq!(b, want);
            }
        }
    }
}

//! The counter-based RNG shared by every backend: Threefry-2x32 with 20 rounds
//! (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"; JAX's default).
//! It uses only 32-bit adds, rotates and xors, so WGSL can run it bit-exactly.

const ROTATIONS: [u32; 8] = [13, 15, 26, 6, 17, 29, 16, 24];

/// Threefry-2x32-20 of counter `(c0, c1)` under key `(k0, k1)`.
pub fn threefry2x32(k0: u32, k1: u32, c0: u32, c1: u32) -> (u32, u32) {
    let ks = [k0, k1, 0x1BD1_1BDA ^ k0 ^ k1];
    let (mut x0, mut x1) = (c0.wrapping_add(ks[0]), c1.wrapping_add(ks[1]));
    for r in 0..20 {
        x0 = x0.wrapping_add(x1);
        x1 = x1.rotate_left(ROTATIONS[r % 8]) ^ x0;
        if r % 4 == 3 {
            let s = r / 4 + 1;
            x0 = x0.wrapping_add(ks[s % 3]);
            x1 = x1.wrapping_add(ks[(s + 1) % 3]).wrapping_add(s as u32);
        }
    }
    (x0, x1)
}

/// The two raw words for element `i` under an i64 key.
pub fn bits(key: i64, i: usize) -> (u32, u32) {
    let k = key as u64;
    threefry2x32(
        k as u32,
        (k >> 32) as u32,
        i as u32,
        (i as u64 >> 32) as u32,
    )
}

const TWO_M24: f32 = 1.0 / 16_777_216.0;

/// Uniform on `[0, 1)` from the top 24 bits of the first word.
pub fn uniform_f32(key: i64, i: usize) -> f32 {
    unit_f32(bits(key, i).0)
}

/// `[0, 1)` from a word's top 24 bits: the uniforms' conversion (the CPU's batched
/// fill applies it to the words it computes eight at a time).
#[inline(always)]
pub fn unit_f32(word: u32) -> f32 {
    (word >> 8) as f32 * TWO_M24
}

/// [`unit_f32`] in f64 (the same 24-bit values).
#[inline(always)]
pub fn unit_f64(word: u32) -> f64 {
    (word >> 8) as f64 * TWO_M24 as f64
}

/// Standard normal by Box-Muller: `u1` in `(0, 1]` so the log is finite.
pub fn normal_f32(key: i64, i: usize) -> f32 {
    let (a, b) = bits(key, i);
    let u1 = ((a >> 8) + 1) as f32 * TWO_M24;
    let u2 = (b >> 8) as f32 * TWO_M24;
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// f64 variants draw the same 24-bit uniforms and do the arithmetic in f64.
pub fn uniform_f64(key: i64, i: usize) -> f64 {
    unit_f64(bits(key, i).0)
}

pub fn normal_f64(key: i64, i: usize) -> f64 {
    let (a, b) = bits(key, i);
    let u1 = ((a >> 8) + 1) as f64 * TWO_M24 as f64;
    let u2 = (b >> 8) as f64 * TWO_M24 as f64;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer tests from the Random123 distribution (kat_vectors, threefry2x32_20).
    #[test]
    fn threefry_known_answers() {
        assert_eq!(threefry2x32(0, 0, 0, 0), (0x6b20_0159, 0x99ba_4efe));
        assert_eq!(
            threefry2x32(u32::MAX, u32::MAX, u32::MAX, u32::MAX),
            (0x1cb9_96fc, 0xbb00_2be7)
        );
        assert_eq!(
            threefry2x32(0x1319_8a2e, 0x0370_7344, 0x243f_6a88, 0x85a3_08d3),
            (0xc492_3a9c, 0x483d_f7a0)
        );
    }

    #[test]
    fn uniform_moments() {
        let n = 100_000;
        let xs: Vec<f32> = (0..n).map(|i| uniform_f32(42, i)).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        let zs: Vec<f64> = (0..n).map(|i| normal_f32(7, i) as f64).collect();
        let m = zs.iter().sum::<f64>() / n as f64;
        let v = zs.iter().map(|z| (z - m) * (z - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.02 && (v - 1.0).abs() < 0.02, "{m} {v}");
        assert_ne!(
            uniform_f32(1, 0),
            uniform_f32(2, 0),
            "keys give different streams"
        );
    }
}

//! Native implementations of the library ops that training steps run on large tensors
//! (col2im `fold`, `argmax`/`argmin`, `gather`, `scatter_add`: a CNN step's pooling and
//! convolution gradients), on the dense buffers directly.
//!
//! The reference implementation of a library kernel is the interpreter's arm, which
//! copies the operands into tensors and builds index vectors: correct for every case,
//! and it measured at two thirds of a LeNet training step. These loops compute the
//! same values in the same order, so results are bitwise the interpreter's; an operand
//! layout or dtype they do not cover, or an out-of-range index (whose error the
//! interpreter reports), falls back to the reference.

use aotgrad_ir::{ArgReduceOp, Window};

/// Element types the native kernels cover.
pub(crate) trait Elem: Copy + PartialOrd + std::ops::Add<Output = Self> {
    const ZERO: Self;
    fn is_nan(self) -> bool;
    /// `if take { a } else { b }` through the bits: no branch for the compiler to
    /// keep (LLVM turned the `if` into a conditional store, mispredicted on data).
    fn pick(take: bool, a: Self, b: Self) -> Self;
}

impl Elem for f32 {
    const ZERO: f32 = 0.0;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn pick(take: bool, a: f32, b: f32) -> f32 {
        let m = (take as u32).wrapping_neg();
        f32::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
}

impl Elem for f64 {
    const ZERO: f64 = 0.0;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn pick(take: bool, a: f64, b: f64) -> f64 {
        let m = (take as u64).wrapping_neg();
        f64::from_bits((a.to_bits() & m) | (b.to_bits() & !m))
    }
}

/// `Op::Fold`: `src` is `[planes, kh, kw, OH, OW]`, `out` is `[planes, H, W]`. Zeroes
/// `out`, then adds every source element at the position unfold read it from, walking
/// `src` in row-major order (the interpreter's order: each output sums its terms by
/// increasing `(i, j)`).
pub(crate) fn fold<T: Elem>(w: &Window, src: &[T], out: &mut [T], size: [usize; 2]) {
    let [h, wd] = size;
    let [kh, kw] = w.kernel;
    let oh = w.out_len(0, h).unwrap_or(0);
    let ow = w.out_len(1, wd).unwrap_or(0);
    let per_src = kh * kw * oh * ow;
    out.fill(T::ZERO);
    if per_src == 0 || h * wd == 0 {
        return;
    }
    // Max-pool's 2-wide windows side by side (kernel 2, stride 2 across): a row of
    // the output takes the j = 0 and j = 1 source rows interleaved, one pass that
    // writes consecutive elements instead of two passes that write every other one.
    // Each output element still sums its terms by increasing (i, j): per element,
    // j is fixed by its column, and i runs in order.
    if w.kernel[1] == 2 && w.stride[1] == 2 && w.dilation[1] == 1 {
        let plane = kw * oh * ow;
        for (s, o) in src.chunks_exact(per_src).zip(out.chunks_exact_mut(h * wd)) {
            for (i, window_rows) in s.chunks_exact(plane).enumerate() {
                let (left, right) = window_rows.split_at(oh * ow);
                for (y, (a, b)) in left
                    .chunks_exact(ow)
                    .zip(right.chunks_exact(ow))
                    .enumerate()
                {
                    let start = (y * w.stride[0] + i * w.dilation[0]) * wd;
                    let dst = &mut o[start..start + 2 * ow];
                    for (pair, (&u, &v)) in dst.chunks_exact_mut(2).zip(a.iter().zip(b)) {
                        pair[0] = pair[0] + u;
                        pair[1] = pair[1] + v;
                    }
                }
            }
        }
        return;
    }
    for (s, o) in src.chunks_exact(per_src).zip(out.chunks_exact_mut(h * wd)) {
        // One source row of `ow` elements adds into every `stride`-th element of one
        // output row: slice iterators without index checks, so stride 1 vectorises.
        let mut rows = s.chunks_exact(ow);
        for i in 0..kh {
            for j in 0..kw {
                for y in 0..oh {
                    let start = (y * w.stride[0] + i * w.dilation[0]) * wd + j * w.dilation[1];
                    let src_row = rows.next().expect("sized");
                    if w.stride[1] == 1 {
                        // Two slices of one length: no index checks and no `step_by`
                        // state, so this is a plain vector loop (fold was 20% of the
                        // LeNet step with the strided iterator below).
                        for (d, &v) in o[start..start + ow].iter_mut().zip(src_row) {
                            *d = *d + v;
                        }
                        continue;
                    }
                    // Strided (a pooling window's gradient): an indexed loop over a
                    // slice that ends at the last destination (`step_by` keeps its
                    // iterator state in the loop, `chunks_mut` divides per row).
                    let sx = w.stride[1];
                    let dst = &mut o[start..start + (ow - 1) * sx + 1];
                    for (x, &v) in src_row.iter().enumerate() {
                        dst[x * sx] = dst[x * sx] + v;
                    }
                }
            }
        }
    }
}

/// `Op::ArgReduce` of a dense `[outer, len, inner]` view: the first extremum, NaN
/// counting as the extremum (PyTorch's rule).
pub(crate) fn arg_reduce<T: Elem>(
    op: ArgReduceOp,
    x: &[T],
    out: &mut [i64],
    (outer, len, inner): (usize, usize, usize),
) {
    // Row by row over the reduced axis, `inner` candidates at a time, so the compare
    // and select are branch-free and the loads contiguous.
    if inner == 0 || len == 0 {
        // No candidates per output (the caller sends an empty reduced axis to the
        // reference arm) or no outputs at all: `chunks_exact_mut(0)` would panic.
        return;
    }
    let mut best = vec![T::ZERO; inner];
    for (o, pos) in out.chunks_exact_mut(inner).enumerate().take(outer) {
        let base = o * len * inner;
        best.copy_from_slice(&x[base..base + inner]);
        pos.fill(0);
        for a in 1..len {
            let row = &x[base + a * inner..base + (a + 1) * inner];
            for ((b, p), &v) in best.iter_mut().zip(pos.iter_mut()).zip(row) {
                let wins = match op {
                    ArgReduceOp::ArgMax => v > *b,
                    ArgReduceOp::ArgMin => v < *b,
                };
                // The first extremum wins; NaN counts as the extremum and stays.
                let take = !b.is_nan() & (wins | v.is_nan());
                *b = T::pick(take, v, *b);
                let m = (take as i64).wrapping_neg();
                *p = (a as i64 & m) | (*p & !m);
            }
        }
    }
}

/// `Op::Gather` along the middle axis of `x: [outer, lx, inner]` with `index: [outer,
/// li, inner]`. `None` (nothing trustworthy written) if an index is out of range.
pub(crate) fn gather<T: Copy>(
    x: &[T],
    index: &[i64],
    out: &mut [T],
    (outer, lx, li, inner): (usize, usize, usize, usize),
) -> Option<()> {
    for o in 0..outer {
        for a in 0..li {
            for i in 0..inner {
                let at = (o * li + a) * inner + i;
                let j = usize::try_from(index[at]).ok().filter(|&j| j < lx)?;
                out[at] = x[(o * lx + j) * inner + i];
            }
        }
    }
    Some(())
}

/// `Op::ScatterAdd` along the middle axis: `out = x`, then `src: [outer, li, inner]`
/// added at `index` in row-major order (the interpreter's order). `None` if an index is
/// out of range.
pub(crate) fn scatter_add<T: Elem>(
    x: &[T],
    index: &[i64],
    src: &[T],
    out: &mut [T],
    (outer, lx, li, inner): (usize, usize, usize, usize),
) -> Option<()> {
    out.copy_from_slice(x);
    for o in 0..outer {
        for a in 0..li {
            for i in 0..inner {
                let at = (o * li + a) * inner + i;
                let j = usize::try_from(index[at]).ok().filter(|&j| j < lx)?;
                let t = (o * lx + j) * inner + i;
                out[t] = out[t] + src[at];
            }
        }
    }
    Some(())
}

/// Library kernels split over threads only above this many elements moved (below it a
/// rayon dispatch costs more than it saves).
const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// Runs `f(first_unit, out_part)` over `out` cut into whole *units* of `per_out`
/// elements (planes, the outer index of an axis op): all of it on this thread, or one
/// contiguous run of units per thread of `pool` when `work` (elements moved) is large.
/// Units are independent (each writes only its own part of `out`, reading its own part
/// of the inputs), so the values do not depend on the split: 1 and 2 threads give the
/// same bits. `f` returns `false` on a bad index; the result is whether every part
/// succeeded.
pub(crate) fn par_units<O: Send>(
    pool: Option<&rayon::ThreadPool>,
    out: &mut [O],
    per_out: usize,
    work: usize,
    f: impl Fn(usize, &mut [O]) -> bool + Sync,
) -> bool {
    use rayon::prelude::*;
    let units = out.len().checked_div(per_out).unwrap_or(0);
    match pool {
        Some(pool) if pool.current_num_threads() > 1 && units > 1 && work >= PARALLEL_MIN_ELEMS => {
            let per_part = units.div_ceil(pool.current_num_threads());
            // A failed part may leave others unrun: the caller then recomputes the
            // whole output with the reference arm, which reports the bad index.
            pool.install(|| {
                out.par_chunks_mut(per_part * per_out)
                    .enumerate()
                    .all(|(i, part)| f(i * per_part, part))
            })
        }
        _ => f(0, out),
    }
}

/// Lanes of the batched Threefry: eight counters per round trip, written so that the
/// compiler keeps the eight in vector registers (SSE2's four lanes twice).
const RNG_LANES: usize = 8;

/// Threefry-2x32-20's first word for the counters `i0..i0 + RNG_LANES` under `key`:
/// [`crate::interp::rng::bits`]'s `.0`, eight at a time.
#[inline(always)]
fn threefry_first_words(key: i64, i0: usize) -> [u32; RNG_LANES] {
    let k = key as u64;
    let (k0, k1) = (k as u32, (k >> 32) as u32);
    let ks = [k0, k1, 0x1BD1_1BDA ^ k0 ^ k1];
    let mut x0 = [0u32; RNG_LANES];
    let mut x1 = [0u32; RNG_LANES];
    for l in 0..RNG_LANES {
        let i = (i0 + l) as u64;
        x0[l] = (i as u32).wrapping_add(ks[0]);
        x1[l] = ((i >> 32) as u32).wrapping_add(ks[1]);
    }
    // Every round spelled out so each rotation is an immediate (a variable count
    // kept the loop scalar).
    macro_rules! round {
        ($rot:expr) => {
            for l in 0..RNG_LANES {
                x0[l] = x0[l].wrapping_add(x1[l]);
                x1[l] = x1[l].rotate_left($rot) ^ x0[l];
            }
        };
    }
    macro_rules! inject {
        ($s:expr) => {
            for l in 0..RNG_LANES {
                x0[l] = x0[l].wrapping_add(ks[$s % 3]);
                x1[l] = x1[l].wrapping_add(ks[($s + 1) % 3]).wrapping_add($s);
            }
        };
    }
    round!(13);
    round!(15);
    round!(26);
    round!(6);
    inject!(1);
    round!(17);
    round!(29);
    round!(16);
    round!(24);
    inject!(2);
    round!(13);
    round!(15);
    round!(26);
    round!(6);
    inject!(3);
    round!(17);
    round!(29);
    round!(16);
    round!(24);
    inject!(4);
    round!(13);
    round!(15);
    round!(26);
    round!(6);
    inject!(5);
    x0
}

/// A float type the uniform fill writes.
pub(crate) trait Uniform: Copy {
    /// The interpreter's conversion of a Threefry word ([`crate::interp::rng::unit_f32`]).
    fn from_word(w: u32) -> Self;
    fn at(key: i64, i: usize) -> Self;
}

impl Uniform for f32 {
    #[inline(always)]
    fn from_word(w: u32) -> f32 {
        crate::interp::rng::unit_f32(w)
    }
    fn at(key: i64, i: usize) -> f32 {
        crate::interp::rng::uniform_f32(key, i)
    }
}

impl Uniform for f64 {
    #[inline(always)]
    fn from_word(w: u32) -> f64 {
        crate::interp::rng::unit_f64(w)
    }
    fn at(key: i64, i: usize) -> f64 {
        crate::interp::rng::uniform_f64(key, i)
    }
}

/// `out[j] = uniform(key, first + j)`: the interpreter's `random_uniform` values from
/// element `first` on, bit for bit (the same Threefry words, the same conversion),
/// eight counters per round trip (measured: 29 ns an element through the reference
/// arm, which dropout in a transformer step calls on 6 M elements).
///
/// Where the CPU has AVX2, `simd::uniform_fill` runs this same code compiled for it
/// (one 8-lane vector per Threefry word instead of two SSE halves without a rotate).
#[inline(always)]
pub(crate) fn uniform_fill<T: Uniform>(key: i64, first: usize, out: &mut [T]) {
    let mut chunks = out.chunks_exact_mut(RNG_LANES);
    let mut at = first;
    for c in &mut chunks {
        let w = threefry_first_words(key, at);
        for (o, w) in c.iter_mut().zip(w) {
            *o = T::from_word(w);
        }
        at += RNG_LANES;
    }
    for (j, o) in chunks.into_remainder().iter_mut().enumerate() {
        *o = T::at(key, at + j);
    }
}

/// `[outer, len, inner]` of `shape` around `axis`.
pub(crate) fn split_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Whether `index`'s shape equals `x`'s except on `axis` (the layout the native
/// gather and scatter-add cover).
pub(crate) fn same_but_axis(x: &[usize], index: &[usize], axis: usize) -> bool {
    x.len() == index.len() && (0..x.len()).all(|d| d == axis || x[d] == index[d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_sums_overlapping_windows_in_order() {
        // 1 plane, 3x3 image, 2x2 kernel, stride 1: every interior pixel is in 4 windows.
        let w = Window {
            kernel: [2, 2],
            stride: [1, 1],
            dilation: [1, 1],
        };
        let src = vec![1.0f32; 2 * 2 * 2 * 2];
        let mut out = vec![9.0f32; 9];
        fold(&w, &src, &mut out, [3, 3]);
        assert_eq!(out, vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]);
    }

    /// Every window shape against the definition, element by element in the
    /// interpreter's order: the stride-1 row path and the strided one (pooling, and
    /// overlapping strided windows, where one output sums several terms).
    #[test]
    fn fold_matches_its_definition_for_strides_and_dilations() {
        for (kernel, stride, dilation, size) in [
            ([2, 2], [2, 2], [1, 1], [8, 8]),
            ([3, 3], [2, 2], [1, 1], [9, 7]),
            ([2, 3], [1, 3], [2, 1], [7, 10]),
            ([5, 5], [1, 1], [1, 1], [12, 12]),
            ([3, 2], [3, 2], [2, 2], [11, 9]),
            // The paired path: kernel and stride 2 across, with rows overlapping down
            // (each output sums up to three terms, by increasing i), and a width that
            // leaves the last column uncovered.
            ([3, 2], [1, 2], [1, 1], [7, 9]),
        ] {
            let w = Window {
                kernel,
                stride,
                dilation,
            };
            let [h, wd] = size;
            let (oh, ow) = (w.out_len(0, h).unwrap(), w.out_len(1, wd).unwrap());
            let planes = 3;
            let n = planes * kernel[0] * kernel[1] * oh * ow;
            let src: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1013) as f32 / 97.0).collect();
            let mut want = vec![0.0f32; planes * h * wd];
            let mut e = 0;
            for p in 0..planes {
                for i in 0..kernel[0] {
                    for j in 0..kernel[1] {
                        for y in 0..oh {
                            for x in 0..ow {
                                let r = y * stride[0] + i * dilation[0];
                                let c = x * stride[1] + j * dilation[1];
                                want[p * h * wd + r * wd + c] += src[e];
                                e += 1;
                            }
                        }
                    }
                }
            }
            let mut out = vec![f32::NAN; planes * h * wd];
            fold(&w, &src, &mut out, size);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&out), bits(&want), "{w:?} on {size:?}");
        }
    }

    /// The batched Threefry gives the interpreter's uniforms, bit for bit, from any
    /// start (a part of a split output) and for any length (the scalar tail).
    #[test]
    fn uniform_fill_is_the_interpreters() {
        for key in [0i64, 1, -7, 0x1234_5678_9ABC_DEF0] {
            for (first, n) in [(0, 0), (0, 3), (0, 8), (5, 37), ((1 << 32) - 3, 11)] {
                let mut a = vec![0f32; n];
                uniform_fill(key, first, &mut a);
                let want: Vec<f32> = (0..n)
                    .map(|j| crate::interp::rng::uniform_f32(key, first + j))
                    .collect();
                assert_eq!(a, want, "key {key} first {first} n {n}");
                let mut b = vec![0f64; n];
                uniform_fill(key, first, &mut b);
                let want: Vec<f64> = (0..n)
                    .map(|j| crate::interp::rng::uniform_f64(key, first + j))
                    .collect();
                assert_eq!(b, want);
            }
        }
    }

    /// Split over a pool, every unit is handed to `f` once, with its own index, in
    /// whole units; a failing part makes the whole call fail.
    #[test]
    fn par_units_hands_out_every_unit_once() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let per = 5;
        let mut out = vec![usize::MAX; 7 * per];
        let ok = par_units(
            Some(&pool),
            &mut out,
            per,
            PARALLEL_MIN_ELEMS,
            |first, o| {
                assert_eq!(o.len() % per, 0, "whole units");
                for (u, chunk) in o.chunks_mut(per).enumerate() {
                    chunk.fill(first + u);
                }
                true
            },
        );
        assert!(ok);
        let want: Vec<usize> = (0..7).flat_map(|u| [u; 5]).collect();
        assert_eq!(out, want);
        let failing = par_units(
            Some(&pool),
            &mut out,
            per,
            PARALLEL_MIN_ELEMS,
            |first, _| first == 0,
        );
        assert!(!failing, "the second part failed");
        // Small work stays on the calling thread, in one part.
        let parts = std::sync::atomic::AtomicUsize::new(0);
        par_units(Some(&pool), &mut out, per, 10, |_, o| {
            assert_eq!(o.len(), 7 * per);
            parts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        });
        assert_eq!(parts.into_inner(), 1);
    }

    #[test]
    fn argmax_takes_the_first_maximum_and_nan_wins() {
        let x = [1.0f32, 3.0, 3.0, 0.0, f32::NAN, 5.0];
        let mut out = [0i64; 2];
        arg_reduce(ArgReduceOp::ArgMax, &x, &mut out, (2, 3, 1));
        assert_eq!(out, [1, 1]);
    }

    #[test]
    fn gather_and_scatter_refuse_out_of_range_indices() {
        let x = [1.0f32, 2.0];
        let mut out = [0.0f32; 1];
        assert_eq!(gather(&x, &[1], &mut out, (1, 2, 1, 1)), Some(()));
        assert_eq!(out, [2.0]);
        assert_eq!(gather(&x, &[2], &mut out, (1, 2, 1, 1)), None);
        let mut acc = [0.0f32; 2];
        assert_eq!(scatter_add(&x, &[-1], &[1.0], &mut acc, (1, 2, 1, 1)), None);
        assert_eq!(
            scatter_add(&x, &[0], &[1.0], &mut acc, (1, 2, 1, 1)),
            Some(())
        );
        assert_eq!(acc, [2.0, 2.0]);
    }
}

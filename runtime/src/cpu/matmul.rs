//! Matrix multiply for the CPU backend: the `gemm` crate's packed, register-blocked
//! kernels (AVX2/AVX-512/FMA chosen at run time), called on fixed tiles of the output.
//!
//! Determinism: the output is cut into tiles that depend only on the problem shape,
//! never on the thread count, and each tile is one single-threaded GEMM call that owns
//! its output elements and sums over the whole `k` in the same order. So 1 thread and
//! 2 threads produce bitwise-identical results; threads only decide who runs a tile.
//! Measurements behind the choice of crate: docs/decisions/matmul.md.

use rayon::prelude::*;

/// One operand: base pointer, row stride and column stride in elements.
#[derive(Clone, Copy)]
pub(crate) struct Operand<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

/// Below this many multiply-adds a plain loop beats packing (and is bitwise the
/// interpreter's order, which keeps tiny models exactly reproducible).
const SMALL: usize = 16 * 16 * 16;
/// Tiles are at least this many rows/columns (multiple of the micro-kernel sizes).
const MIN_TILE: usize = 32;
/// The default number of tiles a large product is cut into (`CpuOptions::matmul_tiles`):
/// every tile packs the whole operand it does not split, so more tiles than threads
/// only repack. Two fit this project's 2-core machines (measured against 4 and 8:
/// docs/decisions/matmul.md); a many-core machine wants as many as it has cores.
pub const DEFAULT_TILES: usize = 2;
/// Products below this many multiply-adds run as a single tile.
const PARALLEL_MIN: usize = 1 << 18;

/// Output tiles `(row0, rows, col0, cols)` for an `m x n` product with inner size `k`.
pub(crate) fn tiles(
    m: usize,
    n: usize,
    k: usize,
    max_tiles: usize,
) -> Vec<(usize, usize, usize, usize)> {
    if m * n * k < PARALLEL_MIN {
        return vec![(0, m, 0, n)];
    }
    let split = |len: usize| -> Vec<(usize, usize)> {
        let count = (len / MIN_TILE).clamp(1, max_tiles.max(1));
        let size = len.div_ceil(count).div_ceil(16) * 16;
        (0..len)
            .step_by(size.max(1))
            .map(|s| (s, size.min(len - s)))
            .collect()
    };
    if m >= n {
        split(m).into_iter().map(|(r, h)| (r, h, 0, n)).collect()
    } else {
        split(n).into_iter().map(|(c, w)| (0, m, c, w)).collect()
    }
}

/// How a product may be split: into at most `tiles` output tiles (a function of the
/// shape and this number only), run on `pool` when there is one.
#[derive(Clone, Copy)]
pub(crate) struct Parallel<'a> {
    pub pool: Option<&'a rayon::ThreadPool>,
    pub tiles: usize,
}

/// Element types the GEMM path handles.
pub(crate) trait Real:
    Copy + Send + Sync + 'static + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
}
impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
}
impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
}

#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: each tile writes a disjoint block of the output; the pointer is only
// dereferenced inside `gemm_tile` for that block.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

#[derive(Clone, Copy)]
struct SendOperand<T>(Operand<T>);
// SAFETY: operands are only read, while no tile writes them (the memory plan never
// places an operand and the output in overlapping bytes).
unsafe impl<T> Send for SendOperand<T> {}
unsafe impl<T> Sync for SendOperand<T> {}

/// `c[m x n] (row-major, row stride n) = a[m x k] @ b[k x n]`.
///
/// # Safety
/// `a` and `b` must be valid for reads at every `(i, p)` / `(p, j)` their strides
/// reach, `c` valid for writes of `m * n` elements, and `c` must not overlap `a`/`b`.
pub(crate) unsafe fn matmul<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    c: *mut T,
    par: Parallel<'_>,
) {
    let Parallel {
        pool,
        tiles: max_tiles,
    } = par;
    if m == 0 || n == 0 {
        return;
    }
    if m * n * k <= SMALL {
        // SAFETY: as the function's contract.
        unsafe { small(m, n, k, a, b, c) };
        return;
    }
    let tiles = tiles(m, n, k, max_tiles);
    let (a, b, c) = (SendOperand(a), SendOperand(b), SendPtr(c));
    let run = |&(r0, rows, c0, cols): &(usize, usize, usize, usize)| {
        let (a, b, c) = (a, b, c);
        // SAFETY: the tile lies inside the m x n output and the operands' ranges.
        unsafe { gemm_tile(r0, rows, c0, cols, n, k, a.0, b.0, c.0) };
    };
    match pool {
        Some(pool) if tiles.len() > 1 => pool.install(|| tiles.par_iter().for_each(run)),
        _ => tiles.iter().for_each(run),
    }
}

/// # Safety
/// As [`matmul`], for the block `rows x cols` at `(r0, c0)`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_tile<T: Real>(
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
    ldc: usize,
    k: usize,
    a: Operand<T>,
    b: Operand<T>,
    c: *mut T,
) {
    // SAFETY: offsets stay inside the operands (the caller's contract); gemm reads
    // `rows x k` of `a` and `k x cols` of `b` through the given strides and writes
    // `rows x cols` of `c`.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            c.add(r0 * ldc + c0),
            1,
            ldc as isize,
            false,
            a.ptr.offset(r0 as isize * a.rs),
            a.cs,
            a.rs,
            b.ptr.offset(c0 as isize * b.cs),
            b.cs,
            b.rs,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// # Safety
/// As [`matmul`].
unsafe fn small<T: Real>(m: usize, n: usize, k: usize, a: Operand<T>, b: Operand<T>, c: *mut T) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = T::ZERO;
            for p in 0..k {
                // SAFETY: (i, p) and (p, j) are inside the operands.
                let (x, y) = unsafe {
                    (
                        *a.ptr.offset(i as isize * a.rs + p as isize * a.cs),
                        *b.ptr.offset(p as isize * b.rs + j as isize * b.cs),
                    )
                };
                acc = acc + x * y;
            }
            // SAFETY: (i, j) is inside the m x n output.
            unsafe { *c.add(i * n + j) = acc };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tiles;

    #[test]
    fn tiles_cover_the_output_exactly_once() {
        for (m, n, k) in [
            (64, 256, 784),
            (512, 256, 784),
            (784, 256, 512),
            (7, 3000, 100),
            (1000, 10, 64),
        ] {
            let mut seen = vec![0u8; m * n];
            for (r0, rows, c0, cols) in tiles(m, n, k, 8) {
                for i in r0..r0 + rows {
                    for j in c0..c0 + cols {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{m}x{n}x{k}");
        }
    }
}

//! Matrix multiply for the CPU backend: the `gemm` crate's packed, register-blocked
//! kernels (AVX2/AVX-512/FMA chosen at run time), called on fixed tiles of the output.
//!
//! Determinism: the output is cut into tiles that depend only on the problem shape
//! (`aotgrad_compiler::codegen::tiles`), never on the thread count, and each tile is one
//! single-threaded GEMM call that owns its output elements and sums over the whole `k`
//! in the same order. So 1 thread and 2 threads produce bitwise-identical results;
//! threads only decide who runs a tile.
//! Measurements behind the choice of crate: docs/decisions/matmul.md.

use aotgrad_compiler::codegen::tiles::{Tile, matmul_tiles};
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

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

/// How a product may be split: into at most `tiles` output tiles (a function of the
/// shape and this number only), run on `pool` when there is one; `after_tile(i)` runs
/// on the thread that computed tile `i` right after it, while the tile is in cache (the
/// product's fused epilogue); with `gemm_ns`, every GEMM call adds the nanoseconds it
/// took there (the kernel profile's GEMM time, epilogues excluded).
#[derive(Clone, Copy)]
pub(crate) struct Parallel<'a> {
    pub pool: Option<&'a rayon::ThreadPool>,
    pub tiles: usize,
    pub after_tile: &'a (dyn Fn(usize) + Sync),
    pub gemm_ns: Option<&'a AtomicU64>,
}

/// Runs `f`, adding the time it took to `ns` when there is one.
fn timed(ns: Option<&AtomicU64>, f: impl FnOnce()) {
    match ns {
        Some(ns) => {
            let t = Instant::now();
            f();
            let took = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            ns.fetch_add(took, Ordering::Relaxed);
        }
        None => f(),
    }
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

/// `c[m x n] (row-major, row stride n) = a[m x k] @ b[k x n]`, then `par.after_tile(i)`
/// for each tile `i` of `matmul_tiles(m, n, k, par.tiles)`.
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
        after_tile,
        gemm_ns,
    } = par;
    if m == 0 || n == 0 {
        return;
    }
    if m * n * k <= SMALL {
        // SAFETY: as the function's contract.
        timed(gemm_ns, || unsafe { small(m, n, k, a, b, c) });
        after_tile(0);
        return;
    }
    let tiles: Vec<(usize, Tile)> = matmul_tiles(m, n, k, max_tiles)
        .into_iter()
        .enumerate()
        .collect();
    let (a, b, c) = (SendOperand(a), SendOperand(b), SendPtr(c));
    let run = |&(i, t): &(usize, Tile)| {
        let (a, b, c) = (a, b, c);
        // SAFETY: the tile lies inside the m x n output and the operands' ranges.
        timed(gemm_ns, || unsafe {
            gemm_tile(t.row0, t.rows, t.col0, t.cols, n, k, a.0, b.0, c.0)
        });
        after_tile(i);
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

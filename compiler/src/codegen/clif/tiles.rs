//! How the CPU backend cuts a matrix product into output tiles, and how it runs a
//! product's fused epilogue: shared by the code generator (which emits one epilogue
//! function per tile) and the runtime (which calls them after each tile's GEMM).
//!
//! Determinism: tiles depend only on the product's shape and the program's tile count,
//! never on the thread count, and each tile is one single-threaded GEMM that owns its
//! output elements; so 1 and 2 threads give bitwise-identical results.

use super::collapse::split_len;
use crate::program::{LoopKernel, MatMulKernel};

/// Tiles are at least this many rows/columns (a multiple of the micro-kernel sizes).
const MIN_TILE: usize = 32;
/// The default number of tiles a large product is cut into (`CpuOptions::matmul_tiles`):
/// every tile packs the whole operand it does not split, so more tiles than threads
/// only repack. Two fit this project's 2-core machines (measured against 4 and 8:
/// docs/decisions/matmul.md); a many-core machine wants as many as it has cores.
pub const DEFAULT_TILES: usize = 2;
/// Products below this many multiply-adds run as a single tile.
const PARALLEL_MIN: usize = 1 << 18;

/// A block of a product's `m x n` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub row0: usize,
    pub rows: usize,
    pub col0: usize,
    pub cols: usize,
}

/// Output tiles for an `m x n` product with inner size `k`, at most `max_tiles`: rows
/// are split when `m >= n`, columns otherwise.
pub fn matmul_tiles(m: usize, n: usize, k: usize, max_tiles: usize) -> Vec<Tile> {
    if m * n * k < PARALLEL_MIN {
        return vec![Tile {
            row0: 0,
            rows: m,
            col0: 0,
            cols: n,
        }];
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
        split(m)
            .into_iter()
            .map(|(row0, rows)| Tile {
                row0,
                rows,
                col0: 0,
                cols: n,
            })
            .collect()
    } else {
        split(n)
            .into_iter()
            .map(|(col0, cols)| Tile {
                row0: 0,
                rows: m,
                col0,
                cols,
            })
            .collect()
    }
}

/// When the CPU backend runs a product's epilogue.
#[derive(Debug, Clone, PartialEq)]
pub enum EpilogueSchedule {
    /// An unbatched product cut into tiles of whole rows (or one tile): after each
    /// tile's GEMM, on that tile (one generated function per tile, `[0, len)` of its
    /// first axis), while the tile is in cache.
    PerTile(Vec<(Tile, i64)>),
    /// A product batched over one axis whose products are single tiles (a
    /// convolution's per-sample GEMMs): after product `b`, `[b * len / batches,
    /// (b + 1) * len / batches)` of the epilogue's first axis.
    PerBatch { len: i64, batches: usize },
    /// Otherwise (column tiles included): once after the whole product, `[0, len)`,
    /// split over the pool.
    After { len: i64 },
}

/// The epilogue of `m` as generated functions: the schedule and, per function, the
/// loop kernel it computes (one per tile for [`EpilogueSchedule::PerTile`], otherwise
/// the whole epilogue).
pub fn epilogue_plan(
    m: &MatMulKernel,
    max_tiles: usize,
) -> Option<(EpilogueSchedule, Vec<LoopKernel>)> {
    let e = m.epilogue.as_deref()?;
    let nb = m.batch.len();
    let batches: usize = m.batch.iter().product();
    let tiles = matmul_tiles(m.m, m.n, m.k, max_tiles);
    // A column tile is `rows` short runs of every stream its epilogue reads and writes
    // (half rows of a weight and its optimizer state, say), which the hardware
    // prefetcher follows badly once those streams have left the cache: the epilogue
    // took about twice as long per tile as over whole rows after the product
    // (docs/decisions/matmul.md, "Epilogues of column tiles"). Tiles of whole rows are
    // contiguous blocks of the output, and run their epilogue while they are in cache.
    let whole_rows = tiles.iter().all(|t| t.col0 == 0 && t.cols == m.n);
    if batches == 1 && whole_rows && m.epilogue_in_order() {
        let mut per_tile = Vec::with_capacity(tiles.len());
        let mut kernels = Vec::with_capacity(tiles.len());
        for t in tiles {
            let mut origin = vec![0; nb];
            origin.extend([t.row0, t.col0]);
            let mut shape = vec![1; nb];
            shape.extend([t.rows, t.cols]);
            let sub = e.sub_block(&origin, &shape);
            per_tile.push((t, split_len(&sub)));
            kernels.push(sub);
        }
        return Some((EpilogueSchedule::PerTile(per_tile), kernels));
    }
    let len = split_len(e);
    // The first generated loop axis then starts with the one batch axis (an in-order
    // epilogue's leading axes are the batch; an epilogue in another order is fused
    // only when its first axis is the batch), so each product's elements are one
    // contiguous range of it.
    let one_batch_axis = m.batch.iter().filter(|&&b| b > 1).count() == 1;
    let schedule = if tiles.len() == 1 && one_batch_axis && len % batches as i64 == 0 {
        EpilogueSchedule::PerBatch { len, batches }
    } else {
        EpilogueSchedule::After { len }
    };
    Some((schedule, vec![e.clone()]))
}

#[cfg(test)]
mod tests {
    use super::matmul_tiles;

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
            for t in matmul_tiles(m, n, k, 8) {
                for i in t.row0..t.row0 + t.rows {
                    for j in t.col0..t.col0 + t.cols {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{m}x{n}x{k}");
        }
    }
}

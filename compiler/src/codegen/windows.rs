//! Binding windows: how a GPU kernel runs when a tensor it touches, or the arena that
//! holds it, is larger than the adapter's storage binding limit.
//!
//! WebGPU binds a storage buffer whole or as a window `[offset, offset + size)`, and
//! `size` may not exceed `max_storage_buffer_binding_size` (128 MiB by default, the
//! value browsers give). Memories that fit are bound whole, exactly as before. When one
//! does not, every kernel that touches it is cut into *blocks* of its iteration space
//! such that, within a block, the words each such buffer is accessed at fit one window;
//! each block is a dispatch of its own that binds only those windows. A block that
//! covers part of a *reduced* axis combines its partial result into what the earlier
//! blocks left in the output ([`Block::accumulate`]).
//!
//! Blocks come from halving: while some buffer's window is too wide, the axis that
//! spreads that buffer's accesses most is cut in two, and both halves are split again,
//! the lower half first. So for every output element, the first block that covers it
//! is the one whose origin is 0 on every reduced axis; that block writes and the later
//! ones accumulate, and the order (hence the result) depends only on the shapes and the
//! limit.

use crate::program::{Affine, BufferId, BufferKind, Program};

/// A box of an iteration space: indices `origin[d] .. origin[d] + shape[d]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub origin: Vec<usize>,
    pub shape: Vec<usize>,
    /// Whether the block starts past 0 on a reduced axis: it must combine its result
    /// with the output's current value instead of overwriting it.
    pub accumulate: bool,
}

/// A word range of one device memory bound as a binding: `start` is a multiple of the
/// adapter's offset alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingWindow {
    pub start: usize,
    pub words: usize,
}

/// Why a kernel cannot be cut into blocks whose windows fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsplittable {
    pub buf: BufferId,
    /// Words the buffer's accesses span within the smallest block that was tried.
    pub words: usize,
}

/// The binding limit in words, and the offset alignment in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingLimit {
    pub max_words: usize,
    pub align_words: usize,
}

impl BindingLimit {
    pub fn new(max_bytes: u64, align_bytes: u32) -> BindingLimit {
        BindingLimit {
            max_words: (max_bytes / 4).min(usize::MAX as u64) as usize,
            align_words: (align_bytes as usize / 4).max(1),
        }
    }

    /// The widest access range a window can hold whatever its first word: the start is
    /// rounded down to the alignment, which can cost up to `align_words - 1` words.
    fn span_words(self) -> usize {
        self.max_words.saturating_sub(self.align_words - 1).max(1)
    }

    /// The window holding the word range `[lo, hi)`.
    pub fn window(self, lo: usize, hi: usize) -> BindingWindow {
        let start = lo / self.align_words * self.align_words;
        BindingWindow {
            start,
            words: hi.max(start + 1) - start,
        }
    }
}

/// Words of the device memory `b` lives in: the arena for arena buffers.
pub fn memory_words(p: &Program, b: BufferId) -> usize {
    match p.buffer(b).kind {
        BufferKind::Arena { .. } => p.arena_bytes.div_ceil(4),
        _ => p.buffer(b).elems,
    }
}

/// Whether kernels must bind `b` through windows: its memory exceeds the limit.
pub fn windowed(p: &Program, b: BufferId, limit: BindingLimit) -> bool {
    memory_words(p, b) > limit.max_words
}

/// The words `at` reaches over the block `origin`/`shape`, as `[lo, hi)` relative to the
/// buffer's first element; `None` for an empty block.
pub fn extent(at: &Affine, origin: &[usize], shape: &[usize]) -> Option<(i64, i64)> {
    if shape.contains(&0) {
        return None;
    }
    let mut lo = at.offset;
    for (&o, &s) in origin.iter().zip(&at.strides) {
        lo += o as i64 * s;
    }
    let mut hi = lo;
    for (&n, &s) in shape.iter().zip(&at.strides) {
        let span = s * (n as i64 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    Some((lo, hi + 1))
}

/// The word range `[lo, hi)` of each buffer in `accesses` over the block, in order of
/// first appearance.
pub fn ranges(
    accesses: &[(BufferId, Affine)],
    origin: &[usize],
    shape: &[usize],
) -> Vec<(BufferId, i64, i64)> {
    let mut out: Vec<(BufferId, i64, i64)> = Vec::new();
    for (b, at) in accesses {
        let Some((lo, hi)) = extent(at, origin, shape) else {
            continue;
        };
        match out.iter_mut().find(|(x, _, _)| x == b) {
            Some(r) => {
                r.1 = r.1.min(lo);
                r.2 = r.2.max(hi);
            }
            None => out.push((*b, lo, hi)),
        }
    }
    out
}

/// Cuts the iteration space `shape` into blocks in which every buffer `needs_window`
/// accepts spans at most `limit`'s window words (see the module doc). `reduced[d]`
/// marks the axes the kernel reduces over. A space that already fits is one block.
pub fn split(
    shape: &[usize],
    accesses: &[(BufferId, Affine)],
    reduced: &[bool],
    needs_window: &dyn Fn(BufferId) -> bool,
    limit: BindingLimit,
) -> Result<Vec<Block>, Unsplittable> {
    let mut out = Vec::new();
    let origin = vec![0; shape.len()];
    let mut cx = Splitter {
        accesses,
        reduced,
        needs_window,
        span: limit.span_words(),
        out: &mut out,
    };
    cx.go(origin, shape.to_vec())?;
    Ok(out)
}

struct Splitter<'a> {
    accesses: &'a [(BufferId, Affine)],
    reduced: &'a [bool],
    needs_window: &'a dyn Fn(BufferId) -> bool,
    span: usize,
    out: &'a mut Vec<Block>,
}

impl Splitter<'_> {
    fn go(&mut self, origin: Vec<usize>, shape: Vec<usize>) -> Result<(), Unsplittable> {
        let worst = ranges(self.accesses, &origin, &shape)
            .into_iter()
            .filter(|(b, _, _)| (self.needs_window)(*b))
            .map(|(b, lo, hi)| (b, (hi - lo) as usize))
            .filter(|&(_, w)| w > self.span)
            .max_by_key(|&(b, w)| (w, std::cmp::Reverse(b.0)));
        let Some((buf, words)) = worst else {
            let accumulate = origin.iter().zip(self.reduced).any(|(&o, &r)| r && o > 0);
            self.out.push(Block {
                origin,
                shape,
                accumulate,
            });
            return Ok(());
        };
        // The axis along which `buf`'s accesses reach furthest; ties go to the outer one.
        let mut best: Option<(usize, i64)> = None;
        for (_, at) in self.accesses.iter().filter(|(b, _)| *b == buf) {
            for (d, (&n, &s)) in shape.iter().zip(&at.strides).enumerate() {
                let reach = s.abs() * (n as i64 - 1);
                if n > 1 && reach > 0 && best.is_none_or(|(_, r)| reach > r) {
                    best = Some((d, reach));
                }
            }
        }
        // Several accesses far apart in one buffer: no cut brings them closer.
        let Some((d, _)) = best else {
            return Err(Unsplittable { buf, words });
        };
        let half = shape[d] / 2;
        let (mut lo_shape, mut hi_origin, mut hi_shape) = (shape.clone(), origin.clone(), shape);
        lo_shape[d] = half;
        hi_origin[d] += half;
        hi_shape[d] -= half;
        self.go(origin, lo_shape)?;
        self.go(hi_origin, hi_shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(words: usize) -> BindingLimit {
        BindingLimit {
            max_words: words,
            align_words: 4,
        }
    }

    /// Every index of `shape` lies in exactly one block.
    fn assert_partition(shape: &[usize], blocks: &[Block]) {
        let total: usize = shape.iter().product();
        let mut seen = vec![0u8; total];
        for b in blocks {
            let n: usize = b.shape.iter().product();
            let mut pos = vec![0usize; shape.len()];
            for _ in 0..n {
                let mut flat = 0;
                for d in 0..shape.len() {
                    flat = flat * shape[d] + b.origin[d] + pos[d];
                }
                seen[flat] += 1;
                for d in (0..pos.len()).rev() {
                    pos[d] += 1;
                    if pos[d] < b.shape[d] {
                        break;
                    }
                    pos[d] = 0;
                }
            }
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "blocks overlap or leave holes"
        );
    }

    #[test]
    fn a_space_that_fits_is_one_block() {
        // 64 words fit 67-word windows whatever the alignment (4 words) costs.
        let acc = vec![(BufferId(0), Affine::contiguous(&[8, 8]))];
        let blocks = split(&[8, 8], &acc, &[false, false], &|_| true, limit(67)).unwrap();
        assert_eq!(blocks.len(), 1);
        let blocks = split(&[8, 8], &acc, &[false, false], &|_| true, limit(66)).unwrap();
        assert_eq!(blocks.len(), 2);
        let blocks = split(&[8, 8], &acc, &[false, false], &|_| true, limit(67)).unwrap();
        assert_eq!(
            blocks,
            vec![Block {
                origin: vec![0, 0],
                shape: vec![8, 8],
                accumulate: false
            }]
        );
    }

    #[test]
    fn rows_are_cut_until_each_window_fits() {
        // [100, 30] read and written densely; 256-word windows hold 8 rows after the
        // alignment slack (253 words), so halving stops at 6- or 7-row blocks.
        let at = Affine::contiguous(&[100, 30]);
        let acc = vec![(BufferId(0), at.clone()), (BufferId(1), at.clone())];
        let lim = limit(256);
        let blocks = split(&[100, 30], &acc, &[false, false], &|_| true, lim).unwrap();
        assert_partition(&[100, 30], &blocks);
        assert!(blocks.len() >= 100 * 30 / 256);
        for b in &blocks {
            assert_eq!(b.shape[1], 30, "rows, not columns, are cut: {b:?}");
            assert!(!b.accumulate);
            let (lo, hi) = extent(&at, &b.origin, &b.shape).unwrap();
            let w = lim.window(lo as usize, hi as usize);
            assert!(w.words <= lim.max_words && w.start.is_multiple_of(4) && w.start as i64 <= lo);
        }
    }

    #[test]
    fn a_cut_reduced_axis_accumulates_after_the_first_block() {
        // out[i] = sum_j x[i, j] over a [4, 1000] x: the reduced axis must be cut.
        let acc = vec![
            (BufferId(0), Affine::contiguous(&[4, 1000])),
            (
                BufferId(1),
                Affine {
                    offset: 0,
                    strides: vec![1, 0],
                },
            ),
        ];
        let blocks = split(&[4, 1000], &acc, &[false, true], &|_| true, limit(300)).unwrap();
        assert_partition(&[4, 1000], &blocks);
        for row in 0..4 {
            let covering: Vec<&Block> = blocks
                .iter()
                .filter(|b| b.origin[0] <= row && row < b.origin[0] + b.shape[0])
                .collect();
            assert!(covering.len() > 1);
            assert!(!covering[0].accumulate, "the first block writes");
            assert_eq!(covering[0].origin[1], 0);
            assert!(covering[1..].iter().all(|b| b.accumulate));
        }
    }

    #[test]
    fn only_buffers_that_need_windows_constrain_the_split() {
        let acc = vec![
            (BufferId(0), Affine::contiguous(&[64, 64])),
            (BufferId(1), Affine::contiguous(&[64, 64])),
        ];
        let blocks = split(&[64, 64], &acc, &[false, false], &|b| b.0 == 7, limit(16)).unwrap();
        assert_eq!(blocks.len(), 1);
    }

    #[test]
    fn accesses_too_far_apart_cannot_be_split() {
        // One buffer read at two places 10,000 words apart.
        let acc = vec![
            (BufferId(0), Affine::contiguous(&[4])),
            (
                BufferId(0),
                Affine {
                    offset: 10_000,
                    strides: vec![1],
                },
            ),
        ];
        let err = split(&[4], &acc, &[false], &|_| true, limit(1024)).unwrap_err();
        assert_eq!(err.buf, BufferId(0));
        assert!(err.words > 10_000);
    }
}

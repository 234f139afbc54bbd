//! Buffers and the affine accesses kernels read and write them through (offset +
//! stride per axis of the iteration space): views (expand, permute, slice, most
//! reshapes, sliding windows) are rewrites of these maps, never copies.

use std::fmt;

use aotgrad_ir::{SliceAxis, Window};

/// Index of a buffer in a lowered program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl BufferId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BufferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// An affine map from an iteration index to an element offset:
/// `offset + sum(index[d] * strides[d])`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Affine {
    pub offset: i64,
    pub strides: Vec<i64>,
}

/// `stride * factor` for a window's or a slice's step. A product past `i64` can only
/// belong to an axis of size 1 (a step or dilation wider than the whole axis; the
/// verified type rules out anything larger), where the stride is never multiplied by a
/// non-zero index, so it becomes 0 instead of wrapping.
fn scaled(stride: i64, factor: usize) -> i64 {
    i64::try_from(factor)
        .ok()
        .and_then(|f| stride.checked_mul(f))
        .unwrap_or(0)
}

impl Affine {
    /// Row-major contiguous strides of `shape`.
    pub fn contiguous(shape: &[usize]) -> Affine {
        let mut strides = vec![0i64; shape.len()];
        let mut acc = 1i64;
        for d in (0..shape.len()).rev() {
            strides[d] = if shape[d] == 1 { 0 } else { acc };
            acc *= shape[d] as i64;
        }
        Affine { offset: 0, strides }
    }

    /// Whether this reads `shape` as a dense row-major block from offset 0.
    pub fn is_contiguous(&self, shape: &[usize]) -> bool {
        self.offset == 0 && self.same_as(&Affine::contiguous(shape), shape)
    }

    /// Equal as maps over `shape` (strides of size-1 axes do not matter).
    pub fn same_as(&self, other: &Affine, shape: &[usize]) -> bool {
        self.offset == other.offset
            && shape
                .iter()
                .zip(self.strides.iter().zip(&other.strides))
                .all(|(&n, (a, b))| n == 1 || a == b)
    }

    /// Broadcast size-1 axes of `from` to `to` (same rank).
    pub fn expand(&self, from: &[usize], to: &[usize]) -> Affine {
        Affine {
            offset: self.offset,
            strides: self
                .strides
                .iter()
                .zip(from.iter().zip(to))
                .map(|(&s, (&f, &t))| if f == 1 && t != 1 { 0 } else { s })
                .collect(),
        }
    }

    pub fn permute(&self, perm: &[usize]) -> Affine {
        Affine {
            offset: self.offset,
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
        }
    }

    /// The windows of `Op::Unfold` over the last two axes: `[.., H, W]` becomes
    /// `[.., kh, kw, OH, OW]`, where moving one kernel step moves `dilation` input
    /// elements and one output step moves `stride` of them.
    /// Sliding windows as a view (see [`aotgrad_ir::Op::Unfold`]).
    pub fn unfold(&self, w: &Window) -> Affine {
        let r = self.strides.len();
        let (sh, sw) = (self.strides[r - 2], self.strides[r - 1]);
        let mut strides = self.strides[..r - 2].to_vec();
        strides.extend([
            scaled(sh, w.dilation[0]),
            scaled(sw, w.dilation[1]),
            scaled(sh, w.stride[0]),
            scaled(sw, w.stride[1]),
        ]);
        Affine {
            offset: self.offset,
            strides,
        }
    }

    pub fn slice(&self, ranges: &[SliceAxis]) -> Affine {
        let mut offset = self.offset;
        let strides = self
            .strides
            .iter()
            .zip(ranges)
            .map(|(&s, r)| match r {
                SliceAxis::Full => s,
                SliceAxis::Range { start, step, .. } => {
                    offset += *start as i64 * s;
                    scaled(s, *step)
                }
            })
            .collect();
        Affine { offset, strides }
    }

    /// The same elements viewed with shape `to` (row-major order preserved), if that is
    /// still affine (PyTorch's `view` rule: each group of merged axes must be
    /// stride-compatible).
    pub fn reshape(&self, from: &[usize], to: &[usize]) -> Option<Affine> {
        if from.contains(&0) || to.contains(&0) {
            return Some(Affine::contiguous(to));
        }
        // Drop size-1 axes: their stride is irrelevant.
        let src: Vec<(usize, i64)> = from
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let mut strides = vec![0i64; to.len()];
        let mut si = 0usize; // next source axis
        let mut ti = 0usize; // next target axis
        while ti < to.len() {
            if to[ti] == 1 {
                ti += 1;
                continue;
            }
            // A group of source axes and of target axes with the same element count.
            let (s0, t0) = (si, ti);
            let mut sp = src.get(si)?.0;
            si += 1;
            let mut tp = to[ti];
            ti += 1;
            while sp != tp {
                if sp < tp {
                    sp *= src.get(si)?.0;
                    si += 1;
                } else {
                    while *to.get(ti)? == 1 {
                        ti += 1;
                    }
                    tp *= to[ti];
                    ti += 1;
                }
            }
            // The source group must be one dense block: stride[k] = stride[k+1] * n[k+1].
            for k in s0..si - 1 {
                if src[k].1 != src[k + 1].1 * src[k + 1].0 as i64 {
                    return None;
                }
            }
            let mut acc = src[si - 1].1;
            for t in (t0..ti).rev() {
                if to[t] != 1 {
                    strides[t] = acc;
                    acc *= to[t] as i64;
                }
            }
        }
        (si == src.len()).then_some(Affine {
            offset: self.offset,
            strides,
        })
    }
}

//! The loop nest a kernel becomes: size-1 axes dropped and neighbouring axes that
//! every access walks contiguously merged, so most kernels are one or two loops; and
//! how the first axis is split over threads.

use crate::program::{Affine, FlatOp, LoopKernel, RowKernel, Target};

/// A loop kernel with size-1 axes dropped and mergeable neighbouring axes merged.
pub(super) struct Collapsed {
    pub shape: Vec<usize>,
    pub loads: Vec<Affine>,
    pub outs: Vec<Affine>,
    /// Per flat node: its `Index` affine, collapsed.
    pub index: Vec<Option<Affine>>,
}

pub(super) fn collapse(k: &LoopKernel) -> Collapsed {
    collapse_from(k, false)
}

/// [`collapse`], but with the first axis never merged into the next when `keep_first`
/// (a row kernel's stages index their rows by it).
pub(super) fn collapse_from(k: &LoopKernel, keep_first: bool) -> Collapsed {
    let mut all: Vec<&Affine> = k.loads.iter().map(|(_, a)| a).collect();
    all.extend(k.outs.iter().map(|o| &o.at));
    let index_nodes: Vec<(usize, &Affine)> = k
        .expr
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            FlatOp::Index(a) => Some((i, a)),
            _ => None,
        })
        .collect();
    all.extend(index_nodes.iter().map(|(_, a)| *a));
    let mut shape: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<i64>> = vec![Vec::new(); all.len()];
    for d in 0..k.shape.len() {
        let n = k.shape[d];
        if n == 1 {
            continue;
        }
        // With `keep_first`, nothing merges into the first axis kept.
        let onto_first = keep_first && shape.len() == 1;
        let merge = !shape.is_empty()
            && !onto_first
            && all
                .iter()
                .zip(&strides)
                .all(|(a, s)| *s.last().expect("same rank") == a.strides[d] * n as i64);
        if merge {
            *shape.last_mut().expect("non-empty") *= n;
            for (a, s) in all.iter().zip(strides.iter_mut()) {
                *s.last_mut().expect("same rank") = a.strides[d];
            }
        } else {
            shape.push(n);
            for (a, s) in all.iter().zip(strides.iter_mut()) {
                s.push(a.strides[d]);
            }
        }
    }
    if shape.is_empty() {
        shape.push(1);
        strides.iter_mut().for_each(|s| s.push(0));
    }
    let mut it = all.iter().zip(strides).map(|(a, strides)| Affine {
        offset: a.offset,
        strides,
    });
    let loads = (0..k.loads.len())
        .map(|_| it.next().expect("load"))
        .collect();
    let outs = (0..k.outs.len()).map(|_| it.next().expect("out")).collect();
    let mut index = vec![None; k.expr.nodes.len()];
    for (i, _) in index_nodes {
        index[i] = it.next();
    }
    Collapsed {
        shape,
        loads,
        outs,
        index,
    }
}

/// The length of a loop kernel's first (collapsed) axis: the range its `lo`/`hi`
/// parameters index.
pub fn split_len(k: &LoopKernel) -> i64 {
    let c = collapse(k);
    if c.shape.contains(&0) {
        0
    } else {
        c.shape[0] as i64
    }
}

/// Elements below which splitting a loop over threads costs more than it saves (a
/// rayon scope is a few microseconds; this is roughly 20 us of work).
pub const PARALLEL_MIN_ELEMS: usize = Target::CPU.parallel_min_elems;

/// Whether a loop kernel is worth splitting over threads: plain (each element its own),
/// large, and with a first axis to split.
pub fn parallel_worthy(k: &LoopKernel) -> bool {
    k.reduce.is_none()
        && k.shape.iter().product::<usize>() >= PARALLEL_MIN_ELEMS
        && split_len(k) > 1
}

/// Whether a row kernel is worth splitting over threads by rows.
pub fn rows_parallel_worthy(r: &RowKernel) -> bool {
    if r.serial() {
        return false;
    }
    let elems: usize = r
        .stages
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    elems >= PARALLEL_MIN_ELEMS
}

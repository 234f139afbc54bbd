//! The memory plan: in-place updates of persistent buffers, then arena offsets for the
//! intermediates by liveness over the kernel schedule.

use super::{BufferId, BufferKind, Kernel, KernelBody, LoopKernel, Program};

/// Arena offsets are multiples of this (a cache line; also enough for any vector load).
pub const ALIGN: usize = 64;

/// Moves the kernels that compute update values and whose results no later kernel
/// reads to the end of the schedule, ordered so that a kernel overwriting a persistent
/// buffer runs after every kernel that still reads it (the parameter's update before
/// the optimizer moments it reads, for Adam). That is what lets
/// [`updates_in_place`] write all of them in place.
pub(super) fn sink_update_kernels(p: &mut Program) {
    let sources: Vec<BufferId> = p
        .updates
        .iter()
        .filter_map(|u| u.source.as_ref().map(|(b, _)| *b))
        .filter(|b| matches!(p.buffer(*b).kind, BufferKind::Arena { .. }))
        .collect();
    let n = p.kernels.len();
    let sink: Vec<bool> = (0..n)
        .map(|t| {
            let out = p.kernels[t].output();
            sources.contains(&out)
                && !p.kernels[t + 1..].iter().any(|k| k.reads().contains(&out))
                && !p.outputs.iter().any(|o| o.buf == out)
        })
        .collect();
    let sunk: Vec<usize> = (0..n).filter(|&t| sink[t]).collect();
    // The persistent buffer each sunk kernel's value is destined for.
    let target_of = |t: usize| {
        let out = p.kernels[t].output();
        p.updates
            .iter()
            .find(|u| u.source.as_ref().is_some_and(|(b, _)| *b == out))
            .map(|u| u.target)
    };
    // Kahn's algorithm, stable by original position: `a` before `b` when `a` reads
    // the buffer `b` will overwrite.
    let mut order = Vec::with_capacity(sunk.len());
    let mut placed = vec![false; sunk.len()];
    while order.len() < sunk.len() {
        let ready = (0..sunk.len()).find(|&i| {
            !placed[i]
                && target_of(sunk[i]).is_none_or(|tgt| {
                    (0..sunk.len())
                        .all(|j| j == i || placed[j] || !p.kernels[sunk[j]].reads().contains(&tgt))
                })
        });
        // A cycle (two kernels each reading the other's target): keep the original
        // order for the rest; the in-place check then leaves some of them staged.
        let i = ready.unwrap_or_else(|| (0..sunk.len()).find(|&i| !placed[i]).expect("left"));
        placed[i] = true;
        order.push(sunk[i]);
    }
    let mut kernels: Vec<_> = (0..n)
        .filter(|&t| !sink[t])
        .map(|t| p.kernels[t].clone())
        .collect();
    kernels.extend(order.into_iter().map(|t| p.kernels[t].clone()));
    p.kernels = kernels;
}

/// Redirects an update's producing kernel to write the persistent buffer itself when
/// that is safe: the kernel is a plain (non-reducing) loop over the target's elements in
/// order, reads the old value only at the element it writes, and no later kernel and no
/// output reads the old value.
pub(super) fn updates_in_place(p: &mut Program) {
    for u in 0..p.updates.len() {
        let Some((src, at)) = p.updates[u].source.clone() else {
            continue;
        };
        let target = p.updates[u].target;
        let shape = p.updates[u].shape.clone();
        if !at.is_contiguous(&shape) || !matches!(p.buffer(src).kind, BufferKind::Arena { .. }) {
            continue;
        }
        let Some(k) = p.kernels.iter().position(|k| k.output() == src) else {
            continue;
        };
        let KernelBody::Loop(lk) = &p.kernels[k].body else {
            continue;
        };
        let out_at = &lk.outs[0].at;
        let elementwise = lk.reduce.is_none()
            && lk.outs.len() == 1
            && lk.shape == shape
            && out_at.is_contiguous(&shape)
            && lk
                .loads
                .iter()
                .all(|(b, a)| *b != target || a.same_as(out_at, &shape));
        let read_later = p.kernels[k + 1..]
            .iter()
            .any(|later| later.reads().contains(&target));
        let read_as_output = p.outputs.iter().any(|o| o.buf == target);
        let read_by_update = p
            .updates
            .iter()
            .enumerate()
            .any(|(i, v)| i != u && v.source.as_ref().is_some_and(|(b, _)| *b == target));
        // Another update copying from `src` after the call would now read the target,
        // which holds the same value: still correct.
        if elementwise && !read_later && !read_as_output && !read_by_update {
            for kernel in &mut p.kernels {
                kernel.rename(src, target);
            }
            for o in &mut p.outputs {
                if o.buf == src {
                    o.buf = target;
                }
            }
            for v in &mut p.updates {
                if let Some((b, _)) = &mut v.source
                    && *b == src
                {
                    *b = target;
                }
            }
            p.updates[u].source = None;
            p.buffers[src.index()].elems = 0;
        }
    }
}

/// Merges each plain loop kernel into the loop kernel just before it when both run over
/// the same domain and merging cannot change a value, so that one pass over memory
/// computes all their outputs and shares their common subexpressions (Adam's parameter
/// update and its two moment updates read the same gradient and moments). Never merges
/// reductions, matmuls or library kernels.
///
/// Merged, every load of an index happens before any store of it, so the second kernel
/// must not read what the first writes (it would see the old value), and where the
/// first reads what the second overwrites, it must read exactly the element being
/// written (an in-place update), through an access that visits each element once.
pub(super) fn merge_loops(p: &mut Program) {
    let mut merged: Vec<Kernel> = Vec::with_capacity(p.kernels.len());
    for k in std::mem::take(&mut p.kernels) {
        if let Some(prev) = merged.last_mut()
            && let (KernelBody::Loop(a), KernelBody::Loop(b)) = (&mut prev.body, &k.body)
            && can_merge(p, a, b)
        {
            merge_into(a, b);
            continue;
        }
        merged.push(k);
    }
    p.kernels = merged;
}

fn can_merge(p: &Program, a: &LoopKernel, b: &LoopKernel) -> bool {
    if a.reduce.is_some() || b.reduce.is_some() || a.shape != b.shape {
        return false;
    }
    // One element type for all outputs, so the loop vectorises as one.
    let dtype = p.buffer(a.outs[0].buf).dtype;
    if b.outs.iter().any(|o| p.buffer(o.buf).dtype != dtype) {
        return false;
    }
    let a_writes = |buf: BufferId| a.outs.iter().any(|o| o.buf == buf);
    if b.loads.iter().any(|(buf, _)| a_writes(*buf)) || b.outs.iter().any(|o| a_writes(o.buf)) {
        return false;
    }
    b.outs.iter().all(|o| {
        let visits_once = injective(&o.at, &a.shape);
        a.loads
            .iter()
            .all(|(buf, at)| *buf != o.buf || (visits_once && at.same_as(&o.at, &a.shape)))
    })
}

/// Whether `at` maps distinct indices of `shape` to distinct elements (no zero stride
/// on a non-trivial axis, strides that nest without overlap).
fn injective(at: &super::Affine, shape: &[usize]) -> bool {
    let mut axes: Vec<(i64, usize)> = at
        .strides
        .iter()
        .zip(shape)
        .filter(|&(_, &n)| n > 1)
        .map(|(&s, &n)| (s.abs(), n))
        .collect();
    axes.sort();
    let mut span = 1i64;
    for (s, n) in axes {
        if s < span {
            return false;
        }
        span = s * n as i64;
    }
    true
}

fn merge_into(a: &mut LoopKernel, b: &LoopKernel) {
    let load_map: Vec<usize> = b
        .loads
        .iter()
        .map(|l| {
            a.loads.iter().position(|x| x == l).unwrap_or_else(|| {
                a.loads.push(l.clone());
                a.loads.len() - 1
            })
        })
        .collect();
    let at = a.expr.absorb(&b.expr, &load_map);
    a.outs.extend(b.outs.iter().map(|o| super::Store {
        value: at[o.value],
        ..o.clone()
    }));
}

/// Live ranges over the schedule, then a greedy first-fit placement of the arena
/// buffers (largest first) so that buffers whose ranges overlap never share bytes.
pub(super) fn assign_offsets(p: &mut Program) {
    let end = p.kernels.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; p.buffers.len()];
    let mut touch = |b: BufferId, t: usize| {
        let r = &mut live[b.index()];
        *r = Some(match *r {
            None => (t, t),
            Some((a, z)) => (a.min(t), z.max(t)),
        });
    };
    for (t, k) in p.kernels.iter().enumerate() {
        for b in k.outputs() {
            touch(b, t);
        }
        for b in k.reads() {
            touch(b, t);
        }
    }
    for o in &p.outputs {
        touch(o.buf, end);
    }
    for u in &p.updates {
        if let Some((b, _)) = &u.source {
            touch(*b, end);
        }
    }
    let bufs: Vec<usize> = (0..p.buffers.len())
        .filter(|&i| {
            matches!(p.buffers[i].kind, BufferKind::Arena { .. })
                && p.buffers[i].elems > 0
                && live[i].is_some()
        })
        .collect();
    let size = |i: usize| p.buffers[i].bytes().div_ceil(ALIGN) * ALIGN;
    let range = |i: usize| live[i].expect("filtered");
    // First-fit is a heuristic: the placement depends on the order buffers are placed
    // in. A few orders cost microseconds each; keep the smallest arena (ties: the
    // first order, so the plan is deterministic).
    let orders: [&dyn Fn(usize) -> (i64, i64, usize); 4] = [
        &|i| (-(size(i) as i64), 0, i),
        &|i| (range(i).0 as i64, -(size(i) as i64), i),
        &|i| (-((range(i).1 - range(i).0) as i64), -(size(i) as i64), i),
        &|i| (-((size(i) * (range(i).1 - range(i).0 + 1)) as i64), 0, i),
    ];
    let mut best: Option<(usize, Vec<(usize, usize)>)> = None;
    for key in orders {
        let mut order = bufs.clone();
        order.sort_by_key(|&i| key(i));
        let (arena, offsets) = first_fit(&order, &size, &range);
        if best.as_ref().is_none_or(|(b, _)| arena < *b) {
            best = Some((arena, offsets));
        }
    }
    let (arena, offsets) = best.unwrap_or_default();
    for (i, offset) in offsets {
        p.buffers[i].kind = BufferKind::Arena { offset };
    }
    p.arena_bytes = arena;
    p.live = live;
}

/// Places `order`'s buffers one by one at the lowest offset that does not overlap a
/// placed buffer with an overlapping live range; the arena size and each offset.
fn first_fit(
    order: &[usize],
    size: &dyn Fn(usize) -> usize,
    range: &dyn Fn(usize) -> (usize, usize),
) -> (usize, Vec<(usize, usize)>) {
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (offset, bytes, live)
    let mut offsets = Vec::with_capacity(order.len());
    let mut arena = 0usize;
    for &i in order {
        let bytes = size(i);
        let (a, z) = range(i);
        let mut clashes: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, (pa, pz))| *pa <= z && a <= *pz)
            .map(|(o, n, _)| (*o, *n))
            .collect();
        clashes.sort();
        let mut offset = 0usize;
        for (o, n) in clashes {
            if offset + bytes <= o {
                break;
            }
            offset = offset.max(o + n);
        }
        placed.push((offset, bytes, (a, z)));
        arena = arena.max(offset + bytes);
        offsets.push((i, offset));
    }
    (arena, offsets)
}

//! The memory plan: in-place updates of persistent buffers, then arena offsets for the
//! intermediates by liveness over the kernel schedule.

use super::{BufferId, BufferKind, KernelBody, Program};

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
        let elementwise = lk.reduce.is_none()
            && lk.shape == shape
            && lk.out_at.is_contiguous(&shape)
            && lk
                .loads
                .iter()
                .all(|(b, a)| *b != target || a.same_as(&lk.out_at, &shape));
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
        touch(k.output(), t);
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
    let mut order: Vec<usize> = (0..p.buffers.len())
        .filter(|&i| {
            matches!(p.buffers[i].kind, BufferKind::Arena { .. })
                && p.buffers[i].elems > 0
                && live[i].is_some()
        })
        .collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(p.buffers[i].bytes()), i));
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (offset, bytes, live)
    let mut arena = 0usize;
    for i in order {
        let bytes = p.buffers[i].bytes().div_ceil(ALIGN) * ALIGN;
        let (a, z) = live[i].expect("filtered");
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
        p.buffers[i].kind = BufferKind::Arena { offset };
    }
    p.arena_bytes = arena;
    p.live = live;
}

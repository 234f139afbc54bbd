//! The memory plan: in-place updates of persistent buffers, then arena offsets for the
//! intermediates by liveness over the kernel schedule.

use super::{
    BufferId, BufferKind, Kernel, KernelBody, LoopKernel, LowerOptions, MatMulKernel, ParamLayout,
    Program, RowKernel,
};

use crate::program::Target;
use crate::program::liveness::{live_ranges, peak_live};

/// Moves the wait of every collective (see [`crate::program::WaitKernel`]) from right
/// after its start down to just before the first kernel that reads its result (or the
/// end, for a result only the caller reads): the kernels in between run while the
/// reduction moves over the network. Their relative order is unchanged, so no value
/// changes; only the result's buffer is live (reserved) for longer. Each wait moves past
/// kernels that neither read nor write its buffer, which the memory plan (run after
/// this pass) guarantees for the rest of the buffer's live range.
pub(super) fn overlap_collectives(p: &mut Program) {
    // From the last wait up, so that each one can move down to the next's new place:
    // the waits keep their starts' order (the order the results arrive in).
    let waits: Vec<usize> = (0..p.kernels.len())
        .filter(|&t| matches!(p.kernels[t].body, KernelBody::Wait(_)))
        .collect();
    for &t in waits.iter().rev() {
        let out = p.kernels[t].output();
        let stops = |k: &Kernel| {
            matches!(k.body, KernelBody::Wait(_))
                || k.reads().contains(&out)
                || k.outputs().contains(&out)
        };
        let to = (t + 1..p.kernels.len())
            .find(|&u| stops(&p.kernels[u]))
            .unwrap_or(p.kernels.len());
        let wait = p.kernels.remove(t);
        p.kernels.insert(to - 1, wait);
    }
}

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
        // A kernel that can fail on an index never writes a persistent buffer: a
        // failing step leaves parameters and optimizer state as they were.
        let elementwise = lk.reduce.is_none()
            && !lk.is_indexed()
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
    if (a.is_indexed() || b.is_indexed()) && (writes_persistent(p, a) || writes_persistent(p, b)) {
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

/// Whether loop `k` writes a parameter's or optimizer state's buffer.
fn writes_persistent(p: &Program, k: &LoopKernel) -> bool {
    k.outs
        .iter()
        .any(|o| matches!(p.buffer(o.buf).kind, BufferKind::Persistent(_)))
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

/// Moves every scalar loop kernel (a domain of one element: a learning rate's bias
/// correction, a step counter) up to just after the last kernel it depends on. Their
/// buffers are a few bytes, and computing them early lets the kernels that read them
/// move up too (a matmul epilogue that applies an optimizer update, below).
pub(super) fn hoist_scalar_loops(p: &mut Program) {
    for u in 0..p.kernels.len() {
        let KernelBody::Loop(lk) = &p.kernels[u].body else {
            continue;
        };
        if lk.reduce.is_some() || lk.shape.iter().product::<usize>() != 1 {
            continue;
        }
        let mut q = u;
        while q > 0 && independent(&p.kernels[q - 1], &p.kernels[u]) {
            q -= 1;
        }
        if q < u {
            let k = p.kernels.remove(u);
            p.kernels.insert(q, k);
        }
    }
}

/// Whether two kernels may run in either order: neither writes what the other reads or
/// writes.
fn independent(x: &Kernel, y: &Kernel) -> bool {
    let (xr, xw, yr, yw) = (x.reads(), x.outputs(), y.reads(), y.outputs());
    !xw.iter().any(|b| yr.contains(b) || yw.contains(b)) && !yw.iter().any(|b| xr.contains(b))
}

/// Fuses into each float matrix product the first later kernel that reads its result,
/// when that kernel can run on each block of the product as soon as the block exists
/// (a matmul *epilogue*: the forward's bias + ReLU, the backward's ReLU mask, an
/// optimizer update after a weight gradient). Conditions:
/// - it is a plain loop over the product's `[batch..., m, n]` (up to size-1 axes) that
///   reads the product only at the element its index names, or, for a product batched
///   over one axis, a loop that reads each entry's block in another order
///   ([`per_batch_permutation`]: a convolution's bias + ReLU in pooling layout);
/// - it writes neither operand nor the product (the product's blocks may be computed
///   concurrently, each followed by its part of the epilogue);
/// - it can move up to the product past the kernels in between ([`independent`]), or,
///   where it cannot, the product can move down to it: no kernel in between writes an
///   operand;
/// - the schedule change does not raise the most bytes live at once (moving a product
///   down keeps its operands alive longer).
///
/// Never fuses two products (only loop kernels are epilogues), so no matmul is
/// duplicated or merged with another.
pub(super) fn fuse_epilogues(p: &mut Program) {
    let mut peak = peak_live(p, &p.kernels);
    let mut t = 0;
    while t < p.kernels.len() {
        if let Some(kernels) = fused_at(p, t) {
            let after = peak_live(p, &kernels);
            if after <= peak {
                p.kernels = kernels;
                peak = after;
                // Index `t` now holds the fused product or the kernel after it.
                continue;
            }
        }
        t += 1;
    }
}

/// The schedule with product `t` and its epilogue fused, if it has one that qualifies.
fn fused_at(p: &Program, t: usize) -> Option<Vec<Kernel>> {
    let ks = &p.kernels;
    let KernelBody::MatMul(m) = &ks[t].body else {
        return None;
    };
    if m.epilogue.is_some() || !m.dtype.is_float() {
        return None;
    }
    let c = m.c;
    let domain = m.domain();
    let own = [m.a.0, m.b.0, c];
    // The first plain loop reading the product that qualifies (a reduction reading it
    // first, such as a bias gradient, is no obstacle when the epilogue can move up).
    let (u, epilogue) = (t + 1..ks.len()).find_map(|u| {
        let KernelBody::Loop(lk) = &ks[u].body else {
            return None;
        };
        // An epilogue runs inside the product's call, past the step's checks between
        // kernels, and may update parameters: one that can fail on an index stays apart.
        if lk.reduce.is_some() || lk.is_indexed() || !lk.loads.iter().any(|(b, _)| *b == c) {
            return None;
        }
        if lk.outs.iter().any(|o| own.contains(&o.buf)) {
            return None;
        }
        if let Some(e) = lk.reshaped(&domain)
            && e.reads_in_order(c, &domain)
        {
            return Some((u, e));
        }
        per_batch_permutation(m, lk).then(|| (u, lk.clone()))
    })?;
    // The epilogue moves up to `q`, the product down to just before it: the kernels it
    // passes must neither read its result nor change its operands.
    let mut q = u;
    while q > t + 1 && independent(&ks[q - 1], &ks[u]) {
        q -= 1;
    }
    let passes = ks[t + 1..q]
        .iter()
        .any(|k| k.reads().contains(&c) || k.outputs().iter().any(|b| *b == m.a.0 || *b == m.b.0));
    if passes {
        return None;
    }
    let mut fused = ks[t].clone();
    if let KernelBody::MatMul(fm) = &mut fused.body {
        fm.epilogue = Some(Box::new(epilogue));
    }
    let mut out = Vec::with_capacity(ks.len() - 1);
    out.extend_from_slice(&ks[..t]);
    out.extend_from_slice(&ks[t + 1..q]);
    out.push(fused);
    out.extend_from_slice(&ks[q..u]);
    out.extend_from_slice(&ks[u + 1..]);
    Some(out)
}

/// Whether loop `lk` reads product `m` (batched over one axis) as a permutation of each
/// batch entry's block: its first axis is the batch and walks the blocks, and the rest
/// of its index visits every element of the block once (a convolution's bias + ReLU
/// written in the pooling windows' order). Such an epilogue can run after each batch
/// entry's product, though not inside a tile.
fn per_batch_permutation(m: &MatMulKernel, lk: &LoopKernel) -> bool {
    let batches: usize = m.batch.iter().product();
    let block = m.m * m.n;
    let one_batch_axis = m.batch.iter().filter(|&&b| b > 1).count() == 1;
    if !one_batch_axis || lk.shape.first() != Some(&batches) {
        return false;
    }
    let rest: usize = lk.shape[1..].iter().product();
    lk.loads.iter().filter(|(b, _)| *b == m.c).all(|(_, at)| {
        let span: i64 = at.strides[1..]
            .iter()
            .zip(&lk.shape[1..])
            .map(|(&s, &n)| s * (n as i64 - 1))
            .sum();
        at.offset == 0
            && at.strides[0] == block as i64
            && at.strides.iter().all(|&s| s >= 0)
            && rest == block
            && span < block as i64
            && injective(at, &lk.shape)
    })
}

/// Joins runs of neighbouring loop kernels that share their first axis into row
/// kernels ([`super::RowKernel`]): each row runs every stage in order, so softmax's max,
/// shifted exponentials, sum and log-probabilities read a row of logits while it is in
/// cache, in one kernel. A loop joins the run when
/// - its first axis has the run's extent (more than 1) and is not reduced;
/// - every buffer it shares with an earlier stage, where either writes it, is accessed
///   by both in *row blocks*: the same first-axis stride `s`, and what every access
///   touches on row `r` lying in one block `[b + r*s, b + (r+1)*s)` (a gather's loads
///   count with the whole axis they may read). Then row `r` of one stage touches only
///   what row `r` of the others does, so running row by row reads and writes the same
///   values as running stage by stage;
/// - no stage can fail on an index while a stage writes a persistent buffer (a failing
///   step must leave parameters and optimizer state untouched);
/// - no earlier stage touches a buffer it reduces into (each row's part is filled
///   with the identity just before the stage runs on the row);
/// - the schedule's peak of live bytes does not rise.
///
/// Each stage computes every element with the same code as on its own (its first axis
/// is never merged with the next, so the inner loops are unchanged), so results are
/// bitwise those of the unfused program.
pub(super) fn fuse_rows(p: &mut Program, target: Target) {
    let mut peak = peak_live(p, &p.kernels);
    let mut t = 0;
    while t + 1 < p.kernels.len() {
        let stages = match &p.kernels[t].body {
            KernelBody::Loop(a) => vec![a.clone()],
            KernelBody::Rows(r) => r.stages.clone(),
            _ => {
                t += 1;
                continue;
            }
        };
        let joined = match &p.kernels[t + 1].body {
            KernelBody::Loop(b) => row_join(p, &stages, b, target),
            _ => None,
        };
        let Some(rows) = joined else {
            t += 1;
            continue;
        };
        // Joined in place and undone if the peak rises: a copy of the whole kernel
        // list per candidate made this quadratic in deep copies (most of the 2 s
        // compile of the unrolled LSTM's 1000-odd kernels).
        let next = p.kernels.remove(t + 1);
        let KernelBody::Loop(b) = next.body else {
            unreachable!("checked above")
        };
        let mut stages = stages;
        stages.push(b);
        let before = std::mem::replace(
            &mut p.kernels[t].body,
            KernelBody::Rows(RowKernel { rows, stages }),
        );
        let after = peak_live(p, &p.kernels);
        if after <= peak {
            peak = after;
        } else {
            let KernelBody::Rows(mut joined) = std::mem::replace(&mut p.kernels[t].body, before)
            else {
                unreachable!("set just above")
            };
            let b = joined.stages.pop().expect("the stage pushed above");
            p.kernels.insert(
                t + 1,
                Kernel {
                    node: next.node,
                    body: KernelBody::Loop(b),
                },
            );
            t += 1;
        }
    }
    // Stages of one element per row gain nothing from running row by row, and on
    // their own they vectorise across the rows: such row kernels are split again
    // (which only shortens live ranges).
    let kernels = std::mem::take(&mut p.kernels);
    for k in kernels {
        match &k.body {
            KernelBody::Rows(r) if r.stages.iter().all(|s| one_per_row(s, r.rows)) => {
                p.kernels.extend(r.stages.iter().map(|s| Kernel {
                    node: s.outs[0].node,
                    body: KernelBody::Loop(s.clone()),
                }));
            }
            _ => p.kernels.push(k),
        }
    }
}

fn one_per_row(k: &LoopKernel, rows: usize) -> bool {
    k.shape.iter().product::<usize>() == rows
}

/// The rows extent when loop `b` can run as a stage after `stages` (see [`fuse_rows`]).
fn row_join(p: &Program, stages: &[LoopKernel], b: &LoopKernel, target: Target) -> Option<usize> {
    let rows = row_extent(&stages[0])?;
    if stages.iter().any(|s| row_extent(s) != Some(rows)) || row_extent(b) != Some(rows) {
        return None;
    }
    let joined = || stages.iter().chain(std::iter::once(b));
    if joined().any(LoopKernel::is_indexed) && joined().any(|k| writes_persistent(p, k)) {
        return None;
    }
    let writes = |k: &LoopKernel, buf: BufferId| k.outs.iter().any(|o| o.buf == buf);
    let accesses = |k: &LoopKernel, buf: BufferId| -> Vec<super::Affine> {
        k.loads
            .iter()
            .filter(|(x, _)| *x == buf)
            .map(|(_, a)| a.clone())
            .chain(k.outs.iter().filter(|o| o.buf == buf).map(|o| o.at.clone()))
            .collect()
    };
    let mut bufs: Vec<BufferId> = b.loads.iter().map(|(x, _)| *x).collect();
    bufs.extend(b.outs.iter().map(|o| o.buf));
    bufs.sort();
    bufs.dedup();
    // A stage summing across rows makes the kernel serial: not worth it where the
    // stages would otherwise split over threads.
    let serial = joined().any(LoopKernel::reduces_rows);
    let elems: usize = joined().map(|k| k.shape.iter().product::<usize>()).sum();
    if serial && elems >= target.parallel_min_elems {
        return None;
    }
    // What a stage reducing across rows writes holds a partial sum until the last row:
    // no other stage may touch it (and the row-block rule below does not apply to it).
    let partial: Vec<BufferId> = joined()
        .filter(|k| k.reduces_rows())
        .flat_map(|k| k.outs.iter().map(|o| o.buf))
        .collect();
    for &buf in &partial {
        if joined().filter(|k| !accesses(k, buf).is_empty()).count() > 1 {
            return None;
        }
    }
    for buf in bufs {
        if partial.contains(&buf) {
            continue;
        }
        // Every access to `buf` by `b` and by the earlier stages, with its domain.
        let mut all: Vec<(super::Affine, &[usize])> = Vec::new();
        let mut earlier_writes = false;
        for s in stages {
            let found = accesses(s, buf);
            earlier_writes |= writes(s, buf);
            all.extend(found.into_iter().map(|a| (a, s.shape.as_slice())));
        }
        if all.is_empty() {
            continue;
        }
        if b.reduce.is_some() && writes(b, buf) {
            return None;
        }
        if !writes(b, buf) && !earlier_writes {
            continue; // read by both, written by neither
        }
        all.extend(
            accesses(b, buf)
                .into_iter()
                .map(|a| (a, b.shape.as_slice())),
        );
        // Every access's part of row `r` lies in one common block of the rows' stride.
        let spans: Option<Vec<(i64, i64, i64)>> =
            all.iter().map(|(a, shape)| row_span(a, shape)).collect();
        let spans = spans?;
        let s = spans[0].2;
        let start = spans.iter().map(|x| x.0).min()?;
        let end = spans.iter().map(|x| x.1).max()?;
        if spans.iter().any(|x| x.2 != s) || end >= start + s {
            return None;
        }
    }
    Some(rows)
}

/// The first-axis extent of a loop that can be a row stage: more than one row, the
/// first axis kept or reduced as a whole, nothing empty.
fn row_extent(k: &LoopKernel) -> Option<usize> {
    let rows = *k.shape.first()?;
    let elems: usize = k.shape.iter().product();
    let kept = k.outs.iter().all(|o| o.at.strides[0] != 0);
    (rows > 1 && elems > 0 && (kept || k.reduces_rows())).then_some(rows)
}

/// `(lo, hi, s)` when access `at` over `shape` touches, on row `r`, elements within
/// `[lo + r*s, hi + r*s]` with `0 <= hi - lo < s`: rows `s > 0` apart that never overlap.
fn row_span(at: &super::Affine, shape: &[usize]) -> Option<(i64, i64, i64)> {
    let s = at.strides[0];
    let (mut lo, mut hi) = (0i64, 0i64);
    for (&st, &n) in at.strides.iter().zip(shape).skip(1) {
        let reach = st * (n as i64 - 1);
        lo += reach.min(0);
        hi += reach.max(0);
    }
    (s > 0 && hi - lo < s).then_some((at.offset + lo, at.offset + hi, s))
}

/// Live ranges over the schedule, then a greedy first-fit placement of the arena
/// buffers (largest first) so that buffers whose ranges overlap never share bytes.
pub(super) fn assign_offsets(p: &mut Program) {
    let live = live_ranges(p, &p.kernels);
    let bufs: Vec<usize> = (0..p.buffers.len())
        .filter(|&i| {
            matches!(p.buffers[i].kind, BufferKind::Arena { .. })
                && p.buffers[i].elems > 0
                && live[i].is_some()
        })
        .collect();
    let align = p.arena_align;
    let size = |i: usize| p.buffers[i].bytes().div_ceil(align) * align;
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

/// One kernel-plan pass: a named `Program -> Program` rewrite run after the graph is
/// lowered, as the graph passes are (`passes::optimize_with`).
pub struct PlanPass<'a> {
    pub name: &'static str,
    run: Box<dyn Fn(&mut Program) + 'a>,
}

impl PlanPass<'_> {
    pub(super) fn run(&self, p: &mut Program) {
        (self.run)(p)
    }
}

/// The kernel-plan passes `opts` (and a parameter arena's `layout`) select, in order.
/// `assign_offsets` (the memory plan) is always last.
pub fn plan_passes<'a>(opts: LowerOptions, layout: Option<&'a ParamLayout>) -> Vec<PlanPass<'a>> {
    fn pass<'a>(name: &'static str, run: impl Fn(&mut Program) + 'a) -> PlanPass<'a> {
        PlanPass {
            name,
            run: Box::new(run),
        }
    }
    let mut passes = Vec::new();
    if opts.in_place_updates {
        passes.push(pass("sink_update_kernels", sink_update_kernels));
        passes.push(pass("updates_in_place", updates_in_place));
    }
    if opts.fuse {
        passes.push(pass("merge_loops", merge_loops));
        passes.push(pass("hoist_scalar_loops", hoist_scalar_loops));
        passes.push(pass("fuse_epilogues", fuse_epilogues));
        if opts.rows {
            passes.push(pass("fuse_rows", move |p| fuse_rows(p, opts.target)));
        }
        if let Some(layout) = layout {
            passes.push(pass("merge_update_loops", move |p| {
                super::param_arena::merge_update_loops(p, layout)
            }));
        }
    }
    passes.push(pass("overlap_collectives", overlap_collectives));
    passes.push(pass("assign_offsets", assign_offsets));
    passes
}

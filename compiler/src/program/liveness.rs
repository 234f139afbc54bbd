//! Liveness over a kernel schedule: when each buffer is first and last touched, and the
//! most arena bytes live at once (no memory plan can use less).

use super::{BufferId, BufferKind, Kernel, Program};

/// `(first kernel, last kernel)` each buffer is touched over, in schedule `kernels`
/// (outputs and staged updates are read after the last kernel).
pub fn live_ranges(p: &Program, kernels: &[Kernel]) -> Vec<Option<(usize, usize)>> {
    let end = kernels.len();
    let mut live: Vec<Option<(usize, usize)>> = vec![None; p.buffers.len()];
    let mut touch = |b: BufferId, t: usize| {
        let r = &mut live[b.index()];
        *r = Some(match *r {
            None => (t, t),
            Some((a, z)) => (a.min(t), z.max(t)),
        });
    };
    for (t, k) in kernels.iter().enumerate() {
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
    live
}

/// The most arena bytes live at once in schedule `kernels`.
pub fn peak_live(p: &Program, kernels: &[Kernel]) -> usize {
    let live = live_ranges(p, kernels);
    let mut delta = vec![0i64; kernels.len() + 2];
    for (b, r) in p.buffers.iter().zip(&live) {
        if let (BufferKind::Arena { .. }, true, Some((a, z))) = (&b.kind, b.elems > 0, r) {
            let bytes = (b.bytes().div_ceil(p.arena_align) * p.arena_align) as i64;
            delta[*a] += bytes;
            delta[z + 1] -= bytes;
        }
    }
    let mut cur = 0i64;
    let mut peak = 0i64;
    for d in delta {
        cur += d;
        peak = peak.max(cur);
    }
    peak as usize
}

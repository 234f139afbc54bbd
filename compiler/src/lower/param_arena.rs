//! The parameter arena: every parameter and optimizer-state tensor of a model at a fixed
//! byte offset in one allocation, laid out so that the optimizer's per-parameter update
//! loops become one loop over neighbouring tensors.
//!
//! Why: the weight updates of an MLP are fused into the epilogues of the GEMMs that
//! produce their gradients (no pass over memory of their own), but every bias update
//! is a loop of its own over a few hundred elements. With the biases side by side in
//! the arena (and their moments side by side, and their gradients placed side by side
//! in the activation arena), the three bias updates of Adam become one loop over all
//! bias elements: one kernel instead of three, one vector loop instead of three short
//! ones with three scalar tails. This is PyTorch's `_foreach`/fused optimizers' idea,
//! done ahead of time with the storage laid out for it instead of a pointer list.
//!
//! The layout is decided once per model ([`ParamLayout::for_training`]) and shared by
//! every program of the model (step, eval, predict), so the runtime keeps one
//! [`ParamLayout`]-shaped allocation. Lowering is told the layout
//! ([`super::lower_for_arena`]) and merges update loops only where the layout puts
//! their tensors next to each other ([`merge_update_loops`]); a program lowered
//! without a layout is exactly what it was before.

use aotgrad_ir::DType;

use super::{Affine, Buffer, BufferId, BufferKind, Kernel, KernelBody, LoopKernel, Program, Store};

/// Byte offsets of tensors that are not packed against their neighbour: a cache line,
/// as in the activation arena.
pub const PARAM_ALIGN: usize = 64;

/// One tensor of a [`ParamLayout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSlot {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Bytes from the start of the arena.
    pub offset: usize,
}

impl ParamSlot {
    pub fn elems(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> usize {
        self.elems() * self.dtype.size_bytes()
    }
}

/// Where every persistent tensor of a model lives in its parameter arena.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParamLayout {
    slots: Vec<ParamSlot>,
    bytes: usize,
}

impl ParamLayout {
    /// Lays out `params` (declaration order) and `state` (any order) for training:
    /// grouped by *role* (the parameters, then each kind of per-parameter state such as
    /// `.exp_avg`, then state that belongs to no parameter such as `optim.step` or
    /// running statistics), and within a role the matrices (rank 2 and up) before the
    /// vectors. Each matrix and the first vector of a role start on a cache line; the
    /// other vectors of the role are packed right after the one before, so the biases of
    /// all layers, and each of their moments, are contiguous runs in the same order.
    pub fn for_training(
        params: &[(String, DType, Vec<usize>)],
        state: &[(String, DType, Vec<usize>)],
    ) -> ParamLayout {
        // The role of a state tensor: the suffix after the longest parameter name it
        // extends (`0.bias.exp_avg` -> `.exp_avg`); `None` if it extends none.
        let role = |name: &str| {
            params
                .iter()
                .filter(|(p, _, _)| {
                    name.len() > p.len()
                        && name.starts_with(p.as_str())
                        && name[p.len()..].starts_with('.')
                })
                .max_by_key(|(p, _, _)| p.len())
                .map(|(p, _, _)| (name[p.len()..].to_string(), p.clone()))
        };
        let param_index = |p: &str| params.iter().position(|(n, _, _)| n == p).unwrap_or(0);
        let mut roles: Vec<String> = state
            .iter()
            .filter_map(|(n, _, _)| role(n))
            .map(|r| r.0)
            .collect();
        roles.sort();
        roles.dedup();
        let matrix = |shape: &[usize]| shape.len() >= 2;
        let mut layout = ParamLayout::default();
        let mut place = |items: Vec<&(String, DType, Vec<usize>)>| {
            let (mats, vecs): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, _, s)| matrix(s));
            for (i, (name, dtype, shape)) in mats.iter().chain(&vecs).enumerate() {
                let packed = i > mats.len(); // a vector after the role's first vector
                let align = if packed {
                    dtype.size_bytes()
                } else {
                    PARAM_ALIGN
                };
                let offset = layout.bytes.div_ceil(align) * align;
                let slot = ParamSlot {
                    name: name.clone(),
                    dtype: *dtype,
                    shape: shape.clone(),
                    offset,
                };
                layout.bytes = offset + slot.bytes();
                layout.slots.push(slot);
            }
        };
        place(params.iter().collect());
        for r in &roles {
            let mut items: Vec<_> = state
                .iter()
                .filter(|(n, _, _)| role(n).is_some_and(|(x, _)| x == *r))
                .collect();
            items.sort_by_key(|(n, _, _)| param_index(&role(n).expect("filtered").1));
            place(items);
        }
        let mut rest: Vec<_> = state.iter().filter(|(n, _, _)| role(n).is_none()).collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        place(rest);
        layout
    }

    pub fn slots(&self) -> &[ParamSlot] {
        &self.slots
    }

    pub fn slot(&self, name: &str) -> Option<&ParamSlot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// Total bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// How one load or store of a candidate loop takes part in a merged loop.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// The same buffer and (broadcast) access in every member: a learning rate, a
    /// bias-correction scalar.
    Shared(BufferId, Affine),
    /// A dense buffer of the loop's size that differs per member: the parameter, its
    /// moments, its gradient.
    Dense(BufferId),
}

/// A loop the merge can take: a plain elementwise loop that writes persistent buffers,
/// every access either a broadcast scalar or dense over the whole buffer.
struct Candidate {
    at: usize,
    elems: usize,
    loads: Vec<Operand>,
    outs: Vec<BufferId>,
}

fn candidate(p: &Program, at: usize, k: &Kernel) -> Option<Candidate> {
    let KernelBody::Loop(l) = &k.body else {
        return None;
    };
    let elems: usize = l.shape.iter().product();
    // An iota's value depends on the index, which the merged loop shifts.
    let iota = l
        .expr
        .nodes
        .iter()
        .any(|n| matches!(n.op, super::FlatOp::Index(_)));
    if l.reduce.is_some() || l.is_indexed() || iota || elems == 0 {
        return None;
    }
    let dense = |b: BufferId, a: &Affine| a.is_contiguous(&l.shape) && p.buffer(b).elems == elems;
    let loads = l
        .loads
        .iter()
        .map(|(b, a)| {
            if a.strides.iter().all(|&s| s == 0) {
                Some(Operand::Shared(*b, a.clone()))
            } else if dense(*b, a) {
                Some(Operand::Dense(*b))
            } else {
                None
            }
        })
        .collect::<Option<Vec<_>>>()?;
    let outs: Vec<BufferId> = l
        .outs
        .iter()
        .map(|o| dense(o.buf, &o.at).then_some(o.buf))
        .collect::<Option<_>>()?;
    let persistent = |b: &BufferId| matches!(p.buffer(*b).kind, BufferKind::Persistent(_));
    outs.iter().all(persistent).then_some(Candidate {
        at,
        elems,
        loads,
        outs,
    })
}

fn loop_of<'p>(p: &'p Program, c: &Candidate) -> &'p LoopKernel {
    match &p.kernels[c.at].body {
        KernelBody::Loop(l) => l,
        _ => unreachable!("candidates are loops"),
    }
}

/// Whether `b` can follow `a` in one merged loop: the same expression and the same
/// shared operands, dense operands of one dtype, and every persistent dense operand of
/// `b` starting in the arena exactly where `a`'s ends.
fn follows(p: &Program, layout: &ParamLayout, a: &Candidate, b: &Candidate) -> bool {
    let (la, lb) = (loop_of(p, a), loop_of(p, b));
    if la.expr != lb.expr
        || a.loads.len() != b.loads.len()
        || a.outs.len() != b.outs.len()
        || la
            .outs
            .iter()
            .zip(&lb.outs)
            .any(|(x, y)| x.value != y.value)
    {
        return false;
    }
    let next = |x: BufferId, y: BufferId| {
        let (bx, by) = (p.buffer(x), p.buffer(y));
        if bx.dtype != by.dtype || x == y {
            return false;
        }
        match (&bx.kind, &by.kind) {
            (BufferKind::Persistent(nx), BufferKind::Persistent(ny)) => {
                match (layout.slot(nx), layout.slot(ny)) {
                    (Some(sx), Some(sy)) => sy.offset == sx.offset + sx.bytes(),
                    _ => false,
                }
            }
            (BufferKind::Arena { .. }, BufferKind::Arena { .. }) => true,
            _ => false,
        }
    };
    a.loads.iter().zip(&b.loads).all(|(x, y)| match (x, y) {
        (Operand::Shared(bx, ax), Operand::Shared(by, ay)) => bx == by && ax == ay,
        (Operand::Dense(x), Operand::Dense(y)) => next(*x, *y),
        _ => false,
    }) && a.outs.iter().zip(&b.outs).all(|(x, y)| next(*x, *y))
}

/// Whether an arena buffer can move into a group buffer at an offset: only loops and
/// row kernels touch it (their accesses carry offsets; a matmul's or a library call's
/// operands are assumed to start at their buffer), and it is not read after the call.
fn relocatable(p: &Program, b: BufferId) -> bool {
    p.kernels.iter().all(|k| match &k.body {
        KernelBody::Loop(_) | KernelBody::Rows(_) => true,
        _ => !k.reads().contains(&b) && !k.outputs().contains(&b),
    }) && !p.outputs.iter().any(|o| o.buf == b)
        && !p
            .updates
            .iter()
            .any(|u| u.target == b || u.source.as_ref().is_some_and(|(s, _)| *s == b))
}

/// Whether the members of `chain` can all run at the position of the last of them:
/// no member reads another's output, and no kernel scheduled between a member and
/// that position touches what the member writes or writes what it reads.
fn movable(p: &Program, chain: &[&Candidate]) -> bool {
    let last = chain.iter().map(|c| c.at).max().expect("non-empty");
    let members: Vec<usize> = chain.iter().map(|c| c.at).collect();
    chain.iter().all(|c| {
        let k = &p.kernels[c.at];
        let reads = k.reads();
        let outs = k.outputs();
        let others_outs: Vec<BufferId> = chain
            .iter()
            .filter(|o| o.at != c.at)
            .flat_map(|o| o.outs.clone())
            .collect();
        reads.iter().all(|r| !others_outs.contains(r))
            && (c.at + 1..last).all(|t| {
                let other = &p.kernels[t];
                members.contains(&t)
                    || (other.reads().iter().all(|r| !outs.contains(r))
                        && other
                            .outputs()
                            .iter()
                            .all(|w| !outs.contains(w) && !reads.contains(w)))
            })
    })
}

/// Merges update loops whose tensors are neighbours in `layout` into one loop over all
/// of them (see the module doc). Each dense persistent operand becomes a
/// [`BufferKind::PersistentSpan`] over the members' tensors; each dense arena operand
/// (a gradient) becomes one arena buffer that the members' buffers are moved into, at
/// consecutive offsets, in every kernel that touches them. Runs after the other plan
/// passes and before arena offsets are assigned. Values are unchanged bit for bit: the
/// merged loop evaluates the same expression on the same elements.
pub(super) fn merge_update_loops(p: &mut Program, layout: &ParamLayout) {
    let candidates: Vec<Candidate> = p
        .kernels
        .iter()
        .enumerate()
        .filter_map(|(t, k)| candidate(p, t, k))
        .collect();
    // Chains in arena order: start from a member no other member precedes.
    let mut used = vec![false; candidates.len()];
    let mut chains: Vec<Vec<usize>> = Vec::new();
    for s in 0..candidates.len() {
        if used[s]
            || (0..candidates.len())
                .any(|o| o != s && follows(p, layout, &candidates[o], &candidates[s]))
        {
            continue;
        }
        let mut chain = vec![s];
        used[s] = true;
        while let Some(n) = (0..candidates.len()).find(|&n| {
            !used[n]
                && follows(
                    p,
                    layout,
                    &candidates[*chain.last().expect("non-empty")],
                    &candidates[n],
                )
        }) {
            chain.push(n);
            used[n] = true;
        }
        chains.push(chain);
    }
    let mut replaced: Vec<(usize, Vec<usize>, Kernel)> = Vec::new();
    for chain in chains.into_iter().filter(|c| c.len() > 1) {
        let members: Vec<&Candidate> = chain.iter().map(|&i| &candidates[i]).collect();
        let arena_operands: Vec<BufferId> = members
            .iter()
            .flat_map(|c| c.loads.iter())
            .filter_map(|o| match o {
                Operand::Dense(b) if matches!(p.buffer(*b).kind, BufferKind::Arena { .. }) => {
                    Some(*b)
                }
                _ => None,
            })
            .collect();
        if !movable(p, &members) || !arena_operands.iter().all(|&b| relocatable(p, b)) {
            continue;
        }
        let merged = build(p, &members);
        let last = members.iter().map(|c| c.at).max().expect("non-empty");
        replaced.push((last, members.iter().map(|c| c.at).collect(), merged));
    }
    if replaced.is_empty() {
        return;
    }
    let gone: Vec<usize> = replaced.iter().flat_map(|(_, m, _)| m.clone()).collect();
    let mut kernels = Vec::with_capacity(p.kernels.len());
    for (t, k) in std::mem::take(&mut p.kernels).into_iter().enumerate() {
        if let Some((_, _, merged)) = replaced.iter().find(|(last, _, _)| *last == t) {
            kernels.push(merged.clone());
        } else if !gone.contains(&t) {
            kernels.push(k);
        }
    }
    p.kernels = kernels;
}

/// The merged loop of `members` (in arena order), creating its span and group
/// buffers and moving the members' gradient buffers into the groups.
fn build(p: &mut Program, members: &[&Candidate]) -> Kernel {
    let total: usize = members.iter().map(|c| c.elems).sum();
    let first = loop_of(p, members[0]).clone();
    let node = p.kernels[members[0].at].node;
    let contiguous = Affine {
        offset: 0,
        strides: vec![1],
    };
    // One buffer over all members' buffers at operand position `pos`.
    let group = |p: &mut Program, bufs: Vec<BufferId>| -> BufferId {
        let b0 = p.buffer(bufs[0]).clone();
        let id = BufferId(p.buffers.len() as u32);
        let kind = match &b0.kind {
            BufferKind::Persistent(_) => {
                let span = BufferKind::PersistentSpan(
                    bufs.iter()
                        .map(|b| match &p.buffer(*b).kind {
                            BufferKind::Persistent(n) => n.clone(),
                            _ => unreachable!("checked by `follows`"),
                        })
                        .collect(),
                );
                // A tensor read and updated in place: the load and the store share
                // one span buffer.
                if let Some(i) = p.buffers.iter().position(|b| b.kind == span) {
                    return BufferId(i as u32);
                }
                span
            }
            _ => {
                let mut at = 0i64;
                for &b in &bufs {
                    let n = p.buffer(b).elems;
                    for k in &mut p.kernels {
                        k.relocate(b, id, at);
                    }
                    p.buffers[b.index()].elems = 0;
                    at += n as i64;
                }
                BufferKind::Arena { offset: 0 }
            }
        };
        p.buffers.push(Buffer {
            kind,
            dtype: b0.dtype,
            elems: total,
            node: None,
        });
        id
    };
    let mut loads = Vec::with_capacity(first.loads.len());
    for (pos, op) in members[0].loads.iter().enumerate() {
        loads.push(match op {
            Operand::Shared(b, a) => (
                *b,
                Affine {
                    offset: a.offset,
                    strides: vec![0],
                },
            ),
            Operand::Dense(_) => {
                let bufs = members
                    .iter()
                    .map(|c| match c.loads[pos] {
                        Operand::Dense(b) => b,
                        Operand::Shared(..) => unreachable!("checked by `follows`"),
                    })
                    .collect();
                (group(p, bufs), contiguous.clone())
            }
        });
    }
    let mut outs = Vec::with_capacity(first.outs.len());
    for (pos, o) in first.outs.iter().enumerate() {
        let bufs = members.iter().map(|c| c.outs[pos]).collect();
        outs.push(Store {
            buf: group(p, bufs),
            at: contiguous.clone(),
            value: o.value,
            node: o.node,
        });
    }
    Kernel {
        node,
        body: KernelBody::Loop(LoopKernel {
            shape: vec![total],
            loads,
            expr: first.expr,
            outs,
            reduce: None,
        }),
    }
}

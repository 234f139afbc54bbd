//! The lowered program: a schedule of kernels over buffers with a memory plan, what
//! the lowering produces (`crate::lower`), the kernel-plan passes rewrite, and the code
//! generators (`crate::codegen`) render. It prints as text ([`print`]) and checks its
//! own accesses ([`Program::check_bounds`]); nothing here depends on a backend.

mod affine;
mod bounds;
mod flat;
pub mod liveness;
mod print;
pub mod target;

use std::collections::BTreeMap;
use std::sync::Arc;

use aotgrad_ir::{DType, Data, NodeId, ReduceOp, Scalar};

pub use affine::{Affine, BufferId};
pub use bounds::BoundsError;
pub use flat::{Flat, FlatNode, FlatOp, gather_end};
pub use print::explain_fusion;
pub use target::Target;

/// Sizes bound to a graph's symbols.
pub type SymbolEnv = BTreeMap<Arc<str>, usize>;

/// Where a buffer's storage comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum BufferKind {
    /// A tensor passed in by the caller on every call.
    Input(String),
    /// A parameter or state tensor that lives across calls.
    Persistent(String),
    /// Consecutive persistent tensors of one dtype seen as one buffer: the tensors a
    /// merged optimizer loop updates (see [`param_arena`]). The caller's storage must
    /// hold them back to back in this order (a parameter arena does).
    PersistentSpan(Vec<String>),
    /// Dense constant data embedded in the program.
    Const(Data),
    /// An intermediate in the activation arena; `offset` is set by the memory plan.
    Arena { offset: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Buffer {
    pub kind: BufferKind,
    pub dtype: DType,
    pub elems: usize,
    /// The graph node whose value this buffer holds.
    pub node: Option<NodeId>,
}

impl Buffer {
    pub fn bytes(&self) -> usize {
        self.elems * self.dtype.size_bytes()
    }
}

/// A fused loop nest over `shape`: evaluates `expr` at every index and stores each
/// output's value at its access (or, for a reduction, combines it into the single
/// output, whose strides are zero on the reduced axes; the output is first filled with
/// the reduction's identity).
///
/// A plain loop can have several outputs: neighbouring loops over the same domain are
/// merged (see `plan::merge_loops`) so that, for Adam, a parameter and both moments are
/// updated in one pass over memory. Per index, every load happens before any store.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopKernel {
    pub shape: Vec<usize>,
    pub loads: Vec<(BufferId, Affine)>,
    pub expr: Flat,
    pub outs: Vec<Store>,
    pub reduce: Option<ReduceOp>,
}

impl LoopKernel {
    /// Applies `f` to every affine access: loads, stores and iota (`Index`) values.
    pub(crate) fn map_accesses(&mut self, f: &dyn Fn(&Affine) -> Affine) {
        self.loads.iter_mut().for_each(|(_, a)| *a = f(a));
        self.outs.iter_mut().for_each(|o| o.at = f(&o.at));
        for n in &mut self.expr.nodes {
            if let FlatOp::Index(a) = &mut n.op {
                *a = f(a);
            }
        }
    }

    /// The same kernel over `to`, a shape with the same axes of size above 1 in the
    /// same order (only size-1 axes added or removed); `None` when the axes differ.
    pub fn reshaped(&self, to: &[usize]) -> Option<LoopKernel> {
        let from: Vec<usize> = (0..self.shape.len())
            .filter(|&d| self.shape[d] > 1)
            .collect();
        let onto: Vec<usize> = (0..to.len()).filter(|&d| to[d] > 1).collect();
        if from.len() != onto.len()
            || from
                .iter()
                .zip(&onto)
                .any(|(&a, &b)| self.shape[a] != to[b])
        {
            return None;
        }
        let mut k = self.clone();
        k.shape = to.to_vec();
        k.map_accesses(&|a| {
            let mut strides = vec![0; to.len()];
            for (&a_d, &b_d) in from.iter().zip(&onto) {
                strides[b_d] = a.strides[a_d];
            }
            Affine {
                offset: a.offset,
                strides,
            }
        });
        Some(k)
    }

    /// Whether the kernel runs over `domain` and reads `buf` (dense over `domain`) only
    /// at the element its index names.
    /// A reduction over the first axis (its outputs do not move along it): as a row
    /// stage, it adds every row into one output, so its row kernel runs serially.
    pub fn reduces_rows(&self) -> bool {
        self.reduce.is_some() && self.outs.iter().all(|o| o.at.strides[0] == 0)
    }

    /// Whether the expression gathers or checks an index (see [`Tree::Checked`]): the
    /// kernel can fail, so the step checks for that right after it.
    pub fn is_indexed(&self) -> bool {
        self.expr.nodes.iter().any(|n| n.op.is_indexed())
    }

    pub fn reads_in_order(&self, buf: BufferId, domain: &[usize]) -> bool {
        self.shape == domain
            && self
                .loads
                .iter()
                .all(|(b, at)| *b != buf || at.is_contiguous(domain))
    }

    /// The kernel restricted to the block of its domain that starts at `origin` and has
    /// `shape`: every access shifted to the block's first element.
    pub fn sub_block(&self, origin: &[usize], shape: &[usize]) -> LoopKernel {
        let mut k = self.clone();
        k.shape = shape.to_vec();
        k.map_accesses(&|a| Affine {
            offset: a.offset
                + origin
                    .iter()
                    .zip(&a.strides)
                    .map(|(&o, &s)| o as i64 * s)
                    .sum::<i64>(),
            strides: a.strides.clone(),
        });
        k
    }
}

/// One output of a loop kernel: `expr.nodes[value]` stored into `buf` through `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    pub buf: BufferId,
    pub at: Affine,
    pub value: usize,
    /// The graph node whose value this is (named by check-numerics).
    pub node: NodeId,
}

/// A batched matrix product `c[b] = a[b] @ b[b]`, each operand read through an affine
/// access over `[batch..., rows, cols]`; `c` is dense row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct MatMulKernel {
    pub dtype: DType,
    pub batch: Vec<usize>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: (BufferId, Affine),
    pub b: (BufferId, Affine),
    pub c: BufferId,
    /// A plain loop kernel fused into the product (see `plan::fuse_epilogues`), so a
    /// backend may run it on each block of `c` as soon as that block is computed, while
    /// the block is still in cache (bias + ReLU in forward, the ReLU mask in backward,
    /// an optimizer update after a weight gradient). Either *in order* (see
    /// [`MatMulKernel::epilogue_in_order`]) or, for a product batched over one axis, a
    /// loop whose first axis is the batch and which reads each entry's block of `c` in
    /// another order (a convolution's bias + ReLU in the pooling windows' layout).
    pub epilogue: Option<Box<LoopKernel>>,
}

impl MatMulKernel {
    /// `[batch..., m, n]`: the shape of `c`.
    pub fn domain(&self) -> Vec<usize> {
        let mut d = self.batch.clone();
        d.extend([self.m, self.n]);
        d
    }

    /// Whether the epilogue runs over `c`'s own domain and reads `c` only at the element
    /// its index names: then any block of `c` (a tile, one element) can be finished on
    /// its own.
    pub fn epilogue_in_order(&self) -> bool {
        self.epilogue
            .as_deref()
            .is_some_and(|e| e.reads_in_order(self.c, &self.domain()))
    }
}

/// An op without a generated kernel yet (gather, scatter-add, pad, concat, argmax,
/// random, integer matmul, ...): the backend runs its reference implementation on dense
/// operands. Listed by name in the printed program so it is visible.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryKernel {
    pub inputs: Vec<(BufferId, Vec<usize>)>,
    pub out: BufferId,
    pub shape: Vec<usize>,
}

/// Loop kernels that share their first axis, the *rows*, run as one kernel: for each
/// row, every stage in order on that row alone (softmax's max, shifted exponentials,
/// sum and log-probabilities over a batch of logits; its gradient's row sum and
/// combination). A row's values stay in cache from one stage to the next, and one
/// kernel replaces several passes. `plan::fuse_rows` decides which loops join and why
/// that cannot change a value.
#[derive(Debug, Clone, PartialEq)]
pub struct RowKernel {
    /// The extent of every stage's first axis.
    pub rows: usize,
    /// Each over `[rows, ..]`; a stage that reduces its first axis (`reduces_rows`)
    /// owns its output, which no other stage touches.
    pub stages: Vec<LoopKernel>,
}

impl RowKernel {
    /// Whether some stage sums across rows: the rows then run in order on one thread
    /// (that stage adds row after row, the interpreter's order).
    pub fn serial(&self) -> bool {
        self.stages.iter().any(LoopKernel::reduces_rows)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum KernelBody {
    Loop(LoopKernel),
    Rows(RowKernel),
    MatMul(MatMulKernel),
    Library(LibraryKernel),
    Wait(WaitKernel),
}

/// The end of a collective: the library kernel of an `all_reduce` node *starts* the
/// reduction over the process group (it takes a copy of its input and hands it to the
/// group's communication thread); this kernel, of the same node, waits for the result
/// and writes it to `out`. In between, the step goes on computing: the lowering places
/// the wait right after its start, and the plan pass `overlap_collectives` moves it down
/// to just before the first kernel that reads `out`. `out` is live (reserved by the
/// memory plan) from the start to its last reader, so nothing else is placed there
/// while the result is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitKernel {
    pub out: BufferId,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// The graph node whose value this kernel produces.
    pub node: NodeId,
    pub body: KernelBody,
}

impl Kernel {
    /// The buffer this kernel writes (the first one, for a merged loop).
    pub fn output(&self) -> BufferId {
        match &self.body {
            KernelBody::Loop(k) => k.outs[0].buf,
            KernelBody::Rows(r) => r.stages[0].outs[0].buf,
            KernelBody::MatMul(k) => k.c,
            KernelBody::Library(k) => k.out,
            KernelBody::Wait(w) => w.out,
        }
    }

    /// Every buffer this kernel writes.
    pub fn outputs(&self) -> Vec<BufferId> {
        self.output_nodes().into_iter().map(|(b, _)| b).collect()
    }

    /// Every output with the graph node whose value it holds (check-numerics names it).
    pub fn output_nodes(&self) -> Vec<(BufferId, NodeId)> {
        match &self.body {
            KernelBody::Loop(l) => l.outs.iter().map(|o| (o.buf, o.node)).collect(),
            KernelBody::Rows(r) => r
                .stages
                .iter()
                .flat_map(|l| l.outs.iter().map(|o| (o.buf, o.node)))
                .collect(),
            KernelBody::MatMul(m) => {
                let mut outs = vec![(m.c, self.node)];
                if let Some(e) = &m.epilogue {
                    outs.extend(e.outs.iter().map(|o| (o.buf, o.node)));
                }
                outs
            }
            KernelBody::Library(l) => vec![(l.out, self.node)],
            KernelBody::Wait(w) => vec![(w.out, self.node)],
        }
    }

    /// Every buffer this kernel reads.
    pub fn reads(&self) -> Vec<BufferId> {
        match &self.body {
            KernelBody::Loop(k) => k.loads.iter().map(|(b, _)| *b).collect(),
            KernelBody::Rows(r) => r
                .stages
                .iter()
                .flat_map(|l| l.loads.iter().map(|(b, _)| *b))
                .collect(),
            KernelBody::MatMul(k) => {
                let mut reads = vec![k.a.0, k.b.0];
                if let Some(e) = &k.epilogue {
                    reads.extend(e.loads.iter().map(|(b, _)| *b));
                }
                reads
            }
            KernelBody::Library(k) => k.inputs.iter().map(|(b, _)| *b).collect(),
            KernelBody::Wait(_) => Vec::new(),
        }
    }

    /// Moves buffer `from` into buffer `to`, starting `offset` elements in: every access
    /// of a loop or row kernel is shifted (other kernels must not touch `from`).
    pub(crate) fn relocate(&mut self, from: BufferId, to: BufferId, offset: i64) {
        let shift = |l: &mut LoopKernel| {
            for (b, a) in &mut l.loads {
                if *b == from {
                    *b = to;
                    a.offset += offset;
                }
            }
            for s in &mut l.outs {
                if s.buf == from {
                    s.buf = to;
                    s.at.offset += offset;
                }
            }
        };
        match &mut self.body {
            KernelBody::Loop(l) => shift(l),
            KernelBody::Rows(r) => r.stages.iter_mut().for_each(shift),
            KernelBody::MatMul(_) | KernelBody::Library(_) | KernelBody::Wait(_) => {
                debug_assert!(!self.reads().contains(&from) && !self.outputs().contains(&from));
            }
        }
    }

    pub(crate) fn rename(&mut self, from: BufferId, to: BufferId) {
        let r = |b: &mut BufferId| {
            if *b == from {
                *b = to;
            }
        };
        match &mut self.body {
            KernelBody::Loop(k) => {
                k.loads.iter_mut().for_each(|(b, _)| r(b));
                k.outs.iter_mut().for_each(|s| r(&mut s.buf));
            }
            KernelBody::Rows(rows) => {
                for k in &mut rows.stages {
                    k.loads.iter_mut().for_each(|(b, _)| r(b));
                    k.outs.iter_mut().for_each(|s| r(&mut s.buf));
                }
            }
            KernelBody::MatMul(k) => {
                r(&mut k.a.0);
                r(&mut k.b.0);
                r(&mut k.c);
                if let Some(e) = &mut k.epilogue {
                    e.loads.iter_mut().for_each(|(b, _)| r(b));
                    e.outs.iter_mut().for_each(|s| r(&mut s.buf));
                }
            }
            KernelBody::Library(k) => {
                k.inputs.iter_mut().for_each(|(b, _)| r(b));
                r(&mut k.out);
            }
            KernelBody::Wait(w) => r(&mut w.out),
        }
    }
}

/// A graph output: read from `buf` through `at` over `shape` after the call.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    pub buf: BufferId,
    pub at: Affine,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// A persistent tensor's new value.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSpec {
    pub name: String,
    pub target: BufferId,
    /// `None` when a kernel already wrote the value in place; otherwise copy from here
    /// (through the affine access over the target's shape) after the call.
    pub source: Option<(BufferId, Affine)>,
    pub shape: Vec<usize>,
}

/// The lowered program: what a backend compiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub name: String,
    /// The symbol sizes this program is specialised to.
    pub env: SymbolEnv,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub outputs: Vec<OutputSpec>,
    pub updates: Vec<UpdateSpec>,
    /// Bytes of the activation arena after reuse.
    pub arena_bytes: usize,
    /// Arena offsets (and the sizes reserved per buffer) are multiples of this.
    pub arena_align: usize,
    /// `(first kernel, last kernel)` each arena buffer is live over.
    pub live: Vec<Option<(usize, usize)>>,
    /// Every graph value written to a buffer, with the reason it was not fused into its
    /// consumers (`aotgrad opt --explain-fusion`); not part of the printed program.
    pub stored: Vec<(NodeId, String)>,
    /// Arena buffers the forward pass (the nodes the graph's outputs depend on) writes
    /// and a later, backward or update kernel reads: the activations saved for backward.
    pub saved: Vec<BufferId>,
}

impl Program {
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.index()]
    }

    /// The kernel that starts the collective of `node` (its library kernel), if the
    /// node is a collective of this program.
    pub fn start_of(&self, node: NodeId) -> Option<usize> {
        let is_collective = self
            .kernels
            .iter()
            .any(|k| k.node == node && matches!(k.body, KernelBody::Wait(_)));
        is_collective
            .then(|| {
                self.kernels
                    .iter()
                    .position(|k| k.node == node && matches!(k.body, KernelBody::Library(_)))
            })
            .flatten()
    }

    /// The most bytes of arena buffers live at once (each rounded up to the arena's
    /// alignment): no placement can use a smaller arena, so `arena_bytes` equal to this
    /// is an optimal plan.
    pub fn peak_live_bytes(&self) -> usize {
        liveness::peak_live(self, &self.kernels)
    }

    /// Sum of the sizes of all arena buffers (what the arena would be without reuse).
    pub fn intermediate_bytes(&self) -> usize {
        self.buffers
            .iter()
            .filter(|b| matches!(b.kind, BufferKind::Arena { .. }))
            .map(Buffer::bytes)
            .sum()
    }
}

/// The reduction's identity element (what the output is filled with before combining).
pub fn reduce_identity(op: ReduceOp, dtype: DType) -> Scalar {
    match (op, dtype) {
        (ReduceOp::Sum, d) => Scalar::zero(d),
        (ReduceOp::Prod, d) => Scalar::one(d),
        (ReduceOp::Max, DType::F32) => Scalar::F32(f32::NEG_INFINITY),
        (ReduceOp::Max, DType::F64) => Scalar::F64(f64::NEG_INFINITY),
        (ReduceOp::Min, DType::F32) => Scalar::F32(f32::INFINITY),
        (ReduceOp::Min, DType::F64) => Scalar::F64(f64::INFINITY),
        (ReduceOp::Max, DType::U8) => Scalar::U8(0),
        (ReduceOp::Min, DType::U8) => Scalar::U8(u8::MAX),
        (ReduceOp::Max, DType::I32) => Scalar::I32(i32::MIN),
        (ReduceOp::Min, DType::I32) => Scalar::I32(i32::MAX),
        (ReduceOp::Max, DType::I64) => Scalar::I64(i64::MIN),
        (ReduceOp::Min, DType::I64) => Scalar::I64(i64::MAX),
        (_, DType::Bool) => Scalar::Bool(op == ReduceOp::Min),
    }
}

//! Lowering: a verified graph with its symbols bound becomes a *lowered program*, a
//! schedule of kernels over buffers with a memory plan. Backends (Cranelift, WGSL)
//! emit code for this program; nothing about the graph is interpreted at run time.
//!
//! The decisions made here, in one place:
//! - **Views are free.** Expand, permute, slice and (stride-compatible) reshape rewrite
//!   the affine accesses of the value's leaves; they never become kernels.
//! - **Elementwise fusion.** Elementwise ops build a tree; a tree becomes a loop kernel
//!   only when its value must exist in memory: it is a root, an operand of a matmul or a
//!   library op, or it is used more than once and too costly to recompute
//!   ([`RECOMPUTE_LIMIT`]). Cheap shared values (a bias add, a ReLU mask) are recomputed
//!   in each consumer instead of being stored: that is the "recompute vs save" choice.
//! - **Reductions absorb their producers**: the reduce kernel evaluates the input tree.
//! - **Matmuls read any affine operand**, so transposes fold into the GEMM's strides and
//!   never materialise.
//! - **Updates in place**: a parameter's or state's new value is written straight into
//!   its persistent buffer when the kernel reads the old value only at the same element
//!   and nothing later reads the old value.
//! - **Memory plan**: intermediate buffers get offsets in one arena, reused across
//!   non-overlapping live ranges.

pub mod expr;
pub mod param_arena;
mod plan;
mod print;

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use aotgrad_ir::{
    BinaryOp, ConstValue, DType, Data, Graph, NodeId, Op, ReduceOp, Scalar, SliceAxis, verify,
};

pub use expr::{Affine, BufferId, Flat, FlatNode, FlatOp, Node, Tree};
pub use param_arena::{ParamLayout, ParamSlot};
pub use print::explain_fusion;

/// A tree whose per-element cost is at most this is recomputed in every consumer
/// rather than stored (see the module doc).
pub const RECOMPUTE_LIMIT: usize = 4;

/// Float matrix products of at most this many multiply-adds become a generated loop
/// nest (a sum over `k`) instead of a call into the GEMM: for the 1-feature and
/// few-feature models (linear and logistic regression) the call, packing and tiling
/// would cost more than the arithmetic.
pub const SMALL_MATMUL: usize = 4096;
/// Trees larger than this are stored, which bounds the code size of one kernel.
pub const MAX_TREE: usize = 96;

/// Sizes bound to a graph's symbols.
pub type SymbolEnv = BTreeMap<Arc<str>, usize>;

/// Why a graph could not be lowered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("the graph does not verify: {0}")]
    Invalid(String),
    #[error("{node} has symbolic shape {shape} and its symbols are not all bound")]
    Unbound { node: NodeId, shape: String },
    #[error("{node} (`{op}`): {error}")]
    TooLarge {
        node: NodeId,
        op: &'static str,
        error: aotgrad_ir::TooLarge,
    },
}

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
    fn map_accesses(&mut self, f: &dyn Fn(&Affine) -> Affine) {
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
        }
    }

    /// Moves buffer `from` into buffer `to`, starting `offset` elements in: every access
    /// of a loop or row kernel is shifted (other kernels must not touch `from`).
    fn relocate(&mut self, from: BufferId, to: BufferId, offset: i64) {
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
            KernelBody::MatMul(_) | KernelBody::Library(_) => {
                debug_assert!(!self.reads().contains(&from) && !self.outputs().contains(&from));
            }
        }
    }

    fn rename(&mut self, from: BufferId, to: BufferId) {
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

/// Options of the lowering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowerOptions {
    /// Write updates into persistent buffers inside the step. Off when the caller must
    /// be able to discard a step (checked mode), so updates are staged in the arena.
    pub in_place_updates: bool,
    /// Fuse elementwise trees across ops (`-O2`); off, every op is its own kernel
    /// (`-O0`, to bisect a miscompile).
    pub fuse: bool,
    /// With `fuse`, join neighbouring loops over the same rows into row kernels
    /// (`plan::fuse_rows`); off to compare with or bisect it.
    pub rows: bool,
    /// Arena offsets are multiples of this many bytes: [`plan::ALIGN`] (a cache line)
    /// on the CPU; the GPU asks for WebGPU's largest storage-offset alignment, so a
    /// binding window that starts inside a buffer never reaches into the one before.
    pub arena_align: usize,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            in_place_updates: true,
            fuse: true,
            rows: true,
            arena_align: plan::ALIGN,
        }
    }
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

    /// The most bytes of arena buffers live at once (each rounded up to the arena's
    /// alignment): no placement can use a smaller arena, so `arena_bytes` equal to this
    /// is an optimal plan.
    pub fn peak_live_bytes(&self) -> usize {
        plan::peak_live(self, &self.kernels)
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

/// Lowers `graph` with its symbols bound by `env`.
pub fn lower(graph: &Graph, env: &SymbolEnv, opts: LowerOptions) -> Result<Program, LowerError> {
    lower_in(graph, env, opts, None)
}

/// [`lower`] for parameters and state that live in a parameter arena laid out as
/// `layout`: update loops over neighbouring tensors merge into one
/// ([`param_arena::merge_update_loops`]), and the program then needs storage with that
/// layout (spans of [`BufferKind::PersistentSpan`]).
pub fn lower_for_arena(
    graph: &Graph,
    env: &SymbolEnv,
    opts: LowerOptions,
    layout: &ParamLayout,
) -> Result<Program, LowerError> {
    lower_in(graph, env, opts, Some(layout))
}

fn lower_in(
    graph: &Graph,
    env: &SymbolEnv,
    opts: LowerOptions,
    layout: Option<&ParamLayout>,
) -> Result<Program, LowerError> {
    verify(graph).map_err(|e| LowerError::Invalid(e.to_string()))?;
    let mut l = Lowerer::new(graph, env, opts)?;
    for (id, _) in graph.nodes() {
        if l.live[id.index()] {
            l.node(id);
        }
    }
    let mut p = l.finish();
    if opts.in_place_updates {
        plan::sink_update_kernels(&mut p);
        plan::updates_in_place(&mut p);
    }
    if opts.fuse {
        plan::merge_loops(&mut p);
        plan::hoist_scalar_loops(&mut p);
        plan::fuse_epilogues(&mut p);
        if opts.rows {
            plan::fuse_rows(&mut p);
        }
        if let Some(layout) = layout {
            param_arena::merge_update_loops(&mut p, layout);
        }
    }
    plan::assign_offsets(&mut p);
    p.saved = saved_for_backward(graph, &p);
    Ok(p)
}

struct Lowerer<'g> {
    g: &'g Graph,
    opts: LowerOptions,
    shapes: Vec<Vec<usize>>,
    uses: Vec<usize>,
    live: Vec<bool>,
    vals: Vec<Option<Rc<Node>>>,
    buffers: Vec<Buffer>,
    kernels: Vec<Kernel>,
    persistent: HashMap<String, BufferId>,
    env: SymbolEnv,
    /// The node being lowered (named when it needs an operand in memory).
    current: NodeId,
    stored: Vec<(NodeId, String)>,
}

impl<'g> Lowerer<'g> {
    fn new(g: &'g Graph, env: &SymbolEnv, opts: LowerOptions) -> Result<Self, LowerError> {
        let mut shapes = Vec::with_capacity(g.len());
        let mut uses = vec![0usize; g.len()];
        for (id, n) in g.nodes() {
            let s = aotgrad_ir::limits::bind_checked(&n.ty, env)
                .map_err(|error| LowerError::TooLarge {
                    node: id,
                    op: n.op.name(),
                    error,
                })?
                .ok_or_else(|| LowerError::Unbound {
                    node: id,
                    shape: n.ty.shape.to_string(),
                })?;
            shapes.push(s);
            for i in &n.inputs {
                uses[i.index()] += 1;
            }
        }
        let mut live = vec![false; g.len()];
        for (_, id) in g.outputs() {
            uses[id.index()] += 1;
            live[id.index()] = true;
        }
        for (t, v) in g.updates() {
            uses[v.index()] += 1;
            live[v.index()] = true;
            live[t.index()] = true;
        }
        g.mark_inputs(&mut live);
        Ok(Lowerer {
            g,
            opts,
            shapes,
            uses,
            live,
            vals: vec![None; g.len()],
            buffers: Vec::new(),
            kernels: Vec::new(),
            persistent: HashMap::new(),
            env: env.clone(),
            current: NodeId(0),
            stored: Vec::new(),
        })
    }

    fn buffer(&mut self, kind: BufferKind, dtype: DType, elems: usize, node: NodeId) -> BufferId {
        self.buffers.push(Buffer {
            kind,
            dtype,
            elems,
            node: Some(node),
        });
        BufferId(self.buffers.len() as u32 - 1)
    }

    fn val(&self, id: NodeId) -> Rc<Node> {
        self.vals[id.index()]
            .clone()
            .expect("operands are lowered before their users")
    }

    fn leaf(&mut self, id: NodeId, kind: BufferKind) -> Rc<Node> {
        let shape = self.shapes[id.index()].clone();
        let dtype = self.g.ty(id).dtype;
        let buf = self.buffer(kind, dtype, shape.iter().product(), id);
        Node::new(
            Tree::Load {
                buf,
                at: Affine::contiguous(&shape),
            },
            dtype,
        )
    }

    /// A fresh arena buffer for the value of `id` (dense, row-major over its shape) and
    /// the load that reads the value back.
    fn arena_value(&mut self, id: NodeId, dtype: DType) -> (BufferId, Rc<Node>) {
        let shape = &self.shapes[id.index()];
        let (elems, at) = (shape.iter().product(), Affine::contiguous(shape));
        let buf = self.buffer(BufferKind::Arena { offset: 0 }, dtype, elems, id);
        (buf, Node::new(Tree::Load { buf, at }, dtype))
    }

    /// Records that `id`'s kernel (a reduction, matmul or library kernel) writes its
    /// result to memory by nature.
    fn stored_by_kernel(&mut self, id: NodeId, what: &str) {
        self.stored
            .push((id, format!("{what} writes its result to memory")));
    }

    /// Stores `tree` (the value of `id`) in a fresh arena buffer with a loop kernel;
    /// `why` it was not fused goes to `--explain-fusion`.
    fn store(&mut self, id: NodeId, tree: &Rc<Node>, why: String) -> Rc<Node> {
        self.stored.push((id, why));
        let shape = self.shapes[id.index()].clone();
        let (buf, value) = self.arena_value(id, tree.dtype);
        let mut loads = Vec::new();
        let expr = Flat::build(tree, &mut loads);
        self.kernels.push(Kernel {
            node: id,
            body: KernelBody::Loop(LoopKernel {
                outs: vec![Store {
                    buf,
                    at: Affine::contiguous(&shape),
                    value: expr.root(),
                    node: id,
                }],
                shape,
                loads,
                expr,
                reduce: None,
            }),
        });
        value
    }

    /// The value of `id` as a load (storing it first unless it already is one).
    fn as_load(&mut self, id: NodeId) -> (BufferId, Affine) {
        let v = self.val(id);
        if let Some((b, at)) = v.as_load() {
            return (b, at.clone());
        }
        let v = self.store(id, &v, self.read_by_current());
        self.vals[id.index()] = Some(v.clone());
        let (b, at) = v.as_load().expect("stored");
        (b, at.clone())
    }

    /// The value of `id` as a dense row-major buffer of exactly its shape.
    fn as_dense(&mut self, id: NodeId) -> BufferId {
        let shape = self.shapes[id.index()].clone();
        let v = self.val(id);
        if let Some((b, at)) = v.as_load()
            && at.is_contiguous(&shape)
            && self.buffers[b.index()].elems == shape.iter().product::<usize>()
        {
            return b;
        }
        let v = self.store(id, &v, self.read_by_current());
        self.vals[id.index()] = Some(v.clone());
        v.as_load().expect("stored").0
    }

    /// Why an operand of the node being lowered is stored: that node reads memory.
    fn read_by_current(&self) -> String {
        let c = self.current;
        format!("{c} ({}) reads it from memory", self.g.node(c).op.name())
    }

    /// Why the fused tree `v` of node `id` must be stored rather than recomputed in
    /// its consumers; `None` when it fuses.
    fn store_reason(&self, id: NodeId, v: &Node) -> Option<String> {
        let uses = self.uses[id.index()];
        if self.is_root(id) {
            Some("an output or update of the graph".to_string())
        } else if !self.opts.fuse {
            Some("fusion is off (-O0 or check-numerics)".to_string())
        } else if v.size() > MAX_TREE {
            Some(format!(
                "its fused expression has {} nodes (limit {MAX_TREE})",
                v.size()
            ))
        } else if uses > 1 && v.cost() > RECOMPUTE_LIMIT {
            Some(format!(
                "used by {uses} ops and costs {} > {RECOMPUTE_LIMIT} to recompute in each",
                v.cost()
            ))
        } else {
            None
        }
    }

    fn is_root(&self, id: NodeId) -> bool {
        self.g.outputs().iter().any(|(_, o)| *o == id)
            || self.g.updates().iter().any(|(_, v)| *v == id)
    }

    fn node(&mut self, id: NodeId) {
        self.current = id;
        let node = self.g.node(id);
        let dtype = node.ty.dtype;
        let shape = self.shapes[id.index()].clone();
        let arg = |l: &Self, k: usize| l.val(node.inputs[k]);
        let ashape = |l: &Self, k: usize| l.shapes[node.inputs[k].index()].clone();
        let v: Rc<Node> = match &node.op {
            Op::Input { name, .. } => self.leaf(id, BufferKind::Input(name.clone())),
            Op::Param { name, .. } | Op::State { name, .. } => {
                let v = self.leaf(id, BufferKind::Persistent(name.clone()));
                let (b, _) = v.as_load().expect("leaf");
                self.persistent.insert(name.clone(), b);
                v
            }
            Op::Const {
                value: ConstValue::Splat(s),
                ..
            } => Node::new(Tree::Const(*s), dtype),
            Op::Const {
                value: ConstValue::Dense(d),
                ..
            } => self.leaf(id, BufferKind::Const(d.clone())),
            Op::Unary(u) => Node::new(Tree::Unary(*u, arg(self, 0)), dtype),
            Op::Binary(b) => Node::new(Tree::Binary(*b, arg(self, 0), arg(self, 1)), dtype),
            Op::Where => Node::new(Tree::Where(arg(self, 0), arg(self, 1), arg(self, 2)), dtype),
            Op::Cast(_) => Node::new(Tree::Cast(arg(self, 0)), dtype),
            Op::Iota { axis, .. } => {
                let mut strides = vec![0i64; shape.len()];
                strides[*axis] = 1;
                let idx = Node::new(Tree::Index(Affine { offset: 0, strides }), DType::I64);
                Node::new(Tree::Cast(idx), dtype)
            }
            Op::Expand(_) => {
                let from = ashape(self, 0);
                self.repeated_view_source(node.inputs[0])
                    .map_leaves(&mut |a| Some(a.expand(&from, &shape)))
                    .expect("expand is affine")
            }
            Op::Permute(perm) => arg(self, 0)
                .map_leaves(&mut |a| Some(a.permute(perm)))
                .expect("permute is affine"),
            Op::Slice(ranges) => {
                let whole = ranges.iter().zip(&ashape(self, 0)).all(|(r, &n)| match r {
                    SliceAxis::Full => true,
                    SliceAxis::Range { start, stop, step } => {
                        *start == 0 && *stop == n && (*step == 1 || n <= 1)
                    }
                });
                let src = if whole {
                    arg(self, 0)
                } else {
                    self.partial_view_source(node.inputs[0])
                };
                src.map_leaves(&mut |a| Some(a.slice(ranges)))
                    .expect("slice is affine")
            }
            Op::Unfold(w) => self
                .repeated_view_source(node.inputs[0])
                .map_leaves(&mut |a| Some(a.unfold(w)))
                .expect("unfold is affine"),
            Op::Reshape(_) => {
                let from = ashape(self, 0);
                match arg(self, 0).map_leaves(&mut |a| a.reshape(&from, &shape)) {
                    Some(v) => v,
                    None => {
                        let b = self.as_dense(node.inputs[0]);
                        Node::new(
                            Tree::Load {
                                buf: b,
                                at: Affine::contiguous(&shape),
                            },
                            dtype,
                        )
                    }
                }
            }
            Op::Reduce { op, axes, .. } => self.reduce(id, *op, axes),
            Op::MatMul { trans_a, trans_b } if dtype.is_float() => {
                self.matmul(id, *trans_a, *trans_b)
            }
            Op::Gather { axis } => self.gather(id, *axis),
            Op::ScatterAdd { axis } => self.scatter_add(id, *axis),
            Op::MatMul { .. }
            | Op::ArgReduce { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
            | Op::Fold { .. }
            | Op::Random { .. } => self.library(id),
        };
        let is_tree = !matches!(v.tree, Tree::Load { .. } | Tree::Const(_) | Tree::Index(_));
        let why = if is_tree {
            self.store_reason(id, &v)
        } else {
            None
        };
        let v = match why {
            Some(why) => self.store(id, &v, why),
            None => v,
        };
        self.vals[id.index()] = Some(v);
    }

    /// The value of `id` under a view that reads elements several times (a broadcast,
    /// overlapping windows). Such a view would repeat a gather's scalar, checked load
    /// for each read, so a gathered value is stored once first (max-pooling's pick,
    /// then the next convolution's im2col windows over it); any other tree fuses.
    fn repeated_view_source(&mut self, id: NodeId) -> Rc<Node> {
        let v = self.val(id);
        if !v.is_indexed() {
            return v;
        }
        let (buf, at) = self.as_load(id);
        Node::new(Tree::Load { buf, at }, v.dtype)
    }

    /// The value of `id` under a view that skips elements (a partial slice). A fused
    /// gather would check only the indices the view reads, while the interpreter (and
    /// so the program's meaning) checks every index of the gather, so a gathered value
    /// is stored whole first: an out-of-range index is an error on every backend
    /// whether or not its element is read afterwards.
    fn partial_view_source(&mut self, id: NodeId) -> Rc<Node> {
        self.repeated_view_source(id)
    }

    fn reduce(&mut self, id: NodeId, op: ReduceOp, axes: &[usize]) -> Rc<Node> {
        let node = self.g.node(id);
        let input = node.inputs[0];
        let in_shape = self.shapes[input.index()].clone();
        let dtype = node.ty.dtype;
        let empty = axes.iter().any(|&a| in_shape[a] == 0);
        if dtype == DType::Bool || (empty && matches!(op, ReduceOp::Max | ReduceOp::Min)) {
            return self.library(id);
        }
        let tree = self.val(input);
        let kept: Vec<usize> = (0..in_shape.len()).filter(|d| !axes.contains(d)).collect();
        let kept_shape: Vec<usize> = kept.iter().map(|&d| in_shape[d]).collect();
        let kst = Affine::contiguous(&kept_shape).strides;
        let mut out_strides = vec![0i64; in_shape.len()];
        for (k, &d) in kept.iter().enumerate() {
            out_strides[d] = kst[k];
        }
        let (buf, value) = self.arena_value(id, dtype);
        self.stored_by_kernel(id, "a reduction");
        let mut loads = Vec::new();
        let expr = Flat::build(&tree, &mut loads);
        self.kernels.push(Kernel {
            node: id,
            body: KernelBody::Loop(LoopKernel {
                shape: in_shape,
                loads,
                outs: vec![Store {
                    buf,
                    at: Affine {
                        offset: 0,
                        strides: out_strides,
                    },
                    value: expr.root(),
                    node: id,
                }],
                expr,
                reduce: Some(op),
            }),
        });
        value
    }

    fn matmul(&mut self, id: NodeId, ta: bool, tb: bool) -> Rc<Node> {
        let node = self.g.node(id);
        let (ai, bi) = (node.inputs[0], node.inputs[1]);
        let shape = self.shapes[id.index()].clone();
        let r = shape.len();
        let (mut a, mut b) = (self.as_load(ai), self.as_load(bi));
        // Fold the transpose flags into the strides: afterwards `a` is [.., m, k] and
        // `b` is [.., k, n] as affine maps.
        if ta {
            a.1.strides.swap(r - 2, r - 1);
        }
        if tb {
            b.1.strides.swap(r - 2, r - 1);
        }
        let a_shape = &self.shapes[ai.index()];
        let k = if ta { a_shape[r - 2] } else { a_shape[r - 1] };
        let (m, n) = (shape[r - 2], shape[r - 1]);
        let dtype = node.ty.dtype;
        let (c, value) = self.arena_value(id, dtype);
        self.stored_by_kernel(id, "a matrix product");
        if dtype.is_float() && m * n * k <= SMALL_MATMUL {
            // c[.., i, j] = sum over l of a[.., i, l] * b[.., l, j], as a reduction over
            // the loop space [.., m, n, k]: each operand is a view with a zero stride on
            // the axis it does not have.
            let nb = r - 2;
            let widen = |s: &[i64], (im, jn, lk): (i64, i64, i64)| {
                let mut v = s[..nb].to_vec();
                v.extend([im, jn, lk]);
                v
            };
            let at_a = Affine {
                offset: a.1.offset,
                strides: widen(&a.1.strides, (a.1.strides[r - 2], 0, a.1.strides[r - 1])),
            };
            let at_b = Affine {
                offset: b.1.offset,
                strides: widen(&b.1.strides, (0, b.1.strides[r - 1], b.1.strides[r - 2])),
            };
            let mut out_strides = Affine::contiguous(&shape).strides;
            out_strides.push(0);
            let product = Node::new(
                Tree::Binary(
                    BinaryOp::Mul,
                    Node::new(Tree::Load { buf: a.0, at: at_a }, dtype),
                    Node::new(Tree::Load { buf: b.0, at: at_b }, dtype),
                ),
                dtype,
            );
            let mut loads = Vec::new();
            let expr = Flat::build(&product, &mut loads);
            let mut loop_shape = shape.clone();
            loop_shape.push(k);
            self.kernels.push(Kernel {
                node: id,
                body: KernelBody::Loop(LoopKernel {
                    shape: loop_shape,
                    loads,
                    outs: vec![Store {
                        buf: c,
                        at: Affine {
                            offset: 0,
                            strides: out_strides,
                        },
                        value: expr.root(),
                        node: id,
                    }],
                    expr,
                    reduce: Some(ReduceOp::Sum),
                }),
            });
            return value;
        }
        self.kernels.push(Kernel {
            node: id,
            body: KernelBody::MatMul(MatMulKernel {
                dtype,
                batch: shape[..r - 2].to_vec(),
                m,
                n,
                k,
                a,
                b,
                c,
                epilogue: None,
            }),
        });
        value
    }

    /// `out[i] = x[i with i[axis] replaced by index[i]]` as a tree: a load of `x` at a
    /// checked place along `axis`, fused with the index's computation and with what
    /// reads the result (cross-entropy's pick of each row's target log-probability
    /// joins the softmax row kernel).
    fn gather(&mut self, id: NodeId, axis: usize) -> Rc<Node> {
        let node = self.g.node(id);
        let (xi, ii) = (node.inputs[0], node.inputs[1]);
        let xs = self.shapes[xi.index()].clone();
        let len = xs[axis];
        if len == 0 || self.shapes[id.index()].contains(&0) {
            return self.library(id);
        }
        let (buf, mut at) = self.as_load(xi);
        // Strides off `axis` are valid for the output's index: the index is no larger
        // than `x` on every other axis (the shape rule).
        let stride = std::mem::take(&mut at.strides[axis]);
        let index = Node::new(
            Tree::Checked {
                index: self.val(ii),
                len,
                node: id,
            },
            DType::I64,
        );
        Node::new(
            Tree::Gather {
                buf,
                at,
                stride,
                len,
                index,
            },
            node.ty.dtype,
        )
    }

    /// Scatter-add of one value per line along the last axis (an index of extent 1
    /// there, the shape of `base` elsewhere: cross-entropy's gradient) as the
    /// elementwise tree
    /// `where(checked(index) == i[axis], base + src, base)`, the interpreter's sum
    /// exactly. Other scatters stay library kernels.
    fn scatter_add(&mut self, id: NodeId, axis: usize) -> Rc<Node> {
        let node = self.g.node(id);
        let (bi, ii, si) = (node.inputs[0], node.inputs[1], node.inputs[2]);
        let bs = self.shapes[bi.index()].clone();
        let is = self.shapes[ii.index()].clone();
        // Only along the last axis: the select evaluates the index for every element
        // of the line, which there is a row stage's scalar inner loop; along another
        // axis the whole pass turns scalar, and LeNet's max-pool gradient measured
        // slower that way than a zero fill plus the library scatter.
        let one_per_line = is[axis] == 1
            && axis + 1 == bs.len()
            && bs[axis] > 0
            && (0..bs.len()).all(|d| d == axis || is[d] == bs[d]);
        if !one_per_line || bs.contains(&0) {
            return self.library(id);
        }
        let dtype = node.ty.dtype;
        let spread = |v: Rc<Node>| {
            v.map_leaves(&mut |a| Some(a.expand(&is, &bs)))
                .expect("expand is affine")
        };
        let index = Node::new(
            Tree::Checked {
                index: spread(self.val(ii)),
                len: bs[axis],
                node: id,
            },
            DType::I64,
        );
        let mut strides = vec![0i64; bs.len()];
        strides[axis] = 1;
        let here = Node::new(Tree::Index(Affine { offset: 0, strides }), DType::I64);
        let hit = Node::new(Tree::Binary(BinaryOp::Eq, index, here), DType::Bool);
        let base = self.val(bi);
        let sum = Node::new(
            Tree::Binary(BinaryOp::add_for(dtype), base.clone(), spread(self.val(si))),
            dtype,
        );
        Node::new(Tree::Where(hit, sum, base), dtype)
    }

    fn library(&mut self, id: NodeId) -> Rc<Node> {
        let node = self.g.node(id);
        let inputs: Vec<(BufferId, Vec<usize>)> = node
            .inputs
            .clone()
            .into_iter()
            .map(|i| (self.as_dense(i), self.shapes[i.index()].clone()))
            .collect();
        let shape = self.shapes[id.index()].clone();
        let (out, value) = self.arena_value(id, node.ty.dtype);
        self.stored_by_kernel(id, "a library kernel");
        self.kernels.push(Kernel {
            node: id,
            body: KernelBody::Library(LibraryKernel { inputs, out, shape }),
        });
        value
    }

    fn finish(mut self) -> Program {
        let g = self.g;
        let mut outputs = Vec::new();
        for (name, id) in g.outputs() {
            let (buf, at) = self.root_load(*id);
            outputs.push(OutputSpec {
                name: name.clone(),
                buf,
                at,
                shape: self.shapes[id.index()].clone(),
                dtype: g.ty(*id).dtype,
            });
        }
        let mut updates = Vec::new();
        for (t, v) in g.updates() {
            let name = g.node(*t).op.leaf_name().unwrap_or_default().to_string();
            let target = self.persistent[&name];
            let shape = self.shapes[t.index()].clone();
            let (buf, at) = self.root_load(*v);
            let unchanged = buf == target && at.is_contiguous(&shape);
            updates.push(UpdateSpec {
                name,
                target,
                source: (!unchanged).then_some((buf, at)),
                shape,
            });
        }
        let n = self.buffers.len();
        Program {
            name: g.name.clone(),
            env: self.env,
            buffers: self.buffers,
            kernels: self.kernels,
            outputs,
            updates,
            arena_bytes: 0,
            arena_align: self.opts.arena_align.max(plan::ALIGN),
            live: vec![None; n],
            stored: self.stored,
            saved: Vec::new(),
        }
    }

    /// A root's value as a load; constants and index trees are stored first.
    fn root_load(&mut self, id: NodeId) -> (BufferId, Affine) {
        self.as_load(id)
    }
}

fn saved_for_backward(g: &Graph, p: &Program) -> Vec<BufferId> {
    let mut forward = vec![false; g.len()];
    for (_, id) in g.outputs() {
        forward[id.index()] = true;
    }
    g.mark_inputs(&mut forward);
    let mut saved: Vec<BufferId> = Vec::new();
    for k in &p.kernels {
        if forward[k.node.index()] {
            continue;
        }
        for b in k.reads() {
            let buf = p.buffer(b);
            if matches!(buf.kind, BufferKind::Arena { .. })
                && buf.node.is_some_and(|n| forward[n.index()])
                && !saved.contains(&b)
            {
                saved.push(b);
            }
        }
    }
    saved.sort();
    saved
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

/// The smallest and largest element offset `at` reaches over `shape`, in `i128` so
/// that no offset, stride or size can wrap on the way (`hi < lo` for an empty shape).
fn extent(at: &Affine, shape: &[usize]) -> (i128, i128) {
    let (mut lo, mut hi) = (at.offset as i128, at.offset as i128);
    for (&n, &s) in shape.iter().zip(&at.strides) {
        if n == 0 {
            return (0, -1);
        }
        let span = (n as i128 - 1) * s as i128;
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    (lo, hi)
}

impl Program {
    /// Checks that every access of every kernel, output and update stays inside its
    /// buffer. Backends call this before running generated code, so a lowering bug
    /// becomes an error instead of an out-of-bounds access.
    pub fn check_bounds(&self) -> Result<(), String> {
        let check = |what: &str, b: BufferId, at: &Affine, shape: &[usize]| {
            let (lo, hi) = extent(at, shape);
            let n = self.buffer(b).elems as i128;
            let ranked = at.strides.len() == shape.len();
            if !ranked || (hi >= lo && (lo < 0 || hi >= n)) {
                return Err(format!(
                    "{what}: access {at:?} over {shape:?} reaches [{lo}, {hi}] of b{} ({n} elements)",
                    b.0
                ));
            }
            Ok(())
        };
        let check_loop = |what: &str, l: &LoopKernel| {
            for (b, a) in &l.loads {
                check(what, *b, a, &l.shape)?;
            }
            for o in &l.outs {
                check(what, o.buf, &o.at, &l.shape)?;
            }
            Ok::<(), String>(())
        };
        for (t, k) in self.kernels.iter().enumerate() {
            let what = format!("k{t} ({})", k.node);
            match &k.body {
                KernelBody::Loop(l) => check_loop(&what, l)?,
                KernelBody::Rows(r) => {
                    for l in &r.stages {
                        check_loop(&what, l)?;
                    }
                }
                KernelBody::MatMul(m) => {
                    let mut sa = m.batch.clone();
                    sa.extend([m.m, m.k]);
                    let mut sb = m.batch.clone();
                    sb.extend([m.k, m.n]);
                    let mut sc = m.batch.clone();
                    sc.extend([m.m, m.n]);
                    check(&what, m.a.0, &m.a.1, &sa)?;
                    check(&what, m.b.0, &m.b.1, &sb)?;
                    check(&what, m.c, &Affine::contiguous(&sc), &sc)?;
                    if let Some(e) = &m.epilogue {
                        check_loop(&what, e)?;
                    }
                }
                KernelBody::Library(l) => {
                    for (b, s) in &l.inputs {
                        check(&what, *b, &Affine::contiguous(s), s)?;
                    }
                    check(&what, l.out, &Affine::contiguous(&l.shape), &l.shape)?;
                }
            }
        }
        for o in &self.outputs {
            check(&o.name, o.buf, &o.at, &o.shape)?;
        }
        for u in &self.updates {
            if let Some((b, a)) = &u.source {
                check(&u.name, *b, a, &u.shape)?;
            }
        }
        Ok(())
    }
}

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

pub mod param_arena;
mod plan;
pub use plan::{PlanPass, plan_passes};
pub mod tree;

use std::collections::HashMap;
use std::rc::Rc;

use aotgrad_ir::{BinaryOp, ConstValue, DType, Graph, NodeId, Op, ReduceOp, SliceAxis, verify};

pub use crate::program::{
    Affine, BoundsError, Buffer, BufferId, BufferKind, Flat, FlatNode, FlatOp, Kernel, KernelBody,
    LibraryKernel, LoopKernel, MatMulKernel, OutputSpec, Program, RowKernel, Store, SymbolEnv,
    Target, UpdateSpec, WaitKernel, explain_fusion, reduce_identity,
};
pub use param_arena::{ParamLayout, ParamSlot};
pub use tree::{Tree, TreeNode, flatten};

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

/// Why a graph could not be lowered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LowerError {
    #[error("the graph does not verify: {0}")]
    Invalid(aotgrad_ir::VerifyError),
    #[error("{node} has symbolic shape {shape} and its symbols are not all bound")]
    Unbound { node: NodeId, shape: String },
    #[error("{node} (`{op}`): {error}")]
    TooLarge {
        node: NodeId,
        op: &'static str,
        error: aotgrad_ir::TooLarge,
    },
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
    /// The machine's thresholds and alignment ([`Target::CPU`] by default).
    pub target: Target,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            in_place_updates: true,
            fuse: true,
            rows: true,
            target: Target::CPU,
        }
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
    lower_observed(graph, env, opts, layout, &mut |_, _| {})
}

/// The lowered program, and its text as first lowered and after every kernel-plan
/// pass, each headed `# after PASS: N kernels` (what `aotgrad lower --print-after-all`
/// prints).
pub fn lower_pass_by_pass(
    graph: &Graph,
    env: &SymbolEnv,
    opts: LowerOptions,
    layout: Option<&ParamLayout>,
) -> Result<(Program, String), LowerError> {
    let mut out = String::new();
    let p = lower_observed(graph, env, opts, layout, &mut |pass, p| {
        out.push_str(&format!(
            "# after {pass}: {} kernels\n{p}\n",
            p.kernels.len()
        ));
    })?;
    Ok((p, out))
}

/// [`lower`] (or [`lower_for_arena`] with a `layout`), calling `observe` with the
/// program as first lowered (`"lower"`) and after every kernel-plan pass.
pub fn lower_observed(
    graph: &Graph,
    env: &SymbolEnv,
    opts: LowerOptions,
    layout: Option<&ParamLayout>,
    observe: &mut dyn FnMut(&str, &Program),
) -> Result<Program, LowerError> {
    verify(graph).map_err(LowerError::Invalid)?;
    let mut l = Lowerer::new(graph, env, opts)?;
    for (id, _) in graph.nodes() {
        if l.live[id.index()] {
            l.node(id);
        }
    }
    let mut p = l.finish();
    // What the backward pass keeps depends on what fusion left in memory: derived again
    // after every pass, so each observed program is complete.
    p.saved = saved_for_backward(graph, &p);
    observe("lower", &p);
    for pass in plan_passes(opts, layout) {
        pass.run(&mut p);
        p.saved = saved_for_backward(graph, &p);
        observe(pass.name, &p);
    }
    Ok(p)
}

struct Lowerer<'g> {
    g: &'g Graph,
    opts: LowerOptions,
    shapes: Vec<Vec<usize>>,
    uses: Vec<usize>,
    live: Vec<bool>,
    vals: Vec<Option<Rc<TreeNode>>>,
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

    fn val(&self, id: NodeId) -> Rc<TreeNode> {
        self.vals[id.index()]
            .clone()
            .expect("operands are lowered before their users")
    }

    fn leaf(&mut self, id: NodeId, kind: BufferKind) -> Rc<TreeNode> {
        let shape = self.shapes[id.index()].clone();
        let dtype = self.g.ty(id).dtype;
        let buf = self.buffer(kind, dtype, shape.iter().product(), id);
        TreeNode::new(
            Tree::Load {
                buf,
                at: Affine::contiguous(&shape),
            },
            dtype,
        )
    }

    /// A fresh arena buffer for the value of `id` (dense, row-major over its shape) and
    /// the load that reads the value back.
    fn arena_value(&mut self, id: NodeId, dtype: DType) -> (BufferId, Rc<TreeNode>) {
        let shape = &self.shapes[id.index()];
        let (elems, at) = (shape.iter().product(), Affine::contiguous(shape));
        let buf = self.buffer(BufferKind::Arena { offset: 0 }, dtype, elems, id);
        (buf, TreeNode::new(Tree::Load { buf, at }, dtype))
    }

    /// Records that `id`'s kernel (a reduction, matmul or library kernel) writes its
    /// result to memory by nature.
    fn stored_by_kernel(&mut self, id: NodeId, what: &str) {
        self.stored
            .push((id, format!("{what} writes its result to memory")));
    }

    /// Stores `tree` (the value of `id`) in a fresh arena buffer with a loop kernel;
    /// `why` it was not fused goes to `--explain-fusion`.
    fn store(&mut self, id: NodeId, tree: &Rc<TreeNode>, why: String) -> Rc<TreeNode> {
        self.stored.push((id, why));
        let shape = self.shapes[id.index()].clone();
        let (buf, value) = self.arena_value(id, tree.dtype);
        let mut loads = Vec::new();
        let expr = flatten(tree, &mut loads);
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
    fn store_reason(&self, id: NodeId, v: &TreeNode) -> Option<String> {
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
        let v: Rc<TreeNode> = match &node.op {
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
            } => TreeNode::new(Tree::Const(*s), dtype),
            Op::Const {
                value: ConstValue::Dense(d),
                ..
            } => self.leaf(id, BufferKind::Const(d.clone())),
            Op::Unary(u) => TreeNode::new(Tree::Unary(*u, arg(self, 0)), dtype),
            Op::Binary(b) => TreeNode::new(Tree::Binary(*b, arg(self, 0), arg(self, 1)), dtype),
            Op::Where => {
                TreeNode::new(Tree::Where(arg(self, 0), arg(self, 1), arg(self, 2)), dtype)
            }
            Op::Cast(_) => TreeNode::new(Tree::Cast(arg(self, 0)), dtype),
            Op::Iota { axis, .. } => {
                let mut strides = vec![0i64; shape.len()];
                strides[*axis] = 1;
                let idx = TreeNode::new(Tree::Index(Affine { offset: 0, strides }), DType::I64);
                TreeNode::new(Tree::Cast(idx), dtype)
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
                        TreeNode::new(
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
            | Op::TopK { .. }
            | Op::AllReduce { .. }
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
    fn repeated_view_source(&mut self, id: NodeId) -> Rc<TreeNode> {
        let v = self.val(id);
        if !v.is_indexed() {
            return v;
        }
        let (buf, at) = self.as_load(id);
        TreeNode::new(Tree::Load { buf, at }, v.dtype)
    }

    /// The value of `id` under a view that skips elements (a partial slice). A fused
    /// gather would check only the indices the view reads, while the interpreter (and
    /// so the program's meaning) checks every index of the gather, so a gathered value
    /// is stored whole first: an out-of-range index is an error on every backend
    /// whether or not its element is read afterwards.
    fn partial_view_source(&mut self, id: NodeId) -> Rc<TreeNode> {
        self.repeated_view_source(id)
    }

    fn reduce(&mut self, id: NodeId, op: ReduceOp, axes: &[usize]) -> Rc<TreeNode> {
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
        let expr = flatten(&tree, &mut loads);
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

    fn matmul(&mut self, id: NodeId, ta: bool, tb: bool) -> Rc<TreeNode> {
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
            let product = TreeNode::new(
                Tree::Binary(
                    BinaryOp::Mul,
                    TreeNode::new(Tree::Load { buf: a.0, at: at_a }, dtype),
                    TreeNode::new(Tree::Load { buf: b.0, at: at_b }, dtype),
                ),
                dtype,
            );
            let mut loads = Vec::new();
            let expr = flatten(&product, &mut loads);
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
    fn gather(&mut self, id: NodeId, axis: usize) -> Rc<TreeNode> {
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
        let index = TreeNode::new(
            Tree::Checked {
                index: self.val(ii),
                len,
                node: id,
            },
            DType::I64,
        );
        TreeNode::new(
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
    fn scatter_add(&mut self, id: NodeId, axis: usize) -> Rc<TreeNode> {
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
        let spread = |v: Rc<TreeNode>| {
            v.map_leaves(&mut |a| Some(a.expand(&is, &bs)))
                .expect("expand is affine")
        };
        let index = TreeNode::new(
            Tree::Checked {
                index: spread(self.val(ii)),
                len: bs[axis],
                node: id,
            },
            DType::I64,
        );
        let mut strides = vec![0i64; bs.len()];
        strides[axis] = 1;
        let here = TreeNode::new(Tree::Index(Affine { offset: 0, strides }), DType::I64);
        let hit = TreeNode::new(Tree::Binary(BinaryOp::Eq, index, here), DType::Bool);
        let base = self.val(bi);
        let sum = TreeNode::new(
            Tree::Binary(BinaryOp::add_for(dtype), base.clone(), spread(self.val(si))),
            dtype,
        );
        TreeNode::new(Tree::Where(hit, sum, base), dtype)
    }

    fn library(&mut self, id: NodeId) -> Rc<TreeNode> {
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
        if matches!(node.op, Op::AllReduce { .. }) {
            // A collective starts in its library kernel and ends here; the plan moves
            // the end down (`plan::overlap_collectives`).
            self.kernels.push(Kernel {
                node: id,
                body: KernelBody::Wait(WaitKernel { out }),
            });
        }
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
            arena_align: self
                .opts
                .target
                .arena_align
                .max(crate::program::target::CACHE_LINE),
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

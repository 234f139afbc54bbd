//! Elementwise expressions over affine accesses: the body of a fused loop kernel.
//!
//! While lowering, every elementwise value is a *tree* whose leaves read buffers through
//! affine accesses (offset + stride per axis of the value's shape). View ops (expand,
//! permute, slice, most reshapes) only rewrite the leaves' strides, so they never cost a
//! pass over memory, and chains of elementwise ops with broadcasts become one tree.

use std::fmt;
use std::rc::Rc;

use aotgrad_ir::{BinaryOp, DType, NodeId, Scalar, SliceAxis, UnaryOp, Window};

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

/// One node of an elementwise expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Tree {
    /// An element of a buffer.
    Load {
        buf: BufferId,
        at: Affine,
    },
    /// The affine value itself as an i64 (iota).
    Index(Affine),
    Const(Scalar),
    Unary(UnaryOp, Rc<Node>),
    Binary(BinaryOp, Rc<Node>, Rc<Node>),
    Where(Rc<Node>, Rc<Node>, Rc<Node>),
    Cast(Rc<Node>),
    /// `index` as an i64 when it lies in `[0, len)`; otherwise 0, and the run fails
    /// with an out-of-range error naming graph node `node` (a gather or scatter-add)
    /// before any later kernel runs. Indices computed inside a kernel are checked here
    /// instead of by a separate pass over them.
    Checked {
        index: Rc<Node>,
        len: usize,
        node: NodeId,
    },
    /// The element of `buf` at `at + index * stride`, where `index` is a `Checked`
    /// node of the same `len`: a load along one axis at a data-dependent place
    /// (gather). Loads are listed with both extreme accesses (`at` and `at + (len-1) *
    /// stride`), so bounds, row and window analyses of affine loads cover its range.
    Gather {
        buf: BufferId,
        at: Affine,
        stride: i64,
        len: usize,
        index: Rc<Node>,
    },
}

/// A tree node with its element type.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub tree: Tree,
    pub dtype: DType,
}

impl Node {
    pub fn new(tree: Tree, dtype: DType) -> Rc<Node> {
        Rc::new(Node { tree, dtype })
    }

    /// Rewrites every leaf's affine map.
    pub fn map_leaves(
        self: &Rc<Node>,
        f: &mut dyn FnMut(&Affine) -> Option<Affine>,
    ) -> Option<Rc<Node>> {
        let tree = match &self.tree {
            Tree::Load { buf, at } => Tree::Load {
                buf: *buf,
                at: f(at)?,
            },
            Tree::Index(at) => Tree::Index(f(at)?),
            Tree::Const(_) => return Some(self.clone()),
            Tree::Unary(u, a) => Tree::Unary(*u, a.map_leaves(f)?),
            Tree::Binary(b, x, y) => Tree::Binary(*b, x.map_leaves(f)?, y.map_leaves(f)?),
            Tree::Where(c, x, y) => {
                Tree::Where(c.map_leaves(f)?, x.map_leaves(f)?, y.map_leaves(f)?)
            }
            Tree::Cast(a) => Tree::Cast(a.map_leaves(f)?),
            Tree::Checked { index, len, node } => Tree::Checked {
                index: index.map_leaves(f)?,
                len: *len,
                node: *node,
            },
            Tree::Gather {
                buf,
                at,
                stride,
                len,
                index,
            } => Tree::Gather {
                buf: *buf,
                at: f(at)?,
                stride: *stride,
                len: *len,
                index: index.map_leaves(f)?,
            },
        };
        Some(Node::new(tree, self.dtype))
    }

    /// Work of evaluating the tree once per element; transcendental calls count more,
    /// so they are stored rather than recomputed.
    pub fn cost(&self) -> usize {
        match &self.tree {
            Tree::Load { .. } | Tree::Index(_) | Tree::Const(_) => 0,
            // The op table's cost classes.
            Tree::Unary(u, a) => u.cost().units() + a.cost(),
            Tree::Binary(b, x, y) => b.cost().units() + x.cost() + y.cost(),
            Tree::Where(c, x, y) => 1 + c.cost() + x.cost() + y.cost(),
            Tree::Cast(a) => 1 + a.cost(),
            Tree::Checked { index, .. } | Tree::Gather { index, .. } => 2 + index.cost(),
        }
    }

    /// Number of nodes (bounds code size of a fused kernel).
    pub fn size(&self) -> usize {
        match &self.tree {
            Tree::Load { .. } | Tree::Index(_) | Tree::Const(_) => 1,
            Tree::Unary(_, a)
            | Tree::Cast(a)
            | Tree::Checked { index: a, .. }
            | Tree::Gather { index: a, .. } => 1 + a.size(),
            Tree::Binary(_, x, y) => 1 + x.size() + y.size(),
            Tree::Where(c, x, y) => 1 + c.size() + x.size() + y.size(),
        }
    }

    /// Whether the tree gathers or checks an index somewhere.
    pub fn is_indexed(&self) -> bool {
        match &self.tree {
            Tree::Checked { .. } | Tree::Gather { .. } => true,
            Tree::Load { .. } | Tree::Index(_) | Tree::Const(_) => false,
            Tree::Unary(_, a) | Tree::Cast(a) => a.is_indexed(),
            Tree::Binary(_, x, y) => x.is_indexed() || y.is_indexed(),
            Tree::Where(c, x, y) => c.is_indexed() || x.is_indexed() || y.is_indexed(),
        }
    }

    /// The leaf access if this tree is a bare load.
    pub fn as_load(&self) -> Option<(BufferId, &Affine)> {
        match &self.tree {
            Tree::Load { buf, at } => Some((*buf, at)),
            _ => None,
        }
    }

    pub fn visit_loads(&self, f: &mut dyn FnMut(BufferId, &Affine)) {
        match &self.tree {
            Tree::Load { buf, at } => f(*buf, at),
            Tree::Index(_) | Tree::Const(_) => {}
            Tree::Unary(_, a) | Tree::Cast(a) | Tree::Checked { index: a, .. } => a.visit_loads(f),
            Tree::Gather {
                buf,
                at,
                stride,
                len,
                index,
            } => {
                f(*buf, at);
                f(*buf, &gather_end(at, *stride, *len));
                index.visit_loads(f);
            }
            Tree::Binary(_, x, y) => {
                x.visit_loads(f);
                y.visit_loads(f);
            }
            Tree::Where(c, x, y) => {
                c.visit_loads(f);
                x.visit_loads(f);
                y.visit_loads(f);
            }
        }
    }
}

/// A flattened, hash-consed expression: identical subtrees appear once, operands
/// before their users; the last entry is the root.
#[derive(Debug, Clone, PartialEq)]
pub struct Flat {
    pub nodes: Vec<FlatNode>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlatNode {
    pub op: FlatOp,
    pub dtype: DType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FlatOp {
    /// `loads[i]` of the kernel.
    Load(usize),
    Index(Affine),
    Const(Scalar),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    Where(usize, usize, usize),
    Cast(usize),
    /// See [`Tree::Checked`].
    Checked {
        index: usize,
        len: usize,
        node: NodeId,
    },
    /// `loads[load]` moved by `index * stride` elements (see [`Tree::Gather`]);
    /// `index` is a `Checked` node.
    Gather {
        load: usize,
        index: usize,
        stride: i64,
    },
}

impl FlatOp {
    /// Whether the op reads memory at a data-dependent place or checks an index
    /// (such a kernel can fail, and does not vectorise).
    pub fn is_indexed(&self) -> bool {
        matches!(self, FlatOp::Checked { .. } | FlatOp::Gather { .. })
    }
}

/// The last element a gather along an axis of `len` elements `stride` apart reads,
/// from `at`.
pub fn gather_end(at: &Affine, stride: i64, len: usize) -> Affine {
    Affine {
        offset: at.offset + stride * (len as i64 - 1),
        strides: at.strides.clone(),
    }
}

impl Flat {
    /// Flattens `root`, collecting its distinct loads into `loads`.
    pub fn build(root: &Node, loads: &mut Vec<(BufferId, Affine)>) -> Flat {
        let mut flat = Flat { nodes: Vec::new() };
        flat.push(root, loads);
        flat
    }

    fn intern(&mut self, op: FlatOp, dtype: DType) -> usize {
        let node = FlatNode { op, dtype };
        if let Some(i) = self.nodes.iter().position(|n| *n == node) {
            return i;
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn push(&mut self, n: &Node, loads: &mut Vec<(BufferId, Affine)>) -> usize {
        let mut load = |key: (BufferId, Affine)| {
            loads.iter().position(|l| *l == key).unwrap_or_else(|| {
                loads.push(key);
                loads.len() - 1
            })
        };
        let op = match &n.tree {
            Tree::Load { buf, at } => FlatOp::Load(load((*buf, at.clone()))),
            Tree::Gather {
                buf,
                at,
                stride,
                len,
                index,
            } => {
                let l = load((*buf, at.clone()));
                load((*buf, gather_end(at, *stride, *len)));
                let index = self.push(index, loads);
                FlatOp::Gather {
                    load: l,
                    index,
                    stride: *stride,
                }
            }
            Tree::Checked { index, len, node } => FlatOp::Checked {
                index: self.push(index, loads),
                len: *len,
                node: *node,
            },
            Tree::Index(a) => FlatOp::Index(a.clone()),
            Tree::Const(s) => FlatOp::Const(*s),
            Tree::Unary(UnaryOp::StopGradient, a) => return self.push(a, loads),
            Tree::Unary(u, a) => FlatOp::Unary(*u, self.push(a, loads)),
            Tree::Binary(b, x, y) => {
                let x = self.push(x, loads);
                let y = self.push(y, loads);
                FlatOp::Binary(*b, x, y)
            }
            Tree::Where(c, x, y) => {
                let c = self.push(c, loads);
                let x = self.push(x, loads);
                let y = self.push(y, loads);
                FlatOp::Where(c, x, y)
            }
            Tree::Cast(a) => {
                let a = self.push(a, loads);
                if self.nodes[a].dtype == n.dtype {
                    return a;
                }
                FlatOp::Cast(a)
            }
        };
        self.intern(op, n.dtype)
    }

    pub fn root(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Appends `other`'s nodes (hash-consed against the ones already here), its load
    /// `l` becoming `load_map[l]`; returns where each of `other`'s nodes ended up.
    pub fn absorb(&mut self, other: &Flat, load_map: &[usize]) -> Vec<usize> {
        let mut at = Vec::with_capacity(other.nodes.len());
        for n in &other.nodes {
            let m = |x: &usize| at[*x];
            let op = match &n.op {
                FlatOp::Load(l) => FlatOp::Load(load_map[*l]),
                FlatOp::Index(a) => FlatOp::Index(a.clone()),
                FlatOp::Const(s) => FlatOp::Const(*s),
                FlatOp::Unary(u, a) => FlatOp::Unary(*u, m(a)),
                FlatOp::Binary(b, x, y) => FlatOp::Binary(*b, m(x), m(y)),
                FlatOp::Where(c, x, y) => FlatOp::Where(m(c), m(x), m(y)),
                FlatOp::Cast(a) => FlatOp::Cast(m(a)),
                FlatOp::Checked { index, len, node } => FlatOp::Checked {
                    index: m(index),
                    len: *len,
                    node: *node,
                },
                FlatOp::Gather {
                    load,
                    index,
                    stride,
                } => FlatOp::Gather {
                    load: load_map[*load],
                    index: m(index),
                    stride: *stride,
                },
            };
            let i = self.intern(op, n.dtype);
            at.push(i);
        }
        at
    }
}

impl fmt::Display for Flat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            write!(f, "      e{i}: {} = ", n.dtype.name())?;
            match &n.op {
                FlatOp::Load(l) => write!(f, "load l{l}")?,
                FlatOp::Index(a) => write!(f, "index {} {:?}", a.offset, a.strides)?,
                FlatOp::Const(s) => write!(f, "const {s}")?,
                FlatOp::Unary(u, a) => write!(f, "{} e{a}", u.name())?,
                FlatOp::Binary(b, x, y) => write!(f, "{} e{x}, e{y}", b.name())?,
                FlatOp::Where(c, x, y) => write!(f, "where e{c}, e{x}, e{y}")?,
                FlatOp::Cast(a) => write!(f, "cast e{a}")?,
                FlatOp::Checked { index, len, node } => {
                    write!(f, "checked e{index} < {len} ({node})")?
                }
                FlatOp::Gather {
                    load,
                    index,
                    stride,
                } => write!(f, "gather l{load} + e{index} * {stride}")?,
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

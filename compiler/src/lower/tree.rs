//! Elementwise expressions while lowering: every elementwise value is a *tree* whose
//! leaves read buffers through affine accesses (offset + stride per axis of the value's
//! shape). View ops only rewrite the leaves' strides, so they never cost a pass over
//! memory, and chains of elementwise ops with broadcasts become one tree, which
//! [`flatten`] turns into a kernel's [`Flat`] body.

use std::rc::Rc;

use aotgrad_ir::{BinaryOp, DType, NodeId, Scalar, UnaryOp};

use crate::program::{Affine, BufferId, Flat, FlatOp, gather_end};

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
    Unary(UnaryOp, Rc<TreeNode>),
    Binary(BinaryOp, Rc<TreeNode>, Rc<TreeNode>),
    Where(Rc<TreeNode>, Rc<TreeNode>, Rc<TreeNode>),
    Cast(Rc<TreeNode>),
    /// `index` as an i64 when it lies in `[0, len)`; otherwise 0, and the run fails
    /// with an out-of-range error naming graph node `node` (a gather or scatter-add)
    /// before any later kernel runs. Indices computed inside a kernel are checked here
    /// instead of by a separate pass over them.
    Checked {
        index: Rc<TreeNode>,
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
        index: Rc<TreeNode>,
    },
}

/// A tree node with its element type.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    pub tree: Tree,
    pub dtype: DType,
}

impl TreeNode {
    pub fn new(tree: Tree, dtype: DType) -> Rc<TreeNode> {
        Rc::new(TreeNode { tree, dtype })
    }

    /// Rewrites every leaf's affine map.
    pub fn map_leaves(
        self: &Rc<TreeNode>,
        f: &mut dyn FnMut(&Affine) -> Option<Affine>,
    ) -> Option<Rc<TreeNode>> {
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
        Some(TreeNode::new(tree, self.dtype))
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

/// Flattens `root` into a kernel body, collecting its distinct loads into `loads`.
pub fn flatten(root: &TreeNode, loads: &mut Vec<(BufferId, Affine)>) -> Flat {
    let mut flat = Flat { nodes: Vec::new() };
    push(&mut flat, root, loads);
    flat
}

fn push(flat: &mut Flat, n: &TreeNode, loads: &mut Vec<(BufferId, Affine)>) -> usize {
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
            let index = push(flat, index, loads);
            FlatOp::Gather {
                load: l,
                index,
                stride: *stride,
            }
        }
        Tree::Checked { index, len, node } => FlatOp::Checked {
            index: push(flat, index, loads),
            len: *len,
            node: *node,
        },
        Tree::Index(a) => FlatOp::Index(a.clone()),
        Tree::Const(s) => FlatOp::Const(*s),
        Tree::Unary(UnaryOp::StopGradient, a) => return push(flat, a, loads),
        Tree::Unary(u, a) => FlatOp::Unary(*u, push(flat, a, loads)),
        Tree::Binary(b, x, y) => {
            let x = push(flat, x, loads);
            let y = push(flat, y, loads);
            FlatOp::Binary(*b, x, y)
        }
        Tree::Where(c, x, y) => {
            let c = push(flat, c, loads);
            let x = push(flat, x, loads);
            let y = push(flat, y, loads);
            FlatOp::Where(c, x, y)
        }
        Tree::Cast(a) => {
            let a = push(flat, a, loads);
            if flat.nodes[a].dtype == n.dtype {
                return a;
            }
            FlatOp::Cast(a)
        }
    };
    flat.intern(op, n.dtype)
}

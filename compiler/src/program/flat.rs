//! The body of a loop kernel: a flattened, hash-consed expression over the kernel's
//! loads, what both code generators render.

use std::fmt;

use aotgrad_ir::{BinaryOp, DType, NodeId, Scalar, UnaryOp};

use super::Affine;

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
    /// `index` as an i64 when it lies in `[0, len)`; otherwise 0 and a fault for graph
    /// node `node` (the lowering's `Tree::Checked`).
    Checked {
        index: usize,
        len: usize,
        node: NodeId,
    },
    /// `loads[load]` moved by `index * stride` elements (a gather);
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
    /// The index of `op` of type `dtype`, appended unless an equal node exists
    /// (hash-consing).
    pub fn intern(&mut self, op: FlatOp, dtype: DType) -> usize {
        let node = FlatNode { op, dtype };
        if let Some(i) = self.nodes.iter().position(|n| *n == node) {
            return i;
        }
        self.nodes.push(node);
        self.nodes.len() - 1
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

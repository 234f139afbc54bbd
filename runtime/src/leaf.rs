//! A compiled program's leaves (inputs, parameters, state) and how a call's tensors
//! bind their symbols: shared by the CPU and GPU executors.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aotgrad_ir::{DType, Graph, Op, TensorType};

use crate::Tensor;
use crate::interp::{self, RunError, SymbolEnv};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    Input,
    Persistent,
}

#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    pub name: String,
    pub kind: LeafKind,
    pub ty: TensorType,
}

/// The graph's leaves in node order.
pub(crate) fn leaves(graph: &Graph) -> Vec<Leaf> {
    graph
        .nodes()
        .filter_map(|(_, n)| match &n.op {
            Op::Input { name, ty } => Some(Leaf {
                name: name.clone(),
                kind: LeafKind::Input,
                ty: ty.clone(),
            }),
            Op::Param { name, ty } | Op::State { name, ty } => Some(Leaf {
                name: name.clone(),
                kind: LeafKind::Persistent,
                ty: ty.clone(),
            }),
            _ => None,
        })
        .collect()
}

/// Checks every leaf's tensor (`tensor` gives its dtype and shape, `None` when the
/// caller has none) and binds the symbols; a missing tensor is [`RunError::Missing`].
/// Whether `leaves` has an input called `name`.
pub(crate) fn has_input(leaves: &[Leaf], name: &str) -> bool {
    leaves
        .iter()
        .any(|l| l.kind == LeafKind::Input && l.name == name)
}

pub(crate) fn bind(
    leaves: &[Leaf],
    mut tensor: impl FnMut(&Leaf) -> Option<(DType, Vec<usize>)>,
) -> Result<SymbolEnv, RunError> {
    let mut env = SymbolEnv::new();
    let mut origin: BTreeMap<Arc<str>, String> = BTreeMap::new();
    for leaf in leaves {
        let (dtype, shape) = tensor(leaf).ok_or_else(|| RunError::Missing {
            kind: match leaf.kind {
                LeafKind::Input => "input",
                LeafKind::Persistent => "persistent tensor",
            },
            name: leaf.name.clone(),
            ty: leaf.ty.clone(),
        })?;
        interp::bind_leaf(&mut env, &mut origin, &leaf.name, &leaf.ty, dtype, &shape)?;
    }
    Ok(env)
}

/// A lowering error as the executors report it: a tensor too large once its symbols
/// are bound keeps its type (it is the caller's data, not a compiler bug).
pub(crate) fn lower_error(e: aotgrad_compiler::lower::LowerError) -> RunError {
    match e {
        aotgrad_compiler::lower::LowerError::TooLarge { node, op, error } => {
            RunError::TooLarge { node, op, error }
        }
        e => RunError::Lower(e),
    }
}

/// Named tensors borrowed from a feed map.
pub(crate) type Named<'a> = Vec<(&'a str, &'a Tensor)>;

/// Splits the interpreter-style `feeds` of `graph` into inputs and persistent tensors
/// (for the executors' `run_once`); a name that is no leaf is [`RunError::Unknown`].
pub(crate) fn split_feeds<'a>(
    graph: &Graph,
    feeds: &'a HashMap<String, Tensor>,
) -> Result<(Named<'a>, Named<'a>), RunError> {
    let (mut inputs, mut persistent) = (Vec::new(), Vec::new());
    for (name, t) in feeds {
        match graph.find(name).map(|id| &graph.node(id).op) {
            Some(Op::Input { .. }) => inputs.push((name.as_str(), t)),
            Some(Op::Param { .. } | Op::State { .. }) => persistent.push((name.as_str(), t)),
            _ => return Err(RunError::Unknown { name: name.clone() }),
        }
    }
    Ok((inputs, persistent))
}

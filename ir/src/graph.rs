//! The graph: an append-only arena of SSA nodes in topological order.
//!
//! Why an arena and not petgraph: every node's operands are created before it, so the
//! arena index *is* a topological order, node ids are stable and dense, the text format
//! numbers nodes by index, and a pass walks nodes with a plain `for` loop. Graph
//! algorithms that need more (liveness, fusion grouping) build side tables keyed by
//! `NodeId`. See docs/ARCHITECTURE.md, "Graph storage".

use std::fmt;

use crate::{ConstValue, Op, OpError, Scalar, TensorType};

/// Index of a node in its graph's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub ty: TensorType,
}

/// A named output of a graph.
pub type Output = (String, NodeId);
/// `(param or state leaf, its new value)`.
pub type Update = (NodeId, NodeId);

/// Errors of graph assembly that are not about one op's operand types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("{0} does not exist in this graph")]
    UnknownNode(NodeId),
    #[error("name {0:?} is already used")]
    DuplicateName(String),
    #[error("update target {target} is a `{op}`, not a param or state")]
    NotPersistent { target: NodeId, op: &'static str },
    #[error("update of {target} ({target_ty}) with {value} of a different type ({value_ty})")]
    UpdateType {
        target: NodeId,
        target_ty: TensorType,
        value: NodeId,
        value_ty: TensorType,
    },
    #[error("{target} is updated twice")]
    DoubleUpdate { target: NodeId },
    #[error(transparent)]
    Op(#[from] OpError),
}

/// A computation: nodes, named outputs, and updates of persistent leaves.
///
/// Updates are how one call of a training step changes parameters and optimizer state:
/// `update w = %new` means the value of `%new` becomes `w` for the next call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    nodes: Vec<Node>,
    outputs: Vec<(String, NodeId)>,
    updates: Vec<(NodeId, NodeId)>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index())
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.nodes[id.index()].ty
    }

    /// All nodes with their ids, in topological (= creation) order.
    pub fn nodes(
        &self,
    ) -> impl DoubleEndedIterator<Item = (NodeId, &Node)> + ExactSizeIterator + '_ {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId(i as u32), n))
    }

    /// Adds `op` applied to `inputs`, inferring and checking its type.
    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId, GraphError> {
        for &i in inputs {
            if i.index() >= self.nodes.len() {
                return Err(GraphError::UnknownNode(i));
            }
        }
        if let Some(name) = op.leaf_name()
            && self.find(name).is_some()
        {
            return Err(GraphError::DuplicateName(name.to_string()));
        }
        let tys: Vec<&TensorType> = inputs.iter().map(|&i| self.ty(i)).collect();
        let ty = op.infer(&tys)?;
        Ok(self.push_unchecked(Node {
            op,
            inputs: inputs.to_vec(),
            ty,
        }))
    }

    /// Appends a node without checking it. For passes that rebuild graphs wholesale;
    /// [`crate::verify`] must accept the result.
    pub fn push_unchecked(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId(self.nodes.len() as u32 - 1)
    }

    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<NodeId, GraphError> {
        self.add(
            Op::Input {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    pub fn param(&mut self, name: &str, ty: TensorType) -> Result<NodeId, GraphError> {
        self.add(
            Op::Param {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    pub fn state(&mut self, name: &str, ty: TensorType) -> Result<NodeId, GraphError> {
        self.add(
            Op::State {
                name: name.into(),
                ty,
            },
            &[],
        )
    }

    /// A constant `value` repeated over `ty` (dtype taken from the scalar).
    pub fn splat(&mut self, value: Scalar, shape: crate::Shape) -> NodeId {
        let ty = TensorType::new(value.dtype(), shape);
        self.push_unchecked(Node {
            op: Op::Const {
                value: ConstValue::Splat(value),
                ty: ty.clone(),
            },
            inputs: vec![],
            ty,
        })
    }

    /// Finds an input, param or state leaf by name.
    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.nodes()
            .find(|(_, n)| n.op.leaf_name() == Some(name))
            .map(|(id, _)| id)
    }

    fn leaves<'a>(&'a self, pick: fn(&Op) -> bool) -> impl Iterator<Item = (&'a str, NodeId)> + 'a {
        self.nodes()
            .filter(move |(_, n)| pick(&n.op))
            .map(|(id, n)| (n.op.leaf_name().expect("leaf ops have names"), id))
    }

    /// Inputs in creation order.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        self.leaves(|op| matches!(op, Op::Input { .. }))
    }

    pub fn params(&self) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        self.leaves(|op| matches!(op, Op::Param { .. }))
    }

    pub fn states(&self) -> impl Iterator<Item = (&str, NodeId)> + '_ {
        self.leaves(|op| matches!(op, Op::State { .. }))
    }

    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    /// `(target leaf, new value)` pairs.
    pub fn updates(&self) -> &[(NodeId, NodeId)] {
        &self.updates
    }

    pub fn set_output(&mut self, name: &str, id: NodeId) -> Result<(), GraphError> {
        if id.index() >= self.nodes.len() {
            return Err(GraphError::UnknownNode(id));
        }
        if self.output(name).is_some() {
            return Err(GraphError::DuplicateName(name.to_string()));
        }
        self.outputs.push((name.to_string(), id));
        Ok(())
    }

    /// Declares that `value` replaces the param/state `target` after each call.
    pub fn set_update(&mut self, target: NodeId, value: NodeId) -> Result<(), GraphError> {
        let (t, v) = match (self.get(target), self.get(value)) {
            (Some(t), Some(v)) => (t, v),
            (None, _) => return Err(GraphError::UnknownNode(target)),
            (_, None) => return Err(GraphError::UnknownNode(value)),
        };
        if !matches!(t.op, Op::Param { .. } | Op::State { .. }) {
            return Err(GraphError::NotPersistent {
                target,
                op: t.op.name(),
            });
        }
        if t.ty != v.ty {
            return Err(GraphError::UpdateType {
                target,
                target_ty: t.ty.clone(),
                value,
                value_ty: v.ty.clone(),
            });
        }
        if self.updates.iter().any(|(t, _)| *t == target) {
            return Err(GraphError::DoubleUpdate { target });
        }
        self.updates.push((target, value));
        Ok(())
    }

    /// Removes all outputs and updates (a transformation re-declares the ones it keeps).
    pub fn clear_roots(&mut self) {
        self.outputs.clear();
        self.updates.clear();
    }

    /// Mutable access for passes; [`crate::verify`] checks the result.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    /// Raw root lists, for passes that remap ids (unchecked; verify afterwards).
    pub fn roots_mut(&mut self) -> (&mut Vec<Output>, &mut Vec<Update>) {
        (&mut self.outputs, &mut self.updates)
    }

    /// Extends `marked` (one flag per node) to every node a marked node depends on.
    /// One reverse sweep suffices: a node's inputs always come before it.
    pub fn mark_inputs(&self, marked: &mut [bool]) {
        for i in (0..self.nodes.len()).rev() {
            if marked[i] {
                for inp in &self.nodes[i].inputs {
                    marked[inp.index()] = true;
                }
            }
        }
    }

    /// The same graph with its nodes in `order` (a permutation of every node id in
    /// which each node comes after its operands; `None` otherwise): outputs and updates
    /// follow their nodes. Passes that schedule (`schedule_collectives`) build on it.
    pub fn permuted(&self, order: &[NodeId]) -> Option<Graph> {
        let n = self.nodes.len();
        if order.len() != n {
            return None;
        }
        let mut remap = vec![None; n];
        let mut out = Graph::new(self.name.clone());
        for &id in order {
            let mut node = self.nodes.get(id.index())?.clone();
            if remap[id.index()].is_some() {
                return None;
            }
            for inp in &mut node.inputs {
                *inp = remap[inp.index()]?;
            }
            remap[id.index()] = Some(out.push_unchecked(node));
        }
        let at = |id: &NodeId| remap[id.index()].expect("every node placed");
        out.outputs = self
            .outputs
            .iter()
            .map(|(name, id)| (name.clone(), at(id)))
            .collect();
        out.updates = self.updates.iter().map(|(t, v)| (at(t), at(v))).collect();
        Some(out)
    }

    /// Removes nodes at index `first` or later that no output or update uses (leaves are
    /// always kept: callers feed them), renumbering the survivors in order. Nodes before
    /// `first` keep their ids. Transformations that append to a graph (autodiff) use it to
    /// drop the partial results they did not need, so their output is what a reader
    /// expects and the forward part is byte-identical to the input graph.
    pub fn prune_unused_from(&self, first: usize) -> Graph {
        let n = self.nodes.len();
        let mut live = vec![false; n];
        for (_, id) in &self.outputs {
            live[id.index()] = true;
        }
        for (t, v) in &self.updates {
            live[t.index()] = true;
            live[v.index()] = true;
        }
        for (i, (l, node)) in live.iter_mut().zip(&self.nodes).enumerate() {
            if i < first || node.op.leaf_name().is_some() {
                *l = true;
            }
        }
        self.mark_inputs(&mut live);
        let mut remap = vec![NodeId(u32::MAX); n];
        let mut out = Graph::new(self.name.clone());
        for (i, node) in self.nodes.iter().enumerate() {
            if live[i] {
                let mut node = node.clone();
                for inp in &mut node.inputs {
                    *inp = remap[inp.index()];
                }
                remap[i] = out.push_unchecked(node);
            }
        }
        out.outputs = self
            .outputs
            .iter()
            .map(|(name, id)| (name.clone(), remap[id.index()]))
            .collect();
        out.updates = self
            .updates
            .iter()
            .map(|(t, v)| (remap[t.index()], remap[v.index()]))
            .collect();
        out
    }
}

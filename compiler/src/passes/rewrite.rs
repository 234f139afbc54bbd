//! The one way passes build their output: walk the old graph in order, map each node to
//! a node of a fresh graph (a copy with remapped inputs, or a replacement), then remap
//! the outputs and updates. Graphs are append-only arenas, so a rewrite is a rebuild.

use aotgrad_ir::{Graph, Node, NodeId, Op, TensorType};

pub(crate) struct Rewriter<'g> {
    pub old: &'g Graph,
    pub new: Graph,
    /// Old node index -> its node in `new`.
    pub map: Vec<NodeId>,
}

impl<'g> Rewriter<'g> {
    pub fn new(old: &'g Graph) -> Self {
        Rewriter {
            old,
            new: Graph::new(old.name.clone()),
            map: Vec::with_capacity(old.len()),
        }
    }

    /// The old node's inputs, mapped into the new graph.
    pub fn inputs(&self, node: &Node) -> Vec<NodeId> {
        node.inputs.iter().map(|i| self.map[i.index()]).collect()
    }

    /// Appends `op` over `inputs` with the type `ty` the old node had.
    pub fn push(&mut self, op: Op, inputs: Vec<NodeId>, ty: TensorType) -> NodeId {
        self.new.push_unchecked(Node { op, inputs, ty })
    }

    /// Appends `op` over `inputs` through the type rules; `None` when they reject it or
    /// infer a type other than `want` (then the caller keeps the original node).
    pub fn build(&mut self, op: Op, inputs: &[NodeId], want: &TensorType) -> Option<NodeId> {
        let tys: Vec<&TensorType> = inputs.iter().map(|&i| self.new.ty(i)).collect();
        let ty = op.infer(&tys).ok()?;
        if ty != *want {
            return None;
        }
        Some(self.push(op, inputs.to_vec(), ty))
    }

    pub fn finish(mut self) -> Graph {
        let (outputs, updates) = self.new.roots_mut();
        *outputs = self
            .old
            .outputs()
            .iter()
            .map(|(n, id)| (n.clone(), self.map[id.index()]))
            .collect();
        *updates = self
            .old
            .updates()
            .iter()
            .map(|(t, v)| (self.map[t.index()], self.map[v.index()]))
            .collect();
        self.new
    }
}

//! Common-subexpression elimination: two nodes with the same op (attributes included)
//! over the same inputs are one node. Autodiff and the optimizer builders emit many
//! such duplicates (the same broadcast of a seed, the same `|loss| < inf` gate for every
//! parameter, the bias-correction scalars of Adam).
//!
//! Leaves are never merged (each is fed by name). Random nodes are: their values are a
//! pure function of their key operand and shape, identical for identical nodes.

use std::collections::HashMap;

use aotgrad_ir::Graph;

use super::rewrite::Rewriter;

pub fn cse(g: &Graph) -> Graph {
    let mut rw = Rewriter::new(g);
    // Keyed by the op's exact text (`Debug` prints every attribute, and floats by
    // their shortest round-trip form) and the mapped inputs; deterministic.
    let mut seen: HashMap<String, aotgrad_ir::NodeId> = HashMap::new();
    for (_, node) in g.nodes() {
        let ins = rw.inputs(node);
        if node.op.leaf_name().is_some() {
            let id = rw.push(node.op.clone(), ins, node.ty.clone());
            rw.map.push(id);
            continue;
        }
        let key = format!("{:?}|{:?}|{:?}", node.op, ins, node.ty);
        let id = match seen.get(&key) {
            Some(&id) => id,
            None => {
                let id = rw.push(node.op.clone(), ins, node.ty.clone());
                seen.insert(key, id);
                id
            }
        };
        rw.map.push(id);
    }
    rw.finish()
}

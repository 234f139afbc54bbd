//! Collective scheduling: every `all_reduce` moves up to just after its operand, with
//! the `concat`s and `reshape`s that only assemble its operand (a gradient bucket, see
//! the trainer's `bucket_bytes`). The trainer appends a bucket's reduction after the
//! whole backward pass; here it moves to where the bucket's last gradient is computed,
//! so the lowered program starts the reduction while the rest of backward runs (and
//! `plan::overlap_collectives` puts its wait before the first update that needs it).
//! Only the order changes, never a value; graphs without collectives come back equal.

use aotgrad_ir::{Graph, NodeId, Op};

pub fn schedule_collectives(g: &Graph) -> Graph {
    let n = g.len();
    if !g
        .nodes()
        .any(|(_, node)| matches!(node.op, Op::AllReduce { .. }))
    {
        return g.clone();
    }
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (id, node) in g.nodes() {
        for i in &node.inputs {
            users[i.index()].push(id.index());
        }
    }
    let mut rooted = vec![false; n];
    for (_, id) in g.outputs() {
        rooted[id.index()] = true;
    }
    for (t, v) in g.updates() {
        rooted[t.index()] = true;
        rooted[v.index()] = true;
    }
    // Pulled up: the collectives, and what only feeds them (from the last node back,
    // so a node's users are decided before it).
    let mut pulled = vec![false; n];
    for i in (0..n).rev() {
        let op = &g.node(NodeId(i as u32)).op;
        pulled[i] = match op {
            Op::AllReduce { .. } => true,
            Op::Reshape(_) | Op::Concat { .. } => {
                !rooted[i] && !users[i].is_empty() && users[i].iter().all(|&u| pulled[u])
            }
            _ => false,
        };
    }
    // A node's place: its own position, or for a pulled node just after its latest
    // operand (after the pulled nodes already there).
    let mut key: Vec<(usize, usize)> = Vec::with_capacity(n);
    for (id, node) in g.nodes() {
        let i = id.index();
        key.push(if pulled[i] {
            let (major, minor) = node
                .inputs
                .iter()
                .map(|x| key[x.index()])
                .max()
                .unwrap_or((i, 0));
            (major, minor + 1)
        } else {
            (i, 0)
        });
    }
    let mut order: Vec<NodeId> = (0..n).map(|i| NodeId(i as u32)).collect();
    order.sort_by_key(|id| key[id.index()]);
    g.permuted(&order)
        .expect("a pulled node's key exceeds its operands' keys: the order is topological")
}

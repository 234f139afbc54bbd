//! Ahead-of-time reverse-mode autodiff: the gradient is a graph transformation.
//!
//! [`grad`] appends the gradient subgraph to a forward graph and returns one joint graph
//! whose extra outputs are the gradients (`<name>.grad`). Nothing runs: no tape, no
//! runtime bookkeeping. Because the result is an ordinary graph, `grad` applies again for
//! higher derivatives.
//!
//! The algorithm:
//! 1. Activity analysis: a node is *active* if it depends on a `wrt` node through
//!    differentiable edges and some differentiated output depends on it. Only active
//!    nodes get gradient nodes.
//! 2. Reverse sweep in reverse arena order: each active node's accumulated cotangent is
//!    pushed through its rule ([`rules::vjp`]) to its active operands; contributions to one
//!    node are summed in a fixed order, so the joint graph is deterministic.
//! 3. Slices gather instead of scatter: the cotangent of a contiguous slice along one
//!    axis is kept as a *piece* (its axis, its offset) rather than zero-padded to the
//!    operand's shape at once. When the operand's turn comes, disjoint pieces along one
//!    axis become a single `concat` (zeros filling the gaps), added to the dense
//!    contributions. An unrolled recurrence selects each of its `T` time steps out of
//!    one `[N, T, 4H]` input projection; padding each step's cotangent to the full
//!    shape and summing them cost `T` full-size additions (quadratic in `T`: 8 s of an
//!    8.5 s LSTM step at `T = 64`), the concat costs one copy. Overlapping pieces fall
//!    back to padding. The values are those of the padded sum except that a `-0.0`
//!    cotangent element stays `-0.0` (the sum turned it into `+0.0`).
//! 4. Products batch: the cotangents a matrix product sends its operands are kept as
//!    products not yet built. When one node receives several with the same flags and
//!    the same shapes but for the contracted dim (a recurrent weight used at each of `T`
//!    steps receives `T` products `dgates_t^T h_{t-1}` of `k = N`), they become one
//!    product of the operands concatenated along the contracted dims: `sum_t A_t B_t =
//!    [A_1 .. A_T] [B_1; ..; B_T]`, one GEMM of `k = T N` in place of `T` thin ones and
//!    `T - 1` additions (measured on the char LSTM: 128 products of `k = 32` at 0.28 ms
//!    each became two of `k = 2048`). The sum's rounding differs from the one-by-one
//!    additions as any reordering of a float sum does.

pub mod rules;

use aotgrad_ir::{
    ConstValue, Data, Dim, Graph, GraphBuilder, NodeId, Op, Scalar, Shape, SliceAxis, TensorType,
    Var,
};

/// The cotangent that seeds one differentiated output.
#[derive(Debug, Clone, PartialEq)]
pub enum Seed {
    /// 1 for a scalar output; an error for any other (as PyTorch's `backward()`).
    Auto,
    /// Ones of the output's shape, for any shape (`y.backward(torch.ones_like(y))`).
    Ones,
    /// A new graph input named `<output>.seed` that the caller feeds.
    Input,
    /// A constant cotangent (`y.backward(gradient)`).
    Const(Data),
}

/// Why a gradient could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GradError {
    #[error("no output named {0:?}")]
    UnknownOutput(String),
    #[error("no input, param, state or output named {0:?} to differentiate with respect to")]
    UnknownWrt(String),
    #[error("cannot differentiate with respect to {name:?}: it is {ty}, not floating-point")]
    NotFloat { name: String, ty: TensorType },
    #[error("cannot differentiate output {name:?} of type {ty}: it is not floating-point")]
    OutputNotFloat { name: String, ty: TensorType },
    #[error("output {name:?} is {ty}, not a scalar: give an explicit seed (cotangent)")]
    NeedsSeed { name: String, ty: TensorType },
    #[error("seed for {name:?} is {got}, but the output is {expected}")]
    SeedType {
        name: String,
        expected: TensorType,
        got: String,
    },
    #[error("gradient output {0:?} already exists")]
    Duplicate(String),
    #[error("the graph being differentiated has an error: {0}")]
    Build(Box<aotgrad_ir::BuildError>),
    #[error("the joint gradient graph does not verify (a bug in a derivative rule): {0}")]
    Invalid(aotgrad_ir::VerifyError),
    #[error("internal error in the derivative rule of `{op}` at {node}: {message}")]
    Rule {
        op: &'static str,
        node: NodeId,
        message: String,
    },
}

/// Differentiates the named outputs (each with its seed) with respect to the named nodes
/// (inputs, params, states, or outputs standing for intermediate values). Returns the
/// joint graph: the forward graph, unchanged, plus one output `<wrt>.grad` per `wrt`.
pub fn grad(graph: &Graph, outputs: &[(&str, Seed)], wrt: &[&str]) -> Result<Graph, GradError> {
    let named: Vec<(&str, String)> = wrt.iter().map(|w| (*w, format!("{w}.grad"))).collect();
    let named: Vec<(&str, &str)> = named.iter().map(|(w, n)| (*w, n.as_str())).collect();
    grad_named(graph, outputs, &named)
}

/// [`grad`] with explicit names for the gradient outputs: `wrt` holds
/// `(node name, gradient output name)` pairs. Use it to apply `grad` again, where the
/// default `<name>.grad` is already taken.
pub fn grad_named(
    graph: &Graph,
    outputs: &[(&str, Seed)],
    wrt: &[(&str, &str)],
) -> Result<Graph, GradError> {
    let b = GraphBuilder::from_graph(graph.clone());
    let mut roots = Vec::with_capacity(outputs.len());
    for (name, seed) in outputs {
        let id = graph
            .output(name)
            .ok_or_else(|| GradError::UnknownOutput(name.to_string()))?;
        let y = b.var(id).expect("outputs exist");
        roots.push((y, seed_var(&b, name, y, seed)?));
    }
    let mut targets = Vec::with_capacity(wrt.len());
    for (name, out) in wrt {
        let id = graph
            .find(name)
            .or_else(|| graph.output(name))
            .ok_or_else(|| GradError::UnknownWrt(name.to_string()))?;
        if graph.output(out).is_some() || wrt.iter().filter(|(_, o)| o == out).count() > 1 {
            return Err(GradError::Duplicate(out.to_string()));
        }
        targets.push((out.to_string(), b.var(id).expect("leaves exist")));
    }
    let wrt_vars: Vec<Var<'_>> = targets.iter().map(|(_, v)| *v).collect();
    let grads = vjp_in(&b, &roots, &wrt_vars)?;
    for ((out, _), gv) in targets.iter().zip(grads) {
        b.output(out, gv);
    }
    let joint = b.finish().map_err(|e| GradError::Build(Box::new(e)))?;
    // Rules return cotangents for every differentiable operand; the ones that flow into
    // nodes outside `wrt`'s cone (e.g. d/dx of a matmul when only the weight is wanted)
    // are dropped here, so the joint graph holds only what its outputs need.
    let joint = joint.prune_unused_from(graph.len());
    aotgrad_ir::verify(&joint).map_err(GradError::Invalid)?;
    Ok(joint)
}

fn seed_var<'g>(
    b: &'g GraphBuilder,
    name: &str,
    y: Var<'g>,
    seed: &Seed,
) -> Result<Var<'g>, GradError> {
    let ty = y.ty();
    if !ty.dtype.is_float() {
        return Err(GradError::OutputNotFloat {
            name: name.into(),
            ty,
        });
    }
    Ok(match seed {
        Seed::Auto if ty.rank() == 0 => y.ones_like(),
        Seed::Auto => {
            return Err(GradError::NeedsSeed {
                name: name.into(),
                ty,
            });
        }
        Seed::Ones => y.ones_like(),
        Seed::Input => b.input(&format!("{name}.seed"), ty.dtype, ty.shape.clone()),
        Seed::Const(data) => {
            let need = ty.shape.as_known().map(|d| d.iter().product::<usize>());
            if data.dtype() != ty.dtype || need != Some(data.len()) {
                let got = format!("{} {} values", data.len(), data.dtype());
                return Err(GradError::SeedType {
                    name: name.into(),
                    expected: ty.clone(),
                    got,
                });
            }
            b.apply(
                Op::Const {
                    value: ConstValue::Dense(data.clone()),
                    ty: ty.clone(),
                },
                &[],
            )
        }
    })
}

/// The core transformation, inside a builder so that callers (training steps, optimizers)
/// can keep building on the gradients: for `roots = [(y, seed)]`, returns
/// `sum_i seed_i^T dy_i/dw` for each `w` in `wrt`, as values of the same builder.
/// A `wrt` that no root depends on gets zeros.
pub fn vjp_in<'g>(
    b: &'g GraphBuilder,
    roots: &[(Var<'g>, Var<'g>)],
    wrt: &[Var<'g>],
) -> Result<Vec<Var<'g>>, GradError> {
    if let Some(e) = b.error() {
        return Err(GradError::Build(Box::new(e)));
    }
    let g = b.graph();
    for w in wrt {
        let ty = w.ty();
        if !ty.dtype.is_float() {
            let node = g.node(w.id());
            let name = node
                .op
                .leaf_name()
                .map(str::to_string)
                .unwrap_or_else(|| w.id().to_string());
            return Err(GradError::NotFloat { name, ty });
        }
    }
    for (y, s) in roots {
        if y.ty() != s.ty() {
            return Err(GradError::SeedType {
                name: y.id().to_string(),
                expected: y.ty(),
                got: s.ty().to_string(),
            });
        }
    }
    let active = activity(
        &g,
        roots.iter().map(|(y, _)| y.id()),
        wrt.iter().map(|w| w.id()),
    );

    // How many products each node is an operand of: only a node with several defers
    // its products' cotangents to batch them (module docs, 4.).
    let mut product_uses = vec![0usize; g.len()];
    for (id, node) in g.nodes() {
        if active[id.index()] && matches!(node.op, Op::MatMul { .. }) {
            for &operand in &node.inputs {
                product_uses[operand.index()] += 1;
            }
        }
    }
    // Each node's cotangent contributions, summed when its turn comes (`settle`).
    let mut adj: Vec<Vec<Var<'g>>> = vec![Vec::new(); g.len()];
    let mut pieces: Vec<Vec<Piece<'g>>> = vec![Vec::new(); g.len()];
    let mut products: Vec<Vec<rules::Product<'g>>> = vec![Vec::new(); g.len()];
    // A node's contributions, pieces (module docs, 3.) and products (4.) joined into its
    // cotangent, in a fixed order.
    let settle = |adj: &mut Vec<Vec<Var<'g>>>,
                  pieces: &mut Vec<Vec<Piece<'g>>>,
                  products: &mut Vec<Vec<rules::Product<'g>>>,
                  id: NodeId|
     -> Option<Var<'g>> {
        let mut parts = std::mem::take(&mut adj[id.index()]);
        let taken = std::mem::take(&mut pieces[id.index()]);
        if !taken.is_empty() {
            parts.extend(gather_pieces(b, taken, &g.ty(id).shape));
        }
        parts.extend(batch_products(b, std::mem::take(&mut products[id.index()])));
        parts.into_iter().reduce(|acc, ct| acc + ct)
    };
    for (y, s) in roots {
        if active[y.id().index()] {
            adj[y.id().index()].push(*s);
        }
    }
    for (id, node) in g.nodes().rev() {
        if !active[id.index()] {
            continue;
        }
        let Some(ct) = settle(&mut adj, &mut pieces, &mut products, id) else {
            continue;
        };
        // Kept settled: a `wrt` leaf's cotangent is read again at the end.
        adj[id.index()] = vec![ct];
        if let Some((axis, start)) = contiguous_slice(&g, node)
            && active[node.inputs[0].index()]
            && rules::differentiable_operands(&g, node)[0]
        {
            pieces[node.inputs[0].index()].push(Piece { axis, start, ct });
            continue;
        }
        if let Op::MatMul { trans_a, trans_b } = node.op {
            let var = |i: NodeId| b.var(i).expect("operands exist");
            let (a, c) = (var(node.inputs[0]), var(node.inputs[1]));
            let diff = rules::differentiable_operands(&g, node);
            let cts = rules::matmul_products(trans_a, trans_b, a, c, ct);
            for ((&operand, p), flows) in node.inputs.iter().zip(cts).zip(diff) {
                if !(flows && active[operand.index()]) {
                    continue;
                }
                if product_uses[operand.index()] > 1 {
                    products[operand.index()].push(p);
                } else {
                    // Nothing to batch with: built now, in the order the rule always
                    // had, so the operands die as early as before.
                    adj[operand.index()].extend(batch_products(b, vec![p]));
                }
            }
            continue;
        }
        let rule = rules::Rule {
            b,
            xs: node
                .inputs
                .iter()
                .map(|&i| b.var(i).expect("operands exist"))
                .collect(),
            y: b.var(id).expect("node exists"),
        };
        let contributions = rules::vjp(node, &rule, ct);
        if let Some(e) = b.error() {
            return Err(GradError::Rule {
                op: node.op.name(),
                node: id,
                message: e.to_string(),
            });
        }
        let diff = rules::differentiable_operands(&g, node);
        for ((&operand, contribution), flows) in node.inputs.iter().zip(contributions).zip(diff) {
            if let (Some(c), true) = (contribution, flows && active[operand.index()]) {
                if c.ty() != *g.ty(operand) {
                    return Err(GradError::Rule {
                        op: node.op.name(),
                        node: id,
                        message: format!(
                            "cotangent {} for operand {operand} of type {}",
                            c.ty(),
                            g.ty(operand)
                        ),
                    });
                }
                adj[operand.index()].push(c);
            }
        }
    }
    Ok(wrt
        .iter()
        .map(|w| {
            settle(&mut adj, &mut pieces, &mut products, w.id()).unwrap_or_else(|| w.zeros_like())
        })
        .collect())
}

/// The products' values, those that differ only in their contracted dims batched into
/// one product each (module docs, 4.), in order of first appearance.
fn batch_products<'g>(b: &'g GraphBuilder, products: Vec<rules::Product<'g>>) -> Vec<Var<'g>> {
    // The contracted axis of each operand: the last of an untransposed lhs, the
    // second-to-last of an untransposed rhs.
    let axes = |p: &rules::Product<'g>| {
        let (rl, rr) = (p.lhs.rank(), p.rhs.rank());
        (
            if p.trans_a { rl - 2 } else { rl - 1 },
            if p.trans_b { rr - 1 } else { rr - 2 },
        )
    };
    let key = |p: &rules::Product<'g>| {
        let (al, ar) = axes(p);
        let mut l = p.lhs.ty();
        let mut r = p.rhs.ty();
        l.shape.0[al] = Dim::Known(0);
        r.shape.0[ar] = Dim::Known(0);
        (p.trans_a, p.trans_b, l, r)
    };
    let mut groups: Vec<(_, Vec<rules::Product<'g>>)> = Vec::new();
    for p in products {
        if p.lhs.rank() < 2 || p.rhs.rank() < 2 {
            // The rules only make products of rank 2 and more; anything else is built
            // as it is.
            groups.push((None, vec![p]));
            continue;
        }
        let k = Some(key(&p));
        match groups.iter_mut().find(|(gk, _)| gk.is_some() && *gk == k) {
            Some((_, members)) => members.push(p),
            None => groups.push((k, vec![p])),
        }
    }
    groups
        .into_iter()
        .map(|(_, members)| {
            let first = members[0];
            if members.len() == 1 {
                return first.build(b);
            }
            let (al, ar) = axes(&first);
            let lhs: Vec<Var<'g>> = members.iter().map(|p| p.lhs).collect();
            let rhs: Vec<Var<'g>> = members.iter().map(|p| p.rhs).collect();
            rules::Product {
                lhs: b.apply(Op::Concat { axis: al }, &lhs),
                rhs: b.apply(Op::Concat { axis: ar }, &rhs),
                ..first
            }
            .build(b)
        })
        .collect()
}

/// The cotangent of a contiguous slice of an operand, not yet placed in the operand's
/// shape: it belongs at `start..start + len` of `axis` (every other axis whole).
#[derive(Clone, Copy)]
struct Piece<'g> {
    axis: usize,
    start: usize,
    ct: Var<'g>,
}

/// `(axis, start)` when `node` slices one known axis by step 1 and keeps every other
/// axis whole.
fn contiguous_slice(g: &Graph, node: &aotgrad_ir::Node) -> Option<(usize, usize)> {
    let Op::Slice(ranges) = &node.op else {
        return None;
    };
    let shape = &g.ty(node.inputs[0]).shape;
    let mut found = None;
    for (axis, r) in ranges.iter().enumerate() {
        match *r {
            SliceAxis::Full => {}
            SliceAxis::Range { start, stop, step } => {
                let size = shape.0[axis].known()?;
                if start == 0 && stop == size && step == 1 {
                    continue;
                }
                if step != 1 || found.is_some() {
                    return None;
                }
                found = Some((axis, start));
            }
        }
    }
    found
}

/// Dense cotangents (each of `shape`) from `pieces`, in a fixed order: for each axis in
/// order of first appearance, the disjoint pieces in one `concat` with zero gaps, or,
/// where pieces overlap, each piece zero-padded on its own.
fn gather_pieces<'g>(b: &'g GraphBuilder, pieces: Vec<Piece<'g>>, shape: &Shape) -> Vec<Var<'g>> {
    let mut axes: Vec<usize> = Vec::new();
    for p in &pieces {
        if !axes.contains(&p.axis) {
            axes.push(p.axis);
        }
    }
    let len = |p: &Piece<'g>| p.ct.shape().0[p.axis].known().unwrap_or(0);
    let mut out = Vec::new();
    for axis in axes {
        let mut group: Vec<Piece<'g>> = pieces.iter().filter(|p| p.axis == axis).copied().collect();
        group.sort_by_key(|p| p.start);
        let size = shape.0[axis].known().unwrap_or(0);
        let disjoint = group
            .windows(2)
            .all(|w| w[0].start + len(&w[0]) <= w[1].start);
        let zeros = |b: &'g GraphBuilder, n: usize, like: Var<'g>| {
            let mut s = shape.clone();
            s.0[axis] = Dim::Known(n);
            b.zeros(like.dtype(), s)
        };
        if disjoint && group.len() > 1 {
            let mut parts = Vec::new();
            let mut at = 0;
            for p in &group {
                if p.start > at {
                    parts.push(zeros(b, p.start - at, p.ct));
                }
                parts.push(p.ct);
                at = p.start + len(p);
            }
            if at < size {
                parts.push(zeros(b, size - at, group[0].ct));
            }
            out.push(b.apply(Op::Concat { axis }, &parts));
        } else {
            for p in group {
                let mut pads = vec![(0, 0); shape.rank()];
                pads[axis] = (p.start, size - p.start - len(&p));
                let zero = Scalar::zero(p.ct.dtype());
                out.push(b.apply(Op::Pad { pads, value: zero }, &[p.ct]));
            }
        }
    }
    out
}

/// `varies` (depends on a wrt through differentiable edges) and `useful` (a root depends
/// on it through differentiable edges), intersected.
fn activity(
    g: &Graph,
    roots: impl Iterator<Item = NodeId>,
    wrt: impl Iterator<Item = NodeId>,
) -> Vec<bool> {
    let n = g.len();
    let mut varies = vec![false; n];
    for w in wrt {
        varies[w.index()] = true;
    }
    let diff: Vec<Vec<bool>> = g
        .nodes()
        .map(|(_, node)| rules::differentiable_operands(g, node))
        .collect();
    for (id, node) in g.nodes() {
        if !varies[id.index()] && node.ty.dtype.is_float() {
            varies[id.index()] = node
                .inputs
                .iter()
                .zip(&diff[id.index()])
                .any(|(i, &d)| d && varies[i.index()]);
        }
    }
    let mut useful = vec![false; n];
    for r in roots {
        useful[r.index()] = true;
    }
    for (id, node) in g.nodes().rev() {
        if useful[id.index()] && varies[id.index()] {
            for (i, &d) in node.inputs.iter().zip(&diff[id.index()]) {
                if d {
                    useful[i.index()] = true;
                }
            }
        }
    }
    (0..n).map(|i| varies[i] && useful[i]).collect()
}

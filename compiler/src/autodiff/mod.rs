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

pub mod rules;

use aotgrad_ir::{ConstValue, Data, Graph, GraphBuilder, NodeId, Op, TensorType, Var};

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

    let mut adj: Vec<Option<Var<'g>>> = vec![None; g.len()];
    let accumulate = |adj: &mut Vec<Option<Var<'g>>>, id: NodeId, ct: Var<'g>| {
        let slot = &mut adj[id.index()];
        *slot = Some(match slot.take() {
            Some(prev) => prev + ct,
            None => ct,
        });
    };
    for (y, s) in roots {
        if active[y.id().index()] {
            accumulate(&mut adj, y.id(), *s);
        }
    }
    for (id, node) in g.nodes().rev() {
        if !active[id.index()] {
            continue;
        }
        let Some(ct) = adj[id.index()] else { continue };
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
                accumulate(&mut adj, operand, c);
            }
        }
    }
    Ok(wrt
        .iter()
        .map(|w| adj[w.id().index()].unwrap_or_else(|| w.zeros_like()))
        .collect())
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

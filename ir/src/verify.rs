//! The verifier: checks the invariants every stage relies on. Tests and debug builds run
//! it after every transformation.

use std::collections::BTreeSet;

use crate::{Graph, NodeId, Op};

/// One broken invariant, with the node it was found at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("verify: {}{message}", node.map(|n| format!("{n}: ")).unwrap_or_default())]
pub struct VerifyError {
    pub node: Option<NodeId>,
    pub message: String,
}

fn fail(node: Option<NodeId>, message: String) -> Result<(), VerifyError> {
    Err(VerifyError { node, message })
}

/// Checks operand order (which makes the graph acyclic and free of dangling uses),
/// every node's type against its op's shape rule, unique leaf and output names, and
/// that updates target persistent leaves with values of the same type.
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    let mut names = BTreeSet::new();
    for (id, node) in g.nodes() {
        for &i in &node.inputs {
            if i >= id {
                let what = if i.index() >= g.len() {
                    "undefined"
                } else {
                    "a later node (cycle or bad order)"
                };
                return fail(Some(id), format!("operand {i} is {what}"));
            }
        }
        if let Some(name) = node.op.leaf_name()
            && !names.insert(name)
        {
            return fail(Some(id), format!("leaf name {name:?} is defined twice"));
        }
        let tys: Vec<_> = node.inputs.iter().map(|&i| g.ty(i)).collect();
        match node.op.infer(&tys) {
            Ok(ty) if ty == node.ty => {}
            Ok(ty) => {
                return fail(
                    Some(id),
                    format!(
                        "`{}` has type {} but its operands give {ty}",
                        node.op.name(),
                        node.ty
                    ),
                );
            }
            Err(e) => return fail(Some(id), format!("`{}`: {e}", node.op.name())),
        }
    }
    let mut outs = BTreeSet::new();
    for (name, id) in g.outputs() {
        if id.index() >= g.len() {
            return fail(None, format!("output {name:?} refers to undefined {id}"));
        }
        if !outs.insert(name) {
            return fail(None, format!("output name {name:?} is used twice"));
        }
    }
    let mut targets = BTreeSet::new();
    for &(t, v) in g.updates() {
        let (Some(tn), Some(vn)) = (g.get(t), g.get(v)) else {
            return fail(
                None,
                format!("update {t} = {v} refers to an undefined node"),
            );
        };
        if !matches!(tn.op, Op::Param { .. } | Op::State { .. }) {
            return fail(
                Some(t),
                format!(
                    "update target is a `{}`, not a param or state",
                    tn.op.name()
                ),
            );
        }
        if tn.ty != vn.ty {
            return fail(
                Some(t),
                format!("updated with {v} of type {}, expected {}", vn.ty, tn.ty),
            );
        }
        if !targets.insert(t) {
            return fail(Some(t), "updated twice".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinaryOp, DType, Node, TensorType, shape};

    fn f32s(s: crate::Shape) -> TensorType {
        TensorType::new(DType::F32, s)
    }

    #[test]
    fn catches_forward_reference() {
        let mut g = Graph::new("g");
        let x = g.input("x", f32s(shape![3])).unwrap();
        g.push_unchecked(Node {
            op: Op::Binary(BinaryOp::Add),
            inputs: vec![x, NodeId(5)],
            ty: f32s(shape![3]),
        });
        let e = verify(&g).unwrap_err();
        assert_eq!(e.to_string(), "verify: %1: operand %5 is undefined");
    }

    #[test]
    fn catches_wrong_type() {
        let mut g = Graph::new("g");
        let x = g.input("x", f32s(shape![3])).unwrap();
        g.push_unchecked(Node {
            op: Op::Binary(BinaryOp::Add),
            inputs: vec![x, x],
            ty: f32s(shape![4]),
        });
        let e = verify(&g).unwrap_err();
        assert_eq!(
            e.to_string(),
            "verify: %1: `add` has type f32[4] but its operands give f32[3]"
        );
    }

    #[test]
    fn catches_bad_operands_and_duplicates() {
        let mut g = Graph::new("g");
        let x = g.input("x", f32s(shape![3])).unwrap();
        let i = g
            .input("i", TensorType::new(DType::I64, shape![3]))
            .unwrap();
        g.push_unchecked(Node {
            op: Op::Binary(BinaryOp::Add),
            inputs: vec![x, i],
            ty: f32s(shape![3]),
        });
        assert_eq!(
            verify(&g).unwrap_err().to_string(),
            "verify: %2: `add`: operand dtypes differ: f32[3] vs i64[3]"
        );
        let mut g = Graph::new("g");
        g.input("x", f32s(shape![3])).unwrap();
        g.push_unchecked(Node {
            op: Op::Input {
                name: "x".into(),
                ty: f32s(shape![3]),
            },
            inputs: vec![],
            ty: f32s(shape![3]),
        });
        assert_eq!(
            verify(&g).unwrap_err().to_string(),
            "verify: %1: leaf name \"x\" is defined twice"
        );
    }

    #[test]
    fn catches_bad_roots() {
        let mut g = Graph::new("g");
        let x = g.input("x", f32s(shape![3])).unwrap();
        let w = g.param("w", f32s(shape![3])).unwrap();
        assert!(g.set_update(x, w).is_err(), "inputs are not persistent");
        g.set_update(w, x).unwrap();
        assert_eq!(
            g.set_update(w, x).unwrap_err().to_string(),
            "%1 is updated twice"
        );
        g.roots_mut().1.push((x, w));
        assert_eq!(
            verify(&g).unwrap_err().to_string(),
            "verify: %0: update target is a `input`, not a param or state"
        );
        let mut g = Graph::new("g");
        let x = g.input("x", f32s(shape![3])).unwrap();
        g.roots_mut().0.push(("y".into(), NodeId(9)));
        assert!(verify(&g).unwrap_err().to_string().contains("undefined %9"));
        g.roots_mut().0.clear();
        g.set_output("y", x).unwrap();
        g.roots_mut().0.push(("y".into(), x));
        assert!(verify(&g).unwrap_err().to_string().contains("used twice"));
    }
}

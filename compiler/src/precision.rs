//! Precision change: the same program with every f32 replaced by f64.
//!
//! Used by gradient checking (finite differences need f64) and available to users who
//! want an f64 reference run of an f32 model. Every other dtype is left alone.

use aotgrad_ir::{ConstValue, DType, Graph, GraphError, Node, Op, Scalar, TensorType};

fn widen(d: DType) -> DType {
    if d == DType::F32 { DType::F64 } else { d }
}

fn widen_ty(t: &TensorType) -> TensorType {
    TensorType::new(widen(t.dtype), t.shape.clone())
}

fn widen_scalar(s: Scalar) -> Scalar {
    if s.dtype() == DType::F32 {
        s.cast(DType::F64)
    } else {
        s
    }
}

/// Returns `g` with f32 widened to f64 in every leaf, constant, cast target, iota,
/// random and pad value. Node ids, names, outputs and updates are unchanged.
pub fn widen_f32_to_f64(g: &Graph) -> Result<Graph, GraphError> {
    let mut out = Graph::new(g.name.clone());
    for (_, node) in g.nodes() {
        let op = match &node.op {
            Op::Input { name, ty } => Op::Input {
                name: name.clone(),
                ty: widen_ty(ty),
            },
            Op::Param { name, ty } => Op::Param {
                name: name.clone(),
                ty: widen_ty(ty),
            },
            Op::State { name, ty } => Op::State {
                name: name.clone(),
                ty: widen_ty(ty),
            },
            Op::Const { value, ty } => Op::Const {
                value: match value {
                    ConstValue::Splat(s) => ConstValue::Splat(widen_scalar(*s)),
                    ConstValue::Dense(d) => ConstValue::Dense(d.cast(widen(d.dtype()))),
                },
                ty: widen_ty(ty),
            },
            Op::Cast(d) => Op::Cast(widen(*d)),
            Op::Iota { shape, axis, dtype } => Op::Iota {
                shape: shape.clone(),
                axis: *axis,
                dtype: widen(*dtype),
            },
            Op::Random { dist, shape, dtype } => Op::Random {
                dist: *dist,
                shape: shape.clone(),
                dtype: widen(*dtype),
            },
            Op::Pad { pads, value } => Op::Pad {
                pads: pads.clone(),
                value: widen_scalar(*value),
            },
            other => other.clone(),
        };
        // Re-infer every type; the arena order and therefore the ids are preserved.
        let tys: Vec<&TensorType> = node.inputs.iter().map(|&i| out.ty(i)).collect();
        let ty = op.infer(&tys)?;
        out.push_unchecked(Node {
            op,
            inputs: node.inputs.clone(),
            ty,
        });
    }
    for (name, id) in g.outputs() {
        out.set_output(name, *id)?;
    }
    for &(t, v) in g.updates() {
        out.set_update(t, v)?;
    }
    Ok(out)
}

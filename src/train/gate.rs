//! Checked mode inside the program.

use aotgrad_ir::{Graph, Shape};

use super::PROB_CHECK;

/// Checked mode inside the program: every update becomes `where(ok, new, old)` with
/// `ok = |loss| < inf` (and the probability-range check when the loss has one), so a
/// step with a non-finite loss leaves parameters and state exactly as they were even
/// when the backend writes updates in place. The trainer then reports the error.
pub(super) fn gate_updates(g: &mut Graph) -> Result<(), aotgrad_ir::GraphError> {
    use aotgrad_ir::{BinaryOp, Op, Scalar, UnaryOp};
    let Some(loss) = g.output("loss") else {
        return Ok(());
    };
    let dtype = g.ty(loss).dtype;
    let abs = g.add(Op::Unary(UnaryOp::Abs), &[loss])?;
    let inf = g.splat(Scalar::from_f64(dtype, f64::INFINITY), Shape::scalar());
    let mut ok = g.add(Op::Binary(BinaryOp::Lt), &[abs, inf])?;
    if let Some(p) = g.output(PROB_CHECK) {
        ok = g.add(Op::Binary(BinaryOp::And), &[ok, p])?;
    }
    let updates = g.updates().to_vec();
    let mut gated = Vec::with_capacity(updates.len());
    for (target, value) in updates {
        let shape = g.ty(target).shape.clone();
        let rank = shape.rank();
        let ok_t = if rank == 0 {
            ok
        } else {
            let ones = g.add(Op::Reshape(Shape::known(&vec![1; rank])), &[ok])?;
            g.add(Op::Expand(shape), &[ones])?
        };
        gated.push((target, g.add(Op::Where, &[ok_t, value, target])?));
    }
    let (_, roots) = g.roots_mut();
    *roots = gated;
    Ok(())
}

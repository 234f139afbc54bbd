//! The inner axis of one row of a loop kernel: row pointers, the values that do not
//! change along the row (hoisted), a vector loop (unswitched on a row-invariant
//! `where`) and the scalar loop over the rest.

use std::collections::HashMap;

use aotgrad_ir::DType;
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::Variable;
use cranelift_module::Module;

use super::clif_type;
use super::collapse::Collapsed;
use super::kernel::{End, KernelGen, Lanes, Rows, Span, data_mem};
use super::vector::vector_plan;
use crate::program::{Affine, BufferId, FlatOp, LoopKernel, reduce_identity};

/// Where one row's outputs go: their row pointers and inner strides (elements).
struct OutRows {
    rows: Vec<Value>,
    strides: Vec<i64>,
    esz: i64,
    dtype: DType,
}

/// The stride of an access along the inner axis (`last`) of the collapsed loop.
fn inner_stride(a: &Affine, last: usize) -> i64 {
    a.strides[last]
}

/// Which expression nodes have the same value all along the inner axis.
fn invariant_nodes(k: &LoopKernel, c: &Collapsed) -> Vec<bool> {
    let last = c.shape.len() - 1;
    let inner_stride = |a: &Affine| inner_stride(a, last);
    let nodes = &k.expr.nodes;
    let mut invariant = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        invariant[i] = match &n.op {
            FlatOp::Load(l) => inner_stride(&c.loads[*l]) == 0,
            FlatOp::Index(_) => inner_stride(c.index[i].as_ref().expect("index")) == 0,
            FlatOp::Const(_) => true,
            FlatOp::Unary(_, a) | FlatOp::Cast(a) => invariant[*a],
            FlatOp::Binary(_, x, y) => invariant[*x] && invariant[*y],
            FlatOp::Where(c, x, y) => invariant[*c] && invariant[*x] && invariant[*y],
            FlatOp::Checked { index, .. } => invariant[*index],
            FlatOp::Gather { load, index, .. } => {
                inner_stride(&c.loads[*load]) == 0 && invariant[*index]
            }
        };
    }
    invariant
}

impl<M: Module> KernelGen<'_, '_, M> {
    /// Emits the inner axis of the row at outer index `idx` (its `span`), as vectors
    /// when `simd` and the kernel allows it, the rest as scalars.
    pub(super) fn inner(
        &mut self,
        k: &LoopKernel,
        c: &Collapsed,
        base: &HashMap<BufferId, Value>,
        idx: &[Value],
        span: Span,
        simd: bool,
    ) {
        let Span { len, range } = span;
        let (start, end) = match range {
            Some((lo, hi)) => (Some(lo), End::Var(hi)),
            None => (None, End::Const(len)),
        };
        let (mut rows, out) = self.row_pointers(k, c, base, idx);
        let invariant = invariant_nodes(k, c);
        // Hoisted scalar values of the invariant nodes.
        let zero = self.iconst(0);
        let hoisted = self.eval(k, &mut rows, zero, Lanes::Scalar, &invariant, &[]);
        let vec_ty = simd
            .then(|| vector_plan(k, &invariant, out.dtype, &out.strides, len))
            .flatten();
        // Register accumulator when the output does not move along the inner axis.
        let acc = (k.reduce.is_some() && out.strides[0] == 0)
            .then(|| self.accumulator(k, out.dtype, clif_type(out.dtype), |_, id| id));
        let from = vec_ty.map(|vt| {
            let inv = (&invariant[..], &hoisted[..]);
            self.vector_loop(k, &mut rows, &out, acc, inv, vt, (start, end))
        });
        // Scalar loop (all of it, or the vector loop's tail).
        self.inner_loop(from.or(start), end, 1, &mut |g, j| {
            let vals = g.eval(k, &mut rows, j, Lanes::Scalar, &invariant, &hoisted);
            g.finish_element(k, &out, acc, &vals, j, Lanes::Scalar);
        });
        if let (Some(op), Some(acc)) = (k.reduce, acc) {
            let ty = clif_type(out.dtype);
            let a = self.fb.ins().load(ty, data_mem(), out.rows[0], 0);
            let v = self.fb.use_var(acc);
            let r = self.combine(op, out.dtype, a, v, Lanes::Scalar);
            self.fb.ins().store(data_mem(), r, out.rows[0], 0);
        }
    }

    /// Row pointers of every load and output, and row offsets of index nodes, at the
    /// outer index `idx`.
    fn row_pointers(
        &mut self,
        k: &LoopKernel,
        c: &Collapsed,
        base: &HashMap<BufferId, Value>,
        idx: &[Value],
    ) -> (Rows, OutRows) {
        let last = c.shape.len() - 1;
        let inner_stride = |a: &Affine| inner_stride(a, last);
        let mut loads = Vec::new();
        for (li, (b, _)) in k.loads.iter().enumerate() {
            let off = self.row_offset(&c.loads[li], idx);
            let esz = self.p.buffer(*b).dtype.size_bytes() as i64;
            let bytes = self.fb.ins().imul_imm_s(off, esz);
            loads.push(self.fb.ins().iadd(base[b], bytes));
        }
        let dtype = self.p.buffer(k.outs[0].buf).dtype;
        let esz = dtype.size_bytes() as i64;
        let mut out_rows = Vec::new();
        for (o, at) in k.outs.iter().zip(&c.outs) {
            let off = self.row_offset(at, idx);
            let bytes = self.fb.ins().imul_imm_s(off, esz);
            out_rows.push(self.fb.ins().iadd(base[&o.buf], bytes));
        }
        let mut index = vec![None; k.expr.nodes.len()];
        for (i, a) in c.index.iter().enumerate() {
            if let Some(a) = a {
                index[i] = Some(self.row_offset(a, idx));
            }
        }
        let rows = Rows {
            loads,
            index,
            load_strides: c.loads.iter().map(inner_stride).collect(),
            index_strides: c
                .index
                .iter()
                .map(|a| a.as_ref().map(inner_stride))
                .collect(),
        };
        let out = OutRows {
            rows: out_rows,
            strides: c.outs.iter().map(inner_stride).collect(),
            esz,
            dtype,
        };
        (rows, out)
    }

    /// A variable of type `ty` holding the reduction's identity (`widen` turns the
    /// scalar identity into a value of `ty`).
    fn accumulator(
        &mut self,
        k: &LoopKernel,
        dtype: DType,
        ty: Type,
        widen: impl FnOnce(&mut Self, Value) -> Value,
    ) -> Variable {
        let v = self.fb.declare_var(ty);
        let id = self.scalar_const(reduce_identity(k.reduce.expect("a reduction"), dtype));
        let id = widen(self, id);
        self.fb.def_var(v, id);
        v
    }

    /// What one iteration at `j` does with the values it computed: store each output,
    /// or combine the reduced one into the accumulator `acc` or into the output.
    fn finish_element(
        &mut self,
        k: &LoopKernel,
        out: &OutRows,
        acc: Option<Variable>,
        vals: &[Option<Value>],
        j: Value,
        lanes: Lanes,
    ) {
        let v = vals[k.outs[0].value].expect("output evaluated");
        match (k.reduce, acc) {
            (None, _) => {
                // Every load of this index is above; now the stores.
                for (o, (&row, &stride)) in k.outs.iter().zip(out.rows.iter().zip(&out.strides)) {
                    let v = vals[o.value].expect("output evaluated");
                    let addr = self.elem_addr(row, j, stride, out.esz);
                    self.fb.ins().store(data_mem(), v, addr, 0);
                }
            }
            (Some(op), Some(acc)) => {
                let a = self.fb.use_var(acc);
                let r = self.combine(op, out.dtype, a, v, lanes);
                self.fb.def_var(acc, r);
            }
            (Some(op), None) => {
                let ty = match lanes {
                    Lanes::Vector(vt) => vt,
                    Lanes::Scalar => clif_type(out.dtype),
                };
                let addr = self.elem_addr(out.rows[0], j, out.strides[0], out.esz);
                let a = self.fb.ins().load(ty, data_mem(), addr, 0);
                let r = self.combine(op, out.dtype, a, v, lanes);
                self.fb.ins().store(data_mem(), r, addr, 0);
            }
        }
    }

    /// The vector loop over the row (`vt` lanes at a time) from `start` towards `end`;
    /// returns where it stopped, for the scalar tail. `inv` is the invariant nodes and
    /// their hoisted scalar values; a vector accumulator folds into `acc` at the end.
    #[allow(clippy::too_many_arguments)] // one row's state, used once
    fn vector_loop(
        &mut self,
        k: &LoopKernel,
        rows: &mut Rows,
        out: &OutRows,
        acc: Option<Variable>,
        inv: (&[bool], &[Option<Value>]),
        vt: Type,
        (start, end): (Option<Value>, End),
    ) -> Value {
        let (invariant, hoisted) = inv;
        let nodes = &k.expr.nodes;
        let lanes = vt.lane_count() as i64;
        // Splat the hoisted values the vector body uses. Only values of the vector's
        // element type (or bool masks) can feed a vector node; `vector_plan`
        // guarantees no other invariant is used.
        let mut vhoist: Vec<Option<Value>> = vec![None; nodes.len()];
        for (i, h) in hoisted.iter().enumerate() {
            let d = nodes[i].dtype;
            if let Some(h) = h
                && (d == out.dtype || d == DType::Bool)
            {
                vhoist[i] = Some(self.splat(*h, d, vt));
            }
        }
        let vacc =
            acc.map(|_| self.accumulator(k, out.dtype, vt, |g, id| g.fb.ins().splat(vt, id)));
        let mut body = |g: &mut Self| {
            g.inner_loop(start, end, lanes, &mut |g, j| {
                let vals = g.eval(k, rows, j, Lanes::Vector(vt), invariant, &vhoist);
                g.finish_element(k, out, vacc, &vals, j, Lanes::Vector(vt));
            })
        };
        // Unswitching: a `where` whose condition is the same for the whole row (the
        // optimizer's finiteness gate) would cost three vector operations per
        // output and vector; instead the loop is emitted twice, once per value of
        // the condition, and a branch before it picks one.
        let switch = nodes.iter().enumerate().find_map(|(i, n)| match n.op {
            FlatOp::Where(c, _, _) if !invariant[i] && invariant[c] => Some(c),
            _ => None,
        });
        let stop = match switch.and_then(|c| hoisted[c].map(|h| (c, h))) {
            None => body(self),
            Some((c, h)) => {
                let (yes, no) = (self.fb.create_block(), self.fb.create_block());
                let join = self.fb.create_block();
                let stop = self.fb.append_block_param(join, types::I64);
                self.fb.ins().brif(h, yes, &[], no, &[]);
                for (block, value) in [(yes, true), (no, false)] {
                    self.fb.switch_to_block(block);
                    self.known.insert(c, value);
                    let end = body(self);
                    self.known.remove(&c);
                    self.fb.ins().jump(join, &[end.into()]);
                }
                self.fb.switch_to_block(join);
                stop
            }
        };
        if let (Some(op), Some(vacc), Some(acc)) = (k.reduce, vacc, acc) {
            // Lanes fold left to right into the scalar accumulator: fixed order.
            let v = self.fb.use_var(vacc);
            let mut a = self.fb.use_var(acc);
            for lane in 0..lanes {
                let x = self.fb.ins().extractlane(v, lane as u8);
                a = self.combine(op, out.dtype, a, x, Lanes::Scalar);
            }
            self.fb.def_var(acc, a);
        }
        stop
    }
}

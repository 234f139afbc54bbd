//! Expression evaluation inside a loop kernel: each flat node as Cranelift
//! instructions, scalar or on 128-bit vectors, with the interpreter's semantics (NaN
//! rules of maximum/minimum, sign, saturating casts; f32 exp and tanh inline, libm calls
//! for the other transcendentals).

use aotgrad_ir::{BinaryOp, DType, NodeId, ReduceOp, Scalar, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{AtomicRmwOp, Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_module::Module;

use super::kernel::{KernelGen, Lanes, Rows, data_mem};
use super::{Helper, clif_type, fault_slot};
use crate::program::{FlatOp, LoopKernel};

impl<M: Module> KernelGen<'_, '_, M> {
    /// Evaluates the expression at inner index `j`. With `only`, evaluates just the
    /// nodes flagged there (the hoisting pass); otherwise takes flagged nodes from
    /// `pre` and evaluates the rest.
    pub(super) fn eval(
        &mut self,
        k: &LoopKernel,
        rows: &mut Rows,
        j: Value,
        lanes: Lanes,
        invariant: &[bool],
        pre: &[Option<Value>],
    ) -> Vec<Option<Value>> {
        let nodes = &k.expr.nodes;
        let hoisting = pre.is_empty();
        let mut vals: Vec<Option<Value>> = vec![None; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            if hoisting && !invariant[i] {
                continue;
            }
            if !hoisting && invariant[i] {
                vals[i] = pre[i];
                continue;
            }
            let v = |x: usize| vals[x].expect("operands first");
            let val = match &n.op {
                FlatOp::Load(l) => {
                    let (b, _) = k.loads[*l];
                    let dt = self.p.buffer(b).dtype;
                    let esz = dt.size_bytes() as i64;
                    let stride = rows.load_strides[*l];
                    let addr = self.elem_addr(rows.loads[*l], j, stride, esz);
                    match lanes {
                        Lanes::Vector(vt) if stride == 1 => {
                            self.fb.ins().load(vt, data_mem(), addr, 0)
                        }
                        Lanes::Vector(vt) if stride != 0 => {
                            self.strided_load(vt, addr, stride * esz)
                        }
                        _ => self.fb.ins().load(clif_type(dt), data_mem(), addr, 0),
                    }
                }
                FlatOp::Index(_) => {
                    let row = rows.index[i].expect("index row");
                    let s = rows.index_strides[i].expect("index stride");
                    if s == 0 {
                        row
                    } else {
                        let t = self.fb.ins().imul_imm_s(j, s);
                        self.fb.ins().iadd(row, t)
                    }
                }
                FlatOp::Const(s) => self.scalar_const(*s),
                FlatOp::Unary(u, a) => {
                    let ad = nodes[*a].dtype;
                    self.unary(*u, ad, v(*a), lanes)
                }
                FlatOp::Binary(b, x, y) => {
                    let xd = nodes[*x].dtype;
                    self.binary(*b, xd, v(*x), v(*y), lanes)
                }
                FlatOp::Where(c, x, y) => match self.known.get(c) {
                    Some(true) => v(*x),
                    Some(false) => v(*y),
                    None => self.select_any(lanes, v(*c), v(*x), v(*y)),
                },
                FlatOp::Cast(a) => self.cast(nodes[*a].dtype, n.dtype, v(*a)),
                FlatOp::Checked { index, len, node } => {
                    let idx = self.cast(nodes[*index].dtype, DType::I64, v(*index));
                    self.checked(idx, *len, *node)
                }
                FlatOp::Gather {
                    load,
                    index,
                    stride,
                } => {
                    // Scalar only (`vector_plan` refuses a varying gather); the index
                    // is checked, so the address is inside the buffer.
                    let (b, _) = k.loads[*load];
                    let dt = self.p.buffer(b).dtype;
                    let esz = dt.size_bytes() as i64;
                    let row = self.elem_addr(rows.loads[*load], j, rows.load_strides[*load], esz);
                    let off = self.fb.ins().imul_imm_s(v(*index), stride * esz);
                    let addr = self.fb.ins().iadd(row, off);
                    self.fb.ins().load(clif_type(dt), data_mem(), addr, 0)
                }
            };
            vals[i] = Some(val);
        }
        vals
    }

    /// `idx` if it lies in `[0, len)`, else 0 with the fault recorded in `node`'s slot
    /// (on a cold path: two atomic updates, see [`FaultSlot`]).
    pub(super) fn checked(&mut self, idx: Value, len: usize, node: NodeId) -> Value {
        let ok = self
            .fb
            .ins()
            .icmp_imm_u(IntCC::UnsignedLessThan, idx, len as i64);
        let bad = self.fb.create_block();
        let cont = self.fb.create_block();
        self.fb.set_cold_block(bad);
        self.fb.ins().brif(ok, cont, &[], bad, &[]);
        self.fb.switch_to_block(bad);
        let slot = fault_slot(self.faults, node, len);
        let bufs = self.bufs.expect("inside a kernel function");
        let table = self.fb.ins().load(
            self.ptr,
            MemFlagsData::trusted().with_readonly(),
            bufs,
            (self.p.buffers.len() * 8) as i32,
        );
        let flag = self.fb.ins().iadd_imm_s(table, (slot * 16) as i64);
        let least = self.fb.ins().iadd_imm_s(table, (slot * 16 + 8) as i64);
        let one = self.iconst(1);
        self.fb.ins().atomic_rmw(
            types::I64,
            MemFlagsData::trusted(),
            AtomicRmwOp::Or,
            flag,
            one,
        );
        self.fb.ins().atomic_rmw(
            types::I64,
            MemFlagsData::trusted(),
            AtomicRmwOp::Umin,
            least,
            idx,
        );
        self.fb.ins().jump(cont, &[]);
        self.fb.switch_to_block(cont);
        let zero = self.iconst(0);
        self.fb.ins().select(ok, idx, zero)
    }

    pub(super) fn bitselect(&mut self, vt: Type, mask: Value, x: Value, y: Value) -> Value {
        let m = self.fb.ins().bitcast(
            vt,
            MemFlagsData::new().with_endianness(Endianness::Little),
            mask,
        );
        self.fb.ins().bitselect(m, x, y)
    }

    pub(super) fn math(&mut self, h: Helper, args: &[Value]) -> Value {
        let f = self.helper(h);
        let call = self.fb.ins().call(f, args);
        self.fb.inst_results(call)[0]
    }

    pub(super) fn unary(&mut self, u: UnaryOp, d: DType, a: Value, lanes: Lanes) -> Value {
        let float = d.is_float();
        let ins = self.fb.ins();
        match u {
            UnaryOp::Neg if float => ins.fneg(a),
            UnaryOp::Neg => ins.ineg(a),
            UnaryOp::Abs if float => ins.fabs(a),
            UnaryOp::Abs if d == DType::U8 => a,
            UnaryOp::Abs => ins.iabs(a),
            UnaryOp::Sign => match lanes {
                Lanes::Scalar => self.sign(d, a),
                Lanes::Vector(vt) => self.sign_lanes(d, vt, a),
            },
            UnaryOp::Sqrt => ins.sqrt(a),
            UnaryOp::Floor => ins.floor(a),
            UnaryOp::Ceil => ins.ceil(a),
            UnaryOp::Trunc => ins.trunc(a),
            UnaryOp::Recip => {
                let one = match lanes {
                    Lanes::Scalar => self.scalar_const(Scalar::one(d)),
                    Lanes::Vector(vt) => {
                        let s = self.scalar_const(Scalar::one(d));
                        self.fb.ins().splat(vt, s)
                    }
                };
                self.fb.ins().fdiv(one, a)
            }
            UnaryOp::Not => match lanes {
                Lanes::Scalar => ins.bxor_imm_s(a, 1),
                Lanes::Vector(_) => ins.bnot(a),
            },
            UnaryOp::StopGradient => a,
            // f32 exp and tanh inline (`fastmath.rs`, the interpreter's sequence).
            UnaryOp::Exp if d == DType::F32 => self.exp_f32(a, lanes),
            UnaryOp::Tanh if d == DType::F32 => self.tanh_f32(a, lanes),
            // The op table's helper ops: a call into the runtime's libm functions,
            // the ones the interpreter calls.
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Tanh
            | UnaryOp::Log1p
            | UnaryOp::Expm1
            | UnaryOp::Erf => self.math(Helper::Unary(u, d), &[a]),
        }
    }

    /// The interpreter's sign: 1, -1, or `x * 0` (keeps NaN and the sign of zero).
    pub(super) fn sign(&mut self, d: DType, a: Value) -> Value {
        let ty = clif_type(d);
        if d.is_float() {
            let zero = self.scalar_const(Scalar::zero(d));
            let one = self.scalar_const(Scalar::one(d));
            let neg = self.scalar_const(Scalar::from_f64(d, -1.0));
            let gt = self.fb.ins().fcmp(FloatCC::GreaterThan, a, zero);
            let lt = self.fb.ins().fcmp(FloatCC::LessThan, a, zero);
            let z = self.fb.ins().fmul(a, zero);
            let r = self.fb.ins().select(lt, neg, z);
            self.fb.ins().select(gt, one, r)
        } else {
            let one = self.fb.ins().iconst(ty, 1);
            let zero = self.fb.ins().iconst(ty, 0);
            let neg = self.fb.ins().iconst(ty, -1);
            let gt = if d == DType::U8 {
                self.fb.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, a, 0)
            } else {
                self.fb.ins().icmp_imm_s(IntCC::SignedGreaterThan, a, 0)
            };
            let lt = if d == DType::U8 {
                self.fb.ins().iconst(types::I8, 0)
            } else {
                self.fb.ins().icmp_imm_s(IntCC::SignedLessThan, a, 0)
            };
            let r = self.fb.ins().select(lt, neg, zero);
            self.fb.ins().select(gt, one, r)
        }
    }

    /// [`Self::sign`] on float lanes (`vector_plan` admits no integer sign): the same
    /// comparisons as lane masks.
    fn sign_lanes(&mut self, d: DType, vt: Type, a: Value) -> Value {
        let lane = |g: &mut Self, v: f64| {
            let s = g.scalar_const(Scalar::from_f64(d, v));
            g.fb.ins().splat(vt, s)
        };
        let (zero, one, neg) = (lane(self, 0.0), lane(self, 1.0), lane(self, -1.0));
        let gt = self.fb.ins().fcmp(FloatCC::GreaterThan, a, zero);
        let lt = self.fb.ins().fcmp(FloatCC::LessThan, a, zero);
        let z = self.fb.ins().fmul(a, zero);
        let r = self.bitselect(vt, lt, neg, z);
        self.bitselect(vt, gt, one, r)
    }

    pub(super) fn select_any(&mut self, lanes: Lanes, c: Value, x: Value, y: Value) -> Value {
        match lanes {
            Lanes::Scalar => self.scalar_select(c, x, y),
            Lanes::Vector(vt) => self.bitselect(vt, c, x, y),
        }
    }

    /// `c ? x : y` without a branch. Cranelift lowers a float `select` on x86 to a
    /// conditional jump around a move, which mispredicts on data such as ReLU's sign
    /// (measured: 5.8 ns per element of a bias+ReLU copy, 10x a plain copy); an
    /// integer `select` is a `cmov`, so floats go through their bits.
    pub(super) fn scalar_select(&mut self, c: Value, x: Value, y: Value) -> Value {
        let ty = self.fb.func.dfg.value_type(x);
        let int = match ty {
            types::F32 => types::I32,
            types::F64 => types::I64,
            _ => return self.fb.ins().select(c, x, y),
        };
        let flags = MemFlagsData::new();
        let (xi, yi) = (
            self.fb.ins().bitcast(int, flags, x),
            self.fb.ins().bitcast(int, flags, y),
        );
        let r = self.fb.ins().select(c, xi, yi);
        self.fb.ins().bitcast(ty, flags, r)
    }

    /// PyTorch's NaN-propagating maximum/minimum, exactly as the interpreter computes
    /// it: a NaN `x` wins, then a NaN `y`, else the larger (smaller) with ties to `x`.
    pub(super) fn float_extremum(&mut self, max: bool, x: Value, y: Value, lanes: Lanes) -> Value {
        let cc = if max {
            FloatCC::GreaterThan
        } else {
            FloatCC::LessThan
        };
        let better = self.fb.ins().fcmp(cc, y, x);
        let r = self.select_any(lanes, better, y, x);
        let y_nan = self.fb.ins().fcmp(FloatCC::Unordered, y, y);
        let r = self.select_any(lanes, y_nan, y, r);
        let x_nan = self.fb.ins().fcmp(FloatCC::Unordered, x, x);
        self.select_any(lanes, x_nan, x, r)
    }

    pub(super) fn binary(
        &mut self,
        b: BinaryOp,
        d: DType,
        x: Value,
        y: Value,
        lanes: Lanes,
    ) -> Value {
        let float = d.is_float();
        let unsigned = matches!(d, DType::U8 | DType::Bool);
        let cmp = |f: FloatCC, s: IntCC, u: IntCC| (f, if unsigned { u } else { s });
        let cc = match b {
            BinaryOp::Lt => Some(cmp(
                FloatCC::LessThan,
                IntCC::SignedLessThan,
                IntCC::UnsignedLessThan,
            )),
            BinaryOp::Le => Some(cmp(
                FloatCC::LessThanOrEqual,
                IntCC::SignedLessThanOrEqual,
                IntCC::UnsignedLessThanOrEqual,
            )),
            BinaryOp::Gt => Some(cmp(
                FloatCC::GreaterThan,
                IntCC::SignedGreaterThan,
                IntCC::UnsignedGreaterThan,
            )),
            BinaryOp::Ge => Some(cmp(
                FloatCC::GreaterThanOrEqual,
                IntCC::SignedGreaterThanOrEqual,
                IntCC::UnsignedGreaterThanOrEqual,
            )),
            BinaryOp::Eq => Some((FloatCC::Equal, IntCC::Equal)),
            BinaryOp::Ne => Some((FloatCC::NotEqual, IntCC::NotEqual)),
            _ => None,
        };
        if let Some((fcc, icc)) = cc {
            return if float {
                self.fb.ins().fcmp(fcc, x, y)
            } else {
                self.fb.ins().icmp(icc, x, y)
            };
        }
        let ins = self.fb.ins();
        match b {
            BinaryOp::Add if float => ins.fadd(x, y),
            BinaryOp::Add => ins.iadd(x, y),
            BinaryOp::Sub if float => ins.fsub(x, y),
            BinaryOp::Sub => ins.isub(x, y),
            BinaryOp::Mul if float => ins.fmul(x, y),
            BinaryOp::Mul => ins.imul(x, y),
            BinaryOp::Div => ins.fdiv(x, y),
            BinaryOp::Maximum if float => self.float_extremum(true, x, y, lanes),
            BinaryOp::Minimum if float => self.float_extremum(false, x, y, lanes),
            BinaryOp::Maximum if unsigned => ins.umax(x, y),
            BinaryOp::Minimum if unsigned => ins.umin(x, y),
            BinaryOp::Maximum => ins.smax(x, y),
            BinaryOp::Minimum => ins.smin(x, y),
            BinaryOp::And => ins.band(x, y),
            BinaryOp::Or => ins.bor(x, y),
            BinaryOp::Pow => self.math(Helper::Binary(BinaryOp::Pow, d), &[x, y]),
            _ => unreachable!("comparisons are handled above"),
        }
    }

    pub(super) fn combine(
        &mut self,
        op: ReduceOp,
        d: DType,
        acc: Value,
        x: Value,
        lanes: Lanes,
    ) -> Value {
        match op {
            ReduceOp::Sum => self.binary(BinaryOp::Add, d, acc, x, lanes),
            ReduceOp::Prod => self.binary(BinaryOp::Mul, d, acc, x, lanes),
            ReduceOp::Max => self.binary(BinaryOp::Maximum, d, acc, x, lanes),
            ReduceOp::Min => self.binary(BinaryOp::Minimum, d, acc, x, lanes),
        }
    }

    /// Casts with the interpreter's rules: floats to ints truncate and saturate (NaN is
    /// 0), ints to u8 saturate, anything to bool is `!= 0`.
    pub(super) fn cast(&mut self, from: DType, to: DType, a: Value) -> Value {
        use DType::*;
        let tt = clif_type(to);
        if from == to {
            return a;
        }
        if to == Bool {
            return if from.is_float() {
                let z = self.scalar_const(Scalar::zero(from));
                self.fb.ins().fcmp(FloatCC::NotEqual, a, z)
            } else {
                self.fb.ins().icmp_imm_s(IntCC::NotEqual, a, 0)
            };
        }
        let ins = self.fb.ins();
        match (from, to) {
            (Bool | U8, I32 | I64) => ins.uextend(tt, a),
            (Bool, U8) => a,
            (Bool | U8, F32 | F64) => ins.fcvt_from_uint(tt, a),
            (I32, I64) => ins.sextend(tt, a),
            (I64, I32) => ins.ireduce(tt, a),
            (I32 | I64, U8) => {
                let it = clif_type(from);
                let lo = ins.iconst(it, 0);
                let a = self.fb.ins().smax(a, lo);
                let hi = self.fb.ins().iconst(it, 255);
                let a = self.fb.ins().smin(a, hi);
                self.fb.ins().ireduce(types::I8, a)
            }
            (I32, F32 | F64) => ins.fcvt_from_sint(tt, a),
            (I64, F64) => ins.fcvt_from_sint(tt, a),
            // Through f64, as `Scalar::cast` does (double rounding included).
            (I64, F32) => {
                let w = ins.fcvt_from_sint(types::F64, a);
                self.fb.ins().fdemote(types::F32, w)
            }
            (F32, F64) => ins.fpromote(tt, a),
            (F64, F32) => ins.fdemote(tt, a),
            (F32 | F64, I32 | I64) => ins.fcvt_to_sint_sat(tt, a),
            (F32 | F64, U8) => {
                let w = ins.fcvt_to_sint_sat(types::I32, a);
                let lo = self.fb.ins().iconst(types::I32, 0);
                let w = self.fb.ins().smax(w, lo);
                let hi = self.fb.ins().iconst(types::I32, 255);
                let w = self.fb.ins().smin(w, hi);
                self.fb.ins().ireduce(types::I8, w)
            }
            _ => unreachable!("every cast pair is listed: {from:?} -> {to:?}"),
        }
    }
}

//! f32 `exp` and `tanh` inline, on scalars and on f32x4 vectors: the operations of
//! `aotgrad_ir::math::{exp_f32, tanh_f32}` (which the interpreter runs), one for one and
//! in the same order, so the results are the interpreter's bits. No call, no branch, so a
//! loop containing them stays vectorised (`vector::vector_plan`).

use aotgrad_ir::math::{
    EXP_HI, EXP_LO, EXP_P, LN2_HI, LN2_LO, LOG2E, ROUND_MAGIC, TANH_Q, TANH_SMALL,
};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::immediates::Ieee32;
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_module::Module;

use super::kernel::{KernelGen, Lanes};

impl<M: Module> KernelGen<'_, '_, M> {
    /// `v` as an f32 scalar or in every lane.
    fn f32_lanes(&mut self, v: f32, lanes: Lanes) -> Value {
        let s = self.fb.ins().f32const(Ieee32::with_bits(v.to_bits()));
        match lanes {
            Lanes::Scalar => s,
            Lanes::Vector(vt) => self.fb.ins().splat(vt, s),
        }
    }

    /// `v` as an i32 scalar or in every lane of an i32x4.
    fn i32_lanes(&mut self, v: i32, lanes: Lanes) -> Value {
        let s = self.fb.ins().iconst(types::I32, i64::from(v));
        match lanes {
            Lanes::Scalar => s,
            Lanes::Vector(_) => self.fb.ins().splat(types::I32X4, s),
        }
    }

    /// Reinterprets f32 bits as i32 or back (`to`: the scalar or lane type wanted).
    fn reinterpret(&mut self, x: Value, to: Type, lanes: Lanes) -> Value {
        match lanes {
            Lanes::Scalar => self.fb.ins().bitcast(to, MemFlagsData::new(), x),
            Lanes::Vector(_) => {
                let vt = to.by(4).expect("4 lanes");
                let flags = MemFlagsData::new().with_endianness(Endianness::Little);
                self.fb.ins().bitcast(vt, flags, x)
            }
        }
    }

    /// `aotgrad_ir::math::exp_f32`.
    pub(super) fn exp_f32(&mut self, x: Value, lanes: Lanes) -> Value {
        let lo = self.f32_lanes(EXP_LO, lanes);
        let hi = self.f32_lanes(EXP_HI, lanes);
        let xc = self.fb.ins().fmax(x, lo);
        let xc = self.fb.ins().fmin(xc, hi);
        let log2e = self.f32_lanes(LOG2E, lanes);
        let magic = self.f32_lanes(ROUND_MAGIC, lanes);
        let t = self.fb.ins().fmul(xc, log2e);
        let t = self.fb.ins().fadd(t, magic);
        let n = self.fb.ins().fsub(t, magic);
        let c_hi = self.f32_lanes(LN2_HI, lanes);
        let c_lo = self.f32_lanes(LN2_LO, lanes);
        let nh = self.fb.ins().fmul(n, c_hi);
        let r = self.fb.ins().fsub(xc, nh);
        let nl = self.fb.ins().fmul(n, c_lo);
        let r = self.fb.ins().fsub(r, nl);
        let z = self.fb.ins().fmul(r, r);
        let mut p = self.f32_lanes(EXP_P[0], lanes);
        for &c in &EXP_P[1..] {
            let c = self.f32_lanes(c, lanes);
            p = self.fb.ins().fmul(p, r);
            p = self.fb.ins().fadd(p, c);
        }
        let p = self.fb.ins().fmul(p, z);
        let p = self.fb.ins().fadd(p, r);
        let one = self.f32_lanes(1.0, lanes);
        let p = self.fb.ins().fadd(p, one);
        // 2^n from the integer in t's low significand bits, as two powers of two.
        let tb = self.reinterpret(t, types::I32, lanes);
        let mb = self.i32_lanes(ROUND_MAGIC.to_bits() as i32, lanes);
        let ni = self.fb.ins().isub(tb, mb);
        let one_bit = self.fb.ins().iconst(types::I32, 1);
        let n1 = self.fb.ins().sshr(ni, one_bit);
        let n2 = self.fb.ins().isub(ni, n1);
        let bias = self.i32_lanes(127, lanes);
        let shift = self.fb.ins().iconst(types::I32, 23);
        let mut scaled = p;
        for part in [n1, n2] {
            let e = self.fb.ins().iadd(part, bias);
            let e = self.fb.ins().ishl(e, shift);
            let s = self.reinterpret(e, types::F32, lanes);
            scaled = self.fb.ins().fmul(scaled, s);
        }
        let nan = self.fb.ins().fcmp(FloatCC::Unordered, x, x);
        self.select_any(lanes, nan, x, scaled)
    }

    /// `aotgrad_ir::math::tanh_f32`.
    pub(super) fn tanh_f32(&mut self, x: Value, lanes: Lanes) -> Value {
        let ax = self.fb.ins().fabs(x);
        let z = self.fb.ins().fmul(x, x);
        let mut q = self.f32_lanes(TANH_Q[0], lanes);
        for &c in &TANH_Q[1..] {
            let c = self.f32_lanes(c, lanes);
            q = self.fb.ins().fmul(q, z);
            q = self.fb.ins().fadd(q, c);
        }
        let zq = self.fb.ins().fmul(z, q);
        let small = self.fb.ins().fmul(x, zq);
        let small = self.fb.ins().fadd(small, x);
        let zero = self.f32_lanes(0.0, lanes);
        let z_zero = self.fb.ins().fcmp(FloatCC::Equal, z, zero);
        let small = self.select_any(lanes, z_zero, x, small);
        let two_ax = self.fb.ins().fadd(ax, ax);
        let e = self.exp_f32(two_ax, lanes);
        let one = self.f32_lanes(1.0, lanes);
        let two = self.f32_lanes(2.0, lanes);
        let e1 = self.fb.ins().fadd(e, one);
        let q2 = self.fb.ins().fdiv(two, e1);
        let big = self.fb.ins().fsub(one, q2);
        let neg = self.fb.ins().fcmp(FloatCC::LessThan, x, zero);
        let nbig = self.fb.ins().fneg(big);
        let big = self.select_any(lanes, neg, nbig, big);
        let small_cut = self.f32_lanes(TANH_SMALL, lanes);
        let is_small = self.fb.ins().fcmp(FloatCC::LessThan, ax, small_cut);
        self.select_any(lanes, is_small, small, big)
    }
}

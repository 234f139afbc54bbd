//! One generated loop kernel: the loop nest over its collapsed axes, row pointers
//! computed once per row, loop-invariant values hoisted, and the inner loop as vectors
//! with a scalar tail (or unrolled when short). Scalar and vector arithmetic is in
//! [`super::scalar`].

use std::collections::HashMap;

use aotgrad_ir::{DType, Scalar};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{FuncRef, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

use super::collapse::{Collapsed, collapse, collapse_from};
use super::{FaultSlot, Helper, import};
use crate::program::{Affine, BufferId, LoopKernel, Program, RowKernel, reduce_identity};

pub(super) struct KernelGen<'a, 'b, M: Module> {
    pub fb: &'a mut FunctionBuilder<'b>,
    pub module: &'a mut M,
    pub helpers: &'a mut HashMap<Helper, FuncId>,
    pub imported: HashMap<Helper, FuncRef>,
    pub ptr: Type,
    pub p: &'a Program,
    /// The function's buffer table (set by `start`).
    pub bufs: Option<Value>,
    pub faults: &'a mut Vec<FaultSlot>,
    /// Expression nodes whose value is known while emitting one version of an
    /// unswitched vector loop (see `inner`): a `where` on them picks its branch.
    pub known: HashMap<usize, bool>,
}

/// How many lanes the inner loop evaluates at once.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Lanes {
    Scalar,
    /// A 128-bit vector of `ty`'s lane type.
    Vector(Type),
}

impl<M: Module> KernelGen<'_, '_, M> {
    pub(super) fn helper(&mut self, h: Helper) -> FuncRef {
        if let Some(f) = self.imported.get(&h) {
            return *f;
        }
        let id = import(&mut *self.module, self.helpers, h)
            .unwrap_or_else(|e| panic!("importing a runtime helper: {e}"));
        let f = self.module.declare_func_in_func(id, self.fb.func);
        self.imported.insert(h, f);
        f
    }

    pub(super) fn iconst(&mut self, v: i64) -> Value {
        self.fb.ins().iconst(types::I64, v)
    }

    pub(super) fn scalar_const(&mut self, s: Scalar) -> Value {
        let ins = self.fb.ins();
        match s {
            Scalar::Bool(b) => ins.iconst(types::I8, b as i64),
            Scalar::U8(v) => ins.iconst(types::I8, v as i64),
            Scalar::I32(v) => ins.iconst(types::I32, v as i64),
            Scalar::I64(v) => ins.iconst(types::I64, v),
            Scalar::F32(v) => ins.f32const(Ieee32::with_bits(v.to_bits())),
            Scalar::F64(v) => ins.f64const(Ieee64::with_bits(v.to_bits())),
        }
    }

    /// The entry block of a kernel function: `(bufs, lo, hi)`.
    pub(super) fn start(&mut self) -> (Value, Value, Value) {
        let start = self.fb.create_block();
        self.fb.append_block_params_for_function_params(start);
        self.fb.switch_to_block(start);
        let params = self.fb.block_params(start).to_vec();
        self.bufs = Some(params[0]);
        (params[0], params[1], params[2])
    }

    /// Base addresses of every buffer the loops access, loaded once.
    pub(super) fn bases<'k>(
        &mut self,
        bufs: Value,
        loops: impl Iterator<Item = &'k LoopKernel>,
    ) -> HashMap<BufferId, Value> {
        let mut base = HashMap::new();
        for k in loops {
            for b in k
                .loads
                .iter()
                .map(|(b, _)| *b)
                .chain(k.outs.iter().map(|o| o.buf))
            {
                if let std::collections::hash_map::Entry::Vacant(e) = base.entry(b) {
                    let v = self.fb.ins().load(
                        self.ptr,
                        MemFlagsData::trusted().with_readonly(),
                        bufs,
                        (b.index() * 8) as i32,
                    );
                    e.insert(v);
                }
            }
        }
        base
    }

    /// For a reduction: its identity as a value, the output's element size and base
    /// address (what a fill stores where); `None` for a plain loop.
    pub(super) fn identity_store(
        &mut self,
        k: &LoopKernel,
        base: &HashMap<BufferId, Value>,
    ) -> Option<(Value, i64, Value)> {
        let op = k.reduce?;
        let out_dtype = self.p.buffer(k.outs[0].buf).dtype;
        let idv = self.scalar_const(reduce_identity(op, out_dtype));
        Some((idv, out_dtype.size_bytes() as i64, base[&k.outs[0].buf]))
    }

    /// Fills a reduction's whole output with its identity (a reduction has exactly one
    /// output, dense over the axes it keeps: a block of that many elements from the
    /// access's offset, which is not 0 when the output was moved into a group buffer,
    /// see `lower::param_arena`).
    pub(super) fn fill_identity(&mut self, k: &LoopKernel, base: &HashMap<BufferId, Value>) {
        let Some((idv, esz, ob)) = self.identity_store(k, base) else {
            return;
        };
        let at = &k.outs[0].at;
        let n: usize = k
            .shape
            .iter()
            .zip(&at.strides)
            .filter(|(_, s)| **s != 0)
            .map(|(d, _)| *d)
            .product();
        let start = match at.offset {
            0 => ob,
            o => self.fb.ins().iadd_imm_s(ob, o * esz),
        };
        self.counted_loop(n as i64, &mut |g, i| {
            let off = g.fb.ins().imul_imm_s(i, esz);
            let addr = g.fb.ins().iadd(start, off);
            g.fb.ins().store(data_mem(), idv, addr, 0);
        });
    }

    /// Fills the outputs of row `r` of a reduction stage (collapsed as `c`) with the
    /// identity: the output's elements over its non-reduced axes.
    pub(super) fn fill_row(
        &mut self,
        k: &LoopKernel,
        c: &Collapsed,
        base: &HashMap<BufferId, Value>,
        r: Value,
    ) {
        let Some((idv, esz, ob)) = self.identity_store(k, base) else {
            return;
        };
        let at = &c.outs[0];
        let mut dims = vec![c.shape[0]];
        let mut strides = vec![at.strides[0]];
        for d in 1..c.shape.len() {
            if at.strides[d] != 0 {
                dims.push(c.shape[d]);
                strides.push(at.strides[d]);
            }
        }
        let sub = Affine {
            offset: at.offset,
            strides,
        };
        let mut idx = vec![r];
        self.nest(&dims, &mut idx, &mut |g, idx| {
            let off = g.row_offset(&sub, idx);
            let bytes = g.fb.ins().imul_imm_s(off, esz);
            let addr = g.fb.ins().iadd(ob, bytes);
            g.fb.ins().store(data_mem(), idv, addr, 0);
        });
    }

    /// A row kernel: for each row in `[lo, hi)`, every stage on that row (a reduction's
    /// outputs of the row filled with its identity first, so any range of rows can run
    /// on its own thread). A stage's first axis is kept apart from the next
    /// (`collapse_from`), so its inner loops are those it has as a kernel of its own.
    pub(super) fn rows_kernel(&mut self, r: &RowKernel, simd: bool) {
        let (bufs, lo, hi) = self.start();
        let base = self.bases(bufs, r.stages.iter());
        let collapsed: Vec<Collapsed> = r.stages.iter().map(|s| collapse_from(s, true)).collect();
        // A stage summing across rows starts from its identity once (the kernel then
        // runs all rows in one call, `RowKernel::serial`).
        for s in r.stages.iter().filter(|s| s.reduces_rows()) {
            self.fill_identity(s, &base);
        }
        self.range_loop(Some(lo), End::Var(hi), 1, &mut |g, i| {
            for (s, c) in r.stages.iter().zip(&collapsed) {
                if !s.reduces_rows() {
                    g.fill_row(s, c, &base, i);
                }
                let rank = c.shape.len();
                if rank == 1 {
                    // One element per row: the row axis is the inner loop, run on [i, i+1).
                    let next = g.fb.ins().iadd_imm_s(i, 1);
                    let span = Span {
                        len: c.shape[0] as i64,
                        range: Some((i, next)),
                    };
                    g.inner(s, c, &base, &[], span, false);
                } else {
                    let mut idx = vec![i];
                    g.nest(&c.shape[..rank - 1], &mut idx, &mut |g, idx| {
                        g.inner(s, c, &base, idx, Span::whole(c.shape[rank - 1]), simd);
                    });
                }
            }
        });
        self.fb.ins().return_(&[]);
    }

    pub(super) fn kernel(&mut self, k: &LoopKernel, simd: bool) {
        let (bufs, lo, hi) = self.start();
        let c = collapse(k);
        let base = self.bases(bufs, std::iter::once(k));
        self.fill_identity(k, &base);
        if c.shape.contains(&0) {
            self.fb.ins().return_(&[]);
            return;
        }
        let rank = c.shape.len();
        let outer = c.shape[..rank - 1].to_vec();
        let inner = c.shape[rank - 1];
        // Outer loops; the inner loop is emitted for each outer index. A plain loop
        // computes only [lo, hi) of its first axis (the caller may split it over
        // threads); a reduction always runs whole (lo and hi are 0 and `split_len`).
        let mut idx_vars = Vec::new();
        if k.reduce.is_some() {
            self.nest(&outer, &mut idx_vars, &mut |g, idx| {
                g.inner(k, &c, &base, idx, Span::whole(inner), simd);
            });
        } else if rank == 1 {
            let span = Span {
                len: inner as i64,
                range: Some((lo, hi)),
            };
            self.inner(k, &c, &base, &[], span, simd);
        } else {
            self.range_loop(Some(lo), End::Var(hi), 1, &mut |g, i| {
                let mut idx = vec![i];
                g.nest(&outer, &mut idx, &mut |g, idx| {
                    g.inner(k, &c, &base, idx, Span::whole(inner), simd);
                });
            });
        }
        self.fb.ins().return_(&[]);
    }

    /// `for i in 0..n { body(i) }` with an i64 counter.
    pub(super) fn counted_loop(&mut self, n: i64, body: &mut dyn FnMut(&mut Self, Value)) {
        self.range_loop(None, End::Const(n), 1, body);
    }

    /// `for (i = from; i + step <= n; i += step) { body(i) }`; returns the final `i`.
    ///
    /// Emitted rotated — a guard, then a do-while body whose back edge is its own
    /// branch — so that the loop's exit is dominated by the guard, not by the loop:
    ///
    /// ```text
    /// guard:      brif from+step <= n, body(from), exit(from)
    /// body(i):    ...; brif i+2*step <= n, body(i+step), exit(i+step)
    /// exit(end):
    /// ```
    ///
    /// Why: Cranelift 0.135's elaborator (the pass that does its loop-invariant code
    /// motion) keeps its stack of enclosing loops while walking the dominator tree
    /// but does not restore it when it leaves a subtree, so a loop exit visited
    /// before the loop body (a `while` header's two children) drops the loop and
    /// every invariant — splats, row pointers, the finiteness gate — is recomputed
    /// inside the loop. In this shape no block outside a loop is dominated by a block
    /// inside it, so the stack is always right. Measured: the MNIST MLP's Adam
    /// epilogue went from 53 to 31 x86 instructions per vector of 4
    /// (`docs/decisions/licm.md`).
    fn range_loop(
        &mut self,
        from: Option<Value>,
        n: End,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value),
    ) -> Value {
        let init = match from {
            Some(v) => v,
            None => self.iconst(0),
        };
        let body_block = self.fb.create_block();
        let i = self.fb.append_block_param(body_block, types::I64);
        let exit = self.fb.create_block();
        let end = self.fb.append_block_param(exit, types::I64);
        let fits = |g: &mut Self, at: Value| {
            let next = g.fb.ins().iadd_imm_s(at, step);
            match n {
                End::Const(n) => g.fb.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, next, n),
                End::Var(n) => g.fb.ins().icmp(IntCC::SignedLessThanOrEqual, next, n),
            }
        };
        let ok = fits(self, init);
        self.fb
            .ins()
            .brif(ok, body_block, &[init.into()], exit, &[init.into()]);
        self.fb.switch_to_block(body_block);
        body(self, i);
        let next = self.fb.ins().iadd_imm_s(i, step);
        let again = fits(self, next);
        self.fb
            .ins()
            .brif(again, body_block, &[next.into()], exit, &[next.into()]);
        self.fb.switch_to_block(exit);
        end
    }

    /// An innermost loop: as [`Self::range_loop`], but with few iterations known at
    /// compile time (rows of 8 or 12 elements, a scalar tail of 1-3) the body is
    /// emitted once per iteration, straight-line: the loop's guard, induction variable
    /// and back edge cost as much as a 2-vector body.
    pub(super) fn inner_loop(
        &mut self,
        from: Option<Value>,
        n: End,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value),
    ) -> Value {
        let first = match from {
            None => Some(0),
            Some(v) => self.const_of(v),
        };
        if let (Some(first), End::Const(n)) = (first, n) {
            let trips = if n >= first { (n - first) / step } else { 0 };
            if trips <= MAX_UNROLLED_TRIPS {
                for t in 0..trips {
                    let j = self.iconst(first + t * step);
                    body(self, j);
                }
                return self.iconst(first + trips * step);
            }
        }
        self.range_loop(from, n, step, body)
    }

    /// The value of `v` if it is an integer constant.
    pub(super) fn const_of(&self, v: Value) -> Option<i64> {
        use cranelift_codegen::ir::{InstructionData, Opcode, ValueDef};
        let ValueDef::Result(inst, _) = self.fb.func.dfg.value_def(v) else {
            return None;
        };
        match self.fb.func.dfg.insts[inst] {
            InstructionData::UnaryImm {
                opcode: Opcode::Iconst,
                imm,
            } => Some(imm.bits()),
            _ => None,
        }
    }

    pub(super) fn nest(
        &mut self,
        dims: &[usize],
        idx: &mut Vec<Value>,
        body: &mut dyn FnMut(&mut Self, &[Value]),
    ) {
        if idx.len() == dims.len() {
            body(self, idx);
            return;
        }
        let n = dims[idx.len()] as i64;
        let mut taken = std::mem::take(idx);
        self.counted_loop(n, &mut |g, i| {
            taken.push(i);
            g.nest(dims, &mut taken, body);
            taken.pop();
        });
        *idx = taken;
    }

    /// `offset + sum(idx[d] * strides[d])` over the outer axes, in elements.
    pub(super) fn row_offset(&mut self, a: &Affine, idx: &[Value]) -> Value {
        let mut off = self.iconst(a.offset);
        for (d, &i) in idx.iter().enumerate() {
            if a.strides[d] != 0 {
                let t = self.fb.ins().imul_imm_s(i, a.strides[d]);
                off = self.fb.ins().iadd(off, t);
            }
        }
        off
    }

    pub(super) fn elem_addr(&mut self, row: Value, j: Value, stride: i64, esz: i64) -> Value {
        if stride == 0 {
            return row;
        }
        let off = self.fb.ins().imul_imm_s(j, stride * esz);
        self.fb.ins().iadd(row, off)
    }

    /// A vector of the elements at `addr`, `addr + step`, ... (bytes): a strided view
    /// read inside a loop whose stores are contiguous (a transpose, the bias + ReLU
    /// written in a pooling window's layout). Lanes are loaded one by one, reading only
    /// the elements the index names, so the access stays inside what the bounds check
    /// proved; the arithmetic after it runs on whole vectors.
    pub(super) fn strided_load(&mut self, vt: Type, addr: Value, step: i64) -> Value {
        let lane_ty = vt.lane_type();
        let first = self.fb.ins().load(lane_ty, data_mem(), addr, 0);
        let mut v = self.fb.ins().scalar_to_vector(vt, first);
        for lane in 1..vt.lane_count() {
            let at = step * i64::from(lane);
            let x = match i32::try_from(at) {
                Ok(off) => self.fb.ins().load(lane_ty, data_mem(), addr, off),
                Err(_) => {
                    let a = self.fb.ins().iadd_imm_s(addr, at);
                    self.fb.ins().load(lane_ty, data_mem(), a, 0)
                }
            };
            v = self.fb.ins().insertlane(v, x, lane as u8);
        }
        v
    }

    /// A scalar broadcast to every lane; bools become all-ones/all-zeros lane masks.
    pub(super) fn splat(&mut self, v: Value, dtype: DType, vt: Type) -> Value {
        if dtype == DType::Bool {
            let it = vt.lane_type().as_int();
            let ones = self.fb.ins().iconst(it, -1);
            let zero = self.fb.ins().iconst(it, 0);
            let m = self.fb.ins().select(v, ones, zero);
            let mt = it.by(vt.lane_count()).expect("128-bit mask");
            return self.fb.ins().splat(mt, m);
        }
        self.fb.ins().splat(vt, v)
    }
}

/// Per-row addressing state of the inner loop.
pub(super) struct Rows {
    pub loads: Vec<Value>,
    pub index: Vec<Option<Value>>,
    pub load_strides: Vec<i64>,
    pub index_strides: Vec<Option<i64>>,
}

/// The inner axis of one row: its length, and the part `[lo, hi)` this call computes
/// when the kernel's only axis is split over threads.
#[derive(Clone, Copy)]
pub(super) struct Span {
    pub len: i64,
    pub range: Option<(Value, Value)>,
}

impl Span {
    pub(super) fn whole(len: usize) -> Span {
        Span {
            len: len as i64,
            range: None,
        }
    }
}

/// Where a counted loop stops: a compile-time bound or a value (a split range's `hi`).
#[derive(Clone, Copy)]
pub(super) enum End {
    Const(i64),
    Var(Value),
}

/// Innermost loops of at most this many iterations, all known at compile time, are
/// emitted unrolled ([`KernelGen::inner_loop`]): LeNet's im2col rows of 8 and 24
/// floats are 2 and 6 vectors.
const MAX_UNROLLED_TRIPS: i64 = 8;

/// Flags of a data access: cannot trap (the lowering keeps every access in bounds of
/// its buffer), but not `aligned`: vector accesses start at any element, and an
/// aligned flag would let Cranelift fold them into SSE operands that require 16 bytes.
pub(super) fn data_mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

//! Cranelift IR for loop kernels and the step's entry function.
//!
//! Cranelift does not vectorise, unroll or hoist on its own, so this emitter does what
//! matters for these kernels itself:
//! - axes that every access walks contiguously are merged, so most kernels are one or
//!   two loops;
//! - values that do not change along the innermost axis (broadcast operands, scalars
//!   such as the learning rate) are computed once per row, outside the inner loop;
//! - the inner loop runs 128-bit vectors (f32x4 / f64x2) when every store is
//!   contiguous along it, with a scalar tail; loads that are strided along it fill
//!   their vectors lane by lane; a short inner loop of known length is unrolled;
//! - ReLU-style `where(x <= 0, 0, x)` is a compare and a bit-select; maximum/minimum
//!   are written out with PyTorch's NaN rule rather than Cranelift's `fmax`;
//! - reductions over the innermost axis keep the accumulator in a register.
//!
//! Transcendentals (exp, log, sin, cos, tanh, pow) call the Rust standard library
//! through the runtime helpers of [`super::helpers`], so they are bitwise identical to the interpreter's.

use std::collections::HashMap;

use aotgrad_ir::{BinaryOp, DType, NodeId, ReduceOp, Scalar, UnaryOp};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::immediates::{Ieee32, Ieee64};
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{
    AbiParam, AtomicRmwOp, Endianness, FuncRef, Function, InstBuilder, MemFlagsData, UserFuncName,
    Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

use super::helpers::Helper;
use super::tiles::{EpilogueSchedule, epilogue_plan};
use crate::lower::{
    Affine, BufferId, FlatOp, KernelBody, LoopKernel, Program, RowKernel, reduce_identity,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodegenError {
    #[error("cranelift rejected {function}: {message}")]
    Module { function: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodegenOptions {
    /// Threads of the pool the runtime runs on: above 1, large elementwise kernels are
    /// split over them (`aotgrad_parallel`).
    pub threads: usize,
    /// Emit 128-bit vector inner loops where possible.
    pub simd: bool,
    /// After every kernel with a float output, call `aotgrad_check` (NaN/Inf scan).
    pub check_numerics: bool,
    /// Output tiles per large matmul (`tiles::matmul_tiles`): a fused epilogue gets one
    /// function per tile.
    pub matmul_tiles: usize,
    /// Keep, per function, Cranelift's optimised IR and the machine code it emitted
    /// ([`Emitted::machine`]). Off by default: formatting it costs compile time.
    pub machine_code: bool,
    /// Call `aotgrad_mark(ctx, k)` before kernel `k` and `aotgrad_mark(ctx, n)` after
    /// the last of the `n` kernels, so the runtime can time every kernel.
    pub profile: bool,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions {
            threads: 1,
            simd: true,
            check_numerics: false,
            matmul_tiles: super::tiles::DEFAULT_TILES,
            machine_code: false,
            profile: false,
        }
    }
}

/// What [`emit`] defined in the module.
#[derive(Debug, Clone)]
pub struct Emitted {
    pub entry: FuncId,
    /// The Cranelift IR of every function, as handed to Cranelift (before its own
    /// optimisation), in definition order.
    pub clif: String,
    /// With [`CodegenOptions::machine_code`]: every function as Cranelift optimised it
    /// and the machine code it emitted for this host (depends on the host's ISA
    /// features, so not byte-stable across machines, unlike `clif`); empty otherwise.
    pub machine: String,
    /// Per matmul kernel with a fused epilogue: its index, when the runtime runs the
    /// epilogue, and the epilogue's functions (`k<i>e<j>`, one per tile or one in all).
    pub epilogues: Vec<(usize, EpilogueSchedule, Vec<FuncId>)>,
    /// The checked indices of the program (see [`FaultSlot`]), in slot order.
    pub faults: Vec<FaultSlot>,
}

/// One graph node whose indices generated code checks (`FlatOp::Checked`). The
/// runtime passes, after the buffers in the table, a pointer to two 64-bit words per
/// slot, zero and `u64::MAX` before the call. An index outside `[0, len)` sets the
/// first word to 1 and lowers the second to the index (as unsigned, with atomics, so
/// the record is the same whichever thread saw which index), and the step stops after
/// the kernel with a non-zero status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultSlot {
    pub node: NodeId,
    pub len: usize,
}

/// The slot of `node` in `faults`, added if new.
fn fault_slot(faults: &mut Vec<FaultSlot>, node: NodeId, len: usize) -> usize {
    faults
        .iter()
        .position(|f| f.node == node)
        .unwrap_or_else(|| {
            faults.push(FaultSlot { node, len });
            faults.len() - 1
        })
}

/// The checked index nodes of every loop a kernel runs.
fn checked_nodes(k: &KernelBody) -> Vec<NodeId> {
    let loops: Vec<&LoopKernel> = match k {
        KernelBody::Loop(l) => vec![l],
        KernelBody::Rows(r) => r.stages.iter().collect(),
        KernelBody::MatMul(m) => m.epilogue.iter().map(|e| &**e).collect(),
        KernelBody::Library(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for l in loops {
        for n in &l.expr.nodes {
            if let FlatOp::Checked { node, .. } = n.op
                && !out.contains(&node)
            {
                out.push(node);
            }
        }
    }
    out
}

fn merr(function: &str, e: impl std::fmt::Display) -> CodegenError {
    CodegenError::Module {
        function: function.to_string(),
        message: e.to_string(),
    }
}

fn sig_type(c: char, ptr: Type) -> Type {
    match c {
        'p' => ptr,
        'i' => types::I32,
        'f' => types::F32,
        _ => types::F64,
    }
}

/// The module's import of helper `h` (declared on first use).
fn import<M: Module>(
    module: &mut M,
    helpers: &mut HashMap<Helper, FuncId>,
    h: Helper,
) -> Result<FuncId, CodegenError> {
    if let Some(id) = helpers.get(&h) {
        return Ok(*id);
    }
    let ptr = module.target_config().pointer_type();
    let (params, ret) = h.signature();
    let mut sig = module.make_signature();
    for c in params.chars() {
        sig.params.push(AbiParam::new(sig_type(c, ptr)));
    }
    for c in ret.chars() {
        sig.returns.push(AbiParam::new(sig_type(c, ptr)));
    }
    let name = h.name();
    let id = module
        .declare_function(&name, Linkage::Import, &sig)
        .map_err(|e| merr(&name, e))?;
    helpers.insert(h, id);
    Ok(id)
}

/// What one generated kernel function computes.
#[derive(Clone, Copy)]
enum Body<'a> {
    Loop(&'a LoopKernel),
    Rows(&'a RowKernel),
}

/// Defines the kernels and the entry function of `p` in `module`.
pub fn emit<M: Module>(
    p: &Program,
    module: &mut M,
    opts: CodegenOptions,
) -> Result<Emitted, CodegenError> {
    let ptr = module.target_config().pointer_type();
    // Helpers are imported on first use, so a program's functions are numbered the
    // same whatever else the helper table holds.
    let mut helpers: HashMap<Helper, FuncId> = HashMap::new();
    let mut texts = Texts {
        clif: String::new(),
        machine: String::new(),
        machine_code: opts.machine_code,
    };
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let mut kernel_ids = HashMap::new();
    let mut faults: Vec<FaultSlot> = Vec::new();
    let mut define = |name: String, body: Body<'_>, header: String, texts: &mut Texts| {
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        // The range [lo, hi) of the split axis (see `split_len`) this call computes.
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| merr(&name, e))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let mut g = KernelGen {
                fb: &mut fb,
                module: &mut *module,
                helpers: &mut helpers,
                imported: HashMap::new(),
                ptr,
                p,
                bufs: None,
                faults: &mut faults,
                known: HashMap::new(),
            };
            match body {
                Body::Loop(lk) => g.kernel(lk, opts.simd),
                Body::Rows(r) => g.rows_kernel(r, opts.simd),
            }
            fb.seal_all_blocks();
            fb.finalize(module.target_config());
        }
        texts.define(&mut *module, &mut ctx, id, &name, &header)?;
        Ok::<FuncId, CodegenError>(id)
    };
    let mut epilogues = Vec::new();
    for (t, k) in p.kernels.iter().enumerate() {
        let (body, what) = match &k.body {
            KernelBody::Loop(lk) => (Body::Loop(lk), "kernel"),
            KernelBody::Rows(r) => (Body::Rows(r), "row kernel"),
            KernelBody::MatMul(m) => {
                let Some((schedule, parts)) = epilogue_plan(m, opts.matmul_tiles) else {
                    continue;
                };
                let mut ids = Vec::with_capacity(parts.len());
                for (j, lk) in parts.iter().enumerate() {
                    let header = format!("epilogue {j} of k{t}: {}", lk.outs[0].node);
                    ids.push(define(
                        format!("k{t}e{j}"),
                        Body::Loop(lk),
                        header,
                        &mut texts,
                    )?);
                }
                epilogues.push((t, schedule, ids));
                continue;
            }
            KernelBody::Library(_) => continue,
        };
        let header = format!("{what} k{t}: {}", k.node);
        kernel_ids.insert(t, define(format!("k{t}"), body, header, &mut texts)?);
    }
    // The entry function: kernels in order, stopping at the first non-zero status.
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    sig.returns.push(AbiParam::new(types::I32));
    let entry = module
        .declare_function("step", Linkage::Local, &sig)
        .map_err(|e| merr("step", e))?;
    ctx.func = Function::with_name_signature(UserFuncName::user(0, entry.as_u32()), sig);
    {
        let mut fb = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let start = fb.create_block();
        fb.append_block_params_for_function_params(start);
        fb.switch_to_block(start);
        let (bufs, hctx) = (fb.block_params(start)[0], fb.block_params(start)[1]);
        let fail = fb.create_block();
        let status = fb.append_block_param(fail, types::I32);
        let kernel_id = import(&mut *module, &mut helpers, Helper::Kernel)?;
        let check_id = import(&mut *module, &mut helpers, Helper::Check)?;
        let parallel_id = import(&mut *module, &mut helpers, Helper::Parallel)?;
        let mark_id = import(&mut *module, &mut helpers, Helper::Mark)?;
        let kernel_fn = module.declare_func_in_func(kernel_id, fb.func);
        let check_fn = module.declare_func_in_func(check_id, fb.func);
        let call_status = |fb: &mut FunctionBuilder, f: FuncRef, t: usize| {
            let ti = fb.ins().iconst(ptr, t as i64);
            let call = fb.ins().call(f, &[hctx, ti, bufs]);
            let s = fb.inst_results(call)[0];
            let next = fb.create_block();
            fb.ins().brif(s, fail, &[s.into()], next, &[]);
            fb.switch_to_block(next);
        };
        let parallel_fn = module.declare_func_in_func(parallel_id, fb.func);
        let mark_fn = opts
            .profile
            .then(|| module.declare_func_in_func(mark_id, fb.func));
        let mark = |fb: &mut FunctionBuilder, t: usize| {
            if let Some(f) = mark_fn {
                let ti = fb.ins().iconst(ptr, t as i64);
                fb.ins().call(f, &[hctx, ti]);
            }
        };
        for (t, k) in p.kernels.iter().enumerate() {
            mark(&mut fb, t);
            match kernel_ids.get(&t) {
                Some(id) => {
                    let f = module.declare_func_in_func(*id, fb.func);
                    let (n, parallel) = match &k.body {
                        KernelBody::Loop(lk) => (split_len(lk), parallel_worthy(lk)),
                        // Rows are independent (each fills its own reduction outputs),
                        // unless a stage sums across them (never split then).
                        KernelBody::Rows(r) => (r.rows as i64, rows_parallel_worthy(r)),
                        _ => unreachable!("only loop and row kernels have functions"),
                    };
                    if opts.threads > 1 && parallel {
                        // The runtime splits [0, n) over the pool: elementwise kernels
                        // compute each element the same way whichever call does it.
                        let addr = fb.ins().func_addr(ptr, f);
                        let nv = fb.ins().iconst(ptr, n);
                        fb.ins().call(parallel_fn, &[hctx, addr, bufs, nv]);
                    } else {
                        let lo = fb.ins().iconst(types::I64, 0);
                        let hi = fb.ins().iconst(types::I64, n);
                        fb.ins().call(f, &[bufs, lo, hi]);
                    }
                }
                None => call_status(&mut fb, kernel_fn, t),
            }
            // A kernel that checks indices stops the step when one was out of range,
            // before any later kernel (an optimizer update) runs.
            // A checked node with no slot was in a loop with no iterations (nothing
            // was emitted for it, so it cannot have faulted).
            let checked: Vec<usize> = checked_nodes(&k.body)
                .into_iter()
                .filter_map(|node| faults.iter().position(|f| f.node == node))
                .collect();
            if !checked.is_empty() {
                let table = fb.ins().load(
                    ptr,
                    MemFlagsData::trusted().with_readonly(),
                    bufs,
                    (p.buffers.len() * 8) as i32,
                );
                let mut any = fb.ins().iconst(types::I64, 0);
                for slot in checked {
                    let flag = fb.ins().load(
                        types::I64,
                        MemFlagsData::trusted(),
                        table,
                        (slot * 16) as i32,
                    );
                    any = fb.ins().bor(any, flag);
                }
                let s = fb.ins().ireduce(types::I32, any);
                let next = fb.create_block();
                fb.ins().brif(s, fail, &[s.into()], next, &[]);
                fb.switch_to_block(next);
            }
            if opts.check_numerics && p.buffer(k.output()).dtype.is_float() {
                call_status(&mut fb, check_fn, t);
            }
        }
        mark(&mut fb, p.kernels.len());
        let zero = fb.ins().iconst(types::I32, 0);
        fb.ins().return_(&[zero]);
        fb.switch_to_block(fail);
        fb.ins().return_(&[status]);
        fb.seal_all_blocks();
        fb.finalize(module.target_config());
    }
    texts.define(module, &mut ctx, entry, "step", "entry")?;
    Ok(Emitted {
        entry,
        clif: texts.clif,
        machine: texts.machine,
        epilogues,
        faults,
    })
}

/// The text [`emit`] records for every function it defines (see [`Emitted`]).
struct Texts {
    clif: String,
    machine: String,
    /// [`CodegenOptions::machine_code`].
    machine_code: bool,
}

impl Texts {
    /// Hands the function built in `ctx` to Cranelift as `id`, recording it under
    /// `header`: its IR as we built it in `clif`, and on request what Cranelift made
    /// of it in `machine` — its IR after Cranelift's own optimisation (egraph
    /// rewrites, loop-invariant code motion) and the target's instructions after
    /// register allocation (`VCode`). Leaves `ctx` cleared for the next function.
    fn define<M: Module>(
        &mut self,
        module: &mut M,
        ctx: &mut cranelift_codegen::Context,
        id: FuncId,
        name: &str,
        header: &str,
    ) -> Result<(), CodegenError> {
        self.clif
            .push_str(&format!("; {header}\n{}\n", ctx.func.display()));
        ctx.set_disasm(self.machine_code);
        module
            .define_function(id, ctx)
            .map_err(|e| merr(name, format!("{e:?}")))?;
        if self.machine_code {
            let optimised = ctx.func.display();
            self.machine
                .push_str(&format!("; {header}: optimised\n{optimised}\n"));
            if let Some(v) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
                self.machine
                    .push_str(&format!("; {header}: machine code\n{v}\n"));
            }
        }
        module.clear_context(ctx);
        Ok(())
    }
}

/// The Cranelift type holding one element (bool is a 0/1 byte).
pub fn clif_type(d: DType) -> Type {
    match d {
        DType::Bool | DType::U8 => types::I8,
        DType::I32 => types::I32,
        DType::I64 => types::I64,
        DType::F32 => types::F32,
        DType::F64 => types::F64,
    }
}

/// A loop kernel with size-1 axes dropped and mergeable neighbouring axes merged.
struct Collapsed {
    shape: Vec<usize>,
    loads: Vec<Affine>,
    outs: Vec<Affine>,
    /// Per flat node: its `Index` affine, collapsed.
    index: Vec<Option<Affine>>,
}

fn collapse(k: &LoopKernel) -> Collapsed {
    collapse_from(k, false)
}

/// [`collapse`], but with the first axis never merged into the next when `keep_first`
/// (a row kernel's stages index their rows by it).
fn collapse_from(k: &LoopKernel, keep_first: bool) -> Collapsed {
    let mut all: Vec<&Affine> = k.loads.iter().map(|(_, a)| a).collect();
    all.extend(k.outs.iter().map(|o| &o.at));
    let index_nodes: Vec<(usize, &Affine)> = k
        .expr
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            FlatOp::Index(a) => Some((i, a)),
            _ => None,
        })
        .collect();
    all.extend(index_nodes.iter().map(|(_, a)| *a));
    let mut shape: Vec<usize> = Vec::new();
    let mut strides: Vec<Vec<i64>> = vec![Vec::new(); all.len()];
    for d in 0..k.shape.len() {
        let n = k.shape[d];
        if n == 1 {
            continue;
        }
        // With `keep_first`, nothing merges into the first axis kept.
        let onto_first = keep_first && shape.len() == 1;
        let merge = !shape.is_empty()
            && !onto_first
            && all
                .iter()
                .zip(&strides)
                .all(|(a, s)| *s.last().expect("same rank") == a.strides[d] * n as i64);
        if merge {
            *shape.last_mut().expect("non-empty") *= n;
            for (a, s) in all.iter().zip(strides.iter_mut()) {
                *s.last_mut().expect("same rank") = a.strides[d];
            }
        } else {
            shape.push(n);
            for (a, s) in all.iter().zip(strides.iter_mut()) {
                s.push(a.strides[d]);
            }
        }
    }
    if shape.is_empty() {
        shape.push(1);
        strides.iter_mut().for_each(|s| s.push(0));
    }
    let mut it = all.iter().zip(strides).map(|(a, strides)| Affine {
        offset: a.offset,
        strides,
    });
    let loads = (0..k.loads.len())
        .map(|_| it.next().expect("load"))
        .collect();
    let outs = (0..k.outs.len()).map(|_| it.next().expect("out")).collect();
    let mut index = vec![None; k.expr.nodes.len()];
    for (i, _) in index_nodes {
        index[i] = it.next();
    }
    Collapsed {
        shape,
        loads,
        outs,
        index,
    }
}

struct KernelGen<'a, 'b, M: Module> {
    fb: &'a mut FunctionBuilder<'b>,
    module: &'a mut M,
    helpers: &'a mut HashMap<Helper, FuncId>,
    imported: HashMap<Helper, FuncRef>,
    ptr: Type,
    p: &'a Program,
    /// The function's buffer table (set by `start`).
    bufs: Option<Value>,
    faults: &'a mut Vec<FaultSlot>,
    /// Expression nodes whose value is known while emitting one version of an
    /// unswitched vector loop (see `inner`): a `where` on them picks its branch.
    known: HashMap<usize, bool>,
}

/// How many lanes the inner loop evaluates at once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lanes {
    Scalar,
    /// A 128-bit vector of `ty`'s lane type.
    Vector(Type),
}

impl<M: Module> KernelGen<'_, '_, M> {
    fn helper(&mut self, h: Helper) -> FuncRef {
        if let Some(f) = self.imported.get(&h) {
            return *f;
        }
        let id = import(&mut *self.module, self.helpers, h)
            .unwrap_or_else(|e| panic!("importing a runtime helper: {e}"));
        let f = self.module.declare_func_in_func(id, self.fb.func);
        self.imported.insert(h, f);
        f
    }

    fn iconst(&mut self, v: i64) -> Value {
        self.fb.ins().iconst(types::I64, v)
    }

    fn scalar_const(&mut self, s: Scalar) -> Value {
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
    fn start(&mut self) -> (Value, Value, Value) {
        let start = self.fb.create_block();
        self.fb.append_block_params_for_function_params(start);
        self.fb.switch_to_block(start);
        let params = self.fb.block_params(start).to_vec();
        self.bufs = Some(params[0]);
        (params[0], params[1], params[2])
    }

    /// Base addresses of every buffer the loops access, loaded once.
    fn bases<'k>(
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
    fn identity_store(
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
    fn fill_identity(&mut self, k: &LoopKernel, base: &HashMap<BufferId, Value>) {
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
    fn fill_row(
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
    fn rows_kernel(&mut self, r: &RowKernel, simd: bool) {
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

    fn kernel(&mut self, k: &LoopKernel, simd: bool) {
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
    fn counted_loop(&mut self, n: i64, body: &mut dyn FnMut(&mut Self, Value)) {
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
    fn inner_loop(
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
    fn const_of(&self, v: Value) -> Option<i64> {
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

    fn nest(
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
    fn row_offset(&mut self, a: &Affine, idx: &[Value]) -> Value {
        let mut off = self.iconst(a.offset);
        for (d, &i) in idx.iter().enumerate() {
            if a.strides[d] != 0 {
                let t = self.fb.ins().imul_imm_s(i, a.strides[d]);
                off = self.fb.ins().iadd(off, t);
            }
        }
        off
    }

    fn inner(
        &mut self,
        k: &LoopKernel,
        c: &Collapsed,
        base: &HashMap<BufferId, Value>,
        idx: &[Value],
        span: Span,
        simd: bool,
    ) {
        let Span { len, range } = span;
        let last = c.shape.len() - 1;
        let (start, end) = match range {
            Some((lo, hi)) => (Some(lo), End::Var(hi)),
            None => (None, End::Const(len)),
        };
        // Row pointers of every load and of the output; row values of index nodes.
        let mut load_rows = Vec::new();
        for (li, (b, _)) in k.loads.iter().enumerate() {
            let off = self.row_offset(&c.loads[li], idx);
            let esz = self.p.buffer(*b).dtype.size_bytes() as i64;
            let bytes = self.fb.ins().imul_imm_s(off, esz);
            load_rows.push(self.fb.ins().iadd(base[b], bytes));
        }
        let out_dtype = self.p.buffer(k.outs[0].buf).dtype;
        let out_esz = out_dtype.size_bytes() as i64;
        let mut out_rows = Vec::new();
        for (o, at) in k.outs.iter().zip(&c.outs) {
            let off = self.row_offset(at, idx);
            let bytes = self.fb.ins().imul_imm_s(off, out_esz);
            out_rows.push(self.fb.ins().iadd(base[&o.buf], bytes));
        }
        let out_row = out_rows[0];
        let mut index_rows = vec![None; k.expr.nodes.len()];
        for (i, a) in c.index.iter().enumerate() {
            if let Some(a) = a {
                index_rows[i] = Some(self.row_offset(a, idx));
            }
        }
        let inner_stride = |a: &Affine| a.strides[last];
        // Which nodes are the same all along the inner axis.
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
        let mut rows = Rows {
            loads: load_rows,
            index: index_rows,
            load_strides: c.loads.iter().map(inner_stride).collect(),
            index_strides: c
                .index
                .iter()
                .map(|a| a.as_ref().map(inner_stride))
                .collect(),
        };
        // Hoisted scalar values of the invariant nodes.
        let zero = self.iconst(0);
        let hoisted = self.eval(k, &mut rows, zero, Lanes::Scalar, &invariant, &[]);
        let out_strides: Vec<i64> = c.outs.iter().map(inner_stride).collect();
        let out_stride = out_strides[0];
        let vec_ty = simd
            .then(|| vector_plan(k, &invariant, out_dtype, &out_strides, len))
            .flatten();
        let reduce = k.reduce;
        let scalar_ty = clif_type(out_dtype);
        // Register accumulator when the output does not move along the inner axis.
        let acc_var = (reduce.is_some() && out_stride == 0).then(|| {
            let v = self.fb.declare_var(scalar_ty);
            let id = self.scalar_const(reduce_identity(reduce.expect("reduce"), out_dtype));
            self.fb.def_var(v, id);
            v
        });
        let mut from = None;
        if let Some(vt) = vec_ty {
            let lanes = vt.lane_count() as i64;
            // Splat the hoisted values the vector body uses.
            let mut vhoist: Vec<Option<Value>> = vec![None; nodes.len()];
            // Only values of the vector's element type (or bool masks) can feed a
            // vector node; `vector_plan` guarantees no other invariant is used.
            for (i, h) in hoisted.iter().enumerate() {
                let d = nodes[i].dtype;
                if let Some(h) = h
                    && (d == out_dtype || d == DType::Bool)
                {
                    vhoist[i] = Some(self.splat(*h, d, vt));
                }
            }
            let vacc = acc_var.map(|_| {
                let v = self.fb.declare_var(vt);
                let id = self.scalar_const(reduce_identity(reduce.expect("reduce"), out_dtype));
                let s = self.fb.ins().splat(vt, id);
                self.fb.def_var(v, s);
                v
            });
            let mut vector_loop = |g: &mut Self| {
                g.inner_loop(start, end, lanes, &mut |g, j| {
                    let vals = g.eval(k, &mut rows, j, Lanes::Vector(vt), &invariant, &vhoist);
                    let v = vals[k.outs[0].value].expect("output evaluated");
                    match (reduce, vacc) {
                        (None, _) => {
                            // Every load of this index is above; now the stores.
                            for (o, (&row, &stride)) in
                                k.outs.iter().zip(out_rows.iter().zip(&out_strides))
                            {
                                let v = vals[o.value].expect("output evaluated");
                                let addr = g.elem_addr(row, j, stride, out_esz);
                                g.fb.ins().store(data_mem(), v, addr, 0);
                            }
                        }
                        (Some(op), Some(acc)) => {
                            let a = g.fb.use_var(acc);
                            let r = g.combine(op, out_dtype, a, v, Lanes::Vector(vt));
                            g.fb.def_var(acc, r);
                        }
                        (Some(op), None) => {
                            let addr = g.elem_addr(out_row, j, out_stride, out_esz);
                            let a = g.fb.ins().load(vt, data_mem(), addr, 0);
                            let r = g.combine(op, out_dtype, a, v, Lanes::Vector(vt));
                            g.fb.ins().store(data_mem(), r, addr, 0);
                        }
                    }
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
                None => vector_loop(self),
                Some((c, h)) => {
                    let (yes, no) = (self.fb.create_block(), self.fb.create_block());
                    let join = self.fb.create_block();
                    let stop = self.fb.append_block_param(join, types::I64);
                    self.fb.ins().brif(h, yes, &[], no, &[]);
                    for (block, value) in [(yes, true), (no, false)] {
                        self.fb.switch_to_block(block);
                        self.known.insert(c, value);
                        let end = vector_loop(self);
                        self.known.remove(&c);
                        self.fb.ins().jump(join, &[end.into()]);
                    }
                    self.fb.switch_to_block(join);
                    stop
                }
            };
            if let (Some(op), Some(vacc), Some(acc)) = (reduce, vacc, acc_var) {
                // Lanes fold left to right into the scalar accumulator: fixed order.
                let v = self.fb.use_var(vacc);
                let mut a = self.fb.use_var(acc);
                for lane in 0..lanes {
                    let x = self.fb.ins().extractlane(v, lane as u8);
                    a = self.combine(op, out_dtype, a, x, Lanes::Scalar);
                }
                self.fb.def_var(acc, a);
            }
            from = Some(stop);
        }
        // Scalar loop (all of it, or the vector loop's tail).
        self.inner_loop(from.or(start), end, 1, &mut |g, j| {
            let vals = g.eval(k, &mut rows, j, Lanes::Scalar, &invariant, &hoisted);
            let v = vals[k.outs[0].value].expect("output evaluated");
            match (reduce, acc_var) {
                (None, _) => {
                    for (o, (&row, &stride)) in k.outs.iter().zip(out_rows.iter().zip(&out_strides))
                    {
                        let v = vals[o.value].expect("output evaluated");
                        let addr = g.elem_addr(row, j, stride, out_esz);
                        g.fb.ins().store(data_mem(), v, addr, 0);
                    }
                }
                (Some(op), Some(acc)) => {
                    let a = g.fb.use_var(acc);
                    let r = g.combine(op, out_dtype, a, v, Lanes::Scalar);
                    g.fb.def_var(acc, r);
                }
                (Some(op), None) => {
                    let addr = g.elem_addr(out_row, j, out_stride, out_esz);
                    let a = g.fb.ins().load(scalar_ty, data_mem(), addr, 0);
                    let r = g.combine(op, out_dtype, a, v, Lanes::Scalar);
                    g.fb.ins().store(data_mem(), r, addr, 0);
                }
            }
        });
        if let (Some(op), Some(acc)) = (reduce, acc_var) {
            let a = self.fb.ins().load(scalar_ty, data_mem(), out_row, 0);
            let v = self.fb.use_var(acc);
            let r = self.combine(op, out_dtype, a, v, Lanes::Scalar);
            self.fb.ins().store(data_mem(), r, out_row, 0);
        }
    }

    fn elem_addr(&mut self, row: Value, j: Value, stride: i64, esz: i64) -> Value {
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
    fn strided_load(&mut self, vt: Type, addr: Value, step: i64) -> Value {
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
    fn splat(&mut self, v: Value, dtype: DType, vt: Type) -> Value {
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

    /// Evaluates the expression at inner index `j`. With `only`, evaluates just the
    /// nodes flagged there (the hoisting pass); otherwise takes flagged nodes from
    /// `pre` and evaluates the rest.
    fn eval(
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
    fn checked(&mut self, idx: Value, len: usize, node: NodeId) -> Value {
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

    fn bitselect(&mut self, vt: Type, mask: Value, x: Value, y: Value) -> Value {
        let m = self.fb.ins().bitcast(
            vt,
            MemFlagsData::new().with_endianness(Endianness::Little),
            mask,
        );
        self.fb.ins().bitselect(m, x, y)
    }

    fn math(&mut self, h: Helper, args: &[Value]) -> Value {
        let f = self.helper(h);
        let call = self.fb.ins().call(f, args);
        self.fb.inst_results(call)[0]
    }

    fn unary(&mut self, u: UnaryOp, d: DType, a: Value, lanes: Lanes) -> Value {
        let float = d.is_float();
        let ins = self.fb.ins();
        match u {
            UnaryOp::Neg if float => ins.fneg(a),
            UnaryOp::Neg => ins.ineg(a),
            UnaryOp::Abs if float => ins.fabs(a),
            UnaryOp::Abs if d == DType::U8 => a,
            UnaryOp::Abs => ins.iabs(a),
            UnaryOp::Sign => self.sign(d, a),
            UnaryOp::Sqrt => ins.sqrt(a),
            UnaryOp::Floor => ins.floor(a),
            UnaryOp::Ceil => ins.ceil(a),
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
    fn sign(&mut self, d: DType, a: Value) -> Value {
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

    fn select_any(&mut self, lanes: Lanes, c: Value, x: Value, y: Value) -> Value {
        match lanes {
            Lanes::Scalar => self.scalar_select(c, x, y),
            Lanes::Vector(vt) => self.bitselect(vt, c, x, y),
        }
    }

    /// `c ? x : y` without a branch. Cranelift lowers a float `select` on x86 to a
    /// conditional jump around a move, which mispredicts on data such as ReLU's sign
    /// (measured: 5.8 ns per element of a bias+ReLU copy, 10x a plain copy); an
    /// integer `select` is a `cmov`, so floats go through their bits.
    fn scalar_select(&mut self, c: Value, x: Value, y: Value) -> Value {
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
    fn float_extremum(&mut self, max: bool, x: Value, y: Value, lanes: Lanes) -> Value {
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

    fn binary(&mut self, b: BinaryOp, d: DType, x: Value, y: Value, lanes: Lanes) -> Value {
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

    fn combine(&mut self, op: ReduceOp, d: DType, acc: Value, x: Value, lanes: Lanes) -> Value {
        match op {
            ReduceOp::Sum => self.binary(BinaryOp::Add, d, acc, x, lanes),
            ReduceOp::Prod => self.binary(BinaryOp::Mul, d, acc, x, lanes),
            ReduceOp::Max => self.binary(BinaryOp::Maximum, d, acc, x, lanes),
            ReduceOp::Min => self.binary(BinaryOp::Minimum, d, acc, x, lanes),
        }
    }

    /// Casts with the interpreter's rules: floats to ints truncate and saturate (NaN is
    /// 0), ints to u8 saturate, anything to bool is `!= 0`.
    fn cast(&mut self, from: DType, to: DType, a: Value) -> Value {
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

/// Per-row addressing state of the inner loop.
struct Rows {
    loads: Vec<Value>,
    index: Vec<Option<Value>>,
    load_strides: Vec<i64>,
    index_strides: Vec<Option<i64>>,
}

/// The inner axis of one row: its length, and the part `[lo, hi)` this call computes
/// when the kernel's only axis is split over threads.
#[derive(Clone, Copy)]
struct Span {
    len: i64,
    range: Option<(Value, Value)>,
}

impl Span {
    fn whole(len: usize) -> Span {
        Span {
            len: len as i64,
            range: None,
        }
    }
}

/// Where a counted loop stops: a compile-time bound or a value (a split range's `hi`).
#[derive(Clone, Copy)]
enum End {
    Const(i64),
    Var(Value),
}

/// Innermost loops of at most this many iterations, all known at compile time, are
/// emitted unrolled ([`KernelGen::inner_loop`]): LeNet's im2col rows of 8 and 24
/// floats are 2 and 6 vectors.
const MAX_UNROLLED_TRIPS: i64 = 8;

/// The length of a loop kernel's first (collapsed) axis: the range its `lo`/`hi`
/// parameters index.
pub fn split_len(k: &LoopKernel) -> i64 {
    let c = collapse(k);
    if c.shape.contains(&0) {
        0
    } else {
        c.shape[0] as i64
    }
}

/// Elements below which splitting a loop over threads costs more than it saves (a
/// rayon scope is a few microseconds; this is roughly 20 us of work).
pub const PARALLEL_MIN_ELEMS: usize = 1 << 15;

/// Whether a loop kernel is worth splitting over threads: plain (each element its own),
/// large, and with a first axis to split.
pub fn parallel_worthy(k: &LoopKernel) -> bool {
    k.reduce.is_none()
        && k.shape.iter().product::<usize>() >= PARALLEL_MIN_ELEMS
        && split_len(k) > 1
}

/// Whether a row kernel is worth splitting over threads by rows.
pub fn rows_parallel_worthy(r: &RowKernel) -> bool {
    if r.serial() {
        return false;
    }
    let elems: usize = r
        .stages
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    elems >= PARALLEL_MIN_ELEMS
}

/// The vector type for the inner loop, if every varying node is vectorisable.
fn vector_plan(
    k: &LoopKernel,
    invariant: &[bool],
    out_dtype: DType,
    out_strides: &[i64],
    len: i64,
) -> Option<Type> {
    let vt = match out_dtype {
        DType::F32 => types::F32X4,
        DType::F64 => types::F64X2,
        _ => return None,
    };
    let stores_ok = match k.reduce {
        Some(_) => out_strides == [0] || out_strides == [1],
        None => out_strides.iter().all(|&s| s == 1),
    };
    if len < vt.lane_count() as i64 || !stores_ok {
        return None;
    }
    for (i, n) in k.expr.nodes.iter().enumerate() {
        if invariant[i] {
            continue;
        }
        let ok_type = n.dtype == out_dtype || n.dtype == DType::Bool;
        let operands_ok = |xs: &[usize]| {
            xs.iter().all(|&x| {
                k.expr.nodes[x].dtype == out_dtype || k.expr.nodes[x].dtype == DType::Bool
            })
        };
        let ok = ok_type
            && match &n.op {
                // Any stride: contiguous rows load whole vectors, strided ones lane
                // by lane (`strided_load`).
                FlatOp::Load(_) => n.dtype == out_dtype,
                FlatOp::Index(_)
                | FlatOp::Const(_)
                | FlatOp::Cast(_)
                | FlatOp::Checked { .. }
                | FlatOp::Gather { .. } => false,
                FlatOp::Unary(u, a) => {
                    matches!(
                        u,
                        UnaryOp::Neg
                            | UnaryOp::Abs
                            | UnaryOp::Sqrt
                            | UnaryOp::Recip
                            | UnaryOp::Floor
                            | UnaryOp::Ceil
                            | UnaryOp::Not
                    ) && operands_ok(&[*a])
                }
                FlatOp::Binary(b, x, y) => !matches!(b, BinaryOp::Pow) && operands_ok(&[*x, *y]),
                FlatOp::Where(cn, x, y) => {
                    k.expr.nodes[*cn].dtype == DType::Bool && operands_ok(&[*x, *y])
                }
            };
        if !ok {
            return None;
        }
    }
    Some(vt)
}

/// Flags of a data access: cannot trap (the lowering keeps every access in bounds of
/// its buffer), but not `aligned`: vector accesses start at any element, and an
/// aligned flag would let Cranelift fold them into SSE operands that require 16 bytes.
fn data_mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

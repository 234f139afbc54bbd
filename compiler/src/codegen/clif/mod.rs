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

use aotgrad_ir::{DType, NodeId};
use cranelift_codegen::ir::types::{self, Type};
use cranelift_codegen::ir::{AbiParam, Function, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};

pub use super::helpers::Helper;
use crate::program::{FlatOp, KernelBody, LoopKernel, Program, RowKernel};
pub use collapse::{PARALLEL_MIN_ELEMS, parallel_worthy, rows_parallel_worthy, split_len};
use kernel::KernelGen;
use tiles::{EpilogueSchedule, epilogue_plan};

mod collapse;
mod entry;
mod fastmath;
mod kernel;
mod row;
mod scalar;
pub mod tiles;
mod vector;

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
        KernelBody::Library(_) | KernelBody::Wait(_) => Vec::new(),
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
    let mut e = Emitter {
        p,
        opts,
        ptr: module.target_config().pointer_type(),
        module,
        ctx: None,
        fctx: FunctionBuilderContext::new(),
        helpers: HashMap::new(),
        faults: Vec::new(),
        texts: Texts {
            clif: String::new(),
            machine: String::new(),
            machine_code: opts.machine_code,
        },
    };
    let (kernel_ids, epilogues) = e.kernels()?;
    let entry = e.entry(&kernel_ids)?;
    Ok(Emitted {
        entry,
        clif: e.texts.clif,
        machine: e.texts.machine,
        epilogues,
        faults: e.faults,
    })
}

/// What [`emit`] carries from function to function.
struct Emitter<'a, M: Module> {
    p: &'a Program,
    opts: CodegenOptions,
    ptr: Type,
    module: &'a mut M,
    /// Cranelift's reusable function context (made on first use).
    ctx: Option<cranelift_codegen::Context>,
    fctx: FunctionBuilderContext,
    /// Helpers are imported on first use, so a program's functions are numbered the
    /// same whatever else the helper table holds.
    helpers: HashMap<Helper, FuncId>,
    faults: Vec<FaultSlot>,
    texts: Texts,
}

/// Per matmul kernel with an epilogue: its index, schedule and functions.
type Epilogues = Vec<(usize, EpilogueSchedule, Vec<FuncId>)>;

impl<M: Module> Emitter<'_, M> {
    /// Defines one kernel function `name(bufs, lo, hi)` computing `body`.
    fn define(
        &mut self,
        name: String,
        body: Body<'_>,
        header: String,
    ) -> Result<FuncId, CodegenError> {
        let ptr = self.ptr;
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        // The range [lo, hi) of the split axis (see `split_len`) this call computes.
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| merr(&name, e))?;
        let mut ctx = self
            .ctx
            .take()
            .unwrap_or_else(|| self.module.make_context());
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut fb = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let mut g = KernelGen {
                fb: &mut fb,
                module: &mut *self.module,
                helpers: &mut self.helpers,
                imported: HashMap::new(),
                ptr,
                p: self.p,
                bufs: None,
                faults: &mut self.faults,
                known: HashMap::new(),
            };
            match body {
                Body::Loop(lk) => g.kernel(lk, self.opts.simd),
                Body::Rows(r) => g.rows_kernel(r, self.opts.simd),
            }
            fb.seal_all_blocks();
            fb.finalize(self.module.target_config());
        }
        let r = self
            .texts
            .define(&mut *self.module, &mut ctx, id, &name, &header);
        self.ctx = Some(ctx);
        r.map(|()| id)
    }

    /// Defines a function per loop and row kernel (`k<t>`) and per fused epilogue
    /// (`k<t>e<j>`), in schedule order.
    fn kernels(&mut self) -> Result<(HashMap<usize, FuncId>, Epilogues), CodegenError> {
        let p = self.p;
        let mut kernel_ids = HashMap::new();
        let mut epilogues = Vec::new();
        for (t, k) in p.kernels.iter().enumerate() {
            let (body, what) = match &k.body {
                KernelBody::Loop(lk) => (Body::Loop(lk), "kernel"),
                KernelBody::Rows(r) => (Body::Rows(r), "row kernel"),
                KernelBody::MatMul(m) => {
                    let Some((schedule, parts)) = epilogue_plan(m, self.opts.matmul_tiles) else {
                        continue;
                    };
                    let mut ids = Vec::with_capacity(parts.len());
                    for (j, lk) in parts.iter().enumerate() {
                        let header = format!("epilogue {j} of k{t}: {}", lk.outs[0].node);
                        ids.push(self.define(format!("k{t}e{j}"), Body::Loop(lk), header)?);
                    }
                    epilogues.push((t, schedule, ids));
                    continue;
                }
                KernelBody::Library(_) | KernelBody::Wait(_) => continue,
            };
            let header = format!("{what} k{t}: {}", k.node);
            kernel_ids.insert(t, self.define(format!("k{t}"), body, header)?);
        }
        Ok((kernel_ids, epilogues))
    }
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

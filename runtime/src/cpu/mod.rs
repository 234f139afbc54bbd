//! The CPU backend: a graph is lowered (`aotgrad_compiler::lower`), emitted as
//! Cranelift IR (`aotgrad_compiler::codegen`) and JIT-compiled into one entry function
//! per concrete binding of its symbols (a new batch size compiles a new variant, once).
//!
//! Parameters and optimizer state live in the caller's store ([`Persistent`]: its own
//! tensors, or a [`ParamArena`] that holds them all in one allocation so that merged
//! optimizer loops can span neighbouring tensors) and are updated in place by the
//! generated code; inputs are read straight from the caller's tensors; intermediates
//! live in one arena per variant.

mod abi;
mod jit;
mod library;
mod math;
mod matmul;
mod param_arena;
mod peak;
mod simd;

pub use param_arena::ParamArena;
pub use peak::fma_peak_gflops;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use aotgrad_compiler::codegen::clif::FaultSlot;
use aotgrad_compiler::codegen::{self, CodegenOptions};
use aotgrad_compiler::lower::{self, BufferKind, KernelBody, LowerOptions, ParamLayout, Program};
use aotgrad_ir::{Graph, verify};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};

use crate::Tensor;
use crate::interp::{Evaluation, RunError, SymbolEnv};
use crate::leaf::{self, Leaf, LeafKind};
use crate::variants::Variants;

/// Options of a CPU program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuOptions {
    /// Threads for matrix multiplies (results do not depend on it).
    pub threads: usize,
    /// Scan every float kernel output for NaN/Inf and report the producing node
    /// (compiles without fusion, so the node is exact).
    pub check_numerics: bool,
    /// Write parameter/state updates in place during the call. Off, updates are
    /// returned in [`Evaluation::updates`] and the caller decides whether to apply them.
    pub in_place_updates: bool,
    /// 128-bit vector inner loops.
    pub simd: bool,
    /// Elementwise fusion (`-O2`); off is `-O0`, one kernel per op.
    pub fuse: bool,
    /// Row kernels (`LowerOptions::rows`); results do not depend on it.
    pub rows: bool,
    /// Output tiles a large matrix product is cut into. Results depend on it (the
    /// GEMM's blocking follows the tile shape) but never on `threads`, which only
    /// decides who runs a tile; more tiles than threads only repack operands.
    pub matmul_tiles: usize,
    /// Keep what Cranelift made of every function: its optimised IR and the machine
    /// code ([`Variant::machine_code`]). Costs compile time; off by default.
    pub machine_code: bool,
    /// Time every kernel of every call ([`Variant::profile`]): two clock reads per
    /// kernel, so off by default.
    pub profile: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            threads: 1,
            check_numerics: false,
            in_place_updates: true,
            simd: true,
            fuse: true,
            rows: true,
            matmul_tiles: codegen::tiles::DEFAULT_TILES,
            machine_code: false,
            profile: false,
        }
    }
}

/// A persistent tensor's storage as generated code sees it.
pub struct Slot<'a> {
    pub dtype: aotgrad_ir::DType,
    pub shape: &'a [usize],
    /// The first element; valid for the shape's elements while the store is borrowed.
    pub ptr: *mut u8,
}

impl Slot<'_> {
    fn of(t: &mut Tensor) -> Slot<'_> {
        let ptr = t.data_ptr_mut();
        let t: &Tensor = t;
        Slot {
            dtype: t.dtype(),
            shape: t.shape(),
            ptr,
        }
    }
}

/// Where a program's parameters and state live between calls: the caller's tensors
/// (a map, a list) or a [`ParamArena`].
pub trait Persistent {
    /// The storage of `name`.
    fn slot(&mut self, name: &str) -> Option<Slot<'_>>;
    /// Replaces `name`'s value with `t`, which has its dtype and shape (a staged update).
    fn store(&mut self, name: &str, t: Tensor);
}

impl Persistent for HashMap<String, Tensor> {
    fn slot(&mut self, name: &str) -> Option<Slot<'_>> {
        self.get_mut(name).map(Slot::of)
    }

    fn store(&mut self, name: &str, t: Tensor) {
        self.insert(name.to_string(), t);
    }
}

/// A persistent store made of `(name, tensor)` pairs.
impl Persistent for Vec<(String, Tensor)> {
    fn slot(&mut self, name: &str) -> Option<Slot<'_>> {
        self.iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, t)| Slot::of(t))
    }

    fn store(&mut self, name: &str, t: Tensor) {
        if let Some((_, slot)) = self.iter_mut().find(|(n, _)| n == name) {
            *slot = t;
        }
    }
}

/// 64-byte aligned storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

fn lines(bytes: usize) -> Vec<Line> {
    vec![Line([0; 64]); line_count(bytes)]
}

/// Cache lines holding `bytes` bytes (at least one, so every buffer has an address).
fn line_count(bytes: usize) -> usize {
    bytes.div_ceil(64).max(1)
}

/// Moves the step's call onto a pool thread.
struct AssertSend<F>(F);
// SAFETY: the closure only runs while `pool.install` blocks the calling thread, so the
// buffer table and the context it borrows are not used by two threads at once; the
// generated code shares them with pool workers exactly as it does when the step runs
// on the calling thread.
unsafe impl<F> Send for AssertSend<F> {}

/// One compiled specialisation.
pub struct Variant {
    program: Program,
    clif: String,
    machine: String,
    module: Option<JITModule>,
    entry: unsafe extern "C" fn(*const *mut u8, *const abi::Ctx<'_>) -> i32,
    /// Per kernel: a matmul's fused-epilogue functions (in `module`).
    epilogues: Vec<Option<abi::Epilogue>>,
    /// Owned storage the buffer table points into (never read through these fields).
    _arena: Vec<Line>,
    _consts: Vec<Vec<Line>>,
    /// Buffer table: arena and constant addresses filled in at compile time, input and
    /// persistent addresses rewritten by each call.
    table: Vec<*mut u8>,
    /// Each leaf's dtype and concrete shape (in `CpuProgram::leaves` order): a call
    /// whose tensors match these runs this variant without binding symbols again.
    leaf_types: Vec<(aotgrad_ir::DType, Vec<usize>)>,
    /// Where each leaf's address goes in `table` (leaves the program never reads have
    /// no buffer).
    leaf_buffers: Vec<Option<usize>>,
    /// Whether some kernel of the step splits over the thread pool (see
    /// [`uses_pool`]); then the whole step runs on a pool thread.
    uses_pool: bool,
    /// The graph nodes whose indices generated code checks, and their fault words
    /// (two per slot, see `codegen::clif::FaultSlot`), addressed by the table's last
    /// entry.
    faults: Vec<FaultSlot>,
    fault_words: Box<[AtomicU64]>,
    /// `PersistentSpan` buffers: the table entry and the tensors it spans, pointed at
    /// the first of them by each call once they are found back to back.
    spans: Vec<(usize, Vec<String>)>,
    compile_ms: f64,
    /// Per-kernel times with [`CpuOptions::profile`] (written by `aotgrad_mark`).
    profile: RefCell<KernelProfile>,
}

/// Where a variant's calls spent their time, kernel by kernel ([`CpuOptions::profile`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KernelProfile {
    /// Calls that ran to the end.
    pub calls: u64,
    /// Per kernel (the program's order): time from its start to the next kernel's,
    /// summed over the calls. A matmul's includes its fused epilogue; a parallel
    /// kernel's is wall time, not CPU time.
    pub kernels: Vec<std::time::Duration>,
    /// Per kernel: for a matrix product, the time its GEMM calls took without the
    /// fused epilogue, summed over the threads that ran its tiles (so, divided into
    /// [`KernelProfile::flops`], a rate per thread that compares with one core's
    /// peak); zero for every other kernel.
    pub gemm: Vec<std::time::Duration>,
    /// Per kernel: the floating-point operations of one call of its product
    /// (`2 * batch * m * n * k`); zero for every other kernel.
    pub flops: Vec<u64>,
    /// The kernel running now, and since when.
    pub(crate) open: Option<(usize, std::time::Instant)>,
}

impl KernelProfile {
    /// GEMM rate per thread of the products of the profiled calls, in GFLOP/s: all
    /// their operations over the time their GEMM calls took (epilogues excluded),
    /// summed over threads; `None` without products or time.
    pub fn gemm_gflops(&self) -> Option<f64> {
        let secs: f64 = self.gemm.iter().map(|d| d.as_secs_f64()).sum();
        self.rate(self.step_flops(), secs)
    }

    /// The floating-point operations of one call's products: the sum of
    /// [`KernelProfile::flops`].
    pub fn step_flops(&self) -> u64 {
        self.flops.iter().sum()
    }

    /// The same for kernel `k` alone; `None` when it is not a product or took no time.
    pub fn kernel_gemm_gflops(&self, k: usize) -> Option<f64> {
        let flops = self.flops.get(k).copied().unwrap_or(0);
        let secs = self.gemm.get(k).map_or(0.0, |d| d.as_secs_f64());
        self.rate(flops, secs)
    }

    /// GFLOP/s of `flops` per call over all calls, in `secs` of GEMM time.
    fn rate(&self, flops: u64, secs: f64) -> Option<f64> {
        let total = flops as f64 * self.calls as f64;
        (total > 0.0 && secs > 0.0).then(|| total / secs / 1e9)
    }

    /// Kernel `k` starts (`k` = the kernel count: the call ends).
    pub(crate) fn mark(&mut self, k: usize) {
        let now = std::time::Instant::now();
        if let Some((prev, since)) = self.open.take()
            && let Some(t) = self.kernels.get_mut(prev)
        {
            *t += now - since;
        }
        if k < self.kernels.len() {
            self.open = Some((k, now));
        } else {
            self.calls += 1;
        }
    }
}

/// Floating-point operations of one call of a kernel's matrix product (a multiply
/// and an add per multiply-add); zero for a kernel that is not a product.
fn product_flops(k: &lower::Kernel) -> u64 {
    match &k.body {
        KernelBody::MatMul(m) => 2 * (m.batch.iter().product::<usize>() * m.m * m.n * m.k) as u64,
        _ => 0,
    }
}

/// Whether a kernel of `p` hands work to the thread pool: a large loop or row kernel,
/// a product cut into several tiles, or a batch of products.
fn uses_pool(p: &Program, max_tiles: usize) -> bool {
    use aotgrad_compiler::codegen::{clif, tiles};
    p.kernels.iter().any(|k| match &k.body {
        KernelBody::Loop(l) => clif::parallel_worthy(l),
        KernelBody::Rows(r) => clif::rows_parallel_worthy(r),
        KernelBody::MatMul(m) => {
            m.batch.iter().product::<usize>() > 1
                || tiles::matmul_tiles(m.m, m.n, m.k, max_tiles).len() > 1
        }
        KernelBody::Library(_) | KernelBody::Wait(_) => false,
    })
}

impl Variant {
    /// The lowered program (kernels, buffers, memory plan) this variant runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The Cranelift IR handed to Cranelift for this variant.
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// With [`CpuOptions::machine_code`]: every function after Cranelift's optimisation
    /// and as machine code for this host (empty otherwise). Unlike [`Variant::clif`] it
    /// depends on the host's instruction-set features.
    pub fn machine_code(&self) -> &str {
        &self.machine
    }

    /// With [`CpuOptions::profile`]: the time of every kernel summed over this
    /// variant's calls (all zero otherwise).
    pub fn profile(&self) -> KernelProfile {
        self.profile.borrow().clone()
    }

    /// Wall time of lowering + code generation + JIT compilation.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }
}

impl Drop for Variant {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: `entry` is the only pointer into this module's code and it dies
            // with `self`; no call is running (calls borrow `self`).
            unsafe { m.free_memory() };
        }
    }
}

/// A graph compiled for the CPU.
pub struct CpuProgram {
    graph: Graph,
    opts: CpuOptions,
    leaves: Vec<Leaf>,
    /// One variant per binding of the symbols (the symbol sizes are the key).
    variants: Variants<Box<Variant>>,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// The parameter arena the program is lowered for (`lower::lower_for_arena`).
    layout: Option<Arc<ParamLayout>>,
    /// The collectives thread of the process group its `all_reduce` kernels sum over,
    /// when the group has more than one rank.
    background: Option<crate::collective::Background>,
}

/// Thread pools shared by every program with the same thread count.
fn pool(threads: usize) -> Result<Option<Arc<rayon::ThreadPool>>, RunError> {
    if threads <= 1 {
        return Ok(None);
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(Some(p.clone()));
    }
    let p = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("aotgrad-{i}"))
            .build()
            .map_err(|e| RunError::Jit {
                stage: "thread pool",
                message: e.to_string(),
            })?,
    );
    pools.insert(threads, p.clone());
    Ok(Some(p))
}

impl CpuProgram {
    pub fn new(graph: &Graph, opts: CpuOptions) -> Result<CpuProgram, RunError> {
        verify(graph).map_err(RunError::Invalid)?;
        let leaves = leaf::leaves(graph);
        Ok(CpuProgram {
            graph: graph.clone(),
            opts,
            leaves,
            variants: Variants::default(),
            pool: pool(opts.threads)?,
            layout: None,
            background: None,
        })
    }

    /// Runs as one rank of `group`: each `all_reduce` kernel sums over its ranks in
    /// rank order (through the host: the kernel hands its buffer to the communicator).
    pub fn in_group(mut self, group: Option<Arc<dyn crate::collective::Communicator>>) -> Self {
        self.background = group
            .as_ref()
            .filter(|g| g.world() > 1)
            .map(|g| crate::collective::Background::new(g.clone(), g.timeout()));
        self
    }

    /// A program whose parameters and state live in a [`ParamArena`] laid out as
    /// `layout`: its optimizer loops over neighbouring tensors are merged, so it runs
    /// only on a store that holds them back to back (the arena; otherwise
    /// [`RunError::NotInArena`]).
    pub fn for_arena(
        graph: &Graph,
        opts: CpuOptions,
        layout: Arc<ParamLayout>,
    ) -> Result<CpuProgram, RunError> {
        let mut p = CpuProgram::new(graph, opts)?;
        p.layout = Some(layout);
        Ok(p)
    }

    /// The parameter-arena layout the program was made for, if any.
    /// How this program's graph is lowered (from its `CpuOptions`).
    fn lower_options(&self) -> LowerOptions {
        LowerOptions {
            in_place_updates: self.opts.in_place_updates,
            // Check-numerics names the node that made the first NaN, so every op is
            // its own kernel there.
            fuse: self.opts.fuse && !self.opts.check_numerics,
            rows: self.opts.rows,
            ..LowerOptions::default()
        }
    }

    /// The variant for `env` lowered again pass by pass, exactly as it was compiled
    /// (same options, same parameter arena): [`lower::lower_pass_by_pass`].
    pub fn lowered_pass_by_pass(&self, env: &SymbolEnv) -> Result<String, RunError> {
        lower::lower_pass_by_pass(
            &self.graph,
            env,
            self.lower_options(),
            self.layout.as_deref(),
        )
        .map(|(_, text)| text)
        .map_err(crate::leaf::lower_error)
    }

    pub fn layout(&self) -> Option<&Arc<ParamLayout>> {
        self.layout.as_ref()
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Whether the program has an input leaf called `name`.
    pub fn has_input(&self, name: &str) -> bool {
        crate::leaf::has_input(&self.leaves, name)
    }

    pub fn options(&self) -> CpuOptions {
        self.opts
    }

    /// The variant the last call ran (for printing its program and Cranelift IR).
    pub fn last_variant(&self) -> Option<&Variant> {
        self.variants.last().map(|v| &**v)
    }

    /// Compiles (or finds) the variant for `env` without running it.
    pub fn variant(&mut self, env: &SymbolEnv) -> Result<&Variant, RunError> {
        let i = self.variant_index(env)?;
        Ok(self.variants.get(i))
    }

    fn variant_index(&mut self, env: &SymbolEnv) -> Result<usize, RunError> {
        let mut variants = std::mem::take(&mut self.variants);
        let i = variants.index(env, |env| self.compile(env).map(Box::new));
        self.variants = variants;
        i
    }

    fn compile(&self, env: &SymbolEnv) -> Result<Variant, RunError> {
        let t0 = Instant::now();
        let opts = self.lower_options();
        let program = match &self.layout {
            Some(layout) => lower::lower_for_arena(&self.graph, env, opts, layout),
            None => lower::lower(&self.graph, env, opts),
        }
        .map_err(crate::leaf::lower_error)?;
        program.check_bounds().map_err(RunError::OutOfBounds)?;
        let mut module = jit::jit_module()?;
        let emitted = codegen::emit(
            &program,
            &mut module,
            CodegenOptions {
                threads: self.opts.threads,
                simd: self.opts.simd,
                check_numerics: self.opts.check_numerics,
                matmul_tiles: self.opts.matmul_tiles,
                machine_code: self.opts.machine_code,
                profile: self.opts.profile,
            },
        )
        .map_err(RunError::Codegen)?;
        module.finalize_definitions().map_err(|e| RunError::Jit {
            stage: "finalizing the module",
            message: e.to_string(),
        })?;
        let code = module.get_finalized_function(emitted.entry);
        // SAFETY: `code` is the finalized `step(bufs, ctx) -> i32` function emitted with
        // exactly this signature (two pointers, i32 return, the host's C convention).
        let entry = unsafe {
            std::mem::transmute::<
                *const u8,
                unsafe extern "C" fn(*const *mut u8, *const abi::Ctx<'_>) -> i32,
            >(code)
        };
        let mut epilogues: Vec<Option<abi::Epilogue>> =
            (0..program.kernels.len()).map(|_| None).collect();
        for (t, schedule, ids) in emitted.epilogues {
            let fns = ids
                .into_iter()
                .map(|id| {
                    let code = module.get_finalized_function(id);
                    // SAFETY: every epilogue function was emitted as a loop kernel,
                    // `k(bufs, lo, hi)` in the host's C convention.
                    unsafe { std::mem::transmute::<*const u8, abi::LoopFn>(code) }
                })
                .collect();
            epilogues[t] = Some(abi::Epilogue { schedule, fns });
        }
        let (arena, consts, mut table, spans) = jit::buffer_table(&program);
        let leaf_types = self
            .leaves
            .iter()
            .map(|l| {
                let shape = l.ty.shape.bind(env).expect("bound by the caller");
                (l.ty.dtype, shape)
            })
            .collect();
        let leaf_buffers = self
            .leaves
            .iter()
            .map(|l| {
                program.buffers.iter().position(|b| match &b.kind {
                    BufferKind::Input(n) | BufferKind::Persistent(n) => *n == l.name,
                    _ => false,
                })
            })
            .collect();
        let fault_words: Box<[AtomicU64]> = (0..2 * emitted.faults.len().max(1))
            .map(|_| AtomicU64::new(0))
            .collect();
        table.push(fault_words.as_ptr() as *mut u8);
        Ok(Variant {
            spans,
            faults: emitted.faults,
            fault_words,
            leaf_types,
            leaf_buffers,
            uses_pool: uses_pool(&program, self.opts.matmul_tiles),
            profile: RefCell::new(KernelProfile {
                kernels: vec![std::time::Duration::ZERO; program.kernels.len()],
                gemm: vec![std::time::Duration::ZERO; program.kernels.len()],
                flops: program.kernels.iter().map(product_flops).collect(),
                ..KernelProfile::default()
            }),
            clif: emitted.clif,
            machine: emitted.machine,
            program,
            module: Some(module),
            entry,
            epilogues,
            _arena: arena,
            _consts: consts,
            table,
            compile_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Checks every leaf's tensor and binds the symbols (input names are checked by the
    /// caller).
    fn bind(
        &self,
        persistent: &mut dyn Persistent,
        inputs: &[(&str, &Tensor)],
    ) -> Result<SymbolEnv, RunError> {
        leaf::bind(&self.leaves, |l| {
            leaf_tensor(l, persistent, inputs).map(|(d, s, _)| (d, s.to_vec()))
        })
    }

    /// Runs the program: inputs by name, parameters and state from `persistent`
    /// (updated in place unless the options say otherwise). Every tensor's dtype and
    /// shape is checked before generated code runs.
    pub fn run(
        &mut self,
        persistent: &mut dyn Persistent,
        inputs: &[(&str, &Tensor)],
    ) -> Result<Evaluation, RunError> {
        for (name, _) in inputs {
            if !self.has_input(name) {
                return Err(RunError::Unknown {
                    name: name.to_string(),
                });
            }
        }
        // Fast path: the tensors have the types of the last call, so its variant runs
        // without binding symbols again; otherwise bind (typed errors) and find or
        // compile the variant.
        let idx = match self.variants.last_index() {
            Some(i) if point_table(&self.leaves, self.variants.get_mut(i), persistent, inputs) => i,
            _ => {
                let env = self.bind(persistent, inputs)?;
                let i = self.variant_index(&env)?;
                if !point_table(&self.leaves, self.variants.get_mut(i), persistent, inputs) {
                    return Err(RunError::Bug(
                        "a variant's leaf types differ from the binding it was compiled for".into(),
                    ));
                }
                i
            }
        };
        point_spans(self.variants.get_mut(idx), persistent)?;
        self.variants.ran(idx);
        let v = &**self.variants.get(idx);
        // Only the real slots (a program without checked indices has one unused).
        for w in v.fault_words.chunks(2).take(v.faults.len()) {
            w[0].store(0, Ordering::Relaxed);
            w[1].store(u64::MAX, Ordering::Relaxed);
        }
        let table = &v.table;
        let ctx = abi::Ctx {
            program: &v.program,
            graph: &self.graph,
            env: &v.program.env,
            pool: self.pool.as_deref(),
            background: self.background.as_ref(),
            pending: RefCell::new(HashMap::new()),
            matmul_tiles: self.opts.matmul_tiles,
            epilogues: &v.epilogues,
            error: RefCell::new(None),
            bufs: table,
            profile: self.opts.profile.then_some(&v.profile),
        };
        // A call that stopped early (a bad index) left its last kernel open.
        v.profile.borrow_mut().open = None;
        // SAFETY: `table` holds a valid pointer for every buffer the program uses:
        // arena and constants owned by the variant, inputs borrowed for this call, and
        // persistent tensors of the checked dtype and shape (the caller cannot touch them
        // during the call: `persistent` is borrowed mutably), and spans pointed at the
        // first of tensors checked to lie back to back with the span's size
        // (`point_spans`). Every access of the
        // generated code was bounds-checked against these sizes when the variant was
        // compiled; inputs are only read (the program never writes an input buffer).
        let call = || unsafe { (v.entry)(table.as_ptr(), &ctx) };
        let status = match self.pool.as_deref() {
            // The step runs on a pool thread, so each parallel kernel's split runs in
            // place (that thread takes a part, an idle worker steals the other) instead
            // of the caller injecting a job and sleeping until a worker finishes it,
            // which cost two cross-thread wake-ups per kernel.
            Some(pool) if v.uses_pool => {
                let call = AssertSend(call);
                pool.install(move || {
                    let call = call;
                    (call.0)()
                })
            }
            _ => call(),
        };
        if status != 0 {
            if let Some(e) = ctx.error.into_inner() {
                return Err(e);
            }
            // A checked index: of the nodes that saw one out of range (a kernel may
            // check several, fused), the first in graph order, which is the one the
            // interpreter, evaluating nodes in that order, stops at.
            let fault = v
                .faults
                .iter()
                .zip(v.fault_words.chunks(2))
                .filter(|(_, w)| w[0].load(Ordering::Relaxed) != 0)
                .min_by_key(|(f, _)| f.node);
            return Err(match fault {
                Some((f, w)) => RunError::IndexOutOfRange {
                    node: f.node,
                    op: self.graph.node(f.node).op.name(),
                    index: w[1].load(Ordering::Relaxed) as i64,
                    size: f.len,
                },
                None => RunError::Bug(format!("kernel status {status} names no fault slot")),
            });
        }
        let p = &v.program;
        let outputs = p
            .outputs
            .iter()
            .map(|o| {
                // SAFETY: the call has finished; the output's access was bounds-checked.
                let t = unsafe { abi::read_view(p, table, o.buf, &o.at, &o.shape, o.dtype) };
                (o.name.clone(), t)
            })
            .collect();
        // Read every staged update before writing any (one may read another's target).
        let mut updates = Vec::new();
        for u in &p.updates {
            let dtype = p.buffer(u.target).dtype;
            let t = match &u.source {
                // SAFETY: as for outputs.
                Some((src, at)) => unsafe { abi::read_view(p, table, *src, at, &u.shape, dtype) },
                // Written in place, or an identity update (`update "w" = %w`): the
                // target holds the new value. Reported like any other when the caller
                // applies updates itself, as the interpreter reports it.
                None if !self.opts.in_place_updates => {
                    let at = aotgrad_compiler::lower::Affine::contiguous(&u.shape);
                    // SAFETY: the target is a persistent buffer of exactly `u.shape`.
                    unsafe { abi::read_view(p, table, u.target, &at, &u.shape, dtype) }
                }
                None => continue,
            };
            updates.push((u.name.clone(), t));
        }
        if self.opts.in_place_updates {
            for (name, t) in updates.drain(..) {
                persistent.store(&name, t);
            }
        }
        Ok(Evaluation { outputs, updates })
    }
}

/// The tensor the caller gives for `leaf` this call: its dtype, shape and data address.
fn leaf_tensor<'a>(
    leaf: &Leaf,
    persistent: &'a mut dyn Persistent,
    inputs: &'a [(&'a str, &'a Tensor)],
) -> Option<(aotgrad_ir::DType, &'a [usize], *mut u8)> {
    match leaf.kind {
        LeafKind::Input => inputs
            .iter()
            .find(|(n, _)| *n == leaf.name)
            .map(|(_, t)| (t.dtype(), t.shape(), t.data_ptr() as *mut u8)),
        LeafKind::Persistent => persistent
            .slot(&leaf.name)
            .map(|s| (s.dtype, s.shape, s.ptr)),
    }
}

/// Points `v`'s buffer table at this call's tensors, one lookup per leaf; `false` at the
/// first leaf that is missing or lacks the dtype and shape `v` was compiled for.
fn point_table(
    leaves: &[Leaf],
    v: &mut Variant,
    persistent: &mut dyn Persistent,
    inputs: &[(&str, &Tensor)],
) -> bool {
    for ((leaf, (dtype, shape)), slot) in leaves.iter().zip(&v.leaf_types).zip(&v.leaf_buffers) {
        match leaf_tensor(leaf, persistent, inputs) {
            Some((d, s, ptr)) if d == *dtype && s == shape.as_slice() => {
                if let Some(i) = *slot {
                    v.table[i] = ptr;
                }
            }
            _ => return false,
        }
    }
    true
}

/// Points each span of `v` at the first of its tensors, after checking that they lie
/// back to back in `persistent` with the span's dtype and total size.
fn point_spans(v: &mut Variant, persistent: &mut dyn Persistent) -> Result<(), RunError> {
    for (i, names) in &v.spans {
        let b = v
            .program
            .buffer(aotgrad_compiler::lower::BufferId(*i as u32));
        let mut first: Option<*mut u8> = None;
        let mut next: Option<usize> = None;
        let mut elems = 0;
        for n in names {
            let s = persistent.slot(n);
            let ok = s
                .as_ref()
                .is_some_and(|s| s.dtype == b.dtype && next.is_none_or(|a| a == s.ptr as usize));
            let Some(s) = s.filter(|_| ok) else {
                return Err(RunError::NotInArena {
                    names: names.clone(),
                });
            };
            let count: usize = s.shape.iter().product();
            first.get_or_insert(s.ptr);
            next = Some(s.ptr as usize + count * b.dtype.size_bytes());
            elems += count;
        }
        if elems != b.elems {
            return Err(RunError::NotInArena {
                names: names.clone(),
            });
        }
        v.table[*i] = first.expect("a span has members");
    }
    Ok(())
}

/// Runs `graph` once on the CPU backend with the interpreter's interface: every input,
/// parameter and state in `feeds`; updates come back in [`Evaluation::updates`].
pub fn run_once(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    opts: CpuOptions,
) -> Result<Evaluation, RunError> {
    let mut prog = CpuProgram::new(
        graph,
        CpuOptions {
            in_place_updates: false,
            ..opts
        },
    )?;
    let (inputs, feeds) = leaf::split_feeds(graph, feeds)?;
    let mut persistent: HashMap<String, Tensor> = feeds
        .into_iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    prog.run(&mut persistent, &inputs)
}

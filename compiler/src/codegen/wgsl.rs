//! WGSL code generation: the same lowered program the Cranelift backend compiles,
//! emitted as one compute shader per kernel.
//!
//! **Memory.** Every device buffer is an `array<u32>` of 32-bit words and values are
//! `bitcast` on load and store, so one arena buffer holds intermediates of every dtype
//! at the memory plan's offsets (byte offset / 4) and a kernel binds it once. WGSL has
//! no 64-bit types in core, so device element types are all 32-bit:
//!
//! | graph dtype | device | rule |
//! |---|---|---|
//! | f32 | f32 | exact |
//! | f64 | f32 | only for tensors of at most one element (the learning rate, a step counter, bias corrections): computed in f32, as PyTorch's capturable Adam keeps its step in float32 on CUDA; a larger f64 tensor is an error naming its node |
//! | i64 | i32 | labels and indices; inputs and constants are checked to fit when they reach the device; arithmetic wraps at 32 bits |
//! | i32 | i32 | exact |
//! | u8 | u32 | one element per word, results wrap to 8 bits |
//! | bool | u32 | 0 or 1 |
//!
//! **Kernels.** A loop kernel runs one invocation per element; a reduction with a long
//! reduced extent runs one 256-invocation workgroup per output and combines partial
//! results as a fixed tree in workgroup memory (so results do not depend on timing); a
//! short one loops in one invocation per output. A matrix product is a 64x64 output
//! tile per workgroup, staged through workgroup memory 16 deep along `k`, 4x4 outputs
//! per invocation, summing over `k` in increasing order. Library ops (gather,
//! scatter-add, argmax, pad, concat, integer matmul, bool reductions, Threefry random
//! numbers) get one
//! invocation per output element; scatter-add gathers its sources instead of using
//! atomics (WGSL has no float atomics) and is deterministic. An out-of-range gather or
//! scatter index sets a status word the runtime reads back with the outputs.

use std::fmt::{self, Write};

use aotgrad_ir::{
    ArgReduceOp, BinaryOp, DType, Distribution, Graph, NodeId, Op, ReduceOp, Scalar, UnaryOp,
};

use crate::lower::LowerOptions;
use crate::program::{
    Affine, BufferId, BufferKind, FlatOp, KernelBody, LibraryKernel, LoopKernel, MatMulKernel,
    Program, Target,
};

use super::windows::{self, BindingLimit, Block, Window};

/// Invocations per workgroup of 1-D kernels (WebGPU's guaranteed minimum maximum).
pub const WORKGROUP: u32 = 256;
/// Reductions whose reduced extent is at least this run a workgroup per output.
pub const TREE_REDUCE_MIN: usize = 256;
/// Output tile of the matrix-product shader (square).
pub const MATMUL_TILE: usize = 64;
/// The arena alignment GPU programs are lowered with ([`Target::GPU`]): WebGPU's
/// largest `min_storage_buffer_offset_alignment`, so a binding window that starts
/// inside an arena buffer, rounded down to the alignment, stays inside it and two
/// buffers' windows never overlap (WebGPU forbids aliasing a written binding).
pub const ARENA_ALIGN: usize = Target::GPU.arena_align;

/// How programs for the GPU are lowered: the defaults, for [`Target::GPU`].
pub fn lower_options() -> LowerOptions {
    LowerOptions {
        target: Target::GPU,
        ..LowerOptions::default()
    }
}

/// Why a program cannot run as WGSL.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WgslError {
    #[error("{node} (`{op}`) cannot run on the GPU: {why}")]
    Unsupported {
        node: NodeId,
        op: &'static str,
        why: String,
    },
    #[error("{node} (`{op}`): {what} exceeds the adapter's limit {limit}")]
    Limit {
        node: NodeId,
        op: &'static str,
        what: String,
        limit: u64,
    },
    #[error(
        "the arena ({arena_bytes} bytes) is larger than a storage binding, and its offsets \
         are aligned to {arena_align} bytes where binding windows need {binding_align} \
         (lower GPU programs for `Target::GPU`)"
    )]
    ArenaAlignment {
        arena_bytes: usize,
        arena_align: usize,
        binding_align: u32,
    },
}

/// The adapter limits code generation must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgslLimits {
    pub max_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_stage: u32,
    /// Bytes one storage binding may span; a memory larger than this is bound through
    /// windows and the kernels touching it are split (see [`windows`]).
    pub max_storage_buffer_binding_size: u64,
    /// Bytes a binding's offset must be a multiple of.
    pub min_storage_buffer_offset_alignment: u32,
}

impl Default for WgslLimits {
    /// WebGPU's guaranteed limits.
    fn default() -> Self {
        WgslLimits {
            max_workgroups_per_dimension: 65535,
            max_storage_buffers_per_stage: 8,
            max_storage_buffer_binding_size: 128 << 20,
            min_storage_buffer_offset_alignment: 256,
        }
    }
}

impl WgslLimits {
    fn binding(&self) -> BindingLimit {
        BindingLimit::new(
            self.max_storage_buffer_binding_size,
            self.min_storage_buffer_offset_alignment,
        )
    }
}

/// A device memory a kernel binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mem {
    /// The activation arena (all `Arena` buffers at their planned offsets).
    Arena,
    /// An input, persistent or constant buffer (its own device buffer).
    Buffer(BufferId),
    /// The status words (`[kernel index + 1, bad index, axis size]` of the first
    /// out-of-range index).
    Status,
}

/// One `@binding` of a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub mem: Mem,
    /// `None` binds the whole memory; a window binds only those words (a memory larger
    /// than the adapter's binding limit, see [`windows`]).
    pub window: Option<Window>,
    /// Whether the kernel writes it (then it is `read_write`).
    pub written: bool,
}

/// One compute pipeline. Lowered kernels can give several: a row kernel one per
/// stage, a matrix product with a split-off epilogue two, and a kernel over a memory
/// too large to bind whole one per block of its iteration space; they share `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct WgslKernel {
    /// `k<i>`: the kernel's index in the lowered program.
    pub name: String,
    pub node: NodeId,
    pub source: String,
    /// `@binding(i)` is `bindings[i]`.
    pub bindings: Vec<Binding>,
    /// Workgroups to dispatch (x, y, z); all zero for an empty kernel.
    pub workgroups: [u32; 3],
}

/// A lowered program as WGSL.
#[derive(Debug, Clone, PartialEq)]
pub struct WgslProgram {
    pub kernels: Vec<WgslKernel>,
    /// 32-bit words of the arena.
    pub arena_words: usize,
}

impl fmt::Display for WgslProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.kernels {
            let [x, y, z] = k.workgroups;
            writeln!(
                f,
                "// ---- {} ({}) dispatch ({x}, {y}, {z})",
                k.name, k.node
            )?;
            for (i, b) in k.bindings.iter().enumerate() {
                let m = match b.mem {
                    Mem::Arena => "arena".to_string(),
                    Mem::Buffer(b) => b.to_string(),
                    Mem::Status => "status".to_string(),
                };
                let window = match b.window {
                    Some(w) => format!(" words [{}, {})", w.start, w.start + w.words),
                    None => String::new(),
                };
                writeln!(
                    f,
                    "// binding {i}: {m}{window}{}",
                    if b.written { " (written)" } else { "" }
                )?;
            }
            f.write_str(&k.source)?;
        }
        Ok(())
    }
}

/// Device element type of a graph dtype (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    F32,
    I32,
    U32,
    Bool,
}

impl DevType {
    pub fn of(d: DType) -> DevType {
        match d {
            DType::F32 | DType::F64 => DevType::F32,
            DType::I32 | DType::I64 => DevType::I32,
            DType::U8 => DevType::U32,
            DType::Bool => DevType::Bool,
        }
    }

    fn name(self) -> &'static str {
        match self {
            DevType::F32 => "f32",
            DevType::I32 => "i32",
            DevType::U32 => "u32",
            DevType::Bool => "bool",
        }
    }
}

/// The word offset of `b` inside its device memory.
fn base_word(p: &Program, b: BufferId) -> usize {
    match p.buffer(b).kind {
        BufferKind::Arena { offset } => offset / 4,
        _ => 0,
    }
}

fn mem_of(p: &Program, b: BufferId) -> Mem {
    match p.buffer(b).kind {
        BufferKind::Arena { .. } => Mem::Arena,
        _ => Mem::Buffer(b),
    }
}

/// Emits every kernel of `program` (lowered from `graph`) as WGSL.
pub fn emit(
    program: &Program,
    graph: &Graph,
    limits: WgslLimits,
) -> Result<WgslProgram, WgslError> {
    check_types(program, graph)?;
    let binding_align = limits.min_storage_buffer_offset_alignment;
    if program.arena_bytes.div_ceil(4) > limits.binding().max_words
        && binding_align as usize > program.arena_align
    {
        return Err(WgslError::ArenaAlignment {
            arena_bytes: program.arena_bytes,
            arena_align: program.arena_align,
            binding_align,
        });
    }
    let mut out = Gen {
        p: program,
        g: graph,
        limits,
        kernels: Vec::with_capacity(program.kernels.len()),
    };
    for (i, k) in program.kernels.iter().enumerate() {
        match &k.body {
            KernelBody::Loop(l) => out.loop_kernel(i, k.node, l)?,
            // One pass per stage: the stages' reductions are workgroup tree reductions,
            // which a row-at-a-time invocation would give up.
            KernelBody::Rows(r) => {
                for l in &r.stages {
                    out.loop_kernel(i, k.node, l)?;
                }
            }
            KernelBody::MatMul(m) => out.matmul(i, k.node, m)?,
            KernelBody::Library(l) => out.library(i, k.node, l)?,
        }
    }
    let arena_words = program.arena_bytes.div_ceil(4);
    Ok(WgslProgram {
        kernels: out.kernels,
        arena_words,
    })
}

/// `[batch..., m, n, k]`: the iteration space of a product, which windows split.
fn matmul_space(m: &MatMulKernel) -> Vec<usize> {
    let mut s = m.batch.clone();
    s.extend([m.m, m.n, m.k]);
    s
}

/// Every access of a loop kernel (loads and stores) over its shape.
fn loop_accesses(l: &LoopKernel) -> Vec<(BufferId, Affine)> {
    let loads = l.loads.iter().cloned();
    loads
        .chain(l.outs.iter().map(|o| (o.buf, o.at.clone())))
        .collect()
}

/// The axes a loop kernel reduces over.
fn reduced_axes(l: &LoopKernel) -> Vec<bool> {
    (0..l.shape.len())
        .map(|d| {
            l.reduce.is_some() && l.shape[d] != 1 && l.outs.iter().all(|o| o.at.strides[d] == 0)
        })
        .collect()
}

/// The operands and result of a product over [`matmul_space`], and with `epilogue`
/// its accesses too (over `[batch..., m, n]`, constant along `k`).
fn matmul_accesses(m: &MatMulKernel, epilogue: Option<&LoopKernel>) -> Vec<(BufferId, Affine)> {
    let nb = m.batch.len();
    let lift = |at: &Affine, zero: usize| {
        let mut strides = at.strides.clone();
        strides.insert(zero, 0);
        Affine {
            offset: at.offset,
            strides,
        }
    };
    // a over [batch, m, k], b over [batch, k, n], c dense over [batch, m, n].
    let a = lift(&m.a.1, nb + 1);
    let mut b = m.b.1.clone();
    let sbk = b.strides.remove(nb);
    b.strides.insert(nb, 0);
    b.strides.push(sbk);
    let c = lift(&Affine::contiguous(&m.domain()), nb + 2);
    let mut out = vec![(m.a.0, a), (m.b.0, b), (m.c, c)];
    if let Some(e) = epilogue {
        out.extend(
            loop_accesses(e)
                .into_iter()
                .map(|(buf, at)| (buf, lift(&at, nb + 2))),
        );
    }
    out
}

/// Emission of a whole program: each lowered kernel becomes one or more dispatches.
struct Gen<'a> {
    p: &'a Program,
    g: &'a Graph,
    limits: WgslLimits,
    kernels: Vec<WgslKernel>,
}

impl<'a> Gen<'a> {
    fn emitter(&self, i: usize, node: NodeId) -> Emitter<'a> {
        Emitter::new(self.p, self.g, i, node, self.limits)
    }

    fn needs_window(&self, b: BufferId) -> bool {
        windows::windowed(self.p, b, self.limits.binding())
    }

    fn too_wide(&self, node: NodeId, buf: BufferId, words: usize) -> WgslError {
        WgslError::Limit {
            node,
            op: self.g.node(node).op.name(),
            what: format!(
                "{buf} accessed over {} bytes by one dispatch (the kernel cannot be cut \
                 so that its accesses fit one storage binding)",
                words * 4
            ),
            limit: self.limits.max_storage_buffer_binding_size,
        }
    }

    /// The window of every buffer that needs one, for `accesses` over the block: the
    /// arena's buffers share windows where their ranges fit one together.
    fn windows_for(
        &self,
        accesses: &[(BufferId, Affine)],
        origin: &[usize],
        shape: &[usize],
    ) -> Vec<(BufferId, Window)> {
        let lim = self.limits.binding();
        let mut out = Vec::new();
        let mut arena = Vec::new();
        for (b, lo, hi) in windows::ranges(accesses, origin, shape) {
            if !self.needs_window(b) {
                continue;
            }
            let base = base_word(self.p, b) as i64;
            let (lo, hi) = ((base + lo) as usize, (base + hi) as usize);
            match mem_of(self.p, b) {
                Mem::Arena => arena.push((b, lo, hi)),
                _ => out.push((b, lim.window(lo, hi))),
            }
        }
        arena.sort_by_key(|&(b, lo, _)| (lo, b.0));
        let mut groups: Vec<(usize, usize, Vec<BufferId>)> = Vec::new();
        for (b, lo, hi) in arena {
            if let Some(g) = groups.last_mut()
                && lim.window(g.0, g.1.max(hi)).words <= lim.max_words
            {
                g.1 = g.1.max(hi);
                g.2.push(b);
                continue;
            }
            groups.push((lo, hi, vec![b]));
        }
        for (lo, hi, bufs) in groups {
            let w = lim.window(lo, hi);
            out.extend(bufs.into_iter().map(|b| (b, w)));
        }
        out
    }

    /// A loop kernel: one dispatch, or one per block when it touches a memory too large
    /// to bind whole.
    fn loop_kernel(&mut self, i: usize, node: NodeId, l: &LoopKernel) -> Result<(), WgslError> {
        let lim = self.limits.binding();
        let blocks = windows::split(
            &l.shape,
            &loop_accesses(l),
            &reduced_axes(l),
            &|b| self.needs_window(b),
            lim,
        )
        .map_err(|u| self.too_wide(node, u.buf, u.words))?;
        for block in blocks {
            // The one block of a kernel that fits is the whole kernel, unshifted.
            let sub = l.sub_block(&block.origin, &block.shape);
            let mut e = self.emitter(i, node);
            e.windows =
                self.windows_for(&loop_accesses(&sub), &vec![0; sub.shape.len()], &sub.shape);
            e.accumulate = block.accumulate;
            e.plain_or_reduce(&sub)?;
            self.kernels.push(e.finish()?);
        }
        Ok(())
    }

    /// The product's dispatches over `blocks`, with `epilogue` fused into each.
    fn product(
        &self,
        i: usize,
        node: NodeId,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
        blocks: &[Block],
    ) -> Result<Vec<WgslKernel>, WgslError> {
        let accesses = matmul_accesses(m, epilogue);
        let mut out = Vec::with_capacity(blocks.len());
        for block in blocks {
            let mut e = self.emitter(i, node);
            e.windows = self.windows_for(&accesses, &block.origin, &block.shape);
            e.accumulate = block.accumulate;
            e.matmul_kernel(m, epilogue, block)?;
            out.push(e.finish()?);
        }
        Ok(out)
    }

    fn product_blocks(
        &self,
        node: NodeId,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
    ) -> Result<Vec<Block>, WgslError> {
        let nb = m.batch.len();
        let mut reduced = vec![false; nb + 2];
        reduced.push(true);
        windows::split(
            &matmul_space(m),
            &matmul_accesses(m, epilogue),
            &reduced,
            &|b| self.needs_window(b),
            self.limits.binding(),
        )
        .map_err(|u| self.too_wide(node, u.buf, u.words))
    }

    /// A matrix product: its epilogue fused into the product's dispatches where it can
    /// be, otherwise the product alone and then the epilogue as a loop kernel.
    fn matmul(&mut self, i: usize, node: NodeId, m: &MatMulKernel) -> Result<(), WgslError> {
        let nb = m.batch.len();
        // An epilogue in another order than `c` (a convolution's bias + ReLU in pooling
        // layout) would need the inverse of its access to find the elements an
        // invocation finished.
        if let Some(epilogue) = m.epilogue.as_deref().filter(|_| m.epilogue_in_order()) {
            let blocks = self.product_blocks(node, m, Some(epilogue))?;
            // A block that covers part of `k` leaves partial sums, not `c`.
            if blocks.iter().all(|b| b.shape[nb + 2] == m.k) {
                match self.product(i, node, m, Some(epilogue), &blocks) {
                    Ok(ks) => {
                        self.kernels.extend(ks);
                        return Ok(());
                    }
                    // The epilogue's buffers push the product past the adapter's
                    // storage bindings.
                    Err(WgslError::Limit { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        let blocks = self.product_blocks(node, m, None)?;
        let ks = self.product(i, node, m, None, &blocks)?;
        self.kernels.extend(ks);
        if let Some(epilogue) = m.epilogue.as_deref() {
            self.loop_kernel(i, node, epilogue)?;
        }
        Ok(())
    }

    /// A library kernel reads and writes its buffers anywhere: each must fit a window.
    fn library(&mut self, i: usize, node: NodeId, l: &LibraryKernel) -> Result<(), WgslError> {
        let mut windows = Vec::new();
        for b in l.inputs.iter().map(|(b, _)| *b).chain([l.out]) {
            let n = self.p.buffer(b).elems;
            let whole = Affine {
                offset: 0,
                strides: vec![1],
            };
            for (b, w) in self.windows_for(&[(b, whole)], &[0], &[n]) {
                if w.words > self.limits.binding().max_words {
                    return Err(self.too_wide(node, b, n));
                }
                windows.push((b, w));
            }
        }
        let mut e = self.emitter(i, node);
        e.windows = windows;
        e.library_kernel(l)?;
        self.kernels.push(e.finish()?);
        Ok(())
    }
}

/// f64 tensors of more than one element have no device type; i64 constants must fit.
fn check_types(p: &Program, g: &Graph) -> Result<(), WgslError> {
    for b in &p.buffers {
        let node = b.node.unwrap_or(NodeId(0));
        let op = g.node(node).op.name();
        if b.dtype == DType::F64 && b.elems > 1 {
            return Err(WgslError::Unsupported {
                node,
                op,
                why: format!(
                    "it is an f64 tensor of {} elements and WGSL has no f64 (f64 scalars are \
                     computed in f32; cast the tensor to f32)",
                    b.elems
                ),
            });
        }
        if let BufferKind::PersistentSpan(names) = &b.kind {
            return Err(WgslError::Unsupported {
                node,
                op,
                why: format!(
                    "the program was lowered for a CPU parameter arena (a span over {names:?}); \
                     lower GPU programs with `lower::lower`"
                ),
            });
        }
        if let BufferKind::Const(d) = &b.kind
            && b.dtype == DType::I64
            && (0..d.len()).any(|i| i32::try_from(int_value(d.get(i))).is_err())
        {
            return Err(WgslError::Unsupported {
                node,
                op,
                why: "an i64 constant does not fit the GPU's 32-bit integers".into(),
            });
        }
    }
    Ok(())
}

/// The scalar functions every shader may call (`wgsl_prelude.wgsl`).
const PRELUDE: &str = include_str!("wgsl_prelude.wgsl");

/// Threefry-2x32 with 20 rounds, as `runtime/src/interp/rng.rs` (`wgsl_threefry.wgsl`).
const THREEFRY: &str = include_str!("wgsl_threefry.wgsl");

/// A `.wgsl` source without its comment lines: the files explain themselves to their
/// readers, the shaders stay what they were when the code lived in Rust strings.
fn without_comments(src: &str) -> String {
    src.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| [l, "\n"])
        .collect()
}

struct Emitter<'a> {
    p: &'a Program,
    g: &'a Graph,
    index: usize,
    node: NodeId,
    limits: WgslLimits,
    bindings: Vec<Binding>,
    /// The windows this dispatch binds its windowed buffers through.
    windows: Vec<(BufferId, Window)>,
    /// A block past the start of a reduced axis: combine with the output's value.
    accumulate: bool,
    body: String,
    /// Module-scope declarations (workgroup arrays).
    decls: String,
    workgroup_size: (u32, u32),
    workgroups: [u32; 3],
}

impl<'a> Emitter<'a> {
    fn new(
        p: &'a Program,
        g: &'a Graph,
        index: usize,
        node: NodeId,
        limits: WgslLimits,
    ) -> Emitter<'a> {
        Emitter {
            p,
            g,
            index,
            node,
            limits,
            bindings: Vec::new(),
            windows: Vec::new(),
            accumulate: false,
            body: String::new(),
            decls: String::new(),
            workgroup_size: (WORKGROUP, 1),
            workgroups: [0; 3],
        }
    }

    fn op(&self) -> &'static str {
        self.g.node(self.node).op.name()
    }

    fn unsupported(&self, why: impl Into<String>) -> WgslError {
        WgslError::Unsupported {
            node: self.node,
            op: self.op(),
            why: why.into(),
        }
    }

    /// The binding index of `mem` (through `window`), marking it written when `write`.
    fn bind(&mut self, mem: Mem, window: Option<Window>, write: bool) -> usize {
        if let Some(i) = self
            .bindings
            .iter()
            .position(|b| b.mem == mem && b.window == window)
        {
            self.bindings[i].written |= write;
            return i;
        }
        self.bindings.push(Binding {
            mem,
            window,
            written: write,
        });
        self.bindings.len() - 1
    }

    /// `m<k>[u32(base + idx)]` for buffer `b` at element index `idx` (an i32 expression);
    /// through a window, `base` is relative to the window's first word.
    fn word(&mut self, b: BufferId, idx: &str, write: bool) -> String {
        let window = self.windows.iter().find(|(x, _)| *x == b).map(|(_, w)| *w);
        let m = self.bind(mem_of(self.p, b), window, write);
        let base = base_word(self.p, b) as i64 - window.map_or(0, |w| w.start as i64);
        if base == 0 {
            format!("m{m}[u32({idx})]")
        } else if idx == "0" {
            format!("m{m}[{base}u]")
        } else {
            format!("m{m}[u32({base} + {idx})]")
        }
    }

    /// A typed read of `b`'s element `idx`.
    fn read(&mut self, b: BufferId, idx: &str) -> String {
        let w = self.word(b, idx, false);
        match DevType::of(self.p.buffer(b).dtype) {
            DevType::F32 => format!("bitcast<f32>({w})"),
            DevType::I32 => format!("bitcast<i32>({w})"),
            DevType::U32 => w,
            DevType::Bool => format!("({w} != 0u)"),
        }
    }

    /// A statement writing `value` to `b`'s element `idx`.
    fn write(&mut self, b: BufferId, idx: &str, value: &str) -> String {
        let w = self.word(b, idx, true);
        match DevType::of(self.p.buffer(b).dtype) {
            DevType::F32 | DevType::I32 => format!("{w} = bitcast<u32>({value});"),
            DevType::U32 => format!("{w} = {value};"),
            DevType::Bool => format!("{w} = select(0u, 1u, {value});"),
        }
    }

    /// Sets a 1-D dispatch of `total` invocations (or workgroups when `per_group`).
    fn dispatch_1d(&mut self, total: usize, per_group: bool) -> Result<u32, WgslError> {
        let groups = if per_group {
            total
        } else {
            total.div_ceil(WORKGROUP as usize)
        };
        let max = self.limits.max_workgroups_per_dimension as usize;
        let wx = groups.clamp(1, max);
        let wy = groups.div_ceil(wx);
        if wy > max {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("{groups} workgroups"),
                limit: (max * max) as u64,
            });
        }
        self.workgroups = if total == 0 {
            [0, 0, 0]
        } else {
            [wx as u32, wy as u32, 1]
        };
        Ok(wx as u32)
    }

    /// `let gid = ...; if (gid >= total) { return; }` for a 1-D dispatch `wx` wide.
    fn gid_prologue(&mut self, total: usize, wx: u32, per_group: bool) {
        if per_group {
            let _ = writeln!(self.body, "  let gid = wg.y * {wx}u + wg.x;");
        } else {
            let _ = writeln!(
                self.body,
                "  let gid = (wg.y * {wx}u + wg.x) * {WORKGROUP}u + lid.x;"
            );
        }
        let _ = writeln!(self.body, "  if (gid >= {total}u) {{ return; }}");
    }

    /// Declares `i<d>: i32` for each axis in `axes` of `shape` from the linear `var`.
    fn unflatten(&mut self, var: &str, shape: &[usize], axes: &[usize], indent: &str) {
        self.unflatten_from(var, shape, axes, &[], indent);
    }

    /// [`Self::unflatten`], plus `origin[k]` on the `k`-th of `axes` (where given).
    fn unflatten_from(
        &mut self,
        var: &str,
        shape: &[usize],
        axes: &[usize],
        origin: &[usize],
        indent: &str,
    ) {
        let _ = writeln!(self.body, "{indent}var rem_{var} = {var};");
        for (k, &d) in axes.iter().enumerate().rev() {
            let n = shape[d];
            let plus = match origin.get(k) {
                Some(&o) if o > 0 => format!(" + {o}"),
                _ => String::new(),
            };
            if k == 0 {
                let _ = writeln!(self.body, "{indent}let i{d} = i32(rem_{var}){plus};");
            } else {
                let _ = writeln!(
                    self.body,
                    "{indent}let i{d} = i32(rem_{var} % {n}u){plus}; rem_{var} = rem_{var} / {n}u;"
                );
            }
        }
    }

    fn finish(mut self) -> Result<WgslKernel, WgslError> {
        // wgpu tracks usage per buffer, not per range: read-only and read-write bindings
        // of one buffer in a dispatch conflict, so windows of a written memory are all
        // bound read-write.
        for i in 0..self.bindings.len() {
            let mem = self.bindings[i].mem;
            if self.bindings.iter().any(|b| b.mem == mem && b.written) {
                self.bindings[i].written = true;
            }
        }
        if self.bindings.len() > self.limits.max_storage_buffers_per_stage as usize {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("{} storage buffers", self.bindings.len()),
                limit: self.limits.max_storage_buffers_per_stage as u64,
            });
        }
        let mut src = String::new();
        for (i, b) in self.bindings.iter().enumerate() {
            let access = if b.written { "read_write" } else { "read" };
            let ty = if b.mem == Mem::Status {
                "array<atomic<u32>>"
            } else {
                "array<u32>"
            };
            let _ = writeln!(
                src,
                "@group(0) @binding({i}) var<storage, {access}> m{i}: {ty};"
            );
        }
        src.push_str(&without_comments(PRELUDE));
        src.push_str(&self.decls);
        let (x, y) = self.workgroup_size;
        let _ = writeln!(src, "@compute @workgroup_size({x}, {y}, 1)");
        src.push_str(
            "fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {\n",
        );
        src.push_str(&self.body);
        src.push_str("}\n");
        Ok(WgslKernel {
            name: format!("k{}", self.index),
            node: self.node,
            source: src,
            bindings: self.bindings,
            workgroups: self.workgroups,
        })
    }

    /// `offset + sum(i<d> * stride)` over the axes of `shape` as an i32 expression.
    fn affine(at: &Affine, shape: &[usize]) -> String {
        let mut terms = Vec::new();
        if at.offset != 0 {
            terms.push(at.offset.to_string());
        }
        for (d, (&st, &n)) in at.strides.iter().zip(shape).enumerate() {
            match st {
                _ if n == 1 => {}
                0 => {}
                1 => terms.push(format!("i{d}")),
                _ => terms.push(format!("i{d} * {st}")),
            }
        }
        if terms.is_empty() {
            "0".into()
        } else {
            terms.join(" + ")
        }
    }

    /// `let e<n> = ...;` lines for the kernel's expression.
    fn expr_lines(&mut self, k: &LoopKernel, indent: &str) -> Result<String, WgslError> {
        let mut out = String::new();
        for (i, n) in k.expr.nodes.iter().enumerate() {
            let t = DevType::of(n.dtype);
            let operand = |j: usize| (format!("e{j}"), k.expr.nodes[j].dtype);
            let v = match &n.op {
                FlatOp::Load(l) => {
                    let (b, at) = &k.loads[*l];
                    let idx = Self::affine(at, &k.shape);
                    self.read(*b, &idx)
                }
                FlatOp::Index(a) => format!("({})", Self::affine(a, &k.shape)),
                FlatOp::Const(s) => self.literal(*s, n.dtype)?,
                FlatOp::Unary(u, a) => unary(*u, &operand(*a).0, n.dtype),
                FlatOp::Binary(b, x, y) => {
                    let (x, xd) = operand(*x);
                    binary(*b, &x, &operand(*y).0, DevType::of(xd))
                }
                FlatOp::Where(c, x, y) => format!("select(e{y}, e{x}, e{c})"),
                FlatOp::Cast(a) => {
                    let (a, from) = operand(*a);
                    cast(&a, from, n.dtype)
                }
                FlatOp::Checked { index, len, node } => {
                    // Every invocation carries on (a row stage may meet a barrier
                    // later) with index 0; the run reports the recorded fault.
                    let rec = self.fault_record(&format!("e{index}"), *len, *node);
                    let _ = writeln!(
                        out,
                        "{indent}let ok{i} = e{index} >= 0 && e{index} < {len};\n{indent}if (!ok{i}) {{ {rec} }}"
                    );
                    format!("select(0, e{index}, ok{i})")
                }
                FlatOp::Gather {
                    load,
                    index,
                    stride,
                } => {
                    let (b, at) = &k.loads[*load];
                    let idx = format!("{} + e{index} * {stride}", Self::affine(at, &k.shape));
                    self.read(*b, &idx)
                }
            };
            let _ = writeln!(out, "{indent}let e{i}: {} = {v};", t.name());
        }
        Ok(out)
    }

    fn literal(&self, s: Scalar, d: DType) -> Result<String, WgslError> {
        Ok(match DevType::of(d) {
            DevType::F32 => float_literal(s.as_f64() as f32),
            DevType::I32 => {
                let v = int_value(s);
                let v = i32::try_from(v).map_err(|_| {
                    self.unsupported(format!(
                        "the integer constant {v} does not fit the GPU's 32-bit integers"
                    ))
                })?;
                if v == i32::MIN {
                    "(i32(-2147483647) - 1)".into()
                } else {
                    format!("i32({v})")
                }
            }
            DevType::U32 => format!("{}u", int_value(s) & 0xff),
            DevType::Bool => (s.as_f64() != 0.0).to_string(),
        })
    }

    /// A loop kernel's shader: elementwise or reducing.
    fn plain_or_reduce(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        match k.reduce {
            Some(_) => self.reduce_kernel(k),
            None => self.loop_kernel(k),
        }
    }

    fn loop_kernel(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        let total: usize = k.shape.iter().product();
        let wx = self.dispatch_1d(total, false)?;
        self.gid_prologue(total, wx, false);
        let axes: Vec<usize> = (0..k.shape.len()).collect();
        self.unflatten("gid", &k.shape, &axes, "  ");
        let lines = self.expr_lines(k, "  ")?;
        self.body.push_str(&lines);
        let stores = self.store_lines(k, "  ");
        self.body.push_str(&stores);
        Ok(())
    }

    /// One statement per output of `k`, storing its value at its access.
    fn store_lines(&mut self, k: &LoopKernel, indent: &str) -> String {
        let mut out = String::new();
        for s in &k.outs {
            let idx = Self::affine(&s.at, &k.shape);
            let st = self.write(s.buf, &idx, &format!("e{}", s.value));
            let _ = writeln!(out, "{indent}{st}");
        }
        out
    }

    fn reduce_kernel(&mut self, k: &LoopKernel) -> Result<(), WgslError> {
        let op = k.reduce.expect("a reduction");
        let [out] = k.outs.as_slice() else {
            return Err(self.unsupported("a reduction with several outputs"));
        };
        let dt = DevType::of(self.p.buffer(out.buf).dtype);
        if dt == DevType::Bool {
            return Err(self.unsupported("a bool reduction in a loop kernel"));
        }
        let t = dt.name();
        let axes = reduced_axes(k);
        let (reduced, kept): (Vec<usize>, Vec<usize>) = (0..k.shape.len()).partition(|&d| axes[d]);
        let outs: usize = kept.iter().map(|&d| k.shape[d]).product();
        let rn: usize = reduced.iter().map(|&d| k.shape[d]).product();
        let tree = rn >= TREE_REDUCE_MIN;
        let wx = self.dispatch_1d(outs, tree)?;
        self.gid_prologue(outs, wx, tree);
        self.unflatten("gid", &k.shape, &kept, "  ");
        let id = identity(op, dt);
        let _ = writeln!(self.body, "  var acc: {t} = {id};");
        let (start, step) = if tree {
            ("lid.x", WORKGROUP as usize)
        } else {
            ("0u", 1)
        };
        let _ = writeln!(
            self.body,
            "  for (var r: u32 = {start}; r < {rn}u; r = r + {step}u) {{"
        );
        if !reduced.is_empty() {
            self.unflatten("r", &k.shape, &reduced, "    ");
        }
        let lines = self.expr_lines(k, "    ")?;
        self.body.push_str(&lines);
        let _ = writeln!(
            self.body,
            "    acc = {};",
            combine(op, dt, "acc", &format!("e{}", out.value))
        );
        self.body.push_str("  }\n");
        if tree {
            let _ = writeln!(self.decls, "var<workgroup> red: array<{t}, {WORKGROUP}>;");
            self.body
                .push_str("  red[lid.x] = acc;\n  workgroupBarrier();\n");
            let mut s = WORKGROUP / 2;
            while s >= 1 {
                let c = combine(op, dt, "red[lid.x]", &format!("red[lid.x + {s}u]"));
                let _ = writeln!(
                    self.body,
                    "  if (lid.x < {s}u) {{ red[lid.x] = {c}; }}\n  workgroupBarrier();"
                );
                s /= 2;
            }
            self.body.push_str("  if (lid.x == 0u) {\n");
            let st = self.reduce_store(op, dt, out.buf, &out.at, &k.shape, "red[0]");
            let _ = writeln!(self.body, "    {st}\n  }}");
        } else {
            let st = self.reduce_store(op, dt, out.buf, &out.at, &k.shape, "acc");
            let _ = writeln!(self.body, "  {st}");
        }
        Ok(())
    }

    /// The store of a reduction's result `value`; in a block that continues a reduced
    /// axis (`accumulate`), combined with what the earlier blocks stored.
    fn reduce_store(
        &mut self,
        op: ReduceOp,
        dt: DevType,
        buf: BufferId,
        at: &Affine,
        shape: &[usize],
        value: &str,
    ) -> String {
        let idx = Self::affine(at, shape);
        if self.accumulate {
            let old = self.read(buf, &idx);
            let v = combine(op, dt, &old, value);
            self.write(buf, &idx, &v)
        } else {
            self.write(buf, &idx, value)
        }
    }

    /// The tiled product; with `epilogue`, each invocation runs the epilogue on the
    /// elements of `c` it has just written (a function `epilogue_(i0, .., i<r+1>)` over
    /// the epilogue's index), so the fused pass costs no dispatch and no extra read of
    /// `c` from another invocation. Computes `block` of the product (over
    /// `[batch..., m, n, k]`, see [`windows`]; the whole of it unless a binding is too
    /// small); a block that starts past 0 along `k` adds its partial sums to `c`.
    fn matmul_kernel(
        &mut self,
        m: &MatMulKernel,
        epilogue: Option<&LoopKernel>,
        block: &Block,
    ) -> Result<(), WgslError> {
        if DevType::of(m.dtype) != DevType::F32 {
            return Err(self.unsupported("an integer matrix product outside a library kernel"));
        }
        let t = MATMUL_TILE;
        let nb = m.batch.len();
        let (origin, shape) = (&block.origin, &block.shape);
        let whole_batch = origin[..nb].iter().all(|&o| o == 0) && shape[..nb] == m.batch[..];
        let (m0, n0, k0) = (origin[nb], origin[nb + 1], origin[nb + 2]);
        let (bm, bn) = (shape[nb], shape[nb + 1]);
        // Ends of the block along m, n, k.
        let (m1, n1, k1) = (m0 + bm, n0 + bn, k0 + shape[nb + 2]);
        let batch: usize = shape[..nb].iter().product();
        let max = self.limits.max_workgroups_per_dimension as usize;
        let (gx, gy) = (bn.div_ceil(t), bm.div_ceil(t));
        if gx > max || gy > max || batch > max {
            return Err(WgslError::Limit {
                node: self.node,
                op: self.op(),
                what: format!("a {}x{} product in {batch} batches", m.m, m.n),
                limit: max as u64,
            });
        }
        self.workgroups = if batch * bm * bn == 0 {
            [0, 0, 0]
        } else {
            [gx as u32, gy as u32, batch as u32]
        };
        self.workgroup_size = (16, 16);
        let _ = writeln!(
            self.decls,
            "var<workgroup> ta: array<f32, {}>;\nvar<workgroup> tb: array<f32, {}>;",
            16 * t,
            16 * t
        );
        let (a, b) = (&m.a, &m.b);
        // Batch offsets of each operand and of C (dense [batch, m, n]).
        let mut bshape = shape[..nb].to_vec();
        bshape.push(1);
        let axes: Vec<usize> = (0..nb).collect();
        let body = &mut self.body;
        let _ = writeln!(body, "  let tid = lid.y * 16u + lid.x;");
        let from = |o: usize| {
            if o == 0 {
                String::new()
            } else {
                format!("{o}u + ")
            }
        };
        let _ = writeln!(
            body,
            "  let row0 = {}wg.y * {t}u;\n  let col0 = {}wg.x * {t}u;\n  let z = wg.z;",
            from(m0),
            from(n0)
        );
        self.unflatten_from("z", &bshape, &axes, &origin[..nb], "  ");
        let boff = |at: &Affine| {
            let mut s = at.offset.to_string();
            for d in 0..nb {
                if at.strides[d] != 0 && m.batch[d] != 1 {
                    let _ = write!(s, " + i{d} * {}", at.strides[d]);
                }
            }
            s
        };
        let (sam, sak) = (a.1.strides[nb], a.1.strides[nb + 1]);
        let (sbk, sbn) = (b.1.strides[nb], b.1.strides[nb + 1]);
        let (ab, bb) = (boff(&a.1), boff(&b.1));
        let (mm, nn) = (m.m, m.n);
        // The flat batch index of `c`: the dispatch's `z` unless the block cuts the batch.
        let zc = if whole_batch {
            "i32(z)".to_string()
        } else {
            let dense = Affine::contiguous(&m.batch);
            format!("({})", Self::affine(&dense, &m.batch))
        };
        let ra = self.read(a.0, &format!("abase + i32(gi) * {sam} + i32(gk) * {sak}"));
        let rb = self.read(b.0, &format!("bbase + i32(gk) * {sbk} + i32(gj) * {sbn}"));
        let mut epi_call = String::new();
        if let Some(e) = epilogue {
            let params: Vec<String> = (0..nb + 2).map(|d| format!("i{d}: i32")).collect();
            let lines = self.expr_lines(e, "  ")?;
            let stores = self.store_lines(e, "  ");
            let _ = writeln!(
                self.decls,
                "fn epilogue_({}) {{\n{lines}{stores}}}",
                params.join(", ")
            );
            let mut args: Vec<String> = (0..nb).map(|d| format!("i{d}")).collect();
            args.extend(["i32(gi)".into(), "i32(gj)".into()]);
            epi_call = format!(" epilogue_({});", args.join(", "));
        }
        // 16 named accumulators and unrolled 4x4 updates: a private array indexed by
        // loop counters lives in scratch memory on some drivers (llvmpipe: 5x slower).
        let mut stores = String::new();
        for r in 0..4 {
            for c in 0..4 {
                let at = format!("{zc} * {} + i32(gi) * {nn} + i32(gj)", mm * nn);
                let value = if self.accumulate {
                    format!("{} + acc{r}{c}", self.read(m.c, &at))
                } else {
                    format!("acc{r}{c}")
                };
                let wc = self.write(m.c, &at, &value);
                let _ = writeln!(
                    stores,
                    "  {{ let gi = row0 + lid.y * 4u + {r}u; let gj = col0 + lid.x * 4u + {c}u; if (gi < {m1}u && gj < {n1}u) {{ {wc}{epi_call} }} }}"
                );
            }
        }
        let body = &mut self.body;
        let _ = writeln!(body, "  let abase = {ab};\n  let bbase = {bb};");
        for r in 0..4 {
            let _ = writeln!(
                body,
                "  var acc{r}0: f32 = 0.0; var acc{r}1: f32 = 0.0; var acc{r}2: f32 = 0.0; var acc{r}3: f32 = 0.0;"
            );
        }
        let _ = writeln!(
            body,
            "  for (var k0: u32 = {k0}u; k0 < {k1}u; k0 = k0 + 16u) {{"
        );
        for q in 0..16 * t / 256 {
            let _ = writeln!(
                body,
                "    {{
      let e = tid + {q}u * 256u;
      let i = e / 16u; let kq = e % 16u;
      let gi = row0 + i; let gk = k0 + kq;
      var v: f32 = 0.0;
      if (gi < {m1}u && gk < {k1}u) {{ v = {ra}; }}
      ta[kq * {t}u + i] = v;
    }}
    {{
      let e = tid + {q}u * 256u;
      let kb = e / {t}u; let j = e % {t}u;
      let gj = col0 + j; let gk = k0 + kb;
      var w: f32 = 0.0;
      if (gj < {n1}u && gk < {k1}u) {{ w = {rb}; }}
      tb[kb * {t}u + j] = w;
    }}"
            );
        }
        let _ = writeln!(
            body,
            "    workgroupBarrier();
    for (var q: u32 = 0u; q < 16u; q = q + 1u) {{
      let ra = q * {t}u + lid.y * 4u;
      let rb = q * {t}u + lid.x * 4u;
      let a0 = ta[ra]; let a1 = ta[ra + 1u]; let a2 = ta[ra + 2u]; let a3 = ta[ra + 3u];
      let b0 = tb[rb]; let b1 = tb[rb + 1u]; let b2 = tb[rb + 2u]; let b3 = tb[rb + 3u];"
        );
        for r in 0..4 {
            let _ = writeln!(
                body,
                "      acc{r}0 = acc{r}0 + a{r} * b0; acc{r}1 = acc{r}1 + a{r} * b1; acc{r}2 = acc{r}2 + a{r} * b2; acc{r}3 = acc{r}3 + a{r} * b3;"
            );
        }
        let _ = writeln!(body, "    }}\n    workgroupBarrier();\n  }}");
        body.push_str(&stores);
        Ok(())
    }

    fn library_kernel(&mut self, l: &LibraryKernel) -> Result<(), WgslError> {
        let node = self.g.node(self.node);
        let total: usize = l.shape.iter().product();
        if let Op::ScatterAdd { axis } = &node.op
            && total == 0
            && l.inputs[1].1.iter().product::<usize>() > 0
        {
            // An empty output with a non-empty index: the scattered axis is empty (the
            // index is no larger than the output elsewhere), so every index is out of
            // range. No invocation per output would see one: a single one reports the
            // first, as the interpreter does.
            let wx = self.dispatch_1d(1, false)?;
            self.gid_prologue(1, wx, false);
            let j = self.read(l.inputs[1].0, "0");
            let _ = writeln!(self.body, "  let j = {j};");
            self.bounds_check("j", l.inputs[0].1[*axis]);
            return Ok(());
        }
        let wx = self.dispatch_1d(total, false)?;
        self.gid_prologue(total, wx, false);
        let out_axes: Vec<usize> = (0..l.shape.len()).collect();
        let shape = l.shape.clone();
        let dense = |s: &[usize]| Affine::contiguous(s);
        let odt = DevType::of(self.p.buffer(l.out).dtype);
        match &node.op {
            Op::Gather { axis } => {
                let (x, xs) = &l.inputs[0];
                let (ix, _) = &l.inputs[1];
                self.unflatten("gid", &shape, &out_axes, "  ");
                let j = self.read(*ix, "i32(gid)");
                let _ = writeln!(self.body, "  let j = {j};");
                self.bounds_check("j", xs[*axis]);
                let mut at = dense(xs);
                let mut idx = at.offset.to_string();
                for d in 0..shape.len() {
                    let st = std::mem::take(&mut at.strides[d]);
                    if d == *axis {
                        let _ = write!(idx, " + j * {st}");
                    } else if st != 0 {
                        let _ = write!(idx, " + i{d} * {st}");
                    }
                }
                let v = self.read(*x, &idx);
                let st = self.write(l.out, "i32(gid)", &v);
                let _ = writeln!(self.body, "  {st}");
            }
            Op::ScatterAdd { axis } => {
                let axis = *axis;
                let (x, xs) = &l.inputs[0];
                let (ix, is) = &l.inputs[1];
                let (src, _) = &l.inputs[2];
                self.unflatten("gid", &shape, &out_axes, "  ");
                let v = self.read(*x, "i32(gid)");
                let _ = writeln!(self.body, "  var acc = {v};");
                // Only positions inside the index's extent on the other axes receive.
                let mut inside = vec!["true".to_string()];
                for d in 0..shape.len() {
                    if d != axis && is[d] < xs[d] {
                        inside.push(format!("i{d} < {}", is[d]));
                    }
                }
                let ist = dense(is).strides;
                let mut qidx = "0".to_string();
                for (d, &st) in ist.iter().enumerate() {
                    if d == axis {
                        let _ = write!(qidx, " + q * {st}");
                    } else if st != 0 {
                        let _ = write!(qidx, " + i{d} * {st}");
                    }
                }
                let j = self.read(*ix, &qidx);
                let s = self.read(*src, &qidx);
                let add = if odt == DevType::Bool {
                    format!("acc | {s}")
                } else {
                    combine(ReduceOp::Sum, odt, "acc", &s)
                };
                let _ = writeln!(
                    self.body,
                    "  if ({}) {{\n    for (var q: i32 = 0; q < {}; q = q + 1) {{\n      let j = {j};",
                    inside.join(" && "),
                    is[axis]
                );
                let _ = writeln!(self.body, "      if (i{axis} == 0) {{");
                self.bounds_check("j", xs[axis]);
                let _ = writeln!(
                    self.body,
                    "      }}\n      if (j == i{axis}) {{ acc = {add}; }}\n    }}\n  }}"
                );
                let st = self.write(l.out, "i32(gid)", "acc");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::ArgReduce { op, axis, .. } => {
                let (x, xs) = &l.inputs[0];
                let axis = *axis;
                let kept: Vec<usize> = (0..xs.len()).filter(|&d| d != axis).collect();
                self.unflatten("gid", xs, &kept, "  ");
                let xt = DevType::of(self.p.buffer(*x).dtype);
                let mut at = dense(xs);
                at.strides[axis] = 0;
                let base = Self::affine(&at, xs);
                let step = dense(xs).strides[axis];
                let v = self.read(*x, &format!("{base} + p * {step}"));
                let better = match (op, xt) {
                    (ArgReduceOp::ArgMax, DevType::F32) => "isnan_(v) || v > best",
                    (ArgReduceOp::ArgMin, DevType::F32) => "isnan_(v) || v < best",
                    (ArgReduceOp::ArgMax, _) => "v > best",
                    (ArgReduceOp::ArgMin, _) => "v < best",
                };
                let nan_stop = if xt == DevType::F32 {
                    "if (isnan_(best)) { break; } "
                } else {
                    ""
                };
                let v = if xt == DevType::Bool {
                    format!("select(0u, 1u, {v})")
                } else {
                    v
                };
                let _ = writeln!(
                    self.body,
                    "  var at: i32 = 0;\n  var p: i32 = 0;\n  var best = {v};\n  for (p = 1; p < {}; p = p + 1) {{\n    {nan_stop}let v = {v};\n    if ({better}) {{ best = v; at = p; }}\n  }}",
                    xs[axis]
                );
                let st = self.write(l.out, "i32(gid)", "at");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::Reduce { op, axes, .. } => {
                let (x, xs) = &l.inputs[0];
                if xs
                    .iter()
                    .enumerate()
                    .any(|(d, &n)| axes.contains(&d) && n == 0)
                {
                    return Err(self.unsupported("a max/min over an empty axis"));
                }
                let kept: Vec<usize> = (0..xs.len()).filter(|d| !axes.contains(d)).collect();
                self.unflatten("gid", xs, &kept, "  ");
                let rn: usize = axes.iter().map(|&d| xs[d]).product();
                let _ = writeln!(
                    self.body,
                    "  var acc = {};\n  for (var r: u32 = 0u; r < {rn}u; r = r + 1u) {{",
                    if *op == ReduceOp::Max {
                        "false"
                    } else {
                        "true"
                    }
                );
                self.unflatten("r", xs, axes, "    ");
                let v = self.read(*x, &Self::affine(&dense(xs), xs));
                let c = if *op == ReduceOp::Max { "||" } else { "&&" };
                let _ = writeln!(self.body, "    acc = acc {c} {v};\n  }}");
                let st = self.write(l.out, "i32(gid)", "acc");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::MatMul { trans_a, trans_b } => {
                let r = shape.len();
                let (a, ashape) = &l.inputs[0];
                let (b, bshape) = &l.inputs[1];
                self.unflatten("gid", &shape, &out_axes, "  ");
                let (ast, bst) = (dense(ashape).strides, dense(bshape).strides);
                let k = if *trans_a {
                    ashape[r - 2]
                } else {
                    ashape[r - 1]
                };
                let mut ai = "0".to_string();
                let mut bi = "0".to_string();
                for d in 0..r - 2 {
                    let _ = write!(ai, " + i{d} * {}", ast[d]);
                    let _ = write!(bi, " + i{d} * {}", bst[d]);
                }
                let (ri, ci) = (format!("i{}", r - 2), format!("i{}", r - 1));
                let (sa_i, sa_k) = if *trans_a {
                    (ast[r - 1], ast[r - 2])
                } else {
                    (ast[r - 2], ast[r - 1])
                };
                let (sb_k, sb_j) = if *trans_b {
                    (bst[r - 1], bst[r - 2])
                } else {
                    (bst[r - 2], bst[r - 1])
                };
                let va = self.read(*a, &format!("{ai} + {ri} * {sa_i} + q * {sa_k}"));
                let vb = self.read(*b, &format!("{bi} + q * {sb_k} + {ci} * {sb_j}"));
                let zero = identity(ReduceOp::Sum, odt);
                let prod = match odt {
                    DevType::U32 => format!("(({va}) * ({vb})) & 255u"),
                    _ => format!("({va}) * ({vb})"),
                };
                let add = combine(ReduceOp::Sum, odt, "acc", &prod);
                let _ = writeln!(
                    self.body,
                    "  var acc = {zero};\n  for (var q: i32 = 0; q < {k}; q = q + 1) {{ acc = {add}; }}"
                );
                let st = self.write(l.out, "i32(gid)", "acc");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::Pad { pads, value } => {
                let (x, xs) = &l.inputs[0];
                self.unflatten("gid", &shape, &out_axes, "  ");
                let mut inside = vec!["true".to_string()];
                let xst = dense(xs).strides;
                let mut idx = "0".to_string();
                for (d, &(lo, _)) in pads.iter().enumerate() {
                    inside.push(format!("i{d} >= {lo} && i{d} < {}", lo + xs[d]));
                    if xst[d] != 0 {
                        let _ = write!(idx, " + (i{d} - {lo}) * {}", xst[d]);
                    }
                }
                let lit = self.literal(*value, node.ty.dtype)?;
                let v = self.read(*x, &idx);
                let _ = writeln!(
                    self.body,
                    "  var v = {lit};\n  if ({}) {{ v = {v}; }}",
                    inside.join(" && ")
                );
                let st = self.write(l.out, "i32(gid)", "v");
                let _ = writeln!(self.body, "  {st}");
            }
            // Gather form of col2im: each output element sums the window elements that
            // unfold would read from it, by increasing (i, j) from zero, as the
            // interpreter's scatter form adds them. No atomics, deterministic.
            Op::Fold { window: w, .. } => {
                let (x, xs) = &l.inputs[0];
                let r = shape.len();
                let (oh, ow) = (xs[xs.len() - 2], xs[xs.len() - 1]);
                let xst = dense(xs).strides;
                self.unflatten("gid", &shape, &out_axes, "  ");
                let mut plane = "0".to_string();
                for (d, st) in xst.iter().enumerate().take(r - 2) {
                    let _ = write!(plane, " + i{d} * {st}");
                }
                let zero = self.literal(Scalar::zero(node.ty.dtype), node.ty.dtype)?;
                let _ = writeln!(self.body, "  var acc = {zero};");
                let (h, wc) = (format!("i{}", r - 2), format!("i{}", r - 1));
                let (si, sj) = (xst[r - 2], xst[r - 1]);
                let (so, sw) = (xst[r], xst[r + 1]);
                let _ = writeln!(
                    self.body,
                    "  for (var i = 0; i < {kh}; i++) {{\n    let y = {h} - i * {dh};\n    if (y < 0 || y % {sh} != 0 || y / {sh} >= {oh}) {{ continue; }}\n    for (var j = 0; j < {kw}; j++) {{\n      let x = {wc} - j * {dw};\n      if (x < 0 || x % {sw_} != 0 || x / {sw_} >= {ow}) {{ continue; }}",
                    kh = w.kernel[0],
                    kw = w.kernel[1],
                    dh = w.dilation[0],
                    dw = w.dilation[1],
                    sh = w.stride[0],
                    sw_ = w.stride[1],
                );
                let v = self.read(
                    *x,
                    &format!(
                        "{plane} + i * {si} + j * {sj} + (y / {sh}) * {so} + (x / {sw2}) * {sw}",
                        sh = w.stride[0],
                        sw2 = w.stride[1]
                    ),
                );
                let add = combine(ReduceOp::Sum, odt, "acc", &v);
                let _ = writeln!(self.body, "      acc = {add};\n    }}\n  }}");
                let st = self.write(l.out, "i32(gid)", "acc");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::Concat { axis } => {
                let axis = *axis;
                self.unflatten("gid", &shape, &out_axes, "  ");
                let _ = writeln!(self.body, "  var v: {};", odt.name());
                let mut start = 0;
                for (b, s) in &l.inputs {
                    let st = dense(s).strides;
                    let mut idx = "0".to_string();
                    for (d, &sd) in st.iter().enumerate() {
                        if sd != 0 {
                            if d == axis {
                                let _ = write!(idx, " + (i{d} - {start}) * {sd}");
                            } else {
                                let _ = write!(idx, " + i{d} * {sd}");
                            }
                        }
                    }
                    let v = self.read(*b, &idx);
                    let end = start + s[axis];
                    let _ = writeln!(
                        self.body,
                        "  if (i{axis} >= {start} && i{axis} < {end}) {{ v = {v}; }}"
                    );
                    start = end;
                }
                let st = self.write(l.out, "i32(gid)", "v");
                let _ = writeln!(self.body, "  {st}");
            }
            Op::Random { dist, .. } => {
                // The interpreter's Threefry-2x32-20 (runtime/src/interp/rng.rs), which
                // needs only 32-bit integer ops: uniforms are bit-exact, normals use the
                // device's log and cos.
                let (key, _) = &l.inputs[0];
                let k = self.read(*key, "0");
                self.decls.push_str(&without_comments(THREEFRY));
                let _ = writeln!(
                    self.body,
                    "  let kw = bitcast<u32>({k});\n  let hi = select(0u, 0xffffffffu, {k} < 0);\n  let x = threefry_(kw, hi, gid, 0u);"
                );
                let v = match dist {
                    Distribution::Uniform => "f32(x.x >> 8u) * (1.0 / 16777216.0)",
                    Distribution::Normal => {
                        "sqrt(-2.0 * log(f32((x.x >> 8u) + 1u) * (1.0 / 16777216.0))) * cos(6.2831855 * (f32(x.y >> 8u) * (1.0 / 16777216.0)))"
                    }
                };
                let st = self.write(l.out, "i32(gid)", v);
                let _ = writeln!(self.body, "  {st}");
            }
            other => {
                return Err(self.unsupported(format!(
                    "no WGSL implementation of library op `{}`",
                    other.name()
                )));
            }
        }
        Ok(())
    }

    /// The statements recording that `var` (an i32 index into an axis of `size`
    /// checked inside a fused kernel) is out of range, under the code
    /// `FAULT_NODE | node` so the runtime names the gather or scatter it belongs to.
    fn fault_record(&mut self, var: &str, size: usize, node: NodeId) -> String {
        self.status_record(var, size, FAULT_NODE | node.index() as u32)
    }

    /// The statement writing `[code, var, size]` to the status words unless a larger
    /// code is there already (so the record is one fault's, whichever invocation won).
    fn status_record(&mut self, var: &str, size: usize, code: u32) -> String {
        let s = self.bind(Mem::Status, None, true);
        format!(
            "if (atomicMax(&m{s}[0], {code}u) < {code}u) {{ atomicStore(&m{s}[1], bitcast<u32>({var})); atomicStore(&m{s}[2], {size}u); }}"
        )
    }

    /// Records an out-of-range `var` (an i32 index into an axis of `size`) in the status
    /// words and clamps nothing: the run reports the error instead of returning numbers.
    fn bounds_check(&mut self, var: &str, size: usize) {
        let rec = self.status_record(var, size, self.index as u32 + 1);
        let _ = writeln!(
            self.body,
            "  if ({var} < 0 || {var} >= {size}) {{ {rec} return; }}"
        );
    }
}

/// Status codes with this bit set name a graph node (a checked index inside a fused
/// kernel) rather than a kernel: `code & !FAULT_NODE` is the node's index.
pub const FAULT_NODE: u32 = 1 << 31;

fn float_literal(v: f32) -> String {
    let s = format!("{v:?}");
    // The decimal goes through WGSL's abstract (f64) floats: keep it only when that
    // still rounds to exactly `v`.
    if v.is_finite()
        && s.parse::<f64>()
            .is_ok_and(|d| (d as f32).to_bits() == v.to_bits())
    {
        format!("f32({s})")
    } else {
        format!("bitcast<f32>({:#010x}u)", v.to_bits())
    }
}

/// An integer scalar's exact value (floats truncate).
fn int_value(s: Scalar) -> i64 {
    match s {
        Scalar::I64(v) => v,
        Scalar::I32(v) => v as i64,
        Scalar::U8(v) => v as i64,
        Scalar::Bool(v) => v as i64,
        Scalar::F32(_) | Scalar::F64(_) => s.as_f64() as i64,
    }
}

fn identity(op: ReduceOp, t: DevType) -> String {
    match (op, t) {
        (ReduceOp::Sum, DevType::F32) => "0.0".into(),
        (ReduceOp::Sum, DevType::I32) => "0".into(),
        (ReduceOp::Sum, _) => "0u".into(),
        (ReduceOp::Prod, DevType::F32) => "1.0".into(),
        (ReduceOp::Prod, DevType::I32) => "1".into(),
        (ReduceOp::Prod, _) => "1u".into(),
        (ReduceOp::Max, DevType::F32) => float_literal(f32::NEG_INFINITY),
        (ReduceOp::Max, DevType::I32) => "(i32(-2147483647) - 1)".into(),
        (ReduceOp::Max, _) => "0u".into(),
        (ReduceOp::Min, DevType::F32) => float_literal(f32::INFINITY),
        (ReduceOp::Min, DevType::I32) => "i32(2147483647)".into(),
        (ReduceOp::Min, _) => "255u".into(),
    }
}

/// Folds `x` into the accumulator: the reduction's binary op on the device type.
fn combine(op: ReduceOp, t: DevType, acc: &str, x: &str) -> String {
    let b = match op {
        ReduceOp::Sum => BinaryOp::Add,
        ReduceOp::Prod => BinaryOp::Mul,
        ReduceOp::Max => BinaryOp::Maximum,
        ReduceOp::Min => BinaryOp::Minimum,
    };
    binary(b, acc, x, t)
}

fn unary(u: UnaryOp, a: &str, d: DType) -> String {
    let t = DevType::of(d);
    match (u, t) {
        (UnaryOp::Neg, DevType::U32) => format!("(0u - {a}) & 255u"),
        (UnaryOp::Neg, _) => format!("-{a}"),
        (UnaryOp::Abs, DevType::U32) => a.to_string(),
        (UnaryOp::Abs, _) => format!("abs({a})"),
        (UnaryOp::Sign, DevType::F32) => format!("sign_({a})"),
        (UnaryOp::Sign, DevType::I32) => format!("sign({a})"),
        (UnaryOp::Sign, _) => format!("min({a}, 1u)"),
        (UnaryOp::Exp, _) => format!("exp({a})"),
        (UnaryOp::Log, _) => format!("log({a})"),
        (UnaryOp::Sqrt, _) => format!("sqrt({a})"),
        (UnaryOp::Recip, _) => format!("1.0 / {a}"),
        (UnaryOp::Sin, _) => format!("sin({a})"),
        (UnaryOp::Cos, _) => format!("cos({a})"),
        (UnaryOp::Tanh, _) => format!("tanh_({a})"),
        (UnaryOp::Log1p, _) => format!("log1p_({a})"),
        (UnaryOp::Expm1, _) => format!("expm1_({a})"),
        (UnaryOp::Erf, _) => format!("erf_({a})"),
        (UnaryOp::Floor, DevType::F32) => format!("floor({a})"),
        (UnaryOp::Ceil, DevType::F32) => format!("ceil({a})"),
        (UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::StopGradient, _) => a.to_string(),
        (UnaryOp::Not, _) => format!("!{a}"),
    }
}

/// `x <op> y` for operands of device type `t` (comparisons yield bool).
fn binary(b: BinaryOp, x: &str, y: &str, t: DevType) -> String {
    let cmp = |sym: &str| {
        if t == DevType::Bool && !matches!(b, BinaryOp::Eq | BinaryOp::Ne) {
            format!("select(0u, 1u, {x}) {sym} select(0u, 1u, {y})")
        } else if t == DevType::F32 {
            // IEEE, whatever the implementation assumes about NaN: unordered operands
            // compare false, except under `!=`.
            let nan = format!("(isnan_({x}) || isnan_({y}))");
            if b == BinaryOp::Ne {
                format!("({nan} || {x} != {y})")
            } else {
                format!("(!{nan} && {x} {sym} {y})")
            }
        } else {
            format!("{x} {sym} {y}")
        }
    };
    match (b, t) {
        (BinaryOp::Add, DevType::U32) => format!("({x} + {y}) & 255u"),
        (BinaryOp::Sub, DevType::U32) => format!("({x} - {y}) & 255u"),
        (BinaryOp::Mul, DevType::U32) => format!("({x} * {y}) & 255u"),
        (BinaryOp::Add, _) => format!("{x} + {y}"),
        (BinaryOp::Sub, _) => format!("{x} - {y}"),
        (BinaryOp::Mul, _) => format!("{x} * {y}"),
        (BinaryOp::Div, _) => format!("{x} / {y}"),
        (BinaryOp::Pow, _) => format!("pow_({x}, {y})"),
        (BinaryOp::Maximum, DevType::F32) => format!("fmax_({x}, {y})"),
        (BinaryOp::Minimum, DevType::F32) => format!("fmin_({x}, {y})"),
        (BinaryOp::Maximum, DevType::Bool) => format!("{x} | {y}"),
        (BinaryOp::Minimum, DevType::Bool) => format!("{x} & {y}"),
        (BinaryOp::Maximum, _) => format!("max({x}, {y})"),
        (BinaryOp::Minimum, _) => format!("min({x}, {y})"),
        (BinaryOp::Lt, _) => cmp("<"),
        (BinaryOp::Le, _) => cmp("<="),
        (BinaryOp::Gt, _) => cmp(">"),
        (BinaryOp::Ge, _) => cmp(">="),
        (BinaryOp::Eq, _) => cmp("=="),
        (BinaryOp::Ne, _) => cmp("!="),
        (BinaryOp::And, _) => format!("{x} & {y}"),
        (BinaryOp::Or, _) => format!("{x} | {y}"),
    }
}

/// Casts with the interpreter's rules: float to int truncates and saturates (NaN is
/// 0), to u8 saturates, to bool is `!= 0`.
fn cast(a: &str, from: DType, to: DType) -> String {
    let (f, t) = (DevType::of(from), DevType::of(to));
    if f == t {
        // f64 <-> f32 and i64 <-> i32 share a device type.
        return a.to_string();
    }
    match (f, t) {
        (DevType::F32, DevType::Bool) => format!("({a} != 0.0 || isnan_({a}))"),
        (DevType::I32, DevType::Bool) => format!("{a} != 0"),
        (DevType::U32, DevType::Bool) => format!("{a} != 0u"),
        (DevType::Bool, DevType::F32) => format!("select(0.0, 1.0, {a})"),
        (DevType::Bool, DevType::I32) => format!("select(0, 1, {a})"),
        (DevType::Bool, DevType::U32) => format!("select(0u, 1u, {a})"),
        (DevType::U32, DevType::F32) => format!("f32({a})"),
        (DevType::U32, DevType::I32) => format!("i32({a})"),
        (DevType::I32, DevType::F32) => format!("f32({a})"),
        (DevType::I32, DevType::U32) => format!("u32(clamp({a}, 0, 255))"),
        (DevType::F32, DevType::I32) => format!("f2i_({a})"),
        (DevType::F32, DevType::U32) => format!("f2u8_({a})"),
        _ => unreachable!("equal device types return above"),
    }
}

/// The word range `[lo, hi]` of `at` over `shape` (what a read-back must copy).
pub fn word_extent(p: &Program, b: BufferId, at: &Affine, shape: &[usize]) -> (usize, usize) {
    let base = base_word(p, b) as i64;
    let mut lo = at.offset;
    let mut hi = at.offset;
    for (&s, &n) in at.strides.iter().zip(shape) {
        if n == 0 {
            return (base as usize, base as usize);
        }
        let span = s * (n as i64 - 1);
        if span < 0 {
            lo += span;
        } else {
            hi += span;
        }
    }
    ((base + lo) as usize, (base + hi) as usize)
}

/// The device memory of `b` and its base word there.
pub fn placement(p: &Program, b: BufferId) -> (Mem, usize) {
    (mem_of(p, b), base_word(p, b))
}

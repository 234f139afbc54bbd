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

use super::windows::{self, BindingLimit, BindingWindow, Block};

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
    pub window: Option<BindingWindow>,
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
            // A GPU step runs in a group of one: its all_reduce kernel wrote the value.
            KernelBody::Wait(_) => {}
        }
    }
    let arena_words = program.arena_bytes.div_ceil(4);
    Ok(WgslProgram {
        kernels: out.kernels,
        arena_words,
    })
}
mod dispatch;
mod emitter;
mod library;
mod loops;
mod matmul;
mod scalar;

use dispatch::reduced_axes;
use scalar::{binary, cast, combine, float_literal, identity, int_value, unary};

/// Emission of a whole program: each lowered kernel becomes one or more dispatches.
struct Gen<'a> {
    p: &'a Program,
    g: &'a Graph,
    limits: WgslLimits,
    kernels: Vec<WgslKernel>,
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

/// The scalar functions every shader may call (`prelude.wgsl`).
const PRELUDE: &str = include_str!("prelude.wgsl");

/// Threefry-2x32 with 20 rounds, as `runtime/src/interp/rng.rs` (`threefry.wgsl`).
const THREEFRY: &str = include_str!("threefry.wgsl");

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
    windows: Vec<(BufferId, BindingWindow)>,
    /// A block past the start of a reduced axis: combine with the output's value.
    accumulate: bool,
    body: String,
    /// Module-scope declarations (workgroup arrays).
    decls: String,
    workgroup_size: (u32, u32),
    workgroups: [u32; 3],
}
/// Status codes with this bit set name a graph node (a checked index inside a fused
/// kernel) rather than a kernel: `code & !FAULT_NODE` is the node's index.
pub const FAULT_NODE: u32 = 1 << 31;
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

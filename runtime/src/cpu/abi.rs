//! The boundary between generated code and Rust: the functions JITed code calls
//! (listed in `aotgrad_compiler::codegen::helpers`), and the context they receive.
//! Every `unsafe` of the CPU backend that touches buffer memory lives in this module.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aotgrad_compiler::codegen::Helper;
use aotgrad_compiler::codegen::tiles::EpilogueSchedule;
use aotgrad_compiler::lower::{Affine, BufferId, KernelBody, LibraryKernel, Program};
use aotgrad_ir::{DType, Data, Graph, NodeId, Op};

use super::library;
use super::matmul::{self, Operand, Real};
use crate::Tensor;
use crate::interp::layout::for_each_index;
use crate::interp::{self, RunError};

/// What the entry function's `ctx` argument points to during one call.
pub(crate) struct Ctx<'a> {
    pub program: &'a Program,
    pub graph: &'a Graph,
    pub env: &'a BTreeMap<Arc<str>, usize>,
    pub pool: Option<&'a rayon::ThreadPool>,
    /// The group's collectives thread (groups of more than one rank).
    pub background: Option<&'a crate::collective::Background>,
    /// Collectives started in this call and not yet waited for, by node.
    pub pending: RefCell<std::collections::HashMap<NodeId, crate::collective::Pending>>,
    /// Output tiles per large matmul (fixed per program, never by thread count).
    pub matmul_tiles: usize,
    /// Per kernel: the generated functions of a matmul's fused epilogue.
    pub epilogues: &'a [Option<Epilogue>],
    /// The error a helper reports with a non-zero status.
    pub error: RefCell<Option<RunError>>,
    /// `bufs` of this call, for helpers that read buffers by id.
    pub bufs: &'a [*mut u8],
    /// With `CpuOptions::profile`: the variant's kernel times (`aotgrad_mark`).
    pub profile: Option<&'a RefCell<super::KernelProfile>>,
}

/// A matmul's fused epilogue: when it runs, and its generated functions (one per tile
/// for `PerTile`, otherwise one).
pub(crate) struct Epilogue {
    pub schedule: EpilogueSchedule,
    pub fns: Vec<LoopFn>,
}

/// The buffer `id` of this call as a typed slice.
///
/// # Safety
/// `bufs[id]` must point to `elems` valid, initialised elements of `T`'s dtype, and no
/// mutable reference to them may exist while the slice lives.
unsafe fn slice<'a, T>(ctx: &Ctx<'a>, id: BufferId) -> &'a [T] {
    let n = ctx.program.buffer(id).elems;
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(ctx.bufs[id.index()] as *const T, n) }
}

/// Reads a buffer through an affine access into a dense tensor of `shape`.
///
/// # Safety
/// As [`slice`]; `at` must stay within the buffer (checked by `Program::check_bounds`
/// before the program first runs).
pub(crate) unsafe fn read_view(
    program: &Program,
    bufs: &[*mut u8],
    id: BufferId,
    at: &Affine,
    shape: &[usize],
    dtype: DType,
) -> Tensor {
    let n = program.buffer(id).elems;
    let ptr = bufs[id.index()];
    let count: usize = shape.iter().product();
    if at.is_contiguous(shape) && count <= n {
        // SAFETY: the caller's contract; `count <= n` elements from the start.
        return unsafe { read_dense(ptr, dtype, shape, count) };
    }
    let offsets = offsets(at, shape);
    macro_rules! gather {
        ($t:ty, $variant:ident) => {{
            // SAFETY: the caller's contract; indexing below is bounds-checked too.
            let v: &[$t] = unsafe { std::slice::from_raw_parts(ptr as *const $t, n) };
            Data::$variant(offsets.iter().map(|&o| v[o]).collect())
        }};
    }
    let data = match dtype {
        DType::Bool => {
            // SAFETY: as above; bool buffers hold bytes 0/1.
            let v: &[u8] = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
            Data::Bool(offsets.iter().map(|&o| v[o] != 0).collect())
        }
        DType::U8 => gather!(u8, U8),
        DType::I32 => gather!(i32, I32),
        DType::I64 => gather!(i64, I64),
        DType::F32 => gather!(f32, F32),
        DType::F64 => gather!(f64, F64),
    };
    Tensor::new(shape, data).expect("one element per index")
}

/// `count` elements from `ptr` as a tensor of `shape`.
///
/// # Safety
/// `ptr` must be valid for reads of `count` elements of `dtype`.
unsafe fn read_dense(ptr: *const u8, dtype: DType, shape: &[usize], count: usize) -> Tensor {
    macro_rules! copy {
        ($t:ty, $variant:ident) => {{
            // SAFETY: the caller's contract.
            Data::$variant(unsafe { std::slice::from_raw_parts(ptr as *const $t, count) }.to_vec())
        }};
    }
    let data = match dtype {
        // SAFETY: the caller's contract; bool buffers hold bytes 0/1.
        DType::Bool => Data::Bool(
            unsafe { std::slice::from_raw_parts(ptr, count) }
                .iter()
                .map(|&b| b != 0)
                .collect(),
        ),
        DType::U8 => copy!(u8, U8),
        DType::I32 => copy!(i32, I32),
        DType::I64 => copy!(i64, I64),
        DType::F32 => copy!(f32, F32),
        DType::F64 => copy!(f64, F64),
    };
    Tensor::new(shape, data).expect("one element per index")
}

/// Writes a dense tensor into buffer memory.
///
/// # Safety
/// `ptr` must be valid for writes of `t.len()` elements of `t`'s dtype.
pub(crate) unsafe fn write_dense(ptr: *mut u8, t: &Tensor) {
    let bytes = t.to_le_bytes();
    // SAFETY: the caller's contract; `to_le_bytes` is the native layout on the
    // little-endian targets Cranelift's native backend supports here.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
}

/// Element offsets of `at` over `shape`, in row-major order of `shape`.
pub(crate) fn offsets(at: &Affine, shape: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.iter().product());
    for_each_index(shape, |idx, _| out.push(affine_offset(at, idx) as usize));
    out
}

/// `at.offset + sum(idx[d] * at.strides[d])` over the leading `idx.len()` axes.
fn affine_offset(at: &Affine, idx: &[usize]) -> i64 {
    at.offset
        + idx
            .iter()
            .zip(&at.strides)
            .map(|(&i, &s)| i as i64 * s)
            .sum::<i64>()
}

/// Runs kernel `k` (a matmul or a library kernel) of the current call.
///
/// # Safety
/// `ctx` must point to the live [`Ctx`] of the running call and `bufs` to its table.
pub(crate) unsafe extern "C" fn aotgrad_kernel(
    ctx: *const Ctx<'_>,
    k: usize,
    _bufs: *const *mut u8,
) -> i32 {
    // SAFETY: the entry function passes the `ctx` the executor created for this call.
    let ctx = unsafe { &*ctx };
    // SAFETY: the function's contract.
    guarded(ctx, k, || unsafe { run_kernel(ctx, k) })
}

/// Runs `f` for kernel `k`, turning a panic into [`RunError::Internal`] and status 1. A
/// panic must not unwind out of an `extern "C"` function called by generated code (the
/// process would abort), so every helper that runs Rust library code goes through
/// this; the entry function stops at the non-zero status and the call returns the
/// error, with no update applied after the failing kernel.
fn guarded(ctx: &Ctx<'_>, k: usize, f: impl FnOnce() -> i32) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(status) => status,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            let node = ctx.program.kernels[k].node;
            *ctx.error.borrow_mut() = Some(RunError::Internal {
                node,
                op: ctx.graph.node(node).op.name(),
                message,
            });
            1
        }
    }
}

/// [`aotgrad_kernel`]'s body.
///
/// # Safety
/// As [`aotgrad_kernel`].
unsafe fn run_kernel(ctx: &Ctx<'_>, k: usize) -> i32 {
    let kernel = &ctx.program.kernels[k];
    match &kernel.body {
        KernelBody::MatMul(mm) => {
            // SAFETY: the memory plan keeps `c` apart from `a`/`b`, bounds were checked.
            unsafe {
                match mm.dtype {
                    DType::F32 => run_matmul::<f32>(ctx, k, mm),
                    _ => run_matmul::<f64>(ctx, k, mm),
                }
            }
            0
        }
        KernelBody::Library(lib) => {
            // SAFETY: as for the matmul: the plan keeps the output apart from the
            // inputs, and the buffers hold their nodes' dense values.
            if unsafe { native_library(ctx, kernel.node, lib) } {
                return 0;
            }
            let args: Vec<Tensor> = lib
                .inputs
                .iter()
                .map(|(b, shape)| {
                    let dtype = ctx.program.buffer(*b).dtype;
                    // SAFETY: inputs are dense buffers of exactly `shape`.
                    unsafe {
                        read_view(
                            ctx.program,
                            ctx.bufs,
                            *b,
                            &Affine::contiguous(shape),
                            shape,
                            dtype,
                        )
                    }
                })
                .collect();
            let refs: Vec<&Tensor> = args.iter().collect();
            let result = match (&ctx.graph.node(kernel.node).op, ctx.background) {
                // The start of a collective: the reduction goes to the group's thread
                // and the step goes on; the kernel's wait writes the result.
                (aotgrad_ir::Op::AllReduce { .. }, Some(bg)) => {
                    let x = args.into_iter().next().expect("one operand");
                    match bg.start(x.into_data()) {
                        Ok(p) => {
                            ctx.pending.borrow_mut().insert(kernel.node, p);
                            return 0;
                        }
                        Err(error) => Err(RunError::Collective {
                            node: kernel.node,
                            error,
                        }),
                    }
                }
                _ => interp::eval_node(ctx.graph, kernel.node, &refs, ctx.env),
            };
            match result {
                Ok(t) => {
                    // SAFETY: the output buffer holds exactly `t.len()` elements.
                    unsafe { write_dense(ctx.bufs[lib.out.index()], &t) };
                    0
                }
                Err(e) => {
                    *ctx.error.borrow_mut() = Some(e);
                    1
                }
            }
        }
        KernelBody::Wait(w) => {
            // In a group of one the start already wrote the value.
            let Some(pending) = ctx.pending.borrow_mut().remove(&kernel.node) else {
                return 0;
            };
            let aotgrad_ir::Op::AllReduce { op } = ctx.graph.node(kernel.node).op else {
                unreachable!("only all_reduce kernels start collectives")
            };
            let elems = ctx.program.buffer(w.out).elems;
            let result = pending.wait().and_then(|sum| {
                let world = ctx.background.map_or(1, |b| b.comm().world());
                if sum.len() != elems {
                    // Never written past the buffer, whatever a peer sent.
                    return Err(crate::collective::CollectiveError::Mismatch {
                        call: 0,
                        rank: ctx.background.map_or(0, |b| b.comm().rank()),
                        expected: format!("{elems} elements"),
                        got: format!("{} elements", sum.len()),
                    });
                }
                Ok(interp::finish_all_reduce(sum, op, world))
            });
            match result {
                Ok(data) => {
                    let t = Tensor::new(&[data.len()], data).expect("one dimension");
                    // SAFETY: the output buffer holds the node's value, `t.len()` elements.
                    unsafe { write_dense(ctx.bufs[w.out.index()], &t) };
                    0
                }
                Err(error) => {
                    *ctx.error.borrow_mut() = Some(RunError::Collective {
                        node: kernel.node,
                        error,
                    });
                    1
                }
            }
        }
        KernelBody::Loop(_) | KernelBody::Rows(_) => {
            unreachable!("loop and row kernels are generated code")
        }
    }
}

/// Runs a library kernel with the native loops of [`library`] when they cover its op,
/// dtypes and layout; `false` leaves it to the interpreter's reference arm (which also
/// reports out-of-range indices).
///
/// # Safety
/// As [`aotgrad_kernel`]: `lib`'s buffers hold dense values of their shapes, and the
/// output buffer shares no bytes with an input (their live ranges overlap at this
/// kernel, so the memory plan keeps them apart).
unsafe fn native_library(ctx: &Ctx<'_>, node: NodeId, lib: &LibraryKernel) -> bool {
    let dtype = |b: BufferId| ctx.program.buffer(b).dtype;
    let input = |i: usize| &lib.inputs[i];
    let numel = |s: &[usize]| s.iter().product::<usize>();
    let out_n = numel(&lib.shape);
    // SAFETY (every `part`/`part_mut` below): the function's contract; `n` is the
    // operand's element count, within its buffer.
    macro_rules! float_case {
        ($t:ty, $body:expr) => {{
            let run: &dyn Fn(&[$t], &mut [$t]) -> Option<()> = &$body;
            let x: &[$t] = unsafe { part(ctx, input(0).0, numel(&input(0).1)) };
            let out: &mut [$t] = unsafe { part_mut(ctx, lib.out, out_n) };
            run(x, out).is_some()
        }};
    }
    // Each op runs over independent units (planes, or the outer index around its
    // axis), split over the pool's threads by `library::par_units`.
    let pool = ctx.pool;
    match &ctx.graph.node(node).op {
        Op::Fold { window, size } => {
            let (x_n, [h, w]) = (numel(&input(0).1), *size);
            let per_out = h * w;
            let planes = out_n.checked_div(per_out).unwrap_or(0);
            let per_src = x_n.checked_div(planes).unwrap_or(0);
            macro_rules! fold_as {
                ($t:ty) => {
                    float_case!($t, |x, out| {
                        library::par_units(pool, out, per_out, x_n, |first, o| {
                            let src = &x[first * per_src..][..o.len() / per_out.max(1) * per_src];
                            library::fold(window, src, o, *size);
                            true
                        })
                        .then_some(())
                    })
                };
            }
            match dtype(lib.out) {
                DType::F32 => fold_as!(f32),
                DType::F64 => fold_as!(f64),
                _ => false,
            }
        }
        Op::ArgReduce { op, axis, .. } => {
            let (_, len, inner) = library::split_axis(&input(0).1, *axis);
            if len == 0 {
                return false;
            }
            let out: &mut [i64] = unsafe { part_mut(ctx, lib.out, out_n) };
            let n = numel(&input(0).1);
            macro_rules! arg_as {
                ($t:ty) => {{
                    let x: &[$t] = unsafe { part(ctx, input(0).0, n) };
                    library::par_units(pool, out, inner, n, |first, o| {
                        let rows = o.len() / inner.max(1);
                        let x = &x[first * len * inner..][..rows * len * inner];
                        library::arg_reduce(*op, x, o, (rows, len, inner));
                        true
                    });
                }};
            }
            match dtype(input(0).0) {
                DType::F32 => arg_as!(f32),
                DType::F64 => arg_as!(f64),
                _ => return false,
            }
            true
        }
        Op::Gather { axis } => {
            let (xs, is) = (&input(0).1, &input(1).1);
            if !library::same_but_axis(xs, is, *axis) || dtype(input(1).0) != DType::I64 {
                return false;
            }
            let (_, lx, inner) = library::split_axis(xs, *axis);
            let li = is[*axis];
            if lx == 0 {
                // Every index is out of range: the reference arm reports the first.
                return false;
            }
            let index: &[i64] = unsafe { part(ctx, input(1).0, out_n) };
            macro_rules! gather_as {
                ($t:ty) => {
                    float_case!($t, |x, out| {
                        library::par_units(pool, out, li * inner, out_n, |first, o| {
                            let rows = o.len() / (li * inner).max(1);
                            let x = &x[first * lx * inner..][..rows * lx * inner];
                            let index = &index[first * li * inner..][..o.len()];
                            library::gather(x, index, o, (rows, lx, li, inner)).is_some()
                        })
                        .then_some(())
                    })
                };
            }
            match dtype(lib.out) {
                DType::F32 => gather_as!(f32),
                DType::F64 => gather_as!(f64),
                _ => false,
            }
        }
        Op::ScatterAdd { axis } => {
            let (xs, is) = (&input(0).1, &input(1).1);
            if !library::same_but_axis(xs, is, *axis) || dtype(input(1).0) != DType::I64 {
                return false;
            }
            let (_, lx, inner) = library::split_axis(xs, *axis);
            let li = is[*axis];
            let m = numel(is);
            if out_n == 0 && m != 0 {
                // An empty output splits into no units, so no index would be checked:
                // the reference arm checks (and reports) them.
                return false;
            }
            let index: &[i64] = unsafe { part(ctx, input(1).0, m) };
            macro_rules! scatter_as {
                ($t:ty) => {{
                    let src: &[$t] = unsafe { part(ctx, input(2).0, m) };
                    float_case!($t, |x, out| {
                        library::par_units(pool, out, lx * inner, out_n + m, |first, o| {
                            let rows = o.len() / (lx * inner).max(1);
                            let x = &x[first * lx * inner..][..o.len()];
                            let at = first * li * inner..(first + rows) * li * inner;
                            let (index, src) = (&index[at.clone()], &src[at]);
                            library::scatter_add(x, index, src, o, (rows, lx, li, inner)).is_some()
                        })
                        .then_some(())
                    })
                }};
            }
            match dtype(lib.out) {
                DType::F32 => scatter_as!(f32),
                DType::F64 => scatter_as!(f64),
                _ => false,
            }
        }
        // Dropout's uniforms: the batched Threefry, split over the threads in blocks
        // (each element's value depends only on the key and its index).
        Op::Random {
            dist: aotgrad_ir::Distribution::Uniform,
            ..
        } => {
            if dtype(input(0).0) != DType::I64 || numel(&input(0).1) != 1 {
                return false;
            }
            let key: i64 = unsafe { part::<i64>(ctx, input(0).0, 1) }[0];
            const BLOCK: usize = 4096;
            macro_rules! uniform_as {
                ($t:ty) => {{
                    let out: &mut [$t] = unsafe { part_mut(ctx, lib.out, out_n) };
                    let (whole, tail) = out.split_at_mut(out_n / BLOCK * BLOCK);
                    library::par_units(pool, whole, BLOCK, out_n * 16, |first, o| {
                        super::simd::uniform_fill(key, first * BLOCK, o);
                        true
                    });
                    super::simd::uniform_fill(key, out_n / BLOCK * BLOCK, tail);
                    true
                }};
            }
            match dtype(lib.out) {
                DType::F32 => uniform_as!(f32),
                DType::F64 => uniform_as!(f64),
                _ => false,
            }
        }
        // In a group of one the reduction is the value: a block copy, as a concat of
        // one operand (a group of more starts it on the group's thread instead, in
        // `run_kernel`).
        // SAFETY (both arms): the function's contract.
        Op::AllReduce { .. } if ctx.background.is_none() => unsafe { block_concat(ctx, lib, 0) },
        // A gradient bucket is a concat of flattened gradients (the reference arm
        // builds the value element by element: 4.7 ms of a 1.3 ms step for 218k
        // floats); here each operand's rows are block copies.
        Op::Concat { axis } => unsafe { block_concat(ctx, lib, *axis) },
        _ => false,
    }
}

/// `lib`'s operands joined along `axis` into its output by block copies; `false` for
/// operands of another dtype than the output's.
///
/// # Safety
/// As [`native_library`].
unsafe fn block_concat(ctx: &Ctx<'_>, lib: &LibraryKernel, axis: usize) -> bool {
    let dtype = |b: BufferId| ctx.program.buffer(b).dtype;
    if lib.inputs.iter().any(|(b, _)| dtype(*b) != dtype(lib.out)) {
        return false;
    }
    let out_n: usize = lib.shape.iter().product();
    let outer: usize = lib.shape[..axis].iter().product();
    let row = out_n.checked_div(outer).unwrap_or(0);
    macro_rules! concat_as {
        ($t:ty) => {{
            // SAFETY: the caller's contract: dense operands of their shapes and an
            // output that overlaps none of them.
            let out: &mut [$t] = unsafe { part_mut(ctx, lib.out, out_n) };
            let mut at = 0;
            for (b, shape) in &lib.inputs {
                let n: usize = shape.iter().product();
                let inner = n.checked_div(outer).unwrap_or(0);
                let x: &[$t] = unsafe { part(ctx, *b, n) };
                for o in 0..outer {
                    out[o * row + at..][..inner].copy_from_slice(&x[o * inner..][..inner]);
                }
                at += inner;
            }
            true
        }};
    }
    match dtype(lib.out) {
        DType::F32 => concat_as!(f32),
        DType::F64 => concat_as!(f64),
        DType::I64 => concat_as!(i64),
        DType::I32 => concat_as!(i32),
        DType::U8 | DType::Bool => concat_as!(u8),
    }
}

/// The first `n` elements of buffer `id`.
///
/// # Safety
/// As [`slice`], and `n` must not exceed the buffer's element count.
unsafe fn part<'a, T>(ctx: &Ctx<'a>, id: BufferId, n: usize) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { &slice::<T>(ctx, id)[..n] }
}

/// The first `n` elements of buffer `id`, writable.
///
/// # Safety
/// `bufs[id]` must be valid for `n` elements of `T`'s dtype, with no other reference to
/// them alive while the slice lives.
unsafe fn part_mut<'a, T>(ctx: &Ctx<'a>, id: BufferId, n: usize) -> &'a mut [T] {
    assert!(n <= ctx.program.buffer(id).elems, "within the buffer");
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(ctx.bufs[id.index()] as *mut T, n) }
}

/// Matmul kernel `kernel` and its fused epilogue, if any (see `EpilogueSchedule`).
///
/// # Safety
/// As [`matmul::matmul`], with the buffers of `ctx`.
unsafe fn run_matmul<T: Real>(
    ctx: &Ctx<'_>,
    kernel: usize,
    mm: &aotgrad_compiler::lower::MatMulKernel,
) {
    let epilogue = ctx.epilogues.get(kernel).and_then(Option::as_ref);
    let bufs = ctx.bufs.as_ptr();
    let table = Table(bufs);
    let call = |f: LoopFn, lo: i64, hi: i64| {
        let job = Split {
            f,
            bufs: { table }.0,
        };
        // SAFETY: `f` is this kernel's epilogue function, generated for this program's
        // buffer table; [lo, hi) is inside its split axis (see `EpilogueSchedule`), and
        // the elements it writes are disjoint from those of every other call made
        // while it runs (other tiles' or batches' blocks).
        unsafe { (job.f)(job.bufs, lo, hi) };
    };
    let per_tile = |i: usize| {
        if let Some(Epilogue {
            schedule: EpilogueSchedule::PerTile(tiles),
            fns,
        }) = epilogue
        {
            call(fns[i], 0, tiles[i].1);
        }
    };
    let per_batch = |bi: usize| {
        if let Some(Epilogue {
            schedule: EpilogueSchedule::PerBatch { len, batches },
            fns,
        }) = epilogue
        {
            let b = *batches as i64;
            call(fns[0], bi as i64 * len / b, (bi as i64 + 1) * len / b);
        }
    };
    let r = mm.batch.len();
    let (a, b) = (&mm.a.1, &mm.b.1);
    let base = BatchPtrs {
        a: ctx.bufs[mm.a.0.index()] as *const T,
        b: ctx.bufs[mm.b.0.index()] as *const T,
        c: ctx.bufs[mm.c.index()] as *mut T,
    };
    let mut jobs = Vec::with_capacity(mm.batch.iter().product());
    for_each_index(&mm.batch, |idx, bi| {
        jobs.push((affine_offset(a, idx), affine_offset(b, idx), bi));
    });
    let tiles = ctx.matmul_tiles;
    let gemm_ns = ctx.profile.map(|_| AtomicU64::new(0));
    let one = |&(oa, ob, bi): &(i64, i64, usize), pool: Option<&rayon::ThreadPool>| {
        let p = base;
        // SAFETY: offsets come from bounds-checked affine accesses; batch `bi` writes
        // its own `m x n` block of `c`.
        unsafe {
            matmul::matmul(
                mm.m,
                mm.n,
                mm.k,
                Operand {
                    ptr: p.a.offset(oa as isize),
                    rs: a.strides[r] as isize,
                    cs: a.strides[r + 1] as isize,
                },
                Operand {
                    ptr: p.b.offset(ob as isize),
                    rs: b.strides[r] as isize,
                    cs: b.strides[r + 1] as isize,
                },
                p.c.add(bi * mm.m * mm.n),
                matmul::Parallel {
                    pool,
                    tiles,
                    after_tile: &per_tile,
                    gemm_ns: gemm_ns.as_ref(),
                },
            );
        }
        per_batch(bi);
    };
    match ctx.pool {
        // Many small products (a convolution's per-sample GEMMs): threads take whole
        // products, each cut into the same shape-determined tiles as with one thread,
        // so the result does not depend on the thread count; splitting each small
        // product across threads instead measured slower than one thread.
        Some(pool) if jobs.len() > 1 => {
            use rayon::prelude::*;
            pool.install(|| jobs.par_iter().for_each(|j| one(j, None)));
        }
        pool => jobs.iter().for_each(|j| one(j, pool)),
    }
    if let (Some(p), Some(ns)) = (ctx.profile, gemm_ns)
        && let Some(t) = p.borrow_mut().gemm.get_mut(kernel)
    {
        *t += std::time::Duration::from_nanos(ns.into_inner());
    }
    if let Some(Epilogue {
        schedule: EpilogueSchedule::After { len },
        fns,
    }) = epilogue
    {
        // SAFETY: as `call`: the whole epilogue, after every product has finished.
        unsafe { run_split(ctx.pool, Split { f: fns[0], bufs }, *len) };
    }
}

/// Base pointers of a batched matmul's operands, shared by the pool's workers.
struct BatchPtrs<T> {
    a: *const T,
    b: *const T,
    c: *mut T,
}

impl<T> Clone for BatchPtrs<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for BatchPtrs<T> {}

// SAFETY: workers only read `a` and `b` (never written during the product) and write
// disjoint `m x n` blocks of `c` (one per batch index).
unsafe impl<T> Send for BatchPtrs<T> {}
unsafe impl<T> Sync for BatchPtrs<T> {}

/// The buffer table of the running call, shared with the pool's workers.
#[derive(Clone, Copy)]
struct Table(*const *mut u8);

// SAFETY: the table is only read, while the call that owns it waits for the workers.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

/// A generated loop kernel: computes `[lo, hi)` of its first axis.
pub(crate) type LoopFn = unsafe extern "C" fn(*const *mut u8, i64, i64);

/// The buffer table and kernel, handed to the pool's workers.
#[derive(Clone, Copy)]
struct Split {
    f: LoopFn,
    bufs: *const *mut u8,
}

// SAFETY: the pointers are only used while `aotgrad_parallel` waits for every worker
// (a rayon scope), and the workers write disjoint index ranges of the kernel's outputs
// (plain loop kernels write each element once, at an index a function of its position).
unsafe impl Send for Split {}
unsafe impl Sync for Split {}

/// Runs loop kernel `f` over `[0, n)` of its first axis, split into one contiguous
/// range per pool thread (boundaries rounded to 16 elements). Elementwise kernels give
/// the same values whichever call computes an element, so the result does not depend
/// on the thread count.
///
/// # Safety
/// `ctx` and `bufs` as in [`aotgrad_kernel`]; `f` is a kernel of this program that is
/// not a reduction, and `n` its `split_len`.
pub(crate) unsafe extern "C" fn aotgrad_parallel(
    ctx: *const Ctx<'_>,
    f: LoopFn,
    bufs: *const *mut u8,
    n: i64,
) {
    // SAFETY: as in `aotgrad_kernel`.
    let ctx = unsafe { &*ctx };
    // SAFETY: the caller's contract.
    unsafe { run_split(ctx.pool, Split { f, bufs }, n) };
}

/// Runs `job` over `[0, n)`, one contiguous range per thread of `pool`.
///
/// # Safety
/// As [`aotgrad_parallel`].
unsafe fn run_split(pool: Option<&rayon::ThreadPool>, job: Split, n: i64) {
    let Some(pool) = pool else {
        // SAFETY: the whole range, on this thread.
        unsafe { (job.f)(job.bufs, 0, n) };
        return;
    };
    let parts = pool.current_num_threads().max(1) as i64;
    let bound = |p: i64| {
        if p == parts { n } else { (n * p / parts) & !15 }
    };
    pool.scope(|s| {
        for p in 0..parts {
            let (lo, hi) = (bound(p), bound(p + 1));
            if lo < hi {
                s.spawn(move |_| {
                    let job = job;
                    // SAFETY: see `Split`; [lo, hi) is inside [0, n).
                    unsafe { (job.f)(job.bufs, lo, hi) };
                });
            }
        }
    });
}

/// Check-numerics mode: reports the first NaN/Inf in kernel `k`'s output.
///
/// # Safety
/// As [`aotgrad_kernel`].
pub(crate) unsafe extern "C" fn aotgrad_check(
    ctx: *const Ctx<'_>,
    k: usize,
    _bufs: *const *mut u8,
) -> i32 {
    // SAFETY: as in `aotgrad_kernel`.
    let ctx = unsafe { &*ctx };
    guarded(ctx, k, || check_kernel(ctx, k))
}

/// [`aotgrad_check`]'s body: the buffers it reads were just written by kernel `k`.
fn check_kernel(ctx: &Ctx<'_>, k: usize) -> i32 {
    let kernel = &ctx.program.kernels[k];
    // A merged loop or a fused epilogue names the node of the output that went bad.
    for (out, node) in kernel.output_nodes() {
        let bad = match ctx.program.buffer(out).dtype {
            // SAFETY: the kernel just wrote this buffer; nothing writes it concurrently.
            DType::F32 => unsafe { slice::<f32>(ctx, out) }
                .iter()
                .map(|&x| x as f64)
                .find(|x| !x.is_finite()),
            DType::F64 => unsafe { slice::<f64>(ctx, out) }
                .iter()
                .copied()
                .find(|x| !x.is_finite()),
            _ => None,
        };
        if let Some(value) = bad {
            *ctx.error.borrow_mut() = Some(RunError::NonFinite {
                node,
                op: ctx.graph.node(node).op.name(),
                value,
            });
            return 1;
        }
    }
    0
}

/// Kernel `k` of the step starts (or, at the kernel count, the step ends): the entry
/// function calls this around every kernel when compiled with `CpuOptions::profile`.
///
/// # Safety
/// `ctx` is the context the entry function received (valid for the whole call); it is
/// called from the thread running the entry function only.
pub(crate) unsafe extern "C" fn aotgrad_mark(ctx: *const Ctx<'_>, k: usize) {
    // SAFETY: the function's contract.
    let ctx = unsafe { &*ctx };
    if let Some(p) = ctx.profile {
        p.borrow_mut().mark(k);
    }
}

/// Every helper of `aotgrad_compiler::codegen::helpers::all` (the list the code
/// generator declares), with its address: the runtime's own four and the math
/// functions of [`super::math`].
pub(crate) fn symbols() -> Vec<(String, *const u8)> {
    aotgrad_compiler::codegen::helpers::all()
        .into_iter()
        .map(|h| {
            let ptr = match h {
                Helper::Kernel => aotgrad_kernel as *const u8,
                Helper::Check => aotgrad_check as *const u8,
                Helper::Parallel => aotgrad_parallel as *const u8,
                Helper::Mark => aotgrad_mark as *const u8,
                Helper::Unary(u, d) => super::math::unary(u, d),
                Helper::Binary(b, d) => super::math::binary(b, d),
            };
            (h.name(), ptr)
        })
        .collect()
}

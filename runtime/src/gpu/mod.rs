//! The GPU backend: a graph is lowered exactly as for the CPU (`aotgrad_compiler::lower`),
//! each kernel is emitted as a WGSL compute shader (`aotgrad_compiler::codegen::wgsl`)
//! and the whole step is recorded into one command encoder and submitted once.
//!
//! Parameters and optimizer state live in a [`DeviceStore`] across calls and are
//! updated in place by the kernels; each call uploads its inputs, and reads back only
//! the outputs the caller asks for ([`Fetch`]) plus three status words (an
//! out-of-range gather or scatter index is an error, not wrong numbers).

mod device;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aotgrad_compiler::codegen::wgsl::{self, Mem, WgslLimits, WgslProgram};
use aotgrad_compiler::lower::{self, BufferId, BufferKind, Program};
use aotgrad_compiler::program::OutputSpec;
use aotgrad_ir::{Graph, Op, verify};

pub use device::{DeviceStore, GpuContext, context};

use crate::Tensor;
use crate::interp::{Evaluation, RunError, SymbolEnv};
use crate::leaf::{self, Leaf, LeafKind};
use crate::variants::Variants;

/// Which outputs a call reads back.
#[derive(Debug, Clone, Copy)]
pub enum Fetch<'a> {
    All,
    Only(&'a [&'a str]),
}

impl Fetch<'_> {
    fn wants(&self, name: &str) -> bool {
        match self {
            Fetch::All => true,
            Fetch::Only(names) => names.contains(&name),
        }
    }
}

/// One compiled specialisation (a binding of the symbols).
pub struct GpuVariant {
    program: Program,
    wgsl: WgslProgram,
    pipelines: Vec<Option<wgpu::ComputePipeline>>,
    arena: wgpu::Buffer,
    status: wgpu::Buffer,
    /// Device buffers of constants and of this variant's inputs.
    owned: HashMap<BufferId, wgpu::Buffer>,
    /// Bind groups for the store generation they were built against.
    bind_groups: Option<(u64, Vec<Option<wgpu::BindGroup>>)>,
    compile_ms: f64,
}

impl GpuVariant {
    /// The lowered program (kernels, buffers, memory plan) this variant runs.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The WGSL of every kernel, with bindings and dispatch sizes.
    pub fn wgsl(&self) -> &WgslProgram {
        &self.wgsl
    }

    /// Wall time of lowering + WGSL generation + pipeline creation.
    pub fn compile_ms(&self) -> f64 {
        self.compile_ms
    }
}

/// A graph compiled for the GPU.
pub struct GpuProgram {
    graph: Graph,
    leaves: Vec<Leaf>,
    ctx: Arc<GpuContext>,
    variants: Variants<GpuVariant>,
    /// A binding limit below the adapter's (see [`GpuProgram::limit_binding_bytes`]).
    binding_limit: Option<u64>,
}

impl GpuProgram {
    /// Prepares `graph` for the GPU (the adapter is opened here, so a machine without
    /// one fails now with [`RunError::NoDevice`]).
    pub fn new(graph: &Graph) -> Result<GpuProgram, RunError> {
        verify(graph).map_err(RunError::Invalid)?;
        let leaves = leaf::leaves(graph);
        Ok(GpuProgram {
            graph: graph.clone(),
            leaves,
            ctx: context()?,
            variants: Variants::default(),
            binding_limit: None,
        })
    }

    /// Compiles as if the adapter's storage binding limit were `bytes` (when lower):
    /// larger tensors and arenas are then bound through windows, kernels split into
    /// blocks. This runs programs the way an adapter with WebGPU's default 128 MiB
    /// limit (a browser) would, and lets tests exercise the splitting with small
    /// tensors. Drops the variants compiled so far.
    pub fn limit_binding_bytes(&mut self, bytes: u64) {
        self.binding_limit = Some(bytes);
        self.variants.clear();
    }

    /// The variant for `env` lowered again pass by pass, as it was compiled:
    /// [`lower::lower_pass_by_pass`] with [`wgsl::lower_options`].
    pub fn lowered_pass_by_pass(&self, env: &SymbolEnv) -> Result<String, RunError> {
        lower::lower_pass_by_pass(&self.graph, env, wgsl::lower_options(), None)
            .map(|(_, text)| text)
            .map_err(crate::leaf::lower_error)
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Whether the program has an input leaf called `name`.
    pub fn has_input(&self, name: &str) -> bool {
        crate::leaf::has_input(&self.leaves, name)
    }

    /// The variant the last call ran.
    pub fn last_variant(&self) -> Option<&GpuVariant> {
        self.variants.last()
    }

    /// Compiles (or finds) the variant for `env` without running it.
    pub fn variant(&mut self, env: &SymbolEnv) -> Result<&GpuVariant, RunError> {
        let i = self.variant_index(env)?;
        Ok(self.variants.get(i))
    }

    fn variant_index(&mut self, env: &SymbolEnv) -> Result<usize, RunError> {
        let mut variants = std::mem::take(&mut self.variants);
        let i = variants.index(env, |env| self.compile(env));
        self.variants = variants;
        i
    }

    fn compile(&self, env: &SymbolEnv) -> Result<GpuVariant, RunError> {
        let t0 = Instant::now();
        let program = lower::lower(&self.graph, env, wgsl::lower_options())
            .map_err(crate::leaf::lower_error)?;
        program.check_bounds().map_err(RunError::OutOfBounds)?;
        for u in &program.updates {
            if let Some((src, at)) = &u.source
                && !at.is_contiguous(&u.shape)
            {
                return Err(RunError::Unsupported {
                    backend: "GPU",
                    what: format!(
                        "the update of {:?} reading {src} through a strided view",
                        u.name
                    ),
                });
            }
        }
        let limits = &self.ctx.limits;
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(self.binding_limit.unwrap_or(u64::MAX));
        let wl = WgslLimits {
            max_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_storage_buffer_binding_size: max_binding,
            min_storage_buffer_offset_alignment: limits.min_storage_buffer_offset_alignment,
        };
        let wgsl = wgsl::emit(&program, &self.graph, wl).map_err(RunError::Wgsl)?;
        // Larger than a binding is fine (kernels bind windows); larger than a buffer is not.
        let max_buffer = limits.max_buffer_size;
        for b in &program.buffers {
            let bytes = (b.elems * 4) as u64;
            if bytes > max_buffer {
                return Err(RunError::DeviceLimit {
                    what: b.node.map(|n| n.to_string()).unwrap_or_default(),
                    bytes,
                    limit: max_buffer,
                });
            }
        }
        if (wgsl.arena_words * 4) as u64 > max_buffer {
            return Err(RunError::DeviceLimit {
                what: "the activation arena".into(),
                bytes: (wgsl.arena_words * 4) as u64,
                limit: max_buffer,
            });
        }
        let ctx = &self.ctx;
        let mut pipelines = Vec::with_capacity(wgsl.kernels.len());
        for k in &wgsl.kernels {
            if k.workgroups.contains(&0) {
                pipelines.push(None);
                continue;
            }
            let what = format!("compiling {} ({}) for the GPU", k.name, k.node);
            let p = ctx.checked(&what, || {
                let module = ctx
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&k.name),
                        source: wgpu::ShaderSource::Wgsl(k.source.as_str().into()),
                    });
                ctx.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&k.name),
                        layout: None,
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })?;
            pipelines.push(Some(p));
        }
        let mut owned = HashMap::new();
        for (i, b) in program.buffers.iter().enumerate() {
            let id = BufferId(i as u32);
            match &b.kind {
                BufferKind::Const(data) => {
                    let t = Tensor::new(&[data.len()], data.clone()).expect("dense");
                    let words = device::to_words("a constant", &t)?;
                    let buf = ctx.storage("const", words.len());
                    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                    if !bytes.is_empty() {
                        ctx.queue.write_buffer(&buf, 0, &bytes);
                    }
                    owned.insert(id, buf);
                }
                BufferKind::Input(name) => {
                    owned.insert(id, ctx.storage(name, b.elems));
                }
                // Spans exist only in programs lowered for a CPU parameter arena, which
                // WGSL emission refuses above.
                BufferKind::Persistent(_)
                | BufferKind::PersistentSpan(_)
                | BufferKind::Arena { .. } => {}
            }
        }
        Ok(GpuVariant {
            arena: ctx.storage("arena", wgsl.arena_words),
            status: ctx.storage("status", 4),
            program,
            wgsl,
            pipelines,
            owned,
            bind_groups: None,
            compile_ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    fn bind(&self, store: &DeviceStore, inputs: &[(&str, &Tensor)]) -> Result<SymbolEnv, RunError> {
        leaf::bind(&self.leaves, |l| match l.kind {
            LeafKind::Input => inputs
                .iter()
                .find(|(n, _)| *n == l.name)
                .map(|(_, t)| (t.dtype(), t.shape().to_vec())),
            LeafKind::Persistent => store.ty(&l.name).map(|(d, s)| (d, s.to_vec())),
        })
    }

    /// Runs the program: inputs by name, parameters and state from `store` (updated in
    /// place on the device). Returns the outputs `fetch` names; updates stay on the
    /// device (read them with [`DeviceStore::download`]).
    pub fn run(
        &mut self,
        store: &mut DeviceStore,
        inputs: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError> {
        for (name, _) in inputs {
            if !self.has_input(name) {
                return Err(RunError::Unknown {
                    name: name.to_string(),
                });
            }
        }
        let env = self.bind(store, inputs)?;
        let idx = self.variant_index(&env)?;
        self.variants.ran(idx);
        let ctx = self.ctx.clone();
        let graph = &self.graph;
        let v = self.variants.get_mut(idx);
        upload_inputs(&ctx, v, inputs)?;
        // Bind groups, rebuilt only when the store's buffers changed.
        if v.bind_groups
            .as_ref()
            .is_none_or(|(g, _)| *g != store.generation)
        {
            let groups = build_bind_groups(&ctx, v, store)?;
            v.bind_groups = Some((store.generation, groups));
        }
        let groups = &v.bind_groups.as_ref().expect("built above").1;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("aotgrad step"),
            });
        encoder.clear_buffer(&v.status, 0, None);
        record_dispatches(&mut encoder, v, groups);
        stage_updates(&ctx, &mut encoder, v, store);
        let memory = |m: Mem| memory_of(v, store, m);
        // Read-back: the status words and the wanted outputs.
        let mut ranges = vec![(&v.status, 0usize, 3usize)];
        let mut wanted = Vec::new();
        for o in &v.program.outputs {
            if !fetch.wants(&o.name) {
                continue;
            }
            let (m, _) = wgsl::placement(&v.program, o.buf);
            let (lo, hi) = wgsl::word_extent(&v.program, o.buf, &o.at, &o.shape);
            let n = if o.shape.contains(&0) { 0 } else { hi - lo + 1 };
            ranges.push((memory(m), lo, n));
            wanted.push((o, lo));
        }
        let words = ctx.read_words(&ranges, Some(encoder))?;
        if words[0][0] != 0 {
            let code = words[0][0];
            // A fused kernel's checked index names its gather or scatter; a library
            // kernel's code is its index + 1.
            let id = if code & wgsl::FAULT_NODE != 0 {
                aotgrad_ir::NodeId((code & !wgsl::FAULT_NODE) as u32)
            } else {
                v.program.kernels[code as usize - 1].node
            };
            return Err(RunError::IndexOutOfRange {
                node: id,
                op: graph.node(id).op.name(),
                index: words[0][1] as i32 as i64,
                size: words[0][2] as usize,
            });
        }
        let outputs = wanted
            .into_iter()
            .zip(&words[1..])
            .map(|((o, lo), w)| (o.name.clone(), output_from_words(v, o, lo, w)))
            .collect();
        Ok(Evaluation {
            outputs,
            updates: Vec::new(),
        })
    }
}

/// Writes each input tensor into its device buffer (as 32-bit words).
fn upload_inputs(
    ctx: &GpuContext,
    v: &GpuVariant,
    inputs: &[(&str, &Tensor)],
) -> Result<(), RunError> {
    for (i, b) in v.program.buffers.iter().enumerate() {
        if let BufferKind::Input(name) = &b.kind {
            let t = inputs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .expect("bound above");
            let words = device::to_words(name, t)?;
            if !words.is_empty() {
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                ctx.queue
                    .write_buffer(&v.owned[&BufferId(i as u32)], 0, &bytes);
            }
        }
    }
    Ok(())
}

/// One compute pass: every kernel's dispatch in schedule order.
fn record_dispatches(
    encoder: &mut wgpu::CommandEncoder,
    v: &GpuVariant,
    groups: &[Option<wgpu::BindGroup>],
) {
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&v.program.name),
            timestamp_writes: None,
        });
        for ((k, p), g) in v.wgsl.kernels.iter().zip(&v.pipelines).zip(groups) {
            let (Some(p), Some(g)) = (p, g) else { continue };
            pass.set_pipeline(p);
            pass.set_bind_group(0, g, &[]);
            let [x, y, z] = k.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }
}

/// Staged updates (the lowering writes most in place): all sources are copied out
/// before any target is written, as one may read another's target.
fn stage_updates(
    ctx: &GpuContext,
    encoder: &mut wgpu::CommandEncoder,
    v: &GpuVariant,
    store: &DeviceStore,
) {
    let memory = |m: Mem| memory_of(v, store, m);
    let mut staged = Vec::new();
    for u in &v.program.updates {
        let Some((src, at)) = &u.source else { continue };
        let n: usize = u.shape.iter().product();
        let (m, base) = wgsl::placement(&v.program, *src);
        let tmp = ctx.storage("staged update", n);
        if n > 0 {
            let from = ((base as i64 + at.offset) * 4) as u64;
            encoder.copy_buffer_to_buffer(memory(m), from, &tmp, 0, (n * 4) as u64);
        }
        staged.push((u.target, tmp, n));
    }
    for (target, tmp, n) in &staged {
        if *n > 0 {
            let (m, base) = wgsl::placement(&v.program, *target);
            encoder.copy_buffer_to_buffer(tmp, 0, memory(m), (base * 4) as u64, (*n * 4) as u64);
        }
    }
}

/// Output `o` from the words read back from its extent (starting at word `lo`),
/// following its strided view.
fn output_from_words(v: &GpuVariant, o: &OutputSpec, lo: usize, w: &[u32]) -> Tensor {
    let n: usize = o.shape.iter().product();
    let (_, base) = wgsl::placement(&v.program, o.buf);
    let mut idx = Vec::with_capacity(n);
    let mut pos = vec![0usize; o.shape.len()];
    for _ in 0..n {
        let off = base as i64
            + o.at.offset
            + pos
                .iter()
                .zip(&o.at.strides)
                .map(|(&p, &s)| p as i64 * s)
                .sum::<i64>();
        idx.push(w[(off as usize) - lo]);
        for d in (0..pos.len()).rev() {
            pos[d] += 1;
            if pos[d] < o.shape[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    device::from_words(&idx, o.dtype, &o.shape)
}

/// The device buffer behind a WGSL memory: the arena, the status words, or a buffer
/// of the program (its own, or the store's for persistent tensors).
fn memory_of<'a>(v: &'a GpuVariant, store: &'a DeviceStore, m: Mem) -> &'a wgpu::Buffer {
    match m {
        Mem::Arena => &v.arena,
        Mem::Status => &v.status,
        Mem::Buffer(b) => buffer_of(v, store, b),
    }
}

fn buffer_of<'a>(v: &'a GpuVariant, store: &'a DeviceStore, b: BufferId) -> &'a wgpu::Buffer {
    match &v.program.buffer(b).kind {
        BufferKind::Persistent(name) => &store.tensors[name].buffer,
        BufferKind::Arena { .. } => &v.arena,
        _ => &v.owned[&b],
    }
}

fn build_bind_groups(
    ctx: &GpuContext,
    v: &GpuVariant,
    store: &DeviceStore,
) -> Result<Vec<Option<wgpu::BindGroup>>, RunError> {
    let mut groups = Vec::with_capacity(v.pipelines.len());
    for (k, p) in v.wgsl.kernels.iter().zip(&v.pipelines) {
        let Some(p) = p else {
            groups.push(None);
            continue;
        };
        let entries: Vec<wgpu::BindGroupEntry<'_>> = k
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let buffer = memory_of(v, store, b.mem);
                let resource = match b.window {
                    None => buffer.as_entire_binding(),
                    Some(w) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer,
                        offset: (w.start * 4) as u64,
                        size: wgpu::BufferSize::new((w.words * 4) as u64),
                    }),
                };
                wgpu::BindGroupEntry {
                    binding: i as u32,
                    resource,
                }
            })
            .collect();
        let g = ctx.checked(&format!("binding {} ({})", k.name, k.node), || {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&k.name),
                layout: &p.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        groups.push(Some(g));
    }
    Ok(groups)
}

/// The environment variable that makes a missing GPU adapter an error in the test
/// suites (CI sets it, after installing Mesa's software Vulkan driver).
pub const REQUIRE_ENV: &str = "AOTGRAD_REQUIRE_GPU";

/// For test suites: `true` when a GPU adapter exists (a software one counts). Without
/// one, the GPU checks are skipped with one line on stderr per test process saying
/// what was skipped and how to enable it, unless [`REQUIRE_ENV`] is `1`: then the
/// missing adapter is an error, so CI cannot pass by silently skipping the GPU.
pub fn available_for_tests() -> Result<bool, RunError> {
    match context() {
        Ok(_) => Ok(true),
        Err(e) if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") => Err(e),
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                // Straight to the process's stderr: the test harness captures
                // `eprintln!` of passing tests, and this line must be seen.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping GPU checks: {e} ({REQUIRE_ENV}=1 makes this an error)"
                );
            });
            Ok(false)
        }
    }
}

/// Runs `graph` once on the GPU with the interpreter's interface: every input,
/// parameter and state in `feeds`; the new values of updated tensors come back in
/// [`Evaluation::updates`].
pub fn run_once(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<Evaluation, RunError> {
    run_once_with(graph, feeds, None)
}

/// [`run_once`] with the storage binding limit lowered to `binding_bytes` (see
/// [`GpuProgram::limit_binding_bytes`]).
pub fn run_once_with(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    binding_bytes: Option<u64>,
) -> Result<Evaluation, RunError> {
    let mut prog = GpuProgram::new(graph)?;
    if let Some(bytes) = binding_bytes {
        prog.limit_binding_bytes(bytes);
    }
    let mut store = DeviceStore::new()?;
    let (inputs, persistent) = leaf::split_feeds(graph, feeds)?;
    for (name, t) in persistent {
        store.upload(name, t)?;
    }
    let mut ev = prog.run(&mut store, &inputs, Fetch::All)?;
    let mut names: Vec<&str> = graph
        .updates()
        .iter()
        .map(|(t, _)| leaf_name(graph, *t))
        .collect();
    names.sort_unstable();
    names.dedup();
    ev.updates = store.download(&names)?;
    Ok(ev)
}

fn leaf_name(g: &Graph, id: aotgrad_ir::NodeId) -> &str {
    match &g.node(id).op {
        Op::Param { name, .. } | Op::State { name, .. } | Op::Input { name, .. } => name,
        _ => "",
    }
}

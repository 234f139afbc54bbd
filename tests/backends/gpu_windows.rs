//! Tensors and arenas larger than the adapter's storage binding limit (issue 7): the
//! GPU backend binds them through windows and splits the kernels that touch them into
//! blocks of their iteration space (`aotgrad_compiler::codegen::windows`).
//!
//! Real adapters allow 128 MiB to 4 GiB per binding, so these tests lower the limit
//! (`GpuProgram::limit_binding_bytes`) to make small tensors exceed it, and compare
//! with the same program under the adapter's own limit and with the interpreter. The
//! structural checks (every window within the limit, blocks that accumulate) read the
//! emitted WGSL and need no adapter.

use std::collections::HashMap;

use aotgrad::compiler::codegen::wgsl::{self, Mem, WgslLimits, WgslProgram};
use aotgrad::compiler::lower::{self, SymbolEnv};
use aotgrad::prelude::*;
use aotgrad::runtime::gpu;
use aotgrad::{Evaluation, RunError};

fn gpu_on() -> bool {
    gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
}

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 500.0 - 2.0)
        .collect()
}

/// The WGSL of `graph` with `binding` bytes per storage binding.
fn emit_with(graph: &Graph, feeds: &HashMap<String, Tensor>, binding: u64) -> WgslProgram {
    let mut env = SymbolEnv::new();
    for (name, id) in graph.inputs() {
        let shape = graph.node(id).ty.shape.clone();
        let got = feeds
            .get(name)
            .unwrap_or_else(|| panic!("no feed for the input {name:?}"))
            .shape()
            .to_vec();
        for (d, n) in shape.dims().iter().zip(got) {
            if let Dim::Sym(sym) = d {
                env.insert(sym.clone(), n);
            }
        }
    }
    let program = lower::lower(graph, &env, wgsl::lower_options()).unwrap();
    let limits = WgslLimits {
        max_storage_buffer_binding_size: binding,
        min_storage_buffer_offset_alignment: 256,
        ..WgslLimits::default()
    };
    wgsl::emit(&program, graph, limits).unwrap()
}

/// Every window lies within the limit and starts aligned; returns how many dispatches
/// bind a window and how many combine with earlier blocks' results.
fn check_windows(w: &WgslProgram, binding: u64) -> (usize, usize) {
    let (mut windowed, mut accumulating) = (0, 0);
    for k in &w.kernels {
        let mut any = false;
        for b in &k.bindings {
            if let Some(win) = b.window {
                any = true;
                assert!(
                    (win.words * 4) as u64 <= binding,
                    "{}: window of {} words",
                    k.name,
                    win.words
                );
                assert_eq!(win.start % 64, 0, "{}: unaligned window", k.name);
                assert_ne!(b.mem, Mem::Status);
            }
        }
        // WebGPU forbids a written binding that aliases another.
        for (i, a) in k.bindings.iter().enumerate() {
            for b in &k.bindings[i + 1..] {
                if let (Some(x), Some(y)) = (a.window, b.window)
                    && a.mem == b.mem
                {
                    let apart = x.start + x.words <= y.start || y.start + y.words <= x.start;
                    assert!(apart, "{}: windows {x:?} and {y:?} overlap", k.name);
                }
            }
        }
        windowed += any as usize;
        // A block past the start of a cut reduced axis combines what it read from its
        // output (`...]) + acc`, `fmax_(...]), red[0])`) with its own result.
        let combines = ["]) + acc", "]) + red[0]", "]), acc)", "]), red[0])"];
        accumulating += combines.iter().any(|c| k.source.contains(c)) as usize;
    }
    (windowed, accumulating)
}

fn assert_close(want: &Evaluation, got: &Evaluation, rtol: f64, what: &str) {
    assert!(!want.outputs.is_empty());
    for (name, _) in &want.outputs {
        let (a, b) = (
            want.output(name).unwrap().to_f64_vec(),
            got.output(name).unwrap().to_f64_vec(),
        );
        assert_eq!(a.len(), b.len(), "{what} {name}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= rtol * (1.0 + x.abs()),
                "{what} {name}[{i}]: {x} vs {y}"
            );
        }
    }
    for (name, a) in &want.updates {
        let b = got
            .updates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("{what}: no update {name}"));
        assert!(b.allclose(a, rtol, rtol), "{what} update {name}\n{a}\n{b}");
    }
}

/// Elementwise work, a sum over a cut reduced axis (a tree reduction), a max over the
/// other axis (one invocation per output) and a total: with 64 KiB bindings the
/// 750 KiB input and the arena are bound through windows.
#[test]
fn reductions_and_loops_over_a_tensor_larger_than_a_binding() {
    let g = GraphBuilder::new("big");
    let x = g.input("x", DType::F32, Shape::known(&[64, 3000]));
    let y = (x * 0.5 + 1.0).exp();
    g.output("y", y);
    g.output("rows", y.sum(1, false));
    g.output("cols", x.max(0, false));
    g.output("total", x.sum_all());
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".to_string(),
        // Positive, so the total has no cancellation to magnify a changed order.
        Tensor::from_f32(
            &fill(64 * 3000, 7)
                .iter()
                .map(|v| v + 2.0)
                .collect::<Vec<_>>(),
            &[64, 3000],
        )
        .unwrap(),
    );
    let binding = 64 << 10;
    let split = emit_with(&graph, &feeds, binding);
    let whole = emit_with(&graph, &feeds, 1 << 30);
    assert!(
        split.kernels.len() > 2 * whole.kernels.len(),
        "{} dispatches split vs {} whole",
        split.kernels.len(),
        whole.kernels.len()
    );
    let (windowed, accumulating) = check_windows(&split, binding);
    assert!(windowed >= split.kernels.len() / 2 && accumulating > 0);
    assert_eq!(check_windows(&whole, 1 << 30), (0, 0));
    if !gpu_on() {
        return;
    }
    let interp = aotgrad::run(&graph, &feeds).unwrap();
    let full = gpu::run_once(&graph, &feeds).unwrap();
    let got = gpu::run_once_with(&graph, &feeds, Some(binding)).unwrap();
    assert_close(&interp, &got, 1e-5, "64 KiB bindings vs interpreter");
    // Blocks that do not cut a reduced axis compute what one dispatch computes.
    for name in ["y", "cols"] {
        assert_eq!(got.output(name), full.output(name), "{name}");
    }
}

/// A product whose operand exceeds the binding is cut along `k` (blocks after the
/// first add their partial sums to `c`), and its bias + ReLU epilogue then runs as a
/// pass of its own; a batched product is cut along the batch.
#[test]
fn products_are_cut_along_k_and_the_batch() {
    let g = GraphBuilder::new("mm");
    let a = g.input("a", DType::F32, Shape::known(&[8, 4096]));
    let w = g.input("w", DType::F32, Shape::known(&[4096, 100]));
    let bias = g.input("bias", DType::F32, Shape::known(&[100]));
    g.output("h", (a.matmul(w) + bias).relu());
    let p = g.input("p", DType::F32, Shape::known(&[3, 40, 500]));
    let q = g.input("q", DType::F32, Shape::known(&[3, 500, 60]));
    g.output("pq", p.matmul(q));
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    for (i, (name, shape)) in [
        ("a", vec![8, 4096]),
        ("w", vec![4096, 100]),
        ("bias", vec![100]),
        ("p", vec![3, 40, 500]),
        ("q", vec![3, 500, 60]),
    ]
    .into_iter()
    .enumerate()
    {
        let n = shape.iter().product();
        let scale: Vec<f32> = fill(n, i as u32).iter().map(|v| v / 8.0).collect();
        feeds.insert(name.to_string(), Tensor::from_f32(&scale, &shape).unwrap());
    }
    let binding = 64 << 10;
    let split = emit_with(&graph, &feeds, binding);
    let (windowed, accumulating) = check_windows(&split, binding);
    assert!(
        windowed > 0 && accumulating > 0,
        "{windowed} {accumulating}"
    );
    if !gpu_on() {
        return;
    }
    let interp = aotgrad::run(&graph, &feeds).unwrap();
    let got = gpu::run_once_with(&graph, &feeds, Some(binding)).unwrap();
    assert_close(&interp, &got, 1e-4, "64 KiB bindings vs interpreter");
}

/// The MNIST MLP training step (784-256-64-10, cross entropy, Adam, batch 64) with
/// 256 KiB bindings: the first layer's weights, both moments and gradient (784 KiB
/// each) and the arena are larger than a binding. Three steps agree with the same
/// program bound whole and with the interpreter.
#[test]
fn the_mnist_mlp_step_trains_through_windows() {
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let step = trainer.compile(&Backend::Interpreter).unwrap();
    let graph = step.optimized_step_graph().clone();
    let mut feeds: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in step
        .parameters()
        .iter()
        .cloned()
        .chain(step.optimizer_state())
    {
        feeds.insert(name, t);
    }
    feeds.insert("x".into(), batch.x.clone());
    feeds.insert("y".into(), batch.y.clone());
    feeds.insert("lr".into(), Tensor::from_f64(&[step.lr()], &[]).unwrap());
    let binding = 256 << 10;
    let split = emit_with(&graph, &feeds, binding);
    let whole = emit_with(&graph, &feeds, 1 << 30);
    let (windowed, accumulating) = check_windows(&split, binding);
    eprintln!(
        "MNIST MLP step: {} dispatches bound whole, {} with 256 KiB bindings ({windowed} \
         binding windows, {accumulating} accumulating)",
        whole.kernels.len(),
        split.kernels.len()
    );
    assert!(windowed > 0 && split.kernels.len() > whole.kernels.len());
    if !gpu_on() {
        return;
    }
    let mut states = [feeds.clone(), feeds.clone(), feeds];
    for step in 0..3 {
        let runs = [
            aotgrad::run(&graph, &states[0]).unwrap(),
            gpu::run_once(&graph, &states[1]).unwrap(),
            gpu::run_once_with(&graph, &states[2], Some(binding)).unwrap(),
        ];
        // Six parameters, both Adam moments of each, and the step counter.
        assert_eq!(runs[0].updates.len(), 19, "step {step}");
        assert_close(
            &runs[0],
            &runs[2],
            2e-4,
            &format!("step {step}: split vs interpreter"),
        );
        assert_close(
            &runs[1],
            &runs[2],
            2e-4,
            &format!("step {step}: split vs whole"),
        );
        for (feeds, ev) in states.iter_mut().zip(runs) {
            for (name, t) in ev.updates {
                feeds.insert(name, t);
            }
        }
    }
}

/// Cross-entropy's label gather is fused (a checked load along the class axis, see
/// `lower::Tree::Gather`), and its loads count with the whole axis, so the rows of a
/// 160 KB logit table are cut into blocks whose windows hold every class a row may
/// pick: the loss over 64 KiB bindings is the interpreter's. An out-of-range label in
/// a windowed block is still an error naming the gather.
#[test]
fn a_fused_gather_over_a_table_larger_than_a_binding_runs_split() {
    let g = GraphBuilder::new("ce");
    let x = g.input("x", DType::F32, Shape::known(&[4000, 10]));
    let t = g.input("t", DType::I64, Shape::known(&[4000]));
    g.output(
        "loss",
        nn::cross_entropy(x, t, nn::ClassLossOptions::default()),
    );
    let graph = g.finish().unwrap();
    let labels: Vec<i64> = (0..4000).map(|i| (i * 7 % 10) as i64).collect();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".to_string(),
        Tensor::from_f32(&fill(40000, 3), &[4000, 10]).unwrap(),
    );
    feeds.insert("t".to_string(), Tensor::from_i64(&labels, &[4000]).unwrap());
    let binding = 64 << 10;
    let split = emit_with(&graph, &feeds, binding);
    let (windowed, _) = check_windows(&split, binding);
    assert!(windowed > 0, "no window bound");
    assert!(
        split
            .kernels
            .iter()
            .any(|k| k.source.contains("let ok") && k.bindings.iter().any(|b| b.window.is_some())),
        "the checked gather is not in a windowed block"
    );
    if !gpu_on() {
        return;
    }
    let interp = aotgrad::run(&graph, &feeds).unwrap();
    let got = gpu::run_once_with(&graph, &feeds, Some(binding)).unwrap();
    assert_close(&interp, &got, 1e-5, "64 KiB bindings vs interpreter");
    let mut bad = labels.clone();
    bad[3999] = 10;
    feeds.insert("t".to_string(), Tensor::from_i64(&bad, &[4000]).unwrap());
    match gpu::run_once_with(&graph, &feeds, Some(binding)).unwrap_err() {
        RunError::IndexOutOfRange {
            op, index, size, ..
        } => assert_eq!((op, index, size), ("gather", 10, 10)),
        e => panic!("unexpected {e}"),
    }
}

/// A library kernel (here an argmax) reads its operands anywhere, so one larger than a
/// binding is a clear error naming the node.
#[test]
fn a_library_kernel_over_a_tensor_larger_than_a_binding_is_an_error() {
    let g = GraphBuilder::new("am");
    let x = g.input("x", DType::F32, Shape::known(&[4000, 10]));
    g.output("best", x.argmax(1, false));
    let graph = g.finish().unwrap();
    let env = SymbolEnv::new();
    let program = lower::lower(&graph, &env, wgsl::lower_options()).unwrap();
    let limits = WgslLimits {
        max_storage_buffer_binding_size: 64 << 10,
        ..WgslLimits::default()
    };
    let err = wgsl::emit(&program, &graph, limits).unwrap_err();
    assert!(
        matches!(
            err,
            wgsl::WgslError::Limit { op: "argmax", limit: 65536, ref what, .. }
                if what.contains("160000 bytes")
        ),
        "{err}"
    );
}

/// Windows need arena offsets aligned like bindings; a program lowered with the CPU's
/// 64-byte alignment is refused rather than bound through overlapping windows.
#[test]
fn an_arena_aligned_for_the_cpu_is_refused_when_it_needs_windows() {
    let g = GraphBuilder::new("big");
    let x = g.input("x", DType::F32, Shape::known(&[64, 3000]));
    // A 750 KiB output, so the arena itself exceeds the binding.
    g.output("y", (x * 2.0).exp());
    let graph = g.finish().unwrap();
    let env = SymbolEnv::new();
    let program = lower::lower(&graph, &env, Default::default()).unwrap();
    assert!(program.arena_bytes > 64 << 10);
    let limits = WgslLimits {
        max_storage_buffer_binding_size: 64 << 10,
        ..WgslLimits::default()
    };
    let Err(err) = wgsl::emit(&program, &graph, limits) else {
        panic!("a CPU-aligned arena bound through windows");
    };
    assert!(
        matches!(
            err,
            wgsl::WgslError::ArenaAlignment {
                arena_align: 64,
                binding_align: 256,
                ..
            }
        ),
        "{err}"
    );
    let program = lower::lower(&graph, &env, wgsl::lower_options()).unwrap();
    assert!(wgsl::emit(&program, &graph, limits).is_ok());
}

/// A concatenation of more buffers than a dispatch can bind (the clipped norm of a
/// GPT stacks 50-odd per-parameter norms, which needed 53 bindings; here, 70 inputs,
/// each a buffer of its own) runs as several dispatches, each binding a few inputs and
/// writing its part of the output.
#[test]
fn a_concat_of_more_buffers_than_bindings_runs_in_parts() {
    let g = GraphBuilder::new("wide_concat");
    let mut feeds = HashMap::new();
    let mut xs = Vec::new();
    for i in 0..70usize {
        let k = 1 + i % 3;
        let name = format!("x{i}");
        xs.push(g.input(&name, DType::F32, Shape::known(&[2, k])));
        feeds.insert(
            name,
            Tensor::from_f32(&fill(2 * k, i as u32), &[2, k]).unwrap(),
        );
    }
    g.output("y", g.cat(&xs, 1));
    let graph = g.finish().unwrap();
    // With WebGPU's default 8 storage bindings per stage: parts of at most 6 inputs.
    let w = emit_with(&graph, &feeds, 1 << 30);
    assert_eq!(
        w.kernels.len(),
        70usize.div_ceil(6),
        "{:#?}",
        w.kernels.iter().map(|k| &k.name).collect::<Vec<_>>()
    );
    for k in &w.kernels {
        assert!(k.bindings.len() <= WgslLimits::default().max_storage_buffers_per_stage as usize);
    }
    if !gpu_on() {
        return;
    }
    let interp = aotgrad::run(&graph, &feeds).unwrap();
    let got = gpu::run_once(&graph, &feeds).unwrap();
    assert_eq!(got.output("y"), interp.output("y"));
    assert_eq!(got.output("y").unwrap().shape(), &[2, 139]);
}

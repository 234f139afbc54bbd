//! The GPU backend (WGSL through wgpu) against the reference interpreter: training
//! steps of the reference models, evaluation metrics, device-resident parameters,
//! errors, and snapshots of the generated WGSL.
//!
//! CI installs Mesa's software Vulkan driver (llvmpipe), so these run on every CI run;
//! without an adapter they are skipped with one printed line, unless `AOTGRAD_REQUIRE_GPU=1`
//! (set by `.ci/run`) makes the missing adapter an error.

use std::collections::HashMap;

use aotgrad::RunError;
use aotgrad::prelude::*;
use aotgrad::runtime::gpu::{self, DeviceStore, Fetch, GpuProgram};

use crate::common_models;
use common_models::take_rows;

fn gpu_on() -> bool {
    gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
}

#[test]
fn a_fused_kernel_computes_what_the_interpreter_does() {
    if !gpu_on() {
        return;
    }
    eprintln!("adapter: {}", gpu::context().unwrap().describe());
    let g = GraphBuilder::new("relu");
    let x = g.input("x", DType::F32, Shape::known(&[2, 3]));
    g.output("y", (x * 2.0).relu());
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".to_string(),
        Tensor::from_f32(&[-1.0, 0.5, 2.0, -3.0, 4.0, 0.0], &[2, 3]).unwrap(),
    );
    let ev = gpu::run_once(&graph, &feeds).unwrap();
    assert_eq!(
        ev.output("y"),
        aotgrad::run(&graph, &feeds).unwrap().output("y")
    );
}

/// Every reference model trains the same on the GPU as on the interpreter (f32
/// round-off and the GPU's f32 optimizer scalars apart), with a full batch, a short
/// last batch (a second specialisation) and a full batch again.
#[test]
fn training_matches_the_interpreter() {
    if !gpu_on() {
        return;
    }
    for model in ["linreg", "logreg", "mlp_mse_sgdm", "mlp_ce_adam64"] {
        let mut runs = Vec::new();
        for backend in [Backend::Interpreter, Backend::Gpu] {
            let (trainer, batch) = aotgrad::bench::setup(model).unwrap();
            let mut step = trainer.compile(&backend).unwrap();
            let n = batch.x.shape()[0];
            let short = Batch {
                x: take_rows(&batch.x, n / 3),
                y: take_rows(&batch.y, n / 3),
            };
            let mut losses = Vec::new();
            for b in [&batch, &short, &batch] {
                losses.push(step.run(b).unwrap());
            }
            runs.push((losses, step.parameters().to_vec(), step.optimizer_state()));
        }
        let (interp, gpu) = (&runs[0], &runs[1]);
        for (a, b) in interp.0.iter().zip(&gpu.0) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "{model}: loss {a} vs {b}"
            );
        }
        let atol = if model.contains("adam") { 2e-4 } else { 1e-5 };
        for ((name, a), (_, b)) in interp.1.iter().zip(&gpu.1) {
            assert!(b.allclose(a, 1e-3, atol), "{model}: {name}\n{a}\n{b}");
        }
        for ((name, a), (_, b)) in interp.2.iter().zip(&gpu.2) {
            assert_eq!(a.ty(), b.ty(), "{model}: state {name}");
            assert!(b.allclose(a, 1e-3, 1e-5), "{model}: state {name}\n{a}\n{b}");
        }
    }
}

/// The eval program's loss, correct count and confusion matrix (an integer matmul of
/// one-hot encodings, i64 on the host and i32 on the device) match the interpreter.
#[test]
fn evaluation_metrics_match_the_interpreter() {
    if !gpu_on() {
        return;
    }
    let mut results = Vec::new();
    for backend in [Backend::Interpreter, Backend::Gpu] {
        let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
        let mut step = trainer.compile(&backend).unwrap();
        step.run(&batch).unwrap();
        results.push(step.evaluate(&batch).unwrap());
    }
    let (a, b) = (&results[0], &results[1]);
    assert!(
        (a.loss - b.loss).abs() < 1e-4 * a.loss.abs(),
        "{} vs {}",
        a.loss,
        b.loss
    );
    assert_eq!(a.correct, b.correct);
    assert_eq!(a.confusion, b.confusion);
    assert!(a.confusion.is_some());
}

/// Parameters stay on the device between steps; reading them, saving and loading a
/// state dict go through the device, and a load is what the next step trains from.
#[test]
fn parameters_live_on_the_device_and_round_trip() {
    if !gpu_on() {
        return;
    }
    let (trainer, batch) = aotgrad::bench::setup("mlp_mse_sgdm").unwrap();
    let mut step = trainer.compile(&Backend::Gpu).unwrap();
    let p0 = step.parameters().to_vec();
    step.run(&batch).unwrap();
    let p1 = step.parameters().to_vec();
    assert_ne!(
        p0, p1,
        "the step updated the device copies, and they were read back"
    );
    step.run(&batch).unwrap();
    let p2 = step.state_dict();
    assert_ne!(p1, p2);
    // Back to p1: the next step must start from it (the device takes the host copy).
    step.load_state_dict(&p1).unwrap();
    assert_eq!(step.parameters(), &p1[..]);
    let state = step.optimizer_state();
    step.sync().unwrap();
    assert_eq!(step.parameters(), &p1[..]);
    assert_eq!(step.optimizer_state(), state);
}

/// An out-of-range class index is an error naming the gather, not wrong numbers.
#[test]
fn an_out_of_range_label_is_an_error() {
    if !gpu_on() {
        return;
    }
    let g = GraphBuilder::new("nll");
    let x = g.input("x", DType::F32, shape!["N", 3]);
    let y = g.input("y", DType::I64, shape!["N"]);
    g.output("picked", x.gather(1, y.unsqueeze(1)));
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".to_string(),
        Tensor::from_f32(&[0.0; 6], &[2, 3]).unwrap(),
    );
    feeds.insert("y".to_string(), Tensor::from_i64(&[1, 7], &[2]).unwrap());
    match gpu::run_once(&graph, &feeds).unwrap_err() {
        RunError::IndexOutOfRange {
            op, index, size, ..
        } => {
            assert_eq!((op, index, size), ("gather", 7, 3));
        }
        e => panic!("unexpected {e}"),
    }
    // An i64 value that does not fit the device's i32 is refused on upload.
    feeds.insert(
        "y".to_string(),
        Tensor::from_i64(&[1, 1 << 40], &[2]).unwrap(),
    );
    let e = gpu::run_once(&graph, &feeds).unwrap_err();
    assert!(
        matches!(e, aotgrad::RunError::NotI32 { ref name, value: 1_099_511_627_776 } if name == "y"),
        "{e}"
    );
}

/// An f64 tensor has no device type: the error names the node.
#[test]
fn f64_tensors_are_refused_with_the_node() {
    if !gpu_on() {
        return;
    }
    let g = GraphBuilder::new("wide");
    let x = g.input("x", DType::F64, shape![4]);
    g.output("y", x.exp());
    let graph = g.finish().unwrap();
    let e = GpuProgram::new(&graph)
        .unwrap()
        .run(
            &mut DeviceStore::new().unwrap(),
            &[("x", &Tensor::from_f64(&[1.0; 4], &[4]).unwrap())],
            Fetch::All,
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("%0") && msg.contains("WGSL has no f64"),
        "{msg}"
    );
}

/// Wrong inputs are refused before anything is dispatched.
#[test]
fn wrong_inputs_are_refused() {
    if !gpu_on() {
        return;
    }
    let g = GraphBuilder::new("fused");
    let x = g.input("x", DType::F32, shape!["N", 8]);
    let b = g.param("b", DType::F32, shape![8]);
    g.output("y", (x * 2.0 + b).relu());
    let graph = g.finish().unwrap();
    let mut prog = GpuProgram::new(&graph).unwrap();
    let mut store = DeviceStore::new().unwrap();
    let x = Tensor::zeros(DType::F32, &[2, 8]);
    assert!(matches!(
        prog.run(&mut store, &[("x", &x)], Fetch::All),
        Err(RunError::Missing { .. })
    ));
    store.upload("b", &Tensor::zeros(DType::F32, &[7])).unwrap();
    assert!(matches!(
        prog.run(&mut store, &[("x", &x)], Fetch::All),
        Err(RunError::Mismatch { .. })
    ));
    store.upload("b", &Tensor::zeros(DType::F32, &[8])).unwrap();
    let xi = Tensor::zeros(DType::I64, &[2, 8]);
    assert!(matches!(
        prog.run(&mut store, &[("x", &xi)], Fetch::All),
        Err(RunError::Mismatch { .. })
    ));
    let ev = prog
        .run(&mut store, &[("x", &x)], Fetch::Only(&[]))
        .unwrap();
    assert!(
        ev.outputs.is_empty(),
        "nothing was asked for, nothing is read back"
    );
}

/// The WGSL of a matmul with its fused epilogue and of a fused elementwise kernel,
/// byte-stable.
#[test]
fn wgsl_snapshots() {
    let (trainer, _) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let step = trainer.compile(&Backend::Interpreter).unwrap();
    let graph = step.optimized_step_graph();
    let env = [(std::sync::Arc::from("N"), 64usize)].into_iter().collect();
    let program = aotgrad::compiler::lower::lower(graph, &env, Default::default()).unwrap();
    let wgsl = aotgrad::compiler::codegen::wgsl::emit(&program, graph, Default::default()).unwrap();
    let text = wgsl.to_string();
    let kernel = |name: &str| {
        let start = text.find(&format!("// ---- {name} ")).unwrap();
        let end = text[start + 1..]
            .find("// ---- ")
            .map_or(text.len(), |e| start + 1 + e);
        text[start..end].to_string()
    };
    use aotgrad::compiler::lower::KernelBody;
    let index = |pick: &dyn Fn(&KernelBody) -> bool| {
        let t = program.kernels.iter().position(|k| pick(&k.body)).unwrap();
        format!("k{t}")
    };
    // The first layer's product with its bias + ReLU epilogue (the forward's first
    // matmul), and a multi-output Adam update loop (the last kernel: a bias's update).
    let first_matmul = index(&|b| matches!(b, KernelBody::MatMul(m) if m.epilogue.is_some()));
    insta::assert_snapshot!("wgsl_matmul_bias_relu", kernel(&first_matmul));
    let last = format!("k{}", program.kernels.len() - 1);
    insta::assert_snapshot!("wgsl_adam_update", kernel(&last));
}

/// Random numbers are the interpreter's Threefry stream: uniforms bit for bit, normals to
/// the device's log/cos precision; dropout trains the same.
#[test]
fn random_numbers_are_the_interpreters() {
    if !gpu_on() {
        return;
    }
    let g = GraphBuilder::new("rng");
    let key = g.input("key", DType::I64, Shape::scalar());
    g.output("u", g.rand(key, DType::F32, shape![1000]));
    g.output("n", g.randn(key, DType::F32, shape![1000]));
    let graph = g.finish().unwrap();
    for k in [0i64, 42, -7] {
        let mut feeds = HashMap::new();
        feeds.insert("key".to_string(), Tensor::from_i64(&[k], &[]).unwrap());
        let want = aotgrad::run(&graph, &feeds).unwrap();
        let got = gpu::run_once(&graph, &feeds).unwrap();
        assert_eq!(got.output("u"), want.output("u"), "key {k}");
        let (a, b) = (got.output("n").unwrap(), want.output("n").unwrap());
        assert!(a.allclose(b, 1e-4, 1e-4), "key {k}");
    }
}

/// A model with dropout trains the same on the GPU: its masks come from the same
/// Threefry stream, keyed by the RNG state that lives on the device.
#[test]
fn dropout_trains_like_the_interpreter() {
    use aotgrad::nn::{Dropout, Linear, ReLU, Sequential};
    if !gpu_on() {
        return;
    }
    let x: Vec<f32> = (0..64)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let y: Vec<f32> = (0..16).map(|i| (i % 3) as f32).collect();
    let batch = Batch {
        x: Tensor::from_f32(&x, &[16, 4]).unwrap(),
        y: Tensor::from_f32(&y, &[16, 1]).unwrap(),
    };
    let mut runs = Vec::new();
    for backend in [Backend::Interpreter, Backend::Gpu] {
        let model = Sequential::new()
            .push(Linear::new(4, 32))
            .push(ReLU)
            .push(Dropout(0.5))
            .push(Linear::new(32, 1));
        let mut step = Trainer::new(model, Loss::mse(Reduction::Mean), Optimizer::sgd(0.05))
            .input(DType::F32, &[4])
            .target(DType::F32, &[1])
            .compile(&backend)
            .unwrap();
        let losses: Vec<f64> = (0..4).map(|_| step.run(&batch).unwrap()).collect();
        runs.push((losses, step.parameters().to_vec()));
    }
    for (a, b) in runs[0].0.iter().zip(&runs[1].0) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "loss {a} vs {b}");
    }
    for ((name, a), (_, b)) in runs[0].1.iter().zip(&runs[1].1) {
        assert!(b.allclose(a, 1e-4, 1e-6), "{name}\n{a}\n{b}");
    }
}

//! The CPU backend against the reference interpreter, plus what only it has:
//! determinism across thread counts, input checks before generated code runs,
//! check-numerics, and snapshots of its lowered program and Cranelift IR.

use std::collections::HashMap;

use aotgrad::RunError;
use aotgrad::executor::{ProgramKind, Stage};
use aotgrad::nn::{Linear, ReLU, Sequential};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions, CpuProgram};
use aotgrad::train::TrainError;

use crate::common_models;
use crate::support;
use common_models::take_rows;

fn weights_bits(step: &TrainStep) -> Vec<u64> {
    step.parameters()
        .iter()
        .flat_map(|(_, t)| t.to_f64_vec())
        .map(f64::to_bits)
        .collect()
}

/// The same seed gives bitwise-identical parameters after N steps with 1 or 2 threads
/// (the matmuls of this model are large enough to be split into parallel tiles).
#[test]
fn one_and_two_threads_give_bitwise_identical_weights() {
    let mut finals = Vec::new();
    for threads in [1, 2, 1] {
        let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
        let mut step = trainer.compile(&Backend::Cpu { threads }).unwrap();
        for _ in 0..5 {
            step.run(&batch).unwrap();
        }
        finals.push(weights_bits(&step));
    }
    assert_eq!(finals[0], finals[1], "1 vs 2 threads");
    assert_eq!(finals[0], finals[2], "run to run");
}

/// Every reference model trains the same on both backends (f32 round-off apart), with a
/// full batch and then a short last batch (a second specialisation of the program).
#[test]
fn training_matches_the_interpreter() {
    for model in ["linreg", "logreg", "mlp_mse_sgdm", "mlp_ce_adam64"] {
        let mut runs = Vec::new();
        for backend in [Backend::Interpreter, Backend::Cpu { threads: 2 }] {
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
            runs.push((losses, step.parameters().to_vec()));
        }
        let (interp, cpu) = (&runs[0], &runs[1]);
        for (a, b) in interp.0.iter().zip(&cpu.0) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1e-3),
                "{model}: loss {a} vs {b}"
            );
        }
        // Adam divides by sqrt(v): a last-bit difference in a tiny gradient can move a
        // weight by a visible fraction of lr, so its absolute tolerance is wider.
        let atol = if model.contains("adam") { 1e-4 } else { 1e-6 };
        for ((name, a), (_, b)) in interp.1.iter().zip(&cpu.1) {
            assert!(b.allclose(a, 1e-4, atol), "{model}: {name}\n{a}\n{b}");
        }
    }
}

fn relu_graph() -> Graph {
    let g = GraphBuilder::new("fused");
    let x = g.input("x", DType::F32, shape!["N", 8]);
    let b = g.param("b", DType::F32, shape![8]);
    g.output("y", (x * 2.0 + b).relu());
    g.finish().unwrap()
}

#[test]
fn wrong_inputs_are_refused_before_generated_code_runs() {
    let mut p = CpuProgram::new(&relu_graph(), CpuOptions::default()).unwrap();
    let mut store: HashMap<String, Tensor> =
        [("b".to_string(), Tensor::zeros(DType::F32, &[8]))].into();
    let bad_shape = Tensor::zeros(DType::F32, &[4, 7]);
    let e = p.run(&mut store, &[("x", &bad_shape)]).unwrap_err();
    assert!(
        matches!(e, RunError::Mismatch { ref name, .. } if name == "x"),
        "{e}"
    );
    let bad_dtype = Tensor::zeros(DType::F64, &[4, 8]);
    let e = p.run(&mut store, &[("x", &bad_dtype)]).unwrap_err();
    assert!(
        matches!(e, RunError::Mismatch { ref name, got: DType::F64, .. } if name == "x"),
        "{e}"
    );
    let ok = Tensor::zeros(DType::F32, &[4, 8]);
    let e = p.run(&mut store, &[("x", &ok), ("z", &ok)]).unwrap_err();
    assert!(matches!(e, RunError::Unknown { .. }), "{e}");
    let e = p.run(&mut HashMap::new(), &[("x", &ok)]).unwrap_err();
    assert!(
        matches!(e, RunError::Missing { ref name, .. } if name == "b"),
        "{e}"
    );
    // And a good call still works after the refusals.
    let out = p.run(&mut store, &[("x", &ok)]).unwrap();
    assert_eq!(out.output("y").unwrap().shape(), &[4, 8]);
}

#[test]
fn check_numerics_names_the_node_that_made_a_nan() {
    let g = GraphBuilder::new("nan");
    let x = g.input("x", DType::F32, shape![3]);
    let y = (x * 2.0).log();
    g.output("y", y.sum(0, false));
    let graph = g.finish().unwrap();
    let feeds: HashMap<String, Tensor> = [(
        "x".to_string(),
        Tensor::from_f32(&[1.0, -1.0, 2.0], &[3]).unwrap(),
    )]
    .into();
    let opts = CpuOptions {
        check_numerics: true,
        ..Default::default()
    };
    match cpu::run_once(&graph, &feeds, opts).unwrap_err() {
        RunError::NonFinite { op, value, .. } => {
            assert_eq!(op, "log");
            assert!(value.is_nan());
        }
        e => panic!("{e}"),
    }
    // Without the option the NaN flows through, as on the interpreter.
    let out = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
    assert!(out.output("y").unwrap().item().unwrap().is_nan());
}

/// One small fused kernel (scale, bias, ReLU in one loop), as users would snapshot it.
#[test]
fn fused_kernel_snapshots() {
    let mut p = CpuProgram::new(&relu_graph(), CpuOptions::default()).unwrap();
    let env = [("N".into(), 4usize)].into();
    let v = p.variant(&env).unwrap();
    insta::assert_snapshot!("relu_kernel_lowered", v.program().to_string());
    if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        insta::assert_snapshot!("relu_kernel_clif", v.clif());
    }
}

/// The linear-regression training step as the CPU backend runs it: every update is
/// written in place.
#[test]
fn linreg_step_lowered_snapshot() {
    let (trainer, batch) = aotgrad::bench::setup("linreg").unwrap();
    let mut step = trainer.compile(&Backend::Cpu { threads: 1 }).unwrap();
    step.run(&batch).unwrap();
    let program = step
        .artifact(ProgramKind::Step, Stage::Lowered)
        .unwrap()
        .unwrap();
    assert!(
        !program.contains(" <- "),
        "every update in place:\n{program}"
    );
    insta::assert_snapshot!("linreg_step_lowered", program);
}

/// The MNIST MLP step (CE + Adam): the kernel count and the arena are part of the
/// contract (see docs/ARCHITECTURE.md); a change shows up here.
#[test]
fn mnist_mlp_adam_step_shape_of_the_program() {
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let mut step = trainer.compile(&Backend::Cpu { threads: 1 }).unwrap();
    step.run(&batch).unwrap();
    let program = step
        .artifact(ProgramKind::Step, Stage::Lowered)
        .unwrap()
        .unwrap();
    let summary = program.lines().last().unwrap().to_string();
    assert!(!program.contains(" <- "), "every update in place");
    // The weights' Adam updates run in their gradient GEMMs' epilogues; the biases' in
    // one loop over the parameter arena (tests/backends/param_arena.rs).
    assert_eq!(program.matches("persistent span").count(), 3, "{program}");
    insta::assert_snapshot!("mnist_mlp_adam64_summary", summary);
}

/// Neighbouring update loops are merged into one pass (`plan::merge_loops`); merged,
/// each must still see the values it would have seen alone: `q` and `r` read the old
/// `p` while `p` is overwritten in place, and `s` reads the *new* `p`, so its loop must
/// not be merged with the one that writes it.
#[test]
fn merged_update_loops_see_the_values_they_would_see_alone() {
    let g = GraphBuilder::new("crossed");
    let p = g.param("p", DType::F32, shape![4, 9]);
    let q = g.param("q", DType::F32, shape![4, 9]);
    let r = g.param("r", DType::F32, shape![4, 9]);
    let s = g.param("s", DType::F32, shape![4, 9]);
    let p_new = p + q * 0.5;
    g.update(p, p_new);
    g.update(q, q * p + 1.0);
    g.update(r, r - p.exp());
    g.update(s, p_new * 2.0 + s);
    g.output("loss", p_new.sum_all());
    let graph = g.finish().unwrap();
    let init = |k: f32| {
        Tensor::from_f32(
            &(0..36).map(|i| k + i as f32 * 0.1).collect::<Vec<_>>(),
            &[4, 9],
        )
        .unwrap()
    };
    let mut store: HashMap<String, Tensor> = [
        ("p".to_string(), init(0.5)),
        ("q".to_string(), init(-1.0)),
        ("r".to_string(), init(2.0)),
        ("s".to_string(), init(0.25)),
    ]
    .into();
    let mut prog = CpuProgram::new(&graph, CpuOptions::default()).unwrap();
    for _ in 0..3 {
        let want = aotgrad::runtime::interp::run(&graph, &store).unwrap();
        prog.run(&mut store, &[]).unwrap();
        for name in ["p", "q", "r", "s"] {
            let w = want.update(name).unwrap();
            assert!(
                store[name].allclose(w, 1e-6, 1e-6),
                "{name}\n{w}\n{}",
                store[name]
            );
        }
    }
    let env = Default::default();
    let lowered = prog.variant(&env).unwrap().program().to_string();
    assert!(lowered.contains(" = e"), "some loops merged:\n{lowered}");
}

/// Cross-entropy's label gather is fused into the loss kernel, where each label is
/// checked: an out-of-range one stops the step right after that kernel, with the error
/// the interpreter gives, before any parameter or optimizer state changes. The index
/// reported is the same whichever thread met which bad label.
#[test]
fn an_out_of_range_label_stops_the_step_before_any_update() {
    for threads in [1, 2] {
        let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
        let mut step = trainer.compile(&Backend::Cpu { threads }).unwrap();
        step.run(&batch).unwrap();
        let (params, state) = (step.parameters().to_vec(), step.optimizer_state());
        let mut labels: Vec<i64> = batch.y.to_f64_vec().iter().map(|&v| v as i64).collect();
        let n = labels.len();
        labels[n - 1] = 12;
        labels[n / 2] = 10;
        labels[1] = -3;
        let bad = Batch {
            x: batch.x.clone(),
            y: Tensor::from_i64(&labels, &[n]).unwrap(),
        };
        // The runtime's fault (the gather's index 10 here) is reported in the
        // model's terms: the first bad label of the batch.
        let e = step.run(&bad).unwrap_err().to_string();
        assert_eq!(
            e, "target -3 is out of range for 10 classes (row 1 of the batch)",
            "{threads} threads"
        );
        assert_eq!(step.parameters(), &params[..], "{threads} threads");
        assert_eq!(step.optimizer_state(), state, "{threads} threads");
        // The next good step is the one that would have come without the bad batch.
        let mut fresh = trainer.compile(&Backend::Cpu { threads }).unwrap();
        fresh.run(&batch).unwrap();
        assert_eq!(step.run(&batch).unwrap(), fresh.run(&batch).unwrap());
        assert_eq!(weights_bits(&step), weights_bits(&fresh));
    }
}

/// A scatter-add of one value per row (cross-entropy's gradient) is an elementwise
/// select, bitwise the interpreter's sum, with its index checked like a gather's.
#[test]
fn a_one_per_row_scatter_add_is_fused_and_checked() {
    let g = GraphBuilder::new("scatter");
    let base = g.input("base", DType::F32, shape!["N", 5]);
    let idx = g.input("idx", DType::I64, shape!["N", 1]);
    let src = g.input("src", DType::F32, shape!["N", 1]);
    g.output("y", base.scatter_add(1, idx, src * 3.0));
    let graph = g.finish().unwrap();
    let base_v: Vec<f32> = (0..20).map(|i| i as f32 * 0.25 - 2.0).collect();
    let mut feeds: HashMap<String, Tensor> = [
        (
            "base".to_string(),
            Tensor::from_f32(&base_v, &[4, 5]).unwrap(),
        ),
        (
            "idx".to_string(),
            Tensor::from_i64(&[4, 0, 2, 4], &[4, 1]).unwrap(),
        ),
        (
            "src".to_string(),
            Tensor::from_f32(&[0.5, -1.0, 2.0, 0.1], &[4, 1]).unwrap(),
        ),
    ]
    .into();
    let program =
        aotgrad::compiler::lower::lower(&graph, &[("N".into(), 4)].into(), Default::default())
            .unwrap();
    let text = program.to_string();
    assert!(
        text.contains(", 0 library)") && text.contains("checked e0 < 5"),
        "{text}"
    );
    let want = aotgrad::run(&graph, &feeds).unwrap();
    let got = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
    assert_eq!(want.output("y"), got.output("y"));
    feeds.insert(
        "idx".to_string(),
        Tensor::from_i64(&[4, 5, 2, -1], &[4, 1]).unwrap(),
    );
    match cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap_err() {
        RunError::IndexOutOfRange {
            op, index, size, ..
        } => assert_eq!((op, index, size), ("scatter_add", 5, 5)),
        e => panic!("{e}"),
    }
}

/// The blocks of one function in Cranelift's optimised IR (`Variant::machine_code`),
/// each as its lines.
fn optimised_blocks<'a>(machine: &'a str, kernel: &str) -> Vec<Vec<&'a str>> {
    let start = machine
        .lines()
        .find(|l| l.contains(&format!(" {kernel}: ")) && l.ends_with(": optimised"))
        .and_then(|l| machine.find(l))
        .unwrap_or_else(|| panic!("no optimised IR for {kernel}:\n{machine}"));
    let text = &machine[start..];
    let end = text.find(": machine code").expect("machine code follows");
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    for line in text[..end].lines() {
        if line.starts_with("block") {
            blocks.push(Vec::new());
        } else if let Some(b) = blocks.last_mut() {
            b.push(line);
        }
    }
    blocks
}

/// Loop invariants of a vector loop — the splat of a scalar read from memory and what
/// is computed from it — are computed once before the loop, not per vector. Cranelift
/// only hoists them when the loop is emitted in the rotated shape `range_loop` uses
/// (`docs/decisions/licm.md`); before it, the body recomputed both.
#[test]
fn vector_loop_invariants_are_hoisted_out_of_the_loop() {
    let g = GraphBuilder::new("licm");
    let x = g.input("x", DType::F32, shape!["N", 64]);
    let s = g.input("s", DType::F32, shape![]);
    // A 2-d loop nest (rows, then vectors along a row) with a broadcast scalar and a
    // value computed from it alone.
    g.output("y", (x * s + s.sqrt()).relu());
    let graph = g.finish().unwrap();
    let opts = CpuOptions {
        machine_code: true,
        ..CpuOptions::default()
    };
    let mut p = CpuProgram::new(&graph, opts).unwrap();
    let env = [("N".into(), 3usize)].into();
    let v = p.variant(&env).unwrap();
    assert_eq!(v.program().kernels.len(), 1, "{}", v.program());
    let blocks = optimised_blocks(v.machine_code(), "k0");
    let vector_bodies: Vec<&Vec<&str>> = blocks
        .iter()
        .filter(|b| b.iter().any(|l| l.contains("load.f32x4")))
        .collect();
    assert!(!vector_bodies.is_empty(), "a vector loop:\n{blocks:#?}");
    for body in vector_bodies {
        for line in body {
            assert!(
                !line.contains("splat") && !line.contains("sqrt"),
                "invariant computed per vector: {line}\n{body:#?}"
            );
        }
    }
    // Not vacuous: the splat and the square root exist, outside the loop.
    let all: Vec<&str> = blocks.iter().flatten().copied().collect();
    assert!(all.iter().any(|l| l.contains("splat.f32x4")), "{all:#?}");
    assert!(all.iter().any(|l| l.contains("sqrt")), "{all:#?}");
    // And the program still computes the right thing.
    let xs: Vec<f32> = (0..192).map(|i| i as f32 * 0.25 - 20.0).collect();
    let feeds: HashMap<String, Tensor> = [
        ("x".to_string(), Tensor::from_f32(&xs, &[3, 64]).unwrap()),
        ("s".to_string(), Tensor::from_f32(&[4.0], &[]).unwrap()),
    ]
    .into();
    let got = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
    let want: Vec<f64> = xs
        .iter()
        .map(|&x| f64::from((x * 4.0 + 2.0).max(0.0)))
        .collect();
    assert_eq!(got.output("y").unwrap().to_f64_vec(), want);
}

/// The finiteness gate of checked mode on the CPU backend, whose optimizer loops are
/// emitted twice (once per value of the gate, see `inner`'s unswitching): a step with a
/// NaN loss leaves every parameter and Adam moment bit-for-bit as it was, and the good
/// steps around it match the interpreter.
#[test]
fn a_non_finite_step_leaves_parameters_and_moments_untouched_on_cpu() {
    let make = |backend: &Backend| {
        Trainer::new(
            Sequential::new()
                .push(Linear::new(8, 16))
                .push(ReLU)
                .push(Linear::new(16, 6)),
            Loss::mse(Reduction::Mean),
            Optimizer::adam(0.01),
        )
        .input(DType::F32, &[8])
        .target(DType::F32, &[6])
        .seed(11)
        .compile(backend)
        .unwrap()
    };
    let batch = |bad: bool| {
        let mut x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        if bad {
            x[13] = f32::NAN;
        }
        let y: Vec<f32> = (0..30).map(|i| (i as f32 * 0.11).cos()).collect();
        Batch {
            x: Tensor::from_f32(&x, &[5, 8]).unwrap(),
            y: Tensor::from_f32(&y, &[5, 6]).unwrap(),
        }
    };
    let mut cpu = make(&Backend::Cpu { threads: 1 });
    let mut interp = make(&Backend::Interpreter);
    cpu.run(&batch(false)).unwrap();
    interp.run(&batch(false)).unwrap();
    let before = (cpu.parameters().to_vec(), cpu.optimizer_state());
    let e = cpu.run(&batch(true)).unwrap_err();
    assert!(matches!(e, TrainError::NonFiniteLoss { .. }), "{e}");
    assert_eq!(cpu.parameters(), &before.0[..], "parameters untouched");
    assert_eq!(cpu.optimizer_state(), before.1, "moments untouched");
    // The next good step is the interpreter's second step.
    cpu.run(&batch(false)).unwrap();
    interp.run(&batch(false)).unwrap();
    for ((name, a), (_, b)) in cpu.parameters().iter().zip(interp.parameters()) {
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{name}: {x} vs {y}"
            );
        }
    }
}

/// A loop whose stores are contiguous but whose load is strided (a transpose feeding a
/// bias + ReLU) runs as a vector loop: each vector's lanes are loaded one by one
/// (`insertlane`), the arithmetic is on whole vectors. Rows of 7 leave a scalar tail.
/// Values are bitwise the interpreter's, in f32 (4 lanes) and f64 (2 lanes).
#[test]
fn strided_loads_feed_a_vector_loop() {
    for dtype in [DType::F32, DType::F64] {
        let g = GraphBuilder::new("strided");
        let x = g.input("x", dtype, shape![7, 13]);
        let b = g.input("b", dtype, shape![7]);
        g.output("y", (x.t() * 2.0 + b).relu());
        let graph = g.finish().unwrap();
        let opts = CpuOptions {
            machine_code: true,
            ..CpuOptions::default()
        };
        let mut p = CpuProgram::new(&graph, opts).unwrap();
        let v = p.variant(&Default::default()).unwrap();
        assert_eq!(v.program().kernels.len(), 1, "{}", v.program());
        let lanes = if dtype == DType::F32 {
            "f32x4"
        } else {
            "f64x2"
        };
        let blocks = optimised_blocks(v.machine_code(), "k0");
        // The vector body: lanes inserted one by one, then vector arithmetic on them.
        assert!(
            blocks.iter().any(|b| {
                b.iter()
                    .any(|l| l.contains(&format!("scalar_to_vector.{lanes}")))
                    && b.iter().any(|l| l.contains("insertlane"))
                    && b.iter().any(|l| l.contains(&format!("bitselect.{lanes}")))
            }),
            "no vector loop over the strided load:\n{blocks:#?}"
        );
        let xs: Vec<f64> = (0..91).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let bs: Vec<f64> = (0..7).map(|i| i as f64 * 0.5 - 1.5).collect();
        let t = |v: &[f64], s: &[usize]| match dtype {
            DType::F32 => {
                Tensor::from_f32(&v.iter().map(|&x| x as f32).collect::<Vec<_>>(), s).unwrap()
            }
            _ => Tensor::from_f64(v, s).unwrap(),
        };
        let feeds: HashMap<String, Tensor> = [
            ("x".to_string(), t(&xs, &[7, 13])),
            ("b".to_string(), t(&bs, &[7])),
        ]
        .into();
        let got = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
        let want = aotgrad::runtime::run(&graph, &feeds).unwrap();
        assert_eq!(got.output("y"), want.output("y"), "{dtype}");
    }
}

/// `Trainer::profile` times every kernel of the CPU step: one entry per kernel of the
/// lowered program, every completed call counted, and the kernels' total no more than
/// the wall time of the steps (nor far below it: the kernels are the step). Without it,
/// there is no profile.
#[test]
fn the_kernel_profile_accounts_for_every_kernel_and_call() {
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let mut plain = aotgrad::bench::setup("mlp_ce_adam64")
        .unwrap()
        .0
        .compile(&Backend::Cpu { threads: 1 })
        .unwrap();
    plain.run(&batch).unwrap();
    assert!(plain.kernel_profile(ProgramKind::Step).is_none());

    let mut step = trainer
        .profile(true)
        .compile(&Backend::Cpu { threads: 1 })
        .unwrap();
    step.run(&batch).unwrap(); // compiles
    let (_, before) = step.kernel_profile(ProgramKind::Step).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..20 {
        step.run(&batch).unwrap();
    }
    let wall = t.elapsed();
    let (program, p) = step.kernel_profile(ProgramKind::Step).unwrap();
    let kernels = program
        .lines()
        .filter(|l| l.starts_with("  k") && l.contains(": "))
        .count();
    assert_eq!(p.kernels.len(), kernels, "{program}");
    assert_eq!((before.calls, p.calls), (1, 21));
    let sum = |p: &aotgrad::runtime::cpu::KernelProfile| -> std::time::Duration {
        p.kernels.iter().sum()
    };
    let timed = sum(&p) - sum(&before);
    assert!(timed <= wall, "{timed:?} in kernels, {wall:?} of wall time");
    assert!(
        timed.as_secs_f64() > 0.2 * wall.as_secs_f64(),
        "{timed:?} in kernels, {wall:?} of wall time"
    );
    // Products: their operations from the program's own line (`m=.. n=.. k=..`, no
    // batch here), and GEMM time that is part of the kernel's (one thread: the
    // epilogue runs after it on the same thread). Other kernels have neither.
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let lines: Vec<&str> = program
        .lines()
        .filter(|l| l.starts_with("  k") && l.contains(": "))
        .collect();
    let mut products = 0;
    for (k, line) in lines.iter().enumerate() {
        if line.contains(": matmul ") {
            products += 1;
            assert!(line.contains("batch []"), "{line}");
            let flops = 2 * field(line, "m=") * field(line, "n=") * field(line, "k=");
            assert_eq!(p.flops[k], flops, "{line}");
            assert!(p.gemm[k] > before.gemm[k], "k{k}: {line}");
            assert!(p.gemm[k] <= p.kernels[k], "k{k}: {line}");
            assert!(p.kernel_gemm_gflops(k).is_some_and(|g| g > 0.0), "{line}");
        } else {
            assert_eq!(
                (p.flops[k], p.gemm[k]),
                (0, std::time::Duration::ZERO),
                "{line}"
            );
            assert_eq!(p.kernel_gemm_gflops(k), None, "{line}");
        }
    }
    assert!(products >= 5, "{program}");
    let rate = p.gemm_gflops().unwrap();
    assert!(rate.is_finite() && rate > 0.0, "{rate}");
    let table = aotgrad::bench::profile_table(&program, &p);
    assert!(table.contains("matmul"), "{table}");
    assert!(table.contains("GEMM GF/s"), "{table}");
}

/// `aotgrad bench --profile` prints the kernel table and the GEMM rate against the FMA
/// peak on the CPU backend (both rates in the JSON too), and refuses the
/// other backends with a message that says why.
#[test]
fn bench_profile_prints_kernels_and_refuses_other_backends() {
    let bench = |args: &[&str]| {
        let base = [
            "bench",
            "mlp_ce_adam64",
            "--profile",
            "--max-time",
            "0.05",
            "--steps",
            "20",
        ];
        support::cli(&[&base[..], args].concat())
    };
    let (ok, stdout, stderr) = bench(&[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("mlp_ce_adam64 step:") && stdout.contains("kernel |  share | ms/step"),
        "{stdout}"
    );
    // A model with products: the GEMM line under the table, and both rates in the
    // JSON (positive numbers).
    let (ok, stdout, stderr) = bench(&["--json"]);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let rate = |key: &str| -> f64 {
        json[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no number {key}: {stdout}"))
    };
    assert!(rate("gemm_gflops") > 0.0 && rate("fma_peak_gflops") > 0.0);
    assert!(
        stderr.contains("GEMM: ") && stderr.contains("FMA peak measured now"),
        "{stderr}"
    );
    // The products' floor at the peak: below the step (its products are ~60% of it
    // at full peak; the margin absorbs a peak measured in a slow phase of a shared
    // machine), and not orders of magnitude below (a unit slip).
    let (floor, median) = (rate("products_floor_ms"), rate("median_ms"));
    assert!(floor > median / 100.0 && floor < 3.0 * median, "{stdout}");
    assert!(
        stderr.contains("Products: ") && stderr.contains("% of the median step"),
        "{stderr}"
    );
    let (ok, _, stderr) = bench(&["--backend", "interp"]);
    assert!(!ok);
    assert!(
        stderr.contains("--profile times the CPU backend's kernels: it needs --backend cpu"),
        "{stderr}"
    );
}

/// `Stage::PlanPasses` lowers the step again exactly as the CPU compiled it (its
/// options and parameter arena): the program after the last pass is the one that runs,
/// and the arena pass (which adds buffers after the first lowering) is among them.
#[test]
fn plan_passes_end_in_the_program_that_runs() {
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let mut step = trainer.compile(&Backend::Cpu { threads: 1 }).unwrap();
    step.run(&batch).unwrap();
    let passes = step
        .artifact(ProgramKind::Step, Stage::PlanPasses)
        .unwrap()
        .unwrap();
    let lowered = step
        .artifact(ProgramKind::Step, Stage::Lowered)
        .unwrap()
        .unwrap();
    let heads: Vec<&str> = passes
        .lines()
        .filter(|l| l.starts_with("# after "))
        .collect();
    assert_eq!(
        heads.first().map(|h| h.split(':').next()),
        Some(Some("# after lower"))
    );
    assert!(
        heads
            .iter()
            .any(|h| h.starts_with("# after merge_update_loops:")),
        "{heads:?}"
    );
    let last = passes
        .rsplit_once("# after assign_offsets: ")
        .map(|(_, rest)| rest.split_once('\n').unwrap().1)
        .unwrap();
    assert_eq!(last.trim_end(), lowered.trim_end());
}

/// f32 `exp`, `tanh`, the `sigmoid` built on `exp`, and `sign` run inline in generated code
/// (vectorised, `fastmath.rs`) and give the interpreter's bits (`aotgrad_ir::math`) on
/// every input: a sweep of the f32 line, the edges of each function's range, the
/// specials, in vector lanes and in the scalar tail, and on a strided (scalar) loop.
#[test]
fn inline_exp_and_tanh_are_the_interpreters_bits() {
    let mut xs: Vec<f32> = (0..4000u32)
        .map(|i| f32::from_bits(i.wrapping_mul(1_073_741) ^ (i << 31)))
        .filter(|x| x.is_finite())
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        -f32::from_bits(1),
        88.72,
        88.73,
        -87.33,
        -87.34,
        -103.97,
        -104.5,
        0.625,
        -0.625,
        0.624_999_94,
        9.0,
        -9.01,
        1e-30,
        -3e-20,
    ]);
    xs.extend((0..200).map(|i| (i as f32 - 100.0) * 0.173));
    xs.push(0.5); // an odd length: a scalar tail after the vectors
    let n = xs.len();
    let g = GraphBuilder::new("transcendentals");
    let x = g.input("x", DType::F32, Shape::known(&[n]));
    g.output("exp", x.exp());
    g.output("tanh", x.tanh());
    g.output("sigmoid", x.sigmoid());
    // sigmoid's gradient goes through `abs`, whose gradient is `sign`.
    g.output("sign", x.sign() * x.exp());
    // A transposed read: the loop over it is strided, so scalar.
    let m = g.input("m", DType::F32, Shape::known(&[3, 7]));
    g.output("mt", m.transpose(0, 1).exp() + m.transpose(0, 1).tanh());
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    feeds.insert("x".to_string(), Tensor::from_f32(&xs, &[n]).unwrap());
    feeds.insert(
        "m".to_string(),
        Tensor::from_f32(&xs[1000..1021], &[3, 7]).unwrap(),
    );
    let want = aotgrad::run(&graph, &feeds).unwrap();
    let got = cpu::run_once(&graph, &feeds, CpuOptions::default()).unwrap();
    for name in ["exp", "tanh", "sigmoid", "sign", "mt"] {
        let (a, b) = (want.output(name).unwrap(), got.output(name).unwrap());
        let bits = |t: &Tensor| -> Vec<u32> {
            t.to_f64_vec()
                .iter()
                .map(|v| (*v as f32).to_bits())
                .collect()
        };
        for (i, (p, q)) in bits(a).iter().zip(bits(b)).enumerate() {
            let nan = f32::from_bits(*p).is_nan() && f32::from_bits(q).is_nan();
            assert!(
                *p == q || nan,
                "{name}[{i}] of {:e}: interpreter {:e}, generated code {:e}",
                xs.get(i).copied().unwrap_or(f32::NAN),
                f32::from_bits(*p),
                f32::from_bits(q)
            );
        }
    }
}

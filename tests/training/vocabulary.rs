//! The model vocabulary past the course: f64 training end to end, frozen parameters,
//! forward hooks, several inputs and outputs, named initialisers, and the typed errors
//! each of them gives on bad input (naming the layer and the user's line).

use aotgrad::lr_schedule::LrSchedule;
use aotgrad::nn::{Init, Linear, Module, ReLU, Recurrent, Scope, Sequential};
use aotgrad::prelude::*;
use aotgrad::train::{TensorDict, Vars};

/// The course's P21 (`ŷ = w0 + w1·x1 + w2·x2`, lr 0.001, full batch) trained in f64
/// through the compiled step follows a plain f64 loop of the same update to 1e-12
/// relative after 2 000 000 steps.
#[test]
fn f64_regression_follows_a_plain_f64_loop() {
    let xs = [
        [10.0, 3.0],
        [20.0, 3.0],
        [25.0, 3.0],
        [28.0, 2.5],
        [30.0, 2.0],
        [35.0, 2.5],
        [40.0, 2.5],
    ];
    let ys = [60.0, 85.0, 100.0, 120.0, 140.0, 145.0, 163.0];
    let steps: usize = 2_000_000;
    // The plain loop: the same update as the compiled step, in f64.
    let (mut w, mut b) = ([0.0f64; 2], 0.0f64);
    let n = xs.len() as f64;
    let mut first_loss = 0.0;
    for k in 0..steps {
        let mut gw = [0.0; 2];
        let mut gb = 0.0;
        let mut loss = 0.0;
        for (x, y) in xs.iter().zip(ys) {
            let d = x[0] * w[0] + x[1] * w[1] + b - y;
            loss += d * d;
            gw[0] += 2.0 * d * x[0] / n;
            gw[1] += 2.0 * d * x[1] / n;
            gb += 2.0 * d / n;
        }
        if k == 0 {
            first_loss = loss / n;
        }
        w[0] -= 0.001 * gw[0];
        w[1] -= 0.001 * gw[1];
        b -= 0.001 * gb;
    }
    assert_eq!(first_loss, 14631.285714285714, "the course's iteration 0");
    let trainer = Trainer::new(
        Linear::new(2, 1),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.001),
    )
    .dtype(DType::F64)
    .input(DType::F64, &[2])
    .target(DType::F64, &[1])
    .init("*", Init::Constant(0.0));
    let flat: Vec<f64> = xs.iter().flatten().copied().collect();
    let batch = Batch {
        x: Tensor::from_f64(&flat, &[7, 2]).unwrap(),
        y: Tensor::from_f64(&ys, &[7, 1]).unwrap(),
    };
    let mut step = trainer.compile(&Backend::Cpu { threads: 1 }).unwrap();
    let loss0 = step.run(&batch).unwrap();
    assert!((loss0 - first_loss).abs() <= 1e-12 * first_loss, "{loss0}");
    for _ in 1..steps {
        step.run(&batch).unwrap();
    }
    let weight = step.parameter("weight").unwrap();
    assert_eq!(weight.dtype(), DType::F64, "parameters stay f64");
    let got = [
        weight.as_f64().unwrap()[0],
        weight.as_f64().unwrap()[1],
        step.parameter("bias").unwrap().as_f64().unwrap()[0],
    ];
    for (g, want) in got.iter().zip([w[0], w[1], b]) {
        assert!(
            (g - want).abs() <= 1e-12 * want.abs(),
            "{got:?} vs {:?}",
            [w[0], w[1], b]
        );
    }
    // The optimizer's state is f64 too; the interpreter agrees on a short run.
    let mut interp = Trainer::new(
        Linear::new(2, 1),
        Loss::mse(Reduction::Mean),
        Optimizer::adam(0.01),
    )
    .dtype(DType::F64)
    .input(DType::F64, &[2])
    .target(DType::F64, &[1])
    .compile(&Backend::Interpreter)
    .unwrap();
    interp.run(&batch).unwrap();
    assert!(
        interp
            .optimizer_state()
            .iter()
            .filter(|(n, _)| n.contains("exp_avg"))
            .all(|(_, t)| t.dtype() == DType::F64)
    );
}

/// The GPU backend refuses f64 parameters with its typed error (when there is a GPU).
#[test]
fn the_gpu_refuses_f64_training() {
    if !aotgrad::runtime::gpu::available_for_tests().expect("a GPU (AOTGRAD_REQUIRE_GPU=1)") {
        return;
    }
    let r = Trainer::new(
        Linear::new(2, 1),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .dtype(DType::F64)
    .input(DType::F64, &[2])
    .target(DType::F64, &[1])
    .compile(&Backend::Gpu)
    .and_then(|mut s| {
        s.run(&Batch {
            x: Tensor::from_f64(&[1.0, 2.0], &[1, 2]).unwrap(),
            y: Tensor::from_f64(&[1.0], &[1, 1]).unwrap(),
        })
    });
    let e = r.unwrap_err().to_string();
    assert!(e.contains("f64"), "{e}");
}

fn mlp() -> Sequential {
    Sequential::new()
        .push_named("fc1", Linear::new(4, 8))
        .push_named("act", ReLU)
        .push_named("fc2", Linear::new(8, 2))
}

fn xy() -> Batch {
    let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
    Batch {
        x: Tensor::from_f32(&x, &[6, 4]).unwrap(),
        y: Tensor::from_i64(&[0, 1, 1, 0, 1, 0], &[6]).unwrap(),
    }
}

/// A frozen layer gets no gradient, no update and no optimizer state, and a hook
/// returns a layer's activation from every program.
#[test]
fn frozen_layers_and_hooks() {
    for backend in [Backend::Interpreter, Backend::Cpu { threads: 1 }] {
        let mut step = Trainer::new(mlp(), Loss::cross_entropy(), Optimizer::adam(0.01))
            .input(DType::F32, &[4])
            .target(DType::I64, &[])
            .freeze("fc1")
            .hook("act")
            .compile(&backend)
            .unwrap();
        let before = step.parameter("fc1.weight").unwrap().clone();
        let fc2 = step.parameter("fc2.weight").unwrap().clone();
        let r = step.run_full(&xy()).unwrap();
        let act = &r.extra.iter().find(|(n, _)| n == "hook.act").unwrap().1;
        assert_eq!(act.shape(), &[6, 8]);
        assert!(act.to_f64_vec().iter().all(|&v| v >= 0.0), "post-ReLU");
        assert_eq!(step.parameter("fc1.weight").unwrap(), &before, "frozen");
        assert_ne!(step.parameter("fc2.weight").unwrap(), &fc2, "trained");
        assert!(
            step.optimizer_state()
                .iter()
                .all(|(n, _)| !n.starts_with("fc1.")),
            "no optimizer state for frozen parameters"
        );
        let (_, grads) = step.gradients(Some(&xy())).unwrap();
        let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fc2.weight", "fc2.bias"]);
        let outs = step.predict_all(&xy()).unwrap();
        assert!(outs.iter().any(|(n, _)| n == "hook.act"));
        // The frozen weights are still in the state dict.
        assert!(step.state_dict().iter().any(|(n, _)| n == "fc1.weight"));
    }
}

/// Misspelt patterns and hooks are errors, not silently ignored.
#[test]
fn unmatched_patterns_and_hooks_are_errors() {
    let base = || {
        Trainer::new(mlp(), Loss::cross_entropy(), Optimizer::sgd(0.1))
            .input(DType::F32, &[4])
            .target(DType::I64, &[])
    };
    let e = base()
        .freeze("fc3")
        .compile(&Backend::Interpreter)
        .err()
        .unwrap();
    assert!(e.to_string().contains("\"fc3\""), "{e}");
    let e = base()
        .hook("nope")
        .compile(&Backend::Interpreter)
        .err()
        .unwrap();
    assert!(e.to_string().contains("\"nope\""), "{e}");
    let e = base()
        .init("fc1.bias", Init::XavierUniform { gain: 1.0 })
        .compile(&Backend::Interpreter)
        .err()
        .unwrap();
    assert!(
        matches!(&e, TrainError::Init { param, .. } if param == "fc1.bias"),
        "{e}"
    );
}

/// A recurrent layer over a symbolic sequence length names itself and the user's line.
#[test]
fn recurrent_layers_need_a_known_length() {
    let line = line!() + 2;
    let model = Sequential::new()
        .push(Recurrent::lstm(3, 4).batch_first(true))
        .push(Linear::new(4, 2));
    let e = Trainer::new(model, Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
        .batch_input("x", DType::F32, shape!["T", 3])
        .target(DType::F32, &[2])
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("LSTM") && e.contains("known size"), "{e}");
    assert!(e.contains(&format!("vocabulary.rs:{line}")), "{e}");
}

/// A model with two outputs; a named loss reads the second output and a mask.
struct TwoHeads;

impl Module for TwoHeads {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        self.forward_all(s, &[x])[0]
    }

    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        let h = Linear::new(4, 6)
            .forward(&s.child("body"), inputs[0])
            .tanh();
        vec![
            Linear::new(6, 2).forward(&s.child("cls"), h),
            Linear::new(6, 1).forward(&s.child("reg"), h),
        ]
    }
}

#[test]
fn several_outputs_and_a_named_loss() {
    let loss = Loss::named("two_heads", |v: &Vars<'_>| {
        let ce = aotgrad::nn::cross_entropy(v.get("output"), v.get("label"), Default::default());
        let sq = (v.get("output.1") - v.get("value")).square().squeeze(1);
        ce + (sq * v.get("weight")).mean_all()
    });
    let mut step = Trainer::new(TwoHeads, loss, Optimizer::sgd(0.1))
        .batch_input("x", DType::F32, shape![4])
        .batch_target("label", DType::I64, shape![])
        .batch_target("value", DType::F32, shape![1])
        .batch_target("weight", DType::F32, shape![])
        .schedule(LrSchedule::lambda(|k| 0.5f64.powi(k as i32)))
        .compile(&Backend::Cpu { threads: 1 })
        .unwrap();
    let b = xy();
    let batch = TensorDict::new()
        .with("x", b.x.clone())
        .with("label", b.y.clone())
        .with("value", Tensor::from_f32(&[0.5; 6], &[6, 1]).unwrap())
        .with(
            "weight",
            Tensor::from_f32(&[1., 0., 1., 0., 1., 0.], &[6]).unwrap(),
        );
    let first = step.run_full(&batch).unwrap();
    assert!(
        first
            .extra
            .iter()
            .any(|(n, t)| n == "output.1" && t.shape() == [6, 1])
    );
    let mut last = first.loss;
    for _ in 0..20 {
        last = step.run(&batch).unwrap();
    }
    assert!(last < first.loss, "{last} vs {}", first.loss);
    assert!(
        (step.lr() - 0.1 * 0.5f64.powi(20)).abs() < 1e-15,
        "{}",
        step.lr()
    );
    // A tensor the loss asks for that the batch does not declare is a build error.
    let e = Trainer::new(
        TwoHeads,
        Loss::named("bad", |v: &Vars<'_>| v.get("missing").sum_all()),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[4])
    .compile(&Backend::Interpreter)
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("\"missing\""), "{e}");
}

/// `orthogonal_` on a recurrent weight through the trainer: the hidden-to-hidden
/// weight's row blocks are orthonormal.
#[test]
fn named_initialisers_apply_by_pattern() {
    let step = Trainer::new(
        Recurrent::gru(3, 4).batch_first(true),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[5, 3])
    .target(DType::F32, &[5, 4])
    .init("*weight_hh_l0", Init::Orthogonal { gain: 1.0 })
    .init("*bias*", Init::Constant(0.0))
    .compile(&Backend::Interpreter)
    .unwrap();
    let w = step.parameter("weight_hh_l0").unwrap().to_f64_vec();
    // [12, 4]: its 4 columns are orthonormal.
    for a in 0..4 {
        for c in 0..4 {
            let dot: f64 = (0..12).map(|r| w[r * 4 + a] * w[r * 4 + c]).sum();
            let want = if a == c { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-6, "({a},{c}) {dot}");
        }
    }
    assert!(
        step.parameter("bias_ih_l0")
            .unwrap()
            .to_f64_vec()
            .iter()
            .all(|&v| v == 0.0)
    );
}

/// `Scope::call` names the layer, its type and the user's line in a build error.
struct Misfit;

impl Module for Misfit {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        s.call("head", &Linear::new(5, 2), x)
    }
}

#[test]
fn scope_call_errors_name_the_layer_and_line() {
    let line = line!() - 6;
    let e = Trainer::new(Misfit, Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
        .input(DType::F32, &[4])
        .target(DType::F32, &[2])
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer \"head\" (Linear)"), "{e}");
    assert!(e.contains(&format!("vocabulary.rs:{line}")), "{e}");
    assert!(e.contains("expected 5 input features, got 4"), "{e}");
}

/// An f64 model with a frozen layer and a schedule resumes from a checkpoint bitwise:
/// the f64 tensors, the frozen weights and the schedule's position (the step count)
/// all come back.
#[test]
fn f64_frozen_scheduled_checkpoints_resume_bitwise() {
    use aotgrad::checkpoint::{self, Progress};
    let trainer = || {
        Trainer::new(mlp(), Loss::cross_entropy(), Optimizer::adam(0.01))
            .dtype(DType::F64)
            .input(DType::F64, &[4])
            .target(DType::I64, &[])
            .freeze("fc1.bias")
            .schedule(LrSchedule::one_cycle(0.05, 10))
    };
    let b = xy();
    let batch = Batch {
        x: b.x.cast(DType::F64),
        y: b.y,
    };
    let mut straight = trainer().compile(&Backend::Cpu { threads: 1 }).unwrap();
    for _ in 0..6 {
        straight.run(&batch).unwrap();
    }
    let mut first = trainer().compile(&Backend::Cpu { threads: 1 }).unwrap();
    for _ in 0..3 {
        first.run(&batch).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("aotgrad-vocab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f64.safetensors");
    let progress = Progress {
        epoch: 0,
        steps: first.steps(),
    };
    checkpoint::save(&first, &path, &progress).unwrap();
    let mut resumed = trainer()
        .seed(7)
        .compile(&Backend::Cpu { threads: 1 })
        .unwrap();
    checkpoint::load(&mut resumed, &path).unwrap();
    for _ in 0..3 {
        resumed.run(&batch).unwrap();
    }
    assert_eq!(resumed.parameters(), straight.parameters());
    assert_eq!(resumed.optimizer_state(), straight.optimizer_state());
    assert!(
        resumed
            .parameters()
            .iter()
            .all(|(_, t)| t.dtype() == DType::F64)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A parameter two groups match, and a group lr beside an optimizer lr of 0 (whose
/// ratio the group's lr is), are typed configuration errors.
#[test]
fn parameter_group_errors_are_typed() {
    use aotgrad::train::ParamGroup;
    let e = Trainer::new(mlp(), Loss::cross_entropy(), Optimizer::sgd(0.1))
        .input(DType::F32, &[4])
        .target(DType::I64, &[])
        .param_group(ParamGroup::new(&["fc1"]).lr(0.2))
        .param_group(ParamGroup::new(&["*.bias"]).weight_decay(0.0))
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("\"fc1.bias\" in one parameter group only"),
        "{e}"
    );
    let e = Trainer::new(mlp(), Loss::cross_entropy(), Optimizer::sgd(0.0))
        .input(DType::F32, &[4])
        .target(DType::I64, &[])
        .param_group(ParamGroup::new(&["fc2"]).lr(0.2))
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("a non-zero optimizer lr"), "{e}");
}

//! Training-step behaviour: short batches, gradient accumulation, runtime learning rate,
//! checked mode, dropout, schedulers and configuration errors.

use aotgrad::nn::{Dropout, Linear, ReLU, Sequential, Sigmoid};
use aotgrad::prelude::*;
use aotgrad::train::TrainError;

fn mlp() -> Sequential {
    Sequential::new()
        .push(Linear::new(3, 4))
        .push(ReLU)
        .push(Linear::new(4, 1))
}

fn batch(rows: &[[f32; 3]], ys: &[f32]) -> Batch {
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    Batch {
        x: Tensor::from_f32(&x, &[rows.len(), 3]).unwrap(),
        y: Tensor::from_f32(ys, &[ys.len(), 1]).unwrap(),
    }
}

fn trainer(optim: Optimizer) -> Trainer {
    Trainer::new(mlp(), Loss::mse(Reduction::Mean), optim)
        .input(DType::F32, &[3])
        .target(DType::F32, &[1])
        .seed(5)
}

const ROWS: [[f32; 3]; 4] = [
    [0.1, 0.2, -0.3],
    [1.0, -0.5, 0.25],
    [-0.7, 0.4, 0.9],
    [0.3, 0.3, 0.3],
];
const YS: [f32; 4] = [0.5, -1.0, 2.0, 0.0];

#[test]
fn a_short_last_batch_runs_through_the_same_program() {
    let mut step = trainer(Optimizer::sgd(0.1))
        .compile(&Backend::Interpreter)
        .unwrap();
    let n_nodes = step.step_graph().len();
    step.run(&batch(&ROWS[..3], &YS[..3])).unwrap();
    let short = batch(&ROWS[3..], &YS[3..]);
    let before = step.evaluate(&short).unwrap().loss;
    let loss = step.run(&short).unwrap();
    assert_eq!(loss, before, "the step reports the loss before its update");
    assert_eq!(step.steps(), 2);
    assert_eq!(step.step_graph().len(), n_nodes, "no recompilation");
}

#[test]
fn accumulating_two_half_batches_equals_one_full_batch() {
    let mut full = trainer(Optimizer::sgd_momentum(0.1, 0.9))
        .compile(&Backend::Interpreter)
        .unwrap();
    let mut acc = trainer(Optimizer::sgd_momentum(0.1, 0.9))
        .accumulate(2)
        .compile(&Backend::Interpreter)
        .unwrap();
    assert_eq!(full.parameters(), acc.parameters(), "same seed, same init");
    for _ in 0..3 {
        full.run(&batch(&ROWS, &YS)).unwrap();
        acc.run(&batch(&ROWS[..2], &YS[..2])).unwrap();
        assert_eq!(
            acc.steps(),
            full.steps() - 1,
            "no update after the first micro-batch"
        );
        acc.run(&batch(&ROWS[2..], &YS[2..])).unwrap();
    }
    assert_eq!(acc.steps(), 3);
    for ((n, a), (_, b)) in acc.parameters().iter().zip(full.parameters()) {
        assert!(a.allclose(b, 1e-5, 1e-6), "{n}: {a} vs {b}");
    }
}

#[test]
fn learning_rate_is_a_runtime_input() {
    let mut step = trainer(Optimizer::adam(0.01))
        .compile(&Backend::Interpreter)
        .unwrap();
    let p0 = step.parameters().to_vec();
    step.set_lr(0.0);
    step.run(&batch(&ROWS, &YS)).unwrap();
    assert_eq!(
        step.parameters(),
        &p0[..],
        "lr 0 leaves parameters unchanged"
    );
    step.set_lr(0.01);
    step.run(&batch(&ROWS, &YS)).unwrap();
    assert_ne!(step.parameters(), &p0[..]);
    assert!(aotgrad::text::print(step.step_graph()).contains("input \"lr\""));
}

#[test]
fn checked_mode_refuses_bad_probabilities_and_non_finite_losses() {
    // BCE on a raw linear output: values outside [0, 1].
    let mut step = Trainer::new(
        Linear::new(3, 1),
        Loss::bce(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[3])
    .target(DType::F32, &[1])
    .compile(&Backend::Interpreter)
    .unwrap();
    let p0 = step.parameters().to_vec();
    let big = batch(&[[50.0, 50.0, 50.0], [-50.0, -50.0, -50.0]], &[1.0, 0.0]);
    let e = step.run(&big).unwrap_err();
    assert!(
        matches!(e, TrainError::ProbabilityOutOfRange { step: 0, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("outside [0, 1]"), "{e}");
    assert_eq!(step.parameters(), &p0[..], "nothing was applied");
    assert_eq!(step.steps(), 0);

    // With a sigmoid the same batch is fine.
    let mut ok = Trainer::new(
        Sequential::new().push(Linear::new(3, 1)).push(Sigmoid),
        Loss::bce(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[3])
    .target(DType::F32, &[1])
    .compile(&Backend::Interpreter)
    .unwrap();
    ok.run(&big).unwrap();

    // A NaN input makes the loss NaN: an error, parameters untouched.
    let mut step = trainer(Optimizer::sgd(0.1))
        .compile(&Backend::Interpreter)
        .unwrap();
    let p0 = step.parameters().to_vec();
    let e = step
        .run(&batch(&[[f32::NAN, 0.0, 0.0]], &[1.0]))
        .unwrap_err();
    assert!(matches!(e, TrainError::NonFiniteLoss { .. }), "{e}");
    assert_eq!(step.parameters(), &p0[..]);
    // Unchecked, the NaN goes through (as in PyTorch).
    let mut raw = trainer(Optimizer::sgd(0.1))
        .checked(false)
        .compile(&Backend::Interpreter)
        .unwrap();
    assert!(
        raw.run(&batch(&[[f32::NAN, 0.0, 0.0]], &[1.0]))
            .unwrap()
            .is_nan()
    );
}

#[test]
fn dropout_is_seeded_active_in_training_and_off_in_evaluation() {
    let model = || Sequential::new().push(Dropout(0.5));
    let build = |seed| {
        Trainer::new(model(), Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
            .input(DType::F32, &[1000])
            .target(DType::F32, &[1000])
            .seed(seed)
            .compile(&Backend::Interpreter)
            .unwrap()
    };
    let ones = Batch {
        x: Tensor::from_f32(&[1.0; 1000], &[1, 1000]).unwrap(),
        y: Tensor::from_f32(&[0.0; 1000], &[1, 1000]).unwrap(),
    };
    let mut a = build(1);
    let mut b = build(1);
    let ra = a.run_full(&ones).unwrap().output.unwrap();
    let rb = b.run_full(&ones).unwrap().output.unwrap();
    assert_eq!(ra, rb, "same seed, same mask");
    let kept = ra.as_f32().unwrap().iter().filter(|&&v| v != 0.0).count();
    assert!((400..600).contains(&kept), "{kept} of 1000 kept at p = 0.5");
    assert!(
        ra.as_f32().unwrap().iter().all(|&v| v == 0.0 || v == 2.0),
        "survivors scaled by 2"
    );
    let next = a.run_full(&ones).unwrap().output.unwrap();
    assert_ne!(next, ra, "a new mask every step");
    let eval = a.evaluate(&ones).unwrap().output.unwrap();
    assert_eq!(eval, ones.x, "identity in evaluation");
    let other = build(2).run_full(&ones).unwrap().output.unwrap();
    assert_ne!(other, ra, "another seed, another mask");
}

#[test]
fn schedulers_follow_pytorch_formulas() {
    let mut s = Scheduler::StepLr {
        step_size: 2,
        gamma: 0.1,
    };
    let lrs: Vec<f64> = (0..4).map(|e| s.next_lr(1.0, 1.0, e, None)).collect();
    assert_eq!(lrs, [1.0, 0.1, 0.1, 0.010000000000000002]);
    let mut s = Scheduler::ExponentialLr { gamma: 0.5 };
    assert_eq!(s.next_lr(1.0, 1.0, 2, None), 0.125);
    let mut s = Scheduler::CosineAnnealingLr {
        t_max: 4,
        eta_min: 0.0,
    };
    assert!((s.next_lr(1.0, 1.0, 1, None) - 0.5).abs() < 1e-12);
    assert!(s.next_lr(1.0, 1.0, 3, None).abs() < 1e-12);
    let mut s = Scheduler::reduce_on_plateau(0.5, 1);
    let mut lr = 1.0;
    for (e, m) in [1.0, 0.9, 0.95, 0.95, 0.95].into_iter().enumerate() {
        lr = s.next_lr(1.0, lr, e, Some(m));
    }
    assert_eq!(lr, 0.5);
}

#[test]
fn configuration_errors_are_typed() {
    let e = Trainer::new(mlp(), Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
        .compile(&Backend::Interpreter)
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("input (call .input(dtype, dims) or .batch_input(name, dtype, dims))"),
        "{e}"
    );
    // A model whose layer sizes do not fit its input: the DSL error names the op.
    let e = Trainer::new(
        Linear::new(5, 1),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[3])
    .target(DType::F32, &[1])
    .compile(&Backend::Interpreter)
    .err()
    .unwrap();
    assert!(e.to_string().contains("building the step program"), "{e}");
    assert!(
        e.to_string()
            .contains("`linear` at tests/training/training.rs:"),
        "the user's line, not the library's: {e}"
    );
    assert!(
        e.to_string()
            .ends_with("expected 5 input features, got 3 (input f32[N,3])"),
        "{e}"
    );
    assert_eq!("gpu".parse::<Backend>(), Ok(Backend::Gpu));
    let e = "tpu".parse::<Backend>().unwrap_err();
    assert!(e.contains("unknown backend") && e.contains("gpu"), "{e}");
}

#[test]
fn early_stopping_and_k_fold() {
    use aotgrad::train::EarlyStopping;
    let mut es = EarlyStopping::new(2, 0.01, false);
    let stops: Vec<bool> = [1.0, 0.8, 0.795, 0.81, 0.7, 0.71, 0.705]
        .iter()
        .enumerate()
        .map(|(e, &m)| es.update(e, m))
        .collect();
    assert_eq!(stops, [false, false, false, true, false, false, true]);
    assert_eq!(es.best(), Some((0.7, 4)));
    let mut acc = EarlyStopping::new(1, 0.0, true);
    assert!(!acc.update(0, 0.5) && !acc.update(1, 0.6) && acc.update(2, 0.6));

    let folds = aotgrad::data::k_fold(10, 3, 4).unwrap();
    assert_eq!(
        folds.iter().map(|(_, v)| v.len()).collect::<Vec<_>>(),
        [4, 3, 3]
    );
    let mut all: Vec<usize> = folds.iter().flat_map(|(_, v)| v.clone()).collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    for (t, v) in &folds {
        assert_eq!(t.len() + v.len(), 10);
        assert!(t.iter().all(|i| !v.contains(i)));
    }
    assert!(aotgrad::data::k_fold(3, 4, 0).is_err());
}

// ---- what a new user hits (issue 26, items 11-14) ------------------------------------

/// `BatchNorm1d::new(8)` built the 2-D layer and refused `[N, 8]`.
#[test]
fn batch_norm_1d_takes_n_c_and_n_c_l() {
    use aotgrad::nn::BatchNorm1d;
    for (dims, rows) in [(vec![8usize], 4usize), (vec![8, 5], 3)] {
        let model = Sequential::new()
            .push(BatchNorm1d::new(8))
            .push(aotgrad::nn::Flatten::default())
            .push(Linear::new(dims.iter().product(), 1));
        let mut step = Trainer::new(model, Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
            .input(DType::F32, &dims)
            .target(DType::F32, &[1])
            .compile(&Backend::Interpreter)
            .unwrap();
        let per: usize = dims.iter().product();
        let x: Vec<f32> = (0..rows * per).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut shape = vec![rows];
        shape.extend(&dims);
        let b = Batch {
            x: Tensor::from_f32(&x, &shape).unwrap(),
            y: Tensor::from_f32(&vec![1.0; rows], &[rows, 1]).unwrap(),
        };
        assert!(step.run(&b).unwrap().is_finite());
        let names: Vec<String> = step.state_dict().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            &names[..5],
            [
                "0.weight",
                "0.bias",
                "0.running_mean",
                "0.running_var",
                "0.num_batches_tracked"
            ]
        );
    }
    // The wrong rank names the layer, its type and where it was added.
    let e = Trainer::new(
        Sequential::new().push_named("bn", BatchNorm1d::new(8)),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[8, 2, 2])
    .target(DType::F32, &[8, 2, 2])
    .compile(&Backend::Interpreter)
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("layer \"bn\" (BatchNorm1d): expected [N, 8] or [N, 8, L], got [N,8,2,2]"),
        "{e}"
    );
}

/// A training step on a batch of 1 filled `running_var` with NaN (0/0), poisoning every
/// later evaluation; PyTorch refuses it. Refused before anything runs, state untouched.
#[test]
fn batch_norm_refuses_one_value_per_channel_in_training() {
    use aotgrad::nn::{BatchNorm1d, BatchNorm2d, Conv2d};
    for backend in [Backend::Interpreter, Backend::Cpu { threads: 1 }] {
        let mut step = Trainer::new(
            Sequential::new()
                .push(Linear::new(3, 8))
                .push_named("bn1", BatchNorm1d::new(8))
                .push(Linear::new(8, 1)),
            Loss::mse(Reduction::Mean),
            Optimizer::sgd(0.1),
        )
        .input(DType::F32, &[3])
        .target(DType::F32, &[1])
        .compile(&backend)
        .unwrap();
        step.run(&batch(&ROWS, &YS)).unwrap();
        let before = (step.state_dict(), step.optimizer_state(), step.steps());
        let one = batch(&ROWS[..1], &YS[..1]);
        let e = step.run(&one).unwrap_err();
        assert!(matches!(e, TrainError::OneValuePerChannel { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "\"bn1\" (BatchNorm1d): expected more than 1 value per channel when training, \
             got input size [1, 8]"
        );
        assert!(step.gradients(Some(&one)).is_err());
        assert_eq!(
            (step.state_dict(), step.optimizer_state(), step.steps()),
            before
        );
        // Evaluation uses the running statistics: one sample is fine there.
        assert!(step.evaluate(&one).unwrap().loss.is_finite());
        // A batch of two is fine in training.
        step.run(&batch(&ROWS[..2], &YS[..2])).unwrap();
    }
    // With spatial positions, one sample has several values per channel: allowed.
    let conv = Sequential::new()
        .push(Conv2d::new(1, 2, 3))
        .push(BatchNorm2d::new(2))
        .push(aotgrad::nn::Flatten::default())
        .push(Linear::new(2 * 2 * 2, 1));
    let mut step = Trainer::new(conv, Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
        .input(DType::F32, &[1, 4, 4])
        .target(DType::F32, &[1])
        .compile(&Backend::Interpreter)
        .unwrap();
    let b = Batch {
        x: Tensor::from_f32(
            &(0..16).map(|v| v as f32).collect::<Vec<_>>(),
            &[1, 1, 4, 4],
        )
        .unwrap(),
        y: Tensor::from_f32(&[1.0], &[1, 1]).unwrap(),
    };
    assert!(step.run(&b).unwrap().is_finite());
}

/// A custom loss returning a non-scalar failed with "internal: gating the step updates:
/// operand shapes differ: f32[N,3] vs f32[]".
#[test]
fn a_non_scalar_loss_is_named_as_such() {
    let loss = Loss::custom("per_row", |o, t| (o - t).square());
    let e = Trainer::new(mlp(), loss, Optimizer::sgd(0.1))
        .input(DType::F32, &[3])
        .target(DType::F32, &[1])
        .compile(&Backend::Interpreter)
        .err()
        .unwrap();
    assert!(matches!(e, TrainError::LossNotScalar { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "the loss must be a scalar, but per_row returned f32[N,1] (reduce it, e.g. with \
         .mean_all())"
    );
}

/// Errors inside layers of a `Sequential` and inside built-in losses pointed at the
/// library's source (`src/nn/module.rs:261:5`, `src/train.rs:144:13`) and named no layer.
#[test]
fn errors_name_the_layer_and_the_users_line() {
    let model = Sequential::new()
        .push_named("fc1", Linear::new(3, 16))
        .push(ReLU)
        .push_named("fc2", Linear::new(3, 1)); // the line the error must name
    let line = line!() - 1;
    let e = Trainer::new(model, Loss::mse(Reduction::Mean), Optimizer::sgd(0.1))
        .input(DType::F32, &[3])
        .target(DType::F32, &[1])
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!("`linear` at tests/training/training.rs:{line}:")),
        "{e}"
    );
    assert!(
        e.contains("in model (Sequential) at tests/training/training.rs:")
            && e.contains("> layer \"fc2\" (Linear): expected 3 input features, got 16"),
        "{e}"
    );
    assert!(!e.contains("src/"), "no library line: {e}");
    // A nested Sequential names the path.
    let inner = Sequential::new().push(Linear::new(4, 2));
    let e = Trainer::new(
        Sequential::new()
            .push(Linear::new(3, 5))
            .push_named("head", inner),
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(0.1),
    )
    .input(DType::F32, &[3])
    .target(DType::F32, &[2])
    .compile(&Backend::Interpreter)
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("> layer \"head\" (Sequential) at tests/training/training.rs:")
            && e.contains("> layer \"0\" (Linear): expected 4 input features, got 5"),
        "{e}"
    );
    // A built-in loss: float class labels name the loss and the user's line.
    let loss = Loss::cross_entropy();
    let line = line!() - 1;
    let e = Trainer::new(mlp(), loss, Optimizer::sgd(0.1))
        .input(DType::F32, &[3])
        .target(DType::F32, &[])
        .compile(&Backend::Interpreter)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&format!(
            "`cross_entropy` at tests/training/training.rs:{line}:"
        )) && e.contains(
            "in loss cross_entropy(label_smoothing=0.0, reduction=mean): targets \
                 must be integer class indices (i64), got f32"
        ),
        "{e}"
    );
}

/// An out-of-range label said `%36 (gather): index 3 is out of range`; an empty batch
/// said "the loss is NaN".
#[test]
fn bad_labels_and_empty_batches_are_named() {
    for backend in [Backend::Interpreter, Backend::Cpu { threads: 1 }] {
        let mut step = Trainer::new(
            Sequential::new().push(Linear::new(3, 3)),
            Loss::cross_entropy(),
            Optimizer::adam(0.01),
        )
        .input(DType::F32, &[3])
        .target(DType::I64, &[])
        .compile(&backend)
        .unwrap();
        let x = Tensor::from_f32(&ROWS.concat(), &[4, 3]).unwrap();
        let good = Batch {
            x: x.clone(),
            y: Tensor::from_i64(&[0, 1, 2, 1], &[4]).unwrap(),
        };
        step.run(&good).unwrap();
        let before = step.state_dict();
        let bad = Batch {
            x: x.clone(),
            y: Tensor::from_i64(&[0, 1, 3, 1], &[4]).unwrap(),
        };
        let e = step.run(&bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            "target 3 is out of range for 3 classes (row 2 of the batch)",
            "{backend:?}"
        );
        assert_eq!(step.state_dict(), before);
        let e = step.evaluate(&bad).unwrap_err();
        assert!(
            matches!(e, TrainError::TargetOutOfRange { target: 3, .. }),
            "{e}"
        );
        let empty = Batch {
            x: Tensor::from_f32(&[], &[0, 3]).unwrap(),
            y: Tensor::from_i64(&[], &[0]).unwrap(),
        };
        let e = step.run(&empty).unwrap_err();
        assert_eq!(e.to_string(), "the batch is empty (x has shape [0, 3])");
        assert!(matches!(
            step.evaluate(&empty).unwrap_err(),
            TrainError::EmptyBatch { .. }
        ));
        assert_eq!(step.state_dict(), before);
    }
}

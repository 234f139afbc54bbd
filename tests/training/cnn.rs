//! Convolutional networks: PyTorch's output shapes, error paths, the window primitives
//! in the text format, batch norm's train/eval behaviour and buffers, LeNet on every
//! backend, and thread-count determinism of the convolution step.
//! (Values and gradients of every op against PyTorch: `tests/backends/torch_ops.rs`; LeNet's
//! training steps against PyTorch: `tests/backends/torch_models.rs`.)

use aotgrad::ir::{Conv2dOptions, Pool2dOptions};
use aotgrad::nn::{self, BatchNorm2d, Conv2d, Linear, MaxPool2d, ReLU, Sequential};
use aotgrad::prelude::*;

use crate::common_models;
use common_models::take_rows;

fn dims(v: Var<'_>) -> Vec<usize> {
    v.shape().as_known().unwrap()
}

#[test]
fn output_shapes_follow_pytorch() {
    let g = GraphBuilder::new("shapes");
    let x = g.input("x", DType::F32, shape![1, 1, 28, 28]);
    let w = g.param("w", DType::F32, shape![3, 1, 3, 3]);
    let conv = |o: Conv2dOptions| dims(x.conv2d(w, None, o));
    assert_eq!(conv(Conv2dOptions::default()), [1, 3, 26, 26]);
    assert_eq!(conv(Conv2dOptions::default().padding(1)), [1, 3, 28, 28]);
    assert_eq!(
        conv(Conv2dOptions::default().stride(2).padding(1)),
        [1, 3, 14, 14]
    );
    assert_eq!(
        conv(Conv2dOptions::default().dilation(2).padding([2, 0])),
        [1, 3, 28, 24]
    );
    let p = g.input("p", DType::F32, shape![1, 16, 14, 14]);
    assert_eq!(dims(p.max_pool2d(Pool2dOptions::new(2))), [1, 16, 7, 7]);
    assert_eq!(
        dims(p.max_pool2d(Pool2dOptions::new(3).stride(2).ceil_mode(true))),
        [1, 16, 7, 7]
    );
    assert_eq!(
        dims(p.avg_pool2d(Pool2dOptions::new(3).stride(2))),
        [1, 16, 6, 6]
    );
    assert_eq!(dims(p.adaptive_avg_pool2d(1)), [1, 16, 1, 1]);
    assert_eq!(dims(p.adaptive_avg_pool2d(7)), [1, 16, 7, 7]);
    // Unbatched [C, H, W] as PyTorch accepts it.
    let u = g.input("u", DType::F32, shape![1, 28, 28]);
    assert_eq!(
        dims(u.conv2d(w, None, Conv2dOptions::default())),
        [3, 26, 26]
    );
    // F.unfold's layout: [N, C*kh*kw, L], and F.fold back.
    let cols = x.unfold2d(5, 1, 0, 1);
    assert_eq!(dims(cols), [1, 25, 576]);
    assert_eq!(dims(cols.fold2d(28, 5, 1, 0, 1)), [1, 1, 28, 28]);
    g.finish().unwrap();
}

/// Each mistake is a typed build error naming the op and this file's line.
#[test]
fn bad_geometry_is_a_located_error() {
    type Build = Box<dyn Fn(&GraphBuilder)>;
    let cases: Vec<(&str, Build)> = vec![
        (
            "groups",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let w = g.param("w", DType::F32, shape![4, 3, 3, 3]);
                x.conv2d(w, None, Conv2dOptions::default().groups(2));
            }),
        ),
        (
            "needs weight [O, 2, kh, kw]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 2, 8, 8]);
                let w = g.param("w", DType::F32, shape![4, 3, 3, 3]);
                x.conv2d(w, None, Conv2dOptions::default());
            }),
        ),
        (
            "does not fit",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 1, 4, 4]);
                let w = g.param("w", DType::F32, shape![1, 1, 5, 5]);
                x.conv2d(w, None, Conv2dOptions::default());
            }),
        ),
        (
            "at most half",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 1, 8, 8]);
                x.max_pool2d(Pool2dOptions::new(2).padding(2));
            }),
        ),
        (
            "[N, C, H, W]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 64]);
                x.max_pool2d(Pool2dOptions::new(2));
            }),
        ),
        (
            "bias must be [4]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let w = g.param("w", DType::F32, shape![4, 3, 3, 3]);
                let b = g.param("b", DType::F32, shape![3]);
                x.conv2d(w, Some(b), Conv2dOptions::default());
            }),
        ),
        (
            "weight must be [out, in/groups, kh, kw]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let w = g.param("w", DType::F32, shape![4, 27]);
                x.conv2d(w, None, Conv2dOptions::default());
            }),
        ),
        (
            "expected [N, C*25, 16]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 24, 16]);
                x.fold2d(8, 5, 1, 0, 1);
            }),
        ),
        (
            "needs a floating-point input",
            Box::new(|g| {
                let x = g.input("x", DType::I64, shape!["N", 1, 8, 8]);
                x.avg_pool2d(Pool2dOptions::new(2));
            }),
        ),
        (
            "per-channel operands must be [3]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let w = g.param("w", DType::F32, shape![4]);
                x.batch_norm(aotgrad::ir::BatchNorm {
                    running_mean: None,
                    running_var: None,
                    weight: Some(w),
                    bias: None,
                    training: true,
                    momentum: 0.1,
                    eps: 1e-5,
                });
            }),
        ),
        (
            "expected [N, 4, H, W]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let s = nn::Scope::new(g, nn::module::Mode::Train, true);
                BatchNorm2d::new(4).forward(&s, x);
            }),
        ),
        (
            "probability must be in [0, 1]",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let s = nn::Scope::new(g, nn::module::Mode::Train, true);
                nn::Dropout2d(1.5).forward(&s, x);
            }),
        ),
        (
            "must be divisible by groups 2",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 8, 8]);
                let s = nn::Scope::new(g, nn::module::Mode::Train, true);
                Conv2d::new(3, 4, 3).groups(2).forward(&s, x);
            }),
        ),
        (
            "uneven bins",
            Box::new(|g| {
                let x = g.input("x", DType::F32, shape!["N", 3, 7, 7]);
                x.adaptive_avg_pool2d(3);
            }),
        ),
    ];
    for (want, build) in cases {
        let g = GraphBuilder::new("bad");
        build(&g);
        let e = g.finish().expect_err(want);
        let text = e.to_string();
        assert!(text.contains(want), "{want:?} not in {text}");
        assert!(
            text.contains("tests/training/cnn.rs"),
            "no user location in {text}"
        );
    }
}

#[test]
fn window_ops_print_and_parse() {
    let src = "graph w {
  %0: f32[N,2,7,7] = input \"x\"
  %1: f32[N,2,3,3,3,3] = unfold %0 {kernel=[3, 3], stride=[2, 2], dilation=[1, 1]}
  %2: f32[N,2,7,7] = fold %1 {kernel=[3, 3], stride=[2, 2], dilation=[1, 1], size=[7, 7]}
  output \"y\" = %2
}
";
    let g = aotgrad::text::parse(src).unwrap();
    assert_eq!(aotgrad::text::print(&g), src);
    let bad = src.replace("size=[7, 7]", "size=[9, 9]");
    let e = aotgrad::text::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("fold window"), "{e}");
}

fn bn_net() -> Sequential {
    Sequential::new()
        .push(Conv2d::new(1, 2, 3))
        .push(BatchNorm2d::new(2))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(nn::Flatten::default())
        .push(Linear::new(2 * 3 * 3, 3))
}

fn images(n: usize, seed: u64) -> Batch {
    let mut rng = aotgrad::data::Rng::new(seed);
    let x: Vec<f32> = (0..n * 64)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    let y: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    Batch {
        x: Tensor::from_f32(&x, &[n, 1, 8, 8]).unwrap(),
        y: Tensor::from_i64(&y, &[n]).unwrap(),
    }
}

fn bn_trainer() -> Trainer {
    Trainer::new(
        bn_net(),
        Loss::cross_entropy(),
        Optimizer::sgd_momentum(0.1, 0.9),
    )
    .input(DType::F32, &[1, 8, 8])
    .target(DType::I64, &[])
}

/// Batch norm's buffers: in the state dict in PyTorch's order, updated by training steps
/// with the batch statistics (unbiased variance, momentum 0.1), read (not updated) by
/// evaluation, kept out of the optimizer state, and restored by `load_state_dict`.
#[test]
fn batch_norm_buffers_follow_pytorch() {
    let mut step = bn_trainer().compile(&Backend::Cpu { threads: 1 }).unwrap();
    let names: Vec<String> = step.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
            "5.weight",
            "5.bias"
        ]
    );
    assert!(
        step.optimizer_state()
            .iter()
            .all(|(n, _)| !n.contains("running") && !n.contains("tracked"))
    );
    let batch = images(6, 1);
    // The running statistics after one step, from the conv output computed by hand.
    let conv_out = {
        let g = GraphBuilder::new("conv");
        let x = g.input("x", DType::F32, shape![6, 1, 8, 8]);
        let w = g.input("w", DType::F32, shape![2, 1, 3, 3]);
        let b = g.input("b", DType::F32, shape![2]);
        g.output("y", x.conv2d(w, Some(b), Conv2dOptions::default()));
        let sd = step.state_dict();
        let get = |n: &str| sd.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let feeds = [
            ("x".to_string(), batch.x.clone()),
            ("w".to_string(), get("0.weight")),
            ("b".to_string(), get("0.bias")),
        ];
        let ev = aotgrad::run(&g.finish().unwrap(), &feeds.into_iter().collect()).unwrap();
        ev.output("y").unwrap().to_f64_vec()
    };
    step.run(&batch).unwrap();
    let sd = step.state_dict();
    let get = |n: &str| sd.iter().find(|(k, _)| k == n).unwrap().1.to_f64_vec();
    let per = 6 * 36;
    for c in 0..2 {
        let vals: Vec<f64> = (0..6)
            .flat_map(|n| conv_out[(n * 2 + c) * 36..(n * 2 + c + 1) * 36].to_vec())
            .collect();
        let mean = vals.iter().sum::<f64>() / per as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (per - 1) as f64;
        assert!((get("1.running_mean")[c] - 0.1 * mean).abs() < 1e-5);
        assert!((get("1.running_var")[c] - (0.9 + 0.1 * var)).abs() < 1e-5);
    }
    assert_eq!(get("1.num_batches_tracked"), [1.0]);
    // Evaluation reads the buffers and leaves them alone; train and eval outputs differ.
    let before = step.state_dict();
    let eval = step.evaluate(&batch).unwrap();
    assert!(eval.loss.is_finite());
    assert_eq!(step.state_dict(), before);
    let p_eval = step.predict(&batch.x).unwrap();
    let p_train = step.run_full(&batch).unwrap().output.unwrap();
    assert_ne!(p_eval, p_train);
    // A state dict round trip restores the buffers too.
    let mut fresh = bn_trainer().compile(&Backend::Interpreter).unwrap();
    fresh.load_state_dict(&before).unwrap();
    assert_eq!(fresh.state_dict(), before);
    let mut missing = before.clone();
    missing.retain(|(n, _)| n != "1.running_var");
    let e = fresh.load_state_dict(&missing).unwrap_err().to_string();
    assert!(e.contains("missing \"1.running_var\""), "{e}");
}

/// LeNet with batch norm and dropout trains the same on the interpreter, the CPU and the
/// GPU (full and short batches; parameters and buffers), and its eval program agrees.
#[test]
fn lenet_bn_agrees_across_backends() {
    let mut backends = vec![Backend::Interpreter, Backend::Cpu { threads: 2 }];
    if aotgrad::runtime::gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
    {
        backends.push(Backend::Gpu);
    }
    let mut rng = aotgrad::data::Rng::new(3);
    let n = 12;
    let x: Vec<f32> = (0..n * 784)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
        .collect();
    let batch = Batch {
        x: Tensor::from_f32(&x, &[n, 1, 28, 28]).unwrap(),
        y: Tensor::from_i64(&(0..n as i64).map(|i| i % 10).collect::<Vec<_>>(), &[n]).unwrap(),
    };
    let short = Batch {
        x: take_rows(&batch.x, 5),
        y: take_rows(&batch.y, 5),
    };
    let mut runs = Vec::new();
    for backend in &backends {
        let mut step = Trainer::new(
            nn::models::lenet_bn(),
            Loss::cross_entropy(),
            Optimizer::sgd_momentum(0.05, 0.5),
        )
        .input(DType::F32, &[1, 28, 28])
        .target(DType::I64, &[])
        .seed(7)
        .compile(backend)
        .unwrap();
        let mut losses = Vec::new();
        for b in [&batch, &short, &batch] {
            losses.push(step.run(b).unwrap());
        }
        losses.push(step.evaluate(&batch).unwrap().loss);
        runs.push((losses, step.state_dict()));
    }
    let reference = &runs[0];
    for (backend, run) in backends.iter().zip(&runs).skip(1) {
        let tol = if *backend == Backend::Gpu { 1e-3 } else { 1e-4 };
        for (a, b) in reference.0.iter().zip(&run.0) {
            assert!(
                (a - b).abs() <= tol * (1.0 + a.abs()),
                "{backend:?}: loss {a} vs {b}"
            );
        }
        for ((name, a), (_, b)) in reference.1.iter().zip(&run.1) {
            assert!(a.allclose(b, tol, tol), "{backend:?}: {name} differs");
        }
    }
}

/// The convolution step (per-sample GEMMs run in parallel over the batch, native
/// pooling kernels) gives bitwise-identical weights with 1 and 2 threads.
#[test]
fn lenet_weights_do_not_depend_on_the_thread_count() {
    let mut finals = Vec::new();
    for threads in [1, 2] {
        let (trainer, batch) = aotgrad::bench::setup("lenet").unwrap();
        let mut step = trainer.compile(&Backend::Cpu { threads }).unwrap();
        for _ in 0..3 {
            step.run(&batch).unwrap();
        }
        let bits: Vec<u64> = step
            .parameters()
            .iter()
            .flat_map(|(_, t)| t.to_f64_vec())
            .map(f64::to_bits)
            .collect();
        finals.push(bits);
    }
    assert_eq!(finals[0], finals[1]);
}

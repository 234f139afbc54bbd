//! Gradient descent by hand (course programs P01, P02, P03 and P29): the model
//! `ŷ = x·w`, its loss and its *hand-written* gradient built as aotgrad graphs and run
//! on the reference interpreter, whose sums run left to right like the course's Python
//! loops, so the f64 digits are the course's.
//!
//! - P01, the loss landscape: the MSE for w = 0.0, 0.1, ..., 4.0 on x = [1, 2, 3], y = 2x;
//! - P02, batch gradient descent: w = 1, lr 0.01, 100 epochs of
//!   `w -= lr · mean(2x(xw − y))`, the loss printed before each update;
//! - P03, stochastic gradient descent: the same update per sample, the last sample's loss
//!   printed after its update;
//! - P04, the same SGD with autograd in f32 (`w = torch.Tensor([1.0])`, per sample
//!   `l = (x*w - y)**2; l.backward(); w.data -= 0.01 * w.grad`): a compiled training step
//!   per sample, printing each sample's gradient and the last sample's loss in epochs 0
//!   and 99 with PyTorch's digits;
//! - P29, the numpy family on `y ≈ 10x + noise` (random data; seeded here): per-sample
//!   updates with lr 1, one random sample per epoch, and mini-batches of 10 with lr 1 and
//!   0.1 (gradient `2w·mean(x²) − 2·mean(xy)`), each fit printed.

use std::collections::HashMap;

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::cli::pictures::{self, Picture};
use aotgrad::cli::pyrepr::py_repr as r;
use aotgrad::data::Rng;
use aotgrad::nn::{Init, Module, Scope};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Gradient descent by hand: loss landscape, batch GD, SGD (course P01-P03, P29)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "gradient_descent",
    takes: &[&["--epochs", "--check", "--seed", "--plot"]],
    defaults: &[("--epochs", "100")],
};

/// `loss = mean((x·w − y)²)` and `grad = mean(2x(x·w − y))` (P02's order of operations:
/// a left-to-right sum, then one division), with `update w = w − lr·grad`.
fn gd_graph(n: usize, lr: f64) -> Result<Graph, aotgrad::BuildError> {
    let b = GraphBuilder::new("gradient_descent");
    let x = b.input("x", DType::F64, shape![n]);
    let y = b.input("y", DType::F64, shape![n]);
    let w = b.param("w", DType::F64, shape![]);
    let err = x * w - y;
    b.output("loss", err.square().sum_all() / n as f64);
    let grad = (x * 2.0 * err).sum_all() / n as f64;
    b.output("grad", grad);
    b.update(w, w - grad * lr);
    b.finish()
}

struct Program {
    graph: Graph,
    feeds: HashMap<String, Tensor>,
}

impl Program {
    fn new(
        graph: Graph,
        x: &[f64],
        y: &[f64],
        w: f64,
    ) -> Result<Program, Box<dyn std::error::Error>> {
        let feeds = [
            ("x".to_string(), Tensor::from_f64(x, &[x.len()])?),
            ("y".to_string(), Tensor::from_f64(y, &[y.len()])?),
            ("w".to_string(), Tensor::from_f64(&[w], &[])?),
        ]
        .into();
        Ok(Program { graph, feeds })
    }

    fn w(&self) -> f64 {
        self.feeds["w"].item().unwrap_or(f64::NAN)
    }

    fn set_data(&mut self, x: &[f64], y: &[f64]) -> Result<(), Box<dyn std::error::Error>> {
        self.feeds
            .insert("x".into(), Tensor::from_f64(x, &[x.len()])?);
        self.feeds
            .insert("y".into(), Tensor::from_f64(y, &[y.len()])?);
        Ok(())
    }

    /// One update; returns the loss before it.
    fn step(&mut self) -> Result<f64, Box<dyn std::error::Error>> {
        let ev = aotgrad::run(&self.graph, &self.feeds)?;
        let w = ev.update("w").ok_or("no update of w")?.clone();
        self.feeds.insert("w".into(), w);
        Ok(ev.output("loss").and_then(Tensor::item).unwrap_or(f64::NAN))
    }

    /// The loss at the current w, without updating.
    fn loss(&self) -> Result<f64, Box<dyn std::error::Error>> {
        let ev = aotgrad::run(&self.graph, &self.feeds)?;
        Ok(ev.output("loss").and_then(Tensor::item).unwrap_or(f64::NAN))
    }
}

/// `ŷ = x * w` with `w: f32[1] = [1.0]` (P04).
struct TimesW;

impl Module for TimesW {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x * s.param("w", &[1], Init::Constant(1.0))
    }
}

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(100);
    let (xs, ys) = ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]);

    println!("== P01 loss landscape: MSE of y = x*w");
    let mut landscape = Program::new(gd_graph(3, 0.0)?, &xs, &ys, 0.0)?;
    let mut curve = Vec::new();
    for i in 0..41 {
        let w = 0.0 + i as f64 * 0.1;
        landscape
            .feeds
            .insert("w".into(), Tensor::from_f64(&[w], &[])?);
        let mse = landscape.loss()?;
        println!("w={} MSE={}", r(w), r(mse));
        curve.push((w, mse));
    }
    if let Some(dir) = &a.plot {
        // The course's picture: MSE against w, lowest at w = 2.
        let picture = Picture::Chart {
            title: "P01: the loss landscape of y = x·w".into(),
            x_label: "w".into(),
            y_label: "MSE".into(),
            lines: vec![("MSE".into(), curve)],
            points: vec![],
            rules: vec![],
        };
        for f in pictures::save(dir, "loss_vs_w", &picture)? {
            println!("wrote {}", f.display());
        }
    }

    println!("== P02 batch gradient descent, lr 0.01");
    let mut gd = Program::new(gd_graph(3, 0.01)?, &xs, &ys, 1.0)?;
    println!("Predict (before training) 4 {}", r(4.0 * gd.w()));
    let mut p02 = (f64::NAN, f64::NAN);
    for epoch in 0..epochs {
        let loss = gd.step()?;
        println!("Epoch: {epoch} w={} loss={}", r(gd.w()), r(loss));
        p02 = (gd.w(), loss);
    }
    println!("Predict (after training) 4 {}", r(4.0 * gd.w()));

    println!("== P03 stochastic gradient descent, lr 0.01");
    let mut sgd = Program::new(gd_graph(1, 0.01)?, &xs[..1], &ys[..1], 1.0)?;
    let mut p03 = (f64::NAN, f64::NAN);
    for epoch in 0..epochs {
        let mut loss = f64::NAN;
        for (x, y) in xs.iter().zip(&ys) {
            sgd.set_data(&[*x], &[*y])?;
            sgd.step()?;
            // The course prints the sample's loss after its update.
            loss = sgd.loss()?;
        }
        println!("Epoch: {epoch} w={} loss={}", r(sgd.w()), r(loss));
        p03 = (sgd.w(), loss);
    }
    println!("Predict (after training) 4 {}", r(4.0 * sgd.w()));

    println!("== P04 SGD with autograd (f32), lr 0.01");
    let mut step = Trainer::new(
        TimesW,
        Loss::custom("squared error", |o, y| (o - y).square().sum_all()),
        Optimizer::sgd(0.01),
    )
    .input(DType::F32, &[])
    .target(DType::F32, &[])
    .compile(&Backend::Interpreter)?;
    let w_of = |step: &TrainStep| {
        step.parameter("w")
            .and_then(Tensor::item)
            .unwrap_or(f64::NAN)
    };
    println!("predict (before training) 4 {}", r(4.0 * w_of(&step)));
    let mut p04 = f64::NAN;
    for epoch in 0..epochs {
        for (x, y) in xs.iter().zip(&ys) {
            let batch = Batch {
                x: Tensor::from_f32(&[*x as f32], &[1])?,
                y: Tensor::from_f32(&[*y as f32], &[1])?,
            };
            if epoch == 0 || epoch + 1 == epochs {
                let (_, grads) = step.gradients(Some(&batch))?;
                let g = grads[0].1.item().unwrap_or(f64::NAN);
                println!("\tgrad:  {} {} {}", r(*x), r(*y), r(g));
            }
            p04 = step.run(&batch)?;
        }
        if epoch == 0 || epoch + 1 == epochs {
            println!("progress: {epoch} {}", r(p04));
        }
    }
    let pred = step.predict(&Tensor::from_f32(&[4.0], &[1])?)?;
    println!(
        "predict (after training) 4 {}",
        r(pred.item().unwrap_or(f64::NAN))
    );

    println!(
        "== P29 the numpy family on y = 10x + noise (seed {})",
        a.seed
    );
    let mut rng = Rng::new(a.seed);
    let x: Vec<f64> = (0..100)
        .map(|_| (1 + (rng.next_u64() % 99)) as f64 / 100.0)
        .collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&x| (10.0 * x * 100.0 + rng.uniform() * 100.0) / 100.0)
        .collect();
    let mut fits = Vec::new();
    // (a) one epoch of per-sample updates, lr 1.
    let mut p = Program::new(gd_graph(1, 1.0)?, &x[..1], &y[..1], 0.1)?;
    for (xi, yi) in x.iter().zip(&y) {
        p.set_data(&[*xi], &[*yi])?;
        p.step()?;
    }
    fits.push(("(a) per sample, lr 1", p.w()));
    // (b) 200 epochs of one random sample each, lr 1.
    let mut p = Program::new(gd_graph(1, 1.0)?, &x[..1], &y[..1], 0.1)?;
    for _ in 0..200 {
        let i = (rng.next_u64() % 100) as usize;
        p.set_data(&x[i..=i], &y[i..=i])?;
        p.step()?;
    }
    fits.push(("(b) one random sample per epoch, lr 1", p.w()));
    // (c), (d) 200 epochs of mini-batches of 10 after a permutation.
    for (name, lr) in [
        ("(c) mini-batches of 10, lr 1", 1.0),
        ("(d) mini-batches of 10, lr 0.1", 0.1),
    ] {
        let mut p = Program::new(gd_graph(10, lr)?, &x[..10], &y[..10], 0.1)?;
        for _ in 0..200 {
            let perm = rng.permutation(100);
            for chunk in perm.chunks(10) {
                let bx: Vec<f64> = chunk.iter().map(|&i| x[i]).collect();
                let by: Vec<f64> = chunk.iter().map(|&i| y[i]).collect();
                p.set_data(&bx, &by)?;
                p.step()?;
            }
        }
        fits.push((name, p.w()));
    }
    for (name, w) in &fits {
        println!("{name}: w = {w:.4}");
    }
    if let Some(dir) = &a.plot {
        // The course plots each fit over the data.
        let picture = Picture::Chart {
            title: "P29: y ≈ 10x + noise, four ways of gradient descent".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: fits
                .iter()
                .map(|(name, w)| (name.to_string(), vec![(0.0, 0.0), (1.0, *w)]))
                .collect(),
            points: vec![(
                "data".into(),
                x.iter().copied().zip(y.iter().copied()).collect(),
            )],
            rules: vec![],
        };
        for f in pictures::save(dir, "p29_fits", &picture)? {
            println!("wrote {}", f.display());
        }
    }
    println!(
        "final: p02_w={} p02_loss={} p03_w={} p03_loss={} p29_w={:.4}",
        r(p02.0),
        r(p02.1),
        r(p03.0),
        r(p03.1),
        fits[3].1
    );
    // y = 10x + U(0, 1) on x in (0, 1]: the least-squares slope through 0 is about 10.7.
    check(
        &a,
        fits.iter().all(|(_, w)| (9.0..12.5).contains(w)),
        "a P29 fit is off",
    )?;
    check(
        &a,
        epochs < 100 || (p02.0 - 1.9999444396553017).abs() < 1e-15,
        "P02's w",
    )?;
    Ok(())
}

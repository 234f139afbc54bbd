//! `nn.Parameter` models trained one sample at a time, and `TensorDataset` +
//! `DataLoader` on 0-d parameters (course programs P31-P33 and P36). Data:
//! x = randint(1, 100, 100), y = 10x + rand·100, both divided by 100 (seeded here).
//!
//! - P31: `ŷ = w·x`, w = 0.1, SGD lr 0.01, MSE, one sample per step, 200 epochs: w
//!   approaches the least-squares slope (about 10.7);
//! - P32: the same with y + 100 before scaling and still no bias: it cannot fit (w ≈ 12.3);
//! - P33: negated data x = −randint, y = −(10x + rand·100) + 100 with a bias,
//!   `ŷ = w·x + b` (w ≈ −10.2... as the course's data give);
//! - P36: `TensorDataset(x, y)` of 1-D tensors, `DataLoader(batch_size=5, shuffle=True)`,
//!   0-d w and b, `ŷ = w * x_batch + b` (a 0-d parameter times a `[5]` batch), SGD lr 0.1,
//!   MSE, 200 epochs (w ≈ 10.1, b ≈ 1.5).
//!
//! Each compiled step runs tens of thousands of times on one sample; the output shows
//! what one call costs.

use std::time::Instant;

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::data::{DataLoader, Rng, TensorDataset};
use aotgrad::nn::{Init, Module, Scope};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "nn.Parameter per sample (P31-P33) and DataLoader on 0-d parameters (P36)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "parameters_per_sample",
    takes: &[&["--epochs", "--check", "--seed", "--backend", "--threads"]],
    defaults: &[("--epochs", "200")],
};

/// `ŷ = w·x (+ b)` with 0-d parameters initialised to 0.1.
struct Scalar {
    bias: bool,
}

impl Module for Scalar {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let w = s.param("w", &[], Init::Constant(0.1));
        let y = x * w;
        if self.bias {
            y + s.param("b", &[], Init::Constant(0.1))
        } else {
            y
        }
    }
}

fn trainer(bias: bool, lr: f64) -> Trainer {
    Trainer::new(
        Scalar { bias },
        Loss::mse(Reduction::Mean),
        Optimizer::sgd(lr),
    )
    .input(DType::F32, &[])
    .target(DType::F32, &[])
}

fn item(step: &TrainStep, name: &str) -> f64 {
    step.parameter(name)
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN)
}

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(200);
    let backend = a.backend();
    let mut rng = Rng::new(a.seed);
    let ints: Vec<f64> = (0..100).map(|_| (1 + rng.below(99)) as f64).collect();
    let noise: Vec<f64> = (0..100).map(|_| rng.uniform() * 100.0).collect();
    let data = |sign: f64, offset: f64| -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = ints.iter().map(|&i| (sign * i / 100.0) as f32).collect();
        let y: Vec<f32> = ints
            .iter()
            .zip(&noise)
            .map(|(&i, &n)| ((sign * (10.0 * sign * i + n) + offset) / 100.0) as f32)
            .collect();
        (x, y)
    };
    let mut results = Vec::new();
    let mut calls = 0usize;
    let started = Instant::now();
    for (name, (x, y), bias) in [
        ("P31 y = 10x + noise, no bias", data(1.0, 0.0), false),
        ("P32 y + 100, no bias (cannot fit)", data(1.0, 100.0), false),
        ("P33 negated data, with a bias", data(-1.0, 100.0), true),
    ] {
        let mut step = trainer(bias, 0.01).compile(&backend)?;
        let t = Instant::now();
        for _ in 0..epochs {
            for (xi, yi) in x.iter().zip(&y) {
                step.run(&Batch {
                    x: Tensor::from_f32(&[*xi], &[1])?,
                    y: Tensor::from_f32(&[*yi], &[1])?,
                })?;
            }
        }
        let n = epochs * x.len();
        calls += n;
        let w = item(&step, "w");
        let b = bias.then(|| item(&step, "b"));
        println!(
            "{name}: w = {w:.4}{} ({n} steps, {:.2} us per step)",
            b.map_or(String::new(), |b| format!(", b = {b:.4}")),
            t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
        );
        results.push(w);
    }

    // P36: TensorDataset + DataLoader, batch 5, shuffled, 0-d w and b.
    let (x, y) = data(1.0, 100.0);
    let ds = TensorDataset::new(Tensor::from_f32(&x, &[100])?, Tensor::from_f32(&y, &[100])?)?;
    let first16: Vec<String> = (0..16)
        .map(|i| format!("({:.2}, {:.4})", x[i], y[i]))
        .collect();
    println!("P36 dataset[:16] = {}", first16.join(" "));
    let loader = DataLoader::new(&ds, 5).shuffle(a.seed);
    if let Some(b) = loader.epoch(0).next() {
        let b = b?;
        println!("P36 first batch: x = {}, y = {}", b.x, b.y);
    }
    let mut step = trainer(true, 0.1).compile(&backend)?;
    let t = Instant::now();
    for epoch in 0..epochs {
        step.run_epoch(loader.epoch(epoch))?;
    }
    let n = epochs * loader.num_batches();
    calls += n;
    let (w, b) = (item(&step, "w"), item(&step, "b"));
    println!(
        "P36 w = {w:.4}, b = {b:.4} ({n} steps, {:.2} us per step with the loader)",
        t.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64
    );
    println!(
        "{calls} compiled steps in {:.2} s on {backend:?}",
        started.elapsed().as_secs_f64()
    );
    println!(
        "final: p31_w={:.4} p32_w={:.4} p33_w={:.4} p36_w={w:.4} p36_b={b:.4}",
        results[0], results[1], results[2]
    );
    check(
        &a,
        epochs < 200 || (10.0..11.5).contains(&results[0]),
        "P31's w",
    )?;
    check(
        &a,
        epochs < 200 || results[1] > results[0] + 1.0,
        "P32 fits too well",
    )?;
    check(&a, epochs < 200 || (9.0..11.5).contains(&w), "P36's w")?;
    Ok(())
}

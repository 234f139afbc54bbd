//! Multivariate linear regression by full-batch gradient descent, in f64 end to end
//! (course program P21): `ŷ = w0 + w1·x1 + w2·x2` on seven samples, parameters from
//! zero, MSE, lr 0.001, 2 000 000 iterations. The course computes it in numpy's f64;
//! this port trains an f64 `Linear(2, 1)` (`Trainer::dtype(DType::F64)`), so its loss at
//! iteration 0 is the course's `14631.285714285714` digit for digit, and it prints the
//! loss every 5000 iterations and the final parameters as the course does. The time per
//! compiled step is printed at the end (`--epochs N` runs N iterations).

use std::time::Instant;

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::cli::pyrepr::py_repr as r;
use aotgrad::nn::{Init, Linear};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Multivariate linear regression in f64, 2 000 000 iterations (course P21)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "multivariate_regression",
    takes: &[TRAINING_FLAGS],
    defaults: &[
        ("--epochs", "2000000"),
        ("--optim", "sgd"),
        ("--lr", "0.001"),
    ],
};

const X: [[f64; 2]; 7] = [
    [10.0, 3.0],
    [20.0, 3.0],
    [25.0, 3.0],
    [28.0, 2.5],
    [30.0, 2.0],
    [35.0, 2.5],
    [40.0, 2.5],
];
const Y: [f64; 7] = [60.0, 85.0, 100.0, 120.0, 140.0, 145.0, 163.0];

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let iterations = a.epochs.unwrap_or(2_000_000);
    let lr = a.lr.unwrap_or(0.001);
    let mut step = Trainer::new(
        Linear::new(2, 1),
        Loss::mse(Reduction::Mean),
        Optimizer::from_name(a.optim.as_deref().unwrap_or("sgd"), lr, 0.0)?,
    )
    .name("multivariate_regression")
    .dtype(DType::F64)
    .input(DType::F64, &[2])
    .target(DType::F64, &[1])
    .init("*", Init::Constant(0.0))
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss"])?;
    let flat: Vec<f64> = X.iter().flatten().copied().collect();
    let batch = Batch {
        x: Tensor::from_f64(&flat, &[7, 2])?,
        y: Tensor::from_f64(&Y, &[7, 1])?,
    };
    let started = Instant::now();
    let (mut first, mut loss) = (f64::NAN, f64::NAN);
    for i in 0..iterations {
        loss = step.run(&batch)?;
        if i == 0 {
            first = loss;
        }
        if i % 5000 == 0 {
            println!("iteration {i}: loss = {}", r(loss));
            run.record(&step, 0, &[("loss", loss)])?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let w = step
        .parameter("weight")
        .map(Tensor::to_f64_vec)
        .unwrap_or_default();
    let b = step
        .parameter("bias")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let (w1, w2) = (
        w.first().copied().unwrap_or(f64::NAN),
        w.get(1).copied().unwrap_or(f64::NAN),
    );
    println!(
        "final parameters: w0 = {}, w1 = {}, w2 = {}",
        r(b),
        r(w1),
        r(w2)
    );
    println!(
        "{iterations} steps in {elapsed:.2} s ({:.3} us per compiled step, {:?})",
        elapsed * 1e6 / iterations.max(1) as f64,
        step.backend()
    );
    run.finish()?;
    println!("final: loss={loss} w0={b} w1={w1} w2={w2} first_loss={first}");
    check(
        &a,
        first == 14631.285714285714,
        "iteration 0's loss is not the course's",
    )?;
    check(&a, loss < first, "the loss did not decrease")?;
    Ok(())
}

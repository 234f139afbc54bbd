//! Adam (lr 1e-3) on Himmelblau's function f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2
//! from (0, 0): the parameters are the point itself; 20000 compiled steps reach the
//! minimum at (3, 2).

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::nn::Init;
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Minimise Himmelblau's function with Adam (--epochs counts steps)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "himmelblau",
    takes: &[TRAINING_FLAGS],
    defaults: &[
        ("--epochs", "20000 (steps: the objective has no data)"),
        ("--optim", "adam"),
        ("--lr", "1e-3"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let steps = a.epochs.unwrap_or(20000);
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("adam"),
        a.lr.unwrap_or(1e-3),
        0.0,
    )?;
    let mut step = Trainer::minimize(
        |s| {
            let x = s.param("x", &[], Init::Constant(0.0));
            let y = s.param("y", &[], Init::Constant(0.0));
            (x * x + y - 11.0).square() + (x + y * y - 7.0).square()
        },
        optim,
    )
    .name("himmelblau")
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let mut f = f64::NAN;
    for i in 0..steps {
        f = step.step()?;
        run.record(&step, 0, &[("loss", f), ("lr", step.lr())])?;
        run.end_epoch(&mut step, i, f);
        if i % 2000 == 0 {
            let (x, y) = (
                step.parameter("x").and_then(Tensor::item),
                step.parameter("y").and_then(Tensor::item),
            );
            println!(
                "step {i}: x = {:?}, f(x) = {f:.6}",
                (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN))
            );
        }
    }
    let x = step
        .parameter("x")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let y = step
        .parameter("y")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let fx = (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2);
    run.finish()?;
    println!("final: x={x:.6} y={y:.6} f={fx:.6e}");
    check(&a, fx < f.max(170.0), "f did not decrease")?;
    check(
        &a,
        steps < 20000 || ((x - 3.0).abs() < 1e-2 && (y - 2.0).abs() < 1e-2),
        "not at (3, 2)",
    )?;
    Ok(())
}

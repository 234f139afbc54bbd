//! y_hat = w1 x^2 + w2 x + b on x = [1, 2, 3], y = [2, 4, 6], all parameters 1.0, trained
//! per sample (one compiled step per sample: this is where per-call overhead shows) with
//! SGD lr 0.01 for 100 epochs; predicts x = 4.

use std::time::Instant;

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::nn::{Init, Module, Scope};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Per-sample SGD on a quadratic model")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

struct Quadratic;

impl Module for Quadratic {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let w1 = s.param("w1", &[], Init::Constant(1.0));
        let w2 = s.param("w2", &[], Init::Constant(1.0));
        let b = s.param("b", &[], Init::Constant(1.0));
        x * x * w1 + x * w2 + b
    }
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "quadratic",
    takes: &[TRAINING_FLAGS],
    defaults: &[("--epochs", "100"), ("--optim", "sgd"), ("--lr", "0.01")],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(100);
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("sgd"),
        a.lr.unwrap_or(0.01),
        0.0,
    )?;
    let mut step = Trainer::new(Quadratic, Loss::mse(Reduction::Sum), optim)
        .name("quadratic")
        .input(DType::F32, &[])
        .target(DType::F32, &[])
        .with_args(&a)
        .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let data = [(1.0f32, 2.0f32), (2.0, 4.0), (3.0, 6.0)];
    let t = Instant::now();
    let (mut first, mut last) = (None, 0.0);
    for epoch in 0..epochs {
        let mut sum = 0.0;
        for &(x, y) in &data {
            let b = Batch {
                x: Tensor::from_f32(&[x], &[1])?,
                y: Tensor::from_f32(&[y], &[1])?,
            };
            sum += step.run(&b)?;
        }
        last = sum / 3.0;
        run.record(&step, epoch + 1, &[("loss", last), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, last)?;
        first.get_or_insert(last);
        if epoch % 10 == 0 || epoch + 1 == epochs {
            println!("Epoch: {epoch} | Loss: {last:.4}");
        }
    }
    let per_step = t.elapsed().as_secs_f64() / (epochs * 3) as f64;
    let pred = step
        .predict(&Tensor::from_f32(&[4.0], &[1])?)?
        .item()
        .unwrap_or(f64::NAN);
    println!("{:.1} us per compiled step", per_step * 1e6);
    run.finish()?;
    println!("final: pred={pred:.6} loss={last:.6}");
    check(&a, last < first.unwrap_or(0.0), "the loss did not decrease")?;
    Ok(())
}

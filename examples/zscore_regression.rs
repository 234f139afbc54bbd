//! Z-score normalised linear regression: inputs [[2,1000],[3,2000],[2,500],[1,800],
//! [4,3000]] are scaled with the column mean and unbiased std, w = ones(2,1),
//! b = ones(1), MSE (mean), plain gradient descent lr 0.5 for 1000 epochs; predicts
//! [[3, 2500]] normalised with the *training* statistics.

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::data::{Rng, Transform, ZScore};
use aotgrad::nn::{Init, Module, Scope};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Linear regression on z-scored features")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

/// `x @ w + b` with `w: [2, 1]` and `b: [1]`, both initialised to ones as in the seed.
struct Affine;

impl Module for Affine {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let w = s.param("w", &[2, 1], Init::Constant(1.0));
        let b = s.param("b", &[1], Init::Constant(1.0));
        x.matmul(w) + b
    }
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "zscore_regression",
    takes: &[TRAINING_FLAGS],
    defaults: &[("--epochs", "1000"), ("--optim", "sgd"), ("--lr", "0.5")],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(1000);
    let x = Tensor::from_f32(
        &[
            2.0, 1000.0, 3.0, 2000.0, 2.0, 500.0, 1.0, 800.0, 4.0, 3000.0,
        ],
        &[5, 2],
    )?;
    let y = Tensor::from_f32(&[19.0, 31.0, 14.0, 15.0, 43.0], &[5, 1])?;
    let z = ZScore::fit(&x)?;
    println!("column mean {:?}, std {:?}", z.mean, z.std);
    let xn = z.apply(x, &mut Rng::new(0))?;
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("sgd"),
        a.lr.unwrap_or(0.5),
        0.0,
    )?;
    let mut step = Trainer::new(Affine, Loss::mse(Reduction::Mean), optim)
        .name("zscore_regression")
        .input(DType::F32, &[2])
        .target(DType::F32, &[1])
        .with_args(&a)
        .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let batch = Batch { x: xn, y };
    let (mut first, mut loss) = (None, 0.0);
    for epoch in 0..epochs {
        loss = step.run(&batch)?;
        run.record(&step, epoch + 1, &[("loss", loss), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, loss)?;
        first.get_or_insert(loss);
        if epoch % 100 == 0 || epoch + 1 == epochs {
            println!("Epoch {epoch}: loss {loss:.6}");
        }
    }
    let q = z.apply(Tensor::from_f32(&[3.0, 2500.0], &[1, 2])?, &mut Rng::new(0))?;
    let pred = step.predict(&q)?.item().unwrap_or(f64::NAN);
    run.finish()?;
    println!("final: pred={pred:.6} loss={loss:.6}");
    check(&a, loss < first.unwrap_or(0.0), "the loss did not decrease")?;
    check(
        &a,
        epochs < 1000 || (pred - 36.0).abs() < 6.0,
        "prediction for [3, 2500] out of range",
    )?;
    Ok(())
}

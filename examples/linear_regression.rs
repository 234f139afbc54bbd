//! Linear regression (course seed P05): `Linear(1, 1)` fit to y = 2x on x = [1, 2, 3] with
//! MSE (sum) and SGD lr 0.01 for 100 epochs, then a prediction for x = 4.

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::cli::pictures::{Picture, predict_curve};
use aotgrad::nn::{Linear, Sequential};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Linear regression on y = 2x (course seed P05)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "linear_regression",
    takes: &[TRAINING_FLAGS, &["--seed"]],
    defaults: &[("--epochs", "100"), ("--optim", "sgd"), ("--lr", "0.01")],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(100);
    let lr = a.lr.unwrap_or(0.01);
    let model = Sequential::new().push_named("linear", Linear::new(1, 1));
    let mut step = Trainer::new(
        model,
        Loss::mse(Reduction::Sum),
        Optimizer::from_name(a.optim.as_deref().unwrap_or("sgd"), lr, 0.0)?,
    )
    .name("linear_regression")
    .input(DType::F32, &[1])
    .target(DType::F32, &[1])
    .seed(a.seed)
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let batch = Batch {
        x: Tensor::from_f32(&[1.0, 2.0, 3.0], &[3, 1])?,
        y: Tensor::from_f32(&[2.0, 4.0, 6.0], &[3, 1])?,
    };
    let mut first = None;
    let mut loss = 0.0;
    for epoch in 0..epochs {
        loss = step.run(&batch)?;
        run.record(&step, epoch + 1, &[("loss", loss), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, loss)?;
        first.get_or_insert(loss);
        if epoch % 10 == 0 || epoch + 1 == epochs {
            println!("Epoch: {epoch} | Loss: {loss:.4}");
        }
    }
    let pred = step
        .predict(&Tensor::from_f32(&[4.0], &[1, 1])?)?
        .item()
        .unwrap_or(f64::NAN);
    let w = step
        .parameter("linear.weight")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let b = step
        .parameter("linear.bias")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    println!("Prediction (after training) 4 -> {pred:.4}");
    if run.wants_pictures() {
        // The course's picture: the data and the fitted line through it.
        let picture = Picture::Chart {
            title: format!("y = {w:.3}·x + {b:.3} after {epochs} epochs"),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: vec![("fitted line".into(), predict_curve(&step, (0.0, 4.0), 41)?)],
            points: vec![("data".into(), vec![(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)])],
            rules: vec![],
        };
        for f in run.picture("fit", "The fitted line over the data", &picture)? {
            println!("wrote {}", f.display());
        }
    }
    run.finish()?;
    println!("final: w={w:.6} b={b:.6} pred={pred:.6} loss={loss:.6}");
    check(&a, loss < first.unwrap_or(0.0), "the loss did not decrease")?;
    check(
        &a,
        epochs < 100 || (pred - 8.0).abs() < 0.5,
        "the prediction for x=4 is not near 8",
    )?;
    Ok(())
}

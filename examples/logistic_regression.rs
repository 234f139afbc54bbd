//! Logistic regression (course seed P06): `Linear(1, 1)` + sigmoid on x = [1, 2, 3],
//! y = [0, 0, 1], BCE (sum), SGD lr 0.01 for 1000 epochs; predicts x = 4.

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::cli::pictures::{Picture, predict_curve};
use aotgrad::nn::{Linear, Sequential, Sigmoid};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Logistic regression (course seed P06)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "logistic_regression",
    takes: &[TRAINING_FLAGS, &["--seed"]],
    defaults: &[("--epochs", "1000"), ("--optim", "sgd"), ("--lr", "0.01")],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(1000);
    let lr = a.lr.unwrap_or(0.01);
    let model = Sequential::new()
        .push_named("linear", Linear::new(1, 1))
        .push_named("sigmoid", Sigmoid);
    let mut step = Trainer::new(
        model,
        Loss::bce(Reduction::Sum),
        Optimizer::from_name(a.optim.as_deref().unwrap_or("sgd"), lr, 0.0)?,
    )
    .name("logistic_regression")
    .input(DType::F32, &[1])
    .target(DType::F32, &[1])
    .seed(a.seed)
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let batch = Batch {
        x: Tensor::from_f32(&[1.0, 2.0, 3.0], &[3, 1])?,
        y: Tensor::from_f32(&[0.0, 0.0, 1.0], &[3, 1])?,
    };
    let (mut first, mut loss) = (None, 0.0);
    for epoch in 0..epochs {
        loss = step.run(&batch)?;
        run.record(&step, epoch + 1, &[("loss", loss), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, loss)?;
        first.get_or_insert(loss);
        if epoch % 100 == 0 || epoch + 1 == epochs {
            println!("Epoch {}/{epochs} | Loss: {loss:.4}", epoch + 1);
        }
    }
    let p4 = step
        .predict(&Tensor::from_f32(&[4.0], &[1, 1])?)?
        .item()
        .unwrap_or(f64::NAN);
    let p1 = step
        .predict(&Tensor::from_f32(&[1.0], &[1, 1])?)?
        .item()
        .unwrap_or(f64::NAN);
    println!("Prediction 4 -> {p4:.4} (pass: {}), 1 -> {p1:.4}", p4 > 0.5);
    if run.wants_pictures() {
        // The course's picture: P(pass | hours) with the 0.5 decision line.
        let picture = Picture::Chart {
            title: "Probability of passing against hours studied".into(),
            x_label: "hours".into(),
            y_label: "P(pass)".into(),
            lines: vec![("P(pass)".into(), predict_curve(&step, (0.0, 10.0), 200)?)],
            points: vec![("data".into(), vec![(1.0, 0.0), (2.0, 0.0), (3.0, 1.0)])],
            rules: vec![(0.5, "0.5".into())],
        };
        for f in run.picture("probability", "P(pass) with the 0.5 line", &picture)? {
            println!("wrote {}", f.display());
        }
    }
    run.finish()?;
    println!("final: pred={p4:.6} pred_x1={p1:.6} loss={loss:.6}");
    check(&a, loss < first.unwrap_or(0.0), "the loss did not decrease")?;
    check(
        &a,
        epochs < 1000 || p4 > 0.5,
        "P(pass | x=4) should exceed 0.5",
    )?;
    Ok(())
}

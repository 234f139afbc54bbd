//! The MNIST MLP of the PyTorch course, compiled into one training step:
//! 784-256-64-10 with ReLU, batch 512, SGD lr 0.01 momentum 0.9, MSE on one-hot targets
//! (as the seed program); `--loss ce --optim adam` gives the cross-entropy variant (lr
//! 1e-3, batch 64 unless `--batch` says otherwise).
//! Evaluates test accuracy after every epoch and ends with one `final:` line.
//!
//! `cargo run --release --example mnist -- --help`

use aotgrad::cli::args::{ExampleSpec, MNIST_JOB_FLAGS, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::cli::mnist_job::{self, MnistJob};
use aotgrad::nn::{Flatten, Linear, ReLU, Sequential};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Train the course's MNIST MLP (784-256-64-10) on the bundled MNIST")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// After training, write the model's parameters as a PyTorch-compatible state dict
    /// (safetensors; `model.load_state_dict(safetensors.torch.load_file(PATH))`).
    #[arg(long, value_name = "PATH")]
    save_state_dict: Option<std::path::PathBuf>,
    /// Print the compiled training-step graph and exit.
    #[arg(long)]
    print_ir: bool,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "mnist",
    takes: &[TRAINING_FLAGS, MNIST_JOB_FLAGS],
    defaults: &[
        ("--epochs", "3"),
        ("--optim", "sgd"),
        ("--lr", "0.01 with sgd, 1e-3 with adam, adamw or rmsprop"),
        ("--loss", "mse (one-hot MSE, the course's seed; or ce)"),
        ("--batch", "512, or 64 with --loss ce"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = SPEC.parse::<Cli>(|c| &c.train);
    let a = &cli.train;
    let epochs = a.epochs.unwrap_or(3);
    let optim_name = a.optim.clone().unwrap_or_else(|| "sgd".into());
    let lr =
        a.lr.unwrap_or(if optim_name == "sgd" { 0.01 } else { 1e-3 });
    let loss_name = a.loss.clone().unwrap_or_else(|| "mse".into());
    // The MSE seed program uses batch 512; the course's cross-entropy + Adam variant (and
    // the PyTorch fixture and benchmark `mlp_ce_adam64`) uses 64.
    let batch = a.batch.unwrap_or(if loss_name == "ce" { 64 } else { 512 });

    let model = Sequential::new()
        .push_named("flatten", Flatten::default())
        .push_named("fc1", Linear::new(784, 256))
        .push_named("relu1", ReLU)
        .push_named("fc2", Linear::new(256, 64))
        .push_named("relu2", ReLU)
        .push_named("fc3", Linear::new(64, 10));
    let loss = match loss_name.as_str() {
        "mse" => Loss::mse_one_hot(10, Reduction::Mean),
        "ce" => Loss::cross_entropy(),
        other => return Err(format!("unknown --loss {other:?} (mse, ce)").into()),
    };
    let optim = Optimizer::from_name(&optim_name, lr, cli.momentum)?;
    let Some(out) = mnist_job::run(MnistJob {
        args: a,
        example: "mnist",
        trainer: Trainer::new(model, loss, optim).name("mnist_mlp"),
        epochs,
        batch,
        eval_batch: 1000,
        loss: &loss_name,
        optimizer: optim.name(),
        save_state_dict: cli.save_state_dict.as_deref(),
        print_ir: cli.print_ir,
    })?
    else {
        return Ok(());
    };
    check(
        a,
        out.train_loss < out.first_loss,
        "the training loss did not decrease",
    )?;
    check(
        a,
        out.test_accuracy > 0.5,
        "test accuracy should exceed 0.5 even in short mode",
    )?;
    Ok(())
}

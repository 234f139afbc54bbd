//! Course program P19, the overfitting toolbox on MNIST:
//!
//! - `random_split(train, [50000, 10000])` into training and validation sets;
//! - an MLP with dropout, `Linear(784,200) → Dropout(0.5) → ReLU → Linear(200,200) →
//!   Dropout(0.5) → ReLU → Linear(200,10)`, trained in train mode (dropout on) and
//!   evaluated in eval mode (off) — two compiled programs of one model;
//! - `SGD(lr=0.01, momentum=0.9, weight_decay=0.01)` (L2 regularisation);
//! - `ReduceLROnPlateau(optimizer, 'min')` (factor 0.1, patience 10) stepped with the
//!   validation loss after every epoch;
//! - early stopping on the validation accuracy (patience `--early-stop`, default 3),
//!   and the test set evaluated once at the end.
//!
//! Prints the course's progress lines, the validation block every epoch, learning-rate
//! changes, the early stop when it comes, the test block, then the `final:` line.
//! `cargo run --release --example overfitting_toolbox` (tests use `--limit 6000`).

use aotgrad::cli::args::{DASHBOARD_FLAGS, ExampleSpec, TrainArgs, check};
use aotgrad::cli::course_mnist::{self, mnist_transform};
use aotgrad::data::{DataLoader, Dataset, random_split};
use aotgrad::nn::{Dropout, Flatten, Linear, ReLU, Sequential};
use aotgrad::optim::{Scheduler, Sgd};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Course P19: validation split, dropout, weight decay, ReduceLROnPlateau, early stopping"
)]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "overfitting_toolbox",
    takes: &[
        course_mnist::COURSE_MNIST_FLAGS,
        DASHBOARD_FLAGS,
        &["--early-stop"],
    ],
    defaults: &[
        ("--epochs", "10"),
        ("--lr", "0.01"),
        ("--batch", "200"),
        ("--early-stop", "3"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let (epochs, batch, lr) = (
        a.epochs.unwrap_or(10),
        a.batch.unwrap_or(200),
        a.lr.unwrap_or(0.01),
    );
    let (full, test) = course_mnist::load(&a)?;
    // The course's 50000 / 10000, in the same proportion when --limit shortens it.
    let n_val = full.len() / 6;
    let parts = random_split(&full, &[full.len() - n_val, n_val], a.seed)?;
    let (train, val) = (&parts[0], &parts[1]);
    println!(
        "train {} / validation {} (random_split), test {}",
        train.len(),
        val.len(),
        test.len()
    );

    let model = Sequential::new()
        .push(Flatten::default())
        .push(Linear::new(784, 200))
        .push(Dropout(0.5))
        .push(ReLU)
        .push(Linear::new(200, 200))
        .push(Dropout(0.5))
        .push(ReLU)
        .push(Linear::new(200, 10));
    let sgd = Optimizer::Sgd(Sgd {
        lr,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.01,
    });
    let trainer = Trainer::new(model, Loss::cross_entropy(), sgd).name("overfitting_toolbox");
    let mut step = course_mnist::compile(trainer, &a)?;
    let mut run = a.start_run(&mut step, &["val_loss", "val_accuracy", "test_accuracy"])?;
    // PyTorch's ReduceLROnPlateau(optimizer, 'min') defaults.
    let mut plateau = Scheduler::reduce_on_plateau(0.1, 10);
    let mut stopper = EarlyStopping::new(a.early_stop.unwrap_or(3), 0.0, true);
    let t = mnist_transform();
    let loader = DataLoader::new(train, batch).shuffle(a.seed).transform(&t);
    let (mut first, mut last, mut epochs_run) = (f64::NAN, f64::NAN, 0);
    for epoch in 1..=epochs {
        let l = course_mnist::train_epoch(&mut step, &loader, epoch, train.len(), 100)?;
        if epoch == 1 {
            first = l.first;
        }
        last = l.mean;
        epochs_run = epoch;
        let v = course_mnist::evaluate(&step, val, 1000, "Validation")?;
        run.record(
            &step,
            epoch,
            &[("val_loss", v.loss), ("val_accuracy", v.accuracy())],
        )?;
        run.end_epoch(&mut step, epoch - 1, l.mean)?;
        let new_lr = plateau.next_lr(lr, step.lr(), epoch - 1, Some(v.loss));
        if new_lr != step.lr() {
            println!("ReduceLROnPlateau: lr {:e} -> {new_lr:e}", step.lr());
            step.set_lr(new_lr);
        }
        if stopper.update(epoch, v.accuracy()) {
            let (best, at) = stopper.best().unwrap_or((v.accuracy(), epoch));
            println!(
                "early stopping: validation accuracy has not improved on {:.2}% (epoch {at}) for {} epochs",
                100.0 * best,
                stopper.patience
            );
            break;
        }
    }
    let test_eval = course_mnist::evaluate(&step, &test, 1000, "Test")?;
    run.record(
        &step,
        epochs_run,
        &[("test_accuracy", test_eval.accuracy())],
    )?;
    run.finish()?;
    let best = stopper.best().map_or(f64::NAN, |(b, _)| b);
    println!(
        "final: test_accuracy={:.4} best_val_accuracy={best:.4} train_loss={last:.6} epochs={epochs_run}",
        test_eval.accuracy()
    );
    check(&a, last < first, "the training loss did not decrease")?;
    check(
        &a,
        test_eval.accuracy() > 0.8,
        "test accuracy should exceed 0.8 even in short mode",
    )?;
    Ok(())
}

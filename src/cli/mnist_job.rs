//! The MNIST classification job that the `mnist` and `lenet` examples share: load the
//! bundled MNIST (u8 images, converted and normalised per batch as torchvision's
//! transforms do), compile the step, train with progress, checkpoints, resume and run
//! logs from the shared flags, evaluate test loss, accuracy and the confusion matrix
//! after every epoch, and print the `final:` line the example tests read. The examples
//! differ only in their model, defaults and accuracy floors.

use std::path::Path;
use std::time::Instant;

use crate::cli::args::TrainArgs;
use crate::cli::progress::EpochProgress;
use crate::data::mnist::{self, Split};
use crate::data::{Compose, DataLoader, Dataset, Normalize, ToFloat};
use crate::metrics::Confusion;
use crate::train::Trainer;
use aotgrad_ir::DType;

/// One run: the trainer (model, loss, optimizer and name set; input, target, seed and
/// the shared flags are applied here) and the run's settings.
pub struct MnistJob<'a> {
    pub args: &'a TrainArgs,
    /// The example's name (in refusals of flags it does not support).
    pub example: &'static str,
    pub trainer: Trainer,
    pub epochs: usize,
    pub batch: usize,
    /// Images per evaluation call (the eval program's batch size).
    pub eval_batch: usize,
    /// The loss and optimizer names for the `compiled ...` line.
    pub loss: &'a str,
    pub optimizer: &'static str,
    /// Write the state dict here after training.
    pub save_state_dict: Option<&'a Path>,
    /// Print the training-step graph instead of training.
    pub print_ir: bool,
}

/// What a run ended with (for the examples' `--check` floors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MnistOutcome {
    pub test_accuracy: f64,
    /// The mean training loss of the last epoch.
    pub train_loss: f64,
    /// The loss of the first step.
    pub first_loss: f64,
}

/// Runs `job`; `None` when it only printed the graph.
pub fn run(job: MnistJob<'_>) -> Result<Option<MnistOutcome>, Box<dyn std::error::Error>> {
    let a = job.args;
    let (epochs, batch) = (job.epochs, job.batch);
    let to_input = Compose::new()
        .then(ToFloat)
        .then(Normalize::new(&[0.1307], &[0.3081]));
    // The images stay u8 (47 MB for the training set) and each batch is converted and
    // normalised as the loader yields it, as torchvision's transforms do: a float copy of
    // the whole set would be 188 MB.
    let mut train = mnist::load(&mnist::bundled_dir(), Split::Train)?;
    if let Some(n) = a.limit {
        train = train.take(n);
    }
    let test = mnist::load(&mnist::bundled_dir(), Split::Test)?;

    let t0 = Instant::now();
    let mut step = job
        .trainer
        .input(DType::F32, &[1, 28, 28])
        .target(DType::I64, &[])
        .seed(a.seed)
        .with_args(a)
        .compile(&a.backend())?;
    if job.print_ir {
        print!("{}", crate::text::print(step.step_graph()));
        return Ok(None);
    }
    println!(
        "compiled {} step ({} nodes, {} optimizer) in {:.1} ms; training on {} samples, batch {batch}",
        job.loss,
        step.step_graph().len(),
        job.optimizer,
        t0.elapsed().as_secs_f64() * 1e3,
        train.len()
    );

    let mut start = 0;
    if let Some(path) = &a.resume {
        let p = crate::checkpoint::load(&mut step, path)?;
        println!(
            "resumed from {} at epoch {}, step {}",
            path.display(),
            p.epoch,
            p.steps
        );
        start = p.epoch as usize;
        // An explicit --lr wins over the checkpoint's rate (which a schedule may have
        // lowered); say so either way, never silently.
        match a.lr {
            Some(lr) if lr != step.lr() => {
                println!(
                    "learning rate {lr:e} from --lr (the checkpoint's was {:e})",
                    step.lr()
                );
                step.set_lr(lr);
            }
            _ => println!("learning rate {:e} from the checkpoint", step.lr()),
        }
        if start >= epochs {
            println!(
                "the checkpoint has completed {start} epoch(s) and --epochs is {epochs}: \
                 nothing to train; evaluating the restored model"
            );
        }
    }
    let loader = DataLoader::new(&train, batch)
        .shuffle(a.seed)
        .transform(&to_input);
    let nb = loader.num_batches();
    let mut run = a.start_run(&step, &["loss", "lr", "test_loss", "test_accuracy"])?;
    let mut last_train_loss = f64::NAN;
    let mut first_loss = None;
    let mut test_acc = 0.0;
    let mut confusion = None;
    for epoch in start..epochs {
        let mut progress = EpochProgress::new(epoch + 1, nb, train.len());
        for b in loader.epoch(epoch) {
            let b = b?;
            let loss = step.run(&b)?;
            first_loss.get_or_insert(loss);
            progress.batch(b.y.len(), loss);
            run.record(&step, epoch + 1, &[("loss", loss), ("lr", step.lr())])?;
        }
        last_train_loss = progress.mean_loss();
        let rate = progress.samples_per_s();
        progress.finish();
        let (test_loss, correct, matrix) = evaluate(&mut step, &test, job.eval_batch, &to_input)?;
        confusion = Some(matrix);
        test_acc = correct as f64 / test.len() as f64;
        run.record(
            &step,
            epoch + 1,
            &[("test_loss", test_loss), ("test_accuracy", test_acc)],
        )?;
        run.flush()?;
        run.end_epoch(&mut step, epoch, last_train_loss);
        println!(
            "Epoch {}: train loss {:.6}, {:.0} samples/s; test loss {:.6}, accuracy {}/{} ({:.2}%)",
            epoch + 1,
            last_train_loss,
            rate,
            test_loss,
            correct,
            test.len(),
            100.0 * test_acc
        );
        if let Some(path) = &a.checkpoint {
            let progress = crate::checkpoint::Progress {
                epoch: epoch as u64 + 1,
                steps: step.steps(),
            };
            crate::checkpoint::save(&step, path, &progress)?;
            println!("checkpoint: {}", path.display());
        }
    }
    if start >= epochs {
        // Resumed past the last epoch: report the restored model, evaluated (dropout
        // off) on the test set and on the training data, instead of a NaN loss.
        let (test_loss, correct, matrix) = evaluate(&mut step, &test, job.eval_batch, &to_input)?;
        let (train_loss, _, _) = evaluate(&mut step, &train, job.eval_batch, &to_input)?;
        test_acc = correct as f64 / test.len() as f64;
        last_train_loss = train_loss;
        confusion = Some(matrix);
        println!(
            "restored model: training loss {train_loss:.6} (evaluated); test loss \
             {test_loss:.6}, accuracy {correct}/{} ({:.2}%)",
            test.len(),
            100.0 * test_acc
        );
    }
    if let Some(path) = job.save_state_dict {
        crate::checkpoint::save_state_dict(&step, path)?;
        println!("state dict: {}", path.display());
    }
    if let Some(c) = &confusion {
        println!("test set, last epoch:\n{c}");
    }
    for f in run.finish()? {
        println!("wrote {}", f.display());
    }
    println!("final: test_accuracy={test_acc:.4} train_loss={last_train_loss:.6}");
    Ok(Some(MnistOutcome {
        test_accuracy: test_acc,
        train_loss: last_train_loss,
        first_loss: first_loss.unwrap_or(0.0),
    }))
}

/// Runs the eval program over `data`: the mean loss, the number of correct predictions
/// and the confusion matrix (counted inside the program: a number and a 10x10 matrix
/// come back per batch).
fn evaluate(
    step: &mut crate::train::TrainStep,
    data: &crate::data::TensorDataset,
    batch: usize,
    to_input: &Compose,
) -> Result<(f64, usize, Confusion), Box<dyn std::error::Error>> {
    let (mut correct, mut loss) = (0, 0.0);
    let mut matrix = Confusion {
        counts: vec![vec![0; 10]; 10],
    };
    for b in DataLoader::new(data, batch).transform(to_input).epoch(0) {
        let b = b?;
        let r = step.evaluate(&b)?;
        correct += r.correct.expect("a classifier's eval counts hits") as usize;
        loss += r.loss * b.y.len() as f64;
        let batch_matrix = r.confusion.as_ref().expect("a classifier's eval has one");
        matrix.add(&Confusion::from_counts(batch_matrix)?)?;
    }
    Ok((loss / data.len().max(1) as f64, correct, matrix))
}

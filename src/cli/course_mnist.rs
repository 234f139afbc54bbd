//! The course's own MNIST loop, for the ports that print as it does (P18, P19): the
//! training loss every `log_every` batches as
//! `Train Epoch: 1 [20000/60000 (33%)]<TAB>Loss: 0.512345` (a tab before `Loss`), and an evaluation block
//! `Test set: Average loss: 0.0021, Accuracy: 9123/10000 (91%)`.
//!
//! One difference, on purpose: the course sums each batch's *mean* loss and divides
//! by the number of samples, so its "Average loss" is the mean divided by the batch
//! size; here it is the mean loss per sample (the number the words describe).

use crate::cli::args::TrainArgs;
use crate::data::mnist::{self, Split};
use crate::data::{Compose, DataLoader, Dataset, Normalize, TensorDataset, ToFloat};
use crate::train::{TrainError, TrainStep, Trainer};
use aotgrad_ir::DType;

/// The shared flags the course-loop examples take.
pub const COURSE_MNIST_FLAGS: &[&str] = &[
    "--epochs",
    "--lr",
    "--batch",
    "--backend",
    "--threads",
    "--seed",
    "--limit",
    "--check",
];

/// The bundled MNIST: the training split (its first `--limit` samples) and the test
/// split.
pub fn load(args: &TrainArgs) -> Result<(TensorDataset, TensorDataset), crate::data::DataError> {
    let mut train = mnist::load(&mnist::bundled_dir(), Split::Train)?;
    if let Some(n) = args.limit {
        train = train.take(n);
    }
    Ok((train, mnist::load(&mnist::bundled_dir(), Split::Test)?))
}

/// Compiles `trainer` for MNIST images (`f32 [1, 28, 28]`) and class targets, with the
/// seed, threads and backend of the flags.
pub fn compile(trainer: Trainer, args: &TrainArgs) -> Result<TrainStep, TrainError> {
    trainer
        .input(DType::F32, &[1, 28, 28])
        .target(DType::I64, &[])
        .seed(args.seed)
        .with_args(args)
        .compile(&args.backend())
}

/// torchvision's `ToTensor()` then `Normalize((0.1307,), (0.3081,))`, per batch.
pub fn mnist_transform() -> Compose {
    Compose::new()
        .then(ToFloat)
        .then(Normalize::new(&[0.1307], &[0.3081]))
}

/// What one training epoch saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLosses {
    pub first: f64,
    pub mean: f64,
}

/// One epoch (`epoch` counts from 1, as the course prints it) over `loader`, printing
/// the course's progress line every `log_every` batches.
pub fn train_epoch(
    step: &mut TrainStep,
    loader: &DataLoader<'_>,
    epoch: usize,
    samples: usize,
    log_every: usize,
) -> Result<EpochLosses, Box<dyn std::error::Error>> {
    let batches = loader.num_batches();
    let (mut sum, mut n, mut first, mut seen) = (0.0, 0usize, None, 0usize);
    for (i, b) in loader.epoch(epoch - 1).enumerate() {
        let b = b?;
        let loss = step.run(&b)?;
        first.get_or_insert(loss);
        sum += loss * b.y.len() as f64;
        n += b.y.len();
        if i % log_every.max(1) == 0 {
            println!(
                "Train Epoch: {epoch} [{seen}/{samples} ({:.0}%)]\tLoss: {loss:.6}",
                100.0 * i as f64 / batches as f64
            );
        }
        seen += b.y.len();
    }
    Ok(EpochLosses {
        first: first.unwrap_or(f64::NAN),
        mean: sum / n.max(1) as f64,
    })
}

/// What one evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluated {
    pub loss: f64,
    pub correct: usize,
    pub total: usize,
}

impl Evaluated {
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }
}

/// Evaluates the step's eval program (dropout off, no update) over `data` and prints
/// the course's block, `{what} set: Average loss: ..., Accuracy: c/n (p%)`.
pub fn evaluate(
    step: &TrainStep,
    data: &TensorDataset,
    batch: usize,
    what: &str,
) -> Result<Evaluated, Box<dyn std::error::Error>> {
    let t = mnist_transform();
    let (mut loss, mut correct) = (0.0, 0usize);
    for b in DataLoader::new(data, batch).transform(&t).epoch(0) {
        let b = b?;
        let r = step.evaluate(&b)?;
        loss += r.loss * b.y.len() as f64;
        correct += r.correct.ok_or("the eval program counts no hits")? as usize;
    }
    let e = Evaluated {
        loss: loss / data.len().max(1) as f64,
        correct,
        total: data.len(),
    };
    println!(
        "\n{what} set: Average loss: {:.4}, Accuracy: {}/{} ({:.0}%)\n",
        e.loss,
        e.correct,
        e.total,
        100.0 * e.accuracy()
    );
    Ok(e)
}

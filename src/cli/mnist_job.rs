//! The MNIST classification job that the `mnist` and `lenet` examples share: load the
//! bundled MNIST (u8 images, converted and normalised per batch as torchvision's
//! transforms do), compile the step, train with progress, checkpoints, resume and run
//! logs from the shared flags, evaluate test loss, accuracy and the confusion matrix
//! after every epoch, and print the `final:` line the example tests read. The examples
//! differ only in their model, defaults and accuracy floors.
//!
//! With `--distributed` (under `mpirun -np N`, feature `mpi`) every rank trains on its
//! shard of each epoch (`--batch` per rank; the global batch is N times that), the
//! step averages the gradients, evaluation is split over the ranks and summed, and
//! only rank 0 prints, plots, logs and writes checkpoints.

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
    crate::cli::as_rank(job.args.distributed, |group| run_in(job, group))
}

fn run_in(
    job: MnistJob<'_>,
    group: crate::cli::Group,
) -> Result<Option<MnistOutcome>, Box<dyn std::error::Error>> {
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

    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world()));
    let lead = rank == 0;
    // Rank 0 speaks for the group.
    macro_rules! say {
        ($($t:tt)*) => { if lead { println!($($t)*); } };
    }
    let trainer = crate::cli::data_parallel(job.trainer, &group, a.bucket_kb);

    let t0 = Instant::now();
    let mut step = trainer
        .input(DType::F32, &[1, 28, 28])
        .target(DType::I64, &[])
        .seed(a.seed)
        .with_args(a)
        .compile(&a.backend())?;
    if job.print_ir {
        if lead {
            print!("{}", crate::text::print(step.step_graph()));
        }
        return Ok(None);
    }
    if let Some(g) = &group {
        crate::distributed::check_same_job(&**g, &describe(&step, batch, a))?;
    }
    say!(
        "compiled {} step ({} nodes, {} optimizer) in {:.1} ms; training on {} samples, batch {batch}",
        job.loss,
        step.step_graph().len(),
        job.optimizer,
        t0.elapsed().as_secs_f64() * 1e3,
        train.len()
    );
    if group.is_some() {
        say!(
            "distributed: {world} ranks x batch {batch} = global batch {}, gradients averaged in the step",
            world * batch
        );
    }

    let mut start = 0;
    if let Some(path) = &a.resume {
        // Every rank restores the same file: the ranks start identical again.
        let p = crate::checkpoint::load(&mut step, path)?;
        say!(
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
                say!(
                    "learning rate {lr:e} from --lr (the checkpoint's was {:e})",
                    step.lr()
                );
                step.set_lr(lr);
            }
            _ => say!("learning rate {:e} from the checkpoint", step.lr()),
        }
        if start >= epochs {
            say!(
                "the checkpoint has completed {start} epoch(s) and --epochs is {epochs}: \
                 nothing to train; evaluating the restored model"
            );
        }
    }
    let mut loader = DataLoader::new(&train, batch)
        .shuffle(a.seed)
        .transform(&to_input);
    if group.is_some() {
        loader = loader.shard(crate::data::Shard::new(rank, world)?);
    }
    let nb = loader.num_batches();
    let mut run = a.start_run_as(
        &mut step,
        &["loss", "lr", "test_loss", "test_accuracy"],
        lead,
    )?;
    let mut last_train_loss = f64::NAN;
    let mut first_loss = None;
    let mut test_acc = 0.0;
    let mut confusion = None;
    for epoch in start..epochs {
        let mut progress = lead.then(|| EpochProgress::new(epoch + 1, nb, train.len()));
        let epoch_start = Instant::now();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for b in loader.epoch(epoch) {
            let b = b?;
            let loss = step.run(&b)?;
            first_loss.get_or_insert(loss);
            loss_sum += loss * b.y.len() as f64;
            seen += b.y.len();
            if let Some(p) = &mut progress {
                // The bar counts the group's samples.
                p.batch(b.y.len() * world, loss);
            }
            run.record(&step, epoch + 1, &[("loss", loss), ("lr", step.lr())])?;
        }
        // The epoch's mean loss and rate over every rank's samples.
        let mut totals = [loss_sum, seen as f64];
        if let Some(g) = &group {
            crate::distributed::sum_over_ranks(&**g, &mut totals)?;
        }
        last_train_loss = totals[0] / totals[1].max(1.0);
        let rate = totals[1] / epoch_start.elapsed().as_secs_f64().max(1e-9);
        if let Some(p) = progress {
            p.finish();
        }
        let (test_loss, correct, matrix) = evaluate(
            &mut step,
            &test,
            job.eval_batch,
            &to_input,
            group.as_deref(),
        )?;
        if let Some(d) = run.dashboard() {
            let labels: Vec<String> = (0..10).map(|c| c.to_string()).collect();
            d.confusion(
                &format!("Confusion matrix, test set, epoch {}", epoch + 1),
                &matrix,
                &labels,
            );
            let grid = predicted_digits(&step, &test, &to_input, GRID)?;
            d.images(
                &format!("The first {GRID} test images after epoch {}", epoch + 1),
                &grid,
            );
        }
        confusion = Some(matrix);
        test_acc = correct as f64 / test.len() as f64;
        run.record(
            &step,
            epoch + 1,
            &[("test_loss", test_loss), ("test_accuracy", test_acc)],
        )?;
        run.flush()?;
        run.end_epoch(&mut step, epoch, last_train_loss)?;
        say!(
            "Epoch {}: train loss {:.6}, {:.0} samples/s; test loss {:.6}, accuracy {}/{} ({:.2}%)",
            epoch + 1,
            last_train_loss,
            rate,
            test_loss,
            correct,
            test.len(),
            100.0 * test_acc
        );
        // The ranks hold identical state: rank 0's checkpoint is the group's.
        if let Some(path) = a.checkpoint.as_ref().filter(|_| lead) {
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
        let g = group.as_deref();
        let (test_loss, correct, matrix) =
            evaluate(&mut step, &test, job.eval_batch, &to_input, g)?;
        let (train_loss, _, _) = evaluate(&mut step, &train, job.eval_batch, &to_input, g)?;
        test_acc = correct as f64 / test.len() as f64;
        last_train_loss = train_loss;
        confusion = Some(matrix);
        say!(
            "restored model: training loss {train_loss:.6} (evaluated); test loss \
             {test_loss:.6}, accuracy {correct}/{} ({:.2}%)",
            test.len(),
            100.0 * test_acc
        );
    }
    if let Some(path) = job.save_state_dict.filter(|_| lead) {
        crate::checkpoint::save_state_dict(&step, path)?;
        println!("state dict: {}", path.display());
    }
    if let Some(c) = &confusion {
        say!("test set, last epoch:\n{c}");
    }
    if run.wants_pictures() {
        let g = predicted_digits(&step, &test, &to_input, GRID)?;
        let picture = crate::cli::pictures::Picture::Digits {
            title: format!("The first {GRID} test digits: true → predicted"),
            width: g.width,
            height: g.height,
            images: g.images,
            labels: g.labels,
            predicted: Some(g.predicted),
        };
        for f in run.picture("test_digits", "Test digits, true → predicted", &picture)? {
            say!("wrote {}", f.display());
        }
    }
    for f in run.finish()? {
        say!("wrote {}", f.display());
    }
    if let Some(g) = &group {
        // Every rank's parameters, to the bit: the promise of the compiled reduction.
        let crcs = g.all_gather(&params_crc(&step).to_le_bytes())?;
        let same = crcs.iter().all(|c| *c == crcs[0]);
        say!(
            "parameters after training: crc32c {} on rank 0, {} on all {world} ranks",
            crcs[0]
                .iter()
                .rev()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
            if same { "the same" } else { "NOT the same" }
        );
        if !same {
            return Err("the ranks' parameters differ after training".into());
        }
    }
    say!("final: test_accuracy={test_acc:.4} train_loss={last_train_loss:.6}");
    Ok(Some(MnistOutcome {
        test_accuracy: test_acc,
        train_loss: last_train_loss,
        first_loss: first_loss.unwrap_or(0.0),
    }))
}

/// Runs the eval program over `data`: the mean loss, the number of correct predictions
/// and the confusion matrix (counted inside the program: a number and a 10x10 matrix
/// come back per batch).
///
/// In a group, each rank evaluates its contiguous share of `data` and the sums (loss,
/// hits, the matrix) are added over the ranks: every rank gets the whole set's numbers.
fn evaluate(
    step: &mut crate::train::TrainStep,
    data: &crate::data::TensorDataset,
    batch: usize,
    to_input: &Compose,
    group: Option<&dyn crate::runtime::collective::Communicator>,
) -> Result<(f64, usize, Confusion), Box<dyn std::error::Error>> {
    let (mut correct, mut loss) = (0, 0.0);
    let mut matrix = Confusion {
        counts: vec![vec![0; 10]; 10],
    };
    let share;
    let mine = match group {
        Some(g) => {
            let r = crate::distributed::eval_share(data.len(), g.rank(), g.world());
            share = data.subset(&r.collect::<Vec<_>>());
            &share
        }
        None => data,
    };
    for b in DataLoader::new(mine, batch).transform(to_input).epoch(0) {
        let b = b?;
        let r = step.evaluate(&b)?;
        correct += r.correct.expect("a classifier's eval counts hits") as usize;
        loss += r.loss * b.y.len() as f64;
        let batch_matrix = r.confusion.as_ref().expect("a classifier's eval has one");
        matrix.add(&Confusion::from_counts(batch_matrix)?)?;
    }
    if let Some(g) = group {
        let mut sums = vec![loss, correct as f64];
        sums.extend(matrix.counts.iter().flatten().map(|&c| c as f64));
        crate::distributed::sum_over_ranks(g, &mut sums)?;
        loss = sums[0];
        correct = sums[1] as usize;
        for (c, v) in matrix.counts.iter_mut().flatten().zip(&sums[2..]) {
            *c = *v as _;
        }
    }
    Ok((loss / data.len().max(1) as f64, correct, matrix))
}

/// Test images shown with their predictions (on the dashboard and in `--plot`).
const GRID: usize = 32;

/// The first `n` test images (as gray bytes) with their labels and the model's
/// predictions (the predict program's argmax).
fn predicted_digits(
    step: &crate::train::TrainStep,
    test: &crate::data::TensorDataset,
    to_input: &Compose,
    n: usize,
) -> Result<crate::dashboard::ImageGrid, Box<dyn std::error::Error>> {
    let n = n.min(test.len());
    let first = test.subset(&(0..n).collect::<Vec<_>>());
    let Some(b) = DataLoader::new(&first, n)
        .transform(to_input)
        .epoch(0)
        .next()
    else {
        return Err("no test images".into());
    };
    let b = b?;
    let scores = step.predict(&b.x)?;
    let predicted = scores.argmax(1, false)?;
    let pixels = first.x.to_f64_vec();
    let size = pixels.len() / n.max(1);
    let side = (size as f64).sqrt() as usize;
    Ok(crate::dashboard::ImageGrid {
        width: side,
        height: side,
        images: pixels
            .chunks(size.max(1))
            .map(|c| c.iter().map(|&v| v.clamp(0.0, 255.0) as u8).collect())
            .collect(),
        labels: first.y.to_f64_vec().iter().map(|v| v.to_string()).collect(),
        predicted: predicted
            .to_f64_vec()
            .iter()
            .map(|v| v.to_string())
            .collect(),
    })
}

/// What every rank of a distributed job must agree on, one item per line.
pub(crate) fn describe(step: &crate::train::TrainStep, batch: usize, a: &TrainArgs) -> String {
    let mut s = format!(
        "batch {batch}\nseed {}\nbackend {:?}\n",
        a.seed,
        a.backend()
    );
    for (name, t) in step.parameters() {
        s.push_str(&format!("param {name}: {}\n", t.ty()));
    }
    let graph = crate::text::print(step.step_graph());
    s.push_str(&format!(
        "step graph: {} nodes, crc32c {:08x}\n",
        step.step_graph().len(),
        crc32c::crc32c(graph.as_bytes())
    ));
    s
}

/// A checksum of every parameter's bytes.
pub(crate) fn params_crc(step: &crate::train::TrainStep) -> u32 {
    step.parameters().iter().fold(0, |crc, (name, t)| {
        let crc = crc32c::crc32c_append(crc, name.as_bytes());
        crc32c::crc32c_append(crc, &t.to_le_bytes())
    })
}

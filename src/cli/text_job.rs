//! The character-model job the `char_lstm` and `gpt` examples share: the bundled
//! corpus, seeded `(B, T)` training windows, the compiled step, evaluation of the
//! training and validation loss (nats per character) on fixed windows every
//! `--eval-every` steps, progress, plots, TensorBoard scalars, checkpoints and resume,
//! data-parallel ranks, and at the end a sample drawn with the compiled predict program
//! ([`crate::generate`]). The examples differ only in their model and its defaults.
//!
//! With `--distributed` every rank draws its own windows (batch `index = step * world +
//! rank` of the seeded stream, so the group's batch is `world x B` distinct windows),
//! the step averages the gradients, the evaluation windows are split over the ranks and
//! summed, and only rank 0 prints and writes files.

use std::time::Instant;

use crate::cli::args::TrainArgs;
use crate::cli::progress::EpochProgress;
use crate::data::text::{CharCorpus, Part};
use crate::generate::{SampleOptions, sample};
use crate::train::{TrainStep, Trainer};
use aotgrad_ir::DType;

/// The stream the evaluation windows come from: the same windows at every evaluation,
/// on every rank and in every run, so the numbers compare.
const EVAL_SEED: u64 = 0xE7A1_5EED;

/// One run: the trainer (model, loss, optimizer, clipping and schedule set; inputs,
/// seed and the shared flags are applied here) and the run's settings.
pub struct TextJob<'a> {
    pub args: &'a TrainArgs,
    pub example: &'static str,
    pub trainer: Trainer,
    pub corpus: &'a CharCorpus,
    pub batch: usize,
    /// Characters per window (`T`).
    pub block: usize,
    /// Updates in all (a resumed run continues to this count).
    pub steps: u64,
    pub eval_every: u64,
    /// Windows of `batch x block` characters per evaluation of each split.
    pub eval_batches: usize,
    /// What to generate at the end (`chars = 0`: nothing).
    pub sample: SampleOptions,
    pub prompt: &'a str,
    /// Print the training-step graph instead of training.
    pub print_ir: bool,
}

/// What a run ended with (for the examples' `--check` floors).
#[derive(Debug, Clone, PartialEq)]
pub struct TextOutcome {
    /// The loss of the first step this run took (about `ln(vocab)` for a fresh model);
    /// NaN when it took none (resumed at the last step).
    pub first_loss: f64,
    /// `ln(vocab)`: the loss of a uniform guess, what a model that learned nothing keeps.
    pub uniform_loss: f64,
    /// The last evaluation's losses, in nats per character.
    pub train_loss: f64,
    pub val_loss: f64,
    pub steps: u64,
    pub sample: String,
}

impl TextOutcome {
    /// The examples' `--check` floors: the validation loss ends below the first step's
    /// loss (below a uniform guess, `ln(vocab)`, for a run resumed at its last step,
    /// which took none), and after the documented 2000 steps below `full_run_floor`.
    pub fn check(&self, a: &TrainArgs, full_run_floor: f64) -> Result<(), String> {
        let start = if self.first_loss.is_nan() {
            self.uniform_loss
        } else {
            self.first_loss
        };
        crate::cli::args::check(
            a,
            self.val_loss < start,
            "the validation loss should end below the first step's loss",
        )?;
        crate::cli::args::check(
            a,
            self.steps < 2000 || self.val_loss < full_run_floor,
            &format!(
                "after 2000 steps the validation loss should be below {full_run_floor} nats/char"
            ),
        )
    }
}

/// Runs `job`; `None` when it only printed the graph.
pub fn run(job: TextJob<'_>) -> Result<Option<TextOutcome>, Box<dyn std::error::Error>> {
    crate::cli::as_rank(job.args.distributed, |group| run_in(job, group))
}

fn run_in(
    job: TextJob<'_>,
    group: crate::cli::Group,
) -> Result<Option<TextOutcome>, Box<dyn std::error::Error>> {
    let a = job.args;
    let (b, t) = (job.batch, job.block);
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world()));
    let lead = rank == 0;
    macro_rules! say {
        ($($x:tt)*) => { if lead { println!($($x)*); } };
    }
    let trainer = crate::cli::data_parallel(job.trainer, &group, a.bucket_kb);
    let t0 = Instant::now();
    let mut step = trainer
        .input(DType::I64, &[t])
        .target(DType::I64, &[t])
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
        let mut job_text = crate::cli::mnist_job::describe(&step, b, a);
        job_text.push_str(&format!("block {t}\nsteps {}\n", job.steps));
        crate::distributed::check_same_job(&**g, &job_text)?;
    }
    let params: usize = step.parameters().iter().map(|(_, p)| p.len()).sum();
    say!(
        "compiled {} step ({} nodes, {params} parameters, {}) in {:.1} ms; corpus {} + {} characters, vocabulary {}",
        job.example,
        step.step_graph().len(),
        step.optimizer().description(),
        t0.elapsed().as_secs_f64() * 1e3,
        job.corpus.part(Part::Train).len(),
        job.corpus.part(Part::Validation).len(),
        job.corpus.vocab_size()
    );
    if group.is_some() {
        say!(
            "distributed: {world} ranks x batch {b} = {} windows of {t} characters per step, gradients averaged in the step",
            world * b
        );
    }
    let mut start = 0;
    if let Some(path) = &a.resume {
        let p = crate::checkpoint::load(&mut step, path)?;
        say!("resumed from {} at step {}", path.display(), p.steps);
        start = p.steps;
    }
    let mut run = a.start_run_as(&mut step, &["loss", "lr", "train_loss", "val_loss"], lead)?;
    let eval_every = job.eval_every.max(1);
    let mut first_loss = None;
    let mut last = None;
    let mut k = start;
    while k < job.steps {
        let round = (k / eval_every + 1) as usize;
        let end = (round as u64 * eval_every).min(job.steps);
        let chars = b * t * world;
        let mut progress =
            lead.then(|| EpochProgress::new(round, (end - k) as usize, (end - k) as usize * chars));
        let (started, from) = (Instant::now(), k);
        while k < end {
            let index = k * world as u64 + rank as u64;
            let batch = job.corpus.windows(Part::Train, b, t, a.seed, index)?;
            let loss = step.run(&batch)?;
            first_loss.get_or_insert(loss);
            if let Some(p) = &mut progress {
                p.batch(chars, loss);
            }
            run.record(&step, round, &[("loss", loss), ("lr", step.lr())])?;
            k += 1;
        }
        let rate = (chars as u64 * (end - from)) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        if let Some(p) = progress {
            p.finish();
        }
        let losses = evaluate(&step, job.corpus, b, t, job.eval_batches, group.as_deref())?;
        run.record(
            &step,
            round,
            &[("train_loss", losses.0), ("val_loss", losses.1)],
        )?;
        // Rounds of `--eval-every` steps are this job's epochs (1-based here).
        run.end_epoch(&mut step, round - 1, losses.0)?;
        run.flush()?;
        say!(
            "step {k}: train loss {:.4}, val loss {:.4} (nats/char), {:.0} chars/s, lr {:.3e}",
            losses.0,
            losses.1,
            rate,
            step.lr()
        );
        last = Some(losses);
        if let Some(path) = a.checkpoint.as_ref().filter(|_| lead) {
            let progress = crate::checkpoint::Progress {
                epoch: round as u64,
                steps: step.steps(),
            };
            crate::checkpoint::save(&step, path, &progress)?;
            println!("checkpoint: {}", path.display());
        }
    }
    let (train_loss, val_loss) = match last {
        Some(l) => l,
        None => {
            // Resumed at (or past) the last step: evaluate the restored model.
            let l = evaluate(&step, job.corpus, b, t, job.eval_batches, group.as_deref())?;
            say!(
                "restored model at step {}: train loss {:.4}, val loss {:.4} (nats/char)",
                step.steps(),
                l.0,
                l.1
            );
            l
        }
    };
    let mut text = String::new();
    if lead && job.sample.chars > 0 {
        let t1 = Instant::now();
        text = sample(&step, job.corpus, job.prompt, &job.sample)?;
        let secs = t1.elapsed().as_secs_f64();
        println!(
            "sample ({} characters, temperature {}, seed {}, fixed window of {t} through the compiled predict program, {:.2} ms/char):",
            job.sample.chars,
            job.sample.temperature,
            job.sample.seed,
            secs * 1e3 / job.sample.chars as f64
        );
        println!("{text}");
        println!("--- end of sample");
        if let Some(d) = run.dashboard() {
            d.text(
                "sample",
                &format!(
                    "Sample: {} characters at temperature {}",
                    job.sample.chars, job.sample.temperature
                ),
                &text,
            );
        }
    }
    for f in run.finish()? {
        say!("wrote {}", f.display());
    }
    if let Some(g) = &group {
        let crcs = g.all_gather(&crate::cli::mnist_job::params_crc(&step).to_le_bytes())?;
        let same = crcs.iter().all(|c| *c == crcs[0]);
        say!(
            "parameters after training: {} on all {world} ranks",
            if same { "the same" } else { "NOT the same" }
        );
        if !same {
            return Err("the ranks' parameters differ after training".into());
        }
    }
    say!(
        "final: val_loss={val_loss:.4} train_loss={train_loss:.4} steps={}",
        step.steps()
    );
    Ok(Some(TextOutcome {
        first_loss: first_loss.unwrap_or(f64::NAN),
        uniform_loss: (job.corpus.vocab_size() as f64).ln(),
        train_loss,
        val_loss,
        steps: step.steps(),
        sample: text,
    }))
}

/// The mean loss (evaluation mode) over `batches` fixed windows of each split: `(train,
/// validation)`. In a group each rank evaluates its share of the windows and the sums
/// are added over the ranks.
fn evaluate(
    step: &TrainStep,
    corpus: &CharCorpus,
    b: usize,
    t: usize,
    batches: usize,
    group: Option<&dyn crate::runtime::collective::Communicator>,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let share = match group {
        Some(g) => crate::distributed::eval_share(batches, g.rank(), g.world()),
        None => 0..batches,
    };
    let mut sums = [0.0, 0.0];
    for (slot, part) in [Part::Train, Part::Validation].into_iter().enumerate() {
        for i in share.clone() {
            let w = corpus.windows(part, b, t, EVAL_SEED, i as u64)?;
            sums[slot] += step.evaluate(&w)?.loss;
        }
    }
    if let Some(g) = group {
        crate::distributed::sum_over_ranks(g, &mut sums)?;
    }
    let n = batches.max(1) as f64;
    Ok((sums[0] / n, sums[1] / n))
}

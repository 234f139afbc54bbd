//! The command-line flags every example accepts, with the same names everywhere.

use crate::train::Backend;

/// Flags shared by the training examples (`--help` lists them).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer: sgd, adam, adamw, rmsprop.
    #[arg(long)]
    pub optim: Option<String>,
    /// Loss function (example-specific names, e.g. mse, ce, bce).
    #[arg(long)]
    pub loss: Option<String>,
    /// Where the compiled step runs: cpu (native code), gpu (WGSL compute shaders through
    /// wgpu) or interp (reference interpreter).
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
    /// Worker threads of the backend (results do not depend on it; the interpreter is
    /// single-threaded).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use at most this many training samples (CI's short mode).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Save a checkpoint here after every epoch (atomically).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<std::path::PathBuf>,
    /// Resume from this checkpoint (parameters, optimizer state, epoch, step).
    #[arg(long, value_name = "PATH")]
    pub resume: Option<std::path::PathBuf>,
    /// Learning-rate schedule applied after every epoch: step:N:GAMMA, exp:GAMMA,
    /// cosine:T_MAX[:ETA_MIN] or plateau:FACTOR:PATIENCE (on the epoch's training loss).
    #[arg(long, value_name = "SPEC")]
    pub scheduler: Option<crate::optim::Scheduler>,
    /// Stop when the validation metric has not improved for this many epochs (examples
    /// with a validation split; the others refuse it).
    #[arg(long, value_name = "EPOCHS")]
    pub early_stop: Option<usize>,
    /// Write `metrics.csv` (step, epoch, loss, lr, test metrics) and loss/accuracy
    /// curves (`loss.png`/`.svg`, `accuracy.png`/`.svg`) into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<std::path::PathBuf>,
    /// Write the same scalars as TensorBoard event files into this directory
    /// (`tensorboard --logdir DIR`).
    #[arg(long, value_name = "DIR")]
    pub tensorboard: Option<std::path::PathBuf>,
    /// Exit with an error unless the result clears the example's floor (used by tests).
    #[arg(long)]
    pub check: bool,
    /// Graph optimisation level: 0 (as traced), 1 (dead-code elimination), 2 (all
    /// passes). Training at -O0 and -O2 must agree; use it to bisect a miscompile.
    #[arg(short = 'O', long = "opt-level", default_value = "2")]
    pub opt_level: crate::compiler::passes::OptLevel,
    /// Test every kernel's output for NaN/Inf and name the graph node that made the
    /// first one (slower: no fusion).
    #[arg(long)]
    pub check_numerics: bool,
}

impl TrainArgs {
    /// `--backend` with `--threads` applied.
    pub fn backend(&self) -> Backend {
        self.backend.with_threads(self.threads)
    }
}

impl TrainArgs {
    /// Starts the bookkeeping of a training run of `step` from the flags: the log
    /// over `columns` (`--plot`: CSV now, curves at the end; `--tensorboard`: event
    /// files) and the learning-rate schedule (`--scheduler`, from the step's current lr).
    pub fn start_run(
        &self,
        step: &crate::train::TrainStep,
        columns: &[&str],
    ) -> Result<Run, crate::runlog::LogError> {
        let mut log = crate::runlog::RunLog::new(columns);
        if let Some(dir) = &self.plot {
            log = log.csv(&dir.join("metrics.csv"))?;
        }
        if let Some(dir) = &self.tensorboard {
            log = log.tensorboard(dir)?;
        }
        Ok(Run {
            log,
            sched: self.scheduler.clone(),
            base_lr: step.lr(),
            plot: self.plot.clone(),
        })
    }

    /// `Err` when `--checkpoint` or `--resume` was given to an example that does not
    /// save checkpoints (rather than ignoring them).
    pub fn no_checkpoints(&self, example: &str) -> Result<(), String> {
        if self.checkpoint.is_some() || self.resume.is_some() {
            return Err(format!(
                "{example} does not save or resume checkpoints (the mnist example does)"
            ));
        }
        Ok(())
    }

    /// `Err` when `--early-stop` was given to an example without a validation split.
    pub fn no_early_stop(&self, example: &str) -> Result<(), String> {
        if self.early_stop.is_some() {
            return Err(format!(
                "{example} has no validation split to stop on (the titanic example does)"
            ));
        }
        Ok(())
    }
}

/// One training run's bookkeeping from the shared flags: its log and its schedule.
pub struct Run {
    log: crate::runlog::RunLog,
    sched: Option<crate::optim::Scheduler>,
    base_lr: f64,
    plot: Option<std::path::PathBuf>,
}

impl Run {
    /// Records `values` at the step's current step count.
    pub fn record(
        &mut self,
        step: &crate::train::TrainStep,
        epoch: usize,
        values: &[(&str, f64)],
    ) -> Result<(), crate::runlog::LogError> {
        self.log.record(step.steps(), epoch, values)
    }

    /// After epoch `epoch` (0-based) with mean training loss `loss`: sets the step's
    /// next learning rate from `--scheduler`, if one was given.
    pub fn end_epoch(&mut self, step: &mut crate::train::TrainStep, epoch: usize, loss: f64) {
        if let Some(s) = &mut self.sched {
            let lr = s.next_lr(self.base_lr, step.lr(), epoch, Some(loss));
            step.set_lr(lr);
        }
    }

    /// Pushes the log's buffered rows to disk.
    pub fn flush(&mut self) -> Result<(), crate::runlog::LogError> {
        self.log.flush()
    }

    /// Flushes the log and renders the curves when `--plot` was given; returns the
    /// files written.
    pub fn finish(&mut self) -> Result<Vec<std::path::PathBuf>, crate::runlog::LogError> {
        self.log.flush()?;
        match &self.plot {
            Some(dir) => self.log.plot(dir),
            None => Ok(Vec::new()),
        }
    }
}

impl crate::train::Trainer {
    /// The compile-time options of the command line: `--opt-level` and
    /// `--check-numerics`.
    pub fn with_args(self, a: &TrainArgs) -> crate::train::Trainer {
        self.opt_level(a.opt_level).check_numerics(a.check_numerics)
    }
}

/// `Err` with `what` when `--check` is on and `ok` is false.
pub fn check(args: &TrainArgs, ok: bool, what: &str) -> Result<(), String> {
    if args.check && !ok {
        Err(format!("check failed: {what}"))
    } else {
        Ok(())
    }
}

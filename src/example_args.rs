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
    /// Where the compiled step runs: cpu (native code) or interp (reference interpreter).
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

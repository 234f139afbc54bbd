//! The command-line flags every example accepts, with the same names everywhere.

use crate::train::Backend;

/// Flags shared by the training examples (`--help` lists them).
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Passes over the training data [default: the example's, listed below].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Mini-batch size [default: the example's, listed below].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate [default: the example's, by optimizer, listed below].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Optimizer: sgd, adam, adamw, rmsprop [default: the example's, listed below].
    #[arg(long)]
    pub optim: Option<String>,
    /// Loss function (example-specific names, e.g. mse, ce, bce) [default: the
    /// example's, listed below].
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
    /// Serve a live page of the run (loss, metrics, learning rate, samples/s, the
    /// compiled step's IR, memory plan and profile) on loopback; the URL is printed.
    #[arg(long)]
    pub dashboard: bool,
    /// Serve the dashboard on this address instead (implies --dashboard); an address
    /// other than loopback requires the random token printed in the URL.
    #[arg(long, value_name = "HOST:PORT")]
    pub dashboard_addr: Option<std::net::SocketAddr>,
    /// Keep serving the dashboard after the run ends, until Ctrl-C.
    #[arg(long)]
    pub dashboard_keep: bool,
    /// Time every kernel of the CPU backend's step (shown on the dashboard).
    #[arg(long)]
    pub profile: bool,
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
    /// Data-parallel training on the ranks `mpirun -np N` started (needs the `mpi`
    /// cargo feature): each rank trains on its shard of every epoch with `--batch`
    /// samples per step, gradients are averaged in the step, rank 0 reports.
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: the most kilobytes of gradients one reduction moves (PyTorch
    /// DDP's bucket_cap_mb; default 25600).
    #[arg(long, value_name = "KB")]
    pub bucket_kb: Option<usize>,
}

impl TrainArgs {
    /// `--backend` with `--threads` applied.
    pub fn backend(&self) -> Backend {
        self.backend.with_threads(self.threads)
    }

    /// Every shared flag given on this command line (defaulted flags count when they
    /// differ from their default), by name.
    pub fn given(&self) -> Vec<&'static str> {
        let set = [
            ("--epochs", self.epochs.is_some()),
            ("--batch", self.batch.is_some()),
            ("--lr", self.lr.is_some()),
            ("--optim", self.optim.is_some()),
            ("--loss", self.loss.is_some()),
            ("--backend", self.backend != Backend::Cpu { threads: 1 }),
            ("--threads", self.threads != 1),
            ("--seed", self.seed != 0),
            ("--limit", self.limit.is_some()),
            ("--checkpoint", self.checkpoint.is_some()),
            ("--resume", self.resume.is_some()),
            ("--scheduler", self.scheduler.is_some()),
            ("--early-stop", self.early_stop.is_some()),
            ("--plot", self.plot.is_some()),
            ("--tensorboard", self.tensorboard.is_some()),
            ("--dashboard", self.dashboard),
            ("--dashboard-addr", self.dashboard_addr.is_some()),
            ("--dashboard-keep", self.dashboard_keep),
            ("--profile", self.profile),
            ("--check", self.check),
            (
                "--opt-level",
                self.opt_level != crate::compiler::passes::OptLevel::O2,
            ),
            ("--check-numerics", self.check_numerics),
            ("--distributed", self.distributed),
            ("--bucket-kb", self.bucket_kb.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| f)
            .collect()
    }
}

/// The flags every training example takes: where and how the step runs, how long and
/// how fast it trains, and what it records.
pub const TRAINING_FLAGS: &[&str] = &[
    "--epochs",
    "--lr",
    "--optim",
    "--backend",
    "--threads",
    "--scheduler",
    "--plot",
    "--tensorboard",
    "--dashboard",
    "--dashboard-addr",
    "--dashboard-keep",
    "--profile",
    "--check",
    "--opt-level",
    "--check-numerics",
];

/// The dashboard's flags, for examples that list their flags one by one.
pub const DASHBOARD_FLAGS: &[&str] = &[
    "--dashboard",
    "--dashboard-addr",
    "--dashboard-keep",
    "--profile",
];

/// The flags the MNIST job (`mnist`, `lenet`) takes besides [`TRAINING_FLAGS`].
pub const MNIST_JOB_FLAGS: &[&str] = &[
    "--seed",
    "--limit",
    "--batch",
    "--loss",
    "--checkpoint",
    "--resume",
    "--distributed",
    "--bucket-kb",
];

/// The flags the character-model job (`char_lstm`, `gpt`) takes: it trains for
/// `--steps` updates on random windows, so it has no epochs, and its optimizer, loss
/// and schedule are the model's own.
pub const TEXT_JOB_FLAGS: &[&str] = &[
    "--lr",
    "--backend",
    "--threads",
    "--seed",
    "--batch",
    "--plot",
    "--tensorboard",
    "--dashboard",
    "--dashboard-addr",
    "--dashboard-keep",
    "--profile",
    "--check",
    "--opt-level",
    "--check-numerics",
    "--checkpoint",
    "--resume",
    "--distributed",
    "--bucket-kb",
];

/// What one example does with the shared flags: which it takes (the others are refused,
/// never silently ignored) and its own defaults, printed at the end of `--help`.
pub struct ExampleSpec {
    pub name: &'static str,
    /// The shared flags it uses (often [`TRAINING_FLAGS`] plus a few).
    pub takes: &'static [&'static [&'static str]],
    /// `(flag, default)` for the flags whose default is the example's own, including
    /// the ones that depend on other flags (`512, or 64 with --loss ce`).
    pub defaults: &'static [(&'static str, &'static str)],
}

impl ExampleSpec {
    fn takes(&self, flag: &str) -> bool {
        self.takes.iter().any(|set| set.contains(&flag))
    }

    /// The end of `--help`: the example's defaults and the shared flags it does not use.
    pub fn after_help(&self) -> String {
        let mut s = String::new();
        if !self.defaults.is_empty() {
            s.push_str("Defaults of this example:\n");
            for (flag, v) in self.defaults {
                s.push_str(&format!("  {flag:<14} {v}\n"));
            }
        }
        let unused: Vec<&str> = ALL_FLAGS
            .iter()
            .copied()
            .filter(|f| !self.takes(f))
            .collect();
        if !unused.is_empty() {
            s.push_str(&format!(
                "Not used by {} (refused if given): {}\n",
                self.name,
                unused.join(", ")
            ));
        }
        s
    }

    /// `Err` naming every shared flag given that this example does not use.
    pub fn check(&self, a: &TrainArgs) -> Result<(), String> {
        let refused: Vec<&str> = a.given().into_iter().filter(|f| !self.takes(f)).collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} does not use {} (see --help)",
            self.name,
            refused.join(", ")
        ))
    }

    /// Parses the command line of an example whose flags `C` flattens [`TrainArgs`]
    /// into (reached by `train`): `--help` ends with [`ExampleSpec::after_help`], and a
    /// shared flag the example does not use is a usage error (exit code 2). On the GPU
    /// backend it prints the adapter the run will use.
    pub fn parse<C: clap::Parser>(&self, train: impl Fn(&C) -> &TrainArgs) -> C {
        let help = self.after_help();
        let matches = C::command().after_help(help).get_matches();
        let c = C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let Err(e) = self.check(train(&c)) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        if train(&c).backend == Backend::Gpu {
            match aotgrad_runtime::gpu::context() {
                Ok(ctx) => println!("GPU adapter: {}", ctx.describe()),
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            }
        }
        c
    }
}

/// Every shared flag, in `--help` order.
pub const ALL_FLAGS: &[&str] = &[
    "--epochs",
    "--batch",
    "--lr",
    "--optim",
    "--loss",
    "--backend",
    "--threads",
    "--seed",
    "--limit",
    "--checkpoint",
    "--resume",
    "--scheduler",
    "--early-stop",
    "--plot",
    "--tensorboard",
    "--dashboard",
    "--dashboard-addr",
    "--dashboard-keep",
    "--profile",
    "--check",
    "--opt-level",
    "--check-numerics",
    "--distributed",
    "--bucket-kb",
];

/// The examples' `main`: runs `run` and turns an error into `error: <message>` on
/// stderr (its `Display`, not the `Debug` form `main` returning `Result` prints) and
/// exit code 1.
pub fn exit_code(run: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

impl TrainArgs {
    /// Starts the bookkeeping of a training run of `step` from the flags: the log
    /// over `columns` (`--plot`: CSV now, curves at the end; `--tensorboard`: event
    /// files), the learning-rate schedule (`--scheduler`, from the step's current lr)
    /// and the live page (`--dashboard`, attached to `step`; its URL is printed).
    pub fn start_run(
        &self,
        step: &mut crate::train::TrainStep,
        columns: &[&str],
    ) -> Result<Run, Box<dyn std::error::Error>> {
        self.start_run_as(step, columns, true)
    }

    /// [`TrainArgs::start_run`] for one rank of a distributed run: only the `lead`
    /// (rank 0) writes files and serves the dashboard; every rank keeps the schedule,
    /// so learning rates agree.
    pub fn start_run_as(
        &self,
        step: &mut crate::train::TrainStep,
        columns: &[&str],
        lead: bool,
    ) -> Result<Run, Box<dyn std::error::Error>> {
        let mut log = crate::cli::runlog::RunLog::new(columns);
        if let Some(dir) = self.plot.as_ref().filter(|_| lead) {
            log = log.csv(&dir.join("metrics.csv"))?;
        }
        if let Some(dir) = self.tensorboard.as_ref().filter(|_| lead) {
            log = log.tensorboard(dir)?;
        }
        let mut dashboard = None;
        if lead && (self.dashboard || self.dashboard_addr.is_some()) {
            let addr = self
                .dashboard_addr
                .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
            let name = std::env::args()
                .next()
                .and_then(|p| {
                    std::path::Path::new(&p)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| "run".into());
            let d = crate::dashboard::Dashboard::serve(&name, addr)?;
            println!(
                "dashboard: {} (live; {})",
                d.url(),
                if self.dashboard_keep {
                    "kept after the run until Ctrl-C"
                } else {
                    "stops with the run, --dashboard-keep keeps it"
                }
            );
            d.attach(step);
            dashboard = Some(d);
        }
        Ok(Run {
            log,
            sched: self.scheduler.clone(),
            base_lr: step.lr(),
            plot: self.plot.clone().filter(|_| lead),
            dashboard,
            keep: self.dashboard_keep,
            last_step: step.steps(),
            shown: None,
        })
    }
}

/// One training run's bookkeeping from the shared flags: its log, its schedule and its
/// dashboard. With `--dashboard-keep`, dropping it (at the end of the example) keeps
/// serving the page until Ctrl-C.
pub struct Run {
    log: crate::cli::runlog::RunLog,
    sched: Option<crate::optim::Scheduler>,
    base_lr: f64,
    plot: Option<std::path::PathBuf>,
    dashboard: Option<crate::dashboard::Dashboard>,
    keep: bool,
    /// The step count of the last record (pictures are logged at it).
    last_step: u64,
    /// When the dashboard last got the step's programs.
    shown: Option<std::time::Instant>,
}

/// Epochs (1-based) after which weight histograms are written: 1-10, then every 10th
/// to 100, every 100th to 1000, ...
fn histogram_epoch(e: usize) -> bool {
    let mut unit = 1;
    while e >= unit * 10 {
        unit *= 10;
    }
    e.is_multiple_of(unit)
}

/// Columns the dashboard gets from the step itself (its observer), not from the log.
const FROM_THE_STEP: &[&str] = &["loss", "lr"];

impl Run {
    /// Records `values` at the step's current step count.
    pub fn record(
        &mut self,
        step: &crate::train::TrainStep,
        epoch: usize,
        values: &[(&str, f64)],
    ) -> Result<(), crate::cli::runlog::LogError> {
        if let Some(d) = &self.dashboard {
            let other: Vec<(&str, f64)> = values
                .iter()
                .filter(|(n, _)| !FROM_THE_STEP.contains(n))
                .copied()
                .collect();
            if !other.is_empty() {
                d.record(step.steps(), &other);
            }
        }
        self.last_step = step.steps();
        self.log.record(step.steps(), epoch, values)
    }

    /// The live page, with `--dashboard` (rank 0 only).
    pub fn dashboard(&self) -> Option<&crate::dashboard::Dashboard> {
        self.dashboard.as_ref()
    }

    /// After epoch `epoch` (0-based) with mean training loss `loss`: sets the step's
    /// next learning rate from `--scheduler`, if one was given; refreshes the
    /// dashboard's view of the step (its lowered program and profile; at most once a
    /// second); with `--tensorboard` writes each parameter's histogram (after epochs 1-10,
    /// then 20, 30, ..., 100, 200, ...: a long run of tiny epochs stays small).
    pub fn end_epoch(
        &mut self,
        step: &mut crate::train::TrainStep,
        epoch: usize,
        loss: f64,
    ) -> Result<(), crate::cli::runlog::LogError> {
        if let Some(s) = &mut self.sched {
            let lr = s.next_lr(self.base_lr, step.lr(), epoch, Some(loss));
            step.set_lr(lr);
        }
        if let Some(d) = &self.dashboard {
            d.info("epoch", &(epoch + 1).to_string());
            let due = self
                .shown
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
            if due {
                d.refresh(step);
                self.shown = Some(std::time::Instant::now());
            }
        }
        if self.log.has_events() && histogram_epoch(epoch + 1) {
            for (name, t) in step.parameters() {
                self.log.histogram(name, &t.to_f64_vec(), step.steps())?;
            }
        }
        Ok(())
    }

    /// Pushes the log's buffered rows to disk.
    pub fn flush(&mut self) -> Result<(), crate::cli::runlog::LogError> {
        self.log.flush()
    }

    /// A picture of the run (`NAME.png` and `NAME.svg` in the `--plot` directory, and
    /// on the dashboard), drawn by `picture`.
    pub fn picture(
        &mut self,
        name: &str,
        title: &str,
        picture: &crate::cli::pictures::Picture,
    ) -> Result<Vec<std::path::PathBuf>, Box<dyn std::error::Error>> {
        let mut files = Vec::new();
        if let Some(dir) = &self.plot {
            files = crate::cli::pictures::save(dir, name, picture)?;
        }
        if self.dashboard.is_some() || self.log.has_events() {
            let png = crate::cli::pictures::png_bytes(picture)?;
            self.log.image(name, &png, self.last_step)?;
            if let Some(d) = &self.dashboard {
                d.picture(&format!("{name}.png"), title, png)?;
            }
        }
        Ok(files)
    }

    /// Whether [`Run::picture`] has anywhere to put a picture (so that an example
    /// computes one only when it is wanted).
    pub fn wants_pictures(&self) -> bool {
        self.plot.is_some() || self.dashboard.is_some() || self.log.has_events()
    }

    /// Flushes the log and renders the curves when `--plot` was given; returns the
    /// files written. The dashboard says the run finished.
    pub fn finish(&mut self) -> Result<Vec<std::path::PathBuf>, crate::cli::runlog::LogError> {
        self.log.flush()?;
        if let Some(d) = &self.dashboard {
            d.finish();
        }
        match &self.plot {
            Some(dir) => self.log.plot(dir),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(d) = self.dashboard.take()
            && self.keep
        {
            d.finish();
            d.sync();
            println!(
                "dashboard: the run has ended; still serving {} until Ctrl-C",
                d.url()
            );
            d.serve_forever();
        }
    }
}

impl crate::train::Trainer {
    /// The compile-time options of the command line: `--opt-level` and
    /// `--check-numerics`.
    pub fn with_args(self, a: &TrainArgs) -> crate::train::Trainer {
        self.opt_level(a.opt_level)
            .check_numerics(a.check_numerics)
            .profile(a.profile)
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

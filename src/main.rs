//! The `aotgrad` command line: inspect, run and differentiate IR files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aotgrad::compiler::{Seed, grad};
use aotgrad::executor::{ProgramKind, Stage};
use aotgrad::runtime::npy;
use aotgrad::{Graph, Tensor, text};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aotgrad",
    version,
    about = "Ahead-of-time compiler for neural-network training steps"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and verify an IR file; errors point at line:column.
    Check { file: PathBuf },
    /// Time the compiled training step of a reference model (the names and shapes of
    /// ../shared/bench/torch_ref.py): median/min/max ms per step, samples/s, compile
    /// time, peak RSS.
    Bench {
        /// linreg, logreg, mlp_mse_sgdm, mlp_ce_adam64, mlp_ce_adam512, lenet,
        /// wide_adam, char_lstm, gpt (the sequence examples' steps, as
        /// tools/torch_ref.py builds them), and himmelblau (a data-free step of 0-d
        /// parameters: the per-call overhead).
        #[arg(required = true, num_args = 1..)]
        models: Vec<String>,
        /// Threads of the CPU backend.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// cpu, gpu or interp.
        #[arg(long, default_value = "cpu")]
        backend: aotgrad::train::Backend,
        /// Seconds of timed steps per model (after at least 20 steps).
        #[arg(long, default_value_t = 3.0)]
        max_time: f64,
        /// At most this many timed steps per model.
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// One JSON object per model instead of a table row.
        #[arg(long)]
        json: bool,
        /// Also time every kernel of the CPU step and print where a step's time goes
        /// (two clock reads per kernel; to stderr with --json), with the GEMM rate of
        /// the products against one core's FMA peak measured in the same run, and the
        /// products' floor: how long they would take at that peak.
        /// Instead of one timing: the dashboard's cost. 20 pairs of rounds (--max-time/4
        /// seconds each) without and with a dashboard attached (and a client reading its
        /// event stream), in alternating order; prints both rates and the throughput
        /// lost: the median pair's, and the pairs' interquartile range.
        #[arg(long)]
        dashboard: bool,
        #[arg(long)]
        profile: bool,
        /// Data-parallel, as one rank of the job `mpirun -np N` started (needs the
        /// `mpi` feature): samples/s counts every rank's batch, as
        /// ../shared/bench/torch_ddp_ref.py does; rank 0 prints.
        #[arg(long)]
        distributed: bool,
        /// With --distributed: the most kilobytes of gradients per reduction (smaller
        /// buckets start earlier and overlap more of backward).
        #[arg(long, value_name = "KB")]
        bucket_kb: Option<usize>,
    },
    /// Print the lowered program (kernels, buffers, memory plan) and the Cranelift IR of
    /// a reference model's training step, as the CPU backend compiles it, or its WGSL.
    Lower {
        model: String,
        /// Also print the Cranelift IR.
        #[arg(long)]
        clif: bool,
        /// Also print the WGSL compute shaders of the GPU backend (no adapter needed).
        #[arg(long)]
        wgsl: bool,
        /// Also print every function as Cranelift optimised it and the machine code it
        /// emitted for this host (depends on the host's CPU features).
        #[arg(long)]
        machine: bool,
        /// Print the program as first lowered and after every kernel-plan pass, exactly
        /// as the backend lowers it (the CPU's, with its parameter arena; the GPU's with
        /// --wgsl); the last one is the program that runs.
        #[arg(long)]
        print_after_all: bool,
    },
    /// Print an IR file in canonical form.
    Fmt { file: PathBuf },
    /// Run the graph passes on an IR file (or on a reference model's traced training
    /// step) and print the optimised graph; optionally the graph after every pass, and
    /// why the lowering did not fuse each value it stores.
    Opt {
        /// An IR file (as `aotgrad fmt` prints it).
        #[arg(required_unless_present = "model")]
        file: Option<PathBuf>,
        /// A reference model's training step instead of a file (see `bench`).
        #[arg(long, conflicts_with = "file")]
        model: Option<String>,
        /// 0: as traced; 1: dead-code elimination; 2: simplify, CSE, DCE to a fixed point.
        #[arg(short = 'O', long = "opt-level", default_value = "2")]
        level: aotgrad::prelude::OptLevel,
        /// Print the graph after each pass (with its node count), then the result.
        #[arg(long)]
        print_after_all: bool,
        /// Lower the optimised graph and list, for each value written to memory, the ops
        /// that read it and why it was not fused into them.
        #[arg(long)]
        explain_fusion: bool,
        /// SYMBOL=SIZE for --explain-fusion (every unbound symbol defaults to 64).
        #[arg(long = "bind", value_name = "SYMBOL=SIZE")]
        binds: Vec<String>,
    },
    /// Evaluate an IR file on the reference interpreter, writing one .npy per output.
    Run {
        file: PathBuf,
        /// NAME=PATH.npy for each input, param and state.
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// Directory for the outputs (`NAME.npy`) and updates (`NAME.next.npy`).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Append the reverse-mode gradient subgraph and print the joint graph.
    Grad {
        file: PathBuf,
        /// Nodes to differentiate with respect to (inputs, params, states or outputs).
        #[arg(long, value_name = "NAME", required = true, num_args = 1..)]
        wrt: Vec<String>,
        /// Scalar outputs to differentiate with seed 1 (default: every float scalar
        /// output, when no --seed is given).
        #[arg(long = "of", value_name = "OUTPUT")]
        of: Vec<String>,
        /// OUTPUT=PATH.npy: differentiate OUTPUT with this cotangent (`y.backward(seed)`).
        #[arg(long = "seed", value_name = "OUTPUT=PATH")]
        seeds: Vec<String>,
    },
    /// Serve finished runs on the dashboard's page, overlaid: the directories that
    /// `--plot DIR` or `--tensorboard DIR` wrote (or a directory of such runs). Serves
    /// until Ctrl-C.
    Dashboard {
        #[arg(required = true, num_args = 1..)]
        dirs: Vec<PathBuf>,
        /// Where to listen; an address other than loopback requires the printed token.
        #[arg(long, default_value = "127.0.0.1:6006")]
        addr: std::net::SocketAddr,
    },
    /// Compare autodiff gradients with central finite differences (in f64) and print the
    /// worst relative error per input; fails when one exceeds --tol.
    Gradcheck {
        file: PathBuf,
        /// NAME=PATH.npy for each input, param and state.
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// Leaves to check (default: every float input and param).
        #[arg(long, value_name = "NAME", num_args = 1..)]
        wrt: Vec<String>,
        /// The central-difference step (a finite number above 0).
        #[arg(long, default_value_t = 1e-6, allow_hyphen_values = true)]
        eps: f64,
        /// The largest relative error that passes (a finite number at least 0); a NaN
        /// or infinite error always fails.
        #[arg(long, default_value_t = 1e-5, allow_hyphen_values = true)]
        tol: f64,
    },
}

fn read_feeds(inputs: &[String]) -> Result<HashMap<String, Tensor>, String> {
    let mut feeds = HashMap::new();
    for spec in inputs {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| format!("--input {spec:?}: expected NAME=PATH.npy"))?;
        let t: Tensor =
            npy::read_npy(Path::new(path)).map_err(|e| format!("--input {name}: {e}"))?;
        if feeds.insert(name.to_string(), t).is_some() {
            return Err(format!("--input {name} is given twice"));
        }
    }
    Ok(feeds)
}

fn grad_cmd(
    file: &Path,
    wrt: &[String],
    of: &[String],
    seeds: &[String],
) -> Result<String, String> {
    let graph = load(file)?;
    let mut outs: Vec<(String, Seed)> = of.iter().map(|o| (o.clone(), Seed::Auto)).collect();
    for spec in seeds {
        let (name, path) = spec
            .split_once('=')
            .ok_or_else(|| format!("--seed {spec:?}: expected OUTPUT=PATH.npy"))?;
        let t: Tensor =
            npy::read_npy(Path::new(path)).map_err(|e| format!("--seed {name}: {e}"))?;
        outs.push((name.to_string(), Seed::Const(t.data().clone())));
    }
    if outs.is_empty() {
        outs = graph
            .outputs()
            .iter()
            .filter(|(_, id)| graph.ty(*id).rank() == 0 && graph.ty(*id).dtype.is_float())
            .map(|(n, _)| (n.clone(), Seed::Auto))
            .collect();
        if outs.is_empty() {
            return Err(format!(
                "{}: no float scalar output to differentiate; name one with --of or give --seed",
                file.display()
            ));
        }
    }
    let outs: Vec<(&str, Seed)> = outs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
    let joint = grad(&graph, &outs, &wrt).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(text::print(&joint))
}

fn gradcheck_cmd(
    file: &Path,
    inputs: &[String],
    wrt: &[String],
    eps: f64,
    tol: f64,
) -> Result<String, String> {
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(format!(
            "--tol {tol}: the tolerance must be a finite number at least 0"
        ));
    }
    if !(eps.is_finite() && eps > 0.0) {
        return Err(format!(
            "--eps {eps}: the step must be a finite number above 0"
        ));
    }
    let graph = load(file)?;
    let feeds = read_feeds(inputs)?;
    let wrt: Vec<String> = if wrt.is_empty() {
        graph
            .inputs()
            .chain(graph.params())
            .filter(|(_, id)| graph.ty(*id).dtype.is_float())
            .map(|(n, _)| n.to_string())
            .collect()
    } else {
        wrt.to_vec()
    };
    let wrt: Vec<&str> = wrt.iter().map(String::as_str).collect();
    let opts = aotgrad::GradcheckOptions {
        eps,
        ..Default::default()
    };
    let report = aotgrad::gradcheck(&graph, &feeds, &wrt, opts)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if report.passed(tol) {
        Ok(format!(
            "{report}passed: worst relative error {:.3e} <= {tol:e}\n",
            report.worst()
        ))
    } else {
        Err(format!(
            "{}: gradcheck failed: worst relative error {:.3e} > {tol:e}\n{report}",
            file.display(),
            report.worst()
        ))
    }
}

fn load(file: &Path) -> Result<Graph, String> {
    let src = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text::parse(&src).map_err(|e| format!("{}:{e}", file.display()))
}

/// Output names become file names; keep them to a safe alphabet.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn run_cmd(file: &Path, inputs: &[String], out: &Path) -> Result<String, String> {
    let graph = load(file)?;
    let feeds = read_feeds(inputs)?;
    let result = aotgrad::run(&graph, &feeds).map_err(|e| format!("{}: {e}", file.display()))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut report = String::new();
    // (file name, what it holds, name, value)
    let files: Vec<(String, String, &String, &Tensor)> = result
        .outputs
        .iter()
        .map(|(n, t)| {
            (
                format!("{}.npy", file_stem(n)),
                format!("output {n:?}"),
                n,
                t,
            )
        })
        .chain(result.updates.iter().map(|(n, t)| {
            (
                format!("{}.next.npy", file_stem(n)),
                format!("the update of {n:?}"),
                n,
                t,
            )
        }))
        .collect();
    // Two names that map to one file would overwrite each other: refused before
    // anything is written (compared without case, for case-insensitive file systems).
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (fname, what, _, _) in &files {
        if let Some(first) = seen.insert(fname.to_lowercase(), what) {
            return Err(format!(
                "{first} and {what} would both be written to {}; rename one of them",
                out.join(fname).display()
            ));
        }
    }
    for (fname, _, name, t) in files {
        let path = out.join(fname);
        npy::write_npy(&path, t).map_err(|e| e.to_string())?;
        report.push_str(&format!("{name}: {t} -> {}\n", path.display()));
    }
    Ok(report)
}

fn bench_cmd(
    models: &[String],
    backend: aotgrad::train::Backend,
    opts: aotgrad::bench::BenchOptions,
    json: bool,
    distributed: bool,
) -> Result<String, String> {
    let profile = opts.profile;
    let group = if distributed {
        Some(aotgrad::distributed::mpi_world().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
    // Refused before any model is compiled or timed.
    if profile && !matches!(backend, aotgrad::train::Backend::Cpu { .. }) {
        return Err(
            "--profile times the CPU backend's kernels: it needs --backend cpu".to_string(),
        );
    }
    let mut out = String::new();
    if !json {
        out.push_str("| model          | backend | thr | batch | median ms | min ms  | max ms  | steps | samples/s  | compile ms | peak RSS MB |\n");
    }
    for m in models {
        let r = aotgrad::bench::run_in_group(m, backend, opts, group.clone())?;
        if json {
            out.push_str(&r.to_json());
            out.push('\n');
        } else {
            out.push_str(&format!(
                "| {:15}| {:8}| {:3} | {:5} | {:9.5} | {:7.5} | {:7.5} | {:5} | {:10.0} | {:10.1} | {:11.1} |\n",
                r.model, r.backend, r.threads, r.batch, r.median_ms, r.min_ms, r.max_ms, r.steps,
                r.samples_per_s, r.compile_ms, r.peak_rss_mb
            ));
        }
        match (&r.profile, json) {
            (Some(p), false) => out.push_str(&format!("\n{} step:\n{p}\n", r.model)),
            (Some(p), true) => eprint!("{} step:\n{p}", r.model),
            (None, _) => {}
        }
    }
    if let Some(g) = &group {
        if !lead {
            return Ok(String::new());
        }
        if !json {
            out.insert_str(
                0,
                &format!(
                    "data-parallel over {} ranks: batch is per rank, ms the slowest rank's median step, samples/s counts every rank\n",
                    g.world()
                ),
            );
        }
    }
    Ok(out)
}

struct OptArgs<'a> {
    file: Option<&'a Path>,
    model: Option<&'a str>,
    level: aotgrad::prelude::OptLevel,
    print_after_all: bool,
    explain_fusion: bool,
    binds: &'a [String],
}

fn opt_cmd(a: OptArgs) -> Result<String, String> {
    use aotgrad::compiler::passes;
    let graph = match (a.file, a.model) {
        (Some(f), _) => load(f)?,
        (None, Some(m)) => {
            let (trainer, _) = aotgrad::bench::setup_any(m)?;
            let step = trainer
                .opt_level(passes::OptLevel::O0)
                .compile(&aotgrad::train::Backend::Interpreter)
                .map_err(|e| e.to_string())?;
            step.step_graph().clone()
        }
        (None, None) => return Err("give an IR file or --model".into()),
    };
    let mut out = String::new();
    let t0 = std::time::Instant::now();
    let optimized = passes::optimize_with(&graph, a.level, &mut |run, g| {
        if a.print_after_all {
            out.push_str(&format!(
                "# after {} (round {}): {} -> {} nodes{}\n{}\n",
                run.pass,
                run.round,
                run.nodes_before,
                run.nodes_after,
                if run.changed { "" } else { ", unchanged" },
                text::print(g)
            ));
        }
    })
    .map_err(|e| e.to_string())?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    out.push_str(&format!(
        "# {}: {} -> {} nodes in {ms:.2} ms\n",
        a.level,
        graph.len(),
        optimized.len()
    ));
    out.push_str(&text::print(&optimized));
    if a.explain_fusion {
        let mut env = std::collections::BTreeMap::new();
        for b in a.binds {
            let (k, v) = b
                .split_once('=')
                .ok_or_else(|| format!("--bind {b:?}: expected SYMBOL=SIZE"))?;
            let v: usize = v
                .parse()
                .map_err(|_| format!("--bind {b:?}: {v:?} is not a size"))?;
            env.insert(std::sync::Arc::<str>::from(k), v);
        }
        for (_, n) in optimized.nodes() {
            for s in n.ty.shape.dims().iter().flat_map(|d| d.symbols()) {
                env.entry(s).or_insert(64);
            }
        }
        let p = aotgrad::compiler::lower::lower(
            &optimized,
            &env,
            aotgrad::compiler::lower::LowerOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        let binds: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "\n# fusion ({}): {} kernels; values written to memory:\n",
            binds.join(", "),
            p.kernels.len()
        ));
        for line in aotgrad::compiler::lower::explain_fusion(&optimized, &p).lines() {
            out.push_str(&format!("#   {line}\n"));
        }
    }
    Ok(out)
}

fn lower_cmd(
    model: &str,
    clif: bool,
    wgsl: bool,
    machine: bool,
    print_after_all: bool,
) -> Result<String, String> {
    let (trainer, batch) = aotgrad::bench::setup(model)?;
    // The one symbol of the reference models: the batch size.
    let env: aotgrad::runtime::interp::SymbolEnv =
        [(std::sync::Arc::from("N"), batch.x.shape()[0])]
            .into_iter()
            .collect();
    if wgsl {
        // The GPU's code is generated from the same lowered program; printing it needs
        // no adapter.
        let step = trainer
            .compile(&aotgrad::train::Backend::Interpreter)
            .map_err(|e| e.to_string())?;
        let graph = step.optimized_step_graph();
        let opts = aotgrad::compiler::codegen::wgsl::lower_options();
        let lowered = if print_after_all {
            aotgrad::compiler::lower::lower_pass_by_pass(graph, &env, opts, None)
                .map(|(p, passes)| (p, Some(passes)))
        } else {
            aotgrad::compiler::lower::lower(graph, &env, opts).map(|p| (p, None))
        };
        let (p, passes) = lowered.map_err(|e| e.to_string())?;
        let w = aotgrad::compiler::codegen::wgsl::emit(&p, graph, Default::default())
            .map_err(|e| e.to_string())?;
        let program = passes.unwrap_or_else(|| p.to_string());
        return Ok(format!("{program}\n{w}"));
    }
    let mut step = trainer
        .compile(&aotgrad::train::Backend::Cpu { threads: 1 })
        .map_err(|e| e.to_string())?;
    step.run(&batch).map_err(|e| e.to_string())?;
    let stage = |stage| {
        step.artifact(ProgramKind::Step, stage)
            .ok_or("no CPU program was compiled")?
            .map_err(|e| e.to_string())
    };
    let mut out = stage(if print_after_all {
        Stage::PlanPasses
    } else {
        Stage::Lowered
    })?;
    if clif {
        out = format!("{out}\n{}", stage(Stage::CraneliftIr)?);
    }
    if machine {
        out = format!("{out}\n{}", stage(Stage::MachineCode)?);
    }
    Ok(out)
}

/// Serves the runs until the process is interrupted; returns only on an error.
fn dashboard_cmd(dirs: &[PathBuf], addr: std::net::SocketAddr) -> Result<String, String> {
    let runs = aotgrad::cli::finished_runs::load(dirs)?;
    let names: Vec<String> = runs
        .iter()
        .map(|r| {
            let points: usize = r.series.iter().map(|(_, p)| p.len()).sum();
            format!(
                "  {}: {} series, {points} points, {} pictures",
                r.name,
                r.series.len(),
                r.pictures.len()
            )
        })
        .collect();
    let d = aotgrad::dashboard::Dashboard::serve_runs(runs, addr).map_err(|e| e.to_string())?;
    println!("{}", names.join("\n"));
    println!("dashboard: {} (Ctrl-C to stop)", d.url());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    d.serve_forever()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Check { file } => {
            load(file).map(|g| format!("{}: ok ({} nodes)\n", file.display(), g.len()))
        }
        Cmd::Fmt { file } => load(file).map(|g| text::print(&g)),
        Cmd::Bench {
            models,
            threads,
            backend,
            max_time,
            json,
            profile,
            distributed,
            dashboard: true,
            ..
        } if *json || *profile || *distributed => Err(
            "bench --dashboard measures the dashboard's cost alone: it takes no --json, --profile or --distributed".to_string(),
        ),
        Cmd::Bench {
            models,
            threads,
            backend,
            max_time,
            dashboard: true,
            ..
        } => {
            let mut out = String::from(
                "| model          | backend | thr | plain steps/s | dashboard steps/s | cost (median pair) | pairs' IQR | observer ns/step | step ns | dashboard threads' CPU | streamed KB |\n",
            );
            let mut result = Ok(());
            for m in models {
                match aotgrad::cli::dashboard_overhead::measure(
                    m,
                    backend.with_threads(*threads),
                    20,
                    *max_time / 4.0,
                ) {
                    Ok(o) => out.push_str(&format!(
                        "| {:15}| {:8}| {:3} | {:13.1} | {:17.1} | {:+17.2}% | {:+.2}%..{:+.2}% | {:16.1} | {:7.0} | {:>21} | {:11.0} |\n",
                        o.model,
                        match backend {
                            aotgrad::train::Backend::Cpu { .. } => "cpu",
                            aotgrad::train::Backend::Gpu => "gpu",
                            aotgrad::train::Backend::Interpreter => "interp",
                        },
                        threads,
                        o.plain_steps_per_s,
                        o.dashboard_steps_per_s,
                        100.0 * o.cost(),
                        100.0 * o.cost_iqr().0,
                        100.0 * o.cost_iqr().1,
                        o.observer_ns,
                        1e9 / o.plain_steps_per_s,
                        o.threads_cpu
                            .map_or("n/a".to_string(), |c| format!("{:.2}% of a core", 100.0 * c)),
                        o.streamed_bytes as f64 / 1024.0
                    )),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result.map(|()| out)
        }
        Cmd::Bench {
            models,
            threads,
            backend,
            max_time,
            steps,
            json,
            profile,
            distributed,
            bucket_kb,
            ..
        } => bench_cmd(
            models,
            backend.with_threads(*threads),
            aotgrad::bench::BenchOptions {
                max_time_s: *max_time,
                max_steps: (*steps).max(1),
                profile: *profile,
                bucket_bytes: bucket_kb.map(|k| k.saturating_mul(1024)),
                ..Default::default()
            },
            *json,
            *distributed,
        ),
        Cmd::Lower {
            model,
            clif,
            wgsl,
            machine,
            print_after_all,
        } => lower_cmd(model, *clif, *wgsl, *machine, *print_after_all),
        Cmd::Opt {
            file,
            model,
            level,
            print_after_all,
            explain_fusion,
            binds,
        } => opt_cmd(OptArgs {
            file: file.as_deref(),
            model: model.as_deref(),
            level: *level,
            print_after_all: *print_after_all,
            explain_fusion: *explain_fusion,
            binds,
        }),
        Cmd::Run { file, inputs, out } => run_cmd(file, inputs, out),
        Cmd::Grad {
            file,
            wrt,
            of,
            seeds,
        } => grad_cmd(file, wrt, of, seeds),
        Cmd::Gradcheck {
            file,
            inputs,
            wrt,
            eps,
            tol,
        } => gradcheck_cmd(file, inputs, wrt, *eps, *tol),
        Cmd::Dashboard { dirs, addr } => dashboard_cmd(dirs, *addr),
    };
    match res {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

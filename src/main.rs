//! The `aotgrad` command line: inspect and run IR files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Print an IR file in canonical form.
    Fmt { file: PathBuf },
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
    let result = aotgrad::run(&graph, &feeds).map_err(|e| format!("{}: {e}", file.display()))?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut report = String::new();
    let files = result
        .outputs
        .iter()
        .map(|(n, t)| (format!("{}.npy", file_stem(n)), n, t))
        .chain(
            result
                .updates
                .iter()
                .map(|(n, t)| (format!("{}.next.npy", file_stem(n)), n, t)),
        );
    for (fname, name, t) in files {
        let path = out.join(fname);
        npy::write_npy(&path, t).map_err(|e| e.to_string())?;
        report.push_str(&format!("{name}: {t} -> {}\n", path.display()));
    }
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Check { file } => {
            load(file).map(|g| format!("{}: ok ({} nodes)\n", file.display(), g.len()))
        }
        Cmd::Fmt { file } => load(file).map(|g| text::print(&g)),
        Cmd::Run { file, inputs, out } => run_cmd(file, inputs, out),
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

//! Graph-to-graph optimisation passes and the pipeline that runs them.
//!
//! Every pass is a pure function `&Graph -> Graph` that keeps the graph's leaves,
//! outputs and updates (by name and type) and never changes a value; the pipeline
//! verifies the graph after each pass and stops with a [`PassError`] naming the pass if
//! one produced an invalid graph. Kernel fusion, layout (transposes folded into matmul
//! strides) and memory planning happen later, on the lowered program
//! ([`crate::lower`]), where buffers and loops exist.
//!
//! To add a pass: write `fn(&Graph) -> Graph` in its own module (build the output with
//! [`rewrite::Rewriter`] so outputs and updates are remapped for you), list it in
//! [`PASSES`] and in the levels of [`OptLevel::passes`], give it snapshots in
//! `tests/compiler/passes.rs`; the property test there then checks it on random graphs.

mod cse;
mod dce;
pub(crate) mod rewrite;
mod schedule;
mod simplify;

pub use cse::cse;
pub use dce::dce;
pub use schedule::schedule_collectives;
pub use simplify::simplify;

use aotgrad_ir::{Graph, verify};

/// One pass of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub name: &'static str,
    pub run: fn(&Graph) -> Graph,
    /// One line for `aotgrad opt --help`-style listings.
    pub about: &'static str,
}

/// Every pass, by name.
pub const PASSES: &[Pass] = &[
    Pass {
        name: "simplify",
        run: simplify,
        about: "constant folding and algebraic identities (x+0, x*1, reshape/permute/cast chains, trivial reductions)",
    },
    Pass {
        name: "cse",
        run: cse,
        about: "common-subexpression elimination",
    },
    Pass {
        name: "dce",
        run: dce,
        about: "dead-code elimination",
    },
    Pass {
        name: "schedule_collectives",
        run: schedule_collectives,
        about: "each all_reduce (and the concat of its gradient bucket) moved up to just after its operand, so it overlaps the rest of backward",
    },
];

/// Looks a pass up by name.
pub fn pass(name: &str) -> Option<&'static Pass> {
    PASSES.iter().find(|p| p.name == name)
}

/// How much the pipeline does. `O0` runs the graph as traced (to bisect a suspected
/// miscompile: if `O0` and `O2` disagree, `--print-after-all` shows which pass did it);
/// `O2`, the default, runs every pass to a fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptLevel {
    O0,
    /// Dead-code elimination only.
    O1,
    #[default]
    O2,
}

impl OptLevel {
    /// The passes of one round at this level.
    pub fn passes(self) -> &'static [&'static str] {
        match self {
            OptLevel::O0 => &[],
            OptLevel::O1 => &["dce", "schedule_collectives"],
            OptLevel::O2 => &["simplify", "cse", "dce", "schedule_collectives"],
        }
    }

    /// Rounds at most (a round that changes nothing ends the pipeline earlier).
    pub fn max_rounds(self) -> usize {
        match self {
            OptLevel::O0 => 0,
            OptLevel::O1 => 1,
            OptLevel::O2 => 4,
        }
    }
}

impl std::str::FromStr for OptLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches(['-', 'O', 'o']) {
            "0" => Ok(OptLevel::O0),
            "1" => Ok(OptLevel::O1),
            "2" => Ok(OptLevel::O2),
            _ => Err(format!("unknown optimisation level {s:?} (0, 1 or 2)")),
        }
    }
}

impl std::fmt::Display for OptLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = match self {
            OptLevel::O0 => 0,
            OptLevel::O1 => 1,
            OptLevel::O2 => 2,
        };
        write!(f, "O{n}")
    }
}

/// A pass produced a graph the verifier rejects (a compiler bug, reported with the pass
/// so it can be bisected with `aotgrad opt --print-after-all`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("pass {pass} (round {round}) produced an invalid graph: {message}")]
pub struct PassError {
    pub pass: &'static str,
    pub round: usize,
    pub message: String,
}

/// What one pass did, for `--print-after-all` and statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct PassRun {
    pub pass: &'static str,
    pub round: usize,
    pub nodes_before: usize,
    pub nodes_after: usize,
    /// Whether the graph changed at all (not just its size).
    pub changed: bool,
}

/// Runs the pipeline of `level` on `g`.
pub fn optimize(g: &Graph, level: OptLevel) -> Result<Graph, PassError> {
    optimize_with(g, level, &mut |_, _| {})
}

/// [`optimize`], calling `after` with each pass's report and result graph.
pub fn optimize_with(
    g: &Graph,
    level: OptLevel,
    after: &mut dyn FnMut(&PassRun, &Graph),
) -> Result<Graph, PassError> {
    let mut cur = g.clone();
    for round in 1..=level.max_rounds() {
        let mut any = false;
        for name in level.passes() {
            let p = pass(name).expect("levels name known passes");
            let next = (p.run)(&cur);
            verify(&next).map_err(|e| PassError {
                pass: p.name,
                round,
                message: e.to_string(),
            })?;
            let changed = next != cur;
            any |= changed;
            let report = PassRun {
                pass: p.name,
                round,
                nodes_before: cur.len(),
                nodes_after: next.len(),
                changed,
            };
            after(&report, &next);
            cur = next;
        }
        if !any {
            break;
        }
    }
    Ok(cur)
}

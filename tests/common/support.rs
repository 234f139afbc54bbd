// Helpers shared by the integration tests (included with `mod`): bitwise comparisons
// of compiled programs, and running the `aotgrad` binary.
#![allow(dead_code)]

use std::collections::HashMap;

use aotgrad::Evaluation;
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};

/// The bits of every element, widened to f64 (exact for f32).
pub fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().into_iter().map(f64::to_bits).collect()
}

/// Runs `graph` with `baseline`, then with the default options at 1 and at 2 threads,
/// and demands each output in `names` bitwise equal to the baseline's (naming the first
/// differing element). Returns the baseline's evaluation for further checks.
pub fn assert_bitwise_at_1_and_2_threads(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    baseline: CpuOptions,
    names: &[&str],
    what: &str,
) -> Evaluation {
    let want = cpu::run_once(graph, feeds, baseline).unwrap();
    for threads in [1, 2] {
        let opts = CpuOptions {
            threads,
            ..Default::default()
        };
        let got = cpu::run_once(graph, feeds, opts).unwrap();
        for name in names {
            let (a, b) = (
                bits(want.output(name).unwrap()),
                bits(got.output(name).unwrap()),
            );
            assert_eq!(a.len(), b.len(), "{what} {name}");
            let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
            assert_eq!(first_diff, None, "{what} {name}, {threads} threads");
        }
    }
    want
}

/// Runs the `aotgrad` binary with `args`: whether it succeeded, its stdout, its stderr.
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aotgrad"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

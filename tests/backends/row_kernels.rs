//! Row kernels (`plan::fuse_rows`): neighbouring loops over the same rows run row by
//! row in one kernel (softmax / log-softmax and cross entropy with its gradient). They
//! must compute bitwise what the program without them computes, with 1 or 2
//! threads, agree with the interpreter and the GPU, and must not form where a stage
//! reads another row of what an earlier stage wrote.

use std::collections::HashMap;

use aotgrad::Evaluation;
use aotgrad::compiler::autodiff::{self, Seed};
use aotgrad::compiler::lower::{self, KernelBody, Program};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::CpuOptions;
use aotgrad::runtime::gpu;

use crate::support;
use support::assert_bitwise_at_1_and_2_threads;

fn fill(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 250.0 - 4.0)
        .collect()
}

/// Stage counts of the program's row kernels.
fn row_stages(p: &Program) -> Vec<usize> {
    p.kernels
        .iter()
        .filter_map(|k| match &k.body {
            KernelBody::Rows(r) => Some(r.stages.len()),
            _ => None,
        })
        .collect()
}

fn assert_close(want: &Evaluation, got: &Evaluation, names: &[&str], what: &str) {
    for name in names {
        let (a, b) = (
            want.output(name).unwrap().to_f64_vec(),
            got.output(name).unwrap().to_f64_vec(),
        );
        assert_eq!(a.len(), b.len(), "{what} {name}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                "{what} {name}: {x} vs {y}"
            );
        }
    }
}

/// The program with row kernels against the same program without them (bitwise, 1 and
/// 2 threads), the interpreter and, where an adapter exists, the GPU.
fn check_everywhere(graph: &Graph, feeds: &HashMap<String, Tensor>, names: &[&str], what: &str) {
    let unfused = assert_bitwise_at_1_and_2_threads(
        graph,
        feeds,
        CpuOptions {
            rows: false,
            ..Default::default()
        },
        names,
        what,
    );
    let interp = aotgrad::run(graph, feeds).unwrap();
    assert_close(&interp, &unfused, names, what);
    if gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)") {
        let got = gpu::run_once(graph, feeds).unwrap();
        assert_close(&interp, &got, names, &format!("{what} (GPU)"));
    }
}

/// Mean cross entropy of `[n, c]` logits and its gradient, with one ignored target.
fn cross_entropy_case(n: usize, c: usize) -> (Graph, HashMap<String, Tensor>) {
    let g = GraphBuilder::new("ce");
    let x = g.input("x", DType::F32, Shape::known(&[n, c]));
    let t = g.input("t", DType::I64, Shape::known(&[n]));
    g.output(
        "loss",
        nn::cross_entropy(x, t, nn::ClassLossOptions::default()),
    );
    let forward = g.finish().unwrap();
    let graph = autodiff::grad(&forward, &[("loss", Seed::Ones)], &["x"]).unwrap();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".into(),
        Tensor::from_f32(&fill(n * c, 7), &[n, c]).unwrap(),
    );
    let mut labels: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % c as i64).collect();
    labels[1] = -100;
    feeds.insert("t".into(), Tensor::from_i64(&labels, &[n]).unwrap());
    (graph, feeds)
}

#[test]
fn cross_entropy_and_its_gradient_run_as_row_kernels() {
    for (n, c) in [(64, 10), (7, 37), (3, 4), (130, 1000)] {
        let (graph, feeds) = cross_entropy_case(n, c);
        let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
        let stages = row_stages(&program);
        // Forward: max, shifted exp, sum, log-probabilities (and the label's
        // clean-up); backward: the row sum and the gradient.
        assert!(
            stages.first().is_some_and(|&s| s >= 4) && stages.len() >= 2,
            "{n}x{c}: {stages:?}\n{program}"
        );
        program.check_bounds().unwrap();
        check_everywhere(&graph, &feeds, &["loss", "x.grad"], &format!("{n}x{c}"));
    }
}

/// Softmax over the last axis of a rank-3 tensor: the stages keep the rows axis apart
/// from the middle axis, which they loop over inside each row.
#[test]
fn softmax_over_the_last_of_three_axes() {
    let g = GraphBuilder::new("softmax3");
    let x = g.input("x", DType::F32, Shape::known(&[5, 6, 13]));
    g.output("y", x.softmax(2));
    g.output("z", x.log_softmax(2) * 2.0);
    let graph = g.finish().unwrap();
    let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
    assert!(row_stages(&program).iter().any(|&s| s >= 3), "{program}");
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".into(),
        Tensor::from_f32(&fill(5 * 6 * 13, 3), &[5, 6, 13]).unwrap(),
    );
    check_everywhere(&graph, &feeds, &["y", "z"], "softmax3");
}

/// A loop that reads an earlier loop's result transposed (row `r` needs every row of
/// it) must not join that loop's row kernel: running row by row would read rows not
/// yet written.
#[test]
fn a_stage_reading_other_rows_is_not_joined() {
    let g = GraphBuilder::new("transposed");
    let x = g.input("x", DType::F32, Shape::known(&[8, 8]));
    let e = x.exp();
    // `e` is used twice and costs an exp, so it is stored; the second loop reads it
    // both in order and transposed.
    g.output("y", e + e.transpose(0, 1));
    let graph = g.finish().unwrap();
    let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
    assert!(row_stages(&program).is_empty(), "{program}");
    let mut feeds = HashMap::new();
    feeds.insert("x".into(), Tensor::from_f32(&fill(64, 5), &[8, 8]).unwrap());
    check_everywhere(&graph, &feeds, &["y"], "transposed");
}

/// The lowered text of a small cross entropy step: the forward's and the backward's
/// row kernels with their stages.
#[test]
fn cross_entropy_row_kernels_snapshot() {
    let (graph, _) = cross_entropy_case(8, 5);
    let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
    insta::assert_snapshot!("cross_entropy_rows_lowered", program.to_string());
}

//! Matmul epilogues (`plan::fuse_epilogues`): a loop fused into a matrix product runs
//! after each tile, after each batch entry, or after the whole product on the CPU, and
//! inside the matmul shader on the GPU. Each schedule computes bitwise what the unfused
//! (`-O0`) program computes, whatever the thread count, and agrees with the interpreter.

use std::collections::HashMap;

use aotgrad::Evaluation;
use aotgrad::compiler::codegen::tiles::{DEFAULT_TILES, EpilogueSchedule, epilogue_plan};
use aotgrad::compiler::lower::{self, KernelBody, MatMulKernel};
use aotgrad::ir::{Conv2dOptions, Pool2dOptions};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::CpuOptions;
use aotgrad::runtime::gpu;

use crate::support;
use support::assert_bitwise_at_1_and_2_threads;

/// `relu(x @ w + bias) * 0.5` with `x: [batch.., m, k]`, and its feeds.
fn case(batch: &[usize], m: usize, k: usize, n: usize) -> (Graph, HashMap<String, Tensor>) {
    let g = GraphBuilder::new("epilogue");
    let mut xs = batch.to_vec();
    xs.extend([m, k]);
    let x = g.input("x", DType::F32, Shape::known(&xs));
    let w = g.input("w", DType::F32, Shape::known(&[k, n]));
    let bias = g.input("bias", DType::F32, Shape::known(&[n]));
    g.output("y", (x.matmul(w) + bias).relu() * 0.5);
    let graph = g.finish().unwrap();
    // Deterministic values of both signs, so the ReLU cuts some.
    let fill = |len: usize, seed: u32| -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let mut feeds = HashMap::new();
    let nx: usize = xs.iter().product();
    feeds.insert("x".into(), Tensor::from_f32(&fill(nx, 1), &xs).unwrap());
    feeds.insert(
        "w".into(),
        Tensor::from_f32(&fill(k * n, 2), &[k, n]).unwrap(),
    );
    feeds.insert("bias".into(), Tensor::from_f32(&fill(n, 3), &[n]).unwrap());
    (graph, feeds)
}

/// The lowered program's only matmul, which must carry the epilogue.
fn fused_product(graph: &Graph) -> MatMulKernel {
    let program = lower::lower(graph, &Default::default(), Default::default()).unwrap();
    let products: Vec<&MatMulKernel> = program
        .kernels
        .iter()
        .filter_map(|k| match &k.body {
            KernelBody::MatMul(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(products.len(), 1);
    assert!(
        products[0].epilogue.is_some(),
        "bias + ReLU fused:\n{program}"
    );
    // The epilogue replaced the separate loop: product plus nothing else.
    assert_eq!(program.kernels.len(), 1, "{program}");
    products[0].clone()
}

/// Output `y` of two evaluations agrees within f32 round-off of the GEMM's summation.
/// The fused program's `y` is bitwise the unfused program's, with 1 and 2 threads;
/// returns the unfused evaluation.
fn assert_y_bitwise_unfused(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    what: &str,
) -> Evaluation {
    let unfused = CpuOptions {
        fuse: false,
        ..Default::default()
    };
    assert_bitwise_at_1_and_2_threads(graph, feeds, unfused, &["y"], what)
}

fn assert_close(want: &Evaluation, got: &Evaluation, what: &str) {
    let (a, b) = (
        want.output("y").unwrap().to_f64_vec(),
        got.output("y").unwrap().to_f64_vec(),
    );
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
            "{what}: {x} vs {y}"
        );
    }
}

/// (batch, m, k, n, which schedule the CPU uses for it)
const CASES: &[(&[usize], usize, usize, usize, &str)] = &[
    (&[], 16, 32, 24, "one tile"),
    (&[], 300, 64, 40, "row tiles"),
    // Column tiles run their epilogue after the whole product, over whole rows.
    (&[], 40, 64, 300, "after"),
    (&[6], 10, 25, 30, "per batch"),
    (&[2, 3], 10, 25, 30, "after"),
    (&[2], 300, 64, 40, "after"),
];

#[test]
fn every_cpu_schedule_matches_the_unfused_program_bitwise() {
    for &(batch, m, k, n, kind) in CASES {
        let (graph, feeds) = case(batch, m, k, n);
        let product = fused_product(&graph);
        let (schedule, parts) = epilogue_plan(&product, DEFAULT_TILES).unwrap();
        let got_kind = match &schedule {
            EpilogueSchedule::PerTile(t) if t.len() == 1 => "one tile",
            EpilogueSchedule::PerTile(t) if t[1].1 > 0 && t[1].0.row0 > 0 => "row tiles",
            EpilogueSchedule::PerBatch { .. } => "per batch",
            EpilogueSchedule::After { .. } => "after",
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(got_kind, kind, "{batch:?} {m}x{k}x{n}");
        if let EpilogueSchedule::PerTile(t) = &schedule {
            assert_eq!(parts.len(), t.len(), "one function per tile");
        }
        let unfused = assert_y_bitwise_unfused(&graph, &feeds, kind);
        let interp = aotgrad::run(&graph, &feeds).unwrap();
        assert_close(&interp, &unfused, kind);
    }
}

/// Every shape's epilogue, inlined into the matmul shader, agrees with the interpreter.
#[test]
fn gpu_epilogues_match_the_interpreter() {
    if !gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)") {
        return;
    }
    for &(batch, m, k, n, kind) in CASES {
        let (graph, feeds) = case(batch, m, k, n);
        fused_product(&graph);
        let want = aotgrad::run(&graph, &feeds).unwrap();
        let got = gpu::run_once(&graph, &feeds).unwrap();
        assert_close(&want, &got, kind);
    }
}

/// With a binding limit too small for the fused shader, code generation splits the
/// product and its epilogue into two shaders rather than failing.
#[test]
fn wgsl_splits_an_epilogue_that_needs_too_many_bindings() {
    use aotgrad::compiler::codegen::wgsl::{self, WgslLimits};
    let (graph, _) = case(&[], 16, 32, 24);
    let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
    let fused = wgsl::emit(&program, &graph, WgslLimits::default()).unwrap();
    assert_eq!(fused.kernels.len(), 1);
    assert!(fused.kernels[0].source.contains("fn epilogue_("));
    // x, w, the arena and the bias: four; three forces the split.
    let tight = WgslLimits {
        max_storage_buffers_per_stage: 3,
        ..Default::default()
    };
    let split = wgsl::emit(&program, &graph, tight).unwrap();
    assert_eq!(split.kernels.len(), 2);
    assert!(!split.kernels[0].source.contains("fn epilogue_("));
}

/// A convolution's bias + ReLU, stored in the max-pool windows' layout, is fused into
/// the per-sample GEMMs as an epilogue in another order: run after each sample's product
/// on the CPU (bitwise the unfused program's values, 1 or 2 threads), as its own pass on
/// the GPU.
#[test]
fn a_convolutions_bias_relu_runs_after_each_samples_product() {
    let (n, c, h, o) = (6, 3, 12, 8);
    let g = GraphBuilder::new("conv_epilogue");
    let x = g.input("x", DType::F32, Shape::known(&[n, c, h, h]));
    let w = g.input("w", DType::F32, Shape::known(&[o, c, 3, 3]));
    let bias = g.input("bias", DType::F32, Shape::known(&[o]));
    let pooled = x
        .conv2d(w, Some(bias), Conv2dOptions::default())
        .relu()
        .max_pool2d(Pool2dOptions::new(2));
    // A wide layer after the pooling holds the arena's peak. (Fusion keeps the im2col
    // buffer and the epilogue's output live together; `fuse_epilogues` declines where
    // that would raise the peak, as it would with the convolution alone.)
    let wide = g.input("wide", DType::F32, Shape::known(&[o * 25, 8000]));
    g.output("y", pooled);
    g.output(
        "z",
        pooled.reshape(&[n as i64, (o * 25) as i64]).matmul(wide),
    );
    let graph = g.finish().unwrap();
    let program = lower::lower(&graph, &Default::default(), Default::default()).unwrap();
    let product = program
        .kernels
        .iter()
        .find_map(|k| match &k.body {
            KernelBody::MatMul(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert!(product.epilogue.is_some(), "{program}");
    assert!(!product.epilogue_in_order(), "pooling layout: {program}");
    let (schedule, _) = epilogue_plan(&product, DEFAULT_TILES).unwrap();
    assert!(
        matches!(schedule, EpilogueSchedule::PerBatch { batches: 6, .. }),
        "{schedule:?}"
    );
    let mut feeds = HashMap::new();
    let fill = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919) % 997) as f32 / 498.5 - 1.0)
            .collect()
    };
    feeds.insert(
        "x".into(),
        Tensor::from_f32(&fill(n * c * h * h), &[n, c, h, h]).unwrap(),
    );
    feeds.insert(
        "w".into(),
        Tensor::from_f32(&fill(o * c * 9), &[o, c, 3, 3]).unwrap(),
    );
    feeds.insert("bias".into(), Tensor::from_f32(&fill(o), &[o]).unwrap());
    let wide = Tensor::from_f32(&fill(o * 25 * 8000), &[o * 25, 8000]).unwrap();
    feeds.insert("wide".into(), wide);
    let unfused = assert_y_bitwise_unfused(&graph, &feeds, "conv");
    if gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)") {
        let got = gpu::run_once(&graph, &feeds).unwrap();
        assert_close(&unfused, &got, "conv on the GPU");
    }
}

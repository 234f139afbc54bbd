//! The graph passes: snapshots of each pass on small inputs, a property test that random
//! graphs and their gradient graphs compute the same values before and after each pass
//! and the whole pipeline, and the trainer at O0 against O2.

use std::collections::HashMap;

use aotgrad::compiler::passes::{self, OptLevel, PASSES};
use aotgrad::compiler::{Seed, grad};
use aotgrad::prelude::*;
use aotgrad::text;
use proptest::prelude::*;

fn parse(src: &str) -> Graph {
    text::parse(src).unwrap()
}

/// Every pattern the simplifier knows, once.
const SIMPLIFY_INPUT: &str = r#"
graph patterns {
  %0: f32[N,4] = input "x"
  %1: f32[N,4] = const -0.0
  %2: f32[N,4] = add %0, %1
  %3: f32[N,4] = const 1.0
  %4: f32[N,4] = mul %3, %2
  %5: f32[N,4] = div %4, %3
  %6: f32[N,4] = neg %5
  %7: f32[N,4] = neg %6
  %8: f32[N,4] = stop_gradient %7
  %9: f64[N,4] = cast %8 {dtype=f64}
  %10: f32[N,4] = cast %9 {dtype=f32}
  %11: f32[4,N] = permute %10 {perm=[1, 0]}
  %12: f32[N,4] = permute %11 {perm=[1, 0]}
  %13: f32[N,4,1] = reshape %12 {shape=[N, 4, 1]}
  %14: f32[N,4] = reshape %13 {shape=[N, 4]}
  %15: f32[N,4,1] = reshape %14 {shape=[N, 4, 1]}
  %16: f32[N,4] = max %15 {axes=[2], keepdim=false}
  %17: f32[] = const 2.0
  %18: f32[] = const 3.0
  %19: f32[] = mul %17, %18
  %20: f32[] = sqrt %19
  %21: f32[1,1] = reshape %20 {shape=[1, 1]}
  %22: f32[N,4] = expand %21 {shape=[N, 4]}
  %23: f32[N,4] = sub %16, %22
  %24: bool[N,4] = lt %0, %23
  %25: f32[N,4] = where %24, %23, %23
  output "y" = %25
}
"#;

#[test]
fn simplify_snapshot() {
    let g = parse(SIMPLIFY_INPUT);
    let out = passes::dce(&passes::simplify(&g));
    insta::assert_snapshot!("simplify", text::print(&out));
}

#[test]
fn cse_snapshot() {
    let g = parse(
        r#"
graph duplicates {
  %0: f32[3] = input "x"
  %1: f32[3] = exp %0
  %2: f32[3] = exp %0
  %3: f32[3] = const 2.0
  %4: f32[3] = const 2.0
  %5: f32[3] = mul %1, %3
  %6: f32[3] = mul %2, %4
  %7: f32[3] = add %5, %6
  %8: f32[] = sum %7 {axes=[0], keepdim=false}
  %9: f32[] = sum %7 {axes=[0], keepdim=false}
  output "a" = %8
  output "b" = %9
}
"#,
    );
    insta::assert_snapshot!("cse", text::print(&passes::cse(&g)));
}

#[test]
fn dce_snapshot() {
    let g = parse(
        r#"
graph dead {
  %0: f32[3] = input "x"
  %1: f32[3] = input "unused"
  %2: f32[3] = exp %0
  %3: f32[3] = log %0
  %4: f32[3] = neg %2
  output "y" = %2
}
"#,
    );
    insta::assert_snapshot!("dce", text::print(&passes::dce(&g)));
}

#[test]
fn passes_keep_leaves_outputs_and_updates() {
    let (trainer, _) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let step = trainer.compile(&Backend::Interpreter).unwrap();
    let (a, b) = (step.step_graph(), step.optimized_step_graph());
    assert!(b.len() < a.len(), "{} -> {}", a.len(), b.len());
    let leaves = |g: &Graph| -> Vec<(String, TensorType)> {
        g.nodes()
            .filter_map(|(id, n)| n.op.leaf_name().map(|s| (s.to_string(), g.ty(id).clone())))
            .collect()
    };
    assert_eq!(leaves(a), leaves(b));
    let names = |g: &Graph| {
        g.outputs()
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(a), names(b));
    assert_eq!(a.updates().len(), b.updates().len());
}

#[test]
fn opt_levels_parse_and_refuse_nonsense() {
    for (s, l) in [
        ("0", OptLevel::O0),
        ("O1", OptLevel::O1),
        ("-O2", OptLevel::O2),
    ] {
        assert_eq!(s.parse::<OptLevel>().unwrap(), l);
    }
    let e = "3".parse::<OptLevel>().unwrap_err();
    assert!(e.contains("0, 1 or 2"), "{e}");
}

/// Training at O0 (the graph as traced) and at O2 gives the same losses and weights,
/// bit for bit: every pass is exact.
#[test]
fn training_at_o0_and_o2_agree() {
    for model in ["logreg", "mlp_ce_adam64"] {
        let mut runs = Vec::new();
        for level in [OptLevel::O0, OptLevel::O2] {
            let (trainer, batch) = aotgrad::bench::setup(model).unwrap();
            let mut step = trainer
                .opt_level(level)
                .compile(&Backend::Cpu { threads: 1 })
                .unwrap();
            let losses: Vec<f64> = (0..3).map(|_| step.run(&batch).unwrap()).collect();
            runs.push((losses, step.parameters().to_vec()));
        }
        assert_eq!(runs[0].0, runs[1].0, "{model}: losses");
        for ((name, a), (_, b)) in runs[0].1.iter().zip(&runs[1].1) {
            assert!(same_values(a, b), "{model}: {name}");
        }
    }
}

// ---- property test ------------------------------------------------------------------

/// One construction step over a pool of `f32[3,4]` values (and the ops that leave the
/// shape and come back, so reshapes, permutes, casts and reductions appear in chains).
#[derive(Debug, Clone)]
enum Step {
    Unary(u8, usize),
    Binary(u8, usize, usize),
    AddZero(usize),
    /// `x - 0.0`, `-0.0 + x`, `x + -0.0`, `0 - x`: which zeros are identities.
    SignedZero(u8, usize),
    /// A sum, max or prod over a size-1 axis (with and without keepdim).
    ReduceOne(u8, usize),
    MulOne(usize),
    Twice(usize),
    ReshapeRoundTrip(usize),
    TransposeTwice(usize),
    SumExpand(usize),
    CastRoundTrip(usize),
    Select(usize, usize, usize),
    MatMul(usize, usize, usize),
}

fn step() -> impl Strategy<Value = Step> {
    let i = 0usize..32;
    prop_oneof![
        (0u8..6, i.clone()).prop_map(|(o, a)| Step::Unary(o, a)),
        (0u8..5, i.clone(), i.clone()).prop_map(|(o, a, b)| Step::Binary(o, a, b)),
        i.clone().prop_map(Step::AddZero),
        (0u8..4, i.clone()).prop_map(|(o, a)| Step::SignedZero(o, a)),
        (0u8..6, i.clone()).prop_map(|(o, a)| Step::ReduceOne(o, a)),
        i.clone().prop_map(Step::MulOne),
        i.clone().prop_map(Step::Twice),
        i.clone().prop_map(Step::ReshapeRoundTrip),
        i.clone().prop_map(Step::TransposeTwice),
        i.clone().prop_map(Step::SumExpand),
        i.clone().prop_map(Step::CastRoundTrip),
        (i.clone(), i.clone(), i.clone()).prop_map(|(a, b, c)| Step::Select(a, b, c)),
        (i.clone(), i.clone(), i).prop_map(|(a, b, c)| Step::MatMul(a, b, c)),
    ]
}

fn build(steps: &[Step]) -> Graph {
    let g = GraphBuilder::new("random");
    let mut pool = vec![
        g.input("x", DType::F32, shape![3, 4]),
        g.input("y", DType::F32, shape![3, 4]),
        g.param("w", DType::F32, shape![3, 4]),
    ];
    for s in steps {
        let at = |k: usize| pool[k % pool.len()];
        let v = match *s {
            Step::Unary(o, a) => {
                let x = at(a);
                match o {
                    0 => -x,
                    1 => x.abs(),
                    2 => x.tanh(),
                    3 => (x * 0.25).exp(),
                    4 => (x.abs() + 1.0).log(),
                    _ => x.relu(),
                }
            }
            Step::Binary(o, a, b) => {
                let (x, y) = (at(a), at(b));
                match o {
                    0 => x + y,
                    1 => x - y,
                    2 => x * y,
                    // Any denominator: a zero's sign is an infinity's sign here.
                    3 => x / y,
                    _ => x.maximum(y),
                }
            }
            Step::AddZero(a) => at(a) + 0.0,
            Step::SignedZero(o, a) => {
                let x = at(a);
                let z = |v: f64| g.full(v, DType::F32, shape![3, 4]);
                match o {
                    0 => x - 0.0,
                    1 => z(-0.0) + x,
                    2 => x + z(-0.0),
                    _ => z(0.0) - x,
                }
            }
            Step::ReduceOne(o, a) => {
                let x = at(a).reshape(&[3, 1, 4]);
                let r = match o % 3 {
                    0 => x.sum(1, o < 3),
                    1 => x.max(1, o < 3),
                    _ => x.prod(1, o < 3),
                };
                r.reshape(&[3, 4])
            }
            Step::MulOne(a) => at(a) * 1.0,
            Step::Twice(a) => {
                // The same expression built twice: CSE's case.
                let x = at(a);
                (x * 3.0).tanh() + (x * 3.0).tanh()
            }
            Step::ReshapeRoundTrip(a) => at(a).reshape(&[12]).reshape(&[2, 6]).reshape(&[3, 4]),
            Step::TransposeTwice(a) => at(a).transpose(0, 1).transpose(0, 1),
            Step::SumExpand(a) => at(a).sum(1, true).expand(&[3, 4]),
            Step::CastRoundTrip(a) => at(a).cast(DType::F64).cast(DType::F32),
            Step::Select(c, a, b) => at(c).gt(at(a)).where_(at(a), at(b)),
            Step::MatMul(a, b, c) => at(a).matmul(at(b).transpose(0, 1)).matmul(at(c)) * 0.1,
        };
        pool.push(v);
    }
    let last = pool[pool.len() - 1];
    g.output("out", last);
    g.output("loss", last.sum_all());
    g.finish().unwrap()
}

fn feeds(seed: u64) -> HashMap<String, Tensor> {
    let mut rng = aotgrad::data::Rng::new(seed);
    // Some zeros of both signs: the values where an inexact `x + 0` rewrite shows.
    let mut t = || {
        let v: Vec<f32> = (0..12)
            .map(|_| match rng.uniform() {
                u if u < 0.1 => -0.0,
                u if u < 0.2 => 0.0,
                u => (u * 4.0 - 2.0) as f32,
            })
            .collect();
        Tensor::from_f32(&v, &[3, 4]).unwrap()
    };
    [("x", t()), ("y", t()), ("w", t())]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Equal bit for bit, a zero's sign included; any NaN equals any NaN (payloads are
/// not part of the passes' contract).
fn same_values(a: &Tensor, b: &Tensor) -> bool {
    a.shape() == b.shape()
        && a.to_f64_vec()
            .iter()
            .zip(b.to_f64_vec())
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn check_same(before: &Graph, after: &Graph, f: &HashMap<String, Tensor>, what: &str) {
    aotgrad::ir::verify(after).unwrap_or_else(|e| panic!("{what}: invalid graph: {e}"));
    let want = aotgrad::run(before, f).unwrap();
    let got = aotgrad::run(after, f).unwrap_or_else(|e| panic!("{what}: {e}"));
    for (name, _) in before.outputs() {
        let (w, g) = (want.output(name).unwrap(), got.output(name).unwrap());
        assert!(
            same_values(w, g),
            "{what}: output {name}\nbefore:\n{}\nafter:\n{}\n{w}\n{g}",
            text::print(before),
            text::print(after)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn passes_preserve_values(steps in prop::collection::vec(step(), 1..14), seed in 0u64..1000) {
        let g = build(&steps);
        let joint = grad(&g, &[("loss", Seed::Auto)], &["x", "w"]).unwrap();
        let f = feeds(seed);
        for graph in [&g, &joint] {
            for p in PASSES {
                check_same(graph, &(p.run)(graph), &f, p.name);
            }
            let o2 = passes::optimize(graph, OptLevel::O2).unwrap();
            prop_assert!(o2.len() <= graph.len());
            check_same(graph, &o2, &f, "O2");
        }
    }
}

/// The kernel-plan passes are a list: `lower_observed` shows the program after each one,
/// in the order `plan_passes` gives, and ends where `lower` does.
#[test]
fn kernel_plan_passes_run_as_a_list_and_can_be_observed() {
    use aotgrad::compiler::lower::{self, LowerOptions};
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let step = trainer
        .compile(&aotgrad::train::Backend::Interpreter)
        .unwrap();
    let graph = step.optimized_step_graph();
    let env: aotgrad::runtime::interp::SymbolEnv =
        [(std::sync::Arc::from("N"), batch.x.shape()[0])]
            .into_iter()
            .collect();
    let opts = LowerOptions::default();
    let mut seen = Vec::new();
    let observed = lower::lower_observed(graph, &env, opts, None, &mut |pass, p| {
        seen.push((pass.to_string(), p.kernels.len()));
    })
    .unwrap();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["lower"];
    expected.extend(lower::plan_passes(opts, None).iter().map(|p| p.name));
    assert_eq!(names, expected);
    assert_eq!(*names.last().unwrap(), "assign_offsets");
    // Fusion passes remove kernels; none adds one.
    assert!(seen.windows(2).all(|w| w[1].1 <= w[0].1), "{seen:?}");
    assert!(seen.last().unwrap().1 < seen[0].1, "{seen:?}");
    let plain = lower::lower(graph, &env, opts).unwrap();
    assert_eq!(observed.to_string(), plain.to_string());
    // Without fusion only the update passes and the memory plan run.
    let unfused = LowerOptions {
        fuse: false,
        ..opts
    };
    let names: Vec<&str> = lower::plan_passes(unfused, None)
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        names,
        [
            "sink_update_kernels",
            "updates_in_place",
            "overlap_collectives",
            "assign_offsets"
        ]
    );
}

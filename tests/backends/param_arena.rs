//! The parameter arena (`lower::param_arena`, `runtime::cpu::ParamArena`): the CPU
//! backend keeps every parameter and optimizer-state tensor in one allocation laid out
//! so that the optimizer's per-parameter loops over neighbouring tensors run as one.

use std::collections::HashMap;
use std::sync::Arc;

use aotgrad::RunError;
use aotgrad::compiler::lower::{self, LowerOptions, ParamLayout};
use aotgrad::executor::{ProgramKind, Stage};
use aotgrad::ir::{DType, GraphBuilder, shape};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{CpuOptions, CpuProgram, ParamArena};
use aotgrad::train::Backend;

/// Vectors `a` and `b` updated by the same SGD rule, `p - lr * g` with `g` a
/// reduction over a batch (as a bias gradient is) and `lr` a shared scalar input; with
/// `between`, a vector `m` with another rule is declared between them, so the
/// training layout puts it between them too.
fn sgd_updates(between: bool) -> aotgrad::ir::Graph {
    let g = GraphBuilder::new("sgd");
    let x = g.input("x", DType::F32, shape![4, 5]);
    let lr = g.input("lr", DType::F32, shape![]);
    let a = g.param("a", DType::F32, shape![5]);
    if between {
        let m = g.param("m", DType::F32, shape![2]);
        g.update(m, m * 0.5);
    }
    // Of another size than `a`, or the two loops would merge as one loop over the
    // same domain anyway (`plan::merge_loops`).
    let b = g.param("b", DType::F32, shape![3]);
    let z = g.input("z", DType::F32, shape![4, 3]);
    let ga = (x * 2.0).sum(0, false);
    let gb = (z * z).sum(0, false);
    g.update(a, a - lr * ga);
    g.update(b, b - lr * gb);
    g.output("loss", a.sum_all() * b.sum_all());
    g.finish().unwrap()
}

fn layout_of(graph: &aotgrad::ir::Graph) -> ParamLayout {
    let params: Vec<_> = graph
        .params()
        .map(|(n, id)| {
            let ty = graph.ty(id);
            (n.to_string(), ty.dtype, ty.shape.as_known().unwrap())
        })
        .collect();
    ParamLayout::for_training(&params, &[])
}

fn lowered(graph: &aotgrad::ir::Graph, layout: &ParamLayout) -> String {
    lower::lower_for_arena(graph, &Default::default(), LowerOptions::default(), layout)
        .unwrap()
        .to_string()
}

#[test]
fn the_training_layout_packs_vectors_of_a_role_back_to_back() {
    let f32v = |n: &str, s: &[usize]| (n.to_string(), DType::F32, s.to_vec());
    let params = [
        f32v("0.weight", &[4, 3]),
        f32v("0.bias", &[4]),
        f32v("2.weight", &[2, 4]),
        f32v("2.bias", &[2]),
    ];
    let state = [
        f32v("2.bias.exp_avg", &[2]),
        f32v("0.weight.exp_avg", &[4, 3]),
        f32v("0.bias.exp_avg", &[4]),
        f32v("2.weight.exp_avg", &[2, 4]),
        ("optim.step".to_string(), DType::F64, vec![]),
    ];
    let l = ParamLayout::for_training(&params, &state);
    let at: Vec<(&str, usize)> = l
        .slots()
        .iter()
        .map(|s| (s.name.as_str(), s.offset))
        .collect();
    assert_eq!(
        at,
        [
            ("0.weight", 0),
            ("2.weight", 64),
            ("0.bias", 128),
            ("2.bias", 144),
            ("0.weight.exp_avg", 192),
            ("2.weight.exp_avg", 256),
            ("0.bias.exp_avg", 320),
            ("2.bias.exp_avg", 336),
            ("optim.step", 384),
        ]
    );
    assert_eq!(l.bytes(), 392);
}

#[test]
fn neighbouring_updates_merge_and_others_do_not() {
    let apart = sgd_updates(true);
    let text = lowered(&apart, &layout_of(&apart));
    assert!(
        !text.contains("span"),
        "a and b are not neighbours:\n{text}"
    );

    let graph = sgd_updates(false);
    let text = lowered(&graph, &layout_of(&graph));
    assert!(
        text.contains("f32[8] 32 B persistent span \"a\" \"b\""),
        "{text}"
    );
    // Both gradients were moved into one arena buffer the merged loop reads.
    assert!(text.contains("over [8] ->"), "{text}");
    // The lowering without a layout is unchanged: no spans.
    let plain = lower::lower(&graph, &Default::default(), LowerOptions::default())
        .unwrap()
        .to_string();
    assert!(!plain.contains("span"), "{plain}");
}

#[test]
fn a_merged_step_is_bitwise_the_unmerged_step() {
    let graph = sgd_updates(false);
    let layout = layout_of(&graph);
    let x = Tensor::from_f32(
        &(0..20).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
        &[4, 5],
    )
    .unwrap();
    let z = Tensor::from_f32(
        &(0..12).map(|i| (i as f32 * 0.71).cos()).collect::<Vec<_>>(),
        &[4, 3],
    )
    .unwrap();
    let lr = Tensor::from_f32(&[0.125], &[]).unwrap();
    let init = |n: usize, k: f32| {
        Tensor::from_f32(
            &(0..n).map(|i| k + i as f32 * 0.3).collect::<Vec<_>>(),
            &[n],
        )
        .unwrap()
    };
    let values = [("a", init(5, 1.0)), ("b", init(3, 0.5))];
    let mut arena = ParamArena::new(layout.clone());
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (n, t) in &values {
        arena.set(n, t).unwrap();
        map.insert(n.to_string(), t.clone());
    }
    let mut merged =
        CpuProgram::for_arena(&graph, CpuOptions::default(), Arc::new(layout)).unwrap();
    let mut plain = CpuProgram::new(&graph, CpuOptions::default()).unwrap();
    let inputs = [("x", &x), ("z", &z), ("lr", &lr)];
    for _ in 0..3 {
        let want = aotgrad::runtime::interp::run(
            &graph,
            &map.iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .chain([
                    ("x".to_string(), x.clone()),
                    ("z".to_string(), z.clone()),
                    ("lr".to_string(), lr.clone()),
                ])
                .collect(),
        )
        .unwrap();
        let a = merged.run(&mut arena, &inputs).unwrap();
        let b = plain.run(&mut map, &inputs).unwrap();
        assert_eq!(a.outputs, b.outputs);
        for (n, _) in &values {
            let (got, plain) = (arena.get(n).unwrap(), &map[*n]);
            assert_eq!(
                got.to_le_bytes(),
                plain.to_le_bytes(),
                "{n}: {got} vs {plain}"
            );
            assert!(got.allclose(want.update(n).unwrap(), 1e-6, 1e-6), "{n}");
        }
    }
    let text = merged.last_variant().unwrap().program().to_string();
    assert!(
        text.contains("span"),
        "the merged program has spans:\n{text}"
    );
}

#[test]
fn a_span_program_refuses_tensors_that_are_not_back_to_back() {
    let graph = sgd_updates(false);
    let layout = Arc::new(layout_of(&graph));
    let mut prog = CpuProgram::for_arena(&graph, CpuOptions::default(), layout).unwrap();
    let t = |n: usize| Tensor::from_f32(&vec![1.0; n], &[n]).unwrap();
    let mut map: HashMap<String, Tensor> =
        [("a".to_string(), t(5)), ("b".to_string(), t(3))].into();
    let before = map.clone();
    let x = Tensor::from_f32(&[0.5; 20], &[4, 5]).unwrap();
    let z = Tensor::from_f32(&[0.5; 12], &[4, 3]).unwrap();
    let lr = Tensor::from_f32(&[0.1], &[]).unwrap();
    let e = prog
        .run(&mut map, &[("x", &x), ("z", &z), ("lr", &lr)])
        .unwrap_err();
    assert!(
        matches!(&e, RunError::NotInArena { names } if names.contains(&"a".to_string())),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "the program was compiled for a parameter arena and updates [\"a\", \"b\"] as one \
         span, but they are not stored back to back (run it with the `ParamArena` of its \
         layout)"
    );
    assert_eq!(map, before, "nothing ran");
}

/// The MNIST MLP step on the CPU backend: the three bias updates of Adam are one loop
/// over the 330 bias elements, and training through the arena gives bitwise the
/// parameters of the same program run on separate tensors.
#[test]
fn mlp_bias_updates_are_one_loop_and_bitwise_unchanged() {
    let (trainer, batch) = aotgrad::bench::setup("mlp_ce_adam64").unwrap();
    let mut step = trainer.compile(&Backend::Cpu { threads: 1 }).unwrap();
    let graph = step.optimized_step_graph().clone();
    let mut map: HashMap<String, Tensor> = step
        .parameters()
        .iter()
        .cloned()
        .chain(step.optimizer_state())
        .collect();
    let lr = Tensor::from_f64(&[step.lr()], &[]).unwrap();
    let mut plain = CpuProgram::new(&graph, CpuOptions::default()).unwrap();
    for _ in 0..4 {
        step.run(&batch).unwrap();
        let inputs: Vec<(&str, &Tensor)> = [("x", &batch.x), ("y", &batch.y), ("lr", &lr)]
            .into_iter()
            .filter(|(n, _)| plain.has_input(n))
            .collect();
        plain.run(&mut map, &inputs).unwrap();
    }
    for (name, t) in step
        .parameters()
        .iter()
        .cloned()
        .chain(step.optimizer_state())
    {
        assert_eq!(t.to_le_bytes(), map[&name].to_le_bytes(), "{name}");
    }
    let program = step
        .artifact(ProgramKind::Step, Stage::Lowered)
        .unwrap()
        .unwrap();
    assert!(
        program.contains("persistent span \"0.bias\" \"2.bias\" \"4.bias\""),
        "{program}"
    );
    assert!(program.contains("over [330] ->"), "{program}");
}

#[test]
fn the_arena_refuses_tensors_it_has_no_slot_for() {
    let graph = sgd_updates(false);
    let mut arena = ParamArena::new(layout_of(&graph));
    let wrong_shape = Tensor::from_f32(&[1.0; 4], &[4]).unwrap();
    assert_eq!(
        arena.set("a", &wrong_shape).unwrap_err().to_string(),
        "the parameter arena has no tensor \"a\" of type f32[4]"
    );
    assert_eq!(
        arena.set("nope", &wrong_shape).unwrap_err().to_string(),
        "the parameter arena has no tensor \"nope\" of type f32[4]"
    );
    // Nothing was written: the slot still holds its zeros.
    assert_eq!(
        arena.get("a").unwrap(),
        Tensor::from_f32(&[0.0; 5], &[5]).unwrap()
    );
    let a = Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0, 5.0], &[5]).unwrap();
    arena.set("a", &a).unwrap();
    assert_eq!(arena.get("a").unwrap(), a);
}

#[test]
fn decoding_bytes_of_the_wrong_size_is_an_error() {
    let e = Tensor::from_le_bytes(DType::F32, &[2], &[0; 7]).unwrap_err();
    assert_eq!(e.to_string(), "shape [2] needs 2 elements but 1 were given");
    let t = Tensor::from_f64(&[1.5, -2.0, 3.25], &[3]).unwrap();
    assert_eq!(
        Tensor::from_le_bytes(DType::F64, &[3], &t.to_le_bytes()).unwrap(),
        t
    );
}

/// An arena made for training, from borrowed host copies or by taking owned ones over
/// (it is filled front to back, with zero padding between slots), holds exactly the
/// tensors it was made from.
#[test]
fn an_arena_for_training_holds_every_tensor_it_was_made_from() {
    let f = |n: usize, k: f32| (0..n).map(|i| i as f32 * k - 3.5).collect::<Vec<_>>();
    let params = vec![
        (
            "w".to_string(),
            Tensor::from_f32(&f(35, 0.25), &[5, 7]).unwrap(),
        ),
        (
            "b".to_string(),
            Tensor::from_f32(&f(3, -1.5), &[3]).unwrap(),
        ),
        (
            "v".to_string(),
            Tensor::from_f32(&f(17, 3.0), &[17]).unwrap(),
        ),
    ];
    let state = vec![
        (
            "b.exp_avg".to_string(),
            Tensor::from_f32(&f(3, 7.0), &[3]).unwrap(),
        ),
        (
            "w.exp_avg".to_string(),
            Tensor::from_f32(&f(35, 0.5), &[5, 7]).unwrap(),
        ),
        (
            "optim.step".to_string(),
            Tensor::from_f64(&[12.0], &[]).unwrap(),
        ),
        ("rng.key".to_string(), Tensor::from_i64(&[-9], &[]).unwrap()),
    ];
    let borrowed = ParamArena::for_training(
        params.iter().map(|(n, t)| (n.as_str(), t)),
        state.iter().map(|(n, t)| (n.as_str(), t)),
    );
    let owned = ParamArena::for_training(params.clone(), state.clone());
    assert_eq!(borrowed.layout(), owned.layout());
    let mut spans: Vec<(usize, usize)> = owned
        .layout()
        .slots()
        .iter()
        .map(|s| (s.offset, s.offset + s.bytes()))
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).any(|w| w[1].0 > w[0].1),
        "no gap between slots, so the padding is not exercised: {spans:?}"
    );
    for (name, t) in params.iter().chain(&state) {
        assert_eq!(borrowed.get(name).as_ref(), Some(t), "{name} (borrowed)");
        assert_eq!(owned.get(name).as_ref(), Some(t), "{name} (owned)");
    }
}

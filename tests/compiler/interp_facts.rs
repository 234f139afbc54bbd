//! The reference interpreter on hand-computed values, including the seed programs' facts.

use std::collections::HashMap;

use aotgrad::prelude::*;

fn run1(g: GraphBuilder, feeds: &[(&str, Tensor)]) -> Tensor {
    let graph = g.finish().unwrap();
    let feeds: HashMap<String, Tensor> = feeds
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    let out = aotgrad::run(&graph, &feeds).unwrap();
    out.outputs[0].1.clone()
}

fn x23() -> Tensor {
    Tensor::from_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap()
}

#[test]
fn seed_sums() {
    let g = GraphBuilder::new("s");
    let x = g.input("x", DType::F32, shape![2, 3]);
    g.output("s", x.sum(0, false));
    assert_eq!(run1(g, &[("x", x23())]).as_f32().unwrap(), &[5., 7., 9.]);
    let g = GraphBuilder::new("s");
    let x = g.input("x", DType::F32, shape![2, 3]);
    g.output("s", x.sum(1, false));
    assert_eq!(run1(g, &[("x", x23())]).as_f32().unwrap(), &[6., 15.]);
}

#[test]
fn seed_unbiased_std() {
    let g = GraphBuilder::new("s");
    let x = g.input("x", DType::F32, shape![2, 3]);
    g.output("s", x.std(0, 1, false));
    let got = run1(g, &[("x", x23())]);
    let want = Tensor::from_f32(&[2.1213203; 3], &[3]).unwrap();
    assert!(got.allclose(&want, 1e-6, 0.0), "{got}");
}

#[test]
fn seed_matmul_of_ones() {
    let g = GraphBuilder::new("m");
    let a = g.ones(DType::F32, shape![4, 3]) * 6.0;
    let b = g.ones(DType::F32, shape![3]) * 2.0;
    g.output("m", a.matmul(b));
    let got = run1(g, &[]);
    assert_eq!(got.shape(), &[4]);
    assert_eq!(got.as_f32().unwrap(), &[36.; 4]);
}

#[test]
fn symbolic_batch_binds_per_call() {
    let g = GraphBuilder::new("mean");
    let x = g.input("x", DType::F32, shape!["N", 2]);
    g.output("m", x.mean(0, false));
    let graph = g.finish().unwrap();
    for (n, want) in [(1usize, [1.0f32, 2.0]), (3, [3.0, 4.0])] {
        let data: Vec<f32> = (0..n * 2).map(|i| (i + 1) as f32).collect();
        let feeds = HashMap::from([("x".to_string(), Tensor::from_f32(&data, &[n, 2]).unwrap())]);
        let out = aotgrad::run(&graph, &feeds).unwrap();
        assert_eq!(out.outputs[0].1.as_f32().unwrap(), &want, "batch {n}");
    }
}

#[test]
fn integer_and_bool_paths_are_exact() {
    let g = GraphBuilder::new("ints");
    let labels = g.input("y", DType::I64, shape!["N"]);
    let onehot = labels.one_hot(4);
    let logits = g.input("z", DType::F32, shape!["N", 4]);
    let correct = logits.argmax(1, false).equal(labels).sum_all();
    g.output("onehot", onehot);
    g.output("correct", correct);
    let graph = g.finish().unwrap();
    let feeds = HashMap::from([
        ("y".to_string(), Tensor::from_i64(&[2, 0, 3], &[3]).unwrap()),
        (
            "z".to_string(),
            Tensor::from_f32(&[0., 1., 5., 2., 9., 0., 0., 0., 1., 1., 1., 0.5], &[3, 4]).unwrap(),
        ),
    ]);
    let out = aotgrad::run(&graph, &feeds).unwrap();
    assert_eq!(
        out.output("onehot").unwrap().as_i64().unwrap(),
        &[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    );
    // Row 2's first maximum is index 0 (ties resolve to the first, as in PyTorch).
    assert_eq!(out.output("correct").unwrap().as_i64().unwrap(), &[2]);
}

#[test]
fn updates_and_state_round_trip() {
    let g = GraphBuilder::new("counter");
    let step = g.state("step", DType::I64, shape![]);
    let w = g.param("w", DType::F32, shape![2]);
    g.update(step, step + 1);
    g.update(w, w * 0.5);
    g.output("w_before", w);
    let graph = g.finish().unwrap();
    let feeds = HashMap::from([
        ("step".to_string(), Tensor::from_i64(&[41], &[]).unwrap()),
        (
            "w".to_string(),
            Tensor::from_f32(&[2.0, 4.0], &[2]).unwrap(),
        ),
    ]);
    let out = aotgrad::run(&graph, &feeds).unwrap();
    assert_eq!(out.update("step").unwrap().as_i64().unwrap(), &[42]);
    assert_eq!(out.update("w").unwrap().as_f32().unwrap(), &[1.0, 2.0]);
}

#[test]
fn random_is_deterministic_per_key() {
    let g = GraphBuilder::new("rng");
    let key = g.input("key", DType::I64, shape![]);
    g.output("u", g.rand(key, DType::F32, shape![1000]));
    g.output("mask", g.bernoulli(key, 0.25, shape![1000]));
    let graph = g.finish().unwrap();
    let run = |k: i64| {
        let feeds = HashMap::from([("key".to_string(), Tensor::from_i64(&[k], &[]).unwrap())]);
        aotgrad::run(&graph, &feeds).unwrap()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    assert_ne!(a.output("u"), c.output("u"));
    let kept = a.output("mask").unwrap().to_f64_vec().iter().sum::<f64>();
    assert!(
        (200.0..300.0).contains(&kept),
        "{kept} of 1000 with p = 0.25"
    );
}

#[test]
fn literal_is_rounded_to_the_tensor_dtype() {
    // `x * 0.01` multiplies by f32(0.01), not f64(0.01) (the seeds' `lr * g`).
    let g = GraphBuilder::new("lit");
    let x = g.input("x", DType::F32, shape![1]);
    g.output("y", x * 0.01);
    let y = run1(g, &[("x", Tensor::from_f32(&[3.0], &[1]).unwrap())]);
    assert_eq!(y.as_f32().unwrap()[0], 3.0f32 * 0.01f32);
    // An i64 tensor times a float literal is f32, as in PyTorch.
    let g = GraphBuilder::new("lit");
    let i = g.input("i", DType::I64, shape![1]);
    let y = i * 0.5;
    assert_eq!(y.dtype(), DType::F32);
}

#[test]
fn runtime_errors_are_typed() {
    let g = GraphBuilder::new("e");
    let x = g.input("x", DType::F32, shape!["N", 3]);
    let y = g.input("y", DType::F32, shape!["N"]);
    let idx = g.input("i", DType::I64, shape!["N", 1]);
    g.output("s", x.sum(1, false) + y);
    g.output("g", x.gather(1, idx));
    let graph = g.finish().unwrap();
    let t = |d: &[f32], s: &[usize]| Tensor::from_f32(d, s).unwrap();
    let feeds = |x: Tensor, y: Tensor, i: Tensor| {
        HashMap::from([
            ("x".to_string(), x),
            ("y".to_string(), y),
            ("i".to_string(), i),
        ])
    };
    let i_ok = Tensor::from_i64(&[0, 2], &[2, 1]).unwrap();
    let err = |f: HashMap<String, Tensor>| aotgrad::run(&graph, &f).unwrap_err().to_string();

    let e = err(feeds(t(&[0.; 6], &[2, 3]), t(&[0.; 3], &[3]), i_ok.clone()));
    assert_eq!(e, "symbol N is 2 from \"x\" but 3 from \"y\"");
    let e = err(feeds(t(&[0.; 8], &[2, 4]), t(&[0.; 2], &[2]), i_ok.clone()));
    assert_eq!(
        e,
        "\"x\" expects f32[N,3], got a f32 tensor of shape [2, 4]"
    );
    let e = err(feeds(
        t(&[0.; 6], &[2, 3]),
        t(&[0.; 2], &[2]),
        Tensor::from_i64(&[0, 3], &[2, 1]).unwrap(),
    ));
    assert_eq!(
        e,
        "%5 (`gather`): index 3 is out of range for an axis of size 3"
    );
    let mut f = feeds(t(&[0.; 6], &[2, 3]), t(&[0.; 2], &[2]), i_ok.clone());
    f.remove("y");
    assert_eq!(err(f), "no tensor was given for input \"y\" (f32[N])");
    let mut f = feeds(t(&[0.; 6], &[2, 3]), t(&[0.; 2], &[2]), i_ok);
    f.insert("typo".into(), t(&[0.], &[1]));
    assert_eq!(
        err(f),
        "\"typo\" was given but the graph has no input, param or state of that name"
    );
}

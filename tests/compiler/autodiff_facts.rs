//! Autodiff on the seed programs' facts, higher derivatives, activity analysis and errors.

use std::collections::HashMap;

use aotgrad::compiler::{GradError, Seed, grad, grad_named};
use aotgrad::prelude::*;

fn feeds(v: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    v.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
}

fn s(x: f32) -> Tensor {
    Tensor::scalar_f32(x)
}

fn close(t: &Tensor, want: &[f64]) {
    let got = t.to_f64_vec();
    assert_eq!(got.len(), want.len(), "{t}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "got {t}, want {want:?}"
        );
    }
}

#[test]
fn log_of_square_of_linear_combination() {
    // z = log((3x + 4y)^2) at x = y = 1: dz/dx = 6/7, dz/dy = 8/7.
    let g = GraphBuilder::new("z");
    let x = g.input("x", DType::F32, shape![]);
    let y = g.input("y", DType::F32, shape![]);
    g.output("z", ((x * 3.0 + y * 4.0).pow(2.0)).log());
    let joint = grad(&g.finish().unwrap(), &[("z", Seed::Auto)], &["x", "y"]).unwrap();
    let out = aotgrad::run(&joint, &feeds(&[("x", s(1.0)), ("y", s(1.0))])).unwrap();
    close(out.output("x.grad").unwrap(), &[6.0 / 7.0]);
    close(out.output("y.grad").unwrap(), &[8.0 / 7.0]);
}

#[test]
fn quadratic_in_w_plus_b() {
    // y = w^2 + w + b at w = 2, b = 3: dy/dw = 5, dy/db = 1.
    let g = GraphBuilder::new("y");
    let w = g.param("w", DType::F32, shape![]);
    let b = g.param("b", DType::F32, shape![]);
    g.output("y", w * w + w + b);
    let joint = grad(&g.finish().unwrap(), &[("y", Seed::Auto)], &["w", "b"]).unwrap();
    let out = aotgrad::run(&joint, &feeds(&[("w", s(2.0)), ("b", s(3.0))])).unwrap();
    close(out.output("w.grad").unwrap(), &[5.0]);
    close(out.output("b.grad").unwrap(), &[1.0]);
}

#[test]
fn three_x_squared() {
    let g = GraphBuilder::new("y");
    let x = g.input("x", DType::F32, shape![]);
    g.output("y", x.square() * 3.0);
    let joint = grad(&g.finish().unwrap(), &[("y", Seed::Auto)], &["x"]).unwrap();
    let out = aotgrad::run(&joint, &feeds(&[("x", s(2.0))])).unwrap();
    close(out.output("x.grad").unwrap(), &[12.0]);
}

#[test]
fn non_scalar_output_with_seed_of_ones() {
    let g = GraphBuilder::new("y");
    let x = g.input("x", DType::F32, shape![2, 2]);
    g.output("y", x.pow(2.0));
    let graph = g.finish().unwrap();
    let e = grad(&graph, &[("y", Seed::Auto)], &["x"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "output \"y\" is f32[2,2], not a scalar: give an explicit seed (cotangent)"
    );
    let joint = grad(&graph, &[("y", Seed::Ones)], &["x"]).unwrap();
    let x = Tensor::from_f32(&[1., 2., 3., 4.], &[2, 2]).unwrap();
    let out = aotgrad::run(&joint, &feeds(&[("x", x.clone())])).unwrap();
    close(out.output("x.grad").unwrap(), &[2., 4., 6., 8.]);
    // An explicit cotangent fed at run time.
    let joint = grad(&graph, &[("y", Seed::Input)], &["x"]).unwrap();
    let seed = Tensor::from_f32(&[1., 0., 0.5, -1.], &[2, 2]).unwrap();
    let out = aotgrad::run(&joint, &feeds(&[("x", x), ("y.seed", seed)])).unwrap();
    close(out.output("x.grad").unwrap(), &[2., 0., 3., -8.]);
}

#[test]
fn gradient_with_respect_to_an_intermediate() {
    // y1 = x*w1 + b1, y2 = y1*w2 + b2 with x=1, w1=2, b1=1, w2=2, b2=1:
    // dy2/dy1 = 2 and dy2/dw1 = 2.
    let g = GraphBuilder::new("chain");
    let x = g.input("x", DType::F32, shape![]);
    let (w1, b1) = (
        g.param("w1", DType::F32, shape![]),
        g.param("b1", DType::F32, shape![]),
    );
    let (w2, b2) = (
        g.param("w2", DType::F32, shape![]),
        g.param("b2", DType::F32, shape![]),
    );
    let y1 = x * w1 + b1;
    g.output("y1", y1);
    g.output("y2", y1 * w2 + b2);
    let joint = grad(&g.finish().unwrap(), &[("y2", Seed::Auto)], &["y1", "w1"]).unwrap();
    let f = feeds(&[
        ("x", s(1.)),
        ("w1", s(2.)),
        ("b1", s(1.)),
        ("w2", s(2.)),
        ("b2", s(1.)),
    ]);
    let out = aotgrad::run(&joint, &f).unwrap();
    close(out.output("y1.grad").unwrap(), &[2.0]);
    close(out.output("w1.grad").unwrap(), &[2.0]);
}

#[test]
fn second_derivatives_by_applying_grad_twice() {
    // d2/dx2 x^3 = 6x; d2/dx2 sin x = -sin x.
    let g = GraphBuilder::new("f");
    let x = g.input("x", DType::F64, shape![]);
    g.output("cube", x * x * x);
    g.output("sin", x.sin());
    let graph = g.finish().unwrap();
    for (out, want) in [("cube", 6.0 * 1.5), ("sin", -(1.5f64).sin())] {
        let once = grad(&graph, &[(out, Seed::Auto)], &["x"]).unwrap();
        assert!(matches!(
            grad(&once, &[("x.grad", Seed::Auto)], &["x"]),
            Err(GradError::Duplicate(_))
        ));
        let twice = grad_named(&once, &[("x.grad", Seed::Auto)], &[("x", "x.grad2")]).unwrap();
        let r = aotgrad::run(
            &twice,
            &feeds(&[("x", Tensor::from_f64(&[1.5], &[]).unwrap())]),
        )
        .unwrap();
        let v = r.output("x.grad2").unwrap().item().unwrap();
        assert!((v - want).abs() < 1e-12, "{out}: {v} vs {want}");
    }
}

#[test]
fn activity_analysis_adds_nothing_for_inactive_branches() {
    let g = GraphBuilder::new("act");
    let x = g.input("x", DType::F32, shape![3]);
    let c = g.input("c", DType::F32, shape![3]);
    let labels = g.input("i", DType::I64, shape![3]);
    let unrelated = c.exp();
    let idx_path = labels.to(DType::F32) * 2.0;
    g.output("y", (x.sin() + unrelated + idx_path).sum_all());
    let graph = g.finish().unwrap();
    let joint = grad(&graph, &[("y", Seed::Auto)], &["x"]).unwrap();
    let fwd = graph.len();
    for (id, node) in joint.nodes().skip(fwd) {
        for i in &node.inputs {
            let op = joint.node(*i).op.name();
            assert!(
                op != "exp" && op != "cast" && *i != graph.find("c").unwrap(),
                "{id} uses inactive {i} ({op})"
            );
        }
    }
    // sum -> expand, add, add (no-op fan-out), sin -> cos, mul: a handful of nodes.
    assert!(
        joint.len() - fwd <= 8,
        "{} gradient nodes:\n{}",
        joint.len() - fwd,
        aotgrad::text::print(&joint)
    );
}

#[test]
fn typed_errors() {
    let g = GraphBuilder::new("e");
    let x = g.input("x", DType::F32, shape![2]);
    let i = g.input("i", DType::I64, shape![2]);
    g.output("y", (x * i.to(DType::F32)).sum_all());
    g.output("n", i.sum_all());
    let graph = g.finish().unwrap();
    let err = |o: &str, w: &str| grad(&graph, &[(o, Seed::Auto)], &[w]).unwrap_err();
    assert_eq!(
        err("y", "i").to_string(),
        "cannot differentiate with respect to \"i\": it is i64[2], not floating-point"
    );
    assert_eq!(
        err("n", "x").to_string(),
        "cannot differentiate output \"n\" of type i64[]: it is not floating-point"
    );
    assert_eq!(err("nope", "x").to_string(), "no output named \"nope\"");
    assert_eq!(
        err("y", "nope").to_string(),
        "no input, param, state or output named \"nope\" to differentiate with respect to"
    );
    let e = grad(
        &graph,
        &[("y", Seed::Const(aotgrad::ir::Data::F32(vec![1.0, 2.0])))],
        &["x"],
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "seed for \"y\" is 2 f32 values, but the output is f32[]"
    );
    assert!(matches!(e, GradError::SeedType { .. }));
}

/// A Hessian-vector product of a small MLP's loss, by differentiating the gradient's
/// inner product with `v` (reverse-over-reverse), against central differences of the
/// gradient along `v`.
#[test]
fn hessian_vector_product_of_a_small_mlp() {
    let g = GraphBuilder::new("mlp");
    let x = g.input("x", DType::F64, shape![4, 3]);
    let t = g.input("t", DType::F64, shape![4, 2]);
    let w1 = g.param("w1", DType::F64, shape![5, 3]);
    let w2 = g.param("w2", DType::F64, shape![2, 5]);
    let h = x.linear(w1, None).tanh();
    let loss = (h.linear(w2, None) - t).square().sum_all();
    g.output("loss", loss);
    let graph = g.finish().unwrap();
    let joint = grad(&graph, &[("loss", Seed::Auto)], &["w1", "w2"]).unwrap();

    // <grad(w1), v1> + <grad(w2), v2> as an output, differentiated again.
    let b = GraphBuilder::from_graph(joint.clone());
    let v1 = b.input("v1", DType::F64, shape![5, 3]);
    let v2 = b.input("v2", DType::F64, shape![2, 5]);
    let g1 = b.var(joint.output("w1.grad").unwrap()).unwrap();
    let g2 = b.var(joint.output("w2.grad").unwrap()).unwrap();
    b.output("gv", (g1 * v1).sum_all() + (g2 * v2).sum_all());
    let with_gv = b.finish().unwrap();
    let hvp = grad_named(
        &with_gv,
        &[("gv", Seed::Auto)],
        &[("w1", "hv1"), ("w2", "hv2")],
    )
    .unwrap();

    let lin =
        |n: usize, k: f64| -> Vec<f64> { (0..n).map(|i| ((i as f64 + 1.0) * k).sin()).collect() };
    let f = feeds(&[
        ("x", Tensor::from_f64(&lin(12, 0.7), &[4, 3]).unwrap()),
        ("t", Tensor::from_f64(&lin(8, 1.3), &[4, 2]).unwrap()),
        ("w1", Tensor::from_f64(&lin(15, 0.31), &[5, 3]).unwrap()),
        ("w2", Tensor::from_f64(&lin(10, 0.53), &[2, 5]).unwrap()),
        ("v1", Tensor::from_f64(&lin(15, 2.1), &[5, 3]).unwrap()),
        ("v2", Tensor::from_f64(&lin(10, 1.7), &[2, 5]).unwrap()),
    ]);
    let r = aotgrad::run(&hvp, &f).unwrap();

    // Central differences of the gradient along v.
    let eps = 1e-5;
    let grads_at = |f: &HashMap<String, Tensor>, s: f64| -> (Vec<f64>, Vec<f64>) {
        let mut f = f.clone();
        for (w, v) in [("w1", "v1"), ("w2", "v2")] {
            let moved: Vec<f64> = f[w]
                .to_f64_vec()
                .iter()
                .zip(f[v].to_f64_vec())
                .map(|(a, d)| a + s * d)
                .collect();
            let shape = f[w].shape().to_vec();
            f.insert(w.into(), Tensor::from_f64(&moved, &shape).unwrap());
        }
        f.remove("v1");
        f.remove("v2");
        let r = aotgrad::run(&joint, &f).unwrap();
        (
            r.output("w1.grad").unwrap().to_f64_vec(),
            r.output("w2.grad").unwrap().to_f64_vec(),
        )
    };
    let (p1, p2) = grads_at(&f, eps);
    let (m1, m2) = grads_at(&f, -eps);
    for (name, plus, minus) in [("hv1", p1, m1), ("hv2", p2, m2)] {
        let got = r.output(name).unwrap().to_f64_vec();
        for ((g, p), m) in got.iter().zip(plus).zip(minus) {
            let fd = (p - m) / (2.0 * eps);
            assert!(
                (g - fd).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}: {g} vs {fd}"
            );
        }
    }
}

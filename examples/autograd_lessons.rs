//! The course's autograd lessons P13-P16 and the accumulation lesson P34/P35, as
//! ahead-of-time gradient graphs (`aotgrad::compiler::grad`) run on the reference
//! interpreter:
//!
//! - P13: `F.mse_loss(ones(1), x*w)` with x = ones(1), w = full([1], 2.): the gradient is
//!   [2.] (as `autograd.grad` and as `backward()` give it);
//! - P14: the rows of the softmax Jacobian, `autograd.grad(p[1], [a])` and
//!   `autograd.grad(p[2], [a])` for a random `a` of 3, against `p_i (δ_ij − p_j)`;
//! - P15: a one-layer perceptron `o = sigmoid(x @ w.t())` with x: [1, 10] and w: [1, 10]
//!   or [2, 10], MSE to ones, and `w.grad` (its shape is w's);
//! - P16: the chain rule on scalars, `dy2/dx = dy2/dy1 · dy1/dx`;
//! - P34/P35: `loss = (w·x + b − y)²` with x = 1., y = 2 (an integer promoted to f32),
//!   w = b = 0.1: dw = db = −3.6, and x and y have no gradient (`None`); after zeroing
//!   only `w.grad`, a second backward gives w.grad = −3.6 again and b.grad = −7.2
//!   (gradients accumulate until zeroed; here the accumulation is explicit, on the host).

use std::collections::HashMap;

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::compiler::{Seed, grad};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "The course's autograd lessons P13-P16 and P34/P35")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "autograd_lessons",
    takes: &[&["--check", "--seed"]],
    defaults: &[],
};

fn feeds(v: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    v.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
}

fn out(ev: &aotgrad::Evaluation, name: &str) -> Result<Tensor, String> {
    ev.output(name)
        .cloned()
        .ok_or_else(|| format!("no output {name}"))
}

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let mut ok = true;

    // P13.
    let g = GraphBuilder::new("mse_grad");
    let x = g.input("x", DType::F32, shape![1]);
    let w = g.param("w", DType::F32, shape![1]);
    let target = g.ones(DType::F32, shape![1]);
    g.output("mse", (target - x * w).square().mean_all());
    let joint = grad(&g.finish()?, &[("mse", Seed::Auto)], &["w"])?;
    let ev = aotgrad::run(
        &joint,
        &feeds(&[
            ("x", Tensor::from_f32(&[1.0], &[1])?),
            ("w", Tensor::from_f32(&[2.0], &[1])?),
        ]),
    )?;
    let gw = out(&ev, "w.grad")?;
    println!("P13 mse_loss(ones(1), x*w): w.grad = {gw}");
    ok &= gw.to_f64_vec() == [2.0];

    // P14: rows 1 and 2 of the softmax Jacobian.
    let mut rng = aotgrad::data::Rng::new(a.seed);
    let av: Vec<f32> = (0..3).map(|_| rng.uniform() as f32).collect();
    let av_t = Tensor::from_f32(&av, &[3])?;
    println!("P14 a = {av_t}");
    let e: Vec<f64> = av.iter().map(|&v| (v as f64).exp()).collect();
    let p: Vec<f64> = e.iter().map(|v| v / e.iter().sum::<f64>()).collect();
    for row in [1usize, 2] {
        let g = GraphBuilder::new("softmax_row");
        let va = g.param("a", DType::F32, shape![3]);
        g.output("p_i", va.softmax(0).select(0, row as i64));
        let joint = grad(&g.finish()?, &[("p_i", Seed::Auto)], &["a"])?;
        let ev = aotgrad::run(&joint, &feeds(&[("a", av_t.clone())]))?;
        let d = out(&ev, "a.grad")?;
        println!("P14 grad(p[{row}], a) = {d}");
        let want: Vec<f64> = (0..3)
            .map(|j| p[row] * (f64::from(u8::from(row == j)) - p[j]))
            .collect();
        ok &= d
            .to_f64_vec()
            .iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() < 1e-6);
    }

    // P15: the perceptron, one and two outputs.
    for outputs in [1usize, 2] {
        let g = GraphBuilder::new("perceptron");
        let x = g.input("x", DType::F32, shape![1, 10]);
        let w = g.param("w", DType::F32, shape![outputs, 10]);
        let o = x.matmul(w.t()).sigmoid();
        g.output("o", o);
        g.output("loss", (o.ones_like() - o).square().mean_all());
        let joint = grad(&g.finish()?, &[("loss", Seed::Auto)], &["w"])?;
        let xs: Vec<f32> = (0..10).map(|_| rng.uniform() as f32).collect();
        let ws: Vec<f32> = (0..10 * outputs).map(|_| rng.uniform() as f32).collect();
        let ev = aotgrad::run(
            &joint,
            &feeds(&[
                ("x", Tensor::from_f32(&xs, &[1, 10])?),
                ("w", Tensor::from_f32(&ws, &[outputs, 10])?),
            ]),
        )?;
        let gw = out(&ev, "w.grad")?;
        println!(
            "P15 perceptron with {outputs} output(s): loss = {}, w.grad shape {:?}",
            out(&ev, "loss")?,
            gw.shape()
        );
        ok &= gw.shape() == [outputs, 10];
    }

    // P16: the chain rule.
    let g = GraphBuilder::new("chain");
    let x = g.param("x", DType::F32, shape![]);
    let y1 = x * 2.0 + 1.0;
    let y2 = y1 * 3.0 + 2.0;
    g.output("y1", y1);
    g.output("y2", y2);
    let d2 = grad(&g.finish()?, &[("y2", Seed::Auto)], &["x"])?;
    let ev = aotgrad::run(&d2, &feeds(&[("x", Tensor::scalar_f32(1.0))]))?;
    let dx = out(&ev, "x.grad")?.item().unwrap_or(f64::NAN);
    println!("P16 dy2/dx = {dx} = dy2/dy1 (3) * dy1/dx (2)");
    ok &= dx == 6.0;

    // P34/P35: accumulation, zeroing one gradient only.
    let g = GraphBuilder::new("accumulation");
    let x = g.input("x", DType::F32, shape![]);
    let y = g.input("y", DType::I64, shape![]);
    let w = g.param("w", DType::F32, shape![]);
    let b = g.param("b", DType::F32, shape![]);
    g.output("loss", (w * x + b - y).square());
    let joint = grad(&g.finish()?, &[("loss", Seed::Auto)], &["w", "b"])?;
    let f = feeds(&[
        ("x", Tensor::scalar_f32(1.0)),
        ("y", Tensor::from_i64(&[2], &[])?),
        ("w", Tensor::scalar_f32(0.1)),
        ("b", Tensor::scalar_f32(0.1)),
    ]);
    let backward = || -> Result<(f32, f32), Box<dyn std::error::Error>> {
        let ev = aotgrad::run(&joint, &f)?;
        let item = |n: &str| out(&ev, n).map(|t| t.item().unwrap_or(f64::NAN) as f32);
        Ok((item("w.grad")?, item("b.grad")?))
    };
    let (dw, db) = backward()?;
    let (mut w_grad, mut b_grad) = (dw, db);
    println!("P34 dw = {w_grad}, db = {b_grad}, x.grad = None, y.grad = None");
    ok &= (w_grad + 3.6).abs() < 1e-6 && (b_grad + 3.6).abs() < 1e-6;
    w_grad = 0.0; // w.grad.zero_() only
    let (dw, db) = backward()?;
    w_grad += dw;
    b_grad += db;
    println!("P35 after w.grad.zero_() and a second backward: dw = {w_grad}, db = {b_grad}");
    ok &= (w_grad + 3.6).abs() < 1e-6 && (b_grad + 7.2).abs() < 1e-6;

    println!("final: dw={w_grad} db={b_grad} all_correct={ok}");
    check(&a, ok, "a gradient differs from the lesson's")?;
    Ok(())
}

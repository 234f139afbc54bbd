//! The course's autograd lessons through the public API: gradients are built ahead of
//! time as graphs (`aotgrad::compiler::grad`) and run like any program.
//!
//! 1. z = log((3x + 4y)^2) at x = y = 1: dz/dx = 6/7, dz/dy = 8/7.
//! 2. y = w^2 + w + b at w = 2, b = 3: dy/dw = 5, dy/db = 1; two backward passes
//!    accumulate (10 and 2, as PyTorch's `.grad`), then the gradients are zeroed.
//! 3. A non-scalar output with an explicit seed: y = x^2 on [[1,2],[3,4]] with a seed of
//!    ones gives x.grad = [[2,4],[6,8]] (`y.backward(torch.ones_like(y))`).
//! 4. The gradient with respect to an intermediate value: y1 = x w1 + b1,
//!    y2 = y1 w2 + b2 gives dy2/dy1 = w2 = 2 and dy2/dw1 = w2 x = 2.

use std::collections::HashMap;

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::compiler::{Seed, grad};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "The course's autograd lessons, as ahead-of-time gradient graphs")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
    /// Print each joint (forward + gradient) graph.
    #[arg(long)]
    print_ir: bool,
}

fn feeds(v: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    v.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-5
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "autograd_basics",
    takes: &[&["--check"]],
    defaults: &[],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = SPEC.parse::<Cli>(|c| &c.train);
    let show = |g: &Graph| {
        if cli.print_ir {
            print!("{}", aotgrad::text::print(g));
        }
    };
    let s = Tensor::scalar_f32;
    let mut ok = true;

    // 1.
    let g = GraphBuilder::new("log_square");
    let x = g.param("x", DType::F32, shape![]);
    let y = g.param("y", DType::F32, shape![]);
    g.output("z", (x * 3.0 + y * 4.0).pow(2.0).log());
    let joint = grad(&g.finish()?, &[("z", Seed::Auto)], &["x", "y"])?;
    show(&joint);
    let r = aotgrad::run(&joint, &feeds(&[("x", s(1.0)), ("y", s(1.0))]))?;
    let (dx, dy) = (
        r.output("x.grad").and_then(Tensor::item),
        r.output("y.grad").and_then(Tensor::item),
    );
    let (dx, dy) = (dx.unwrap_or(f64::NAN), dy.unwrap_or(f64::NAN));
    println!("1. z = log((3x+4y)^2) at x=y=1: dz/dx = {dx:.6} (6/7), dz/dy = {dy:.6} (8/7)");
    ok &= close(dx, 6.0 / 7.0) && close(dy, 8.0 / 7.0);

    // 2. Accumulation over two backward passes, then zeroing, as with PyTorch's .grad.
    let g = GraphBuilder::new("quadratic");
    let w = g.param("w", DType::F32, shape![]);
    let b = g.param("b", DType::F32, shape![]);
    g.output("y", w * w + w + b);
    let joint = grad(&g.finish()?, &[("y", Seed::Auto)], &["w", "b"])?;
    show(&joint);
    let f = feeds(&[("w", s(2.0)), ("b", s(3.0))]);
    let (mut gw, mut gb) = (0.0, 0.0);
    for pass in 1..=2 {
        let r = aotgrad::run(&joint, &f)?;
        gw += r
            .output("w.grad")
            .and_then(Tensor::item)
            .unwrap_or(f64::NAN);
        gb += r
            .output("b.grad")
            .and_then(Tensor::item)
            .unwrap_or(f64::NAN);
        println!("2. after backward pass {pass}: w.grad = {gw}, b.grad = {gb}");
    }
    ok &= close(gw, 10.0) && close(gb, 2.0);
    (gw, gb) = (0.0, 0.0);
    println!("2. zeroed: w.grad = {gw}, b.grad = {gb}");

    // 3. Explicit seed on a non-scalar output.
    let g = GraphBuilder::new("square");
    let x = g.param("x", DType::F32, shape![2, 2]);
    g.output("y", x * x);
    let joint = grad(&g.finish()?, &[("y", Seed::Ones)], &["x"])?;
    show(&joint);
    let r = aotgrad::run(
        &joint,
        &feeds(&[("x", Tensor::from_f32(&[1.0, 2.0, 3.0, 4.0], &[2, 2])?)]),
    )?;
    let xg = r.output("x.grad").cloned().ok_or("no x.grad")?;
    println!("3. y = x^2, seed ones: x.grad = {xg}");
    ok &= xg.to_f64_vec() == vec![2.0, 4.0, 6.0, 8.0];

    // 4. Gradient with respect to an intermediate value (a named output).
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
    let joint = grad(&g.finish()?, &[("y2", Seed::Auto)], &["y1", "w1"])?;
    show(&joint);
    let r = aotgrad::run(
        &joint,
        &feeds(&[
            ("x", s(1.0)),
            ("w1", s(2.0)),
            ("b1", s(1.0)),
            ("w2", s(2.0)),
            ("b2", s(1.0)),
        ]),
    )?;
    let d1 = r
        .output("y1.grad")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let dw1 = r
        .output("w1.grad")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    println!("4. dy2/dy1 = {d1} (2), dy2/dw1 = {dw1} (2)");
    ok &= close(d1, 2.0) && close(dw1, 2.0);

    println!("final: dz_dx={dx:.6} dz_dy={dy:.6} dy2_dy1={d1} dy2_dw1={dw1} all_correct={ok}");
    check(&cli.train, ok, "a gradient differs from the lesson's value")?;
    Ok(())
}

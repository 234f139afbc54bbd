//! Adam (lr 1e-3) on Himmelblau's function f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2
//! from (0, 0): the parameters are the point itself; 20000 compiled steps reach the
//! minimum at (3, 2).

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::cli::pictures::Picture;
use aotgrad::nn::Init;
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Minimise Himmelblau's function with Adam (--epochs counts steps)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "himmelblau",
    takes: &[TRAINING_FLAGS],
    defaults: &[
        ("--epochs", "20000 (steps: the objective has no data)"),
        ("--optim", "adam"),
        ("--lr", "1e-3"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let steps = a.epochs.unwrap_or(20000);
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("adam"),
        a.lr.unwrap_or(1e-3),
        0.0,
    )?;
    let mut step = Trainer::minimize(
        |s| {
            let x = s.param("x", &[], Init::Constant(0.0));
            let y = s.param("y", &[], Init::Constant(0.0));
            (x * x + y - 11.0).square() + (x + y * y - 7.0).square()
        },
        optim,
    )
    .name("himmelblau")
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let mut f = f64::NAN;
    // The optimizer's path, for the picture: about 500 points of it.
    let mut path = vec![(0.0, 0.0)];
    let every = (steps / 500).max(1);
    for i in 0..steps {
        f = step.step()?;
        if run.wants_pictures() && ((i + 1) % every == 0 || i + 1 == steps) {
            path.push((
                step.parameter("x")
                    .and_then(Tensor::item)
                    .unwrap_or(f64::NAN),
                step.parameter("y")
                    .and_then(Tensor::item)
                    .unwrap_or(f64::NAN),
            ));
        }
        run.record(&step, 0, &[("loss", f), ("lr", step.lr())])?;
        run.end_epoch(&mut step, i, f)?;
        if i % 2000 == 0 {
            let (x, y) = (
                step.parameter("x").and_then(Tensor::item),
                step.parameter("y").and_then(Tensor::item),
            );
            println!(
                "step {i}: x = {:?}, f(x) = {f:.6}",
                (x.unwrap_or(f64::NAN), y.unwrap_or(f64::NAN))
            );
        }
    }
    let x = step
        .parameter("x")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let y = step
        .parameter("y")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    let fx = (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2);
    if run.wants_pictures() {
        let himmelblau = |x: f64, y: f64| (x * x + y - 11.0).powi(2) + (x + y * y - 7.0).powi(2);
        let n = 240;
        let at = |i: usize| -6.0 + 12.0 * i as f64 / n as f64;
        let picture = Picture::Contours {
            title: format!(
                "Himmelblau's function and {}'s path from (0, 0)",
                step.optimizer().name()
            ),
            x: (-6.0, 6.0),
            y: (-6.0, 6.0),
            values: (0..n)
                .map(|j| (0..n).map(|i| himmelblau(at(i), at(j))).collect())
                .collect(),
            path,
            marks: vec![
                (3.0, 2.0),
                (-2.805118, 3.131312),
                (-3.779310, -3.283186),
                (3.584428, -1.848126),
            ],
        };
        for f in run.picture("himmelblau", "Himmelblau's contours and the path", &picture)? {
            println!("wrote {}", f.display());
        }
    }
    run.finish()?;
    println!("final: x={x:.6} y={y:.6} f={fx:.6e}");
    check(&a, fx < f.max(170.0), "f did not decrease")?;
    check(
        &a,
        steps < 20000 || ((x - 3.0).abs() < 1e-2 && (y - 2.0).abs() < 1e-2),
        "not at (3, 2)",
    )?;
    Ok(())
}

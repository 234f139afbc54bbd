//! `nn.Linear` beyond a batch of vectors, and a small MLP trained with Adam and BCE
//! (course programs P27 and P28):
//!
//! - P27: `Linear(4, 2)` on `ones(2, 3, 4)` (a rank-3 input: the leading dims merge,
//!   `[N*3, 4]`, as PyTorch's do) with the course's printed weights, then `Sigmoid`, then
//!   the two as a `Sequential`. The course's weights are printed to 4 decimals, so the
//!   second output is -0.4120 here for the course's -0.4119.
//! - P28: `Sequential(Linear(5,3), ReLU(), Linear(3,5), Sigmoid())`, y = ones(10, 5),
//!   x = y + randn_like(y), `Adam(lr=0.1)`, `BCELoss`, 10 full-batch epochs; prints the
//!   loss before training and per epoch, the gradients after training (a ReLU unit that
//!   died shows as zero rows) and the predictions (close to 1).

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::nn::{Linear, ReLU, Sequential, Sigmoid};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Linear on a rank-3 input (P27); an MLP with Adam and BCE (P28)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "linear_layers",
    takes: &[&["--epochs", "--check", "--seed", "--backend", "--threads"]],
    defaults: &[("--epochs", "10")],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn rows(t: &Tensor, width: usize) -> Vec<String> {
    t.to_f64_vec()
        .chunks(width)
        .map(|r| {
            let cells: Vec<String> = r.iter().map(|v| format!("{v:.4}")).collect();
            format!("[{}]", cells.join(", "))
        })
        .collect()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let backend = a.backend();

    // P27.
    let weight = Tensor::from_f32(
        &[
            -0.0675, 0.0311, -0.0579, 0.4879, -0.1701, -0.4245, -0.3129, 0.0659,
        ],
        &[2, 4],
    )?;
    let bias = Tensor::from_f32(&[-0.2354, 0.4296], &[2])?;
    let ones = Tensor::from_f32(&[1.0; 24], &[2, 3, 4])?;
    let mut linear_out = None;
    for (what, model) in [
        ("Linear(4, 2)", Sequential::new().push(Linear::new(4, 2))),
        (
            "Linear(4, 2) then Sigmoid",
            Sequential::new().push(Linear::new(4, 2)).push(Sigmoid),
        ),
    ] {
        let mut step = Trainer::new(model, Loss::mse(Reduction::Mean), Optimizer::sgd(0.0))
            .input(DType::F32, &[3, 4])
            .target(DType::F32, &[3, 2])
            .compile(&backend)?;
        step.load_state_dict(&[
            ("0.weight".to_string(), weight.clone()),
            ("0.bias".to_string(), bias.clone()),
        ])?;
        let y = step.predict(&ones)?;
        println!("P27 {what} on ones(2, 3, 4) -> shape {:?}", y.shape());
        for r in rows(&y, 2) {
            println!("  {r}");
        }
        linear_out.get_or_insert(y);
    }

    // P28.
    let mut rng = aotgrad::data::Rng::new(a.seed);
    let y = vec![1.0f32; 50];
    // randn by Box-Muller over the loader's generator.
    let x: Vec<f32> = y
        .iter()
        .map(|v| {
            let (u1, u2) = (1.0 - rng.uniform(), rng.uniform());
            v + ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    let batch = Batch {
        x: Tensor::from_f32(&x, &[10, 5])?,
        y: Tensor::from_f32(&y, &[10, 5])?,
    };
    let model = Sequential::new()
        .push(Linear::new(5, 3))
        .push(ReLU)
        .push(Linear::new(3, 5))
        .push(Sigmoid);
    let mut step = Trainer::new(model, Loss::bce(Reduction::Mean), Optimizer::adam(0.1))
        .input(DType::F32, &[5])
        .target(DType::F32, &[5])
        .seed(a.seed)
        .compile(&backend)?;
    let before = step.evaluate(&batch)?.loss;
    println!("P28 loss before training: {before:.4}");
    let mut loss = before;
    for epoch in 0..a.epochs.unwrap_or(10) {
        loss = step.run(&batch)?;
        println!("epoch {epoch}: loss {loss:.4}");
    }
    let (_, grads) = step.gradients(Some(&batch))?;
    for (name, g) in &grads {
        let width = g.shape().last().copied().unwrap_or(1);
        println!("{name}.grad = {}", rows(g, width).join(" "));
    }
    let pred = step.predict(&batch.x)?;
    let mean = pred.to_f64_vec().iter().sum::<f64>() / pred.len() as f64;
    println!("predictions (mean {mean:.4}):");
    for r in rows(&pred, 5) {
        println!("  {r}");
    }
    let first = linear_out.ok_or("no P27 output")?.to_f64_vec();
    println!(
        "final: p27_y0={:.4} p27_y1={:.4} loss_before={before:.4} loss={loss:.4} mean_prediction={mean:.4}",
        first[0], first[1]
    );
    check(
        &a,
        (first[0] - 0.1582).abs() < 5e-5 && (first[1] + 0.4120).abs() < 5e-5,
        "P27's output is not the course's",
    )?;
    check(&a, loss < before, "the loss did not decrease")?;
    Ok(())
}

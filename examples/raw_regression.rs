//! Linear regression on raw tensors with three features (course programs P23 and P24):
//! `inputs = rand(100, 3)`, `targets = inputs @ [[1.1], [2.2], [3.3]] + 4.4 +
//! 0.1·randn(100, 1)` (seeded here), `w = rand(3, 1)`, `b = rand(1)`,
//! `loss = mean(square(inputs @ w + b − targets))`, plain gradient descent:
//!
//! - P23 (default): lr 0.005, 100 000 epochs; the fit approaches (1.1, 2.2, 3.3, 4.4);
//! - P24 (`--variant p24`): lr 0.003, 10 000 epochs, the loss of every step written to
//!   TensorBoard as `loss/train` (`--tensorboard DIR`, as `SummaryWriter.add_scalar`).
//!
//! The course prints the loss every epoch; this port prints every `--print-every`
//! epochs (default 1000; 1 for the course's output).

use aotgrad::cli::args::{ExampleSpec, TrainArgs, check};
use aotgrad::data::Rng;
use aotgrad::nn::{Init, Module, Scope};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Raw-tensor linear regression, 3 features (course P23, P24 with TensorBoard)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
    /// `p23` (lr 0.005, 100 000 epochs) or `p24` (lr 0.003, 10 000 epochs, TensorBoard).
    #[arg(long, default_value = "p23")]
    variant: String,
    /// Print the loss every this many epochs.
    #[arg(long, default_value_t = 1000)]
    print_every: usize,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "raw_regression",
    takes: &[&[
        "--epochs",
        "--lr",
        "--check",
        "--seed",
        "--backend",
        "--threads",
        "--tensorboard",
        "--plot",
        "--dashboard",
        "--dashboard-addr",
        "--dashboard-keep",
        "--profile",
    ]],
    defaults: &[
        ("--epochs", "100000 (p23) or 10000 (p24)"),
        ("--lr", "0.005 (p23) or 0.003 (p24)"),
    ],
};

/// `inputs @ w + b` with raw parameters (`w: [3, 1]`, `b: [1]`).
struct Affine;

impl Module for Affine {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let w = s.param("w", &[3, 1], Init::Constant(0.0));
        let b = s.param("b", &[1], Init::Constant(0.0));
        x.matmul(w) + b
    }
}

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cli = SPEC.parse::<Cli>(|c| &c.train);
    let a = &cli.train;
    let (lr, epochs) = match cli.variant.as_str() {
        "p23" => (0.005, 100_000),
        "p24" => (0.003, 10_000),
        v => return Err(format!("unknown --variant {v:?} (p23, p24)").into()),
    };
    let (lr, epochs) = (a.lr.unwrap_or(lr), a.epochs.unwrap_or(epochs));
    let mut rng = Rng::new(a.seed);
    let mut randn = || {
        let (u1, u2) = (1.0 - rng.uniform(), rng.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    };
    let mut rng2 = Rng::new(a.seed ^ 0x5EED);
    let inputs: Vec<f32> = (0..300).map(|_| rng2.uniform() as f32).collect();
    let targets: Vec<f32> = inputs
        .chunks(3)
        .map(|r| {
            let fit = r[0] as f64 * 1.1 + r[1] as f64 * 2.2 + r[2] as f64 * 3.3 + 4.4;
            (fit + 0.1 * randn()) as f32
        })
        .collect();
    let batch = Batch {
        x: Tensor::from_f32(&inputs, &[100, 3])?,
        y: Tensor::from_f32(&targets, &[100, 1])?,
    };
    let mut step = Trainer::new(Affine, Loss::mse(Reduction::Mean), Optimizer::sgd(lr))
        .input(DType::F32, &[3])
        .target(DType::F32, &[1])
        .compile(&a.backend())?;
    // torch.rand: U[0, 1).
    let w0: Vec<f32> = (0..3).map(|_| rng2.uniform() as f32).collect();
    let b0 = [rng2.uniform() as f32];
    step.load_state_dict(&[
        ("w".to_string(), Tensor::from_f32(&w0, &[3, 1])?),
        ("b".to_string(), Tensor::from_f32(&b0, &[1])?),
    ])?;
    let mut run = a.start_run(&mut step, &["loss/train"])?;
    let (mut first, mut loss) = (f64::NAN, f64::NAN);
    for epoch in 0..epochs {
        loss = step.run(&batch)?;
        if epoch == 0 {
            first = loss;
        }
        if cli.variant == "p24" {
            run.record(&step, epoch, &[("loss/train", loss)])?;
        }
        if epoch % cli.print_every.max(1) == 0 || epoch + 1 == epochs {
            println!("epoch {epoch}: loss {loss:.6}");
        }
    }
    run.finish()?;
    let w = step
        .parameter("w")
        .map(Tensor::to_f64_vec)
        .unwrap_or_default();
    let b = step
        .parameter("b")
        .and_then(Tensor::item)
        .unwrap_or(f64::NAN);
    println!("w = {w:.4?}, b = {b:.4} (data: 1.1, 2.2, 3.3, 4.4)");
    println!(
        "final: loss={loss:.6} w1={:.4} w2={:.4} w3={:.4} b={b:.4}",
        w[0], w[1], w[2]
    );
    check(a, loss < first, "the loss did not decrease")?;
    check(
        a,
        epochs < 100_000 || (w[2] - 3.3).abs() < 0.3 && (b - 4.4).abs() < 0.3,
        "the fit is not near (1.1, 2.2, 3.3, 4.4)",
    )?;
    Ok(())
}

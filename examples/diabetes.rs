//! The diabetes classifier (course seed P08): 8-6-4-1 with ReLU, ReLU, Sigmoid, BCE
//! (mean), SGD lr 0.1, a shuffled DataLoader with batch 32, 100 epochs, on the bundled
//! Pima Indians Diabetes data. Features are min-max scaled with statistics fitted on the
//! data (the course's copy of the file came pre-scaled; the bundled one is the raw UCI
//! original, see data/README.md).

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::data::csv::read_numeric;
use aotgrad::data::{DataLoader, Dataset, MinMax, TensorDataset, take_rows};
use aotgrad::metrics::correct_binary;
use aotgrad::nn::{Linear, ReLU, Sequential, Sigmoid};
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Diabetes classifier 8-6-4-1 (course seed P08)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "diabetes",
    takes: &[TRAINING_FLAGS, &["--seed", "--limit", "--batch"]],
    defaults: &[
        ("--epochs", "100"),
        ("--optim", "sgd"),
        ("--lr", "0.1"),
        ("--batch", "32"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let epochs = a.epochs.unwrap_or(100);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/diabetes.csv");
    let table = read_numeric(&path, false)?; // [768, 9]
    let rows: Vec<usize> = (0..table.shape()[0]).collect();
    let all = take_rows(&table, &rows).to_f64_vec();
    let n = rows.len();
    let xs: Vec<f32> = (0..n)
        .flat_map(|i| (0..8).map(move |j| (i, j)))
        .map(|(i, j)| all[i * 9 + j] as f32)
        .collect();
    let ys: Vec<f32> = (0..n).map(|i| all[i * 9 + 8] as f32).collect();
    let x = Tensor::from_f32(&xs, &[n, 8])?;
    let scaler = MinMax::fit(&x)?;
    let ds = TensorDataset::new(x, Tensor::from_f32(&ys, &[n, 1])?)?.map_x(&scaler, 0)?;
    let ds = match a.limit {
        Some(l) => ds.take(l),
        None => ds,
    };
    let model = Sequential::new()
        .push_named("linear1", Linear::new(8, 6))
        .push_named("relu1", ReLU)
        .push_named("linear2", Linear::new(6, 4))
        .push_named("relu2", ReLU)
        .push_named("linear3", Linear::new(4, 1))
        .push_named("sigmoid", Sigmoid);
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("sgd"),
        a.lr.unwrap_or(0.1),
        0.0,
    )?;
    let mut step = Trainer::new(model, Loss::bce(Reduction::Mean), optim)
        .name("diabetes")
        .input(DType::F32, &[8])
        .target(DType::F32, &[1])
        .seed(a.seed)
        .with_args(&a)
        .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr"])?;
    let loader = DataLoader::new(&ds, a.batch.unwrap_or(32)).shuffle(a.seed);
    let (mut first, mut epoch_loss) = (None, 0.0);
    for epoch in 0..epochs {
        epoch_loss = step.run_epoch(loader.epoch(epoch))?;
        run.record(&step, epoch + 1, &[("loss", epoch_loss), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, epoch_loss)?;
        first.get_or_insert(epoch_loss);
        if epoch % 10 == 0 || epoch + 1 == epochs {
            println!("Epoch: {}/{epochs} | Loss: {epoch_loss:.4}", epoch + 1);
        }
    }
    let all = ds.batch(&(0..ds.len()).collect::<Vec<_>>());
    let out = step.predict(&all.x)?;
    let acc = correct_binary(&out, &all.y, 0.5) as f64 / ds.len() as f64;
    run.finish()?;
    println!("final: loss={epoch_loss:.6} accuracy={acc:.4}");
    check(
        &a,
        epoch_loss < first.unwrap_or(0.0),
        "the loss did not decrease",
    )?;
    check(
        &a,
        epochs < 100 || acc > 0.7,
        "accuracy should exceed 0.7 after 100 epochs",
    )?;
    Ok(())
}

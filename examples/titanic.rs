//! Titanic survival by logistic regression on a few engineered features: sex, passenger
//! class (one-hot), age (missing ages filled with the *training* median), fare, siblings
//! and parents aboard; z-scored with training statistics; 80/20 train/validation split;
//! `Linear(7, 1)` with BCE-with-logits and Adam.

use aotgrad::cli::args::{ExampleSpec, TRAINING_FLAGS, TrainArgs, check};
use aotgrad::data::csv::read_table;
use aotgrad::data::{DataLoader, Dataset, Rng, TensorDataset, Transform, ZScore, random_split};
use aotgrad::metrics::correct_binary;
use aotgrad::nn::Linear;
use aotgrad::prelude::*;
use clap::Parser;

#[derive(Parser)]
#[command(about = "Titanic survival by logistic regression")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const FEATURES: usize = 7;

const SPEC: ExampleSpec = ExampleSpec {
    name: "titanic",
    takes: &[TRAINING_FLAGS, &["--seed", "--batch", "--early-stop"]],
    defaults: &[
        ("--epochs", "100"),
        ("--optim", "adam"),
        ("--lr", "0.01"),
        ("--batch", "64"),
    ],
};

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let a = SPEC.parse::<Cli>(|c| &c.train).train;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/titanic.csv");
    let t = read_table(&path, true)?;
    let col = |n: &str| t.column(n);
    let (surv, class, sex, age, sib, par, fare) = (
        col("Survived")?,
        col("Pclass")?,
        col("Sex")?,
        col("Age")?,
        col("SibSp")?,
        col("Parch")?,
        col("Fare")?,
    );
    let num = |s: &str| s.trim().parse::<f32>().ok();
    // Age stays NaN here and is filled after the split, from the training median.
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for r in &t.rows {
        let c = num(&r[class]).ok_or("bad Pclass")?;
        xs.extend([
            (r[sex] == "male") as u8 as f32,
            (c == 1.0) as u8 as f32,
            (c == 2.0) as u8 as f32,
            num(&r[age]).unwrap_or(f32::NAN),
            num(&r[sib]).unwrap_or(0.0),
            num(&r[par]).unwrap_or(0.0),
            num(&r[fare]).unwrap_or(0.0),
        ]);
        ys.push(num(&r[surv]).ok_or("bad Survived")?);
    }
    let n = ys.len();
    let ds = TensorDataset::new(
        Tensor::from_f32(&xs, &[n, FEATURES])?,
        Tensor::from_f32(&ys, &[n, 1])?,
    )?;
    let n_train = n * 4 / 5;
    let parts = random_split(&ds, &[n_train, n - n_train], a.seed)?;
    let (mut train, mut val) = (parts[0].clone(), parts[1].clone());

    let fill = |d: &mut TensorDataset, median: f32| -> Result<(), Box<dyn std::error::Error>> {
        let mut v = d.x.as_f32()?.to_vec();
        for row in v.chunks_mut(FEATURES) {
            if row[3].is_nan() {
                row[3] = median;
            }
        }
        d.x = Tensor::from_f32(&v, d.x.shape())?;
        Ok(())
    };
    let mut ages: Vec<f32> = train
        .x
        .as_f32()?
        .chunks(FEATURES)
        .map(|r| r[3])
        .filter(|a| !a.is_nan())
        .collect();
    ages.sort_by(f32::total_cmp);
    let median = ages[ages.len() / 2];
    fill(&mut train, median)?;
    fill(&mut val, median)?;
    let z = ZScore::fit(&train.x)?;
    let train = TensorDataset {
        x: z.apply(train.x, &mut Rng::new(0))?,
        y: train.y,
    };
    let val = TensorDataset {
        x: z.apply(val.x, &mut Rng::new(0))?,
        y: val.y,
    };
    println!(
        "{} training and {} validation passengers; median training age {median}",
        train.len(),
        val.len()
    );

    let epochs = a.epochs.unwrap_or(100);
    let optim = Optimizer::from_name(
        a.optim.as_deref().unwrap_or("adam"),
        a.lr.unwrap_or(0.01),
        0.0,
    )?;
    let mut step = Trainer::new(
        Linear::new(FEATURES, 1),
        Loss::bce_with_logits(Reduction::Mean),
        optim,
    )
    .name("titanic")
    .input(DType::F32, &[FEATURES])
    .target(DType::F32, &[1])
    .seed(a.seed)
    .with_args(&a)
    .compile(&a.backend())?;
    let mut run = a.start_run(&mut step, &["loss", "lr", "val_accuracy"])?;
    // `--early-stop P`: stop when validation accuracy has not improved for P epochs.
    let mut stopper = a.early_stop.map(|p| EarlyStopping::new(p, 0.0, true));
    let loader = DataLoader::new(&train, a.batch.unwrap_or(64)).shuffle(a.seed);
    let (mut first, mut epoch_loss) = (None, 0.0);
    for epoch in 0..epochs {
        epoch_loss = step.run_epoch(loader.epoch(epoch))?;
        run.record(&step, epoch + 1, &[("loss", epoch_loss), ("lr", step.lr())])?;
        run.end_epoch(&mut step, epoch, epoch_loss)?;
        first.get_or_insert(epoch_loss);
        if epoch % 10 == 0 || epoch + 1 == epochs {
            println!("Epoch {}/{epochs}: loss {epoch_loss:.4}", epoch + 1);
        }
        if let Some(es) = &mut stopper {
            let logits = step.predict(&val.x)?;
            let acc = correct_binary(&logits, &val.y, 0.0) as f64 / val.len() as f64;
            run.record(&step, epoch + 1, &[("val_accuracy", acc)])?;
            if es.update(epoch + 1, acc) {
                let (best, at) = es.best().expect("updated");
                println!(
                    "early stop after epoch {}: best val_accuracy {best:.4} at epoch {at}",
                    epoch + 1
                );
                break;
            }
        }
    }
    let logits = step.predict(&val.x)?;
    let acc = correct_binary(&logits, &val.y, 0.0) as f64 / val.len() as f64;
    run.finish()?;
    println!("final: val_accuracy={acc:.4} train_loss={epoch_loss:.6}");
    check(
        &a,
        epoch_loss < first.unwrap_or(0.0),
        "the loss did not decrease",
    )?;
    check(&a, acc > 0.7, "validation accuracy should exceed 0.7")?;
    Ok(())
}

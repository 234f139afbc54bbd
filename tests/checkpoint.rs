//! Checkpoints: resuming continues bitwise as if never stopped; bad files and other
//! models give errors that say what is wrong; writes are atomic.

use aotgrad::checkpoint::{self, CheckpointError, Progress};
use aotgrad::data::{DataLoader, TensorDataset};
use aotgrad::nn::{Dropout, Linear, ReLU, Sequential};
use aotgrad::prelude::*;

fn data() -> TensorDataset {
    let n = 50;
    let x: Vec<f32> = (0..n * 4)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    let y: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    TensorDataset::new(
        Tensor::from_f32(&x, &[n, 4]).unwrap(),
        Tensor::from_i64(&y, &[n]).unwrap(),
    )
    .unwrap()
}

fn trainer(seed: u64) -> Trainer {
    let model = Sequential::new()
        .push(Linear::new(4, 8))
        .push(ReLU)
        .push(Dropout(0.2))
        .push(Linear::new(8, 3));
    Trainer::new(model, Loss::cross_entropy(), Optimizer::adam(0.01))
        .input(DType::F32, &[4])
        .target(DType::I64, &[])
        .seed(seed)
}

fn epoch(step: &mut TrainStep, ds: &TensorDataset, e: usize) {
    for b in DataLoader::new(ds, 8).shuffle(11).epoch(e) {
        step.run(&b.unwrap()).unwrap();
    }
}

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("aotgrad-ckpt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn resuming_is_bitwise_the_same_as_not_stopping() {
    resume_on(Backend::Interpreter, "resume");
}

/// On the CPU backend the parameter arena owns the weights and moments after the first
/// step (the host copies are dropped): saving reads them out of it, loading puts them
/// back, and both continue bitwise.
#[test]
fn resuming_on_the_cpu_backend_is_bitwise_the_same_as_not_stopping() {
    resume_on(Backend::Cpu { threads: 1 }, "resume-cpu");
}

fn resume_on(backend: Backend, tag: &str) {
    let ds = data();
    let mut straight = trainer(1).compile(&backend).unwrap();
    for e in 0..3 {
        epoch(&mut straight, &ds, e);
    }

    let mut first = trainer(1).compile(&backend).unwrap();
    epoch(&mut first, &ds, 0);
    // Reading back into the host copies keeps the declaration order and the values.
    let (params, moments) = (first.parameters().to_vec(), first.optimizer_state());
    first.sync().unwrap();
    assert_eq!(first.parameters(), &params[..]);
    assert_eq!(first.optimizer_state(), moments);
    let path = dir(tag).join("resume.safetensors");
    checkpoint::save(
        &first,
        &path,
        &Progress {
            epoch: 1,
            steps: first.steps(),
        },
    )
    .unwrap();
    drop(first);

    // A fresh process would compile again (here with another init seed, overwritten).
    let mut resumed = trainer(99).compile(&backend).unwrap();
    // A step before loading: on the CPU backend the arena has taken the model over.
    epoch(&mut resumed, &ds, 2);
    let progress = checkpoint::load(&mut resumed, &path).unwrap();
    assert_eq!(progress.epoch, 1);
    for e in progress.epoch as usize..3 {
        epoch(&mut resumed, &ds, e);
    }
    assert_eq!(resumed.steps(), straight.steps());
    assert_eq!(
        resumed.parameters(),
        straight.parameters(),
        "bitwise equal parameters"
    );
    assert_eq!(resumed.optimizer_state(), straight.optimizer_state());
    let names: Vec<String> = resumed
        .optimizer_state()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        names.contains(&"rng.key".to_string()) && names.contains(&"0.weight.exp_avg".to_string()),
        "{names:?}"
    );
}

#[test]
fn bad_checkpoints_are_refused_without_changing_the_model() {
    let ds = data();
    let d = dir("bad");
    let mut step = trainer(1).compile(&Backend::Interpreter).unwrap();
    epoch(&mut step, &ds, 0);
    let path = d.join("good.safetensors");
    checkpoint::save(
        &step,
        &path,
        &Progress {
            epoch: 1,
            steps: step.steps(),
        },
    )
    .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let mut fresh = trainer(2).compile(&Backend::Interpreter).unwrap();
    let before = fresh.parameters().to_vec();

    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = checkpoint::load(&mut fresh, &cut).unwrap_err();
    assert!(matches!(e, CheckpointError::File(_)), "{e}");
    assert!(
        e.to_string().contains("not a valid safetensors file"),
        "{e}"
    );
    // Garbage.
    std::fs::write(&cut, b"hello").unwrap();
    assert!(checkpoint::load(&mut fresh, &cut).is_err());

    // A different model: the error names the tensors.
    let other = Sequential::new().push(Linear::new(4, 3));
    let mut small = Trainer::new(other, Loss::cross_entropy(), Optimizer::adam(0.01))
        .input(DType::F32, &[4])
        .target(DType::I64, &[])
        .compile(&Backend::Interpreter)
        .unwrap();
    let e = checkpoint::load(&mut small, &path).unwrap_err().to_string();
    assert!(
        e.contains("\"0.weight\": the model has f32[3,4], the state dict f32[8,4]"),
        "{e}"
    );
    assert!(e.contains("unexpected \"3.weight\""), "{e}");

    // Same parameters, different loss: the step graph differs.
    let mut sum_loss = Trainer::new(
        Sequential::new()
            .push(Linear::new(4, 8))
            .push(ReLU)
            .push(Dropout(0.2))
            .push(Linear::new(8, 3)),
        Loss::cross_entropy_with(0.0, Reduction::Sum),
        Optimizer::adam(0.01),
    )
    .input(DType::F32, &[4])
    .target(DType::I64, &[])
    .compile(&Backend::Interpreter)
    .unwrap();
    let before_sum = sum_loss.parameters().to_vec();
    let e = checkpoint::load(&mut sum_loss, &path).unwrap_err();
    assert!(matches!(e, CheckpointError::GraphChanged { .. }), "{e}");
    assert_eq!(
        sum_loss.parameters(),
        &before_sum[..],
        "unchanged after a refused load"
    );

    // A plain safetensors file of the right tensors but no checkpoint metadata.
    let plain = d.join("plain.safetensors");
    aotgrad::tensor_file::write_safetensors(&plain, &step.state_dict(), &Default::default())
        .unwrap();
    let e = checkpoint::load(&mut fresh, &plain).unwrap_err();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
    assert_eq!(fresh.parameters(), &before[..]);

    // Mid-accumulation saves are refused.
    let mut acc = trainer(1)
        .accumulate(2)
        .compile(&Backend::Interpreter)
        .unwrap();
    let b = DataLoader::new(&ds, 8).epoch(0).next().unwrap().unwrap();
    acc.run(&b).unwrap();
    let e = checkpoint::save(&acc, &d.join("mid.safetensors"), &Progress::default()).unwrap_err();
    assert!(
        matches!(e, CheckpointError::MidAccumulation { pending: 1 }),
        "{e}"
    );
}

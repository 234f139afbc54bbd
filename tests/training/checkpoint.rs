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

    // Same parameters, different loss: the metadata names both.
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
    assert!(matches!(e, CheckpointError::LossChanged { .. }), "{e}");
    assert!(
        e.to_string().ends_with(
            "checkpoint was written with the loss cross_entropy(label_smoothing=0.0, \
             reduction=mean), this run uses cross_entropy(label_smoothing=0.0, reduction=sum)"
        ),
        "{e}"
    );
    assert_eq!(
        sum_loss.parameters(),
        &before_sum[..],
        "unchanged after a refused load"
    );

    // Same parameters, loss and optimizer, another dropout rate: the step graph differs.
    let mut other_p = Trainer::new(
        Sequential::new()
            .push(Linear::new(4, 8))
            .push(ReLU)
            .push(Dropout(0.5))
            .push(Linear::new(8, 3)),
        Loss::cross_entropy(),
        Optimizer::adam(0.01),
    )
    .input(DType::F32, &[4])
    .target(DType::I64, &[])
    .compile(&Backend::Interpreter)
    .unwrap();
    let e = checkpoint::load(&mut other_p, &path).unwrap_err();
    assert!(matches!(e, CheckpointError::GraphChanged { .. }), "{e}");

    // Another optimizer: named with its hyper-parameters.
    let mut sgd = Trainer::new(
        Sequential::new()
            .push(Linear::new(4, 8))
            .push(ReLU)
            .push(Dropout(0.2))
            .push(Linear::new(8, 3)),
        Loss::cross_entropy(),
        Optimizer::sgd_momentum(0.01, 0.9),
    )
    .input(DType::F32, &[4])
    .target(DType::I64, &[])
    .compile(&Backend::Interpreter)
    .unwrap();
    let e = checkpoint::load(&mut sgd, &path).unwrap_err();
    assert!(matches!(e, CheckpointError::OptimizerChanged { .. }), "{e}");
    assert!(
        e.to_string().ends_with(
            "checkpoint was written by Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), \
             this run uses SGD(momentum=0.9, dampening=0.0, nesterov=false, weight_decay=0.0)"
        ),
        "{e}"
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

/// Every single-bit flip anywhere in a checkpoint is refused (the tensors and metadata
/// are checksummed; before, all 200 flips in tensor data and a flipped `"lr"` loaded),
/// and the model is left as it was.
#[test]
fn every_flipped_bit_is_refused() {
    let ds = data();
    let d = dir("flips");
    let mut step = trainer(1).compile(&Backend::Interpreter).unwrap();
    epoch(&mut step, &ds, 0);
    let path = d.join("ckpt.safetensors");
    let progress = Progress {
        epoch: 1,
        steps: step.steps(),
    };
    checkpoint::save(&step, &path, &progress).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut fresh = trainer(2).compile(&Backend::Interpreter).unwrap();
    let before = (fresh.parameters().to_vec(), fresh.optimizer_state());
    let bad = d.join("bad.safetensors");
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    // Every bit of the length prefix and of the first and last tensor bytes, every 3rd
    // bit of the JSON header, every 5th of the tensor data.
    let n = good.len() * 8;
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let (h0, h1) = (64, header * 8);
    let picked = |b: usize| {
        b < h0
            || (h1..h1 + 64).contains(&b)
            || b >= n - 64
            || b.is_multiple_of(if b < h1 { 3 } else { 5 })
    };
    for bit in (0..n).filter(|&b| picked(b)) {
        let mut bytes = good.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&bad, &bytes).unwrap();
        match checkpoint::load(&mut fresh, &bad) {
            Ok(_) => panic!(
                "bit {bit} (byte {}) flipped and the checkpoint loaded",
                bit / 8
            ),
            Err(e) => {
                let kind = format!("{e:?}");
                *refused
                    .entry(kind[..kind.find(['(', ' ', '{']).unwrap()].to_string())
                    .or_default() += 1;
            }
        }
    }
    assert_eq!(
        (fresh.parameters().to_vec(), fresh.optimizer_state()),
        before
    );
    // Data flips are named as checksum failures.
    assert!(
        refused.get("Corrupt").copied().unwrap_or(0) > 1000,
        "{refused:?}"
    );
    // The good file still loads.
    checkpoint::load(&mut fresh, &path).unwrap();
    assert_eq!(fresh.parameters(), step.parameters());

    // A flipped learning rate in otherwise valid metadata (rewritten with a matching
    // safetensors header, as an editor would) is caught by the metadata checksum.
    let text = String::from_utf8_lossy(&good[8..header]).to_string();
    let lr = text.find("\"lr\":\"").unwrap() + 6;
    let mut edited = good.clone();
    edited[8 + lr] = if edited[8 + lr] == b'1' { b'2' } else { b'1' };
    std::fs::write(&bad, &edited).unwrap();
    let e = checkpoint::load(&mut fresh, &bad).unwrap_err();
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("the metadata"), "{e}");
}

/// Two saves of the same state are the same bytes (the metadata is written in key
/// order; the `safetensors` crate writes it in `HashMap` order), and a temporary file
/// left by a killed write is removed by the next save.
#[test]
fn checkpoints_are_byte_stable_and_clean_up_after_killed_writes() {
    let ds = data();
    let d = dir("stable");
    let mut step = trainer(1).compile(&Backend::Interpreter).unwrap();
    epoch(&mut step, &ds, 0);
    let progress = Progress {
        epoch: 1,
        steps: step.steps(),
    };
    let (a, b) = (d.join("a.safetensors"), d.join("b.safetensors"));
    checkpoint::save(&step, &a, &progress).unwrap();
    // Stale temporaries of `b` from killed writes (and files that only look alike).
    for name in ["b.tmp.4242", "b.tmp.1", "b.tmp.x", "bb.tmp.7", "a.tmp.99"] {
        std::fs::write(d.join(name), b"partial").unwrap();
    }
    checkpoint::save(&step, &b, &progress).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "a.safetensors",
            "a.tmp.99",
            "b.safetensors",
            "b.tmp.x",
            "bb.tmp.7"
        ]
    );
}

//! Data-parallel training (`Trainer::data_parallel`) with ranks on threads: the step
//! averages every gradient over the group with a compiled `all_reduce` (interpreter
//! and CPU backend), ranks stay
//! bitwise identical, and N ranks of batch B follow one process of batch N*B.

use std::sync::Arc;
use std::time::Duration;

use aotgrad::data::{DataLoader, Shard, TensorDataset};
use aotgrad::executor::{ProgramKind, Stage};
use aotgrad::nn::{Linear, ReLU, Sequential};
use aotgrad::prelude::*;
use aotgrad::runtime::collective::{Communicator, ThreadGroup};

fn dataset() -> TensorDataset {
    let n = 24;
    let x: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 37 % 23) as f32 / 23.0) - 0.5)
        .collect();
    let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).sin()).collect();
    TensorDataset::new(
        Tensor::from_f32(&x, &[n, 3]).unwrap(),
        Tensor::from_f32(&y, &[n, 1]).unwrap(),
    )
    .unwrap()
}

fn trainer() -> Trainer {
    let model = Sequential::new()
        .push(Linear::new(3, 8))
        .push(ReLU)
        .push(Linear::new(8, 1));
    Trainer::new(
        model,
        Loss::mse(Reduction::Mean),
        Optimizer::sgd_momentum(0.1, 0.9),
    )
    .input(DType::F32, &[3])
    .target(DType::F32, &[1])
    .seed(7)
}

/// Trains 2 epochs on `world` thread ranks with per-rank batch `batch` (no shuffle, so
/// rank r's batch i is rows [i*world*batch + r, step world]); the parameters per rank.
fn train_on_ranks(world: usize, batch: usize, backend: Backend) -> Vec<Vec<(String, Tensor)>> {
    train_configured(world, batch, backend, |t| t)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// One rank's parameters after training and its lowered step program.
type RankResult = (Vec<(String, Tensor)>, Option<String>);

/// [`train_on_ranks`] with the trainer configured by `configure`; with each rank's
/// parameters, its lowered step program (compiled backends).
fn train_configured(
    world: usize,
    batch: usize,
    backend: Backend,
    configure: fn(Trainer) -> Trainer,
) -> Vec<RankResult> {
    let ds = dataset();
    let group = ThreadGroup::new(world, Duration::from_secs(30));
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|c| {
                let (ds, backend) = (&ds, backend);
                s.spawn(move || {
                    let rank = c.rank();
                    let comm: Arc<dyn Communicator> = Arc::new(c);
                    let mut step = configure(trainer().data_parallel(comm))
                        .compile(&backend)
                        .unwrap();
                    let loader = DataLoader::new(ds, batch).shard(Shard::new(rank, world).unwrap());
                    for epoch in 0..2 {
                        for b in loader.epoch(epoch) {
                            step.run(&b.unwrap()).unwrap();
                        }
                    }
                    let lowered = step
                        .artifact(ProgramKind::Step, Stage::Lowered)
                        .map(|r| r.unwrap());
                    (step.parameters().to_vec(), lowered)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_agree_bitwise_and_match_one_process_of_the_global_batch() {
    for backend in [Backend::Interpreter, Backend::Cpu { threads: 1 }] {
        let ranks = train_on_ranks(3, 2, backend);
        assert!(
            ranks.iter().all(|p| p == &ranks[0]),
            "{backend:?}: ranks diverged"
        );
        assert_eq!(
            train_on_ranks(3, 2, backend),
            ranks,
            "{backend:?}: a second run differs"
        );

        // One process, batch 6 = 3 ranks x 2, same samples per step (rank r of step i
        // holds rows i*6 + r and i*6 + 3 + r: the same six rows).
        let ds = dataset();
        let mut single = trainer().compile(&backend).unwrap();
        for epoch in 0..2 {
            for b in DataLoader::new(&ds, 6).epoch(epoch) {
                single.run(&b.unwrap()).unwrap();
            }
        }
        for ((n, got), (_, want)) in ranks[0].iter().zip(single.parameters()) {
            assert!(
                got.allclose(want, 1e-5, 1e-6),
                "{backend:?} {n}: {got} vs {want}"
            );
        }
    }
    // The CPU's compiled all_reduce and the interpreter's agree to rounding.
    let (i, c) = (
        train_on_ranks(2, 3, Backend::Interpreter),
        train_on_ranks(2, 3, Backend::Cpu { threads: 2 }),
    );
    for ((n, a), (_, b)) in i[0].iter().zip(&c[0]) {
        assert!(a.allclose(b, 1e-5, 1e-6), "{n}: {a} vs {b}");
    }
}

#[test]
fn the_step_shows_its_all_reduces_and_the_gpu_refuses_a_group() {
    let group = ThreadGroup::new(2, Duration::from_secs(1));
    let comm: Arc<dyn Communicator> = Arc::new(group.into_iter().next().unwrap());
    let text = aotgrad::text::print(
        trainer()
            .data_parallel(comm.clone())
            .compile(&Backend::Interpreter)
            .unwrap()
            .step_graph(),
    );
    // The 4 gradients (164 bytes) fit one bucket: one mean of their concatenation.
    assert_eq!(text.matches("all_reduce").count(), 1, "{text}");
    assert_eq!(text.matches("= concat").count(), 1, "{text}");
    assert!(text.contains("{op=mean}"), "{text}");
    let e = trainer()
        .data_parallel(comm)
        .compile(&Backend::Gpu)
        .err()
        .expect("a 2-rank group on the GPU backend is refused");
    assert!(e.to_string().contains("all_reduce over 2 ranks"), "{e}");
}

#[test]
fn buckets_change_no_bit_and_their_reductions_overlap_backward() {
    // 40-byte buckets in reverse parameter order: [2.bias, 2.weight] (36 B), [0.bias]
    // (32 B), [0.weight] (96 B): three reductions instead of one.
    let small = train_configured(2, 3, Backend::Cpu { threads: 1 }, |t| t.bucket_bytes(40));
    let one = train_configured(2, 3, Backend::Cpu { threads: 1 }, |t| t);
    // An all_reduce is elementwise: how gradients are grouped cannot change a bit.
    for (a, b) in small.iter().zip(&one) {
        for ((n, x), (_, y)) in a.0.iter().zip(&b.0) {
            assert_eq!(x.data(), y.data(), "{n}");
        }
    }
    assert_eq!(small[0].0, small[1].0, "ranks agree bit for bit");
    let lowered = small[0]
        .1
        .as_deref()
        .expect("the CPU shows its lowered program");
    assert_eq!(lowered.matches("start collective").count(), 3, "{lowered}");
    let waits: Vec<&str> = lowered
        .lines()
        .filter(|l| l.contains("wait collective"))
        .collect();
    assert_eq!(waits.len(), 3, "{lowered}");
    // The last layer's bucket starts before the first layer's gradients exist: the
    // kernels computing them run while it moves.
    assert!(waits.iter().any(|l| l.contains("overlapping")), "{lowered}");
    assert!(lowered.contains("3 collectives"), "{lowered}");
}

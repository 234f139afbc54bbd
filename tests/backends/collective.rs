//! Process groups (`aotgrad::runtime::collective`) and the `all_reduce` op in groups of
//! several ranks: ranks on threads, each running the reference interpreter with its
//! own batch. The sum is in rank order, so every rank and every run gets the same bits.

use std::collections::HashMap;
use std::time::Duration;

use aotgrad::compiler::{Seed, grad};
use aotgrad::ir::{AllReduceOp, Data, Op};
use aotgrad::prelude::*;
use aotgrad::runtime::collective::{CollectiveError, Communicator, ThreadGroup};

/// Runs `f(rank handle)` on one thread per rank; results in rank order.
fn on_ranks<T: Send>(world: usize, f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
    let group = ThreadGroup::new(world, Duration::from_secs(20));
    std::thread::scope(|s| {
        let handles: Vec<_> = group.iter().map(|c| s.spawn(|| f(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn sums_in_rank_order_identically_on_every_rank() {
    // 1e8 + 1 - 1e8 is 0 in f32 when added left to right, 1 in another order: the
    // rank order fixes which, for every rank and run.
    let vals = [1e8f32, 1.0, -1e8];
    for _ in 0..20 {
        let out = on_ranks(3, |c| {
            let mut d = Data::F32(vec![vals[c.rank()], c.rank() as f32]);
            c.all_reduce_sum(&mut d).unwrap();
            // A second collective on the same group, back to back.
            let mut e = Data::I64(vec![c.rank() as i64 + 1]);
            c.all_reduce_sum(&mut e).unwrap();
            (d, e)
        });
        for (d, e) in &out {
            assert_eq!(d, &Data::F32(vec![(1e8f32 + 1.0) - 1e8, 3.0]));
            assert_eq!(e, &Data::I64(vec![6]));
        }
    }
}

#[test]
fn a_missing_rank_times_out_and_a_mismatch_is_named() {
    let group = ThreadGroup::new(2, Duration::from_millis(200));
    let mut d = Data::F32(vec![1.0]);
    match group[0].all_reduce_sum(&mut d) {
        Err(CollectiveError::Timeout {
            rank: 0,
            world: 2,
            call: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let out = on_ranks(2, |c| {
        let mut d = Data::F32(vec![0.0; 1 + c.rank()]);
        c.all_reduce_sum(&mut d)
    });
    for r in out {
        let e = r.unwrap_err();
        assert!(
            matches!(e, CollectiveError::Mismatch { rank: 1, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("rank 1 gave 2 x f32 but rank 0 gave 1 x f32"),
            "{e}"
        );
    }
}

/// The gradient of a linear model's MSE, averaged over the group by `all_reduce`.
fn data_parallel_grad() -> Graph {
    let g = GraphBuilder::new("linreg");
    let x = g.input("x", DType::F32, shape!["N", 3]);
    let y = g.input("y", DType::F32, shape!["N", 1]);
    let w = g.param("w", DType::F32, shape![3, 1]);
    g.output("loss", (x.matmul(w) - y).square().mean_all());
    let joint = grad(&g.finish().unwrap(), &[("loss", Seed::Auto)], &["w"]).unwrap();
    let id = joint
        .outputs()
        .iter()
        .find(|(n, _)| n == "w.grad")
        .unwrap()
        .1;
    let b = GraphBuilder::from_graph(joint);
    let gw = b.var(id).unwrap();
    b.output(
        "w.grad.mean",
        b.apply(
            Op::AllReduce {
                op: AllReduceOp::Mean,
            },
            &[gw],
        ),
    );
    b.finish().unwrap()
}

fn feeds(rows: std::ops::Range<usize>) -> HashMap<String, Tensor> {
    let n = rows.len();
    let x: Vec<f32> = rows
        .clone()
        .flat_map(|i| [i as f32 * 0.1, 1.0 - i as f32 * 0.05, (i % 3) as f32])
        .collect();
    let y: Vec<f32> = rows.map(|i| (i as f32 * 0.37).sin()).collect();
    HashMap::from([
        ("x".into(), Tensor::from_f32(&x, &[n, 3]).unwrap()),
        ("y".into(), Tensor::from_f32(&y, &[n, 1]).unwrap()),
        (
            "w".into(),
            Tensor::from_f32(&[0.3, -0.2, 0.5], &[3, 1]).unwrap(),
        ),
    ])
}

#[test]
fn three_ranks_of_batch_4_match_one_process_of_batch_12() {
    let graph = data_parallel_grad();
    let run = || {
        on_ranks(3, |c| {
            let f = feeds(c.rank() * 4..c.rank() * 4 + 4);
            let ev = aotgrad::run_in_group(&graph, &f, c).unwrap();
            ev.output("w.grad.mean").unwrap().clone()
        })
    };
    let first = run();
    assert!(
        first.iter().all(|g| g == &first[0]),
        "ranks differ: {first:?}"
    );
    assert_eq!(run(), first, "a second run differs");
    // One process over all 12 rows: the mean of equal-size batch means is the full
    // mean, up to the summation order (f32).
    let single = aotgrad::run(&graph, &feeds(0..12)).unwrap();
    let want = single.output("w.grad.mean").unwrap();
    assert!(
        first[0].allclose(want, 1e-6, 1e-7),
        "{} vs {want}",
        first[0]
    );
    // And the group of one's all_reduce is the identity.
    assert_eq!(want, single.output("w.grad").unwrap());
}

#[test]
fn all_gather_returns_every_ranks_bytes_and_different_jobs_are_named() {
    // Lengths differ per rank, one is empty: the gather is built from the sum.
    let out = on_ranks(3, |c| {
        let mine: Vec<u8> = (0..c.rank() * 2)
            .map(|i| (10 * c.rank() + i) as u8)
            .collect();
        c.all_gather(&mine).unwrap()
    });
    for got in &out {
        assert_eq!(got, &vec![vec![], vec![10, 11], vec![20, 21, 22, 23]]);
    }
    // The start-up check of a distributed job: rank 2 describes another batch.
    let checks = on_ranks(3, |c| {
        let batch = if c.rank() == 2 { 50 } else { 100 };
        aotgrad::distributed::check_same_job(c, &format!("seed 0\nbatch {batch}\n"))
            .map_err(|e| e.to_string())
    });
    for r in &checks {
        let e = r.as_ref().expect_err("every rank refuses the job");
        assert!(
            e.contains("rank 2 runs a different job than rank 0")
                && e.contains("rank 0 has `batch 100`, rank 2 has `batch 50`"),
            "{e}"
        );
    }
    let same = on_ranks(2, |c| {
        aotgrad::distributed::check_same_job(c, "batch 8\n").is_ok()
    });
    assert_eq!(same, [true, true]);
}

#[test]
fn evaluation_shares_cover_every_sample_once() {
    for (n, world) in [(10, 3), (2, 3), (0, 2), (10_000, 4)] {
        let mut seen = vec![0; n];
        for r in 0..world {
            for i in aotgrad::distributed::eval_share(n, r, world) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1), "{n} over {world}");
    }
}

#[test]
fn a_background_wait_gives_up_when_the_peers_never_come() {
    use aotgrad::runtime::collective::Background;
    use std::sync::Arc;
    // Rank 1 never reduces; rank 0's collectives thread waits in the group's own
    // rendezvous (2 s), and the step's wait gives up first, after 100 ms.
    let mut group = ThreadGroup::new(2, Duration::from_secs(2));
    let _silent = group.pop();
    let rank0: Arc<dyn Communicator> = Arc::new(group.pop().unwrap());
    let bg = Background::new(rank0, Duration::from_millis(100));
    let first = bg.start(Data::F32(vec![1.0])).unwrap();
    let e = first.wait().unwrap_err();
    assert!(
        matches!(
            e,
            CollectiveError::Timeout {
                rank: 0,
                world: 2,
                call: 0,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("did not reach all_reduce #0"), "{e}");
}

//! Bounded in-process fuzzing, run on every `cargo test` (a few seconds each):
//!
//! - random graphs of primitives (zero-size and size-1 dims, NaN, infinities and signed
//!   zeros in the data, out-of-range indices now and then) on the interpreter and on the
//!   CPU JIT at 1 and 2 threads: both fail with the same kind of error on the same
//!   node, or both succeed with the same values (exactly for integers and bools, to a
//!   float tolerance where the JIT may sum in another order);
//! - random corruption of `.npy`, IDX and checkpoint bytes: a typed error or a value
//!   consistent with its bytes, never a panic, and a checkpoint either refused or
//!   restoring exactly what was saved.
//!
//! The seeds are fixed, so a failure reproduces; `AOTGRAD_FUZZ_CASES=N` runs more.

use std::collections::HashMap;

use aotgrad::ir::{
    ArgReduceOp, BinaryOp, ConstValue, Data, Op, ReduceOp, SliceAxis, UnaryOp, Window,
};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};
use aotgrad::{RunError, TensorType};

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
    /// A data value: mostly in [-3, 3], sometimes a special one.
    fn value(&mut self) -> f32 {
        if self.chance(0.06) {
            return self.pick(&[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0]);
        }
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
    }
}

fn cases(default: usize) -> usize {
    std::env::var("AOTGRAD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dims(rng: &mut Rng) -> Vec<usize> {
    let rank = 1 + rng.below(3);
    (0..rank)
        .map(|_| {
            if rng.chance(0.08) {
                0
            } else {
                rng.pick(&[1, 2, 3, 4, 5])
            }
        })
        .collect()
}

/// Builds a random graph of primitives over `f32` inputs; returns it with its feeds.
fn random_graph(rng: &mut Rng) -> (Graph, HashMap<String, Tensor>) {
    let mut g = Graph::new("fuzz");
    let mut feeds = HashMap::new();
    let mut pool: Vec<aotgrad::ir::NodeId> = Vec::new();
    for i in 0..1 + rng.below(2) {
        let d = dims(rng);
        let name = format!("x{i}");
        let id = g
            .input(&name, TensorType::new(DType::F32, Shape::known(&d)))
            .unwrap();
        let n: usize = d.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| rng.value()).collect();
        feeds.insert(name, Tensor::from_f32(&vals, &d).unwrap());
        pool.push(id);
    }
    for _ in 0..4 + rng.below(14) {
        let x = pool[rng.below(pool.len())];
        let ty = g.ty(x).clone();
        let shape = ty.shape.as_known().unwrap();
        let rank = shape.len();
        // Each attempt may be refused by the op's type rule: then nothing is added.
        let mut build = || -> Option<aotgrad::ir::NodeId> {
            match rng.below(17) {
                // Ops along an axis need one.
                6 | 11 | 14 | 15 if rank == 0 => None,
                0 => {
                    // Every float unary (not `not`, which takes bools, nor the
                    // identity `stop_gradient`).
                    let float: Vec<UnaryOp> = UnaryOp::ALL
                        .into_iter()
                        .filter(|u| !matches!(u, UnaryOp::Not | UnaryOp::StopGradient))
                        .collect();
                    let u = rng.pick(&float);
                    g.add(Op::Unary(u), &[x]).ok()
                }
                1 | 2 => {
                    let b = rng.pick(&[
                        BinaryOp::Add,
                        BinaryOp::Sub,
                        BinaryOp::Mul,
                        BinaryOp::Div,
                        BinaryOp::Pow,
                        BinaryOp::Maximum,
                        BinaryOp::Minimum,
                    ]);
                    let same: Vec<_> = pool.iter().copied().filter(|&p| *g.ty(p) == ty).collect();
                    let y = same[rng.below(same.len())];
                    g.add(Op::Binary(b), &[x, y]).ok()
                }
                3 => {
                    let same: Vec<_> = pool.iter().copied().filter(|&p| *g.ty(p) == ty).collect();
                    let y = same[rng.below(same.len())];
                    let c = rng.pick(&[BinaryOp::Lt, BinaryOp::Ge, BinaryOp::Eq, BinaryOp::Ne]);
                    let cond = g.add(Op::Binary(c), &[x, y]).unwrap();
                    g.add(Op::Where, &[cond, x, y]).ok()
                }
                4 => {
                    let d = rng.pick(&[DType::F64, DType::I32, DType::I64, DType::U8, DType::Bool]);
                    let c = g.add(Op::Cast(d), &[x]).unwrap();
                    g.add(Op::Cast(DType::F32), &[c]).ok()
                }
                5 => {
                    let axes: Vec<usize> = (0..rank).filter(|_| rng.chance(0.5)).collect();
                    let op =
                        rng.pick(&[ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum]);
                    g.add(
                        Op::Reduce {
                            op,
                            axes,
                            keepdim: rng.chance(0.5),
                        },
                        &[x],
                    )
                    .ok()
                }
                6 if rng.chance(0.3) => {
                    // topk's positions, as values: k from 0 to the axis length.
                    let axis = rng.below(rank);
                    let a = g
                        .add(
                            Op::TopK {
                                axis,
                                k: rng.below(shape[axis] + 1),
                                largest: rng.chance(0.5),
                            },
                            &[x],
                        )
                        .ok()?;
                    g.add(Op::Cast(DType::F32), &[a]).ok()
                }
                6 => {
                    let op = rng.pick(&[ArgReduceOp::ArgMax, ArgReduceOp::ArgMin]);
                    let a = g
                        .add(
                            Op::ArgReduce {
                                op,
                                axis: rng.below(rank),
                                keepdim: rng.chance(0.5),
                            },
                            &[x],
                        )
                        .ok()?;
                    g.add(Op::Cast(DType::F32), &[a]).ok()
                }
                7 => {
                    let mut to = shape.clone();
                    to.reverse();
                    if rng.chance(0.5) {
                        to = vec![shape.iter().product()];
                    }
                    g.add(Op::Reshape(Shape::known(&to)), &[x]).ok()
                }
                8 => {
                    let mut perm: Vec<usize> = (0..rank).collect();
                    for i in (1..rank).rev() {
                        perm.swap(i, rng.below(i + 1));
                    }
                    g.add(Op::Permute(perm), &[x]).ok()
                }
                9 => {
                    let ranges = shape
                        .iter()
                        .map(|&n| {
                            if rng.chance(0.3) {
                                return SliceAxis::Full;
                            }
                            let start = rng.below(n + 1);
                            let stop = start + rng.below(n - start + 1);
                            SliceAxis::Range {
                                start,
                                stop,
                                step: 1 + rng.below(3),
                            }
                        })
                        .collect();
                    g.add(Op::Slice(ranges), &[x]).ok()
                }
                10 => {
                    let pads = (0..rank).map(|_| (rng.below(3), rng.below(3))).collect();
                    let value = aotgrad::ir::Scalar::F32(rng.value());
                    g.add(Op::Pad { pads, value }, &[x]).ok()
                }
                11 => g
                    .add(
                        Op::Concat {
                            axis: rng.below(rank),
                        },
                        &[x, x],
                    )
                    .ok(),
                12 => {
                    // A new leading axis of 1, then broadcast to 3.
                    let mut one = vec![1];
                    one.extend(&shape);
                    let r = g.add(Op::Reshape(Shape::known(&one)), &[x]).unwrap();
                    one[0] = 3;
                    g.add(Op::Expand(Shape::known(&one)), &[r]).ok()
                }
                13 if rank == 2 => g
                    .add(
                        Op::MatMul {
                            trans_a: false,
                            trans_b: true,
                        },
                        &[x, x],
                    )
                    .ok(),
                14 | 15 => {
                    // gather (and scatter_add back) along an axis, with constant indices that
                    // are now and then out of range.
                    let axis = rng.below(rank);
                    let mut is = shape.clone();
                    is[axis] = rng.below(4);
                    let n: usize = is.iter().product();
                    let len = shape[axis] as i64;
                    let idx: Vec<i64> = (0..n)
                        .map(|_| {
                            if rng.chance(0.03) {
                                rng.pick(&[-1, len, len + 5])
                            } else {
                                (rng.next() % (len.max(1) as u64)) as i64
                            }
                        })
                        .collect();
                    let index = g
                        .add(
                            Op::Const {
                                value: ConstValue::Dense(Data::I64(idx)),
                                ty: TensorType::new(DType::I64, Shape::known(&is)),
                            },
                            &[],
                        )
                        .unwrap();
                    let picked = g.add(Op::Gather { axis }, &[x, index]).ok()?;
                    if rng.chance(0.5) {
                        g.add(Op::ScatterAdd { axis }, &[x, index, picked]).ok()
                    } else {
                        Some(picked)
                    }
                }
                16 if rank >= 2 => {
                    let w = Window {
                        kernel: [1 + rng.below(2), 1 + rng.below(2)],
                        stride: [1 + rng.below(2), 1 + rng.below(2)],
                        dilation: [1 + rng.below(2), 1],
                    };
                    let u = g.add(Op::Unfold(w), &[x]).ok()?;
                    if rng.chance(0.5) {
                        let size = [shape[rank - 2], shape[rank - 1]];
                        g.add(Op::Fold { window: w, size }, &[u]).ok()
                    } else {
                        Some(u)
                    }
                }
                _ => None,
            }
        };
        let made = build();
        if let Some(id) = made
            && g.ty(id).dtype == DType::F32
        {
            pool.push(id);
        }
    }
    let n = pool.len();
    for (k, &id) in pool[n.saturating_sub(1 + rng.below(3))..]
        .iter()
        .enumerate()
    {
        g.set_output(&format!("out{k}"), id).unwrap();
    }
    (g, feeds)
}

/// Same values: NaN where NaN, equal infinities, finite values within `1e-3` relative
/// (plus a `1e-3` floor). The JIT sums and multiplies in another order (vector lanes,
/// GEMM tiles), and a transcendental after a sum amplifies the last-bit difference
/// (`sin` of a sum of 60 values near 120 differs by 4e-5); a wrong index or layout
/// shows as a far larger difference.
fn close(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{a} vs {b}"));
    }
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let ok = (x.is_nan() && y.is_nan())
            || *x == y
            || (x.is_finite()
                && y.is_finite()
                && (x - y).abs() <= 1e-3 * x.abs().max(y.abs()) + 1e-3);
        if !ok {
            return Err(format!("element {i}: {x} vs {y}"));
        }
    }
    Ok(())
}

/// The same error on both, as far as the backends promise: its kind. With bad indices
/// in several gathers, each backend names one of them (the JIT runs kernels in its own
/// order and stops at the first that faults), and the index it reports may differ too
/// (the first in order on the interpreter, the least on the JIT).
fn same_error(a: &RunError, b: &RunError) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

#[test]
fn random_graphs_agree_on_the_interpreter_and_the_cpu_jit() {
    let mut rng = Rng(0xA07_64AD);
    let (mut ran, mut failed) = (0, 0);
    for case in 0..cases(3000) {
        let (graph, feeds) = random_graph(&mut rng);
        let want = aotgrad::run(&graph, &feeds);
        let threads = 1 + case % 2;
        let opts = CpuOptions {
            threads,
            ..Default::default()
        };
        let got = cpu::run_once(&graph, &feeds, opts);
        let what = || {
            format!(
                "case {case} ({threads} threads):\n{}",
                aotgrad::text::print(&graph)
            )
        };
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                for ((name, a), (_, b)) in w.outputs.iter().zip(&g.outputs) {
                    if let Err(e) = close(a, b) {
                        panic!("{}\noutput {name}: {e}", what());
                    }
                }
                ran += 1;
            }
            (Err(a), Err(b)) if same_error(a, b) => failed += 1,
            _ => panic!("{}\ninterpreter: {want:?}\ncpu: {got:?}", what()),
        }
    }
    // The generator must exercise both paths.
    assert!(
        ran > 1000 && failed > 30,
        "{ran} ran, {failed} failed alike"
    );
}

/// One random mutation of `bytes`: bit flips, byte overwrites, truncation, junk
/// appended, or a digit in a header changed.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(6) {
        0 => {
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        2 => b.truncate(rng.below(b.len())),
        3 => b.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8)),
        4 => {
            // A digit of the first 200 bytes (header sizes and shapes).
            let digits: Vec<usize> = (0..b.len().min(200))
                .filter(|&i| b[i].is_ascii_digit())
                .collect();
            if !digits.is_empty() {
                let i = digits[rng.below(digits.len())];
                b[i] = b'0' + rng.below(10) as u8;
            }
        }
        _ => {
            let i = rng.below(b.len());
            b.insert(i, rng.next() as u8);
        }
    }
    b
}

#[test]
fn corrupted_npy_and_idx_bytes_are_errors_or_consistent_values() {
    use aotgrad::data::mnist;
    use aotgrad::runtime::npy;
    let mut rng = Rng(0x5EED_0001);
    let samples = [
        npy::to_npy_bytes(&Tensor::from_f32(&[1.0, -2.0, 3.5, 0.0, 5.0, 6.0], &[2, 3]).unwrap()),
        npy::to_npy_bytes(&Tensor::from_i64(&[7, 8, 9], &[3]).unwrap()),
        npy::to_npy_bytes(&Tensor::new(&[2, 2], Data::U8(vec![1, 2, 3, 4])).unwrap()),
    ];
    let (mut ok, mut refused) = (0, 0);
    for case in 0..cases(20000) {
        let b = mutate(&mut rng, &samples[case % samples.len()]);
        match std::panic::catch_unwind(|| npy::from_npy_bytes(&b, "x.npy")) {
            Err(_) => panic!("case {case}: from_npy_bytes panicked on {b:?}"),
            Ok(Ok(t)) => {
                let n: usize = t.shape().iter().product();
                assert_eq!(n, t.len(), "case {case}");
                ok += 1;
            }
            Ok(Err(_)) => refused += 1,
        }
    }
    assert!(ok > 500 && refused > 5000, "{ok} read, {refused} refused");

    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2];
    images.extend((0..12).map(|i| i as u8 * 20));
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 3, 1, 7, 9];
    let p = std::path::Path::new("t.idx");
    for case in 0..cases(20000) {
        let (b, image) = if case % 2 == 0 {
            (mutate(&mut rng, &images), true)
        } else {
            (mutate(&mut rng, &labels), false)
        };
        let r = std::panic::catch_unwind(|| {
            if image {
                mnist::parse_images(p, &b).map(|t| (t.shape().iter().product::<usize>(), t.len()))
            } else {
                mnist::parse_labels(p, &b).map(|t| (t.shape().iter().product::<usize>(), t.len()))
            }
        });
        match r {
            Err(_) => panic!("case {case}: the IDX parser panicked on {b:?}"),
            Ok(Ok((n, len))) => assert_eq!(n, len, "case {case}"),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn corrupted_checkpoints_are_refused_or_restore_exactly_what_was_saved() {
    use aotgrad::checkpoint::{self, Progress};
    use aotgrad::nn::{Linear, ReLU, Sequential};
    let trainer = || {
        Trainer::new(
            Sequential::new()
                .push(Linear::new(3, 4))
                .push(ReLU)
                .push(Linear::new(4, 2)),
            Loss::cross_entropy(),
            Optimizer::adam(0.01),
        )
        .input(DType::F32, &[3])
        .target(DType::I64, &[])
    };
    let mut step = trainer().seed(1).compile(&Backend::Interpreter).unwrap();
    let batch = Batch {
        x: Tensor::from_f32(&[0.1, 0.2, 0.3, -1.0, 0.5, 2.0], &[2, 3]).unwrap(),
        y: Tensor::from_i64(&[0, 1], &[2]).unwrap(),
    };
    step.run(&batch).unwrap();
    let dir = std::env::temp_dir().join(format!("aotgrad-fuzz-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.safetensors");
    checkpoint::save(&step, &good, &Progress { epoch: 1, steps: 1 }).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let saved = (step.state_dict(), step.optimizer_state(), step.lr());
    let mut target = trainer().seed(2).compile(&Backend::Interpreter).unwrap();
    let before = (target.state_dict(), target.optimizer_state(), target.lr());
    let bad = dir.join("bad.safetensors");
    let mut rng = Rng(0x5EED_0002);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..cases(3000) {
        let b = mutate(&mut rng, &bytes);
        if b == bytes {
            continue;
        }
        std::fs::write(&bad, &b).unwrap();
        match checkpoint::load(&mut target, &bad) {
            Ok(_) => {
                // Only a change that means nothing (JSON whitespace) may load, and then
                // it restores exactly what was saved.
                let now = (target.state_dict(), target.optimizer_state(), target.lr());
                assert!(
                    now == saved,
                    "case {case}: a corrupted checkpoint loaded other values"
                );
                loaded += 1;
                checkpoint::load(&mut target, &good).unwrap();
                target.load_state_dict(&before.0).unwrap();
                target.load_optimizer_state(&before.1).unwrap();
                target.set_lr(before.2);
            }
            Err(_) => {
                let now = (target.state_dict(), target.optimizer_state(), target.lr());
                assert!(
                    now == before,
                    "case {case}: a refused load changed the model"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 2500, "{refused} refused, {loaded} loaded");
    std::fs::remove_dir_all(&dir).ok();
}

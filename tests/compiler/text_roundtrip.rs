//! Property: any well-formed graph prints and parses back to an identical graph, and
//! printing is a fixed point (byte-stable).

use aotgrad::ir::{
    AllReduceOp, ArgReduceOp, BinaryOp, ConstValue, Data, Distribution, Op, ReduceOp, Scalar,
    SliceAxis, UnaryOp,
};
use aotgrad::prelude::*;
use aotgrad::text;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// One random construction step; invalid combinations are skipped by the builder.
#[derive(Debug, Clone)]
enum Step {
    Leaf {
        kind: u8,
        dtype: u8,
        dims: Vec<u8>,
        name: String,
    },
    Const {
        dtype: u8,
        dims: Vec<u8>,
        bits: Vec<u64>,
        splat: bool,
    },
    Unary(u8, usize),
    Binary(u8, usize, usize),
    Where(usize, usize, usize),
    Cast(u8, usize),
    Reduce(u8, usize, u8, bool),
    Arg(bool, usize, u8, bool),
    TopK(usize, u8, u8, bool),
    AllReduce(usize, bool),
    Reshape(usize),
    Expand(usize, u8),
    Permute(usize, u64),
    Slice(usize, u8, u8, u8),
    Pad(usize, u8, u8, u64),
    Concat(usize, usize, u8),
    MatMul(usize, usize, bool, bool),
    Gather(usize, usize, u8),
    Iota(Vec<u8>, u8, u8),
    Random(bool, usize, Vec<u8>, bool),
    Output(usize, String),
    Update(usize, usize),
}

fn dims_of(d: &[u8]) -> Shape {
    Shape(
        d.iter()
            .map(|&x| {
                if x >= 5 {
                    Dim::sym(["N", "M"][x as usize % 2])
                } else {
                    Dim::Known(x as usize)
                }
            })
            .collect(),
    )
}

fn scalar(dt: DType, bits: u64) -> Scalar {
    match dt {
        DType::Bool => Scalar::Bool(bits & 1 == 1),
        DType::U8 => Scalar::U8(bits as u8),
        DType::I32 => Scalar::I32(bits as i32),
        DType::I64 => Scalar::I64(bits as i64),
        DType::F32 => Scalar::F32(f32::from_bits(bits as u32)),
        DType::F64 => Scalar::F64(f64::from_bits(bits)),
    }
}

fn step() -> impl Strategy<Value = Step> {
    let name = "[a-z\"\\\\. ]{1,6}";
    let idx = 0usize..64;
    prop_oneof![
        (0u8..3, 0u8..6, prop::collection::vec(0u8..7, 0..4), name).prop_map(
            |(kind, dtype, dims, name)| Step::Leaf {
                kind,
                dtype,
                dims,
                name
            }
        ),
        (
            0u8..6,
            prop::collection::vec(0u8..7, 0..3),
            prop::collection::vec(any::<u64>(), 0..30),
            any::<bool>()
        )
            .prop_map(|(dtype, dims, bits, splat)| Step::Const {
                dtype,
                dims,
                bits,
                splat
            }),
        (0u8..14, idx.clone()).prop_map(|(o, a)| Step::Unary(o, a)),
        (0u8..15, idx.clone(), idx.clone()).prop_map(|(o, a, b)| Step::Binary(o, a, b)),
        (idx.clone(), idx.clone(), idx.clone()).prop_map(|(a, b, c)| Step::Where(a, b, c)),
        (0u8..6, idx.clone()).prop_map(|(d, a)| Step::Cast(d, a)),
        (0u8..4, idx.clone(), any::<u8>(), any::<bool>())
            .prop_map(|(o, a, m, k)| Step::Reduce(o, a, m, k)),
        (any::<bool>(), idx.clone(), 0u8..4, any::<bool>())
            .prop_map(|(o, a, x, k)| Step::Arg(o, a, x, k)),
        (idx.clone(), 0u8..4, 0u8..4, any::<bool>())
            .prop_map(|(a, x, k, l)| Step::TopK(a, x, k, l)),
        (idx.clone(), any::<bool>()).prop_map(|(a, m)| Step::AllReduce(a, m)),
        idx.clone().prop_map(Step::Reshape),
        (idx.clone(), 1u8..4).prop_map(|(a, n)| Step::Expand(a, n)),
        (idx.clone(), any::<u64>()).prop_map(|(a, s)| Step::Permute(a, s)),
        (idx.clone(), 0u8..4, 0u8..3, 1u8..3).prop_map(|(a, x, s, st)| Step::Slice(a, x, s, st)),
        (idx.clone(), 0u8..3, 0u8..3, any::<u64>()).prop_map(|(a, l, h, v)| Step::Pad(a, l, h, v)),
        (idx.clone(), idx.clone(), 0u8..4).prop_map(|(a, b, x)| Step::Concat(a, b, x)),
        (idx.clone(), idx.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(a, b, x, y)| Step::MatMul(a, b, x, y)),
        (idx.clone(), idx.clone(), 0u8..4).prop_map(|(a, b, x)| Step::Gather(a, b, x)),
        (prop::collection::vec(0u8..7, 1..4), 0u8..3, 1u8..6)
            .prop_map(|(d, x, t)| Step::Iota(d, x, t)),
        (
            any::<bool>(),
            idx.clone(),
            prop::collection::vec(0u8..7, 0..3),
            any::<bool>()
        )
            .prop_map(|(n, k, d, f)| Step::Random(n, k, d, f)),
        (idx.clone(), "[a-z]{1,4}").prop_map(|(a, n)| Step::Output(a, n)),
        (idx.clone(), idx).prop_map(|(a, b)| Step::Update(a, b)),
    ]
}

fn build(steps: &[Step]) -> Graph {
    let mut g = Graph::new("random");
    let pick =
        |g: &Graph, i: usize| (!g.is_empty()).then(|| aotgrad::ir::NodeId((i % g.len()) as u32));
    for s in steps {
        let n = |i| pick(&g, i);
        let ty = |g: &Graph, i| g.ty(pick(g, i).unwrap()).clone();
        let _ = match s.clone() {
            Step::Leaf {
                kind,
                dtype,
                dims,
                name,
            } => {
                let t = TensorType::new(DType::ALL[dtype as usize], dims_of(&dims));
                match kind {
                    0 => g.input(&name, t),
                    1 => g.param(&name, t),
                    _ => g.state(&name, t),
                }
                .map(|_| ())
            }
            Step::Const {
                dtype,
                dims,
                bits,
                splat,
            } => {
                let dt = DType::ALL[dtype as usize];
                let shape = dims_of(&dims);
                let value = match shape.as_known() {
                    Some(k) if !splat => {
                        let n: usize = k.iter().product();
                        ConstValue::Dense(Data::from_scalars(
                            dt,
                            (0..n).map(|i| scalar(dt, bits.get(i).copied().unwrap_or(i as u64))),
                        ))
                    }
                    _ => ConstValue::Splat(scalar(dt, bits.first().copied().unwrap_or(0))),
                };
                g.add(
                    Op::Const {
                        value,
                        ty: TensorType::new(dt, shape),
                    },
                    &[],
                )
                .map(|_| ())
            }
            Step::Unary(o, a) => match n(a) {
                Some(a) => g
                    .add(
                        Op::Unary(UnaryOp::ALL[o as usize % UnaryOp::ALL.len()]),
                        &[a],
                    )
                    .map(|_| ()),
                None => Ok(()),
            },
            Step::Binary(o, a, b) => match (n(a), n(b)) {
                (Some(a), Some(b)) => g
                    .add(
                        Op::Binary(BinaryOp::ALL[o as usize % BinaryOp::ALL.len()]),
                        &[a, b],
                    )
                    .map(|_| ()),
                _ => Ok(()),
            },
            Step::Where(a, b, c) => match (n(a), n(b), n(c)) {
                (Some(a), Some(b), Some(c)) => g.add(Op::Where, &[a, b, c]).map(|_| ()),
                _ => Ok(()),
            },
            Step::Cast(d, a) => match n(a) {
                Some(a) => g.add(Op::Cast(DType::ALL[d as usize]), &[a]).map(|_| ()),
                None => Ok(()),
            },
            Step::Reduce(o, a, mask, keepdim) => match n(a) {
                Some(a) => {
                    let r = ty(&g, a.index()).rank();
                    let axes = (0..r).filter(|i| mask >> i & 1 == 1).collect();
                    g.add(
                        Op::Reduce {
                            op: ReduceOp::ALL[o as usize],
                            axes,
                            keepdim,
                        },
                        &[a],
                    )
                    .map(|_| ())
                }
                None => Ok(()),
            },
            Step::Arg(max, a, axis, keepdim) => match n(a) {
                Some(a) => {
                    let op = if max {
                        ArgReduceOp::ArgMax
                    } else {
                        ArgReduceOp::ArgMin
                    };
                    g.add(
                        Op::ArgReduce {
                            op,
                            axis: axis as usize,
                            keepdim,
                        },
                        &[a],
                    )
                    .map(|_| ())
                }
                None => Ok(()),
            },
            Step::TopK(a, axis, k, largest) => match n(a) {
                Some(a) => g
                    .add(
                        Op::TopK {
                            axis: axis as usize,
                            k: k as usize,
                            largest,
                        },
                        &[a],
                    )
                    .map(|_| ()),
                None => Ok(()),
            },
            Step::AllReduce(a, mean) => match n(a) {
                Some(a) => g
                    .add(
                        Op::AllReduce {
                            op: if mean {
                                AllReduceOp::Mean
                            } else {
                                AllReduceOp::Sum
                            },
                        },
                        &[a],
                    )
                    .map(|_| ()),
                None => Ok(()),
            },
            Step::Reshape(a) => match n(a) {
                Some(a) => {
                    let mut s = ty(&g, a.index()).shape;
                    s.0.reverse();
                    g.add(Op::Reshape(s), &[a]).map(|_| ())
                }
                None => Ok(()),
            },
            Step::Expand(a, k) => match n(a) {
                Some(a) => {
                    let s = Shape(
                        ty(&g, a.index())
                            .shape
                            .0
                            .iter()
                            .map(|d| {
                                if d.is_one() {
                                    Dim::Known(k as usize)
                                } else {
                                    d.clone()
                                }
                            })
                            .collect(),
                    );
                    g.add(Op::Expand(s), &[a]).map(|_| ())
                }
                None => Ok(()),
            },
            Step::Permute(a, seed) => match n(a) {
                Some(a) => {
                    let r = ty(&g, a.index()).rank();
                    let mut p: Vec<usize> = (0..r).collect();
                    if r > 1 {
                        p.rotate_left(seed as usize % r);
                    }
                    g.add(Op::Permute(p), &[a]).map(|_| ())
                }
                None => Ok(()),
            },
            Step::Slice(a, axis, start, step) => match n(a) {
                Some(a) => {
                    let t = ty(&g, a.index());
                    let ranges = t
                        .shape
                        .0
                        .iter()
                        .enumerate()
                        .map(|(i, d)| match d.known() {
                            Some(size) if i == axis as usize => SliceAxis::Range {
                                start: (start as usize).min(size),
                                stop: size,
                                step: step as usize,
                            },
                            _ => SliceAxis::Full,
                        })
                        .collect();
                    g.add(Op::Slice(ranges), &[a]).map(|_| ())
                }
                None => Ok(()),
            },
            Step::Pad(a, lo, hi, bits) => match n(a) {
                Some(a) => {
                    let t = ty(&g, a.index());
                    let pads = t
                        .shape
                        .0
                        .iter()
                        .map(|d| {
                            if d.known().is_some() {
                                (lo as usize, hi as usize)
                            } else {
                                (0, 0)
                            }
                        })
                        .collect();
                    g.add(
                        Op::Pad {
                            pads,
                            value: scalar(t.dtype, bits),
                        },
                        &[a],
                    )
                    .map(|_| ())
                }
                None => Ok(()),
            },
            Step::Concat(a, b, axis) => match (n(a), n(b)) {
                (Some(a), Some(b)) => g
                    .add(
                        Op::Concat {
                            axis: axis as usize,
                        },
                        &[a, b, a],
                    )
                    .map(|_| ()),
                _ => Ok(()),
            },
            Step::MatMul(a, b, ta, tb) => match (n(a), n(b)) {
                (Some(a), Some(b)) => g
                    .add(
                        Op::MatMul {
                            trans_a: ta,
                            trans_b: tb,
                        },
                        &[a, b],
                    )
                    .map(|_| ()),
                _ => Ok(()),
            },
            Step::Gather(a, b, axis) => match (n(a), n(b)) {
                (Some(a), Some(b)) => g
                    .add(
                        Op::Gather {
                            axis: axis as usize,
                        },
                        &[a, b],
                    )
                    .map(|_| ()),
                _ => Ok(()),
            },
            Step::Iota(d, axis, dt) => g
                .add(
                    Op::Iota {
                        shape: dims_of(&d),
                        axis: axis as usize,
                        dtype: DType::ALL[dt as usize],
                    },
                    &[],
                )
                .map(|_| ()),
            Step::Random(normal, k, d, f64_) => match n(k) {
                Some(k) => {
                    let dist = if normal {
                        Distribution::Normal
                    } else {
                        Distribution::Uniform
                    };
                    let dtype = if f64_ { DType::F64 } else { DType::F32 };
                    g.add(
                        Op::Random {
                            dist,
                            shape: dims_of(&d),
                            dtype,
                        },
                        &[k],
                    )
                    .map(|_| ())
                }
                None => Ok(()),
            },
            Step::Output(a, name) => match n(a) {
                Some(a) => g.set_output(&name, a),
                None => Ok(()),
            },
            Step::Update(t, v) => match (n(t), n(v)) {
                (Some(t), Some(v)) => g.set_update(t, v),
                _ => Ok(()),
            },
        };
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn print_parse_round_trip(steps in prop::collection::vec(step(), 1..60)) {
        let g = build(&steps);
        aotgrad::verify(&g).unwrap();
        let printed = text::print(&g);
        let parsed = text::parse(&printed).map_err(|e| TestCaseError::fail(format!("{e}\n{printed}")))?;
        prop_assert_eq!(&parsed, &g);
        prop_assert_eq!(text::print(&parsed), printed);
    }
}

#[test]
fn generator_makes_rich_graphs() {
    // Guard against a generator that silently builds only leaves.
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = prop::collection::vec(step(), 40..60);
    let mut ops = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let steps = strat.new_tree(&mut runner).unwrap().current();
        for (_, n) in build(&steps).nodes() {
            ops.insert(n.op.name());
        }
    }
    for must in [
        "const",
        "matmul",
        "sum",
        "reshape",
        "expand",
        "permute",
        "slice",
        "pad",
        "concat",
        "where",
        "cast",
        "iota",
        "random_normal",
        "gather",
    ] {
        assert!(
            ops.contains(must),
            "generator never produced `{must}`: {ops:?}"
        );
    }
}

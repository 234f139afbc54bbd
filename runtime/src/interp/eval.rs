//! Reference semantics: one arm per primitive.

use aotgrad_ir::{
    ArgReduceOp, BinaryOp, ConstValue, Data, Distribution, Graph, NodeId, Op, ReduceOp, Scalar,
    SliceAxis, UnaryOp,
};

use super::layout::{for_each_index, strides, take, take_or};
use super::num::{Float, Num, float_map, num_map};
use super::{RunError, SymbolEnv, rng};
use crate::Tensor;

pub(super) fn eval(
    g: &Graph,
    id: NodeId,
    xs: &[&Tensor],
    env: &SymbolEnv,
) -> Result<Tensor, RunError> {
    let node = g.node(id);
    let shape = node.ty.shape.bind(env).ok_or_else(|| {
        let sym = node
            .ty
            .shape
            .dims()
            .iter()
            .find(|d| d.known().is_none())
            .map(|d| d.to_string())
            .unwrap_or_default();
        RunError::Unbound { sym, node: id }
    })?;
    let n: usize = shape.iter().product();
    let data = match &node.op {
        Op::Input { .. } | Op::Param { .. } | Op::State { .. } => {
            unreachable!("leaves are fed by run()")
        }
        Op::Const {
            value: ConstValue::Splat(s),
            ..
        } => Data::filled(*s, n),
        Op::Const {
            value: ConstValue::Dense(d),
            ..
        } => d.clone(),
        Op::Unary(u) => unary(*u, xs[0].data()),
        Op::Binary(b) => binary(*b, xs[0].data(), xs[1].data()),
        Op::Where => select(xs[0].data(), xs[1].data(), xs[2].data()),
        Op::Cast(d) => xs[0].data().cast(*d),
        Op::Reduce { op, axes, .. } => reduce(*op, xs[0], axes),
        Op::ArgReduce { op, axis, .. } => arg_reduce(*op, xs[0], *axis),
        Op::TopK { axis, k, largest } => top_k(xs[0], *axis, *k, *largest, id)?,
        // A group of one: the sum and the mean over one rank are the value itself.
        // `interp::run_in_group` and the CPU's library kernel reduce over a real group
        // before this is reached.
        Op::AllReduce { .. } => xs[0].data().clone(),
        Op::Reshape(_) => xs[0].data().clone(),
        Op::Expand(_) => {
            let (src, st) = (xs[0].shape(), strides(xs[0].shape()));
            let mut idx = Vec::with_capacity(n);
            for_each_index(&shape, |o, _| {
                idx.push(
                    o.iter()
                        .zip(src)
                        .zip(&st)
                        .map(|((&i, &s), &k)| if s == 1 { 0 } else { i * k })
                        .sum(),
                );
            });
            take(xs[0].data(), &idx)
        }
        Op::Permute(perm) => {
            let st = strides(xs[0].shape());
            let mut idx = Vec::with_capacity(n);
            for_each_index(&shape, |o, _| {
                idx.push(o.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum())
            });
            take(xs[0].data(), &idx)
        }
        Op::Slice(ranges) => {
            let st = strides(xs[0].shape());
            let mut idx = Vec::with_capacity(n);
            for_each_index(&shape, |o, _| {
                idx.push(
                    o.iter()
                        .zip(ranges)
                        .zip(&st)
                        .map(|((&i, r), &k)| match r {
                            SliceAxis::Full => i * k,
                            SliceAxis::Range { start, step, .. } => (start + i * step) * k,
                        })
                        .sum(),
                );
            });
            take(xs[0].data(), &idx)
        }
        Op::Pad { pads, value } => {
            let (src, st) = (xs[0].shape(), strides(xs[0].shape()));
            let mut idx = Vec::with_capacity(n);
            for_each_index(&shape, |o, _| {
                let mut flat = Some(0);
                for (d, (&i, &(lo, _))) in o.iter().zip(pads).enumerate() {
                    flat = match (flat, i.checked_sub(lo)) {
                        (Some(f), Some(j)) if j < src[d] => Some(f + j * st[d]),
                        _ => None,
                    };
                }
                idx.push(flat);
            });
            take_or(xs[0].data(), &idx, *value)
        }
        Op::Concat { axis } => {
            // For each output element find the operand covering its index on `axis`.
            let mut offsets = Vec::with_capacity(xs.len());
            let mut acc = 0;
            for x in xs {
                offsets.push(acc);
                acc += x.shape()[*axis];
            }
            let sts: Vec<Vec<usize>> = xs.iter().map(|x| strides(x.shape())).collect();
            let scalars: Vec<Scalar> = {
                let mut out = Vec::with_capacity(n);
                for_each_index(&shape, |o, _| {
                    let k = (0..xs.len())
                        .find(|&k| o[*axis] < offsets[k] + xs[k].shape()[*axis])
                        .expect("the output axis is the sum of the operands' axes");
                    let flat: usize = o
                        .iter()
                        .enumerate()
                        .map(|(d, &i)| {
                            if d == *axis {
                                (i - offsets[k]) * sts[k][d]
                            } else {
                                i * sts[k][d]
                            }
                        })
                        .sum();
                    out.push(xs[k].data().get(flat));
                });
                out
            };
            Data::from_scalars(node.ty.dtype, scalars)
        }
        Op::MatMul { trans_a, trans_b } => matmul(xs[0], xs[1], *trans_a, *trans_b, &shape),
        Op::Gather { axis } => {
            let (x, index) = (xs[0], xs[1]);
            let st = strides(x.shape());
            let size = x.shape()[*axis];
            let mut idx = Vec::with_capacity(n);
            let mut bad = None;
            let ivals = index_values(index);
            for_each_index(index.shape(), |o, flat| {
                let j = ivals[flat];
                if j < 0 || j as usize >= size {
                    bad.get_or_insert(j);
                    idx.push(0);
                    return;
                }
                idx.push(
                    o.iter()
                        .enumerate()
                        .map(|(d, &i)| {
                            if d == *axis {
                                j as usize * st[d]
                            } else {
                                i * st[d]
                            }
                        })
                        .sum(),
                );
            });
            if let Some(index) = bad {
                return Err(RunError::IndexOutOfRange {
                    node: id,
                    op: "gather",
                    index,
                    size,
                });
            }
            take(x.data(), &idx)
        }
        Op::ScatterAdd { axis } => scatter_add(id, xs[0], xs[1], xs[2], *axis)?,
        Op::Unfold(w) => take(xs[0].data(), &window_sources(w, xs[0].shape(), &shape)),
        Op::Fold { window, .. } => {
            // Each input element adds into the position unfold read it from; walking the
            // input in row-major order adds an output's terms by increasing (i, j).
            let targets = window_sources(window, &shape, xs[0].shape());
            fn go<T: Num>(src: &[T], targets: &[usize], n: usize) -> Vec<T> {
                let mut out = vec![T::zero(); n];
                for (&s, &t) in src.iter().zip(targets) {
                    out[t] = out[t].add(s);
                }
                out
            }
            num_map!(xs[0].data(), v => go(v, &targets, n))
        }
        Op::Iota { axis, .. } => {
            let mut vals = Vec::with_capacity(n);
            for_each_index(&shape, |o, _| vals.push(Scalar::I64(o[*axis] as i64)));
            Data::from_scalars(node.ty.dtype, vals)
        }
        Op::Random { dist, .. } => {
            let key = index_values(xs[0])[0];
            match (dist, node.ty.dtype) {
                (Distribution::Uniform, aotgrad_ir::DType::F64) => {
                    Data::F64((0..n).map(|i| rng::uniform_f64(key, i)).collect())
                }
                (Distribution::Normal, aotgrad_ir::DType::F64) => {
                    Data::F64((0..n).map(|i| rng::normal_f64(key, i)).collect())
                }
                (Distribution::Uniform, _) => {
                    Data::F32((0..n).map(|i| rng::uniform_f32(key, i)).collect())
                }
                (Distribution::Normal, _) => {
                    Data::F32((0..n).map(|i| rng::normal_f32(key, i)).collect())
                }
            }
        }
    };
    Ok(Tensor::new(&shape, data).expect("every rule produces its node's element count"))
}

/// For every element of a window tensor `[.., kh, kw, OH, OW]`, the flat index of the
/// element of `image` (`[.., H, W]`) it reads: `[.., oh*sh + i*dh, ow*sw + j*dw]`.
fn window_sources(w: &aotgrad_ir::Window, image: &[usize], windows: &[usize]) -> Vec<usize> {
    let r = windows.len();
    let (h, wd) = (image[image.len() - 2], image[image.len() - 1]);
    let mut idx = Vec::with_capacity(windows.iter().product());
    for_each_index(windows, |o, _| {
        let plane: usize = o[..r - 4]
            .iter()
            .zip(image)
            .fold(0, |acc, (&i, &d)| acc * d + i);
        let row = o[r - 2] * w.stride[0] + o[r - 4] * w.dilation[0];
        let col = o[r - 1] * w.stride[1] + o[r - 3] * w.dilation[1];
        idx.push((plane * h + row) * wd + col);
    });
    idx
}

fn index_values(t: &Tensor) -> Vec<i64> {
    match t.data() {
        Data::I64(v) => v.clone(),
        Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
        d => d.to_f64_vec().iter().map(|&x| x as i64).collect(),
    }
}

fn unary(u: UnaryOp, d: &Data) -> Data {
    fn f<T: Float>(v: &[T], g: impl Fn(T) -> T) -> Vec<T> {
        v.iter().map(|&x| g(x)).collect()
    }
    fn m<T: Num>(v: &[T], g: impl Fn(T) -> T) -> Vec<T> {
        v.iter().map(|&x| g(x)).collect()
    }
    match u {
        UnaryOp::Neg => num_map!(d, v => m(v, Num::neg)),
        UnaryOp::Abs => num_map!(d, v => m(v, Num::abs)),
        UnaryOp::Sign => num_map!(d, v => m(v, Num::sign)),
        UnaryOp::Exp => float_map!(d, v => f(v, Float::exp)),
        UnaryOp::Log => float_map!(d, v => f(v, Float::ln)),
        UnaryOp::Sqrt => float_map!(d, v => f(v, Float::sqrt)),
        UnaryOp::Recip => float_map!(d, v => f(v, Float::recip)),
        UnaryOp::Sin => float_map!(d, v => f(v, Float::sin)),
        UnaryOp::Cos => float_map!(d, v => f(v, Float::cos)),
        UnaryOp::Tanh => float_map!(d, v => f(v, Float::tanh)),
        UnaryOp::Floor => float_map!(d, v => f(v, Float::floor)),
        UnaryOp::Ceil => float_map!(d, v => f(v, Float::ceil)),
        UnaryOp::Trunc => float_map!(d, v => f(v, Float::trunc)),
        UnaryOp::Log1p => float_map!(d, v => f(v, Float::ln_1p)),
        UnaryOp::Expm1 => float_map!(d, v => f(v, Float::exp_m1)),
        UnaryOp::Erf => float_map!(d, v => f(v, Float::erf)),
        UnaryOp::Not => match d {
            Data::Bool(v) => Data::Bool(v.iter().map(|b| !b).collect()),
            _ => unreachable!("verified: not takes bool"),
        },
        UnaryOp::StopGradient => d.clone(),
    }
}

// The comparison macro is also instantiated for bool; the verifier only lets eq/ne
// reach it, so the bool order comparisons clippy flags are never executed.
#[allow(clippy::bool_comparison)]
fn binary(b: BinaryOp, x: &Data, y: &Data) -> Data {
    fn zip<T: Copy, U>(a: &[T], b: &[T], f: impl Fn(T, T) -> U) -> Vec<U> {
        a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect()
    }
    macro_rules! num2 {
        ($f:expr) => {
            match (x, y) {
                (Data::U8(a), Data::U8(b)) => Data::U8(zip(a, b, $f)),
                (Data::I32(a), Data::I32(b)) => Data::I32(zip(a, b, $f)),
                (Data::I64(a), Data::I64(b)) => Data::I64(zip(a, b, $f)),
                (Data::F32(a), Data::F32(b)) => Data::F32(zip(a, b, $f)),
                (Data::F64(a), Data::F64(b)) => Data::F64(zip(a, b, $f)),
                _ => unreachable!("verified: numeric operands of one dtype"),
            }
        };
    }
    macro_rules! float2 {
        ($f:expr) => {
            match (x, y) {
                (Data::F32(a), Data::F32(b)) => Data::F32(zip(a, b, $f)),
                (Data::F64(a), Data::F64(b)) => Data::F64(zip(a, b, $f)),
                _ => unreachable!("verified: float operands of one dtype"),
            }
        };
    }
    macro_rules! cmp {
        ($f:expr) => {
            Data::Bool(match (x, y) {
                (Data::Bool(a), Data::Bool(b)) => zip(a, b, $f),
                (Data::U8(a), Data::U8(b)) => zip(a, b, $f),
                (Data::I32(a), Data::I32(b)) => zip(a, b, $f),
                (Data::I64(a), Data::I64(b)) => zip(a, b, $f),
                (Data::F32(a), Data::F32(b)) => zip(a, b, $f),
                (Data::F64(a), Data::F64(b)) => zip(a, b, $f),
                _ => unreachable!("verified: operands of one dtype"),
            })
        };
    }
    match b {
        BinaryOp::Add => num2!(Num::add),
        BinaryOp::Sub => num2!(Num::sub),
        BinaryOp::Mul => num2!(Num::mul),
        BinaryOp::Maximum => num2!(Num::maxi),
        BinaryOp::Minimum => num2!(Num::mini),
        BinaryOp::Div => float2!(Float::div),
        BinaryOp::Pow => float2!(Float::powf),
        BinaryOp::Lt => cmp!(|p, q| p < q),
        BinaryOp::Le => cmp!(|p, q| p <= q),
        BinaryOp::Gt => cmp!(|p, q| p > q),
        BinaryOp::Ge => cmp!(|p, q| p >= q),
        BinaryOp::Eq => cmp!(|p, q| p == q),
        BinaryOp::Ne => cmp!(|p, q| p != q),
        BinaryOp::And | BinaryOp::Or => match (x, y) {
            (Data::Bool(a), Data::Bool(c)) => {
                Data::Bool(zip(
                    a,
                    c,
                    |p, q| if b == BinaryOp::And { p && q } else { p || q },
                ))
            }
            _ => unreachable!("verified: and/or take bools"),
        },
    }
}

fn select(c: &Data, a: &Data, b: &Data) -> Data {
    let Data::Bool(c) = c else {
        unreachable!("verified: bool condition")
    };
    let pick = |i: usize| if c[i] { a.get(i) } else { b.get(i) };
    Data::from_scalars(a.dtype(), (0..c.len()).map(pick))
}

/// For each input element, the flat index of the output element it reduces into.
fn reduce_targets(shape: &[usize], axes: &[usize]) -> (Vec<usize>, usize) {
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
    let kshape: Vec<usize> = kept.iter().map(|&d| shape[d]).collect();
    let kst = strides(&kshape);
    let mut out = Vec::with_capacity(shape.iter().product());
    for_each_index(shape, |o, _| {
        out.push(kept.iter().zip(&kst).map(|(&d, &s)| o[d] * s).sum())
    });
    (out, kshape.iter().product())
}

fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize]) -> Data {
    let (targets, n) = reduce_targets(x.shape(), axes);
    fn go<T: Num>(v: &[T], targets: &[usize], n: usize, op: ReduceOp) -> Vec<T> {
        let init = match op {
            ReduceOp::Sum => T::zero(),
            ReduceOp::Prod => T::one(),
            // Max/min of an empty slice has no value; the first element seeds it below.
            ReduceOp::Max | ReduceOp::Min => T::zero(),
        };
        let mut acc = vec![init; n];
        let mut seen = vec![false; n];
        for (&x, &t) in v.iter().zip(targets) {
            acc[t] = match op {
                ReduceOp::Sum => acc[t].add(x),
                ReduceOp::Prod => acc[t].mul(x),
                ReduceOp::Max if seen[t] => acc[t].maxi(x),
                ReduceOp::Min if seen[t] => acc[t].mini(x),
                ReduceOp::Max | ReduceOp::Min => x,
            };
            seen[t] = true;
        }
        acc
    }
    match x.data() {
        Data::Bool(v) => {
            // Only max/min reach here for bool (sum/prod are cast to i64 by the DSL
            // and rejected by the verifier otherwise).
            let (targets, n) = (targets, n);
            let mut acc: Vec<Option<bool>> = vec![None; n];
            for (&b, &t) in v.iter().zip(&targets) {
                acc[t] = Some(match (acc[t], op) {
                    (None, _) => b,
                    (Some(a), ReduceOp::Max) => a || b,
                    (Some(a), _) => a && b,
                });
            }
            Data::Bool(acc.into_iter().map(|a| a.unwrap_or(false)).collect())
        }
        d => num_map!(d, v => go(v, &targets, n, op)),
    }
}

fn arg_reduce(op: ArgReduceOp, x: &Tensor, axis: usize) -> Data {
    let (targets, n) = reduce_targets(x.shape(), &[axis]);
    let st = strides(x.shape());
    let vals = x.to_f64_vec();
    let mut best: Vec<Option<(f64, i64)>> = vec![None; n];
    for (i, (&v, &t)) in vals.iter().zip(&targets).enumerate() {
        let pos = ((i / st[axis]) % x.shape()[axis]) as i64;
        // The first extremum wins; NaN counts as the extremum, as in PyTorch.
        let better = match best[t] {
            None => true,
            Some((b, _)) if b.is_nan() => false,
            Some((b, _)) => {
                v.is_nan()
                    || if op == ArgReduceOp::ArgMax {
                        v > b
                    } else {
                        v < b
                    }
            }
        };
        if better {
            best[t] = Some((v, pos));
        }
    }
    Data::I64(best.into_iter().map(|b| b.map_or(0, |(_, p)| p)).collect())
}

/// `Op::TopK`: per row along `axis`, the positions of its elements in the op's
/// total order (NaN above every number; ties by lower position), first `k` kept.
fn top_k(x: &Tensor, axis: usize, k: usize, largest: bool, node: NodeId) -> Result<Data, RunError> {
    use std::cmp::Ordering;
    let shape = x.shape();
    let (outer, len, inner): (usize, usize, usize) = (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    );
    if k > len {
        // A symbolic axis bound shorter than k.
        return Err(RunError::IndexOutOfRange {
            node,
            op: "topk",
            index: k as i64,
            size: len,
        });
    }
    // Sorting the native values (not f64) keeps i64 above 2^53 exact.
    fn rows<T: Copy + PartialOrd>(
        v: &[T],
        nan: impl Fn(T) -> bool,
        (outer, len, inner, k, largest): (usize, usize, usize, usize, bool),
    ) -> Vec<i64> {
        let mut out = vec![0i64; outer * k * inner];
        let mut pos: Vec<usize> = Vec::with_capacity(len);
        for o in 0..outer {
            for i in 0..inner {
                let at = |p: usize| v[(o * len + p) * inner + i];
                pos.clear();
                pos.extend(0..len);
                // `sort_by` is stable: equal values keep position order.
                pos.sort_by(|&p, &q| {
                    let (a, b) = (at(p), at(q));
                    let ord = match (nan(a), nan(b)) {
                        (true, true) => Ordering::Equal,
                        (true, false) => Ordering::Greater,
                        (false, true) => Ordering::Less,
                        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                    };
                    if largest { ord.reverse() } else { ord }
                });
                for (r, &p) in pos[..k].iter().enumerate() {
                    out[(o * k + r) * inner + i] = p as i64;
                }
            }
        }
        out
    }
    let dims = (outer, len, inner, k, largest);
    Ok(Data::I64(match x.data() {
        Data::F32(v) => rows(v, |a: f32| a.is_nan(), dims),
        Data::F64(v) => rows(v, |a: f64| a.is_nan(), dims),
        Data::I64(v) => rows(v, |_| false, dims),
        Data::I32(v) => rows(v, |_| false, dims),
        Data::U8(v) => rows(v, |_| false, dims),
        Data::Bool(_) => unreachable!("verified: topk takes numbers"),
    }))
}

/// Problem size of one batched matmul.
#[derive(Clone, Copy)]
struct Gemm {
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn matmul(a: &Tensor, b: &Tensor, ta: bool, tb: bool, out: &[usize]) -> Data {
    let r = out.len();
    let k = if ta {
        a.shape()[r - 2]
    } else {
        a.shape()[r - 1]
    };
    let p = Gemm {
        batch: out[..r - 2].iter().product(),
        m: out[r - 2],
        n: out[r - 1],
        k,
        ta,
        tb,
    };
    fn go<T: Num>(x: &[T], y: &[T], p: Gemm) -> Vec<T> {
        let Gemm {
            batch,
            m,
            n,
            k,
            ta,
            tb,
        } = p;
        // Operands are packed to row-major A[m][k] and B[k][n]; the i-q-j loop then adds
        // into each out[i][j] in increasing q, the same order as a dot product, so results
        // are those of the textbook definition, while the inner loop runs over contiguous
        // memory (and vectorises across j).
        let mut out = vec![T::zero(); batch * m * n];
        let mut pa = vec![T::zero(); m * k];
        let mut pb = vec![T::zero(); k * n];
        for bi in 0..batch {
            let (xo, yo) = (bi * m * k, bi * k * n);
            for i in 0..m {
                for q in 0..k {
                    pa[i * k + q] = x[xo + if ta { q * m + i } else { i * k + q }];
                }
            }
            if tb {
                for q in 0..k {
                    for j in 0..n {
                        pb[q * n + j] = y[yo + j * k + q];
                    }
                }
            } else {
                pb.copy_from_slice(&y[yo..yo + k * n]);
            }
            let o = &mut out[bi * m * n..(bi + 1) * m * n];
            for i in 0..m {
                let row = &mut o[i * n..(i + 1) * n];
                for q in 0..k {
                    let av = pa[i * k + q];
                    let brow = &pb[q * n..(q + 1) * n];
                    for (r, &bv) in row.iter_mut().zip(brow) {
                        *r = r.add(av.mul(bv));
                    }
                }
            }
        }
        out
    }
    match (a.data(), b.data()) {
        (Data::U8(x), Data::U8(y)) => Data::U8(go(x, y, p)),
        (Data::I32(x), Data::I32(y)) => Data::I32(go(x, y, p)),
        (Data::I64(x), Data::I64(y)) => Data::I64(go(x, y, p)),
        (Data::F32(x), Data::F32(y)) => Data::F32(go(x, y, p)),
        (Data::F64(x), Data::F64(y)) => Data::F64(go(x, y, p)),
        _ => unreachable!("verified: numeric matmul operands of one dtype"),
    }
}

fn scatter_add(
    id: NodeId,
    x: &Tensor,
    index: &Tensor,
    src: &Tensor,
    axis: usize,
) -> Result<Data, RunError> {
    let st = strides(x.shape());
    let size = x.shape()[axis];
    let ivals = index_values(index);
    let mut targets = Vec::with_capacity(index.len());
    let mut bad = None;
    for_each_index(index.shape(), |o, flat| {
        let j = ivals[flat];
        if j < 0 || j as usize >= size {
            bad.get_or_insert(j);
            return;
        }
        targets.push(
            o.iter()
                .enumerate()
                .map(|(d, &i)| {
                    if d == axis {
                        j as usize * st[d]
                    } else {
                        i * st[d]
                    }
                })
                .sum::<usize>(),
        );
    });
    if let Some(index) = bad {
        return Err(RunError::IndexOutOfRange {
            node: id,
            op: "scatter_add",
            index,
            size,
        });
    }
    fn go<T: Num>(base: &[T], src: &[T], targets: &[usize]) -> Vec<T> {
        let mut out = base.to_vec();
        for (&s, &t) in src.iter().zip(targets) {
            out[t] = out[t].add(s);
        }
        out
    }
    // Both operands have the same dtype (verified); match them together.
    Ok(match (x.data(), src.data()) {
        (Data::U8(a), Data::U8(s)) => Data::U8(go(a, s, &targets)),
        (Data::I32(a), Data::I32(s)) => Data::I32(go(a, s, &targets)),
        (Data::I64(a), Data::I64(s)) => Data::I64(go(a, s, &targets)),
        (Data::F32(a), Data::F32(s)) => Data::F32(go(a, s, &targets)),
        (Data::F64(a), Data::F64(s)) => Data::F64(go(a, s, &targets)),
        (Data::Bool(a), Data::Bool(s)) => {
            let mut out = a.clone();
            for (&v, &t) in s.iter().zip(&targets) {
                out[t] |= v;
            }
            Data::Bool(out)
        }
        _ => unreachable!("verified: scatter_add operands of one dtype"),
    })
}

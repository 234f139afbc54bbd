//! Derivative rules: one arm per primitive, as vector-Jacobian products.
//!
//! Contract (every rule, checked by tests that seed with random cotangents placed
//! mid-graph): given the node's cotangent `ct` (same type as the node), return for each
//! operand either `None` (no gradient flows along that edge) or its cotangent
//! contribution, with exactly the operand's type. A rule must use `ct`; one that returns
//! something independent of it (e.g. `cos(x)` for `sin`) passes a seed-of-ones test but
//! fails the random-cotangent fixtures.

use aotgrad_ir::{
    BinaryOp, Dim, Graph, GraphBuilder, Node, Op, ReduceOp, Scalar, Shape, SliceAxis, UnaryOp, Var,
};

/// Which operands gradients flow into. Integer/bool operands (conditions, indices,
/// keys) and the operands of piecewise-constant or non-differentiable ops never do.
pub fn differentiable_operands(g: &Graph, node: &Node) -> Vec<bool> {
    let n = node.inputs.len();
    let float_out = node.ty.dtype.is_float();
    match &node.op {
        Op::Input { .. }
        | Op::Param { .. }
        | Op::State { .. }
        | Op::Const { .. }
        | Op::Iota { .. } => vec![],
        // The op table says which elementwise ops carry gradient.
        Op::Unary(u) => vec![float_out && u.differentiable()],
        Op::Binary(b) => vec![float_out && b.differentiable(); 2],
        Op::Where => vec![false, float_out, float_out],
        // A cast is differentiable only between float types.
        Op::Cast(_) => vec![float_out && g.ty(node.inputs[0]).dtype.is_float()],
        Op::Reduce { .. }
        | Op::Reshape(_)
        | Op::Expand(_)
        | Op::Permute(_)
        | Op::Slice(_)
        | Op::Pad { .. }
        | Op::Concat { .. }
        | Op::MatMul { .. }
        | Op::Unfold(_)
        | Op::Fold { .. } => vec![float_out; n],
        Op::ArgReduce { .. } | Op::TopK { .. } | Op::Random { .. } => vec![false; n],
        Op::Gather { .. } => vec![float_out, false],
        Op::AllReduce { .. } => vec![float_out],
        Op::ScatterAdd { .. } => vec![float_out, false, float_out],
    }
}

/// Context for one rule: the builder over the joint graph and the forward values.
pub struct Rule<'g> {
    pub b: &'g GraphBuilder,
    /// The node's operands (forward values).
    pub xs: Vec<Var<'g>>,
    /// The node's own forward value.
    pub y: Var<'g>,
}

impl<'g> Rule<'g> {
    fn zeros(&self, like: Var<'g>) -> Var<'g> {
        like.zeros_like()
    }

    /// `where(cond, ct, 0)`.
    fn mask(&self, cond: Var<'g>, ct: Var<'g>) -> Var<'g> {
        cond.where_(ct, self.zeros(ct))
    }
}

/// A matrix product not yet built: `op(lhs) op(rhs)` with the flags.
#[derive(Debug, Clone, Copy)]
pub struct Product<'g> {
    pub lhs: Var<'g>,
    pub rhs: Var<'g>,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl<'g> Product<'g> {
    /// The product as a node of `b`.
    pub fn build(self, b: &'g GraphBuilder) -> Var<'g> {
        let op = Op::MatMul {
            trans_a: self.trans_a,
            trans_b: self.trans_b,
        };
        b.apply(op, &[self.lhs, self.rhs])
    }
}

/// `start..stop` (step 1) of `axis`, every other of `rank` axes whole.
fn along(rank: usize, axis: usize, start: usize, stop: usize) -> Op {
    let mut ranges = vec![SliceAxis::Full; rank];
    ranges[axis] = SliceAxis::Range {
        start,
        stop,
        step: 1,
    };
    Op::Slice(ranges)
}

/// The cotangents of `C = op(A) op(B)`'s two operands for `ct`, as products: `[dA, dB]`.
/// See the derivation in docs/ARCHITECTURE.md.
pub fn matmul_products<'g>(
    trans_a: bool,
    trans_b: bool,
    a: Var<'g>,
    c: Var<'g>,
    ct: Var<'g>,
) -> [Product<'g>; 2] {
    let p = |lhs, rhs, trans_a, trans_b| Product {
        lhs,
        rhs,
        trans_a,
        trans_b,
    };
    match (trans_a, trans_b) {
        (false, false) => [p(ct, c, false, true), p(a, ct, true, false)],
        (true, false) => [p(c, ct, false, true), p(a, ct, false, false)],
        (false, true) => [p(ct, c, false, false), p(ct, a, true, false)],
        (true, true) => [p(c, ct, true, true), p(ct, a, true, true)],
    }
}

/// The VJP of `node` for cotangent `ct`: one entry per operand.
pub fn vjp<'g>(node: &Node, r: &Rule<'g>, ct: Var<'g>) -> Vec<Option<Var<'g>>> {
    let b = r.b;
    let x = |i: usize| r.xs[i];
    let y = r.y;
    match &node.op {
        Op::Input { .. }
        | Op::Param { .. }
        | Op::State { .. }
        | Op::Const { .. }
        | Op::Iota { .. } => vec![],
        Op::Unary(u) => vec![match u {
            UnaryOp::Neg => Some(-ct),
            UnaryOp::Abs => Some(ct * x(0).sign()),
            UnaryOp::Exp => Some(ct * y),
            UnaryOp::Log => Some(ct / x(0)),
            UnaryOp::Sqrt => Some(ct * 0.5 / y),
            UnaryOp::Recip => Some(-(ct * y * y)),
            UnaryOp::Sin => Some(ct * x(0).cos()),
            UnaryOp::Cos => Some(-(ct * x(0).sin())),
            UnaryOp::Tanh => Some(ct * (1.0 - y * y)),
            UnaryOp::Log1p => Some(ct / (x(0) + 1.0)),
            // d/dx (exp(x) - 1) = exp(x) = y + 1.
            UnaryOp::Expm1 => Some(ct * (y + 1.0)),
            // d/dx erf(x) = 2/sqrt(pi) exp(-x^2).
            UnaryOp::Erf => Some(ct * (-x(0).square()).exp() * std::f64::consts::FRAC_2_SQRT_PI),
            UnaryOp::Sign
            | UnaryOp::Floor
            | UnaryOp::Ceil
            | UnaryOp::Trunc
            | UnaryOp::Not
            | UnaryOp::StopGradient => None,
        }],
        Op::Binary(op) => {
            let (a, c) = (x(0), x(1));
            match op {
                BinaryOp::Add => vec![Some(ct), Some(ct)],
                BinaryOp::Sub => vec![Some(ct), Some(-ct)],
                BinaryOp::Mul => vec![Some(ct * c), Some(ct * a)],
                BinaryOp::Div => vec![Some(ct / c), Some(-(ct * y / c))],
                // d(a^c)/da = c a^(c-1); d/dc = a^c ln a (PyTorch: 0 where a == 0 and c >= 0).
                BinaryOp::Pow => {
                    let da = ct * c * a.pow(c - 1.0);
                    let safe = a.equal(0.0).logical_and(c.ge(0.0));
                    let dc = safe.where_(r.zeros(ct), ct * y * a.log());
                    vec![Some(da), Some(dc)]
                }
                // Ties split the gradient in half, as PyTorch does.
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    let (wins_a, wins_c) = if *op == BinaryOp::Maximum {
                        (a.gt(c), c.gt(a))
                    } else {
                        (a.lt(c), c.lt(a))
                    };
                    let half = a.equal(c).where_(ct * 0.5, r.zeros(ct));
                    vec![Some(wins_a.where_(ct, half)), Some(wins_c.where_(ct, half))]
                }
                BinaryOp::Lt
                | BinaryOp::Le
                | BinaryOp::Gt
                | BinaryOp::Ge
                | BinaryOp::Eq
                | BinaryOp::Ne
                | BinaryOp::And
                | BinaryOp::Or => {
                    vec![None, None]
                }
            }
        }
        Op::Where => {
            let c = x(0);
            vec![None, Some(r.mask(c, ct)), Some(c.where_(r.zeros(ct), ct))]
        }
        Op::Cast(_) => vec![Some(ct.cast(x(0).dtype()))],
        Op::Reduce { op, axes, keepdim } => {
            let xs = x(0).shape();
            let kept = keep_shape(&xs, axes);
            let ct_k = if *keepdim {
                ct
            } else {
                ct.reshape_shape(kept.clone())
            };
            let ct_b = ct_k.broadcast_to(&xs);
            vec![Some(match op {
                ReduceOp::Sum => ct_b,
                // amax/amin: the gradient is shared evenly by all elements equal to the
                // extremum (PyTorch's rule for `amax`).
                ReduceOp::Max | ReduceOp::Min => {
                    let yk = if *keepdim { y } else { y.reshape_shape(kept) };
                    let hit = x(0).equal(yk.broadcast_to(&xs)).cast(ct.dtype());
                    let count = b.apply(
                        Op::Reduce {
                            op: ReduceOp::Sum,
                            axes: axes.clone(),
                            keepdim: true,
                        },
                        &[hit],
                    );
                    ct_b * hit / count.broadcast_to(&xs)
                }
                // d(prod)/dx_i = prod / x_i (inputs without zeros; see docs/ARCHITECTURE.md).
                ReduceOp::Prod => {
                    let yk = if *keepdim { y } else { y.reshape_shape(kept) };
                    ct_b * yk.broadcast_to(&xs) / x(0)
                }
            })]
        }
        // y = sum over ranks of x: each rank's x reaches every rank's y, so the
        // cotangent of x is the sum over ranks of y's cotangents (the mean's, the mean).
        Op::AllReduce { op } => vec![Some(b.apply(Op::AllReduce { op: *op }, &[ct]))],
        Op::ArgReduce { .. } | Op::TopK { .. } => vec![None],
        Op::Reshape(_) => vec![Some(ct.reshape_shape(x(0).shape()))],
        Op::Expand(to) => {
            let from = x(0).shape();
            let axes: Vec<usize> = from
                .0
                .iter()
                .zip(&to.0)
                .enumerate()
                .filter(|(_, (f, t))| f != t)
                .map(|(i, _)| i)
                .collect();
            vec![Some(if axes.is_empty() {
                ct
            } else {
                b.apply(
                    Op::Reduce {
                        op: ReduceOp::Sum,
                        axes,
                        keepdim: true,
                    },
                    &[ct],
                )
            })]
        }
        Op::Permute(perm) => {
            let mut inv = vec![0usize; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            vec![Some(b.apply(Op::Permute(inv), &[ct]))]
        }
        Op::Slice(ranges) => vec![Some(unslice(b, ct, ranges, &x(0).shape()))],
        Op::Pad { pads, .. } => {
            let ranges = pads
                .iter()
                .zip(x(0).shape().0)
                .map(|(&(lo, _), d)| match d {
                    Dim::Known(n) => SliceAxis::Range {
                        start: lo,
                        stop: lo + n,
                        step: 1,
                    },
                    Dim::Sym(_) | Dim::Merged(_) => SliceAxis::Full,
                })
                .collect();
            vec![Some(b.apply(Op::Slice(ranges), &[ct]))]
        }
        // Unfold and fold are each other's adjoints: unfold reads each input element into
        // every window holding it, fold adds every window element back to where it came
        // from.
        Op::Unfold(window) => {
            let s = x(0).shape();
            let r = s.rank();
            let size = [&s.0[r - 2], &s.0[r - 1]].map(|d| d.known().expect("unfold: known H, W"));
            vec![Some(b.apply(
                Op::Fold {
                    window: *window,
                    size,
                },
                &[ct],
            ))]
        }
        Op::Fold { window, .. } => vec![Some(b.apply(Op::Unfold(*window), &[ct]))],
        Op::Concat { axis } if x(0).shape().0[*axis].known().is_none() => {
            // `k` copies of a symbolic dim `d` joined into `k*d`: view the cotangent as
            // `[.., k, d, ..]` and take each copy on the known axis.
            let k = r.xs.len();
            let s = x(0).shape();
            let mut split = s.clone();
            split.0.insert(*axis, Dim::Known(k));
            let parts = ct.reshape_shape(split);
            (0..k)
                .map(|i| {
                    let one = along(parts.rank(), *axis, i, i + 1);
                    Some(b.apply(one, &[parts]).reshape_shape(s.clone()))
                })
                .collect()
        }
        Op::Concat { axis } => {
            let mut off = 0;
            r.xs.iter()
                .map(|xi| {
                    let s = xi.shape();
                    let n = s.0[*axis].known().unwrap_or(0);
                    let part = along(s.rank(), *axis, off, off + n);
                    off += n;
                    Some(b.apply(part, &[ct]))
                })
                .collect()
        }
        Op::MatMul { trans_a, trans_b } => {
            let [da, dc] = matmul_products(*trans_a, *trans_b, x(0), x(1), ct);
            vec![Some(da.build(b)), Some(dc.build(b))]
        }
        Op::Gather { axis } => {
            let z = r.zeros(x(0));
            vec![
                Some(b.apply(Op::ScatterAdd { axis: *axis }, &[z, x(1), ct])),
                None,
            ]
        }
        Op::ScatterAdd { axis } => vec![
            Some(ct),
            None,
            Some(b.apply(Op::Gather { axis: *axis }, &[ct, x(1)])),
        ],
        Op::Random { .. } => vec![None],
    }
}

/// The shape with `axes` kept as size 1.
fn keep_shape(s: &Shape, axes: &[usize]) -> Shape {
    Shape(
        s.0.iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Known(1)
                } else {
                    d.clone()
                }
            })
            .collect(),
    )
}

/// The transpose of a strided slice: scatter `ct` back into zeros of `shape`. Per axis
/// with step `s`: interleave `s - 1` zeros (unsqueeze, pad, reshape), then pad/crop to
/// place the values at `start`.
fn unslice<'g>(b: &'g GraphBuilder, ct: Var<'g>, ranges: &[SliceAxis], shape: &Shape) -> Var<'g> {
    let mut v = ct;
    for (axis, r) in ranges.iter().enumerate() {
        let SliceAxis::Range { start, step, .. } = *r else {
            continue;
        };
        let size = shape.0[axis].known().unwrap_or(0);
        let k = v.shape().0[axis].known().unwrap_or(0);
        let zero = Scalar::zero(v.dtype());
        if step > 1 && k > 0 {
            // [.., k, ..] -> [.., k, 1, ..] -> pad to [.., k, step, ..] -> [.., k*step, ..]
            let mut s1 = v.shape();
            s1.0.insert(axis + 1, Dim::Known(1));
            let u = v.reshape_shape(s1);
            let mut pads = vec![(0, 0); u.rank()];
            pads[axis + 1] = (0, step - 1);
            let p = b.apply(Op::Pad { pads, value: zero }, &[u]);
            let mut s2 = v.shape();
            s2.0[axis] = Dim::Known(k * step);
            v = p.reshape_shape(s2);
        }
        let len = v.shape().0[axis].known().unwrap_or(0);
        // Now `len` values start at `start`; crop any overhang past the end.
        let keep = len.min(size - start);
        if keep < len {
            let rs = (0..v.rank())
                .map(|d| {
                    if d == axis {
                        SliceAxis::Range {
                            start: 0,
                            stop: keep,
                            step: 1,
                        }
                    } else {
                        SliceAxis::Full
                    }
                })
                .collect();
            v = b.apply(Op::Slice(rs), &[v]);
        }
        let mut pads = vec![(0, 0); v.rank()];
        pads[axis] = (start, size - start - keep);
        if pads[axis] != (0, 0) {
            v = b.apply(Op::Pad { pads, value: zero }, &[v]);
        }
    }
    v
}

//! Finite-difference gradcheck (f64) of every primitive and composite op placed
//! *mid-graph*: a nonlinear upstream producer, the op under test, a nonlinear downstream
//! consumer, and a random output cotangent. A rule that ignores or mis-broadcasts its
//! incoming gradient fails. Shapes are drawn at random per seed, and the batch dim is the
//! symbolic `N` (bound by the feeds), so broadcasting and symbolic-dim rules are covered.

use std::collections::HashMap;

use aotgrad::compiler::GradError;
use aotgrad::nn;
use aotgrad::prelude::*;
use aotgrad::{GradcheckError, GradcheckOptions, gradcheck};

/// Deterministic test RNG.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() * (hi - lo + 1) as f64) as usize % (hi - lo + 1)
    }
    fn tensor(&mut self, dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.next() * 2.0 - 1.0).collect();
        Tensor::from_f64(&v, dims).unwrap()
    }
}

type Body = for<'g> fn(&'g GraphBuilder, Var<'g>, Var<'g>, usize) -> Var<'g>;

/// One op under test: `a` is `[N, C]` (upstream of `x`), `b` is `[C]` or `[N, C]` as the
/// case says; `c` is the (known) column count.
struct Case {
    name: &'static str,
    /// `b`'s shape: `true` = `[N, C]`, `false` = `[C]` (broadcast against `a`).
    b_full: bool,
    body: Body,
}

fn cases() -> Vec<Case> {
    macro_rules! case {
        ($name:expr, $full:expr, |$g:ident, $a:ident, $b:ident, $c:ident| $e:expr) => {
            Case {
                name: $name,
                b_full: $full,
                body: |$g, $a, $b, $c| {
                    let _ = (&$g, &$b, &$c);
                    $e
                },
            }
        };
    }
    vec![
        case!("add_bcast", false, |g, a, b, c| a + b),
        case!("sub_bcast", false, |g, a, b, c| a - b),
        case!("mul_bcast", false, |g, a, b, c| a * b),
        case!("div_bcast", false, |g, a, b, c| a / (b.square() + 0.5)),
        case!("pow_tensor", true, |g, a, b, c| (a.abs() + 0.5).pow(b)),
        case!("pow_scalar", false, |g, a, b, c| (a.abs() + 0.5).pow(2.5)),
        case!("maximum", true, |g, a, b, c| a.maximum(b)),
        case!("minimum", false, |g, a, b, c| a.minimum(b)),
        case!("where", true, |g, a, b, c| a.gt(b).where_(a * 2.0, b * b)),
        case!("neg_abs", false, |g, a, b, c| -(a.abs() * b)),
        case!("exp_log", false, |g, a, b, c| (a.exp() + b.square()).log()),
        case!("sqrt_recip", false, |g, a, b, c| {
            (a.square() + 1.0).sqrt().reciprocal() + b
        }),
        case!("rsqrt", false, |g, a, b, c| (a.square() + 0.5).rsqrt()),
        case!("sin_cos_tanh", false, |g, a, b, c| {
            a.sin() * b.cos() + a.tanh()
        }),
        case!("sigmoid_softplus", false, |g, a, b, c| {
            a.sigmoid() * b + (a * 3.0).softplus()
        }),
        case!("relu_leaky", true, |g, a, b, c| {
            a.relu() + b.leaky_relu(0.1)
        }),
        case!("clamp", false, |g, a, b, c| a.clamp(Some(-0.5), Some(0.5))
            * b),
        case!("cast_f32_roundtrip_free", false, |g, a, b, c| a * b.sign()),
        case!("sum_axis0_symbolic", true, |g, a, b, c| a.sum(0, false)
            * b.sum(0, true)),
        case!("sum_axis1_keep", true, |g, a, b, c| a.sum(1, true) * b),
        case!("mean_all", true, |g, a, b, c| a * b.mean_all()),
        case!("mean_axis0_symbolic", true, |g, a, b, c| a - b
            .mean(0, true)),
        case!("var_std", true, |g, a, b, c| {
            a.var(1, 1, true) + b.std(0, 1, true)
        }),
        case!("max_reduce", true, |g, a, b, c| a.max(1, true) * b),
        case!("min_reduce", true, |g, a, b, c| a * b.min(0, false)),
        case!("prod", false, |g, a, b, c| (a + 2.0).prod(1, true) * b),
        case!("logsumexp", true, |g, a, b, c| a.logsumexp(1, true) * b),
        case!("softmax", true, |g, a, b, c| a.softmax(1) * b),
        case!("log_softmax", true, |g, a, b, c| a.log_softmax(1) * b),
        case!("norm_l2", true, |g, a, b, c| a.norm(2, 1, true) * b),
        case!("matmul_square", false, |g, a, b, c| {
            let w = b.unsqueeze(1) * b.unsqueeze(0);
            a.matmul(w)
        }),
        case!("matmul_t_at", true, |g, a, b, c| a.t().matmul(b)),
        case!("matmul_batched", true, |g, a, b, c| {
            let a3 = a.unsqueeze(1); // [N,1,C]
            let b3 = b.unsqueeze(2); // [N,C,1]
            a3.matmul(b3).squeeze(2) * b
        }),
        case!("linear", false, |g, a, b, c| {
            let w = (b.unsqueeze(0) * b.unsqueeze(1)).tanh();
            a.linear(w, Some(b))
        }),
        case!("permute_transpose", true, |g, a, b, c| {
            (a.unsqueeze(2) * b.unsqueeze(1))
                .permute(&[2, 0, 1])
                .transpose(0, 1)
        }),
        case!("reshape_flatten", true, |g, a, b, c| {
            (a.unsqueeze(2) * b.unsqueeze(1))
                .flatten(1, 2)
                .reshape(&[-1, c as i64, c as i64])
        }),
        case!("expand", false, |g, a, b, c| {
            a.unsqueeze(1).expand(&[-1, 3, c as i64]) * b
        }),
        case!("slice_step", true, |g, a, b, c| {
            a.slice(1, Some(0), None, 2) * b.slice(1, Some(1), None, 2).sum(1, true)
        }),
        case!("select_narrow", true, |g, a, b, c| {
            a.select(1, -1) * b.narrow(1, 0, 1).squeeze(1)
        }),
        case!("pad_crop", true, |g, a, b, c| {
            a.pad(&[(1, 2)], 0.5) * b.pad(&[(1, 2)], 0.0) + a.pad(&[(-1, 0)], 0.0).sum_all()
        }),
        case!("cat_stack_split", true, |g, a, b, c| {
            let s = g.cat(&[a, b * 2.0], 1);
            let parts = s.split(c, 1);
            g.stack(&[parts[1], parts[0] * a], 0)
        }),
        case!("chunk", true, |g, a, b, c| {
            let parts = g.cat(&[a, b], 1).chunk(2, 1);
            parts[0] * parts[1].exp()
        }),
        case!("gather_index_select", true, |g, a, b, c| {
            // c >= 3, so every index is in range.
            let idx = g.constant(aotgrad::ir::Data::I64(vec![2, 0, 0, 1]), &[4]);
            a.index_select(1, idx) * b.index_select(1, idx)
        }),
        case!("gather", false, |g, a, b, c| {
            // The same column index for every row: [N, 1] gathered along axis 1.
            let idx = a.gt(100.0).cast(DType::I64).slice(1, Some(0), Some(1), 1) + 1;
            a.gather(1, idx) * b.sum_all()
        }),
        case!("scatter_add", true, |g, a, b, c| {
            let idx = a.gt(100.0).cast(DType::I64); // zeros: all to column 0
            a.scatter_add(1, idx, b.square())
        }),
        case!("one_hot_mul", false, |g, a, b, c| {
            let cls = a.argmax(1, false);
            cls.one_hot(c).cast(DType::F64) * a * b
        }),
        case!("mse_loss", true, |g, a, b, c| nn::mse_loss(
            a,
            b.tanh(),
            nn::Reduction::Mean
        )),
        case!("l1_loss", true, |g, a, b, c| nn::l1_loss(
            a,
            b,
            nn::Reduction::Sum
        )),
        case!("bce", true, |g, a, b, c| {
            nn::binary_cross_entropy(a.sigmoid(), b.sigmoid(), None, nn::Reduction::Mean)
        }),
        case!("bce_logits", true, |g, a, b, c| {
            nn::binary_cross_entropy_with_logits(
                a * 4.0,
                b.sigmoid(),
                None,
                None,
                nn::Reduction::Mean,
            )
        }),
        case!("cross_entropy_probs", true, |g, a, b, c| {
            let opts = nn::ClassLossOptions {
                label_smoothing: 0.1,
                ..Default::default()
            };
            nn::cross_entropy(a * 3.0, b.softmax(1), opts)
        }),
        case!("cross_entropy_index", true, |g, a, b, c| {
            let t = b.argmax(1, false);
            let opts = nn::ClassLossOptions {
                label_smoothing: 0.05,
                ..Default::default()
            };
            nn::cross_entropy(a * 3.0, t, opts)
        }),
    ]
}

fn build(case: &Case, c: usize) -> Graph {
    let g = GraphBuilder::new(case.name);
    let x = g.input("x", DType::F64, shape!["N", c]);
    let y = if case.b_full {
        g.input("y", DType::F64, shape!["N", c])
    } else {
        g.input("y", DType::F64, shape![c])
    };
    // Nonlinear upstream: the op's input cotangent must be chained through tanh.
    let a = (x * 1.3).tanh() + x * 0.2;
    let b = y.sin() + 0.1;
    let v = (case.body)(&g, a, b, c);
    // Nonlinear downstream: the op's output cotangent is not ones.
    let out = v * (v * 0.7).cos();
    g.output("out", out);
    g.finish().unwrap_or_else(|e| panic!("{}: {e}", case.name))
}

#[test]
fn every_op_mid_graph_with_random_shapes_and_symbolic_batch() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases() {
        for seed in 0..3u64 {
            let mut rng = Lcg(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ case.name.len() as u64);
            rng.next();
            let n = rng.int(1, 4);
            let c = rng.int(3, 5);
            let graph = build(&case, c);
            let mut feeds = HashMap::new();
            feeds.insert("x".to_string(), rng.tensor(&[n, c]));
            let ydims = if case.b_full { vec![n, c] } else { vec![c] };
            feeds.insert("y".to_string(), rng.tensor(&ydims));
            let opts = GradcheckOptions {
                seed: 100 + seed,
                ..Default::default()
            };
            match gradcheck(&graph, &feeds, &["x", "y"], opts) {
                Ok(rep) if rep.passed(1e-6) => {}
                Ok(rep) => failures.push(format!("{} N={n} C={c}:\n{rep}", case.name)),
                Err(e) => failures.push(format!("{} N={n} C={c}: {e}", case.name)),
            }
            runs += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} gradchecks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The check can fail: a graph whose "gradient" is wrong must be caught. Here the op's
/// gradient path is cut with `detach` while the forward value is unchanged.
#[test]
fn gradcheck_catches_a_wrong_gradient() {
    let g = GraphBuilder::new("cut");
    let x = g.input("x", DType::F64, shape!["N", 3]);
    let wrong = x.sin().detach() + x; // forward sin(x)+x, but AD sees d/dx = 1
    g.output("out", wrong);
    let graph = g.finish().unwrap();
    let mut rng = Lcg(3);
    let feeds = HashMap::from([("x".to_string(), rng.tensor(&[2, 3]))]);
    let rep = gradcheck(&graph, &feeds, &["x"], GradcheckOptions::default()).unwrap();
    assert!(!rep.passed(1e-3), "{rep}");
    assert!(rep.worst() > 0.05, "{rep}");
}

#[test]
fn gradcheck_errors_are_typed() {
    let g = GraphBuilder::new("e");
    let x = g.input("x", DType::F64, shape![2]);
    let i = g.input("i", DType::I64, shape![2]);
    g.output("out", x.exp() + 1.0);
    g.output("idx", i + 1);
    let graph = g.finish().unwrap();
    let feeds = HashMap::from([
        (
            "x".to_string(),
            Tensor::from_f64(&[0.5, 1.0], &[2]).unwrap(),
        ),
        ("i".to_string(), Tensor::from_i64(&[1, 2], &[2]).unwrap()),
    ]);
    let e = gradcheck(&graph, &feeds, &["i"], GradcheckOptions::default()).unwrap_err();
    assert!(
        matches!(e, GradcheckError::Grad(GradError::NotFloat { ref name, .. }) if name == "i"),
        "{e}"
    );
    let e = gradcheck(&graph, &feeds, &["nope"], GradcheckOptions::default()).unwrap_err();
    assert!(
        matches!(e, GradcheckError::NotLeaf(ref n) | GradcheckError::Grad(GradError::UnknownWrt(ref n)) if n == "nope"),
        "{e}"
    );
}

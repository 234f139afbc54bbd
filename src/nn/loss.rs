//! Loss functions with PyTorch's semantics (`torch.nn.functional.*_loss`), built from DSL
//! primitives so that autodiff differentiates them like any other graph.
//!
//! Numerical stability comes from the formulation, not from hand-written gradients:
//! cross entropy goes through `log_softmax` (max-shifted), BCE-with-logits uses
//! `max(x, 0) - x*t + log1p(exp(-|x|))`, whose composed derivative is
//! `sigmoid(x) - t` without overflow for any `x`, and BCE clamps its logs at -100 as
//! PyTorch does (the `where` in the clamp routes a zero gradient past `log(0)`).

use aotgrad_ir::{Axes, BuildErrorKind, DType, OpError, Var};

/// How per-element losses are combined (PyTorch's `reduction=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Per-element losses, unreduced.
    None,
    /// The mean (weighted mean for class-weighted losses).
    #[default]
    Mean,
    /// The sum.
    Sum,
}

impl std::str::FromStr for Reduction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Reduction::None),
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            _ => Err(format!("unknown reduction {s:?} (none, mean, sum)")),
        }
    }
}

#[track_caller]
fn reduce(v: Var<'_>, r: Reduction) -> Var<'_> {
    match r {
        Reduction::None => v,
        Reduction::Mean => v.mean_all(),
        Reduction::Sum => v.sum_all(),
    }
}

#[track_caller]
fn need_float<'g>(op: &str, v: Var<'g>) -> Option<Var<'g>> {
    if v.is_poisoned() || v.dtype().is_float() {
        return None;
    }
    Some(v.builder().report(
        op,
        OpError::BadDType {
            expected: "a floating-point",
            got: v.ty(),
        },
    ))
}

/// Mean squared error `(input - target)^2`.
#[track_caller]
pub fn mse_loss<'g>(input: Var<'g>, target: Var<'g>, reduction: Reduction) -> Var<'g> {
    if let Some(e) = need_float("mse_loss", input) {
        return e;
    }
    reduce((input - target).square(), reduction)
}

/// Mean absolute error `|input - target|`.
#[track_caller]
pub fn l1_loss<'g>(input: Var<'g>, target: Var<'g>, reduction: Reduction) -> Var<'g> {
    if let Some(e) = need_float("l1_loss", input) {
        return e;
    }
    reduce((input - target).abs(), reduction)
}

/// Binary cross entropy on probabilities, `-(t log x + (1-t) log(1-x))`, logs clamped at
/// -100 like PyTorch. Inputs outside [0, 1] give NaN here (as the formula does); the
/// trainer's checked mode reports them as an error instead (see
/// [`bce_input_in_range`]).
#[track_caller]
pub fn binary_cross_entropy<'g>(
    input: Var<'g>,
    target: Var<'g>,
    weight: Option<Var<'g>>,
    reduction: Reduction,
) -> Var<'g> {
    if let Some(e) = need_float("binary_cross_entropy", input) {
        return e;
    }
    // The value is computed from `input` with its gradient path cut, and the gradient
    // is PyTorch's `binary_cross_entropy_backward`, `(x - y) / max((1 - x) x, 1e-12)`,
    // attached as `(x - detach(x)) * detach(g)` (zero in value, `g` in gradient). The
    // autodiff of the clamped logs is NaN where a probability is exactly 0 or 1 (the
    // clamp's unselected branch carries `0 * inf`), which a saturated sigmoid reaches in
    // f32: one such step used to turn every parameter into NaN.
    let x = input.detach();
    let log_x = x.log().clamp(Some(-100.0), None);
    // PyTorch's `log1p(-x)`: exact for tiny x, where `log(1 - x)` rounds `1 - x`.
    let log_1mx = (-x).log1p().clamp(Some(-100.0), None);
    let value = -(target * log_x + (1.0 - target) * log_1mx);
    let g = ((x - target) / ((1.0 - x) * x).maximum(1e-12)).detach();
    let mut l = value + (input - x) * g;
    if let Some(w) = weight {
        l = l * w;
    }
    reduce(l, reduction)
}

/// A boolean scalar: every element of `input` lies in [0, 1] (NaN fails). Checked-mode
/// training adds it as an extra output next to a BCE loss.
#[track_caller]
pub fn bce_input_in_range(input: Var<'_>) -> Var<'_> {
    let ok = input.ge(0.0).logical_and(input.le(1.0));
    // all(ok) == min over bools; bools reduce as u8 through a cast.
    ok.cast(DType::U8).min(Axes::All, false).equal(1)
}

/// Binary cross entropy on logits (PyTorch's `binary_cross_entropy_with_logits`), with
/// optional per-element `weight` and per-class `pos_weight`.
#[track_caller]
pub fn binary_cross_entropy_with_logits<'g>(
    input: Var<'g>,
    target: Var<'g>,
    weight: Option<Var<'g>>,
    pos_weight: Option<Var<'g>>,
    reduction: Reduction,
) -> Var<'g> {
    if let Some(e) = need_float("binary_cross_entropy_with_logits", input) {
        return e;
    }
    // log(1 + exp(-|x|)) + max(-x, 0) = -log(sigmoid(x)), stable for any x.
    let neg_log_sigmoid = (-input.abs()).exp().log1p() + (-input).relu();
    let mut l = match pos_weight {
        None => (1.0 - target) * input + neg_log_sigmoid,
        Some(p) => {
            let log_weight = (p - 1.0) * target + 1.0;
            (1.0 - target) * input + log_weight * neg_log_sigmoid
        }
    };
    if let Some(w) = weight {
        l = l * w;
    }
    reduce(l, reduction)
}

/// Options of [`cross_entropy`] and [`nll_loss`] (PyTorch's keyword arguments).
#[derive(Debug, Clone, Copy)]
pub struct ClassLossOptions<'g> {
    /// Per-class weights, shape `[C]`.
    pub weight: Option<Var<'g>>,
    /// Targets equal to this contribute nothing (and do not count in the mean).
    pub ignore_index: i64,
    /// Label smoothing in [0, 1) (cross entropy only).
    pub label_smoothing: f64,
    pub reduction: Reduction,
}

impl Default for ClassLossOptions<'_> {
    fn default() -> Self {
        ClassLossOptions {
            weight: None,
            ignore_index: -100,
            label_smoothing: 0.0,
            reduction: Reduction::Mean,
        }
    }
}

/// The class axis: 1 for `[N, C, d1, ...]`, 0 for an unbatched `[C]`.
fn class_axis(input: Var<'_>) -> i64 {
    if input.rank() == 1 { 0 } else { 1 }
}

/// `weight` shaped to broadcast along the class axis of `input`.
#[track_caller]
fn class_weight_bcast<'g>(input: Var<'g>, w: Var<'g>) -> Var<'g> {
    let cax = class_axis(input) as usize;
    let mut dims = vec![1i64; input.rank()];
    dims[cax] = -1;
    w.reshape(&dims)
}

/// Validates an integer class target against `input`: `[N, d...]` for `[N, C, d...]`.
#[track_caller]
fn check_index_target<'g>(op: &str, input: Var<'g>, target: Var<'g>) -> Option<Var<'g>> {
    if input.is_poisoned() || target.is_poisoned() {
        return Some(input);
    }
    let b = input.builder();
    if !input.dtype().is_float() {
        return Some(b.report(
            op,
            OpError::BadDType {
                expected: "a floating-point input",
                got: input.ty(),
            },
        ));
    }
    if !target.dtype().is_int() {
        return Some(b.report(
            op,
            BuildErrorKind::Usage(format!(
                "targets must be integer class indices (i64), got {}",
                target.dtype()
            )),
        ));
    }
    let mut want = input.shape();
    if input.rank() == 0 {
        return Some(b.report(
            op,
            BuildErrorKind::Usage("input needs a class axis; it is a scalar".into()),
        ));
    }
    want.0.remove(class_axis(input) as usize);
    if target.shape() != want {
        return Some(b.report(
            op,
            OpError::ShapeMismatch {
                lhs: input.ty(),
                rhs: target.ty(),
            },
        ));
    }
    None
}

/// Negative log-likelihood of log-probabilities `input` `[N, C, d...]` (or `[C]`) at the
/// class indices `target` `[N, d...]` (or `[]`).
#[track_caller]
pub fn nll_loss<'g>(input: Var<'g>, target: Var<'g>, opts: ClassLossOptions<'g>) -> Var<'g> {
    if let Some(e) = check_index_target("nll_loss", input, target) {
        return e;
    }
    let (losses, w_t, _) = nll_parts(input, target, &opts);
    match opts.reduction {
        Reduction::None => losses,
        Reduction::Sum => losses.sum_all(),
        Reduction::Mean => losses.sum_all() / w_t.sum_all(),
    }
}

/// Per-element NLL, the per-element target weights (0 where ignored) and the mask of
/// non-ignored targets (as the input's dtype).
#[track_caller]
fn nll_parts<'g>(
    input: Var<'g>,
    target: Var<'g>,
    opts: &ClassLossOptions<'g>,
) -> (Var<'g>, Var<'g>, Var<'g>) {
    let cax = class_axis(input);
    let keep = target.not_equal(opts.ignore_index as i32);
    // Ignored targets may be out of range (-100): gather at class 0 and mask.
    let safe = keep.where_(target, 0);
    let picked = input.gather(cax, safe.unsqueeze(cax)).squeeze(cax);
    let mask = keep.cast(input.dtype());
    let w_t = match opts.weight {
        Some(w) => {
            let flat = safe.reshape(&[-1]);
            w.index_select(0, flat).reshape_shape(target.shape()) * mask
        }
        None => mask,
    };
    (-(picked * w_t), w_t, mask)
}

/// Cross entropy of logits `input` `[N, C, d...]` (or `[C]`) against class indices
/// (integer `target` `[N, d...]`) or class probabilities (float `target`, the input's
/// shape), with PyTorch's weights, ignore_index and label smoothing.
#[track_caller]
pub fn cross_entropy<'g>(input: Var<'g>, target: Var<'g>, opts: ClassLossOptions<'g>) -> Var<'g> {
    if input.is_poisoned() || target.is_poisoned() {
        return input;
    }
    let b = input.builder();
    if !(0.0..1.0).contains(&opts.label_smoothing) {
        return b.report(
            "cross_entropy",
            BuildErrorKind::Usage(format!(
                "label_smoothing must be in [0, 1), got {}",
                opts.label_smoothing
            )),
        );
    }
    let cax = class_axis(input);
    let Some(n_classes) = input.shape().0.get(cax as usize).and_then(|d| d.known()) else {
        return b.report(
            "cross_entropy",
            BuildErrorKind::Usage(format!(
                "the class axis of {} must have a known size",
                input.ty()
            )),
        );
    };
    let n_classes = n_classes as f64;
    if target.dtype().is_float() {
        if let Some(e) = need_float("cross_entropy", input) {
            return e;
        }
        if target.shape() != input.shape() {
            let mut indices = input.shape();
            indices.0.remove(cax as usize);
            // Float labels of the index shape (`[N]` for `[N, C]` logits): class
            // indices in the wrong dtype, the common case.
            if target.shape() == indices {
                return b.report(
                    "cross_entropy",
                    BuildErrorKind::Usage(format!(
                        "targets must be integer class indices (i64), got {} (or class \
                         probabilities of the input's shape {})",
                        target.dtype(),
                        input.ty()
                    )),
                );
            }
            return b.report(
                "cross_entropy",
                OpError::ShapeMismatch {
                    lhs: input.ty(),
                    rhs: target.ty(),
                },
            );
        }
        let logp = input.log_softmax(cax);
        let t = if opts.label_smoothing > 0.0 {
            target * (1.0 - opts.label_smoothing) + opts.label_smoothing / n_classes
        } else {
            target
        };
        let mut prod = logp * t;
        if let Some(w) = opts.weight {
            prod = prod * class_weight_bcast(input, w);
        }
        let per = -prod.sum(cax, false);
        return reduce(per, opts.reduction);
    }
    if let Some(e) = check_index_target("cross_entropy", input, target) {
        return e;
    }
    let logp = input.log_softmax(cax);
    let (losses, w_t, mask) = nll_parts(logp, target, &opts);
    let nll = match opts.reduction {
        Reduction::None => losses,
        Reduction::Sum => losses.sum_all(),
        Reduction::Mean => losses.sum_all() / w_t.sum_all(),
    };
    if opts.label_smoothing == 0.0 {
        return nll;
    }
    let eps = opts.label_smoothing;
    let weighted = match opts.weight {
        Some(w) => logp * class_weight_bcast(input, w),
        None => logp,
    };
    let smooth = -weighted.sum(cax, false) * mask;
    let smooth = match opts.reduction {
        Reduction::None => smooth,
        Reduction::Sum => smooth.sum_all(),
        Reduction::Mean => match opts.weight {
            Some(_) => smooth.sum_all() / w_t.sum_all(),
            None => smooth.sum_all() / mask.sum_all(),
        },
    };
    nll * (1.0 - eps) + smooth * (eps / n_classes)
}

/// `sum |p|` over the given tensors (L1 regularisation term).
#[track_caller]
pub fn l1_penalty<'g>(params: &[Var<'g>]) -> Option<Var<'g>> {
    params
        .iter()
        .map(|p| p.abs().sum_all())
        .reduce(|a, b| a + b)
}

/// `sum p^2` over the given tensors (L2 regularisation term; multiply by lambda/2 for
/// the usual weight-decay equivalence).
#[track_caller]
pub fn l2_penalty<'g>(params: &[Var<'g>]) -> Option<Var<'g>> {
    params
        .iter()
        .map(|p| p.square().sum_all())
        .reduce(|a, b| a + b)
}

//! Losses as graph builders, with what the trainer needs to know of them: their name and
//! hyper-parameters (checkpoints record them), the user's line that made them (errors
//! raised inside them name it), and how their targets index classes.

use std::rc::Rc;

use aotgrad_ir::Var;

use crate::nn::{self, Reduction, Vars};

type PairFn = Rc<dyn for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g>>;
type NamedFn = Rc<dyn for<'g> Fn(&Vars<'g>) -> Var<'g>>;

/// What a loss reads.
#[derive(Clone)]
pub(super) enum LossFn {
    /// The model's (first) output and the batch's (first) target.
    Pair(PairFn),
    /// Any of the model's outputs (`output`, `output.1`, hooks) and the batch's tensors.
    Named(NamedFn),
}

/// A loss between the model's output and the target, as a graph builder.
#[derive(Clone)]
pub struct Loss {
    pub(super) name: String,
    /// The user's line that made it (errors raised inside it name that line).
    pub(super) made_at: &'static std::panic::Location<'static>,
    /// The hyper-parameters of a built-in loss, as PyTorch spells them
    /// (`reduction=mean`); empty for a custom loss.
    options: String,
    pub(super) f: LossFn,
    /// The output must be a probability (BCE): checked mode verifies it.
    pub(super) probabilities: bool,
    /// The targets are class indices: how many classes there are (an index out of range
    /// is reported as a bad target, not as the gather that read it).
    pub(super) classes: ClassTargets,
}

/// How a loss reads integer class targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClassTargets {
    /// Not class indices.
    None,
    /// Indices into axis 1 of the model's output (cross entropy, NLL).
    OutputAxis1,
    /// Indices below a fixed count (MSE against one-hot targets).
    Fixed(usize),
    /// Indices into the last axis of the model's output (token logits `[N, T, V]`).
    OutputLastAxis,
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loss({})", self.name)
    }
}

impl Loss {
    /// Any loss built from DSL values.
    #[track_caller]
    pub fn custom(name: &str, f: impl for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g> + 'static) -> Loss {
        Loss {
            name: name.to_string(),
            made_at: std::panic::Location::caller(),
            options: String::new(),
            f: LossFn::Pair(Rc::new(f)),
            probabilities: false,
            classes: ClassTargets::None,
        }
    }

    /// A loss that reads any of the batch's tensors and the model's outputs by name:
    /// the outputs are `output` (the first), `output.1`, ... and `hook.<path>`; the batch
    /// tensors have the names [`crate::train::Trainer::batch_input`] and
    /// [`crate::train::Trainer::batch_target`] gave them. A masked sequence loss, say:
    /// `Loss::named("masked_ce", |v| masked_ce(v.get("output"), v.get("y"), v.get("mask")))`.
    #[track_caller]
    pub fn named(name: &str, f: impl for<'g> Fn(&Vars<'g>) -> Var<'g> + 'static) -> Loss {
        Loss {
            name: name.to_string(),
            made_at: std::panic::Location::caller(),
            options: String::new(),
            f: LossFn::Named(Rc::new(f)),
            probabilities: false,
            classes: ClassTargets::None,
        }
    }

    /// A built-in loss: its name and hyper-parameters.
    #[track_caller]
    fn builtin(
        name: &str,
        options: String,
        f: impl for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g> + 'static,
    ) -> Loss {
        Loss {
            options,
            ..Loss::custom(name, f)
        }
    }

    #[track_caller]
    pub fn mse(r: Reduction) -> Loss {
        Loss::builtin("mse", reduction(r), move |o, t| nn::mse_loss(o, t, r))
    }

    /// MSE against the one-hot encoding of integer class targets (the MNIST seed).
    #[track_caller]
    pub fn mse_one_hot(classes: usize, r: Reduction) -> Loss {
        let options = format!("classes={classes}, {}", reduction(r));
        Loss {
            classes: ClassTargets::Fixed(classes),
            ..Loss::builtin("mse_one_hot", options, move |o, t| {
                nn::mse_loss(o, t.one_hot(classes).cast(o.dtype()), r)
            })
        }
    }

    #[track_caller]
    pub fn l1(r: Reduction) -> Loss {
        Loss::builtin("l1", reduction(r), move |o, t| nn::l1_loss(o, t, r))
    }

    /// BCE on probabilities; checked mode reports outputs outside [0, 1].
    #[track_caller]
    pub fn bce(r: Reduction) -> Loss {
        Loss {
            probabilities: true,
            ..Loss::builtin("bce", reduction(r), move |o, t| {
                nn::binary_cross_entropy(o, t, None, r)
            })
        }
    }

    #[track_caller]
    pub fn bce_with_logits(r: Reduction) -> Loss {
        Loss::builtin("bce_with_logits", reduction(r), move |o, t| {
            nn::binary_cross_entropy_with_logits(o, t, None, None, r)
        })
    }

    /// Cross entropy on logits with integer class targets (mean reduction).
    #[track_caller]
    pub fn cross_entropy() -> Loss {
        Loss::cross_entropy_with(0.0, Reduction::Mean)
    }

    #[track_caller]
    pub fn cross_entropy_with(label_smoothing: f64, reduction: Reduction) -> Loss {
        let options = format!(
            "label_smoothing={label_smoothing:?}, {}",
            self::reduction(reduction)
        );
        Loss {
            classes: ClassTargets::OutputAxis1,
            ..Loss::builtin("cross_entropy", options, move |o, t| {
                let opts = nn::ClassLossOptions {
                    label_smoothing,
                    reduction,
                    ..Default::default()
                };
                nn::cross_entropy(o, t, opts)
            })
        }
    }

    /// Cross entropy over every position of a sequence (mean over all tokens): logits
    /// `[N, T, V]` against token targets `[N, T]`, PyTorch's
    /// `F.cross_entropy(logits.view(-1, V), targets.view(-1))` (nanoGPT's and
    /// makemore's loss), in nats per token.
    #[track_caller]
    pub fn token_cross_entropy() -> Loss {
        Loss {
            classes: ClassTargets::OutputLastAxis,
            ..Loss::builtin("token_cross_entropy", String::new(), move |o, t| {
                let vocab = o.shape().dims().last().and_then(|d| d.known());
                let Some(vocab) = vocab else {
                    return o.builder().report(
                        "token_cross_entropy",
                        aotgrad_ir::BuildErrorKind::Usage(format!(
                            "expected logits [..., V] with a known V, got {}",
                            o.ty()
                        )),
                    );
                };
                if t.shape().rank() + 1 != o.shape().rank() {
                    return o.builder().report(
                        "token_cross_entropy",
                        aotgrad_ir::BuildErrorKind::Usage(format!(
                            "targets {} do not index logits {} (expected the logits' shape without its last axis)",
                            t.ty(),
                            o.ty()
                        )),
                    );
                }
                nn::cross_entropy(
                    o.reshape(&[-1, vocab as i64]),
                    t.reshape(&[-1]),
                    nn::ClassLossOptions::default(),
                )
            })
        }
    }

    #[track_caller]
    pub fn nll(r: Reduction) -> Loss {
        Loss {
            classes: ClassTargets::OutputAxis1,
            ..Loss::builtin("nll", reduction(r), move |o, t| {
                let opts = nn::ClassLossOptions {
                    reduction: r,
                    ..Default::default()
                };
                nn::nll_loss(o, t, opts)
            })
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name with the hyper-parameters: `cross_entropy(label_smoothing=0.0,
    /// reduction=mean)`; a custom loss is its name. Checkpoints record it.
    pub fn description(&self) -> String {
        if self.options.is_empty() {
            self.name.clone()
        } else {
            format!("{}({})", self.name, self.options)
        }
    }
}

/// PyTorch's spelling of a reduction argument.
fn reduction(r: Reduction) -> String {
    let r = match r {
        Reduction::None => "none",
        Reduction::Mean => "mean",
        Reduction::Sum => "sum",
    };
    format!("reduction={r}")
}

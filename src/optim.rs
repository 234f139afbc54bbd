//! Optimizers as graphs: each builds its update rule into the training-step graph, so
//! one compiled program does forward, backward and update. Optimizer state (momentum
//! buffers, Adam moments, the step count) is persistent state of that program.
//!
//! The rules follow PyTorch's single-tensor CPU implementations operation by operation,
//! including where host `float64` scalars are rounded to `float32` (bias corrections,
//! AdamW's decay factor), so that runs match PyTorch to float32 round-off (checked
//! against the fixtures in `tests/backends/torch_models.rs`). The learning rate is a runtime
//! `f64[]` input named `lr`, so schedulers change it between steps without recompiling.

use aotgrad_ir::{DType, GraphBuilder, Shape, Var};

/// Name of the shared step counter (an `f64[]` state: the number of updates applied).
pub const STEP_STATE: &str = "optim.step";
/// Name of the learning-rate input of a training step.
pub const LR_INPUT: &str = "lr";

/// Stochastic gradient descent with PyTorch's momentum, dampening, Nesterov and
/// (coupled, L2-style) weight decay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

/// Adam, or AdamW when `decoupled_weight_decay` is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled_weight_decay: bool,
}

/// RMSprop with optional momentum and centering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsProp {
    pub lr: f64,
    pub alpha: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub centered: bool,
}

/// An optimizer, compiled into the training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd(Sgd),
    Adam(Adam),
    RmsProp(RmsProp),
}

impl Optimizer {
    /// `torch.optim.SGD(params, lr)`.
    pub fn sgd(lr: f64) -> Optimizer {
        Optimizer::Sgd(Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        })
    }

    /// `torch.optim.SGD(params, lr, momentum)`.
    pub fn sgd_momentum(lr: f64, momentum: f64) -> Optimizer {
        match Optimizer::sgd(lr) {
            Optimizer::Sgd(s) => Optimizer::Sgd(Sgd { momentum, ..s }),
            _ => unreachable!(),
        }
    }

    /// `torch.optim.Adam(params, lr)` with default betas (0.9, 0.999) and eps 1e-8.
    pub fn adam(lr: f64) -> Optimizer {
        Optimizer::Adam(Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
        })
    }

    /// `torch.optim.AdamW(params, lr, weight_decay)`.
    pub fn adamw(lr: f64, weight_decay: f64) -> Optimizer {
        Optimizer::Adam(Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay,
            decoupled_weight_decay: true,
        })
    }

    /// `torch.optim.RMSprop(params, lr)` with default alpha 0.99 and eps 1e-8.
    pub fn rmsprop(lr: f64) -> Optimizer {
        Optimizer::RmsProp(RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        })
    }

    /// Parses a command-line name (`sgd`, `adam`, `adamw`, `rmsprop`) with a learning rate
    /// and (for SGD) a momentum.
    pub fn from_name(name: &str, lr: f64, momentum: f64) -> Result<Optimizer, String> {
        Ok(match name {
            "sgd" => Optimizer::sgd_momentum(lr, momentum),
            "adam" => Optimizer::adam(lr),
            "adamw" => Optimizer::adamw(lr, 1e-2),
            "rmsprop" => Optimizer::rmsprop(lr),
            _ => {
                return Err(format!(
                    "unknown optimizer {name:?} (sgd, adam, adamw, rmsprop)"
                ));
            }
        })
    }

    /// The initial learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            Optimizer::Sgd(s) => s.lr,
            Optimizer::Adam(a) => a.lr,
            Optimizer::RmsProp(r) => r.lr,
        }
    }

    /// The name and every hyper-parameter but the learning rate (which schedulers and
    /// `--lr` change between runs of one training program), as PyTorch names them:
    /// `SGD(momentum=0.9, dampening=0.0, nesterov=false, weight_decay=0.0)`. Checkpoints
    /// record it, so resuming with another optimizer names both.
    pub fn description(&self) -> String {
        match self {
            Optimizer::Sgd(o) => format!(
                "SGD(momentum={:?}, dampening={:?}, nesterov={}, weight_decay={:?})",
                o.momentum, o.dampening, o.nesterov, o.weight_decay
            ),
            Optimizer::Adam(o) => format!(
                "{}(betas=({:?}, {:?}), eps={:?}, weight_decay={:?})",
                self.name(),
                o.betas.0,
                o.betas.1,
                o.eps,
                o.weight_decay
            ),
            Optimizer::RmsProp(o) => format!(
                "RMSprop(alpha={:?}, eps={:?}, weight_decay={:?}, momentum={:?}, centered={})",
                o.alpha, o.eps, o.weight_decay, o.momentum, o.centered
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "SGD",
            Optimizer::Adam(a) if a.decoupled_weight_decay => "AdamW",
            Optimizer::Adam(_) => "Adam",
            Optimizer::RmsProp(_) => "RMSprop",
        }
    }

    /// Builds the update of every `(name, param, grad)` into `b`: declares the state it
    /// needs (`<param>.<key>` and [`STEP_STATE`]) and records the updates. `lr` is the
    /// `f64[]` learning-rate value.
    /// Builds the update of every parameter in `params` into the graph: `lr` is the
    /// step's `f64[]` learning-rate input. Each parameter's update runs in its own dtype
    /// (host scalars are rounded to it once, as PyTorch rounds them to the parameter's
    /// dtype), with its group's lr scale and weight decay.
    pub fn build<'g>(&self, b: &'g GraphBuilder, lr: Var<'g>, params: &[OptParam<'g>]) {
        let t = b.state(STEP_STATE, DType::F64, Shape::scalar());
        let t1 = t + 1.0;
        b.update(t, t1);
        let state = |name: &str, key: &str, like: Var<'g>| {
            b.state(&format!("{name}.{key}"), like.dtype(), like.shape())
        };
        // The group's lr: the input itself for the default group (so an f32 model's
        // program is the one it always was), scaled for another group.
        let lr_of = |p: &OptParam<'g>| {
            if p.lr_scale == 1.0 {
                lr
            } else {
                lr * p.lr_scale
            }
        };
        match *self {
            Optimizer::Sgd(o) => {
                let neg_lrs = per_group(params, |op| (-lr_of(op)).cast(op.param.dtype()));
                let first = (o.momentum != 0.0).then(|| t.equal(0.0));
                for (op, neg_lr) in params.iter().zip(neg_lrs) {
                    let (p, mut d) = (op.param, op.grad);
                    let wd = op.weight_decay.unwrap_or(o.weight_decay);
                    if wd != 0.0 {
                        d = d + p * wd;
                    }
                    if o.momentum != 0.0 {
                        let buf = state(&op.name, "momentum_buffer", p);
                        // PyTorch: the buffer starts as a copy of the first gradient.
                        let first = first.expect("built when momentum != 0");
                        let damped = if o.dampening == 0.0 {
                            d
                        } else {
                            d * (1.0 - o.dampening)
                        };
                        let next = first.where_(d, buf * o.momentum + damped);
                        b.update(buf, next);
                        d = if o.nesterov {
                            d + next * o.momentum
                        } else {
                            next
                        };
                    }
                    b.update(p, p + d * neg_lr);
                }
            }
            Optimizer::Adam(o) => {
                let (b1, b2) = o.betas;
                let bc1 = 1.0 - b.scalar(b1, DType::F64).pow(t1);
                let bc2 = 1.0 - b.scalar(b2, DType::F64).pow(t1);
                // PyTorch divides `sqrt(v)` by `sqrt(bc2)` per element; folding that
                // scalar into the step size and eps (the Adam paper's "more efficient
                // order", Kingma & Ba section 2) leaves one division per element instead
                // of two. Same value up to rounding (measured: the MNIST MLP's first-layer
                // update went from 27% to 24% of the step; the rest is moving p, m, v).
                let bc2_sqrt = bc2.sqrt();
                let scalars = per_group(params, |op| {
                    let (dt, lr) = (op.param.dtype(), lr_of(op));
                    let wd = op.weight_decay.unwrap_or(o.weight_decay);
                    (
                        (-(lr / bc1) * bc2_sqrt).cast(dt),
                        (bc2_sqrt * o.eps).cast(dt),
                        (o.decoupled_weight_decay && wd != 0.0).then(|| (1.0 - lr * wd).cast(dt)),
                    )
                });
                for (op, (neg_step_size, eps_hat, decay)) in params.iter().zip(scalars) {
                    let (mut p, mut g) = (op.param, op.grad);
                    let wd = op.weight_decay.unwrap_or(o.weight_decay);
                    let p0 = p;
                    if let Some(decay) = decay {
                        p = p * decay;
                    } else if !o.decoupled_weight_decay && wd != 0.0 {
                        g = g + p * wd;
                    }
                    let m = state(&op.name, "exp_avg", p);
                    let v = state(&op.name, "exp_avg_sq", p);
                    let m1 = m + (g - m) * (1.0 - b1);
                    let v1 = v * b2 + (g * (1.0 - b2)) * g;
                    b.update(m, m1);
                    b.update(v, v1);
                    let denom = v1.sqrt() + eps_hat;
                    b.update(p0, p + (m1 * neg_step_size) / denom);
                }
            }
            Optimizer::RmsProp(o) => {
                let neg_lrs = per_group(params, |op| (-lr_of(op)).cast(op.param.dtype()));
                for (op, neg_lr) in params.iter().zip(neg_lrs) {
                    let (p, mut g) = (op.param, op.grad);
                    let wd = op.weight_decay.unwrap_or(o.weight_decay);
                    if wd != 0.0 {
                        g = g + p * wd;
                    }
                    let sa = state(&op.name, "square_avg", p);
                    let sa1 = sa * o.alpha + (g * (1.0 - o.alpha)) * g;
                    b.update(sa, sa1);
                    let avg = if o.centered {
                        let ga = state(&op.name, "grad_avg", p);
                        let ga1 = ga + (g - ga) * (1.0 - o.alpha);
                        b.update(ga, ga1);
                        (sa1 - ga1 * ga1).sqrt() + o.eps
                    } else {
                        sa1.sqrt() + o.eps
                    };
                    if o.momentum > 0.0 {
                        let buf = state(&op.name, "momentum_buffer", p);
                        let buf1 = buf * o.momentum + g / avg;
                        b.update(buf, buf1);
                        b.update(p, p + buf1 * neg_lr);
                    } else {
                        b.update(p, p + (g * neg_lr) / avg);
                    }
                }
            }
        }
    }
}

/// `scalars(p)` for every parameter, built once per distinct (dtype, lr scale, weight
/// decay) and before any per-parameter op, so that a one-group model's program is the
/// one it always was (its step scalars first, then the parameters' updates).
fn per_group<'g, T: Clone>(
    params: &[OptParam<'g>],
    mut scalars: impl FnMut(&OptParam<'g>) -> T,
) -> Vec<T> {
    // (dtype, lr scale bits, weight decay bits): what the scalars depend on.
    type GroupKey = (DType, u64, Option<u64>);
    let mut made: Vec<(GroupKey, T)> = Vec::new();
    params
        .iter()
        .map(|p| {
            let key = (
                p.param.dtype(),
                p.lr_scale.to_bits(),
                p.weight_decay.map(f64::to_bits),
            );
            if let Some((_, v)) = made.iter().find(|(k, _)| *k == key) {
                return v.clone();
            }
            let v = scalars(p);
            made.push((key, v.clone()));
            v
        })
        .collect()
}

/// One parameter as the optimizer updates it: its name (its state is named after it),
/// value, gradient, and its parameter group's settings.
#[derive(Debug, Clone)]
pub struct OptParam<'g> {
    pub name: String,
    pub param: Var<'g>,
    pub grad: Var<'g>,
    /// The group's lr over the optimizer's (`1.0` in the default group): a scheduler
    /// changes every group's lr by the same factor, as PyTorch's do.
    pub lr_scale: f64,
    /// The group's weight decay, if it sets one.
    pub weight_decay: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scheduler {
    /// Multiply by `gamma` every `step_size` epochs.
    StepLr { step_size: usize, gamma: f64 },
    /// Multiply by `gamma` every epoch.
    ExponentialLr { gamma: f64 },
    /// Cosine from the base lr down to `eta_min` over `t_max` epochs.
    CosineAnnealingLr { t_max: usize, eta_min: f64 },
    /// Multiply by `factor` when the monitored metric has not improved (decreased) for
    /// more than `patience` epochs.
    ReduceLrOnPlateau {
        factor: f64,
        patience: usize,
        min_lr: f64,
        best: f64,
        bad_epochs: usize,
    },
}

/// The command-line form (`--scheduler`): `step:STEP_SIZE:GAMMA`, `exp:GAMMA`,
/// `cosine:T_MAX[:ETA_MIN]`, `plateau:FACTOR:PATIENCE` (on the epoch's training loss).
impl std::str::FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Scheduler, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<f64, String> {
            let p = parts
                .get(i)
                .ok_or_else(|| format!("scheduler {s:?}: missing parameter {i}"))?;
            p.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("scheduler {s:?}: {p:?} is not a non-negative number"))
        };
        let count = |i: usize| -> Result<usize, String> {
            let v = num(i)?;
            if v.fract() != 0.0 {
                return Err(format!("scheduler {s:?}: {v} is not a whole number"));
            }
            Ok(v as usize)
        };
        let arity = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&(parts.len() - 1)) {
                Ok(())
            } else {
                Err(format!(
                    "scheduler {s:?}: {} takes {n:?} parameters",
                    parts[0]
                ))
            }
        };
        match parts[0] {
            "step" => {
                arity(2..=2)?;
                Ok(Scheduler::StepLr {
                    step_size: count(1)?.max(1),
                    gamma: num(2)?,
                })
            }
            "exp" => {
                arity(1..=1)?;
                Ok(Scheduler::ExponentialLr { gamma: num(1)? })
            }
            "cosine" => {
                arity(1..=2)?;
                Ok(Scheduler::CosineAnnealingLr {
                    t_max: count(1)?.max(1),
                    eta_min: if parts.len() > 2 { num(2)? } else { 0.0 },
                })
            }
            "plateau" => {
                arity(2..=2)?;
                Ok(Scheduler::reduce_on_plateau(num(1)?, count(2)?))
            }
            other => Err(format!(
                "unknown scheduler {other:?} (step:N:GAMMA, exp:GAMMA, cosine:T_MAX[:ETA_MIN], plateau:FACTOR:PATIENCE)"
            )),
        }
    }
}

impl Scheduler {
    pub fn reduce_on_plateau(factor: f64, patience: usize) -> Scheduler {
        Scheduler::ReduceLrOnPlateau {
            factor,
            patience,
            min_lr: 0.0,
            best: f64::INFINITY,
            bad_epochs: 0,
        }
    }

    /// The learning rate for epoch `epoch + 1`, given the base lr, the current lr and
    /// (for plateau detection) the epoch's metric.
    pub fn next_lr(&mut self, base_lr: f64, lr: f64, epoch: usize, metric: Option<f64>) -> f64 {
        let e = epoch + 1;
        match self {
            Scheduler::StepLr { step_size, gamma } => {
                base_lr * gamma.powi((e / (*step_size).max(1)) as i32)
            }
            Scheduler::ExponentialLr { gamma } => base_lr * gamma.powi(e as i32),
            Scheduler::CosineAnnealingLr { t_max, eta_min } => {
                let t = (e.min(*t_max)) as f64 / (*t_max).max(1) as f64;
                *eta_min + (base_lr - *eta_min) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
            Scheduler::ReduceLrOnPlateau {
                factor,
                patience,
                min_lr,
                best,
                bad_epochs,
            } => {
                let Some(m) = metric else { return lr };
                if m < *best {
                    *best = m;
                    *bad_epochs = 0;
                    lr
                } else {
                    *bad_epochs += 1;
                    if *bad_epochs > *patience {
                        *bad_epochs = 0;
                        (lr * *factor).max(*min_lr)
                    } else {
                        lr
                    }
                }
            }
        }
    }
}

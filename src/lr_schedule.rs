//! Per-step learning-rate schedules (PyTorch's `LambdaLR`, `LinearLR` warm-up,
//! warm-up then cosine decay, `OneCycleLR`), for [`crate::train::Trainer::schedule`].
//!
//! The learning rate is an `f64[]` input of the compiled step, so a schedule is host
//! arithmetic between steps: the step before update `k` (0-based, counting applied
//! updates) runs with `lr_at(base_lr, k)`, which is what PyTorch's scheduler gives the
//! `k`-th `optimizer.step()` when `scheduler.step()` follows every optimizer step.
//! Parameter groups scale with it (each group's lr keeps its ratio to the base lr).

use std::sync::Arc;

/// A learning rate as a function of the update count.
#[derive(Clone)]
pub enum LrSchedule {
    /// `LambdaLR(lr_lambda)`: `base_lr * f(k)`.
    Lambda(Arc<dyn Fn(u64) -> f64 + Send + Sync>),
    /// `LinearLR(start_factor, end_factor=1.0, total_iters=warmup_steps)`: the factor
    /// goes linearly from `start_factor` to 1 over `warmup_steps`, then stays 1.
    LinearWarmup {
        warmup_steps: u64,
        start_factor: f64,
    },
    /// Linear warm-up to the base lr over `warmup_steps` (`(k + 1) / warmup_steps`), then
    /// cosine decay to `min_factor * base_lr` at `total_steps` (and flat after): the
    /// nanoGPT schedule.
    WarmupCosine {
        warmup_steps: u64,
        total_steps: u64,
        min_factor: f64,
    },
    /// `OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy, div_factor,
    /// final_div_factor, three_phase=False, cycle_momentum=False)`: from
    /// `max_lr / div_factor` up to `max_lr` over the first `pct_start` of the steps, then
    /// down to `max_lr / div_factor / final_div_factor`. The base lr is ignored (as
    /// PyTorch overwrites the group's lr). Momentum cycling is not supported: momentum is
    /// a constant of the compiled step.
    OneCycle {
        max_lr: f64,
        total_steps: u64,
        pct_start: f64,
        cosine: bool,
        div_factor: f64,
        final_div_factor: f64,
    },
}

impl std::fmt::Debug for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LrSchedule::Lambda(_) => f.write_str("LambdaLR(<fn>)"),
            LrSchedule::LinearWarmup {
                warmup_steps,
                start_factor,
            } => write!(
                f,
                "LinearLR(start_factor={start_factor:?}, total_iters={warmup_steps})"
            ),
            LrSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_factor,
            } => write!(
                f,
                "WarmupCosine(warmup_steps={warmup_steps}, total_steps={total_steps}, min_factor={min_factor:?})"
            ),
            LrSchedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                cosine,
                div_factor,
                final_div_factor,
            } => write!(
                f,
                "OneCycleLR(max_lr={max_lr:?}, total_steps={total_steps}, pct_start={pct_start:?}, anneal_strategy={}, div_factor={div_factor:?}, final_div_factor={final_div_factor:?})",
                if *cosine { "cos" } else { "linear" }
            ),
        }
    }
}

impl LrSchedule {
    /// `OneCycleLR` with PyTorch's defaults (`pct_start=0.3`, cosine, `div_factor=25`,
    /// `final_div_factor=1e4`).
    pub fn one_cycle(max_lr: f64, total_steps: u64) -> LrSchedule {
        LrSchedule::OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            cosine: true,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }

    /// `LambdaLR` with a closure of the update count.
    pub fn lambda(f: impl Fn(u64) -> f64 + Send + Sync + 'static) -> LrSchedule {
        LrSchedule::Lambda(Arc::new(f))
    }

    /// The learning rate of update `k` (0-based).
    pub fn lr_at(&self, base_lr: f64, k: u64) -> f64 {
        match self {
            LrSchedule::Lambda(f) => base_lr * f(k),
            LrSchedule::LinearWarmup {
                warmup_steps,
                start_factor,
            } => {
                let total = (*warmup_steps).max(1);
                let done = k.min(total) as f64 / total as f64;
                base_lr * (start_factor + (1.0 - start_factor) * done)
            }
            LrSchedule::WarmupCosine {
                warmup_steps,
                total_steps,
                min_factor,
            } => base_lr * warmup_cosine(k, *warmup_steps, *total_steps, *min_factor),
            LrSchedule::OneCycle {
                max_lr,
                total_steps,
                pct_start,
                cosine,
                div_factor,
                final_div_factor,
            } => {
                let initial = max_lr / div_factor;
                let min_lr = initial / final_div_factor;
                // PyTorch's phase ends: `pct_start * total - 1` and `total - 1`.
                let end1 = pct_start * *total_steps as f64 - 1.0;
                let end2 = *total_steps as f64 - 1.0;
                let step = k as f64;
                let anneal = |start: f64, end: f64, pct: f64| {
                    if *cosine {
                        end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
                    } else {
                        (end - start) * pct + start
                    }
                };
                if step <= end1 {
                    anneal(initial, *max_lr, step / end1)
                } else {
                    anneal(*max_lr, min_lr, (step - end1) / (end2 - end1))
                }
            }
        }
    }
}

/// The warm-up-then-cosine factor of update `k`.
pub fn warmup_cosine(k: u64, warmup: u64, total: u64, min_factor: f64) -> f64 {
    if k < warmup {
        return (k + 1) as f64 / warmup as f64;
    }
    if k >= total {
        return min_factor;
    }
    let progress = (k - warmup) as f64 / (total - warmup).max(1) as f64;
    min_factor + (1.0 - min_factor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = LrSchedule::WarmupCosine {
            warmup_steps: 4,
            total_steps: 10,
            min_factor: 0.1,
        };
        assert_eq!(s.lr_at(1.0, 0), 0.25);
        assert_eq!(s.lr_at(1.0, 3), 1.0);
        assert_eq!(s.lr_at(1.0, 4), 1.0);
        assert!((s.lr_at(1.0, 7) - 0.55).abs() < 1e-12);
        assert_eq!(s.lr_at(1.0, 50), 0.1);
    }

    #[test]
    fn one_cycle_matches_pytorchs_endpoints() {
        let s = LrSchedule::one_cycle(0.1, 100);
        assert!((s.lr_at(0.0, 0) - 0.004).abs() < 1e-15);
        assert!((s.lr_at(0.0, 29) - 0.1).abs() < 1e-15);
        assert!((s.lr_at(0.0, 99) - 0.004 / 1e4).abs() < 1e-15);
    }

    #[test]
    fn linear_warmup_and_lambda() {
        let s = LrSchedule::LinearWarmup {
            warmup_steps: 4,
            start_factor: 0.2,
        };
        assert!((s.lr_at(1.0, 2) - 0.6).abs() < 1e-15);
        assert_eq!(s.lr_at(1.0, 9), 1.0);
        let l = LrSchedule::lambda(|k| 0.5f64.powi(k as i32));
        assert_eq!(l.lr_at(2.0, 3), 0.25);
    }
}

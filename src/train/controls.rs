//! Training controls a trainer compiles into its step: the batch's declared tensors,
//! parameter groups, gradient clipping, and the parameter patterns that freeze,
//! group and initialise parameters.

use aotgrad_ir::{DType, GraphBuilder, Shape, Var};

/// A batch tensor the trainer declared: a model input or a tensor only the loss reads.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Feed {
    pub name: String,
    pub dtype: DType,
    /// Per-sample dims (the batch dim `N` goes in front).
    pub dims: Shape,
    pub target: bool,
}

/// A parameter group (PyTorch's `optimizer.param_groups` entry): the parameters its
/// patterns match (see [`super::Trainer::freeze`] for the pattern forms) get its lr
/// and weight decay instead of the optimizer's.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    pub params: Vec<String>,
    pub lr: Option<f64>,
    pub weight_decay: Option<f64>,
}

impl ParamGroup {
    /// The group of the parameters matching any of `patterns`.
    pub fn new(patterns: &[&str]) -> ParamGroup {
        ParamGroup {
            params: patterns.iter().map(|p| p.to_string()).collect(),
            lr: None,
            weight_decay: None,
        }
    }

    pub fn lr(mut self, lr: f64) -> ParamGroup {
        self.lr = Some(lr);
        self
    }

    pub fn weight_decay(mut self, wd: f64) -> ParamGroup {
        self.weight_decay = Some(wd);
        self
    }

    pub fn matches(&self, name: &str) -> bool {
        self.params.iter().any(|p| pattern_matches(p, name))
    }
}

/// Whether parameter `name` matches `pattern`: the name itself, a module path above it
/// (`fc1` matches `fc1.weight`), or a pattern with one `*` at the start or the end
/// (`*.bias`, `encoder.*`), or at both (`*bias*`: the name contains it).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(inner) = pattern.strip_prefix('*').and_then(|p| p.strip_suffix('*')) {
        return name.contains(inner);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return name.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return name.starts_with(prefix);
    }
    name == pattern
        || name
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Gradient clipping settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct Clip {
    pub norm: Option<f64>,
    pub value: Option<f64>,
}

impl Clip {
    /// The clipped gradients, and with a norm clip the total norm before it (as
    /// `clip_grad_norm_` returns it); `None` when nothing clips.
    pub fn apply<'g>(
        &self,
        b: &'g GraphBuilder,
        grads: &[Var<'g>],
    ) -> Option<(Vec<Var<'g>>, Option<Var<'g>>)> {
        if self.norm.is_none() && self.value.is_none() {
            return None;
        }
        let mut gs = grads.to_vec();
        if let Some(v) = self.value {
            gs = gs.iter().map(|g| g.clamp(Some(-v), Some(v))).collect();
        }
        let mut total = None;
        if let Some(max_norm) = self.norm
            && !gs.is_empty()
        {
            // PyTorch: the norm of the stacked per-tensor norms, in the gradients'
            // dtype (the widest, for a mixed model).
            let dtype = gs
                .iter()
                .map(|g| g.dtype())
                .fold(gs[0].dtype(), DType::promote);
            let norms: Vec<Var<'g>> = gs
                .iter()
                .map(|g| g.cast(dtype).square().sum_all().sqrt())
                .collect();
            let t = b.stack(&norms, 0).square().sum_all().sqrt();
            let coef = b.scalar(max_norm, dtype) / (t + 1e-6);
            let clamped = coef.minimum(1.0);
            gs = gs.iter().map(|g| *g * clamped.cast(g.dtype())).collect();
            total = Some(t);
        }
        Some((gs, total))
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn patterns() {
        assert!(pattern_matches("fc1", "fc1.weight"));
        assert!(pattern_matches("fc1.weight", "fc1.weight"));
        assert!(!pattern_matches("fc1", "fc10.weight"));
        assert!(pattern_matches("*.bias", "0.bias"));
        assert!(pattern_matches("enc.*", "enc.0.weight"));
        assert!(!pattern_matches("*.bias", "0.weight"));
        assert!(pattern_matches("*bias*", "bias_hh_l0"));
    }
}

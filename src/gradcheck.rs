//! Gradient checking: autodiff gradients against central finite differences, in f64.

use std::collections::HashMap;
use std::fmt;

use aotgrad_compiler::{GradError, Seed, grad_named, precision::widen_f32_to_f64};
use aotgrad_ir::{DType, Data, Graph, GraphError, Op};
use aotgrad_runtime::{RunError, Tensor};

/// Settings of [`gradcheck`].
#[derive(Debug, Clone, Copy)]
pub struct GradcheckOptions {
    /// Central-difference step.
    pub eps: f64,
    /// Seed of the random output cotangents (a rule that ignores its incoming gradient
    /// cannot pass with a random cotangent).
    pub seed: u64,
    /// Relative errors are taken against `max(|ad|, |fd|, floor)`: gradients far below
    /// the objective's scale carry the cancellation error of the difference quotient
    /// (about `1e-16 * |f| / eps`), which says nothing about the rule.
    pub floor: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            seed: 0x5eed,
            floor: 1e-3,
        }
    }
}

/// The comparison for one `wrt` leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct InputCheck {
    pub name: String,
    pub elements: usize,
    /// Largest `|ad - fd|`.
    pub max_abs_error: f64,
    /// Largest `|ad - fd| / max(|ad|, |fd|, floor)`.
    pub max_rel_error: f64,
}

/// Per-input results of [`gradcheck`].
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    pub inputs: Vec<InputCheck>,
}

impl GradcheckReport {
    /// The worst relative error over all inputs (NaN when any comparison was NaN).
    pub fn worst(&self) -> f64 {
        self.inputs.iter().map(|c| c.max_rel_error).fold(0.0, worse)
    }

    /// Every error is a number at most `tolerance`: a NaN or infinite error fails.
    pub fn passed(&self, tolerance: f64) -> bool {
        self.inputs
            .iter()
            .all(|c| c.max_rel_error.is_finite() && c.max_rel_error <= tolerance)
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>8} {:>12} {:>12}",
            "input", "elements", "max_abs", "max_rel"
        )?;
        for c in &self.inputs {
            writeln!(
                f,
                "{:<24} {:>8} {:>12.3e} {:>12.3e}",
                c.name, c.elements, c.max_abs_error, c.max_rel_error
            )?;
        }
        Ok(())
    }
}

/// Why a gradient check could not run.
#[derive(Debug, thiserror::Error)]
pub enum GradcheckError {
    #[error(transparent)]
    Grad(#[from] GradError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0:?} is not an input or param: finite differences perturb leaves only")]
    NotLeaf(String),
    #[error("the graph has no floating-point output to check")]
    NoOutput,
    #[error("the step eps = {0} must be a finite number above 0")]
    BadEps(f64),
}

impl GradcheckOptions {
    /// Refuses a step that cannot give a difference quotient (0, negative, NaN,
    /// infinite).
    pub fn validate(&self) -> Result<(), GradcheckError> {
        if self.eps.is_finite() && self.eps > 0.0 {
            Ok(())
        } else {
            Err(GradcheckError::BadEps(self.eps))
        }
    }
}

/// The larger error, NaN winning: `f64::max` drops a NaN, which once let a check whose
/// every comparison was NaN (a NaN input, `eps = 0`) report an error of 0 and pass.
fn worse(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// A deterministic generator for cotangents in `[-1, 1)`.
fn lcg(state: &mut u64) -> f64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn widen_feed(t: &Tensor) -> Tensor {
    if t.dtype() == DType::F32 {
        t.cast(DType::F64)
    } else {
        t.clone()
    }
}

/// Checks the gradients of `L = sum_o sum(output_o * c_o)` (random cotangents `c_o` over
/// every floating-point output) with respect to each leaf in `wrt`, comparing reverse-mode
/// autodiff with central differences. The program is widened to f64 first.
pub fn gradcheck(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    wrt: &[&str],
    opts: GradcheckOptions,
) -> Result<GradcheckReport, GradcheckError> {
    opts.validate()?;
    let g = widen_f32_to_f64(graph)?;
    let feeds: HashMap<String, Tensor> = feeds
        .iter()
        .map(|(k, v)| (k.clone(), widen_feed(v)))
        .collect();
    for w in wrt {
        match g.find(w).map(|id| &g.node(id).op) {
            Some(Op::Input { .. } | Op::Param { .. } | Op::State { .. }) => {}
            _ => return Err(GradcheckError::NotLeaf(w.to_string())),
        }
    }
    // Output shapes come from one forward run (symbols are bound by the feeds).
    let fwd = aotgrad_runtime::run(&g, &feeds)?;
    let mut rng = opts.seed;
    let mut cots: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in &fwd.outputs {
        if t.dtype() == DType::F64 {
            let vals: Vec<f64> = (0..t.len()).map(|_| lcg(&mut rng)).collect();
            cots.push((
                name.clone(),
                Tensor::from_f64(&vals, t.shape()).expect("sized from t"),
            ));
        }
    }
    if cots.is_empty() {
        return Err(GradcheckError::NoOutput);
    }
    // Cotangents enter as inputs (`<output>.seed`), which works for symbolic shapes too.
    let seeds: Vec<(&str, Seed)> = cots
        .iter()
        .map(|(n, _)| (n.as_str(), Seed::Input))
        .collect();
    let names: Vec<(String, String)> = wrt
        .iter()
        .map(|w| (w.to_string(), format!("gradcheck:{w}")))
        .collect();
    let named: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let joint = grad_named(&g, &seeds, &named)?;
    let mut joint_feeds = feeds.clone();
    for (n, c) in &cots {
        joint_feeds.insert(format!("{n}.seed"), c.clone());
    }
    let ad = aotgrad_runtime::run(&joint, &joint_feeds)?;

    // The outputs, element by element: the difference quotient subtracts them before
    // weighting and summing, so a large output elsewhere (exp(80) beside exp(1)) cannot
    // cancel away the small changes of another.
    let outputs = |feeds: &HashMap<String, Tensor>| -> Result<Vec<Vec<f64>>, RunError> {
        let r = aotgrad_runtime::run(&g, feeds)?;
        Ok(cots
            .iter()
            .map(|(n, _)| r.output(n).expect("same graph").to_f64_vec())
            .collect())
    };
    let cot_values: Vec<Vec<f64>> = cots.iter().map(|(_, c)| c.to_f64_vec()).collect();
    let mut report = GradcheckReport { inputs: Vec::new() };
    for (w, gname) in &names {
        let analytic = ad.output(gname).expect("gradient output").to_f64_vec();
        let base = feeds[w].clone();
        let mut check = InputCheck {
            name: w.clone(),
            elements: base.len(),
            max_abs_error: 0.0,
            max_rel_error: 0.0,
        };
        for (i, &a) in analytic.iter().enumerate() {
            let at = |delta: f64| -> Result<Vec<Vec<f64>>, RunError> {
                let mut v = base.as_f64().expect("widened").to_vec();
                v[i] += delta;
                let mut f = feeds.clone();
                f.insert(
                    w.clone(),
                    Tensor::new(base.shape(), Data::F64(v)).expect("same size"),
                );
                outputs(&f)
            };
            let (plus, minus) = (at(opts.eps)?, at(-opts.eps)?);
            let diff: f64 = plus
                .iter()
                .zip(&minus)
                .zip(&cot_values)
                .flat_map(|((p, m), c)| p.iter().zip(m).zip(c).map(|((p, m), c)| (p - m) * c))
                .sum();
            let fd = diff / (2.0 * opts.eps);
            let abs = (a - fd).abs();
            check.max_abs_error = worse(check.max_abs_error, abs);
            let scale = a.abs().max(fd.abs());
            let rel = abs / scale.max(opts.floor);
            check.max_rel_error = worse(check.max_rel_error, rel);
        }
        report.inputs.push(check);
    }
    Ok(report)
}

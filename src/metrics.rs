//! Classification metrics computed on the host from a program's outputs.

use aotgrad_runtime::Tensor;

/// Row-wise argmax of a `[N, C]` tensor (first maximum wins, as `torch.argmax`).
pub fn argmax_rows(output: &Tensor) -> Vec<usize> {
    let v = output.to_f64_vec();
    let c = output.shape().last().copied().unwrap_or(1).max(1);
    v.chunks(c)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
                    if x > bv { (i, x) } else { (bi, bv) }
                })
                .0
        })
        .collect()
}

/// Number of rows whose argmax equals the integer label.
pub fn correct_argmax(output: &Tensor, labels: &Tensor) -> usize {
    argmax_rows(output)
        .iter()
        .zip(labels.to_f64_vec())
        .filter(|(p, l)| **p as f64 == *l)
        .count()
}

/// Number of probabilities (or logits, with `threshold` 0) on the correct side of
/// `threshold` for 0/1 labels.
pub fn correct_binary(output: &Tensor, labels: &Tensor, threshold: f64) -> usize {
    output
        .to_f64_vec()
        .iter()
        .zip(labels.to_f64_vec())
        .filter(|(p, l)| ((**p >= threshold) as u8 as f64) == *l)
        .count()
}

/// A confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    pub counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

impl Confusion {
    /// Builds the matrix from predicted and true class indices in `0..classes`; indices
    /// out of range are an error naming the first one.
    pub fn new(classes: usize, predicted: &[usize], truth: &[usize]) -> Result<Confusion, String> {
        if predicted.len() != truth.len() {
            return Err(format!(
                "{} predictions for {} labels",
                predicted.len(),
                truth.len()
            ));
        }
        let mut counts = vec![vec![0u64; classes]; classes];
        for (i, (&p, &t)) in predicted.iter().zip(truth).enumerate() {
            if p >= classes || t >= classes {
                return Err(format!(
                    "sample {i}: class {} is not below {classes}",
                    p.max(t)
                ));
            }
            counts[t][p] += 1;
        }
        Ok(Confusion { counts })
    }

    /// The matrix an eval program computed (`metric.confusion`: `[C, C]` integer
    /// counts, true class by predicted class).
    pub fn from_counts(t: &Tensor) -> Result<Confusion, String> {
        let [r, c] = t.shape() else {
            return Err(format!("a confusion matrix is [C, C], got {:?}", t.shape()));
        };
        if r != c {
            return Err(format!("a confusion matrix is square, got {:?}", t.shape()));
        }
        let v = t.to_f64_vec();
        if v.iter().any(|x| *x < 0.0 || x.fract() != 0.0) {
            return Err("a confusion matrix holds non-negative whole counts".into());
        }
        let counts = v
            .chunks(*c)
            .map(|row| row.iter().map(|&x| x as u64).collect())
            .collect();
        Ok(Confusion { counts })
    }

    /// Adds another matrix of the same size (batches of one evaluation).
    pub fn add(&mut self, other: &Confusion) -> Result<(), String> {
        if other.counts.len() != self.counts.len() {
            return Err(format!(
                "adding a {0}x{0} confusion matrix to a {1}x{1} one",
                other.counts.len(),
                self.counts.len()
            ));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// Scores of class `c` (0 where undefined, as scikit-learn's `zero_division=0`).
    pub fn class(&self, c: usize) -> ClassScores {
        let tp = self.counts[c][c] as f64;
        let predicted: u64 = self.counts.iter().map(|row| row[c]).sum();
        let support: u64 = self.counts[c].iter().sum();
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let precision = div(tp, predicted as f64);
        let recall = div(tp, support as f64);
        ClassScores {
            precision,
            recall,
            f1: div(2.0 * precision * recall, precision + recall),
            support,
        }
    }

    /// Unweighted mean of per-class precision, recall and F1 (macro average).
    pub fn macro_avg(&self) -> ClassScores {
        let k = self.counts.len() as f64;
        let all: Vec<ClassScores> = (0..self.counts.len()).map(|c| self.class(c)).collect();
        ClassScores {
            precision: all.iter().map(|s| s.precision).sum::<f64>() / k,
            recall: all.iter().map(|s| s.recall).sum::<f64>() / k,
            f1: all.iter().map(|s| s.f1).sum::<f64>() / k,
            support: self.total(),
        }
    }
}

impl std::fmt::Display for Confusion {
    /// The matrix and a per-class table, as printed by the examples.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let k = self.counts.len();
        write!(f, "true\\pred")?;
        for c in 0..k {
            write!(f, " {c:>6}")?;
        }
        writeln!(f)?;
        for (t, row) in self.counts.iter().enumerate() {
            write!(f, "{t:>9}")?;
            for v in row {
                write!(f, " {v:>6}")?;
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "{:>9} {:>9} {:>9} {:>9} {:>9}",
            "class", "precision", "recall", "f1", "support"
        )?;
        for c in 0..k {
            let s = self.class(c);
            writeln!(
                f,
                "{c:>9} {:>9.4} {:>9.4} {:>9.4} {:>9}",
                s.precision, s.recall, s.f1, s.support
            )?;
        }
        let m = self.macro_avg();
        writeln!(
            f,
            "{:>9} {:>9.4} {:>9.4} {:>9.4} {:>9}",
            "macro", m.precision, m.recall, m.f1, m.support
        )
    }
}

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

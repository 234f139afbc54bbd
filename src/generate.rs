//! Sampling text from a trained character model with its compiled inference program.
//!
//! **A fixed window, not a key/value cache.** Every new character runs the step's
//! *predict* program (evaluation mode: dropout off, no gradient, no update) on one
//! window of `T` token ids, `T` the length the model was compiled for, and reads the
//! logits at the last real position. While the text is shorter than `T` the window is
//! right-padded; the causal mask (GPT) and the one-way recurrence (LSTM) keep the
//! padding from reaching earlier positions, so those logits are exact. Past `T`
//! characters the window slides, as nanoGPT's `generate` crops to `block_size`, and an
//! LSTM restarts from a zero state at the window's first character, as every training
//! window did.
//!
//! Why not a cache: a cache of keys and values (or the LSTM's `(h, c)`) turns each new
//! character into a program over one position, `T` times less arithmetic, but it needs a
//! second program per model whose state lives between calls and, for attention, a
//! length that changes every call; the one predict program the trainer already compiled
//! serves both models, is bitwise the model the loss was measured on, and costs 6 to 10
//! ms a character at these sizes on 2 threads (`examples/char_lstm.rs` and
//! `examples/gpt.rs` print the rate; docs/decisions/sequence-models.md).

use crate::data::Rng;
use crate::data::text::{CharCorpus, TextError};
use crate::train::{TrainError, TrainStep};
use aotgrad_runtime::Tensor;

/// What can stop a sample.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("the temperature must be positive and finite, got {0}")]
    Temperature(f64),
    #[error("the window must hold at least one character")]
    EmptyWindow,
    #[error(
        "the model returned {got} for a [1, {window}] window; expected [1, {window}, {vocab}] logits"
    )]
    Logits {
        got: String,
        window: usize,
        vocab: usize,
    },
}

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// Characters to generate after the prompt.
    pub chars: usize,
    /// Divides the logits before the softmax: below 1 sharper, above 1 flatter.
    pub temperature: f64,
    pub seed: u64,
    /// The sequence length the model's programs take (`T` of its `[N, T]` input).
    pub window: usize,
}

/// The prompt followed by `opts.chars` characters drawn from `step`'s model (see the
/// module docs); the same seed draws the same text.
pub fn sample(
    step: &TrainStep,
    corpus: &CharCorpus,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<String, SampleError> {
    if !(opts.temperature > 0.0 && opts.temperature.is_finite()) {
        return Err(SampleError::Temperature(opts.temperature));
    }
    let t = opts.window;
    if t == 0 {
        return Err(SampleError::EmptyWindow);
    }
    let vocab = corpus.vocab_size();
    // An empty prompt starts from a newline, as the plays' lines do (or the first
    // character of the vocabulary if a corpus has none).
    let mut ids: Vec<i64> = corpus.encode(prompt)?.into_iter().map(i64::from).collect();
    if ids.is_empty() {
        ids.push(corpus.encode("\n").map_or(0, |v| i64::from(v[0])));
    }
    let mut rng = Rng::new(opts.seed);
    for _ in 0..opts.chars {
        let start = ids.len().saturating_sub(t);
        let real = ids.len() - start;
        let mut window = ids[start..].to_vec();
        window.resize(t, 0);
        let x = Tensor::from_i64(&window, &[1, t]).expect("1 x T ids");
        let logits = step.predict(&x)?;
        if logits.shape() != [1, t, vocab] {
            return Err(SampleError::Logits {
                got: logits.ty().to_string(),
                window: t,
                vocab,
            });
        }
        let row = &logits.to_f64_vec()[(real - 1) * vocab..real * vocab];
        ids.push(draw(row, opts.temperature, &mut rng) as i64);
    }
    Ok(corpus.decode(&ids)?)
}

/// An index drawn from `softmax(logits / temperature)`.
fn draw(logits: &[f64], temperature: f64, rng: &mut Rng) -> usize {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| ((l - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    // Rounding left `u` past the last weight: the last index with any weight.
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge logit wins at any sane temperature; a flat row spreads the draws.
    #[test]
    fn draws_follow_the_softmax() {
        let mut rng = Rng::new(1);
        assert_eq!(draw(&[0.0, 50.0, 0.0], 1.0, &mut rng), 1);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            seen[draw(&[1.0; 4], 1.0, &mut rng)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        // A low temperature sharpens 1 vs 2 into nearly always 2.
        let mut twos = 0;
        for _ in 0..1000 {
            twos += usize::from(draw(&[1.0, 2.0], 0.05, &mut rng) == 1);
        }
        assert!(twos > 990, "{twos}");
    }
}

//! Character-level text for sequence models (issue 31): a corpus and its vocabulary,
//! a train/validation split, and seeded random `(B, T)` windows with next-character
//! targets, as the "makemore"/"nanoGPT" exercises load their data.
//!
//! The bundled corpus is seven Shakespeare tragedies, about 1 MB of ASCII
//! (`data/shakespeare/`, provenance and licence in `data/README.md`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::{Batch, Rng};
use aotgrad_runtime::Tensor;

/// Why a corpus could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not UTF-8 text ({error})")]
    NotUtf8 {
        path: PathBuf,
        error: std::string::FromUtf8Error,
    },
    #[error(
        "the corpus has {len} characters: too short for a validation fraction of {fraction} and windows of {block} + 1"
    )]
    TooShort {
        len: usize,
        fraction: f64,
        block: usize,
    },
    #[error("character {ch:?} is not in the corpus's vocabulary of {vocab} characters")]
    Unknown { ch: char, vocab: usize },
    #[error("token {id} is outside the vocabulary of {vocab} characters")]
    BadToken { id: i64, vocab: usize },
    #[error("windows need a batch and a block size of at least 1 (got {batch} x {block})")]
    EmptyWindow { batch: usize, block: usize },
}

/// Which part of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Validation,
}

/// A text as token ids over its sorted character vocabulary, split into a training
/// head and a validation tail (nanoGPT's split: the last `fraction` of the text).
#[derive(Debug, Clone)]
pub struct CharCorpus {
    /// The distinct characters, sorted; a character's id is its position.
    pub vocab: Vec<char>,
    ids: BTreeMap<char, u32>,
    train: Vec<u32>,
    validation: Vec<u32>,
}

/// Where the bundled corpus lives.
pub fn bundled_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("shakespeare")
        .join("tragedies.txt.gz")
}

impl CharCorpus {
    /// The bundled Shakespeare tragedies with the last 10% held out.
    pub fn bundled() -> Result<CharCorpus, TextError> {
        CharCorpus::from_text(&read_text(&bundled_path())?, 0.1)
    }

    /// `text`'s vocabulary and ids; the last `validation_fraction` of the characters
    /// (in `[0, 1)`) are the validation part.
    pub fn from_text(text: &str, validation_fraction: f64) -> Result<CharCorpus, TextError> {
        let chars: Vec<char> = text.chars().collect();
        let fraction = validation_fraction.clamp(0.0, 0.999);
        let mut vocab: Vec<char> = chars.clone();
        vocab.sort_unstable();
        vocab.dedup();
        let ids: BTreeMap<char, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        let all: Vec<u32> = chars.iter().map(|c| ids[c]).collect();
        let cut = all.len() - (all.len() as f64 * fraction).round() as usize;
        let validation = all[cut..].to_vec();
        let mut train = all;
        train.truncate(cut);
        Ok(CharCorpus {
            vocab,
            ids,
            train,
            validation,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    pub fn part(&self, part: Part) -> &[u32] {
        match part {
            Part::Train => &self.train,
            Part::Validation => &self.validation,
        }
    }

    /// `s` as ids; a character outside the vocabulary is an error.
    pub fn encode(&self, s: &str) -> Result<Vec<u32>, TextError> {
        s.chars()
            .map(|ch| {
                self.ids.get(&ch).copied().ok_or(TextError::Unknown {
                    ch,
                    vocab: self.vocab.len(),
                })
            })
            .collect()
    }

    /// Ids back to text; an id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[i64]) -> Result<String, TextError> {
        ids.iter()
            .map(|&id| {
                usize::try_from(id)
                    .ok()
                    .and_then(|i| self.vocab.get(i).copied())
                    .ok_or(TextError::BadToken {
                        id,
                        vocab: self.vocab.len(),
                    })
            })
            .collect()
    }

    /// Batch `index` of windows from `part`, the same for the same `(seed, index)` on
    /// every machine: `batch` windows of `block` characters at uniformly random starts,
    /// `x` the ids (`i64[batch, block]`) and `y` the next character at every position.
    pub fn windows(
        &self,
        part: Part,
        batch: usize,
        block: usize,
        seed: u64,
        index: u64,
    ) -> Result<Batch, TextError> {
        if batch == 0 || block == 0 {
            return Err(TextError::EmptyWindow { batch, block });
        }
        let ids = self.part(part);
        let starts =
            ids.len()
                .checked_sub(block)
                .filter(|&n| n > 0)
                .ok_or(TextError::TooShort {
                    len: ids.len(),
                    fraction: self.validation.len() as f64
                        / (self.train.len() + self.validation.len()).max(1) as f64,
                    block,
                })?;
        // One stream per batch: batch `index` does not depend on the ones before it
        // (a resumed run draws the same windows).
        let mut rng = Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut x = Vec::with_capacity(batch * block);
        let mut y = Vec::with_capacity(batch * block);
        for _ in 0..batch {
            let s = rng.below(starts);
            x.extend(ids[s..s + block].iter().map(|&i| i64::from(i)));
            y.extend(ids[s + 1..s + block + 1].iter().map(|&i| i64::from(i)));
        }
        Ok(Batch {
            x: Tensor::from_i64(&x, &[batch, block]).expect("batch x block ids"),
            y: Tensor::from_i64(&y, &[batch, block]).expect("batch x block ids"),
        })
    }
}

/// A text file, gunzipped when its name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String, TextError> {
    let io = |error| TextError::Io {
        path: path.to_path_buf(),
        error,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    String::from_utf8(bytes).map_err(|error| TextError::NotUtf8 {
        path: path.to_path_buf(),
        error,
    })
}

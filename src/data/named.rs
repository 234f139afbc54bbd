//! Batches of several named tensors (PyTorch's dict and tuple batches): [`TensorDict`],
//! a dataset of several tensors ([`NamedTensorDataset`]), variable-length sequences
//! padded by a collate function ([`PaddedSequences`]), and a seeded loader over either
//! ([`DictLoader`], the same shuffling as [`super::DataLoader`]).

use aotgrad_runtime::Tensor;

use super::{Batch, Batching, DataError, take_rows};

/// What a training step can run on: named tensors, batch dim first.
pub trait BatchTensors {
    /// The tensors and the names the trainer declared for them.
    fn tensors(&self) -> Vec<(&str, &Tensor)>;

    /// The batch size: the first dim of the first tensor.
    fn batch_size(&self) -> usize {
        self.tensors()
            .first()
            .and_then(|(_, t)| t.shape().first().copied())
            .unwrap_or(1)
    }
}

/// The course's `(x, y)` batch is the tensors `x` and `y`.
impl BatchTensors for Batch {
    fn tensors(&self) -> Vec<(&str, &Tensor)> {
        vec![("x", &self.x), ("y", &self.y)]
    }
}

/// Named tensors sharing their first (batch) dim: `{"tokens": .., "mask": .., "y": ..}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorDict {
    items: Vec<(String, Tensor)>,
}

impl TensorDict {
    pub fn new() -> TensorDict {
        TensorDict::default()
    }

    /// Adds (or replaces) `name`.
    pub fn with(mut self, name: &str, t: Tensor) -> TensorDict {
        self.insert(name, t);
        self
    }

    pub fn insert(&mut self, name: &str, t: Tensor) {
        match self.items.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = t,
            None => self.items.push((name.to_string(), t)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn into_items(self) -> Vec<(String, Tensor)> {
        self.items
    }
}

impl BatchTensors for TensorDict {
    fn tensors(&self) -> Vec<(&str, &Tensor)> {
        self.items.iter().map(|(n, t)| (n.as_str(), t)).collect()
    }
}

/// Something a [`DictLoader`] batches: `len` samples, collated by index.
pub trait DictDataset {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `indices` as one batch.
    fn collate(&self, indices: &[usize]) -> Result<TensorDict, DataError>;
}

/// `TensorDataset(*tensors)` with names: every tensor's first axis is the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensorDataset {
    tensors: Vec<(String, Tensor)>,
}

impl NamedTensorDataset {
    pub fn new(tensors: Vec<(String, Tensor)>) -> Result<NamedTensorDataset, DataError> {
        let n = tensors
            .first()
            .and_then(|(_, t)| t.shape().first().copied());
        for (name, t) in &tensors {
            if t.shape().first().copied() != n || n.is_none() {
                return Err(DataError::Invalid(format!(
                    "tensor {name:?} of shape {:?}: every tensor needs the same first (sample) dimension, {}",
                    t.shape(),
                    n.map_or("and at least one dim".to_string(), |n| n.to_string())
                )));
            }
        }
        if tensors.is_empty() {
            return Err(DataError::Invalid(
                "a dataset needs at least one tensor".into(),
            ));
        }
        Ok(NamedTensorDataset { tensors })
    }
}

impl DictDataset for NamedTensorDataset {
    fn len(&self) -> usize {
        self.tensors[0].1.shape()[0]
    }

    fn collate(&self, indices: &[usize]) -> Result<TensorDict, DataError> {
        Ok(TensorDict {
            items: self
                .tensors
                .iter()
                .map(|(n, t)| (n.clone(), take_rows(t, indices)))
                .collect(),
        })
    }
}

/// Variable-length integer sequences (token ids) with per-sample tensors beside them
/// (labels), collated PyTorch-`pad_sequence`-style: `tokens` `i64[B, max_len]` padded
/// with `pad` after each sequence, `mask` `f32[B, max_len]` (1 on real tokens), and
/// `lengths` `i64[B]`. `max_len` is fixed, so every batch has the same shape and one
/// compiled program serves them all (recurrent layers unroll over it); a longer
/// sequence is an error naming it (truncate first), not silently cut.
#[derive(Debug, Clone, PartialEq)]
pub struct PaddedSequences {
    pub sequences: Vec<Vec<i64>>,
    pub extra: Vec<(String, Tensor)>,
    pub max_len: usize,
    pub pad: i64,
}

impl PaddedSequences {
    pub fn new(
        sequences: Vec<Vec<i64>>,
        extra: Vec<(String, Tensor)>,
        max_len: usize,
        pad: i64,
    ) -> Result<PaddedSequences, DataError> {
        if max_len == 0 {
            return Err(DataError::Invalid("max_len must be at least 1".into()));
        }
        if let Some((i, s)) = sequences
            .iter()
            .enumerate()
            .find(|(_, s)| s.len() > max_len || s.is_empty())
        {
            return Err(DataError::Invalid(format!(
                "sequence {i} has length {}, outside 1..={max_len}",
                s.len()
            )));
        }
        for (name, t) in &extra {
            if t.shape().first() != Some(&sequences.len()) {
                return Err(DataError::Invalid(format!(
                    "tensor {name:?} of shape {:?} needs {} samples (one per sequence)",
                    t.shape(),
                    sequences.len()
                )));
            }
        }
        Ok(PaddedSequences {
            sequences,
            extra,
            max_len,
            pad,
        })
    }
}

impl DictDataset for PaddedSequences {
    fn len(&self) -> usize {
        self.sequences.len()
    }

    fn collate(&self, indices: &[usize]) -> Result<TensorDict, DataError> {
        let (b, l) = (indices.len(), self.max_len);
        let mut tokens = vec![self.pad; b * l];
        let mut mask = vec![0f32; b * l];
        let mut lengths = Vec::with_capacity(b);
        for (row, &i) in indices.iter().enumerate() {
            let s = self.sequences.get(i).ok_or_else(|| {
                DataError::Invalid(format!("sample {i} of {}", self.sequences.len()))
            })?;
            tokens[row * l..row * l + s.len()].copy_from_slice(s);
            mask[row * l..row * l + s.len()].fill(1.0);
            lengths.push(s.len() as i64);
        }
        let mut d = TensorDict::new()
            .with("tokens", Tensor::from_i64(&tokens, &[b, l]).expect("sized"))
            .with("mask", Tensor::from_f32(&mask, &[b, l]).expect("sized"))
            .with("lengths", Tensor::from_i64(&lengths, &[b]).expect("sized"));
        for (name, t) in &self.extra {
            d.insert(name, take_rows(t, indices));
        }
        Ok(d)
    }
}

/// A seeded shuffling loader over a [`DictDataset`] (same order rule as
/// [`super::DataLoader`]: the same seed and epoch give the same batches).
pub struct DictLoader<'a> {
    ds: &'a dyn DictDataset,
    batching: Batching,
}

impl<'a> DictLoader<'a> {
    pub fn new(ds: &'a dyn DictDataset, batch_size: usize) -> DictLoader<'a> {
        DictLoader {
            ds,
            batching: Batching::new(batch_size),
        }
    }

    pub fn shuffle(mut self, seed: u64) -> DictLoader<'a> {
        self.batching.shuffle = Some(seed);
        self
    }

    pub fn drop_last(mut self, on: bool) -> DictLoader<'a> {
        self.batching.drop_last = on;
        self
    }

    /// This process's part of every epoch, as [`super::DataLoader::shard`].
    pub fn shard(mut self, shard: super::Shard) -> DictLoader<'a> {
        self.batching.shard = Some(shard);
        self
    }

    pub fn num_batches(&self) -> usize {
        self.batching.num_batches(self.ds.len())
    }

    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Result<TensorDict, DataError>> + '_ {
        self.batching
            .batches(epoch, self.ds.len())
            .map(|idx| self.ds.collate(&idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_sequences_collate_with_mask_and_lengths() {
        let labels = Tensor::from_i64(&[1, 0, 1], &[3]).unwrap();
        let ds = PaddedSequences::new(
            vec![vec![5, 6], vec![7], vec![1, 2, 3]],
            vec![("y".into(), labels)],
            4,
            0,
        )
        .unwrap();
        let b = ds.collate(&[2, 1]).unwrap();
        assert_eq!(
            b.get("tokens").unwrap().as_i64().unwrap(),
            &[1, 2, 3, 0, 7, 0, 0, 0]
        );
        assert_eq!(
            b.get("mask").unwrap().as_f32().unwrap(),
            &[1., 1., 1., 0., 1., 0., 0., 0.]
        );
        assert_eq!(b.get("lengths").unwrap().as_i64().unwrap(), &[3, 1]);
        assert_eq!(b.get("y").unwrap().as_i64().unwrap(), &[1, 0]);
        assert!(PaddedSequences::new(vec![vec![1; 5]], vec![], 4, 0).is_err());
        let loader = DictLoader::new(&ds, 2).shuffle(3);
        let sizes: Vec<usize> = loader.epoch(0).map(|b| b.unwrap().batch_size()).collect();
        assert_eq!(sizes, vec![2, 1]);
    }

    #[test]
    fn named_datasets_check_their_sample_counts() {
        let a = Tensor::from_f32(&[1., 2., 3.], &[3]).unwrap();
        let b = Tensor::from_f32(&[1., 2.], &[2]).unwrap();
        let e = NamedTensorDataset::new(vec![("a".into(), a.clone()), ("b".into(), b)]);
        assert!(e.unwrap_err().to_string().contains("\"b\""));
        let ds = NamedTensorDataset::new(vec![("a".into(), a)]).unwrap();
        assert_eq!(
            ds.collate(&[2, 0])
                .unwrap()
                .get("a")
                .unwrap()
                .as_f32()
                .unwrap(),
            &[3., 1.]
        );
    }
}

//! Data loading as in PyTorch's `torch.utils.data`: datasets, a seeded shuffling
//! `DataLoader`, `random_split`, readers for MNIST IDX and CSV files, and transforms.
//!
//! Batches are gathered from whole-dataset tensors (first axis = samples), so a batch is
//! one contiguous copy, not a per-sample loop.

pub mod cifar10;
pub mod csv;
pub mod image;
pub mod mnist;
pub mod named;
pub mod text;
pub mod transforms;
pub mod vision;

use std::path::Path;

use aotgrad_ir::Data;
use aotgrad_runtime::Tensor;

pub use named::{
    BatchTensors, DictDataset, DictLoader, NamedTensorDataset, PaddedSequences, TensorDict,
};
pub use transforms::{
    Compose, MinMax, Normalize, RandomCrop, RandomHorizontalFlip, ToFloat, Transform, ZScore,
};
pub use vision::{CenterCrop, ConvertImageDtype, RandomVerticalFlip, Resize, ResizeTo};

/// Why data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}:{line}: {reason}")]
    Csv {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("dataset: {0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> DataError {
        DataError::Io {
            path: path.display().to_string(),
            error,
        }
    }
}

/// A small deterministic generator (SplitMix64) for shuffling and random transforms:
/// the same seed gives the same order on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniformly random permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }
}

/// Rows `idx` of `t` along its first axis.
pub fn take_rows(t: &Tensor, idx: &[usize]) -> Tensor {
    let row: usize = t.shape()[1..].iter().product();
    macro_rules! gather {
        ($v:expr, $variant:ident) => {{
            let mut out = Vec::with_capacity(idx.len() * row);
            for &i in idx {
                out.extend_from_slice(&$v[i * row..(i + 1) * row]);
            }
            Data::$variant(out)
        }};
    }
    let data = match t.data() {
        Data::Bool(v) => gather!(v, Bool),
        Data::U8(v) => gather!(v, U8),
        Data::I32(v) => gather!(v, I32),
        Data::I64(v) => gather!(v, I64),
        Data::F32(v) => gather!(v, F32),
        Data::F64(v) => gather!(v, F64),
    };
    let mut shape = t.shape().to_vec();
    shape[0] = idx.len();
    Tensor::new(&shape, data).expect("rows of a valid tensor")
}

/// One batch: inputs `x` and targets `y`, batch dim first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

/// Something a [`DataLoader`] can batch: `len` samples, gathered by index.
pub trait Dataset {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `indices`, stacked along a new first axis.
    fn batch(&self, indices: &[usize]) -> Batch;
}

/// Inputs and targets held as two tensors whose first axis is the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorDataset {
    pub x: Tensor,
    pub y: Tensor,
}

impl TensorDataset {
    pub fn new(x: Tensor, y: Tensor) -> Result<TensorDataset, DataError> {
        if x.shape().is_empty() || y.shape().is_empty() || x.shape()[0] != y.shape()[0] {
            return Err(DataError::Invalid(format!(
                "inputs {:?} and targets {:?} need the same first (sample) dimension",
                x.shape(),
                y.shape()
            )));
        }
        Ok(TensorDataset { x, y })
    }

    /// The samples at `indices`, as a new dataset.
    pub fn subset(&self, indices: &[usize]) -> TensorDataset {
        TensorDataset {
            x: take_rows(&self.x, indices),
            y: take_rows(&self.y, indices),
        }
    }

    /// The first `n` samples (or all, if fewer).
    pub fn take(&self, n: usize) -> TensorDataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        self.subset(&idx)
    }

    /// Applies a transform to all inputs at once (for deterministic preprocessing).
    pub fn map_x(self, t: &dyn Transform, seed: u64) -> Result<TensorDataset, DataError> {
        let x = t.apply(self.x, &mut Rng::new(seed))?;
        Ok(TensorDataset { x, y: self.y })
    }
}

impl Dataset for TensorDataset {
    fn len(&self) -> usize {
        self.x.shape()[0]
    }

    fn batch(&self, indices: &[usize]) -> Batch {
        Batch {
            x: take_rows(&self.x, indices),
            y: take_rows(&self.y, indices),
        }
    }
}

/// Splits a dataset into parts of the given sizes, after a seeded shuffle
/// (`torch.utils.data.random_split`).
pub fn random_split(
    ds: &TensorDataset,
    lengths: &[usize],
    seed: u64,
) -> Result<Vec<TensorDataset>, DataError> {
    if lengths.iter().sum::<usize>() != ds.len() {
        return Err(DataError::Invalid(format!(
            "random_split lengths {lengths:?} do not sum to the dataset's {} samples",
            ds.len()
        )));
    }
    let perm = Rng::new(seed).permutation(ds.len());
    let mut start = 0;
    Ok(lengths
        .iter()
        .map(|&n| {
            let part = ds.subset(&perm[start..start + n]);
            start += n;
            part
        })
        .collect())
}

/// Batches of a dataset, optionally shuffled with a seed (a new order every epoch) and
/// transformed (random transforms draw from a per-epoch, per-batch seed).
pub struct DataLoader<'a> {
    ds: &'a dyn Dataset,
    batching: Batching,
    transform: Option<&'a dyn Transform>,
}

/// How a loader cuts an epoch into batches: size, seeded shuffle, short last batch.
/// Shared by [`DataLoader`] and [`DictLoader`], so both give the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    pub batch_size: usize,
    pub shuffle: Option<u64>,
    pub drop_last: bool,
    pub shard: Option<Shard>,
}

/// One process's part of every epoch of a data-parallel job, as
/// `torch.utils.data.DistributedSampler` splits it: every rank computes the same
/// epoch order (same seed, same epoch), makes it a multiple of `world` — by repeating
/// its first samples (the default) or by dropping its tail (`drop_last`) — and takes
/// every `world`-th sample starting at its `rank`. The ranks' parts are disjoint up to
/// the padding and together cover the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
    pub drop_last: bool,
}

impl Shard {
    /// Rank `rank` of `world` processes, padding uneven epochs.
    pub fn new(rank: usize, world: usize) -> Result<Shard, DataError> {
        if world == 0 || rank >= world {
            return Err(DataError::Invalid(format!(
                "shard rank {rank} of a world of {world}: the rank must be below the world size"
            )));
        }
        Ok(Shard {
            rank,
            world,
            drop_last: false,
        })
    }

    /// Drop the tail that does not divide among the ranks instead of padding.
    pub fn drop_last(mut self, on: bool) -> Shard {
        self.drop_last = on;
        self
    }

    /// Samples per rank per epoch over `n` samples.
    pub fn num_samples(&self, n: usize) -> usize {
        if self.drop_last && !n.is_multiple_of(self.world) {
            // PyTorch's ceil((n - world) / world), for n >= world; nothing below.
            n.saturating_sub(self.world).div_ceil(self.world)
        } else {
            n.div_ceil(self.world)
        }
    }

    /// This rank's samples of one epoch's `order`.
    pub fn select(&self, order: &[usize]) -> Vec<usize> {
        let total = self.num_samples(order.len()) * self.world;
        if order.is_empty() || total == 0 {
            return Vec::new();
        }
        (0..self.num_samples(order.len()))
            .map(|i| order[(self.rank + i * self.world) % order.len()])
            .collect()
    }
}

impl Batching {
    pub fn new(batch_size: usize) -> Batching {
        Batching {
            batch_size: batch_size.max(1),
            shuffle: None,
            drop_last: false,
            shard: None,
        }
    }

    /// Samples per epoch of this process: all `n`, or its shard's.
    pub fn samples(&self, n: usize) -> usize {
        self.shard.map_or(n, |s| s.num_samples(n))
    }

    pub fn num_batches(&self, n: usize) -> usize {
        let n = self.samples(n);
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The sample indices of each batch of `epoch` over `n` samples.
    pub fn batches(&self, epoch: usize, n: usize) -> impl Iterator<Item = Vec<usize>> + use<> {
        let order = self.order(epoch, n);
        let bs = self.batch_size;
        (0..self.num_batches(n))
            .map(move |i| order[i * bs..((i + 1) * bs).min(order.len())].to_vec())
    }

    /// The sample order of `epoch`: the whole epoch's, or this shard's part of it.
    pub fn order(&self, epoch: usize, n: usize) -> Vec<usize> {
        let order = epoch_order(self.shuffle, epoch, n);
        match self.shard {
            Some(s) => s.select(&order),
            None => order,
        }
    }
}

impl<'a> DataLoader<'a> {
    pub fn new(ds: &'a dyn Dataset, batch_size: usize) -> DataLoader<'a> {
        DataLoader {
            ds,
            batching: Batching::new(batch_size),
            transform: None,
        }
    }

    /// Reshuffle every epoch from `seed` (epoch `e` uses a seed derived from both).
    pub fn shuffle(mut self, seed: u64) -> DataLoader<'a> {
        self.batching.shuffle = Some(seed);
        self
    }

    /// Drop the last batch when it is short (by default it is kept).
    pub fn drop_last(mut self, on: bool) -> DataLoader<'a> {
        self.batching.drop_last = on;
        self
    }

    /// Takes only this process's part of every epoch (`DistributedSampler`): all ranks
    /// must use the same shuffle seed, so they split the same order.
    pub fn shard(mut self, shard: Shard) -> DataLoader<'a> {
        self.batching.shard = Some(shard);
        self
    }

    /// A transform applied to each batch's inputs.
    pub fn transform(mut self, t: &'a dyn Transform) -> DataLoader<'a> {
        self.transform = Some(t);
        self
    }

    pub fn num_batches(&self) -> usize {
        self.batching.num_batches(self.ds.len())
    }

    /// The sample order of epoch `epoch` (this shard's part, when sharded).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        self.batching.order(epoch, self.ds.len())
    }

    /// The batches of epoch `epoch`.
    pub fn epoch(&self, epoch: usize) -> impl Iterator<Item = Result<Batch, DataError>> + '_ {
        let shuffle = self.batching.shuffle;
        // Ranks draw different augmentations for their different samples; rank 0 (and
        // an unsharded loader) keeps the single-process seeds.
        let rank = self.batching.shard.map_or(0, |s| s.rank as u64);
        self.batching
            .batches(epoch, self.ds.len())
            .enumerate()
            .map(move |(i, idx)| {
                let mut b = self.ds.batch(&idx);
                if let Some(t) = self.transform {
                    let seed =
                        shuffle.unwrap_or(0) ^ ((epoch as u64) << 32) ^ i as u64 ^ (rank << 48);
                    b.x = t.apply(b.x, &mut Rng::new(seed))?;
                }
                Ok(b)
            })
    }
}

/// The sample order of `epoch`: a seeded permutation, or `0..n` without shuffling.
pub(crate) fn epoch_order(shuffle: Option<u64>, epoch: usize, n: usize) -> Vec<usize> {
    match shuffle {
        Some(seed) => Rng::new(seed.wrapping_add((epoch as u64).wrapping_mul(0x1000_0000_01B3)))
            .permutation(n),
        None => (0..n).collect(),
    }
}

/// Reads a file, gunzipping it when its name ends in `.gz`.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        // The gzip trailer's last four bytes are the uncompressed size (mod 2^32):
        // reserving it up front avoids the doubling reallocations (and their transient
        // second copy) of a 47 MB read.
        let hint = raw
            .len()
            .checked_sub(4)
            .map(|i| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]) as usize)
            .unwrap_or(0);
        let mut out = Vec::with_capacity(hint.min(1 << 30));
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        // Every member of a multi-member file (`cat a.gz b.gz`), and nothing after the
        // last: bytes that are not gzip (a truncated copy appended, a download's
        // trailing junk) are refused rather than silently ignored.
        let mut rest = &raw[..];
        loop {
            let mut dec = flate2::bufread::GzDecoder::new(rest);
            dec.read_to_end(&mut out)
                .map_err(|e| corrupt(format!("bad gzip data: {e}")))?;
            rest = dec.into_inner();
            if rest.is_empty() {
                break Ok(out);
            }
            if !rest.starts_with(&[0x1f, 0x8b]) {
                break Err(corrupt(format!(
                    "{} bytes after the gzip data are not gzip (trailing garbage)",
                    rest.len()
                )));
            }
        }
    } else {
        Ok(raw)
    }
}

/// One cross-validation fold: `(training indices, validation indices)`.
pub type Fold = (Vec<usize>, Vec<usize>);

/// `k` (train, validation) index splits for k-fold cross-validation over `n` samples,
/// after a seeded shuffle; fold sizes differ by at most one and every sample is in
/// exactly one validation fold.
pub fn k_fold(n: usize, k: usize, seed: u64) -> Result<Vec<Fold>, DataError> {
    if k < 2 || k > n {
        return Err(DataError::Invalid(format!(
            "k-fold needs 2 <= k <= {n} samples, got k = {k}"
        )));
    }
    let perm = Rng::new(seed).permutation(n);
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        let val = perm[start..start + size].to_vec();
        let train = perm[..start]
            .iter()
            .chain(&perm[start + size..])
            .copied()
            .collect();
        folds.push((train, val));
        start += size;
    }
    Ok(folds)
}

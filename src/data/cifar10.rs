//! CIFAR-10 in its binary format (`cifar-10-batches-bin/`, from
//! <https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz>): `data_batch_1.bin` ...
//! `data_batch_5.bin` (training, 10 000 records each) and `test_batch.bin`, each
//! record one label byte (0-9) and 3072 pixel bytes, the 32x32 red plane, then green,
//! then blue, rows top to bottom — exactly the `[3, 32, 32]` layout of
//! `torchvision.datasets.CIFAR10` after `ToTensor`, so no reordering is needed.
//!
//! The set is not bundled (163 MB). Its absence is an error naming the files and where
//! to put them.

use std::path::{Path, PathBuf};

use aotgrad_ir::Data;
use aotgrad_runtime::Tensor;

use super::mnist::Split;
use super::{DataError, TensorDataset};

/// Bytes of one record: the label, then 3 x 32 x 32 pixels.
pub const RECORD: usize = 1 + 3 * 32 * 32;

/// The class names, in label order.
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The batch files of a split.
pub fn files(split: Split) -> Vec<String> {
    match split {
        Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
        Split::Test => vec!["test_batch.bin".into()],
    }
}

/// Where the files are: `root/cifar-10-batches-bin/` (as the archive unpacks) or
/// `root` itself.
fn locate(root: &Path, split: Split) -> Result<PathBuf, DataError> {
    let first = &files(split)[0];
    for dir in [root.join("cifar-10-batches-bin"), root.to_path_buf()] {
        if dir.join(first).is_file() {
            return Ok(dir);
        }
    }
    Err(DataError::Invalid(format!(
        "CIFAR-10 ({}) not found under {}: download \
         https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack it there \
         (giving {}/cifar-10-batches-bin/{})",
        files(split).join(", "),
        root.display(),
        root.display(),
        first
    )))
}

/// Parses records from one file's bytes: images `u8 [n, 3, 32, 32]`, labels.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<i64>), DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(corrupt(format!(
            "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
            bytes.len()
        )));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(corrupt(format!(
                "record {i} has label {} (CIFAR-10 labels are 0-9)",
                rec[0]
            )));
        }
        labels.push(rec[0] as i64);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok((pixels, labels))
}

/// Loads one split (`torchvision.datasets.CIFAR10(root, train=...)` without a
/// transform): images `u8 [N, 3, 32, 32]`, labels `i64 [N]`. Apply
/// [`super::ToFloat`] (torchvision's `ToTensor` scaling) per batch.
pub fn load(root: &Path, split: Split) -> Result<TensorDataset, DataError> {
    let dir = locate(root, split)?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for name in files(split) {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        let (p, l) = parse(&path, &bytes)?;
        pixels.extend(p);
        labels.extend(l);
    }
    let n = labels.len();
    let x = Tensor::new(&[n, 3, 32, 32], Data::U8(pixels))
        .map_err(|e| DataError::Invalid(e.to_string()))?;
    let y = Tensor::new(&[n], Data::I64(labels)).map_err(|e| DataError::Invalid(e.to_string()))?;
    TensorDataset::new(x, y)
}

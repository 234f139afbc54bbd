//! MNIST from the standard IDX files (`train-images-idx3-ubyte[.gz]` etc.), checked:
//! magic numbers, dimensions, and that the payload has exactly the promised size.

use std::path::{Path, PathBuf};

use aotgrad_runtime::Tensor;

use super::{DataError, TensorDataset, read_maybe_gz};

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn corrupt(path: &Path, reason: String) -> DataError {
    DataError::Corrupt {
        path: path.display().to_string(),
        reason,
    }
}

/// Parses an IDX3 image file: `[count, rows, cols]` u8 pixels.
pub fn parse_images(path: &Path, b: &[u8]) -> Result<Tensor, DataError> {
    let shape = images_shape(path, b)?;
    Ok(Tensor::new(&shape, aotgrad_ir::Data::U8(b[16..].to_vec())).expect("sized"))
}

/// [`parse_images`] taking the file's bytes: the pixels stay in that allocation (the
/// 16-byte header is shifted out in place), so loading the 47 MB training set never
/// holds two copies of it.
pub fn parse_images_owned(path: &Path, mut b: Vec<u8>) -> Result<Tensor, DataError> {
    let shape = images_shape(path, &b)?;
    b.drain(..16);
    Ok(Tensor::new(&shape, aotgrad_ir::Data::U8(b)).expect("sized"))
}

/// Checks an IDX3 header against the file's size; the images' tensor shape.
fn images_shape(path: &Path, b: &[u8]) -> Result<[usize; 4], DataError> {
    if b.len() < 16 {
        return Err(corrupt(
            path,
            format!("{} bytes is too short for an IDX3 header", b.len()),
        ));
    }
    let magic = be32(b, 0);
    if magic != IMAGES_MAGIC {
        return Err(corrupt(
            path,
            format!("magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x} (IDX3 u8 images)"),
        ));
    }
    let (n, r, c) = (
        be32(b, 4) as usize,
        be32(b, 8) as usize,
        be32(b, 12) as usize,
    );
    // In u128: three u32 sizes can pass 2^64 (2^22 images of 2^21 x 2^21 is 0 modulo
    // 2^64, which an empty payload used to satisfy).
    let want = n as u128 * r as u128 * c as u128;
    if (b.len() - 16) as u128 != want {
        return Err(corrupt(
            path,
            format!(
                "header promises {n} images of {r}x{c} ({want} bytes) but the file holds {} bytes of pixels (truncated or corrupt)",
                b.len() - 16
            ),
        ));
    }
    Ok([n, 1, r, c])
}

/// Parses an IDX1 label file into i64 class indices, each checked to be in 0..=9.
pub fn parse_labels(path: &Path, b: &[u8]) -> Result<Tensor, DataError> {
    if b.len() < 8 {
        return Err(corrupt(
            path,
            format!("{} bytes is too short for an IDX1 header", b.len()),
        ));
    }
    let magic = be32(b, 0);
    if magic != LABELS_MAGIC {
        return Err(corrupt(
            path,
            format!("magic number {magic:#010x}, expected {LABELS_MAGIC:#010x} (IDX1 u8 labels)"),
        ));
    }
    let n = be32(b, 4) as usize;
    if b.len() - 8 != n {
        return Err(corrupt(
            path,
            format!(
                "header promises {n} labels but the file holds {} (truncated or corrupt)",
                b.len() - 8
            ),
        ));
    }
    if let Some((i, &l)) = b[8..].iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(corrupt(path, format!("label {i} is {l}, not a digit")));
    }
    let labels: Vec<i64> = b[8..].iter().map(|&l| l as i64).collect();
    Ok(Tensor::from_i64(&labels, &[n]).expect("sized"))
}

/// Finds `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    for cand in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if cand.exists() {
            return Ok(cand);
        }
    }
    Err(DataError::Io {
        path: dir.join(format!("{name}[.gz]")).display().to_string(),
        error: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
    })
}

/// Loads one split: images `u8 [N, 1, 28, 28]` and labels `i64 [N]`.
pub fn load(dir: &Path, split: Split) -> Result<TensorDataset, DataError> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let ip = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = parse_images_owned(&ip, read_maybe_gz(&ip)?)?;
    let labels = parse_labels(&lp, &read_maybe_gz(&lp)?)?;
    if images.shape()[0] != labels.shape()[0] {
        return Err(DataError::Invalid(format!(
            "{} has {} images but {} has {} labels",
            ip.display(),
            images.shape()[0],
            lp.display(),
            labels.shape()[0]
        )));
    }
    TensorDataset::new(images, labels)
}

/// The repository's bundled copy (`data/mnist`), found from the crate root.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("mnist")
}

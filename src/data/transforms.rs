//! Transforms on batches of inputs, composable like torchvision's `Compose`. Random
//! transforms draw from the [`Rng`] they are given, so a seeded loader is reproducible.
//! Fitted scalers ([`ZScore`], [`MinMax`]) take their statistics from the training split
//! and are reused unchanged on validation data and at prediction time.

use aotgrad_ir::{DType, Data};
use aotgrad_runtime::Tensor;

use super::{DataError, Rng};

/// A transform of a batch tensor (first axis = samples).
pub trait Transform {
    fn apply(&self, x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError>;
}

fn f32_of(x: &Tensor, what: &str) -> Result<Vec<f32>, DataError> {
    match x.dtype() {
        DType::F32 => Ok(x.as_f32().expect("f32").to_vec()),
        d => Err(DataError::Invalid(format!(
            "{what} needs f32 inputs, got {d} (apply ToFloat first)"
        ))),
    }
}

fn with(x: &Tensor, v: Vec<f32>) -> Tensor {
    Tensor::new(x.shape(), Data::F32(v)).expect("same size")
}

/// Transforms applied in order.
#[derive(Default)]
pub struct Compose(pub Vec<Box<dyn Transform>>);

impl Compose {
    pub fn new() -> Compose {
        Compose::default()
    }

    pub fn then(mut self, t: impl Transform + 'static) -> Compose {
        self.0.push(Box::new(t));
        self
    }
}

impl Transform for Compose {
    fn apply(&self, mut x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError> {
        for t in &self.0 {
            x = t.apply(x, rng)?;
        }
        Ok(x)
    }
}

/// `u8` pixels to `f32` in [0, 1] (torchvision's `ToTensor` scaling); other dtypes are
/// cast to f32 unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToFloat;

impl Transform for ToFloat {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        Ok(match x.data() {
            Data::U8(v) => with(&x, v.iter().map(|&p| p as f32 / 255.0).collect()),
            _ => x.cast(DType::F32),
        })
    }
}

/// `(x - mean[c]) / std[c]` per channel (axis 1), or with one value for all.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub fn new(mean: &[f32], std: &[f32]) -> Normalize {
        Normalize {
            mean: mean.to_vec(),
            std: std.to_vec(),
        }
    }
}

impl Transform for Normalize {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        let v = f32_of(&x, "Normalize")?;
        let s = x.shape();
        let channels = if self.mean.len() == 1 {
            1
        } else {
            s.get(1).copied().unwrap_or(1)
        };
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(DataError::Invalid(format!(
                "Normalize has {} means and {} stds for {channels} channels of {s:?}",
                self.mean.len(),
                self.std.len()
            )));
        }
        let inner: usize = if s.len() > 2 {
            s[2..].iter().product()
        } else {
            1
        };
        let out = v
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let c = if channels == 1 {
                    0
                } else {
                    (i / inner) % channels
                };
                (p - self.mean[c]) / self.std[c]
            })
            .collect();
        Ok(with(&x, out))
    }
}

/// Column statistics of a 2-D `[samples, features]` f32 tensor.
fn columns(x: &Tensor, what: &str) -> Result<(Vec<f32>, usize, usize), DataError> {
    if x.shape().len() != 2 {
        return Err(DataError::Invalid(format!(
            "{what} needs [samples, features], got {:?}",
            x.shape()
        )));
    }
    Ok((f32_of(x, what)?, x.shape()[0], x.shape()[1]))
}

/// Z-score scaling per feature, `(x - mean) / std`, with statistics fitted on training
/// data (unbiased std, as `torch.std`).
#[derive(Debug, Clone, PartialEq)]
pub struct ZScore {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl ZScore {
    pub fn fit(x: &Tensor) -> Result<ZScore, DataError> {
        let (v, n, f) = columns(x, "ZScore")?;
        if n < 2 {
            return Err(DataError::Invalid(
                "ZScore needs at least 2 samples to fit".into(),
            ));
        }
        let mut mean = vec![0.0; f];
        let mut std = vec![0.0; f];
        for j in 0..f {
            let m = (0..n).map(|i| v[i * f + j] as f64).sum::<f64>() / n as f64;
            let var = (0..n)
                .map(|i| (v[i * f + j] as f64 - m).powi(2))
                .sum::<f64>()
                / (n - 1) as f64;
            mean[j] = m;
            std[j] = var.sqrt();
        }
        Ok(ZScore { mean, std })
    }
}

impl Transform for ZScore {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        let (v, _, f) = columns(&x, "ZScore")?;
        if f != self.mean.len() {
            return Err(DataError::Invalid(format!(
                "ZScore was fitted on {} features, got {f}",
                self.mean.len()
            )));
        }
        let out = v
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let j = i % f;
                let s = if self.std[j] > 0.0 { self.std[j] } else { 1.0 };
                ((p as f64 - self.mean[j]) / s) as f32
            })
            .collect();
        Ok(with(&x, out))
    }
}

/// Min-max scaling per feature to [0, 1], fitted on training data.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMax {
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

impl MinMax {
    pub fn fit(x: &Tensor) -> Result<MinMax, DataError> {
        let (v, n, f) = columns(x, "MinMax")?;
        let mut min = vec![f64::INFINITY; f];
        let mut max = vec![f64::NEG_INFINITY; f];
        for i in 0..n {
            for j in 0..f {
                min[j] = min[j].min(v[i * f + j] as f64);
                max[j] = max[j].max(v[i * f + j] as f64);
            }
        }
        Ok(MinMax { min, max })
    }
}

impl Transform for MinMax {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        let (v, _, f) = columns(&x, "MinMax")?;
        if f != self.min.len() {
            return Err(DataError::Invalid(format!(
                "MinMax was fitted on {} features, got {f}",
                self.min.len()
            )));
        }
        let out = v
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let j = i % f;
                let range = self.max[j] - self.min[j];
                let r = if range > 0.0 { range } else { 1.0 };
                ((p as f64 - self.min[j]) / r) as f32
            })
            .collect();
        Ok(with(&x, out))
    }
}

/// `[N, C, H, W]` image batches: each image is zero-padded by `padding` on every side and
/// a random `size x size` window is cut out (torchvision's `RandomCrop`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomCrop {
    pub size: usize,
    pub padding: usize,
}

impl Transform for RandomCrop {
    fn apply(&self, x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError> {
        let v = f32_of(&x, "RandomCrop")?;
        let s = x.shape();
        if s.len() != 4 {
            return Err(DataError::Invalid(format!(
                "RandomCrop needs [N, C, H, W], got {s:?}"
            )));
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let p = self.padding;
        if self.size > h + 2 * p || self.size > w + 2 * p {
            return Err(DataError::Invalid(format!(
                "RandomCrop size {} exceeds the padded image {}x{}",
                self.size,
                h + 2 * p,
                w + 2 * p
            )));
        }
        let k = self.size;
        let mut out = vec![0.0f32; n * c * k * k];
        for img in 0..n {
            let top = rng.below(h + 2 * p - k + 1);
            let left = rng.below(w + 2 * p - k + 1);
            for ch in 0..c {
                for i in 0..k {
                    for j in 0..k {
                        let (si, sj) = (
                            (top + i) as isize - p as isize,
                            (left + j) as isize - p as isize,
                        );
                        if si >= 0 && sj >= 0 && (si as usize) < h && (sj as usize) < w {
                            out[((img * c + ch) * k + i) * k + j] =
                                v[((img * c + ch) * h + si as usize) * w + sj as usize];
                        }
                    }
                }
            }
        }
        Ok(Tensor::new(&[n, c, k, k], Data::F32(out)).expect("sized"))
    }
}

/// Mirrors each `[.., W]` image left-right with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomHorizontalFlip(pub f64);

impl Transform for RandomHorizontalFlip {
    fn apply(&self, x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError> {
        let mut v = f32_of(&x, "RandomHorizontalFlip")?;
        let s = x.shape().to_vec();
        if s.len() < 2 {
            return Err(DataError::Invalid(format!(
                "RandomHorizontalFlip needs [N, ..., W], got {s:?}"
            )));
        }
        let w = s[s.len() - 1];
        let per: usize = s[1..].iter().product();
        for img in 0..s[0] {
            if rng.uniform() < self.0 {
                for row in v[img * per..(img + 1) * per].chunks_mut(w) {
                    row.reverse();
                }
            }
        }
        Ok(with(&x, v))
    }
}

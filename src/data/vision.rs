//! torchvision's image transforms on `[..., H, W]` tensors (a batch `[N, C, H, W]` or
//! one image `[C, H, W]`): `Resize` (bilinear with antialiasing, torchvision's default,
//! in the exact and the shorter-side form), `CenterCrop`, `RandomVerticalFlip` and
//! `ConvertImageDtype`. `RandomCrop`, `RandomHorizontalFlip`, `Normalize` and
//! `ToFloat` (`ToTensor`'s scaling) are in [`super::transforms`]. Each is checked
//! against torchvision's output (`tools/fixtures/gen_vision.py`).

use aotgrad_ir::{DType, Data};
use aotgrad_runtime::Tensor;

use super::transforms::Transform;
use super::{DataError, Rng};

/// The planes (everything before the last two axes), height and width of `[..., H, W]`.
fn planes(x: &Tensor, what: &str) -> Result<(usize, usize, usize), DataError> {
    let s = x.shape();
    if s.len() < 2 {
        return Err(DataError::Invalid(format!(
            "{what} needs an image [..., H, W], got {s:?}"
        )));
    }
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    Ok((s[..s.len() - 2].iter().product(), h, w))
}

fn f32s(x: &Tensor, what: &str) -> Result<Vec<f32>, DataError> {
    match x.data() {
        Data::F32(v) => Ok(v.clone()),
        Data::U8(_) => Err(DataError::Invalid(format!(
            "{what} needs f32 pixels, got u8 (apply ToFloat or ConvertImageDtype(F32) first)"
        ))),
        _ => Err(DataError::Invalid(format!(
            "{what} needs f32 pixels, got {}",
            x.dtype()
        ))),
    }
}

fn reshaped(x: &Tensor, h: usize, w: usize, data: Vec<f32>) -> Tensor {
    let mut shape = x.shape().to_vec();
    let r = shape.len();
    shape[r - 2] = h;
    shape[r - 1] = w;
    Tensor::new(&shape, Data::F32(data)).expect("sized from the shape")
}

/// The target size of a [`Resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTo {
    /// `Resize((h, w))`.
    Exact { h: usize, w: usize },
    /// `Resize(n)`: the shorter side becomes `n`, the longer keeps the aspect ratio
    /// (`int(n * long / short)`, rounded down as torchvision does).
    ShorterSide(usize),
}

/// `torchvision.transforms.Resize(size)` with its defaults: bilinear, antialiased
/// (PyTorch's `interpolate(mode="bilinear", align_corners=False, antialias=True)`, the
/// algorithm of PIL's resize): each output pixel is a triangle-filter average whose
/// support widens with the downscale factor, width first, then height, in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize(pub ResizeTo);

impl Resize {
    pub fn exact(h: usize, w: usize) -> Resize {
        Resize(ResizeTo::Exact { h, w })
    }

    pub fn shorter_side(n: usize) -> Resize {
        Resize(ResizeTo::ShorterSide(n))
    }

    /// The output `(h, w)` for an input of `(h, w)`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        match self.0 {
            ResizeTo::Exact { h, w } => (h, w),
            ResizeTo::ShorterSide(n) => {
                let (short, long) = if h <= w { (h, w) } else { (w, h) };
                let new_long = (n as f64 * long as f64 / short as f64) as usize;
                if h <= w { (n, new_long) } else { (new_long, n) }
            }
        }
    }
}

/// The taps of one output position along one axis: the first input index and the
/// normalised weights (PyTorch's `_compute_indices_min_size_weights_aa`).
fn taps(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let tri = |x: f32| {
        let x = x.abs();
        if x < 1.0 { 1.0 - x } else { 0.0 }
    };
    (0..output)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
            let mut w: Vec<f32> = (xmin..xmax.max(xmin))
                .map(|j| tri((j as f32 - center + 0.5) * invscale))
                .collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            (xmin, w)
        })
        .collect()
}

/// One separable pass: resamples axis `len` (of stride `stride`) of `src`, which has
/// `outer` blocks of `len * stride`, to `out_len`.
fn resample(src: &[f32], outer: usize, len: usize, stride: usize, out_len: usize) -> Vec<f32> {
    let t = taps(len, out_len);
    let mut out = vec![0.0f32; outer * out_len * stride];
    for o in 0..outer {
        let s = &src[o * len * stride..(o + 1) * len * stride];
        let d = &mut out[o * out_len * stride..(o + 1) * out_len * stride];
        for (i, (xmin, w)) in t.iter().enumerate() {
            for k in 0..stride {
                // Accumulated in tap order, as PyTorch's kernel does.
                let mut acc = 0.0f32;
                for (j, &wj) in w.iter().enumerate() {
                    acc += s[(xmin + j) * stride + k] * wj;
                }
                d[i * stride + k] = acc;
            }
        }
    }
    out
}

impl Transform for Resize {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        let (p, h, w) = planes(&x, "Resize")?;
        let (oh, ow) = self.output_size(h, w);
        if oh == 0 || ow == 0 || h == 0 || w == 0 {
            return Err(DataError::Invalid(format!(
                "Resize of a {h}x{w} image to {oh}x{ow}: sizes must be positive"
            )));
        }
        let mut v = f32s(&x, "Resize")?;
        // Width first, then height; an axis whose size does not change is skipped.
        if ow != w {
            v = resample(&v, p * h, w, 1, ow);
        }
        if oh != h {
            v = resample(&v, p, h, ow, oh);
        }
        Ok(reshaped(&x, oh, ow, v))
    }
}

/// `torchvision.transforms.CenterCrop((h, w))`: the centred window, offsets
/// `round((H - h) / 2)` (half to even, as Python's `round`); an image smaller than the
/// window is first zero-padded around (as torchvision does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CenterCrop {
    pub h: usize,
    pub w: usize,
}

impl CenterCrop {
    pub fn square(n: usize) -> CenterCrop {
        CenterCrop { h: n, w: n }
    }
}

impl Transform for CenterCrop {
    fn apply(&self, x: Tensor, _: &mut Rng) -> Result<Tensor, DataError> {
        let (p, h, w) = planes(&x, "CenterCrop")?;
        let v = f32s(&x, "CenterCrop")?;
        let (th, tw) = (self.h, self.w);
        // Padding (left/top = deficit / 2, rounded down) when the window is larger.
        let (pt, pl) = (th.saturating_sub(h) / 2, tw.saturating_sub(w) / 2);
        let (ph, pw) = (h.max(th), w.max(tw));
        let round_half_even = |d: usize| -> usize {
            let half = d as f64 / 2.0;
            half.round_ties_even() as usize
        };
        let (top, left) = (round_half_even(ph - th), round_half_even(pw - tw));
        let mut out = vec![0.0f32; p * th * tw];
        for plane in 0..p {
            for i in 0..th {
                for j in 0..tw {
                    // Position in the padded image, then in the original.
                    let (si, sj) = (top + i, left + j);
                    if si >= pt && si < pt + h && sj >= pl && sj < pl + w {
                        out[(plane * th + i) * tw + j] = v[(plane * h + si - pt) * w + sj - pl];
                    }
                }
            }
        }
        Ok(reshaped(&x, th, tw, out))
    }
}

/// Mirrors each image of `[N, ..., H, W]` top-bottom with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomVerticalFlip(pub f64);

impl Transform for RandomVerticalFlip {
    fn apply(&self, x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError> {
        let (_, h, w) = planes(&x, "RandomVerticalFlip")?;
        let mut v = f32s(&x, "RandomVerticalFlip")?;
        let per: usize = x.shape()[1..].iter().product();
        let n = x.shape()[0];
        for img in 0..n {
            if rng.uniform() < self.0 {
                for plane in v[img * per..(img + 1) * per].chunks_mut(h * w) {
                    for i in 0..h / 2 {
                        let (a, b) = plane.split_at_mut((h - 1 - i) * w);
                        a[i * w..(i + 1) * w].swap_with_slice(&mut b[..w]);
                    }
                }
            }
        }
        Ok(Tensor::new(x.shape(), Data::F32(v)).expect("same shape"))
    }
}

/// `torchvision.transforms.ConvertImageDtype(dtype)`: u8 to float divides by 255;
/// float to u8 multiplies by `255.999` and truncates (torchvision's `255 + 1 - 1e-3`,
/// so 1.0 maps to 255 and every level gets an equal share of [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertImageDtype(pub DType);

impl Transform for ConvertImageDtype {
    fn apply(&self, x: Tensor, rng: &mut Rng) -> Result<Tensor, DataError> {
        let bad = || {
            DataError::Invalid(format!(
                "ConvertImageDtype from {} to {}: images are u8, f32 or f64",
                x.dtype(),
                self.0
            ))
        };
        let out = match (x.data(), self.0) {
            (d, t) if d.dtype() == t => return Ok(x),
            // torchvision's ToTensor scaling, which `ToFloat` is.
            (Data::U8(_), DType::F32) => return super::ToFloat.apply(x, rng),
            (Data::U8(v), DType::F64) => Data::F64(v.iter().map(|&p| p as f64 / 255.0).collect()),
            (Data::F32(v), DType::U8) => {
                Data::U8(v.iter().map(|&p| (p * 255.999f32) as u8).collect())
            }
            (Data::F64(v), DType::U8) => {
                Data::U8(v.iter().map(|&p| (p * 255.999f64) as u8).collect())
            }
            (Data::F32(_), DType::F64) | (Data::F64(_), DType::F32) => {
                return Ok(x.cast(self.0));
            }
            _ => return Err(bad()),
        };
        Ok(Tensor::new(x.shape(), out).expect("same shape"))
    }
}

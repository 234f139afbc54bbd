//! Pictures into tensors: PNG and JPEG files decoded (by the `image` crate) to
//! `u8 [C, H, W]`, channels as the file stores them (1 grey, 2 grey + alpha, 3 RGB,
//! 4 RGBA), as `torchvision.io.read_image` returns them. `ToFloat` (or
//! `ConvertImageDtype`) then gives torchvision's `ToTensor` scaling.

use std::path::Path;

use aotgrad_ir::Data;
use aotgrad_runtime::Tensor;
use image::DynamicImage;

use super::DataError;

/// Reads a PNG or JPEG (chosen by content, not name) as `u8 [C, H, W]`.
pub fn read_image(path: &Path) -> Result<Tensor, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_image(path, &bytes)
}

/// [`read_image`] of bytes already in memory; `path` names them in errors.
pub fn decode_image(path: &Path, bytes: &[u8]) -> Result<Tensor, DataError> {
    let corrupt = |reason: String| DataError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let format =
        image::guess_format(bytes).map_err(|e| corrupt(format!("not a PNG or JPEG file ({e})")))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(corrupt(format!(
            "a {format:?} image; aotgrad reads PNG and JPEG"
        )));
    }
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| corrupt(format!("cannot decode: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (channels, interleaved): (usize, Vec<u8>) = match img {
        DynamicImage::ImageLuma8(i) => (1, i.into_raw()),
        DynamicImage::ImageLumaA8(i) => (2, i.into_raw()),
        DynamicImage::ImageRgb8(i) => (3, i.into_raw()),
        DynamicImage::ImageRgba8(i) => (4, i.into_raw()),
        other => {
            return Err(corrupt(format!(
                "{:?} pixels; aotgrad reads 8-bit grey, grey + alpha, RGB and RGBA",
                other.color()
            )));
        }
    };
    // Interleaved HWC to planar CHW.
    let plane = h * w;
    let mut chw = vec![0u8; channels * plane];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            chw[c * plane + i] = v;
        }
    }
    Tensor::new(&[channels, h, w], Data::U8(chw)).map_err(|e| corrupt(e.to_string()))
}

//! NumPy `.npy` files (format versions 1.0-3.0), C order, little-endian or byte-sized.

use std::io::{Read, Write};
use std::path::Path;

use aotgrad_ir::DType;

use crate::Tensor;

/// Why an `.npy` file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not an .npy file (bad magic bytes)")]
    Magic { path: String },
    #[error("{path}: unsupported .npy header: {detail}")]
    Header { path: String, detail: String },
    #[error("{path}: dtype `{descr}` is not supported (use <f4, <f8, <i4, <i8, |u1 or |b1)")]
    DType { path: String, descr: String },
    #[error("{path}: data holds {got} bytes but shape {shape:?} needs {need}")]
    Truncated {
        path: String,
        shape: Vec<usize>,
        need: usize,
        got: usize,
    },
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(d: DType) -> &'static str {
    match d {
        DType::Bool => "|b1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::F32 => "<f4",
        DType::F64 => "<f8",
    }
}

/// Serialises a tensor in `.npy` version 1.0.
pub fn to_npy_bytes(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        descr(t.dtype())
    );
    // Pad so that the data starts on a 64-byte boundary, newline-terminated.
    let total = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * t.dtype().size_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let io = |source| NpyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::create(path).map_err(io)?;
    f.write_all(&to_npy_bytes(t)).map_err(io)
}

pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let p = path.display().to_string();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| NpyError::Io {
            path: p.clone(),
            source,
        })?;
    from_npy_bytes(&bytes, &p)
}

/// Parses `.npy` bytes; `path` only labels errors.
pub fn from_npy_bytes(bytes: &[u8], path: &str) -> Result<Tensor, NpyError> {
    let header_err = |detail: &str| NpyError::Header {
        path: path.into(),
        detail: detail.into(),
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(NpyError::Magic { path: path.into() });
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(header_err(&format!("format version {v}"))),
    };
    let header = bytes
        .get(start..start + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| header_err("truncated or non-UTF-8 header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let d = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or_else(|| header_err("no descr"))?;
    let dtype = match d {
        "|b1" => DType::Bool,
        "|u1" | "<u1" => DType::U8,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        other => {
            return Err(NpyError::DType {
                path: path.into(),
                descr: other.into(),
            });
        }
    };
    if field("fortran_order").is_none_or(|r| !r.starts_with("False")) {
        return Err(header_err("only C-order arrays are supported"));
    }
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or_else(|| header_err("no shape"))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| header_err("bad shape"))?;
    // Checked: a shape whose product wraps (2305843009213693953 x 8 is 8 modulo 2^64)
    // must not pass for the few bytes that follow.
    let n = aotgrad_ir::limits::check_size(dtype, &shape)
        .map_err(|e| header_err(&format!("shape {shape:?}: {e}")))?;
    let body = &bytes[start + hlen..];
    let need = n * dtype.size_bytes();
    if body.len() < need {
        return Err(NpyError::Truncated {
            path: path.into(),
            shape,
            need,
            got: body.len(),
        });
    }
    Ok(Tensor::from_le_bytes(dtype, &shape, &body[..need]).expect("length computed from shape"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aotgrad_ir::Data;

    #[test]
    fn round_trip_every_dtype() {
        let ts = [
            Tensor::from_f32(&[1.0, -2.5, f32::NAN, 4.0], &[2, 2]).unwrap(),
            Tensor::from_f64(&[0.1], &[]).unwrap(),
            Tensor::from_i64(&[1, -2, 3], &[3]).unwrap(),
            Tensor::new(&[2], Data::Bool(vec![true, false])).unwrap(),
            Tensor::new(&[0, 3], Data::U8(vec![])).unwrap(),
            Tensor::new(&[1], Data::I32(vec![-7])).unwrap(),
        ];
        for t in ts {
            let b = to_npy_bytes(&t);
            assert_eq!(
                (b.len() - t.len() * t.dtype().size_bytes()) % 64,
                0,
                "data is 64-byte aligned"
            );
            assert_eq!(from_npy_bytes(&b, "t").unwrap(), t);
        }
    }

    #[test]
    fn errors_are_reported() {
        let t = Tensor::from_f32(&[1.0, 2.0], &[2]).unwrap();
        let b = to_npy_bytes(&t);
        let e = from_npy_bytes(&b[..b.len() - 1], "x.npy").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.npy: data holds 7 bytes but shape [2] needs 8"
        );
        let e = from_npy_bytes(b"hello world", "x.npy").unwrap_err();
        assert_eq!(e.to_string(), "x.npy: not an .npy file (bad magic bytes)");
        // Header edits of equal length, byte-wise (the magic is not UTF-8).
        let edit = |from: &[u8], to: &[u8]| {
            let mut v = b.clone();
            let at = v.windows(from.len()).position(|w| w == from).unwrap();
            v[at..at + to.len()].copy_from_slice(to);
            v
        };
        let e = from_npy_bytes(&edit(b"<f4", b">f4"), "x.npy").unwrap_err();
        assert!(
            e.to_string().contains("dtype `>f4` is not supported"),
            "{e}"
        );
        let e = from_npy_bytes(&edit(b"False", b"True "), "x.npy").unwrap_err();
        assert!(e.to_string().contains("only C-order"), "{e}");
    }

    /// Shapes whose element or byte count wraps in `usize` are refused, not read as
    /// the wrapped size (the fuzzer's reproducers).
    #[test]
    fn wrapping_shapes_are_refused() {
        let with_shape = |shape: &str, descr: &str, data: &[u8]| {
            let mut h =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            h.push('\n');
            let mut v = MAGIC.to_vec();
            v.extend_from_slice(&[1, 0]);
            v.extend_from_slice(&(h.len() as u16).to_le_bytes());
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(data);
            v
        };
        // (2^61 + 1) * 8 elements is 8 modulo 2^64: 8 floats used to be accepted.
        let b = with_shape("(2305843009213693953, 8)", "<f4", &[0; 32]);
        let e = from_npy_bytes(&b, "x.npy").unwrap_err();
        assert!(matches!(e, NpyError::Header { .. }), "{e}");
        assert!(e.to_string().contains("MAX_TENSOR_BYTES"), "{e}");
        // 2^62 floats are 2^64 bytes, which wrapped to 0: used to panic.
        let b = with_shape("(4611686018427387904,)", "<f4", &[]);
        assert!(from_npy_bytes(&b, "x.npy").is_err());
        // Within usize but past the limit.
        let b = with_shape("(99999999999, 99999999999)", "|u1", &[]);
        assert!(from_npy_bytes(&b, "x.npy").is_err());
        // Empty arrays still read, whatever their other dims.
        let b = with_shape("(0, 1000000)", "<f8", &[]);
        assert_eq!(from_npy_bytes(&b, "x.npy").unwrap().shape(), &[0, 1000000]);
    }
}

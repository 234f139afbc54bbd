//! Named tensors in safetensors files (PyTorch's `safetensors.torch.save_file` format),
//! written atomically: a crash never leaves a half-written file under the final name.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use aotgrad_ir::DType;
use aotgrad_runtime::Tensor;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Tensors with their names, in a fixed order.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Why a tensor file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: not a valid safetensors file: {message}")]
    Format { path: String, message: String },
    #[error("{path}: tensor {name:?} has dtype {dtype}, which aotgrad does not support")]
    Dtype {
        path: String,
        name: String,
        dtype: String,
    },
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::Bool => Dtype::BOOL,
        DType::U8 => Dtype::U8,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
    }
}

/// The inverse of [`st_dtype`]; `None` for safetensors dtypes aotgrad has no tensor of.
fn our_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file, sorted by name, plus its metadata.
pub fn read_safetensors(
    path: &Path,
) -> Result<(NamedTensors, HashMap<String, String>), TensorFileError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| TensorFileError::Io {
        path: p.clone(),
        error,
    })?;
    let format = |message: String| TensorFileError::Format {
        path: p.clone(),
        message,
    };
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| format(e.to_string()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = our_dtype(view.dtype()).ok_or_else(|| TensorFileError::Dtype {
            path: p.clone(),
            name: name.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        let t = Tensor::from_le_bytes(dtype, view.shape(), view.data())
            .map_err(|e| format(format!("{name}: {e}")))?;
        out.push((name, t));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok((out, metadata))
}

/// Writes tensors (and string metadata) as safetensors: to a temporary file in the same
/// directory, synced, then renamed over `path`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<(), TensorFileError> {
    let p = path.display().to_string();
    let bytes: Vec<(String, Vec<u8>, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_le_bytes(), t.clone()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, b, t)| {
            let v = TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), b)
                .expect("sizes come from the tensor");
            (n.clone(), v)
        })
        .collect();
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let buf = safetensors::serialize(views, meta).map_err(|e| TensorFileError::Format {
        path: p.clone(),
        message: e.to_string(),
    })?;
    let io = |error| TensorFileError::Io {
        path: p.clone(),
        error,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

//! Named tensors in safetensors files (PyTorch's `safetensors.torch.save_file` format),
//! written atomically: a crash never leaves a half-written file under the final name.

use std::collections::{BTreeMap, HashMap};
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

/// The bytes of a safetensors file holding `tensors` and `metadata`, the same for the
/// same arguments on every run and machine. The `safetensors` crate writes the metadata
/// map in `HashMap` order, which changes from process to process, so the file is
/// serialised without it and the metadata, sorted by key, is put in front of the
/// tensors' entries (where the crate puts it); the tensors' entries and data are
/// untouched, so a file without metadata is byte for byte what PyTorch's
/// `safetensors.torch.save_file` writes.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, String> {
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
    let buf = safetensors::serialize(views, None).map_err(|e| e.to_string())?;
    if metadata.is_empty() {
        return Ok(buf);
    }
    // [n: u64 LE][header JSON, space-padded to a multiple of 8][data]
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
    let header = std::str::from_utf8(&buf[8..8 + n]).map_err(|e| e.to_string())?;
    let entries = header.trim_end().strip_prefix('{').ok_or("a JSON object")?;
    let meta = serde_json::to_string(metadata).map_err(|e| e.to_string())?;
    let sep = if entries == "}" { "" } else { "," };
    let mut new = format!("{{\"__metadata__\":{meta}{sep}{entries}");
    while new.len() % 8 != 0 {
        new.push(' ');
    }
    let mut out = Vec::with_capacity(8 + new.len() + buf.len() - 8 - n);
    out.extend_from_slice(&(new.len() as u64).to_le_bytes());
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&buf[8 + n..]);
    Ok(out)
}

/// Writes tensors (and string metadata) as safetensors ([`safetensors_bytes`]): to a
/// temporary file in the same directory, synced, then renamed over `path`. Temporary
/// files a killed write left beside `path` are removed first.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), TensorFileError> {
    let p = path.display().to_string();
    let buf = safetensors_bytes(tensors, metadata).map_err(|message| TensorFileError::Format {
        path: p.clone(),
        message,
    })?;
    let io = |error| TensorFileError::Io {
        path: p.clone(),
        error,
    };
    remove_stale_temporaries(path);
    let tmp = temporary(path, std::process::id());
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&buf).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// The temporary file a write to `path` by process `pid` goes through
/// (`ckpt.safetensors` -> `ckpt.tmp.<pid>`).
fn temporary(path: &Path, pid: u32) -> std::path::PathBuf {
    path.with_extension(format!("tmp.{pid}"))
}

/// Removes the temporary files of writes to `path` that never finished (a process
/// killed between create and rename leaves one per attempt). Best effort: a file that
/// cannot be removed is left, and only names of the exact `<stem>.tmp.<digits>` form
/// are touched. Two processes must not write one path at the same time (the second's
/// rename would replace the first's file anyway).
fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}.tmp.", stem.to_string_lossy());
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = name
            .strip_prefix(&prefix)
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_written_in_key_order_and_reads_back() {
        let t = vec![
            (
                "b".to_string(),
                Tensor::from_f32(&[1.0, 2.0], &[2]).unwrap(),
            ),
            ("a".to_string(), Tensor::from_i64(&[7], &[1]).unwrap()),
        ];
        let meta: BTreeMap<String, String> = (0..20)
            .map(|i| (format!("key{i:02}"), format!("value {i}")))
            .collect();
        let bytes = safetensors_bytes(&t, &meta).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(
            header.starts_with("{\"__metadata__\":{\"key00\":\"value 0\",\"key01\""),
            "{header}"
        );
        let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
        let got: BTreeMap<String, String> = m.metadata().clone().unwrap().into_iter().collect();
        assert_eq!(got, meta);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("b").unwrap().data(), t[0].1.to_le_bytes());
        // Without metadata: no `__metadata__` entry, as PyTorch's `save_file` writes.
        let plain = safetensors_bytes(&t, &BTreeMap::new()).unwrap();
        let (_, m) = SafeTensors::read_metadata(&plain).unwrap();
        assert!(m.metadata().is_none());
        assert!(!String::from_utf8_lossy(&plain).contains("__metadata__"));
    }
}

//! Checkpoints: parameters, optimizer state, RNG state, step/epoch counters and a hash of
//! the compiled step graph, in one safetensors file written atomically (temporary file,
//! fsync, rename), so a crash never leaves a corrupt checkpoint under the final name.
//!
//! Tensor names: parameters under their `state_dict` names (so PyTorch can read them
//! with `safetensors.torch.load_file`), optimizer and RNG state under `optim/<name>`.
//! Resuming restores everything the step programs read, so the continuation is bitwise
//! the same as not stopping (tested in `tests/training/checkpoint.rs`).
//!
//! Integrity: the metadata holds a CRC-32C of every tensor (its name, dtype, shape and
//! bytes) and one of the other metadata entries; a load verifies all of them before it
//! reads anything else, so a flipped bit anywhere in the file is an error naming the
//! tensor (or the metadata), never a silently different model. The metadata records the
//! optimizer and the loss with their hyper-parameters, so resuming another training
//! program says which differs. It is written in key order: two checkpoints of the same
//! state are the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use aotgrad_runtime::Tensor;

use crate::tensor_file::{NamedTensors, TensorFileError, read_safetensors, write_safetensors};
use crate::train::{TrainError, TrainStep};

const FORMAT: &str = "aotgrad-checkpoint-2";
const STATE_PREFIX: &str = "optim/";
/// Metadata key of the tensors' checksums (a JSON object, name to hex CRC-32C).
const TENSOR_CRCS: &str = "crc32c.tensors";
/// Metadata key of the checksum of every other metadata entry.
const META_CRC: &str = "crc32c.metadata";

/// Why a checkpoint could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] TensorFileError),
    #[error(
        "{pending} micro-batches are accumulated but not applied: save after the optimizer step"
    )]
    MidAccumulation { pending: usize },
    #[error("{path}: not an aotgrad checkpoint ({reason})")]
    NotACheckpoint { path: String, reason: String },
    #[error("{path}: corrupt checkpoint: {what} does not match its checksum")]
    Corrupt { path: String, what: String },
    #[error("{path}: the checkpoint's tensors do not fit this model: {reason}")]
    Mismatch { path: String, reason: String },
    #[error("{path}: checkpoint was written by {found}, this run uses {expected}")]
    OptimizerChanged {
        path: String,
        found: String,
        expected: String,
    },
    #[error("{path}: checkpoint was written with the loss {found}, this run uses {expected}")]
    LossChanged {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: made by a different training program (step graph hash {found}, this one {expected}); same parameters, but the loss, optimizer or model differ"
    )]
    GraphChanged {
        path: String,
        found: String,
        expected: String,
    },
}

/// Counters stored with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Completed epochs.
    pub epoch: u64,
    /// Applied updates.
    pub steps: u64,
}

/// FNV-1a over the printed step graph: stable across runs and machines because the text
/// is.
pub fn graph_hash(step: &TrainStep) -> String {
    let text = aotgrad_ir::text::print(step.step_graph());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// CRC-32C of a tensor's name, dtype, shape and bytes (each length-prefixed, so no two
/// different tensors feed the same byte stream).
fn tensor_crc(name: &str, t: &Tensor) -> u32 {
    let mut c = 0;
    let mut feed = |bytes: &[u8]| {
        c = crc32c::crc32c_append(c, &(bytes.len() as u64).to_le_bytes());
        c = crc32c::crc32c_append(c, bytes);
    };
    feed(name.as_bytes());
    feed(t.dtype().to_string().as_bytes());
    let shape: Vec<u8> = t
        .shape()
        .iter()
        .flat_map(|d| (*d as u64).to_le_bytes())
        .collect();
    feed(&shape);
    feed(&t.to_le_bytes());
    c
}

/// CRC-32C of the metadata entries other than [`META_CRC`], in key order.
fn metadata_crc(meta: &BTreeMap<String, String>) -> u32 {
    let mut c = 0;
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != META_CRC) {
        for s in [k, v] {
            c = crc32c::crc32c_append(c, &(s.len() as u64).to_le_bytes());
            c = crc32c::crc32c_append(c, s.as_bytes());
        }
    }
    c
}

/// Writes `step`'s parameters, optimizer state and counters to `path` atomically.
pub fn save(step: &TrainStep, path: &Path, progress: &Progress) -> Result<(), CheckpointError> {
    if step.pending_micro_batches() != 0 {
        return Err(CheckpointError::MidAccumulation {
            pending: step.pending_micro_batches(),
        });
    }
    let mut tensors = step.state_dict();
    for (name, t) in step.optimizer_state() {
        tensors.push((format!("{STATE_PREFIX}{name}"), t));
    }
    let crcs: BTreeMap<&str, String> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), format!("{:08x}", tensor_crc(n, t))))
        .collect();
    let mut meta: BTreeMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("epoch", progress.epoch.to_string()),
        ("steps", progress.steps.to_string()),
        ("lr", format!("{:e}", step.lr())),
        ("graph_hash", graph_hash(step)),
        ("optimizer", step.optimizer().description()),
        ("loss", step.loss_description().to_string()),
        (
            TENSOR_CRCS,
            serde_json::to_string(&crcs).expect("strings serialise"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    meta.insert(META_CRC.into(), format!("{:08x}", metadata_crc(&meta)));
    write_safetensors(path, &tensors, &meta)?;
    Ok(())
}

/// Verifies every checksum of a checkpoint's metadata and tensors.
fn verify(
    p: &str,
    tensors: &NamedTensors,
    meta: &BTreeMap<String, String>,
) -> Result<(), CheckpointError> {
    let corrupt = |what: String| CheckpointError::Corrupt {
        path: p.to_string(),
        what,
    };
    let stored = meta.get(META_CRC).map(String::as_str).unwrap_or("");
    if stored != format!("{:08x}", metadata_crc(meta)) {
        return Err(corrupt(
            "the metadata (format, counters, optimizer, loss)".into(),
        ));
    }
    let crcs: BTreeMap<String, String> = meta
        .get(TENSOR_CRCS)
        .and_then(|j| serde_json::from_str(j).ok())
        .ok_or_else(|| corrupt("the list of tensor checksums".into()))?;
    for (name, t) in tensors {
        if crcs.get(name) != Some(&format!("{:08x}", tensor_crc(name, t))) {
            return Err(corrupt(format!("tensor {name:?}")));
        }
    }
    if let Some(missing) = crcs.keys().find(|n| !tensors.iter().any(|(m, _)| m == *n)) {
        return Err(corrupt(format!("tensor {missing:?} (missing)")));
    }
    Ok(())
}

/// Restores a checkpoint written by [`save`] into `step` (compiled from the same
/// trainer). Nothing changes unless the whole checkpoint fits.
pub fn load(step: &mut TrainStep, path: &Path) -> Result<Progress, CheckpointError> {
    let p = path.display().to_string();
    let (tensors, meta) = read_safetensors(path)?;
    let meta: BTreeMap<String, String> = meta.into_iter().collect();
    let not = |reason: String| CheckpointError::NotACheckpoint {
        path: p.clone(),
        reason,
    };
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some("aotgrad-checkpoint-1") => {
            return Err(not(format!(
                "format 1, written by an older aotgrad without checksums; this one reads {FORMAT:?}"
            )));
        }
        other => return Err(not(format!("format is {other:?}, expected {FORMAT:?}"))),
    }
    verify(&p, &tensors, &meta)?;
    let same = |key: &str, ours: String| match meta.get(key) {
        Some(theirs) if *theirs != ours => Some((theirs.clone(), ours)),
        _ => None,
    };
    if let Some((found, expected)) = same("optimizer", step.optimizer().description()) {
        return Err(CheckpointError::OptimizerChanged {
            path: p,
            found,
            expected,
        });
    }
    if let Some((found, expected)) = same("loss", step.loss_description().to_string()) {
        return Err(CheckpointError::LossChanged {
            path: p,
            found,
            expected,
        });
    }
    let num = |k: &str| -> Result<u64, CheckpointError> {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| not(format!("missing or bad {k:?}")))
    };
    let progress = Progress {
        epoch: num("epoch")?,
        steps: num("steps")?,
    };
    let lr: f64 = meta
        .get("lr")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| not("missing or bad \"lr\"".into()))?;
    let (state, params): (NamedTensors, NamedTensors) = tensors
        .into_iter()
        .partition(|(n, _)| n.starts_with(STATE_PREFIX));
    let state: Vec<(String, Tensor)> = state
        .into_iter()
        .map(|(n, t)| (n[STATE_PREFIX.len()..].to_string(), t))
        .collect();
    // Check both halves before changing anything.
    let mismatch = |e: TrainError| CheckpointError::Mismatch {
        path: p.clone(),
        reason: e.to_string(),
    };
    let expected = graph_hash(step);
    let found = meta.get("graph_hash").cloned().unwrap_or_default();
    let saved_params = step.state_dict();
    let saved_state = step.optimizer_state();
    step.load_state_dict(&params).map_err(mismatch)?;
    if let Err(e) = step.load_optimizer_state(&state) {
        step.load_state_dict(&saved_params)
            .expect("restoring what was there");
        return Err(mismatch(e));
    }
    let missing: Vec<&str> = saved_state
        .iter()
        .filter(|(n, _)| !state.iter().any(|(m, _)| m == n))
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() || found != expected {
        step.load_state_dict(&saved_params)
            .expect("restoring what was there");
        step.load_optimizer_state(&saved_state)
            .expect("restoring what was there");
        if !missing.is_empty() {
            return Err(CheckpointError::Mismatch {
                path: p,
                reason: format!("missing optimizer state {missing:?}"),
            });
        }
        return Err(CheckpointError::GraphChanged {
            path: p,
            found,
            expected,
        });
    }
    step.set_steps(progress.steps);
    step.set_lr(lr);
    Ok(progress)
}

/// Writes the model's parameters alone, named and laid out as PyTorch's
/// `model.state_dict()`, as a safetensors file (atomically): what
/// `model.load_state_dict(safetensors.torch.load_file(path))` loads in PyTorch.
pub fn save_state_dict(step: &TrainStep, path: &Path) -> Result<(), CheckpointError> {
    write_safetensors(path, &step.state_dict(), &BTreeMap::new())?;
    Ok(())
}

/// Loads a safetensors state dict (from [`save_state_dict`] or PyTorch's
/// `safetensors.torch.save_file(model.state_dict())`) into the model, strictly: every
/// mismatching name, dtype or shape is named in the error.
pub fn load_state_dict(step: &mut TrainStep, path: &Path) -> Result<(), CheckpointError> {
    let (tensors, _) = read_safetensors(path)?;
    step.load_state_dict(&tensors)
        .map_err(|e| CheckpointError::Mismatch {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

//! The storage of a parameter arena (`aotgrad_compiler::lower::param_arena`): one
//! cache-line-aligned allocation holding every parameter and optimizer-state tensor of
//! a model at the offsets of its [`ParamLayout`]. A program lowered for that layout
//! updates neighbouring tensors (all biases, all their moments) with one loop, which
//! needs exactly this: the tensors back to back in memory.

use std::collections::HashMap;
use std::sync::Arc;

use aotgrad_compiler::lower::{ParamLayout, ParamSlot};

use super::{Line, Persistent, Slot, line_count, lines};
use crate::Tensor;
use crate::interp::RunError;

/// Every persistent tensor of a model in one allocation laid out by a [`ParamLayout`].
pub struct ParamArena {
    layout: Arc<ParamLayout>,
    index: HashMap<String, usize>,
    storage: Vec<Line>,
}

impl ParamArena {
    /// A zeroed arena for `layout`.
    pub fn new(layout: ParamLayout) -> ParamArena {
        let storage = lines(layout.bytes());
        ParamArena::with_storage(layout, storage)
    }

    /// `layout` over `storage` (its [`line_count`] lines), with the name index.
    fn with_storage(layout: ParamLayout, storage: Vec<Line>) -> ParamArena {
        let index = layout
            .slots()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        ParamArena {
            storage,
            layout: Arc::new(layout),
            index,
        }
    }

    /// An arena laid out for training ([`ParamLayout::for_training`]) holding `params`
    /// (declaration order) and `state`.
    pub fn for_training<N: AsRef<str>, T: std::borrow::Borrow<Tensor>>(
        params: impl IntoIterator<Item = (N, T)>,
        state: impl IntoIterator<Item = (N, T)>,
    ) -> ParamArena {
        let entry = |(n, t): &(N, T)| {
            let t = t.borrow();
            (n.as_ref().to_string(), t.dtype(), t.shape().to_vec())
        };
        let params: Vec<_> = params.into_iter().collect();
        let state: Vec<_> = state.into_iter().collect();
        let layout = ParamLayout::for_training(
            &params.iter().map(entry).collect::<Vec<_>>(),
            &state.iter().map(entry).collect::<Vec<_>>(),
        );
        // The storage is written front to back, each tensor dropped (when owned) as soon
        // as it is in: pages become resident only as they are written, so taking a
        // model's host copies over never holds two copies of it (zeroing the storage
        // first made all of it resident beside them: +22 MB of peak RSS on wide_adam).
        let mut values: HashMap<String, T> = params
            .into_iter()
            .chain(state)
            .map(|(n, t)| (n.as_ref().to_string(), t))
            .collect();
        let mut order: Vec<&ParamSlot> = layout.slots().iter().collect();
        order.sort_by_key(|s| s.offset);
        let lines_needed = line_count(layout.bytes());
        let mut storage = Vec::with_capacity(lines_needed);
        let mut end = 0;
        for slot in order {
            let t = values
                .remove(&slot.name)
                .expect("laid out from these tensors");
            append(
                &mut storage,
                &mut end,
                slot.offset,
                &t.borrow().to_le_bytes(),
            );
        }
        storage.resize(lines_needed, Line([0; 64]));
        ParamArena::with_storage(layout, storage)
    }

    pub fn layout(&self) -> &Arc<ParamLayout> {
        &self.layout
    }

    fn slot_of(&self, name: &str) -> Option<&ParamSlot> {
        self.position(name).map(|i| &self.layout.slots()[i])
    }

    /// Every call looks up each persistent leaf by name: for the few tensors of small
    /// models a scan of the names beats hashing them (the per-call overhead of a
    /// scalar step is a few hundred nanoseconds).
    fn position(&self, name: &str) -> Option<usize> {
        if self.layout.slots().len() <= 16 {
            return self.layout.slots().iter().position(|s| s.name == name);
        }
        self.index.get(name).copied()
    }

    /// Copies `t` into `name`'s slot; its dtype and shape must be the slot's.
    pub fn set(&mut self, name: &str, t: &Tensor) -> Result<(), RunError> {
        let not_in = || RunError::NotInLayout {
            name: name.to_string(),
            ty: t.ty(),
        };
        let s = self.slot_of(name).ok_or_else(not_in)?;
        if s.dtype != t.dtype() || s.shape != t.shape() {
            return Err(not_in());
        }
        let offset = s.offset;
        self.write(offset, &t.to_le_bytes());
        Ok(())
    }

    /// A copy of `name`'s tensor.
    pub fn get(&self, name: &str) -> Option<Tensor> {
        let s = self.slot_of(name)?;
        let mut bytes = vec![0u8; s.bytes()];
        self.read(s.offset, &mut bytes);
        Some(Tensor::from_le_bytes(s.dtype, &s.shape, &bytes).expect("slot-sized"))
    }

    // The storage is cache lines (for alignment); bytes cross them in chunks.
    fn write(&mut self, mut at: usize, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, col) = (at / 64, at % 64);
            let n = bytes.len().min(64 - col);
            self.storage[line].0[col..col + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            at += n;
        }
    }

    fn read(&self, mut at: usize, mut out: &mut [u8]) {
        while !out.is_empty() {
            let (line, col) = (at / 64, at % 64);
            let n = out.len().min(64 - col);
            out[..n].copy_from_slice(&self.storage[line].0[col..col + n]);
            out = &mut out[n..];
            at += n;
        }
    }
}

impl Persistent for ParamArena {
    fn slot(&mut self, name: &str) -> Option<Slot<'_>> {
        let i = self.position(name)?;
        let s = &self.layout.slots()[i];
        // `wrapping_add` keeps this a plain address computation; the slot lies inside the
        // storage by construction of the layout.
        let ptr = (self.storage.as_mut_ptr() as *mut u8).wrapping_add(s.offset);
        Some(Slot {
            dtype: s.dtype,
            shape: &s.shape,
            ptr,
        })
    }

    fn store(&mut self, name: &str, t: Tensor) {
        self.set(name, &t)
            .expect("updates have the type of the tensor they replace");
    }
}

/// Writes `bytes` at byte `at` of `storage`, whose first `*end` (at most `at`) bytes
/// are written, zero-padding the gap.
fn append(storage: &mut Vec<Line>, end: &mut usize, at: usize, bytes: &[u8]) {
    let mut pad = at - *end;
    let mut rest = bytes;
    while pad > 0 || !rest.is_empty() {
        if *end == storage.len() * 64 {
            storage.push(Line([0; 64]));
        }
        let col = *end % 64;
        let room = 64 - col;
        let n = if pad > 0 {
            // The line is zero already: padding only moves the end.
            let n = pad.min(room);
            pad -= n;
            n
        } else {
            let n = rest.len().min(room);
            storage.last_mut().expect("pushed above").0[col..col + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            n
        };
        *end += n;
    }
}

//! The compiled variants of one program: one per binding of its symbols (a batch size),
//! compiled on first use and kept. Shared by the CPU and GPU executors.

use crate::interp::{RunError, SymbolEnv};

/// Variants keyed by the bound symbol sizes, and which one the last call ran.
pub(crate) struct Variants<V> {
    entries: Vec<(Vec<usize>, V)>,
    last: Option<usize>,
}

impl<V> Default for Variants<V> {
    fn default() -> Self {
        Variants {
            entries: Vec::new(),
            last: None,
        }
    }
}

impl<V> Variants<V> {
    /// The index of the variant for `env`, compiled by `compile` if there is none.
    pub(crate) fn index(
        &mut self,
        env: &SymbolEnv,
        compile: impl FnOnce(&SymbolEnv) -> Result<V, RunError>,
    ) -> Result<usize, RunError> {
        let key: Vec<usize> = env.values().copied().collect();
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            return Ok(i);
        }
        let v = compile(env)?;
        self.entries.push((key, v));
        Ok(self.entries.len() - 1)
    }

    pub(crate) fn get(&self, i: usize) -> &V {
        &self.entries[i].1
    }

    pub(crate) fn get_mut(&mut self, i: usize) -> &mut V {
        &mut self.entries[i].1
    }

    /// The variant the last call ran.
    pub(crate) fn last(&self) -> Option<&V> {
        self.last.map(|i| &self.entries[i].1)
    }

    pub(crate) fn last_index(&self) -> Option<usize> {
        self.last
    }

    /// Records that variant `i` ran.
    pub(crate) fn ran(&mut self, i: usize) {
        self.last = Some(i);
    }

    /// Drops every variant (the options they were compiled with changed).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.last = None;
    }
}

//! [`Vars`]: named values of a graph being built — a batch's tensors (PyTorch's dict
//! batches) and a model's outputs — as a loss or a multi-input model reads them.

use aotgrad_ir::{BuildErrorKind, GraphBuilder, Var};

/// Named graph values in declaration order.
#[derive(Clone)]
pub struct Vars<'g> {
    b: &'g GraphBuilder,
    items: Vec<(String, Var<'g>)>,
}

impl<'g> Vars<'g> {
    pub fn new(b: &'g GraphBuilder) -> Vars<'g> {
        Vars {
            b,
            items: Vec::new(),
        }
    }

    /// Adds (or replaces) `name`.
    pub fn insert(&mut self, name: &str, v: Var<'g>) {
        match self.items.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = v,
            None => self.items.push((name.to_string(), v)),
        }
    }

    /// The value named `name`; a missing name is a build error listing the names there
    /// are (at the caller's line).
    #[track_caller]
    pub fn get(&self, name: &str) -> Var<'g> {
        match self.try_get(name) {
            Some(v) => v,
            None => self.b.report(
                "batch",
                BuildErrorKind::Usage(format!(
                    "no tensor named {name:?}; there are {:?}",
                    self.names()
                )),
            ),
        }
    }

    pub fn try_get(&self, name: &str) -> Option<Var<'g>> {
        self.items.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    pub fn names(&self) -> Vec<&str> {
        self.items.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Var<'g>)> {
        self.items.iter().map(|(n, v)| (n.as_str(), *v))
    }

    pub fn builder(&self) -> &'g GraphBuilder {
        self.b
    }
}

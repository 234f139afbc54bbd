//! The reference interpreter as an executor: persistent tensors in a map, every program
//! evaluated from its graph on every call.

use std::collections::HashMap;
use std::sync::Arc;

use aotgrad_runtime::collective::Communicator;

use aotgrad_ir::{Graph, Op};
use aotgrad_runtime::gpu::Fetch;
use aotgrad_runtime::{Evaluation, RunError, Tensor};

use super::Backend;
use super::{Executor, ProgramKind, Stage, Updates, own_inputs};

pub struct InterpExecutor {
    tensors: HashMap<String, Tensor>,
    /// The process group `all_reduce` sums over (a group of one when `None`).
    group: Option<Arc<dyn Communicator>>,
}

impl InterpExecutor {
    pub fn new(params: Vec<(String, Tensor)>, state: Vec<(String, Tensor)>) -> InterpExecutor {
        InterpExecutor {
            tensors: params.into_iter().chain(state).collect(),
            group: None,
        }
    }

    /// Runs as one rank of `group`.
    pub fn in_group(mut self, group: Option<Arc<dyn Communicator>>) -> InterpExecutor {
        self.group = group;
        self
    }
}

impl Executor for InterpExecutor {
    fn backend(&self) -> Backend {
        Backend::Interpreter
    }

    fn run(
        &mut self,
        _kind: ProgramKind,
        graph: &Graph,
        inputs: &[(&str, &Tensor)],
        updates: Updates,
        _fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError> {
        let is_input = |n: &str| {
            graph
                .find(n)
                .is_some_and(|id| matches!(graph.node(id).op, Op::Input { .. }))
        };
        let mut feeds: HashMap<String, Tensor> = own_inputs(inputs, is_input)
            .into_iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        for (name, _) in graph.params().chain(graph.states()) {
            if let Some(t) = self.tensors.get(name) {
                feeds.insert(name.to_string(), t.clone());
            }
        }
        let ev = match &self.group {
            Some(g) => aotgrad_runtime::run_in_group(graph, &feeds, g.as_ref())?,
            None => aotgrad_runtime::run(graph, &feeds)?,
        };
        if updates == Updates::Apply {
            for (name, t) in &ev.updates {
                self.tensors.insert(name.clone(), t.clone());
            }
        }
        Ok(ev)
    }

    fn read(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        names
            .iter()
            .map(|&n| {
                self.tensors
                    .get(n)
                    .map(|t| (n.to_string(), t.clone()))
                    .ok_or_else(|| RunError::Unknown {
                        name: n.to_string(),
                    })
            })
            .collect()
    }

    fn write(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), RunError> {
        self.tensors.extend(tensors);
        Ok(())
    }

    fn stages(&self) -> &'static [Stage] {
        &[]
    }

    fn inspect(&self, _: ProgramKind, _: Stage) -> Option<Result<String, RunError>> {
        None
    }
}

//! The GPU as an executor: the persistent tensors in a device store (uploaded before
//! the first run, read back on request), each program compiled once per kind (and per
//! symbol binding, inside `GpuProgram`).

use std::collections::HashMap;

use aotgrad_ir::Graph;
use aotgrad_runtime::gpu::{DeviceStore, Fetch, GpuProgram};
use aotgrad_runtime::{Evaluation, RunError, Tensor};

use super::Backend;
use super::{Executor, ProgramKind, Stage, Updates, own_inputs};

pub struct GpuExecutor {
    store: DeviceStore,
    programs: HashMap<ProgramKind, GpuProgram>,
}

impl GpuExecutor {
    /// Opens the adapter and uploads the tensors.
    pub fn new(
        params: Vec<(String, Tensor)>,
        state: Vec<(String, Tensor)>,
    ) -> Result<GpuExecutor, RunError> {
        let mut store = DeviceStore::new()?;
        for (n, t) in params.iter().chain(&state) {
            store.upload(n, t)?;
        }
        Ok(GpuExecutor {
            store,
            programs: HashMap::new(),
        })
    }
}

impl Executor for GpuExecutor {
    fn backend(&self) -> Backend {
        Backend::Gpu
    }

    fn run(
        &mut self,
        kind: ProgramKind,
        graph: &Graph,
        inputs: &[(&str, &Tensor)],
        updates: Updates,
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError> {
        let prog = match self.programs.entry(kind) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(GpuProgram::new(graph)?),
        };
        let inputs = own_inputs(inputs, |n| prog.has_input(n));
        if updates == Updates::Discard && !graph.updates().is_empty() {
            // Kernels update the store in place: keep what they would overwrite.
            let names: Vec<&str> = graph
                .updates()
                .iter()
                .filter_map(|(t, _)| graph.node(*t).op.leaf_name())
                .collect();
            let saved = self.store.download(&names)?;
            let ev = prog.run(&mut self.store, &inputs, fetch);
            for (n, t) in &saved {
                self.store.upload(n, t)?;
            }
            return ev;
        }
        prog.run(&mut self.store, &inputs, fetch)
    }

    fn read(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        self.store.download(names)
    }

    fn write(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), RunError> {
        for (n, t) in &tensors {
            self.store.upload(n, t)?;
        }
        Ok(())
    }

    fn stages(&self) -> &'static [Stage] {
        &[Stage::Lowered, Stage::PlanPasses, Stage::Wgsl]
    }

    fn inspect(&self, kind: ProgramKind, stage: Stage) -> Option<Result<String, RunError>> {
        let p = self.programs.get(&kind)?;
        let v = p.last_variant()?;
        match stage {
            Stage::Lowered => Some(Ok(v.program().to_string())),
            Stage::Wgsl => Some(Ok(v.wgsl().to_string())),
            Stage::PlanPasses => Some(p.lowered_pass_by_pass(&v.program().env)),
            Stage::CraneliftIr | Stage::MachineCode => None,
        }
    }
}

//! A training step's GPU side: the device store holding its parameters and optimizer
//! state between steps, and its compiled GPU programs.

use std::collections::HashMap;

use aotgrad_ir::Graph;
use aotgrad_runtime::gpu::{DeviceStore, Fetch, GpuProgram};
use aotgrad_runtime::{Evaluation, RunError, Tensor};

pub(crate) struct GpuSession {
    store: DeviceStore,
    programs: HashMap<&'static str, GpuProgram>,
    /// Whether the store holds the step's current parameters and state (false until
    /// the first run and after the host copies change).
    loaded: bool,
}

impl GpuSession {
    pub(crate) fn new() -> Result<GpuSession, RunError> {
        Ok(GpuSession {
            store: DeviceStore::new()?,
            programs: HashMap::new(),
            loaded: false,
        })
    }

    /// The host copies changed: upload them before the next run.
    pub(crate) fn invalidate(&mut self) {
        self.loaded = false;
    }

    /// Runs program `name` (compiled from `g` on first use), uploading the host
    /// parameters and state first if the device does not hold them yet.
    pub(crate) fn run(
        &mut self,
        name: &'static str,
        g: &Graph,
        host: (&[(String, Tensor)], &HashMap<String, Tensor>),
        inputs: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError> {
        if !self.loaded {
            for (n, t) in host.0.iter().map(|(n, t)| (n, t)).chain(host.1.iter()) {
                self.store.upload(n, t)?;
            }
            self.loaded = true;
        }
        if !self.programs.contains_key(name) {
            self.programs.insert(name, GpuProgram::new(g)?);
        }
        let prog = self.programs.get_mut(name).expect("inserted");
        let inputs: Vec<(&str, &Tensor)> = inputs
            .iter()
            .filter(|(n, _)| prog.has_input(n))
            .copied()
            .collect();
        prog.run(&mut self.store, &inputs, fetch)
    }

    /// Reads the named tensors back from the device.
    pub(crate) fn download(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        self.store.download(names)
    }

    /// The lowered program and WGSL of program `name` as it last ran.
    pub(crate) fn artifacts(&self, name: &str) -> Option<(String, String)> {
        let v = self.programs.get(name)?.last_variant()?;
        Some((v.program().to_string(), v.wgsl().to_string()))
    }
}

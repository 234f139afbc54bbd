//! The CPU JIT as an executor: each program compiled once per kind (and per symbol
//! binding, inside `CpuProgram`), the persistent tensors in a parameter arena from the
//! first run on (built from the host copies, which it takes over, so a model is held
//! once), so that the optimizer's loops over neighbouring tensors merge.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use aotgrad_compiler::lower::ParamLayout;
use aotgrad_ir::Graph;
use aotgrad_runtime::collective::Communicator;
use aotgrad_runtime::cpu::{CpuOptions, CpuProgram, KernelProfile, ParamArena};
use aotgrad_runtime::gpu::Fetch;
use aotgrad_runtime::{Evaluation, RunError, Tensor};

use super::Backend;
use super::{Executor, ExecutorOptions, ProgramKind, Stage, Updates, own_inputs};

/// Tensors with their names.
type Named = Vec<(String, Tensor)>;

pub struct CpuExecutor {
    threads: usize,
    opts: ExecutorOptions,
    /// Programs made for the arena's layout, by kind.
    programs: HashMap<ProgramKind, CpuProgram>,
    /// Programs that run on copies (their updates are discarded), by kind.
    on_copies: HashMap<ProgramKind, CpuProgram>,
    /// The tensors before the first run (parameters in declaration order, state).
    host: Option<(Named, Named)>,
    /// Behind a `RefCell` because reading a tensor out of a not-yet-built arena
    /// builds it.
    arena: RefCell<Option<ParamArena>>,
    /// The process group of data-parallel training (a group of one if `None`).
    group: Option<Arc<dyn Communicator>>,
}

impl CpuExecutor {
    pub fn new(
        threads: usize,
        opts: ExecutorOptions,
        params: Vec<(String, Tensor)>,
        state: Vec<(String, Tensor)>,
    ) -> CpuExecutor {
        CpuExecutor {
            threads,
            opts,
            programs: HashMap::new(),
            on_copies: HashMap::new(),
            host: Some((params, state)),
            arena: RefCell::new(None),
            group: None,
        }
    }

    /// Runs as one rank of `group`.
    pub fn in_group(mut self, group: Option<Arc<dyn Communicator>>) -> CpuExecutor {
        self.group = group;
        self
    }

    fn options(&self) -> CpuOptions {
        CpuOptions {
            threads: self.threads,
            check_numerics: self.opts.check_numerics,
            profile: self.opts.profile,
            ..CpuOptions::default()
        }
    }

    /// The arena, built from the host copies (moved in) on first use.
    fn arena(&mut self) -> &mut ParamArena {
        let arena = self.arena.get_mut();
        if arena.is_none() {
            let (params, state) = self.host.take().unwrap_or_default();
            *arena = Some(ParamArena::for_training(params, state));
        }
        arena.as_mut().expect("built above")
    }

    /// The program of `kind` for `layout` (`None`: for a plain map of tensors),
    /// compiled from `graph` on first use or when the arena's layout changed.
    fn program<'c>(
        cache: &'c mut HashMap<ProgramKind, CpuProgram>,
        kind: ProgramKind,
        graph: &Graph,
        opts: CpuOptions,
        layout: Option<Arc<ParamLayout>>,
        group: &Option<Arc<dyn Communicator>>,
    ) -> Result<&'c mut CpuProgram, RunError> {
        let stale = cache
            .get(&kind)
            .is_some_and(|p| match (p.layout(), &layout) {
                // The same arena's layout (every call but the first): no deep comparison.
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && **a != **b,
                (None, None) => false,
                _ => true,
            });
        if stale || !cache.contains_key(&kind) {
            let p = match layout {
                Some(l) => CpuProgram::for_arena(graph, opts, l)?,
                None => CpuProgram::new(graph, opts)?,
            }
            .in_group(group.clone());
            cache.insert(kind, p);
        }
        Ok(cache.get_mut(&kind).expect("inserted"))
    }

    fn last(&self, kind: ProgramKind) -> Option<&CpuProgram> {
        self.programs
            .get(&kind)
            .filter(|p| p.last_variant().is_some())
            .or_else(|| self.on_copies.get(&kind))
    }
}

impl Executor for CpuExecutor {
    fn backend(&self) -> Backend {
        Backend::Cpu {
            threads: self.threads,
        }
    }

    fn run(
        &mut self,
        kind: ProgramKind,
        graph: &Graph,
        inputs: &[(&str, &Tensor)],
        updates: Updates,
        _fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError> {
        let opts = self.options();
        if updates == Updates::Discard && !graph.updates().is_empty() {
            // The program would write the arena: it runs on copies instead.
            let names: Vec<&str> = graph
                .params()
                .chain(graph.states())
                .map(|(n, _)| n)
                .collect();
            let mut store: HashMap<String, Tensor> = self.read(&names)?.into_iter().collect();
            let prog = Self::program(&mut self.on_copies, kind, graph, opts, None, &self.group)?;
            let inputs = own_inputs(inputs, |n| prog.has_input(n));
            return prog.run(&mut store, &inputs);
        }
        let layout = self.arena().layout().clone();
        let prog = Self::program(
            &mut self.programs,
            kind,
            graph,
            opts,
            Some(layout),
            &self.group,
        )?;
        let inputs = own_inputs(inputs, |n| prog.has_input(n));
        let arena = self.arena.get_mut().as_mut().expect("built above");
        prog.run(arena, &inputs)
    }

    fn read(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        let unknown = |n: &str| RunError::Unknown {
            name: n.to_string(),
        };
        if let Some((params, state)) = &self.host {
            return names
                .iter()
                .map(|&n| {
                    params
                        .iter()
                        .chain(state)
                        .find(|(k, _)| k == n)
                        .cloned()
                        .ok_or_else(|| unknown(n))
                })
                .collect();
        }
        let arena = self.arena.borrow();
        let arena = arena.as_ref().expect("the arena holds the tensors");
        names
            .iter()
            .map(|&n| {
                arena
                    .get(n)
                    .map(|t| (n.to_string(), t))
                    .ok_or_else(|| unknown(n))
            })
            .collect()
    }

    fn write(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), RunError> {
        if let Some((params, state)) = &mut self.host {
            for (name, t) in tensors {
                let slot = params
                    .iter_mut()
                    .chain(state.iter_mut())
                    .find(|(k, _)| *k == name)
                    .ok_or(RunError::Unknown { name })?;
                slot.1 = t;
            }
            return Ok(());
        }
        let arena = self.arena();
        for (name, t) in tensors {
            arena.set(&name, &t)?;
        }
        Ok(())
    }

    fn stages(&self) -> &'static [Stage] {
        &[
            Stage::Lowered,
            Stage::PlanPasses,
            Stage::CraneliftIr,
            Stage::MachineCode,
        ]
    }

    fn inspect(&self, kind: ProgramKind, stage: Stage) -> Option<Result<String, RunError>> {
        let p = self.last(kind)?;
        let v = p.last_variant()?;
        match stage {
            Stage::Lowered => Some(Ok(v.program().to_string())),
            Stage::PlanPasses => Some(p.lowered_pass_by_pass(&v.program().env)),
            Stage::CraneliftIr => Some(Ok(v.clif().to_string())),
            Stage::MachineCode => {
                // Compiled again with the option (the running program keeps no text).
                let opts = CpuOptions {
                    machine_code: true,
                    ..p.options()
                };
                let env = v.program().env.clone();
                let made = match p.layout() {
                    Some(l) => CpuProgram::for_arena(p.graph(), opts, l.clone()),
                    None => CpuProgram::new(p.graph(), opts),
                };
                Some(made.and_then(|mut q| q.variant(&env).map(|v| v.machine_code().to_string())))
            }
            Stage::Wgsl => None,
        }
    }

    fn profile(&self, kind: ProgramKind) -> Option<KernelProfile> {
        if !self.opts.profile {
            return None;
        }
        Some(self.last(kind)?.last_variant()?.profile())
    }
}

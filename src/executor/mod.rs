//! Where a training step's programs run and its persistent tensors (parameters,
//! optimizer state, buffers, the RNG key) live between calls: one interface, three
//! implementations (the reference interpreter, the CPU JIT, the GPU), chosen once by
//! [`Backend`]. `TrainStep` only ever talks to this interface.
//!
//! A distributed executor fits the same shape: it runs the `Grads` program, reduces the
//! gradients between its processes, and runs `Apply`.

mod backend;
mod cpu;
mod gpu;
mod interp;

use aotgrad_ir::Graph;
use aotgrad_runtime::cpu::KernelProfile;
use aotgrad_runtime::gpu::Fetch;
use aotgrad_runtime::{Evaluation, RunError, Tensor};

pub use backend::Backend;
pub use cpu::CpuExecutor;
pub use gpu::GpuExecutor;
pub use interp::InterpExecutor;

/// The programs one trainer compiles (see `crate::train`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProgramKind {
    /// Forward, loss, backward and the optimizer update.
    Step,
    /// Forward, loss and backward: the gradients as outputs.
    Grads,
    /// Forward and loss in evaluation mode (dropout off, running statistics).
    Eval,
    /// Forward only, evaluation mode.
    Predict,
    /// Forward and backward, gradients added to accumulators.
    Accumulate,
    /// The optimizer on the mean of the accumulated gradients.
    Apply,
}

impl ProgramKind {
    /// The name messages and the printed IR use (`step`, `eval`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ProgramKind::Step => "step",
            ProgramKind::Grads => "grads",
            ProgramKind::Eval => "eval",
            ProgramKind::Predict => "predict",
            ProgramKind::Accumulate => "accumulate",
            ProgramKind::Apply => "apply",
        }
    }
}

impl std::fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What happens to the new values a program computes for persistent tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updates {
    /// They replace the executor's tensors (a training step).
    Apply,
    /// They are computed and dropped; the executor's tensors stay as they were
    /// (`gradients()`, whose program advances the RNG key or batch-norm statistics).
    Discard,
}

/// A stage of a compiled program that can be read as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The lowered program: kernels, buffers, memory plan.
    Lowered,
    /// The lowered program as first lowered and after every kernel-plan pass
    /// (`aotgrad lower --print-after-all`).
    PlanPasses,
    /// The Cranelift IR handed to Cranelift (byte-stable).
    CraneliftIr,
    /// Cranelift's optimised IR and this host's machine code (depends on the CPU).
    MachineCode,
    /// The WGSL compute shaders.
    Wgsl,
}

/// Runs a trainer's programs and holds its persistent tensors.
pub trait Executor {
    /// The backend it implements.
    fn backend(&self) -> Backend;

    /// Runs program `kind` (compiled from `graph` on its first run) on `inputs` (those
    /// the program does not read are ignored) and the executor's persistent tensors.
    /// `fetch` says which outputs the caller needs (the GPU reads back only those).
    fn run(
        &mut self,
        kind: ProgramKind,
        graph: &Graph,
        inputs: &[(&str, &Tensor)],
        updates: Updates,
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, RunError>;

    /// The current values of the named persistent tensors.
    fn read(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError>;

    /// Sets persistent tensors (a checkpoint or a state dict loaded): any subset of
    /// those the executor was made with, with their names and types.
    fn write(&mut self, tensors: Vec<(String, Tensor)>) -> Result<(), RunError>;

    /// The stages [`Executor::inspect`] can show on this backend.
    fn stages(&self) -> &'static [Stage];

    /// Stage `stage` of program `kind` as it last ran; `None` before its first run or
    /// for a stage this backend does not have.
    fn inspect(&self, kind: ProgramKind, stage: Stage) -> Option<Result<String, RunError>>;

    /// The time of each kernel of program `kind` summed over its calls, when the
    /// backend was built to measure it (the CPU with `Trainer::profile`).
    fn profile(&self, _kind: ProgramKind) -> Option<KernelProfile> {
        None
    }
}

/// The executor of `backend` holding `params` (in declaration order) and `state`
/// (optimizer state, buffers, the RNG key).
///
/// `group` is the process group of data-parallel training: the interpreter reduces
/// its `all_reduce`s over it, the CPU's `all_reduce` kernels through the host; the GPU
/// runs groups of one so far and refuses a larger one.
pub fn for_backend(
    backend: Backend,
    opts: ExecutorOptions,
    group: Option<std::sync::Arc<dyn aotgrad_runtime::collective::Communicator>>,
    params: Vec<(String, Tensor)>,
    mut state: Vec<(String, Tensor)>,
) -> Result<Box<dyn Executor>, RunError> {
    // A fixed order, so the CPU's parameter arena is laid out the same on every run.
    state.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(g) = &group
        && g.world() > 1
        && backend == Backend::Gpu
    {
        return Err(RunError::Unsupported {
            backend: "gpu",
            what: format!(
                "all_reduce over {} ranks yet (data-parallel training runs on the cpu and interp backends so far)",
                g.world()
            ),
        });
    }
    Ok(match backend {
        Backend::Interpreter => Box::new(InterpExecutor::new(params, state).in_group(group)),
        Backend::Cpu { threads } => {
            Box::new(CpuExecutor::new(threads, opts, params, state).in_group(group))
        }
        Backend::Gpu => Box::new(GpuExecutor::new(params, state)?),
    })
}

/// How programs are compiled, where a backend has the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecutorOptions {
    /// Test every kernel's output for NaN/Inf (CPU).
    pub check_numerics: bool,
    /// Time every kernel (CPU).
    pub profile: bool,
}

/// `inputs` without the names `has` rejects.
fn own_inputs<'a>(
    inputs: &[(&'a str, &'a Tensor)],
    has: impl Fn(&str) -> bool,
) -> Vec<(&'a str, &'a Tensor)> {
    inputs.iter().filter(|(n, _)| has(n)).copied().collect()
}

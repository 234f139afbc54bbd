//! The reference interpreter: evaluates any verified graph on host tensors with plain
//! loops. It is the oracle every backend is tested against, so it stays obviously
//! correct: no fusion, no vectorisation, sequential accumulation in the tensor's dtype.

mod eval;
pub(crate) mod layout;
pub(crate) mod num;
pub mod rng;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aotgrad_ir::{Dim, Graph, NodeId, Op, TensorType, verify};

use crate::Tensor;

/// Why a graph could not be evaluated on the given tensors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("no tensor was given for {kind} {name:?} ({ty})")]
    Missing {
        kind: &'static str,
        name: String,
        ty: TensorType,
    },
    #[error("{name:?} expects {expected}, got a {got} tensor of shape {shape:?}")]
    Mismatch {
        name: String,
        expected: TensorType,
        got: aotgrad_ir::DType,
        shape: Vec<usize>,
    },
    #[error("symbol {sym} is {first} from {first_from:?} but {second} from {second_from:?}")]
    SymbolConflict {
        sym: String,
        first: usize,
        first_from: String,
        second: usize,
        second_from: String,
    },
    #[error("symbol {sym} used by {node} is not bound by any input")]
    Unbound { sym: String, node: NodeId },
    #[error("{node} (`{op}`): index {index} is out of range for an axis of size {size}")]
    IndexOutOfRange {
        node: NodeId,
        op: &'static str,
        index: i64,
        size: usize,
    },
    #[error("{node} (`{op}`): {error}")]
    TooLarge {
        node: NodeId,
        op: &'static str,
        error: aotgrad_ir::TooLarge,
    },
    #[error(
        "internal error in the kernel of {node} (`{op}`): {message} (a bug in aotgrad: \
         please report it with the graph)"
    )]
    Internal {
        node: NodeId,
        op: &'static str,
        message: String,
    },
    #[error("{name:?} was given but the graph has no input, param or state of that name")]
    Unknown { name: String },
    #[error("the graph does not verify: {0}")]
    Invalid(aotgrad_ir::VerifyError),
    #[error("could not lower the graph: {0}")]
    Lower(aotgrad_compiler::lower::LowerError),
    #[error("could not emit Cranelift IR: {0}")]
    Codegen(aotgrad_compiler::codegen::CodegenError),
    #[error("could not emit WGSL: {0}")]
    Wgsl(aotgrad_compiler::codegen::wgsl::WgslError),
    /// Cranelift (or the JIT's thread pool) refused: `stage` says which step.
    #[error("JIT compilation failed at {stage}: {message}")]
    Jit {
        stage: &'static str,
        message: String,
    },
    #[error(
        "{what} ({bytes} bytes on the device) exceeds the adapter's buffer size limit of {limit} bytes"
    )]
    DeviceLimit {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("the {backend} backend does not support {what}")]
    Unsupported { backend: &'static str, what: String },
    #[error("internal error: {0} (a bug in aotgrad: please report it with the graph)")]
    Bug(String),
    /// A lowered program failed its own bounds check: a lowering bug, caught before
    /// any generated code ran.
    #[error(
        "lowering produced an out-of-bounds access (a bug in aotgrad: please report it with the graph): {0}"
    )]
    OutOfBounds(Box<aotgrad_compiler::program::BoundsError>),
    #[error("no GPU adapter: {0}")]
    NoDevice(String),
    #[error(
        "{name:?}: the value {value} does not fit the GPU's 32-bit integers (i64 tensors are \
         stored as i32 on the device)"
    )]
    NotI32 { name: String, value: i64 },
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("{node} (`{op}`) produced a non-finite value ({value}) (check-numerics mode)")]
    NonFinite {
        node: NodeId,
        op: &'static str,
        value: f64,
    },
    #[error(
        "the program was compiled for a parameter arena and updates {names:?} as one span, \
         but they are not stored back to back (run it with the `ParamArena` of its layout)"
    )]
    NotInArena { names: Vec<String> },
    #[error("the parameter arena has no tensor {name:?} of type {ty}")]
    NotInLayout { name: String, ty: TensorType },
    #[error("{node} (`all_reduce`): {error}")]
    Collective {
        node: NodeId,
        error: crate::collective::CollectiveError,
    },
}

/// What one evaluation produced: each output and each update's new value, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub outputs: Vec<(String, Tensor)>,
    /// `(param or state name, new value)`.
    pub updates: Vec<(String, Tensor)>,
}

impl Evaluation {
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn update(&self, name: &str) -> Option<&Tensor> {
        self.updates.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Sizes bound to the graph's symbols for one evaluation.
pub type SymbolEnv = BTreeMap<Arc<str>, usize>;

/// Evaluates `graph` with `feeds` giving every input, param and state by name.
pub fn run(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<Evaluation, RunError> {
    run_in_group(graph, feeds, &crate::collective::SingleProcess)
}

/// [`run`] as one rank of a process group: each `all_reduce` sums (or averages) the
/// value over the group's ranks through `comm`, in rank order, so every rank gets the
/// same bits. Every rank must run the same graph.
pub fn run_in_group(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
    comm: &dyn crate::collective::Communicator,
) -> Result<Evaluation, RunError> {
    verify(graph).map_err(RunError::Invalid)?;
    for name in feeds.keys() {
        if graph.find(name).is_none() {
            return Err(RunError::Unknown { name: name.clone() });
        }
    }
    let env = bind(graph, feeds)?;
    check_bound_sizes(graph, &env)?;
    let mut values: Vec<Option<Tensor>> = vec![None; graph.len()];
    let mut keep = vec![false; graph.len()];
    for (_, id) in graph.outputs() {
        keep[id.index()] = true;
    }
    for (_, v) in graph.updates() {
        keep[v.index()] = true;
    }
    // Only what an output or update depends on is evaluated: a dead node cannot be
    // observed, and the compiled backends never run it, so its errors (an out-of-range
    // index of an unused gather) must not be the oracle's either.
    let mut live = keep.clone();
    graph.mark_inputs(&mut live);
    let mut last_use = vec![0usize; graph.len()];
    for (id, n) in graph.nodes().filter(|(id, _)| live[id.index()]) {
        for i in &n.inputs {
            last_use[i.index()] = id.index();
        }
    }
    for (id, node) in graph.nodes() {
        if !live[id.index()] {
            continue;
        }
        let t = match &node.op {
            Op::Input { name, .. } | Op::Param { name, .. } | Op::State { name, .. } => {
                feeds[name].clone()
            }
            Op::AllReduce { op } if comm.world() > 1 => {
                let x = values[node.inputs[0].index()]
                    .as_ref()
                    .expect("operands are evaluated first");
                all_reduce(x, *op, comm)
                    .map_err(|error| RunError::Collective { node: id, error })?
            }
            _ => {
                let args: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .map(|i| {
                        values[i.index()]
                            .as_ref()
                            .expect("operands are evaluated first")
                    })
                    .collect();
                eval::eval(graph, id, &args, &env)?
            }
        };
        values[id.index()] = Some(t);
        // Free operands whose last use was this node (the oracle still has to fit
        // a training step's activations in memory).
        for i in &node.inputs {
            if last_use[i.index()] == id.index() && !keep[i.index()] {
                values[i.index()] = None;
            }
        }
    }
    let get = |id: NodeId| values[id.index()].clone().expect("roots are kept");
    Ok(Evaluation {
        outputs: graph
            .outputs()
            .iter()
            .map(|(n, id)| (n.clone(), get(*id)))
            .collect(),
        updates: graph
            .updates()
            .iter()
            .map(|(t, v)| {
                (
                    graph
                        .node(*t)
                        .op
                        .leaf_name()
                        .unwrap_or_default()
                        .to_string(),
                    get(*v),
                )
            })
            .collect(),
    })
}

/// `x` summed over the group in rank order; the mean divides that sum by the group
/// size in the dtype (floats only: the op's type rule).
pub(crate) fn all_reduce(
    x: &Tensor,
    op: aotgrad_ir::AllReduceOp,
    comm: &dyn crate::collective::Communicator,
) -> Result<Tensor, crate::collective::CollectiveError> {
    let mut d = x.data().clone();
    comm.all_reduce_sum(&mut d)?;
    let d = finish_all_reduce(d, op, comm.world());
    Ok(Tensor::new(x.shape(), d).expect("the sum has the operand's size"))
}

/// The op's value from the group's sum: the sum, or for the mean the sum divided by the
/// group size in the dtype (floats only: the op's type rule).
pub(crate) fn finish_all_reduce(
    mut sum: aotgrad_ir::Data,
    op: aotgrad_ir::AllReduceOp,
    world: usize,
) -> aotgrad_ir::Data {
    use aotgrad_ir::{AllReduceOp, Data};
    if op == AllReduceOp::Mean {
        match &mut sum {
            Data::F32(v) => v.iter_mut().for_each(|a| *a /= world as f32),
            Data::F64(v) => v.iter_mut().for_each(|a| *a /= world as f64),
            _ => unreachable!("verified: a mean all_reduce is float"),
        }
    }
    sum
}

/// Evaluates one node on its operands' values (the library kernels of compiled
/// backends run the reference implementation through this).
pub fn eval_node(
    graph: &Graph,
    id: NodeId,
    args: &[&Tensor],
    env: &SymbolEnv,
) -> Result<Tensor, RunError> {
    eval::eval(graph, id, args, env)
}

/// Checks that every node's type, with its symbols bound by `env`, is a tensor that can
/// exist ([`aotgrad_ir::MAX_TENSOR_BYTES`]): `N = 2^34` makes `f32[N, 2^30]` wrap in
/// `usize` arithmetic, so this runs before anything is sized from a shape.
pub(crate) fn check_bound_sizes(graph: &Graph, env: &SymbolEnv) -> Result<(), RunError> {
    for (id, n) in graph.nodes() {
        aotgrad_ir::limits::bind_checked(&n.ty, env).map_err(|error| RunError::TooLarge {
            node: id,
            op: n.op.name(),
            error,
        })?;
    }
    Ok(())
}

/// Checks every leaf's tensor against its declared type and binds the symbols.
pub fn bind(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<SymbolEnv, RunError> {
    let mut env = SymbolEnv::new();
    let mut origin: BTreeMap<Arc<str>, String> = BTreeMap::new();
    for (_, node) in graph.nodes() {
        let (kind, name, ty) = match &node.op {
            Op::Input { name, ty } => ("input", name, ty),
            Op::Param { name, ty } => ("param", name, ty),
            Op::State { name, ty } => ("state", name, ty),
            _ => continue,
        };
        let t = feeds.get(name).ok_or_else(|| RunError::Missing {
            kind,
            name: name.clone(),
            ty: ty.clone(),
        })?;
        bind_leaf(&mut env, &mut origin, name, ty, t.dtype(), t.shape())?;
    }
    Ok(env)
}

/// Checks one leaf's tensor (dtype, rank, known sizes) against its declared type and
/// binds its symbols in `env`; `origin` remembers which leaf bound each symbol, for the
/// conflict message. Shared by the interpreter and the compiled executors.
pub(crate) fn bind_leaf(
    env: &mut SymbolEnv,
    origin: &mut BTreeMap<Arc<str>, String>,
    name: &str,
    ty: &TensorType,
    dtype: aotgrad_ir::DType,
    shape: &[usize],
) -> Result<(), RunError> {
    let mismatch = || RunError::Mismatch {
        name: name.to_string(),
        expected: ty.clone(),
        got: dtype,
        shape: shape.to_vec(),
    };
    if dtype != ty.dtype || shape.len() != ty.rank() {
        return Err(mismatch());
    }
    for (d, &n) in ty.shape.dims().iter().zip(shape) {
        match d {
            Dim::Known(k) if *k != n => return Err(mismatch()),
            Dim::Known(_) => {}
            Dim::Sym(s) => match env.get(s) {
                Some(&prev) if prev != n => {
                    return Err(RunError::SymbolConflict {
                        sym: s.to_string(),
                        first: prev,
                        first_from: origin[s].clone(),
                        second: n,
                        second_from: name.to_string(),
                    });
                }
                Some(_) => {}
                None => {
                    env.insert(s.clone(), n);
                    origin.insert(s.clone(), name.to_string());
                }
            },
            // A leaf declared with a merged dim (`5*N`, from the text format) checks
            // against symbols earlier leaves bound; it cannot bind them itself (which N
            // would `N*T` = 12 mean?).
            Dim::Merged(m) => {
                if m.bind(env) != Some(n) {
                    return Err(mismatch());
                }
            }
        }
    }
    Ok(())
}

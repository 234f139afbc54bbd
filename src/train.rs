//! Training: a model, a loss and an optimizer compiled into one training-step program.
//!
//! [`Trainer`] describes the job; [`Trainer::compile`] traces the model into graphs and
//! returns a [`TrainStep`], which owns the parameters and optimizer state and runs:
//!
//! - the **step** program: forward, loss, backward (ahead-of-time autodiff) and the
//!   optimizer update, as one graph whose updates write parameters and state;
//! - the **grads** program: forward, loss and backward only, returning gradients;
//! - the **eval** program (dropout off) and the **predict** program (no target);
//! - with gradient accumulation, an **accumulate** and an **apply** program.
//!
//! All programs share the parameter storage. The batch dim is the symbolic `N`, so the
//! last short batch of an epoch runs through the same programs. The learning rate is an
//! input of the step, so schedulers change it between steps without recompiling.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use aotgrad_compiler::passes::{self, OptLevel};
use aotgrad_compiler::{GradError, vjp_in};
use aotgrad_ir::{BuildError, DType, Dim, Graph, GraphBuilder, Shape, Var};
use aotgrad_runtime::cpu::{CpuOptions, CpuProgram, ParamArena};
use aotgrad_runtime::gpu::Fetch;
use aotgrad_runtime::{RunError, Tensor};

use crate::gpu_session::GpuSession;

use crate::nn::module::{BufferSpec, Mode, Module, ParamSpec, RNG_STATE, Scope};
use crate::nn::{self, Reduction};
use crate::optim::{LR_INPUT, Optimizer};

/// Where compiled programs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (the oracle every other backend is tested against).
    Interpreter,
    /// Native code: the step JIT-compiled with Cranelift, matmuls on `threads` threads
    /// (results are bitwise the same for any thread count).
    Cpu { threads: usize },
    /// WGSL compute shaders through wgpu (Vulkan, Metal or DX12; Mesa's llvmpipe counts):
    /// parameters and optimizer state stay on the device between steps.
    Gpu,
}

impl Default for Backend {
    fn default() -> Self {
        Backend::Cpu { threads: 1 }
    }
}

impl Backend {
    /// The same backend with `threads` worker threads (no effect on the interpreter).
    pub fn with_threads(self, threads: usize) -> Backend {
        match self {
            Backend::Cpu { .. } => Backend::Cpu {
                threads: threads.max(1),
            },
            b => b,
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "interp" | "interpreter" => Ok(Backend::Interpreter),
            "cpu" => Ok(Backend::Cpu { threads: 1 }),
            "gpu" => Ok(Backend::Gpu),
            _ => Err(format!("unknown backend {s:?} (cpu, gpu, interp)")),
        }
    }
}

type LossFn = Rc<dyn for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g>>;

/// A loss between the model's output and the target, as a graph builder.
#[derive(Clone)]
pub struct Loss {
    name: String,
    /// The user's line that made it (errors raised inside it name that line).
    made_at: &'static std::panic::Location<'static>,
    /// The hyper-parameters of a built-in loss, as PyTorch spells them
    /// (`reduction=mean`); empty for a custom loss.
    options: String,
    f: LossFn,
    /// The output must be a probability (BCE): checked mode verifies it.
    probabilities: bool,
    /// The targets are class indices: how many classes there are (an index out of range
    /// is reported as a bad target, not as the gather that read it).
    classes: ClassTargets,
}

/// How a loss reads integer class targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassTargets {
    /// Not class indices.
    None,
    /// Indices into axis 1 of the model's output (cross entropy, NLL).
    OutputAxis1,
    /// Indices below a fixed count (MSE against one-hot targets).
    Fixed(usize),
}

impl std::fmt::Debug for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Loss({})", self.name)
    }
}

impl Loss {
    /// Any loss built from DSL values.
    #[track_caller]
    pub fn custom(name: &str, f: impl for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g> + 'static) -> Loss {
        Loss {
            name: name.to_string(),
            made_at: std::panic::Location::caller(),
            options: String::new(),
            f: Rc::new(f),
            probabilities: false,
            classes: ClassTargets::None,
        }
    }

    /// A built-in loss: its name and hyper-parameters.
    #[track_caller]
    fn builtin(
        name: &str,
        options: String,
        f: impl for<'g> Fn(Var<'g>, Var<'g>) -> Var<'g> + 'static,
    ) -> Loss {
        Loss {
            options,
            ..Loss::custom(name, f)
        }
    }

    #[track_caller]
    pub fn mse(r: Reduction) -> Loss {
        Loss::builtin("mse", reduction(r), move |o, t| nn::mse_loss(o, t, r))
    }

    /// MSE against the one-hot encoding of integer class targets (the MNIST seed).
    #[track_caller]
    pub fn mse_one_hot(classes: usize, r: Reduction) -> Loss {
        let options = format!("classes={classes}, {}", reduction(r));
        Loss {
            classes: ClassTargets::Fixed(classes),
            ..Loss::builtin("mse_one_hot", options, move |o, t| {
                nn::mse_loss(o, t.one_hot(classes).cast(o.dtype()), r)
            })
        }
    }

    #[track_caller]
    pub fn l1(r: Reduction) -> Loss {
        Loss::builtin("l1", reduction(r), move |o, t| nn::l1_loss(o, t, r))
    }

    /// BCE on probabilities; checked mode reports outputs outside [0, 1].
    #[track_caller]
    pub fn bce(r: Reduction) -> Loss {
        Loss {
            probabilities: true,
            ..Loss::builtin("bce", reduction(r), move |o, t| {
                nn::binary_cross_entropy(o, t, None, r)
            })
        }
    }

    #[track_caller]
    pub fn bce_with_logits(r: Reduction) -> Loss {
        Loss::builtin("bce_with_logits", reduction(r), move |o, t| {
            nn::binary_cross_entropy_with_logits(o, t, None, None, r)
        })
    }

    /// Cross entropy on logits with integer class targets (mean reduction).
    #[track_caller]
    pub fn cross_entropy() -> Loss {
        Loss::cross_entropy_with(0.0, Reduction::Mean)
    }

    #[track_caller]
    pub fn cross_entropy_with(label_smoothing: f64, reduction: Reduction) -> Loss {
        let options = format!(
            "label_smoothing={label_smoothing:?}, {}",
            self::reduction(reduction)
        );
        Loss {
            classes: ClassTargets::OutputAxis1,
            ..Loss::builtin("cross_entropy", options, move |o, t| {
                let opts = nn::ClassLossOptions {
                    label_smoothing,
                    reduction,
                    ..Default::default()
                };
                nn::cross_entropy(o, t, opts)
            })
        }
    }

    #[track_caller]
    pub fn nll(r: Reduction) -> Loss {
        Loss {
            classes: ClassTargets::OutputAxis1,
            ..Loss::builtin("nll", reduction(r), move |o, t| {
                let opts = nn::ClassLossOptions {
                    reduction: r,
                    ..Default::default()
                };
                nn::nll_loss(o, t, opts)
            })
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name with the hyper-parameters: `cross_entropy(label_smoothing=0.0,
    /// reduction=mean)`; a custom loss is its name. Checkpoints record it.
    pub fn description(&self) -> String {
        if self.options.is_empty() {
            self.name.clone()
        } else {
            format!("{}({})", self.name, self.options)
        }
    }
}

/// Where this crate's own sources are, as `file!()` spells them in this build
/// (`src/` in its workspace, a registry or path directory as a dependency).
fn own_source_dir() -> &'static str {
    let f = file!();
    f.strip_suffix("train.rs").unwrap_or(f)
}

/// A build error raised by library code (a built-in layer or loss checking its input)
/// located at the innermost user line of its context (the `push` that added the layer,
/// the loss's constructor, `Trainer::new`), so that its message points at the user's
/// code, never at this crate's.
fn at_users_line(mut e: aotgrad_ir::BuildError) -> aotgrad_ir::BuildError {
    let library = e.location.file().starts_with(own_source_dir())
        || e.location.file().starts_with(aotgrad_ir::SOURCE_DIR);
    if library && let Some(c) = e.context.last() {
        e.location = c.location;
    }
    e
}

/// PyTorch's spelling of a reduction argument.
fn reduction(r: Reduction) -> String {
    let r = match r {
        Reduction::None => "none",
        Reduction::Mean => "mean",
        Reduction::Sum => "sum",
    };
    format!("reduction={r}")
}

/// Why training could not be compiled or a step could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("building the {program} program: {error}")]
    Build {
        program: &'static str,
        error: BuildError,
    },
    #[error("differentiating the {program} program: {error}")]
    Grad {
        program: &'static str,
        error: GradError,
    },
    #[error("running the {program} program: {error}")]
    Run {
        program: &'static str,
        error: RunError,
    },
    #[error("optimising the {program} program: {error}")]
    Optimize {
        program: &'static str,
        error: aotgrad_compiler::passes::PassError,
    },
    #[error("the trainer needs {0}")]
    Config(String),
    #[error(
        "step {step}: the model's output is outside [0, 1], which {loss} requires (use a sigmoid, or a with-logits loss)"
    )]
    ProbabilityOutOfRange { step: u64, loss: String },
    #[error("step {step}: the loss is {value}; parameters were left unchanged")]
    NonFiniteLoss { step: u64, value: f64 },
    #[error("state dict: {0}")]
    StateDict(String),
    #[error("batch: {0}")]
    Batch(String),
    #[error(
        "the loss must be a scalar, but {loss} returned {ty} (reduce it, e.g. with .mean_all())"
    )]
    LossNotScalar { loss: String, ty: String },
    #[error("the batch is empty ({what} has shape {shape:?})")]
    EmptyBatch {
        what: &'static str,
        shape: Vec<usize>,
    },
    #[error(
        "{layer}: expected more than 1 value per channel when training, got input size {shape:?}"
    )]
    OneValuePerChannel { layer: String, shape: Vec<usize> },
    #[error("target {target} is out of range for {classes} classes (row {row} of the batch)")]
    TargetOutOfRange {
        target: i64,
        classes: usize,
        row: usize,
    },
}

/// One batch: inputs `x` and targets `y`, batch dim first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

enum Body {
    Model(Rc<dyn Module>),
    Objective(Rc<dyn for<'g> Fn(&Scope<'g>) -> Var<'g>>),
}

/// A training job: model, loss, optimizer and options. See the module docs.
pub struct Trainer {
    name: String,
    body: Body,
    loss: Option<Loss>,
    optim: Optimizer,
    input: Option<(DType, Vec<usize>)>,
    target: Option<(DType, Vec<usize>)>,
    seed: u64,
    accumulate: usize,
    checked: bool,
    check_numerics: bool,
    profile: bool,
    opt_level: OptLevel,
    l1: f64,
    l2: f64,
    /// The user's `Trainer::new` call: errors the model raises in library code name it.
    made_at: &'static std::panic::Location<'static>,
}

/// The name of the symbolic batch dim of every program.
pub const BATCH_DIM: &str = "N";

impl Trainer {
    /// Trains `model` on batches `(x, y)` to minimise `loss(model(x), y)`. Declare the
    /// per-sample shapes with [`Trainer::input`] and [`Trainer::target`].
    #[track_caller]
    pub fn new(model: impl Module + 'static, loss: Loss, optim: Optimizer) -> Trainer {
        Trainer {
            made_at: std::panic::Location::caller(),
            name: "train".into(),
            body: Body::Model(Rc::new(model)),
            loss: Some(loss),
            optim,
            input: None,
            target: None,
            seed: 0,
            accumulate: 1,
            checked: true,
            check_numerics: false,
            profile: false,
            opt_level: OptLevel::default(),
            l1: 0.0,
            l2: 0.0,
        }
    }

    /// Minimises a scalar objective of parameters only (no data), e.g. a test function.
    #[track_caller]
    pub fn minimize(
        objective: impl for<'g> Fn(&Scope<'g>) -> Var<'g> + 'static,
        optim: Optimizer,
    ) -> Trainer {
        Trainer {
            body: Body::Objective(Rc::new(objective)),
            loss: None,
            ..Trainer::new(nn::ReLU, Loss::mse(Reduction::Mean), optim)
        }
    }

    /// Names the programs (shown in the printed IR).
    pub fn name(mut self, name: &str) -> Trainer {
        self.name = name.to_string();
        self
    }

    /// The per-sample input type: a batch is `[N, dims...]`.
    pub fn input(mut self, dtype: DType, dims: &[usize]) -> Trainer {
        self.input = Some((dtype, dims.to_vec()));
        self
    }

    /// The per-sample target type: a batch is `[N, dims...]`.
    pub fn target(mut self, dtype: DType, dims: &[usize]) -> Trainer {
        self.target = Some((dtype, dims.to_vec()));
        self
    }

    /// Seed of parameter initialisation and of in-graph randomness (dropout).
    pub fn seed(mut self, seed: u64) -> Trainer {
        self.seed = seed;
        self
    }

    /// Accumulate gradients over `k` micro-batches and apply their mean every `k`-th
    /// call of [`TrainStep::run`].
    pub fn accumulate(mut self, k: usize) -> Trainer {
        self.accumulate = k.max(1);
        self
    }

    /// Time every kernel of the CPU backend's programs ([`TrainStep::cpu_profile`];
    /// `aotgrad bench --profile`). Two clock reads per kernel and step.
    pub fn profile(mut self, on: bool) -> Trainer {
        self.profile = on;
        self
    }

    /// On the CPU backend, scan every kernel's float output for NaN/Inf and fail the
    /// step naming the graph node that produced it (slower; for debugging).
    pub fn check_numerics(mut self, on: bool) -> Trainer {
        self.check_numerics = on;
        self
    }

    /// How much the graph passes do before a program runs (`O2`, the default: simplify,
    /// CSE and DCE to a fixed point; `O0`: the graph as traced, to bisect a suspected
    /// miscompile). [`TrainStep::step_graph`] is always the traced graph;
    /// [`TrainStep::optimized_step_graph`] what runs.
    pub fn opt_level(mut self, level: OptLevel) -> Trainer {
        self.opt_level = level;
        self
    }

    /// Checked mode (default on): a non-finite loss, or a BCE input outside [0, 1], is an
    /// error and the step's updates are not applied.
    pub fn checked(mut self, on: bool) -> Trainer {
        self.checked = on;
        self
    }

    /// Adds `lambda * sum |w|` over all parameters to the loss.
    pub fn l1_penalty(mut self, lambda: f64) -> Trainer {
        self.l1 = lambda;
        self
    }

    /// Adds `lambda * sum w^2` over all parameters to the loss.
    pub fn l2_penalty(mut self, lambda: f64) -> Trainer {
        self.l2 = lambda;
        self
    }

    fn batched<'g>(
        b: &'g GraphBuilder,
        name: &str,
        spec: &Option<(DType, Vec<usize>)>,
        what: &str,
    ) -> Result<Var<'g>, TrainError> {
        let (dt, dims) = spec
            .as_ref()
            .ok_or_else(|| TrainError::Config(format!("{what} (call .{what}(dtype, dims))")))?;
        let mut shape = vec![Dim::sym(BATCH_DIM)];
        shape.extend(dims.iter().map(|&d| Dim::Known(d)));
        Ok(b.input(name, *dt, Shape(shape)))
    }

    /// Traces one program. Returns the graph and what the model declared.
    fn trace(&self, kind: Kind, specs: &[ParamSpec]) -> Result<(Graph, Declared), TrainError> {
        let program = kind.name();
        let b = GraphBuilder::new(format!("{}.{program}", self.name));
        let trains = matches!(kind, Kind::Step | Kind::Accumulate | Kind::Grads);
        if kind == Kind::Apply {
            return self.trace_apply(b, specs);
        }
        let mode = if trains { Mode::Train } else { Mode::Eval };
        let s = Scope::new(&b, mode, trains);
        let loss = match &self.body {
            Body::Model(m) => {
                let x = Self::batched(&b, "x", &self.input, "input")?;
                let what = format!("model ({})", m.type_name());
                let out = b.within(what, self.made_at, || m.forward(&s, x));
                b.output("output", out);
                if kind == Kind::Predict {
                    None
                } else {
                    let y = Self::batched(&b, "y", &self.target, "target")?;
                    let loss_def = self.loss.as_ref().expect("models have a loss");
                    let what = format!("loss {}", loss_def.description());
                    let loss = b.within(what, loss_def.made_at, || (loss_def.f)(out, y));
                    if !loss.is_poisoned() && loss.rank() != 0 {
                        return Err(TrainError::LossNotScalar {
                            loss: loss_def.name.clone(),
                            ty: loss.ty().to_string(),
                        });
                    }
                    if self.checked && loss_def.probabilities {
                        b.output(PROB_CHECK, nn::loss::bce_input_in_range(out));
                    }
                    // Classification (class-index targets, [N, C] scores): the count of
                    // correct predictions is part of the eval program, computed where
                    // the model runs; only one number comes back.
                    if kind == Kind::Eval
                        && y.dtype() == DType::I64
                        && out.rank() == 2
                        && y.rank() == 1
                    {
                        let pred = out.argmax(1, false);
                        let hit = pred.equal(y).cast(DType::I64);
                        b.output(CORRECT, hit.sum_all());
                        // counts[t][p] = sum over rows of onehot(y)[n, t] * onehot(pred)[n, p].
                        if let Some(c) = out.shape().dims()[1].known() {
                            let confusion = y.one_hot(c).t().matmul(pred.one_hot(c));
                            b.output(CONFUSION, confusion);
                        }
                    }
                    Some(loss)
                }
            }
            Body::Objective(f) => {
                let v = f(&s);
                if !v.is_poisoned() && v.rank() != 0 {
                    return Err(TrainError::LossNotScalar {
                        loss: "the objective".into(),
                        ty: v.ty().to_string(),
                    });
                }
                Some(v)
            }
        };
        let params = s.params();
        let declared = Declared {
            params: params.clone(),
            buffers: s.buffers(),
            order: s.state_dict_order(),
            batch_stats: s.batch_statistics(),
        };
        let pvars: Vec<Var<'_>> = params
            .iter()
            .map(|p| b.get(&p.name).expect("declared"))
            .collect();
        if let Some(mut loss) = loss {
            if self.l1 != 0.0
                && let Some(pen) = nn::loss::l1_penalty(&pvars)
            {
                loss = loss + pen * self.l1;
            }
            if self.l2 != 0.0
                && let Some(pen) = nn::loss::l2_penalty(&pvars)
            {
                loss = loss + pen * self.l2;
            }
            b.output("loss", loss);
            if trains {
                if let Some(e) = b.error() {
                    return Err(TrainError::Build {
                        program,
                        error: at_users_line(e),
                    });
                }
                let one = loss.ones_like();
                let grads = vjp_in(&b, &[(loss, one)], &pvars)
                    .map_err(|error| TrainError::Grad { program, error })?;
                let named: Vec<(String, Var<'_>, Var<'_>)> = params
                    .iter()
                    .zip(&pvars)
                    .zip(grads)
                    .map(|((p, v), g)| (p.name.clone(), *v, g))
                    .collect();
                match kind {
                    Kind::Grads => {
                        for (n, _, g) in &named {
                            b.output(&format!("grad.{n}"), *g);
                        }
                    }
                    Kind::Accumulate => {
                        for (n, _, g) in &named {
                            let acc = b.state(&format!("{n}.{ACC_SUFFIX}"), DType::F32, g.shape());
                            b.update(acc, acc + *g);
                        }
                    }
                    _ => {
                        let lr = b.input(LR_INPUT, DType::F64, Shape::scalar());
                        self.optim.build(&b, lr, &named);
                    }
                }
                if let Some(key) = s.rng_key() {
                    b.update(key, key + 1);
                }
            }
        }
        let mut graph = b.finish().map_err(|error| TrainError::Build {
            program,
            error: at_users_line(error),
        })?;
        if self.checked && matches!(kind, Kind::Step | Kind::Accumulate) {
            gate_updates(&mut graph).map_err(|e| {
                TrainError::Config(format!("internal: gating the {program} updates: {e}"))
            })?;
        }
        let graph = graph.prune_unused_from(0);
        aotgrad_ir::verify(&graph).map_err(|e| {
            TrainError::Config(format!(
                "internal: the {program} program does not verify: {e}"
            ))
        })?;
        Ok((graph, declared))
    }

    /// The optimizer applied to the mean of `k` accumulated gradients, which are reset.
    fn trace_apply(
        &self,
        b: GraphBuilder,
        specs: &[ParamSpec],
    ) -> Result<(Graph, Declared), TrainError> {
        let inv_k = 1.0 / self.accumulate as f64;
        let mut named = Vec::new();
        for p in specs {
            let v = b.param(&p.name, DType::F32, Shape::known(&p.shape));
            let acc = b.state(
                &format!("{}.{ACC_SUFFIX}", p.name),
                DType::F32,
                Shape::known(&p.shape),
            );
            b.update(acc, acc.zeros_like());
            named.push((p.name.clone(), v, acc * inv_k));
        }
        let lr = b.input(LR_INPUT, DType::F64, Shape::scalar());
        self.optim.build(&b, lr, &named);
        let g = b.finish().map_err(|error| TrainError::Build {
            program: "apply",
            error,
        })?;
        Ok((
            g,
            Declared {
                params: specs.to_vec(),
                buffers: Vec::new(),
                order: Vec::new(),
                batch_stats: Vec::new(),
            },
        ))
    }

    /// Traces every program and initialises parameters and state.
    pub fn compile(&self, backend: &Backend) -> Result<TrainStep, TrainError> {
        let (traced, declared) = self.trace(Kind::Step, &[])?;
        let specs = declared.params;
        // The class count behind integer targets, for naming a bad label.
        let classes = match self.loss.as_ref().map(|l| l.classes) {
            Some(ClassTargets::Fixed(n)) => Some(n),
            Some(ClassTargets::OutputAxis1) => traced
                .outputs()
                .iter()
                .find(|(n, _)| n == "output")
                .and_then(|(_, id)| traced.ty(*id).shape.dims().get(1).and_then(|d| d.known())),
            _ => None,
        };
        let opt = |program: &'static str, g: Graph| {
            passes::optimize(&g, self.opt_level)
                .map_err(|error| TrainError::Optimize { program, error })
        };
        let step = opt("step", traced.clone())?;
        let grads = opt("grads", self.trace(Kind::Grads, &specs)?.0)?;
        let has_data = matches!(self.body, Body::Model(_));
        let eval = if has_data {
            Some(opt("eval", self.trace(Kind::Eval, &specs)?.0)?)
        } else {
            None
        };
        let predict = if has_data {
            Some(opt("predict", self.trace(Kind::Predict, &specs)?.0)?)
        } else {
            None
        };
        let accumulate = if self.accumulate > 1 {
            Some((
                opt("accumulate", self.trace(Kind::Accumulate, &specs)?.0)?,
                opt("apply", self.trace(Kind::Apply, &specs)?.0)?,
            ))
        } else {
            None
        };
        let params: Vec<(String, Tensor)> = specs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let key = (self.seed as i64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as i64)
                    .wrapping_add(i as i64 + 1);
                (p.name.clone(), p.init.sample(key, &p.shape))
            })
            .collect();
        let mut state: HashMap<String, Tensor> = declared
            .buffers
            .iter()
            .map(|b| (b.name.clone(), b.init.clone()))
            .collect();
        for g in [
            Some(&step),
            accumulate.as_ref().map(|(a, _)| a),
            accumulate.as_ref().map(|(_, a)| a),
        ]
        .into_iter()
        .flatten()
        {
            for (name, id) in g.states() {
                let ty = g.ty(id);
                let dims = ty.shape.as_known().expect("states have static shapes");
                let init = if name == RNG_STATE {
                    Tensor::from_i64(&[self.seed as i64], &[]).expect("scalar")
                } else {
                    Tensor::zeros(ty.dtype, &dims)
                };
                state.entry(name.to_string()).or_insert(init);
            }
        }
        Ok(TrainStep {
            backend: *backend,
            traced,
            step,
            grads,
            eval,
            predict,
            accumulate,
            k: self.accumulate,
            micro: 0,
            param_names: params.iter().map(|(n, _)| n.clone()).collect(),
            state_names: {
                let mut names: Vec<String> = state.keys().cloned().collect();
                names.sort();
                names
            },
            params,
            state,
            buffers: declared.buffers.into_iter().map(|b| b.name).collect(),
            dict_order: declared.order,
            lr: self.optim.lr(),
            steps: 0,
            checked: self.checked,
            check_numerics: self.check_numerics,
            profile: self.profile,
            cpu: RefCell::new(HashMap::new()),
            gpu: RefCell::new(None),
            arena: RefCell::new(None),
            device_ahead: false,
            mirror: OnceCell::new(),
            loss_name: self
                .loss
                .as_ref()
                .map(|l| l.name.clone())
                .unwrap_or_default(),
            loss_description: self
                .loss
                .as_ref()
                .map(Loss::description)
                .unwrap_or_else(|| "none (an objective)".to_string()),
            optim: self.optim,
            batch_stats: declared.batch_stats,
            classes,
        })
    }
}

/// What tracing the model declared: parameters, buffers and their state-dict order.
struct Declared {
    params: Vec<ParamSpec>,
    buffers: Vec<BufferSpec>,
    order: Vec<String>,
    /// Layers that need more than one value per channel in training programs.
    batch_stats: Vec<nn::BatchStatistics>,
}

const ACC_SUFFIX: &str = "grad_acc";
const PROB_CHECK: &str = "check.output_in_0_1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Step,
    Grads,
    Eval,
    Predict,
    Accumulate,
    Apply,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Grads => "grads",
            Kind::Eval => "eval",
            Kind::Predict => "predict",
            Kind::Accumulate => "accumulate",
            Kind::Apply => "apply",
        }
    }
}

/// The scalar `loss` output of an evaluation (NaN if absent, which checked mode reports).
fn loss_of(ev: &aotgrad_runtime::Evaluation) -> f64 {
    ev.output("loss").and_then(Tensor::item).unwrap_or(f64::NAN)
}

/// What one training step returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    /// The loss before this step's update (as PyTorch's `loss.item()`).
    pub loss: f64,
    /// The model's output for the batch (before the update).
    pub output: Option<Tensor>,
    /// For classifiers (class-index targets, `[N, C]` scores), from
    /// [`TrainStep::evaluate`]: how many rows' argmax equals the target, computed inside
    /// the eval program.
    pub correct: Option<u64>,
    /// For classifiers with a static class count, from [`TrainStep::evaluate`]: the
    /// confusion matrix of the batch (`[C, C]` counts, true by predicted), computed
    /// inside the eval program.
    pub confusion: Option<Tensor>,
}

/// The eval program's output holding the batch's confusion matrix.
pub const CONFUSION: &str = "metric.confusion";

/// The eval program's output counting correct class predictions.
pub const CORRECT: &str = "metric.correct";

/// The compiled training programs with their parameter and optimizer-state storage.
pub struct TrainStep {
    backend: Backend,
    /// The step as traced (forward + backward + update), before the graph passes.
    traced: Graph,
    /// The programs as they run: after the graph passes of the trainer's level.
    step: Graph,
    grads: Graph,
    eval: Option<Graph>,
    predict: Option<Graph>,
    accumulate: Option<(Graph, Graph)>,
    k: usize,
    micro: usize,
    /// Host copies of the parameters (declaration order) and of the optimizer state,
    /// the RNG key and the model's buffers (by name): current while `device_ahead` is
    /// false. On the CPU backend the arena takes them over at the first update
    /// ([`TrainStep::host_into_arena`]), so a model's weights and moments are held once;
    /// their names stay in `param_names` and `state_names`.
    params: Vec<(String, Tensor)>,
    state: HashMap<String, Tensor>,
    param_names: Vec<String>,
    /// Sorted.
    state_names: Vec<String>,
    /// The model's buffers (names in `state` that belong to the state dict).
    buffers: Vec<String>,
    /// Parameter and buffer names in PyTorch's `state_dict` order.
    dict_order: Vec<String>,
    lr: f64,
    steps: u64,
    checked: bool,
    check_numerics: bool,
    profile: bool,
    loss_name: String,
    /// [`Loss::description`] of the trainer's loss (checkpoints record it).
    loss_description: String,
    /// The optimizer compiled into the step (checkpoints record its hyper-parameters).
    optim: Optimizer,
    /// Layers that need more than one value per channel in a training batch.
    batch_stats: Vec<nn::BatchStatistics>,
    /// How many classes integer targets index (cross entropy, NLL, one-hot MSE).
    classes: Option<usize>,
    /// Compiled CPU programs by program name, created on first use.
    cpu: RefCell<HashMap<&'static str, CpuProgram>>,
    /// The GPU device store and programs, created on first use.
    gpu: RefCell<Option<GpuSession>>,
    /// The CPU backend's parameter arena (created from `params` and `state` on the
    /// first CPU run, dropped when the host copies change): the programs run on it, and
    /// their optimizer loops over neighbouring tensors are merged into one.
    arena: RefCell<Option<ParamArena>>,
    /// The device (the GPU's store, or the CPU's parameter arena) holds newer
    /// parameters and state than `params` and `state`.
    device_ahead: bool,
    /// The parameters read back from the device for [`TrainStep::parameters`] (reset
    /// by every update).
    mirror: OnceCell<Vec<(String, Tensor)>>,
}

impl TrainStep {
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The training-step graph (forward + backward + update) as traced, for printing
    /// and tests.
    pub fn step_graph(&self) -> &Graph {
        &self.traced
    }

    /// The training-step graph after the graph passes: what the backends run.
    pub fn optimized_step_graph(&self) -> &Graph {
        &self.step
    }

    /// The forward+backward graph whose outputs are `loss`, `output` and `grad.<param>`
    /// (optimised).
    pub fn grads_graph(&self) -> &Graph {
        &self.grads
    }

    pub fn eval_graph(&self) -> Option<&Graph> {
        self.eval.as_ref()
    }

    pub fn predict_graph(&self) -> Option<&Graph> {
        self.predict.as_ref()
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The optimizer compiled into the step (its learning rate is the initial one; see
    /// [`TrainStep::lr`] for the current).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optim
    }

    /// The loss with its hyper-parameters ([`Loss::description`]).
    pub fn loss_description(&self) -> &str {
        &self.loss_description
    }

    /// Sets the learning rate of the following steps (no recompilation).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn feeds(
        &self,
        g: &Graph,
        extra: &[(&str, &Tensor)],
    ) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut f = HashMap::new();
        for (name, _) in g.params() {
            let t = self
                .params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| TrainError::StateDict(format!("no value for parameter {name:?}")))?;
            f.insert(name.to_string(), t);
        }
        for (name, _) in g.states() {
            let t = self
                .state
                .get(name)
                .cloned()
                .ok_or_else(|| TrainError::StateDict(format!("no value for state {name:?}")))?;
            f.insert(name.to_string(), t);
        }
        for (name, _) in g.inputs() {
            if name == LR_INPUT {
                f.insert(
                    name.to_string(),
                    Tensor::from_f64(&[self.lr], &[]).expect("scalar"),
                );
            } else if let Some((_, t)) = extra.iter().find(|(n, _)| *n == name) {
                f.insert(name.to_string(), (*t).clone());
            }
        }
        Ok(f)
    }

    fn exec(
        &self,
        program: &'static str,
        g: &Graph,
        extra: &[(&str, &Tensor)],
    ) -> Result<aotgrad_runtime::Evaluation, TrainError> {
        self.exec_fetch(program, g, extra, Fetch::All)
    }

    /// Runs `program` on the GPU (parameters and state from the device store).
    fn exec_gpu(
        &self,
        program: &'static str,
        g: &Graph,
        extra: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<aotgrad_runtime::Evaluation, TrainError> {
        let run = |error| TrainError::Run { program, error };
        let mut gpu = self.gpu.borrow_mut();
        if gpu.is_none() {
            *gpu = Some(GpuSession::new().map_err(run)?);
        }
        let session = gpu.as_mut().expect("created above");
        let lr = Tensor::from_f64(&[self.lr], &[]).expect("scalar");
        let mut inputs = extra.to_vec();
        inputs.push((LR_INPUT, &lr));
        session
            .run(program, g, (&self.params, &self.state), &inputs, fetch)
            .map_err(run)
    }

    fn exec_fetch(
        &self,
        program: &'static str,
        g: &Graph,
        extra: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<aotgrad_runtime::Evaluation, TrainError> {
        match self.backend {
            Backend::Gpu => self.exec_gpu(program, g, extra, fetch),
            Backend::Interpreter => {
                let feeds = self.feeds(g, extra)?;
                aotgrad_runtime::run(g, &feeds).map_err(|error| TrainError::Run { program, error })
            }
            Backend::Cpu { threads } => {
                // Read-only programs (grads, eval, predict) run on the arena itself.
                if g.updates().is_empty() {
                    return self.run_on_arena(program, g, threads, extra);
                }
                let lr = Tensor::from_f64(&[self.lr], &[]).expect("scalar");
                let mut cpu = self.cpu.borrow_mut();
                // A program that would update state through `&self` gets copies, and
                // its updates are dropped.
                let names: Vec<&str> = g.params().chain(g.states()).map(|(n, _)| n).collect();
                let mut store: HashMap<String, Tensor> =
                    self.current(&names)?.into_iter().collect();
                let prog = cpu_program(&mut cpu, program, g, self.cpu_options(threads), None)?;
                let inputs = inputs_of(prog, extra, &lr);
                prog.run(&mut store, &inputs)
                    .map_err(|error| TrainError::Run { program, error })
            }
        }
    }

    /// Runs a program that updates parameters/state: in place on the CPU backend
    /// (checked mode gates the updates inside the graph, see [`gate_updates`]), through
    /// feeds on the interpreter.
    fn exec_update(
        &mut self,
        program: &'static str,
        extra: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<aotgrad_runtime::Evaluation, TrainError> {
        if let Backend::Cpu { .. } = self.backend {
            self.host_into_arena();
        }
        let g = match program {
            "accumulate" => &self.accumulate.as_ref().expect("accumulating").0,
            "apply" => &self.accumulate.as_ref().expect("accumulating").1,
            _ => &self.step,
        };
        let ev = match self.backend {
            Backend::Gpu => self.exec_gpu(program, g, extra, fetch)?,
            Backend::Cpu { threads } => self.run_on_arena(program, g, threads, extra)?,
            Backend::Interpreter => return self.exec_fetch(program, g, extra, fetch),
        };
        // The device store or the CPU arena now holds newer values than the host copies.
        self.device_ahead = true;
        self.mirror = OnceCell::new();
        Ok(ev)
    }

    /// Runs CPU program `program` (compiled from `g` for the arena's layout on first
    /// use) on the parameter arena.
    fn run_on_arena(
        &self,
        program: &'static str,
        g: &Graph,
        threads: usize,
        extra: &[(&str, &Tensor)],
    ) -> Result<aotgrad_runtime::Evaluation, TrainError> {
        let mut cpu = self.cpu.borrow_mut();
        let mut arena = self.cpu_arena();
        let layout = arena.layout().clone();
        let prog = cpu_program(
            &mut cpu,
            program,
            g,
            self.cpu_options(threads),
            Some(layout),
        )?;
        let lr = Tensor::from_f64(&[self.lr], &[]).expect("scalar");
        let inputs = inputs_of(prog, extra, &lr);
        prog.run(&mut *arena, &inputs)
            .map_err(|error| TrainError::Run { program, error })
    }

    /// Makes the CPU arena the only store of the parameters and state: builds it from
    /// the host copies if there is none (moving them in, one tensor at a time), then
    /// drops them. Before an update, so that training holds one copy of the model.
    fn host_into_arena(&mut self) {
        if self.params.is_empty() && self.state.is_empty() {
            return;
        }
        let params = std::mem::take(&mut self.params);
        let state = std::mem::take(&mut self.state);
        let arena = self.arena.get_mut();
        if arena.is_none() {
            *arena = Some(ParamArena::for_training(params, state));
        }
        // Without an update, an existing arena holds what the host copies held (it is
        // made from them and dropped whenever they change); from here on it is ahead.
        self.device_ahead = true;
        self.mirror = OnceCell::new();
    }

    /// The options of this trainer's CPU programs for `threads` threads.
    fn cpu_options(&self, threads: usize) -> CpuOptions {
        CpuOptions {
            threads,
            check_numerics: self.check_numerics,
            profile: self.profile,
            ..CpuOptions::default()
        }
    }

    /// With [`Trainer::profile`], on the CPU backend: the lowered program `program`
    /// (`"step"`, `"eval"`, ...) as it last ran, and the time of each of its kernels
    /// summed over its calls. `None` before its first run, on another backend, or
    /// without profiling.
    pub fn cpu_profile(
        &self,
        program: &str,
    ) -> Option<(String, aotgrad_runtime::cpu::KernelProfile)> {
        if !self.profile {
            return None;
        }
        let cpu = self.cpu.borrow();
        let v = cpu.get(program)?.last_variant()?;
        Some((v.program().to_string(), v.profile()))
    }

    /// The CPU parameter arena, made from the host copies if there is none.
    fn cpu_arena(&self) -> std::cell::RefMut<'_, ParamArena> {
        std::cell::RefMut::map(self.arena.borrow_mut(), |arena| {
            arena.get_or_insert_with(|| {
                ParamArena::for_training(
                    self.params.iter().map(|(n, t)| (n.as_str(), t)),
                    self.state.iter().map(|(n, t)| (n.as_str(), t)),
                )
            })
        })
    }

    /// The current values of the named parameters and state, wherever they live.
    fn current(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, TrainError> {
        if self.device_ahead {
            return self.download(names).map_err(|error| TrainError::Run {
                program: "sync",
                error,
            });
        }
        names
            .iter()
            .map(|&name| {
                self.params
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t)
                    .or_else(|| self.state.get(name))
                    .map(|t| (name.to_string(), t.clone()))
                    .ok_or_else(|| TrainError::StateDict(format!("no value for {name:?}")))
            })
            .collect()
    }

    /// The lowered program and the WGSL of program `program` (`"step"`, `"eval"`, ...)
    /// as the GPU backend last ran it; `None` before its first run or on another
    /// backend.
    pub fn gpu_artifacts(&self, program: &str) -> Option<(String, String)> {
        self.gpu.borrow().as_ref()?.artifacts(program)
    }

    /// Reads the parameters and optimizer state back from the GPU's store or the CPU's
    /// parameter arena into host copies (a no-op on the interpreter or when they are
    /// current). Accessors do this lazily; call it to handle a device error instead of
    /// panicking on it. On the CPU backend the next update drops the copies again.
    pub fn sync(&mut self) -> Result<(), TrainError> {
        if !self.device_ahead {
            return Ok(());
        }
        let names: Vec<&str> = self
            .param_names
            .iter()
            .chain(&self.state_names)
            .map(String::as_str)
            .collect();
        let mut values = self.download(&names).map_err(|error| TrainError::Run {
            program: "sync",
            error,
        })?;
        // The CPU backend may have dropped the host copies: rebuild them whole.
        let state = values.split_off(self.param_names.len());
        self.params = values;
        self.state = state.into_iter().collect();
        self.device_ahead = false;
        self.mirror = OnceCell::new();
        Ok(())
    }

    fn download(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, RunError> {
        if let Some(arena) = self.arena.borrow().as_ref() {
            return names
                .iter()
                .map(|&n| {
                    arena
                        .get(n)
                        .map(|t| (n.to_string(), t))
                        .ok_or_else(|| RunError::Unknown {
                            name: n.to_string(),
                        })
                })
                .collect();
        }
        let gpu = self.gpu.borrow();
        let session = gpu
            .as_ref()
            .expect("the device is ahead only after a GPU run");
        session.download(names)
    }

    /// The host copies changed (a load): the device must take them before its next run.
    fn host_changed(&mut self) {
        if let Some(s) = self.gpu.get_mut().as_mut() {
            s.invalidate();
        }
        *self.arena.get_mut() = None;
        self.mirror = OnceCell::new();
    }

    /// The lowered program (kernels, buffers, memory plan) of the training step as the
    /// CPU backend last ran it, and its Cranelift IR; `None` before the first step or on
    /// another backend.
    pub fn cpu_artifacts(&self, program: &str) -> Option<(String, String)> {
        let cpu = self.cpu.borrow();
        let v = cpu.get(program)?.last_variant()?;
        Some((v.program().to_string(), v.clif().to_string()))
    }

    /// What Cranelift made of the CPU program `program` for symbol values `env`: every
    /// function after Cranelift's own optimisation, then as machine code for this host
    /// ([`CpuOptions::machine_code`]). Compiles the program again with that option (the
    /// running one keeps no such text); `None` before the program's first run or on
    /// another backend.
    pub fn cpu_machine_code(
        &self,
        program: &str,
        env: &aotgrad_runtime::interp::SymbolEnv,
    ) -> Option<Result<String, TrainError>> {
        let cpu = self.cpu.borrow();
        let (&name, p) = cpu.get_key_value(program)?;
        let opts = CpuOptions {
            machine_code: true,
            ..p.options()
        };
        let made = match p.layout() {
            Some(l) => CpuProgram::for_arena(p.graph(), opts, l.clone()),
            None => CpuProgram::new(p.graph(), opts),
        }
        .and_then(|mut q| q.variant(env).map(|v| v.machine_code().to_string()));
        Some(made.map_err(|error| TrainError::Run {
            program: name,
            error,
        }))
    }

    fn check(&self, ev: &aotgrad_runtime::Evaluation) -> Result<f64, TrainError> {
        let loss = loss_of(ev);
        if self.checked {
            if let Some(ok) = ev.output(PROB_CHECK)
                && ok.item() != Some(1.0)
            {
                return Err(TrainError::ProbabilityOutOfRange {
                    step: self.steps,
                    loss: self.loss_name.clone(),
                });
            }
            if !loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    step: self.steps,
                    value: loss,
                });
            }
        }
        Ok(loss)
    }

    fn commit(&mut self, ev: aotgrad_runtime::Evaluation) {
        for (name, t) in ev.updates {
            if let Some((_, slot)) = self.params.iter_mut().find(|(n, _)| *n == name) {
                *slot = t;
            } else {
                self.state.insert(name, t);
            }
        }
    }

    fn batch_feeds<'a>(&self, batch: &'a Batch) -> [(&'static str, &'a Tensor); 2] {
        [("x", &batch.x), ("y", &batch.y)]
    }

    /// One training step on `batch`: forward, loss, backward, update. Returns the loss
    /// computed before the update.
    pub fn run(&mut self, batch: &Batch) -> Result<f64, TrainError> {
        Ok(self
            .run_fetch(batch, Fetch::Only(&["loss", PROB_CHECK]))?
            .loss)
    }

    /// [`TrainStep::run`], also returning the model's output.
    pub fn run_full(&mut self, batch: &Batch) -> Result<StepResult, TrainError> {
        self.run_fetch(batch, Fetch::All)
    }

    /// One step reading back the outputs `fetch` names (on the GPU; the other backends
    /// have every output in host memory anyway).
    fn run_fetch(&mut self, batch: &Batch, fetch: Fetch<'_>) -> Result<StepResult, TrainError> {
        self.check_batch(batch, true)?;
        self.run_checked(batch, fetch)
            .map_err(|e| self.diagnose(e, batch))
    }

    /// Refuses a batch no program can use before anything runs: an empty one (whose
    /// mean loss would be NaN), and in training one that gives a batch-norm layer a
    /// single value per channel (PyTorch's error; its variance would be 0/0 and poison
    /// the running statistics).
    fn check_batch(&self, batch: &Batch, training: bool) -> Result<(), TrainError> {
        for (what, t) in [("x", &batch.x), ("y", &batch.y)] {
            if t.shape().first() == Some(&0) {
                return Err(TrainError::EmptyBatch {
                    what,
                    shape: t.shape().to_vec(),
                });
            }
        }
        if !training {
            return Ok(());
        }
        let n = batch.x.shape().first().copied().unwrap_or(1);
        let env = [(BATCH_DIM.to_string(), n)].into_iter().collect();
        for l in &self.batch_stats {
            if l.values_per_channel(&env).is_some_and(|v| v <= 1) {
                let shape = l
                    .shape
                    .dims()
                    .iter()
                    .map(|d| d.known().unwrap_or(n))
                    .collect();
                return Err(TrainError::OneValuePerChannel {
                    layer: l.layer.clone(),
                    shape,
                });
            }
        }
        Ok(())
    }

    /// A failed run described in the model's terms where possible: an index out of
    /// range in a classifier whose batch holds a bad label is that label.
    fn diagnose(&self, e: TrainError, batch: &Batch) -> TrainError {
        let (
            TrainError::Run {
                error: RunError::IndexOutOfRange { .. },
                ..
            },
            Some(classes),
            Some(labels),
        ) = (&e, self.classes, batch.y.as_i64().ok())
        else {
            return e;
        };
        match labels
            .iter()
            .position(|&t| t < 0 || t as u64 >= classes as u64)
        {
            Some(row) => TrainError::TargetOutOfRange {
                target: labels[row],
                classes,
                row,
            },
            None => e,
        }
    }

    /// [`TrainStep::run_fetch`] on a checked batch.
    fn run_checked(&mut self, batch: &Batch, fetch: Fetch<'_>) -> Result<StepResult, TrainError> {
        let extra = self.batch_feeds(batch);
        if let Some((acc, _)) = &self.accumulate {
            let _ = acc;
            let ev = self.exec_update("accumulate", &extra, Fetch::All)?;
            let loss = self.check(&ev)?;
            let output = ev.output("output").cloned();
            self.commit(ev);
            self.micro += 1;
            if self.micro == self.k {
                let ev = self.exec_update("apply", &[], Fetch::Only(&[]))?;
                self.commit(ev);
                self.micro = 0;
                self.steps += 1;
            }
            return Ok(StepResult {
                loss,
                output,
                correct: None,
                confusion: None,
            });
        }
        let ev = self.exec_update("step", &extra, fetch)?;
        let loss = self.check(&ev)?;
        let output = ev.output("output").cloned();
        self.commit(ev);
        self.steps += 1;
        Ok(StepResult {
            loss,
            output,
            correct: None,
            confusion: None,
        })
    }

    /// One epoch over `loader`'s batches for epoch number `epoch` (which fixes the
    /// shuffle order); returns the sample-weighted mean of the step losses.
    pub fn run_epoch(
        &mut self,
        loader: &crate::data::DataLoader<'_>,
        epoch: usize,
    ) -> Result<f64, TrainError> {
        let (mut sum, mut seen) = (0.0, 0usize);
        for b in loader.epoch(epoch) {
            let b = b.map_err(|e| TrainError::Batch(e.to_string()))?;
            let n = b.y.shape().first().copied().unwrap_or(1);
            sum += self.run(&b)? * n as f64;
            seen += n;
        }
        Ok(sum / seen.max(1) as f64)
    }

    /// One step of a data-free objective ([`Trainer::minimize`]); returns its value.
    pub fn step(&mut self) -> Result<f64, TrainError> {
        let ev = self.exec_update("step", &[], Fetch::Only(&["loss", PROB_CHECK]))?;
        let loss = self.check(&ev)?;
        self.commit(ev);
        self.steps += 1;
        Ok(loss)
    }

    /// Forward and backward only (no update): the loss and `(param, gradient)` pairs, as
    /// after PyTorch's `loss.backward()`.
    pub fn gradients(
        &self,
        batch: Option<&Batch>,
    ) -> Result<(f64, Vec<(String, Tensor)>), TrainError> {
        if let Some(b) = batch {
            self.check_batch(b, true)?;
        }
        let extra = batch.map(|b| self.batch_feeds(b));
        let ev = self
            .exec(
                "grads",
                &self.grads,
                extra.as_ref().map_or(&[][..], |e| &e[..]),
            )
            .map_err(|e| match batch {
                Some(b) => self.diagnose(e, b),
                None => e,
            })?;
        let loss = loss_of(&ev);
        let grads = self
            .param_names
            .iter()
            .map(|n| {
                let g = ev
                    .output(&format!("grad.{n}"))
                    .cloned()
                    .expect("every param has a gradient");
                (n.clone(), g)
            })
            .collect();
        Ok((loss, grads))
    }

    /// Loss and output on `batch` in evaluation mode (dropout off), without updating.
    pub fn evaluate(&self, batch: &Batch) -> Result<StepResult, TrainError> {
        let g = self.eval.as_ref().ok_or_else(|| {
            TrainError::Config("a model (this trainer minimises an objective)".into())
        })?;
        self.check_batch(batch, false)?;
        let ev = self
            .exec("eval", g, &self.batch_feeds(batch))
            .map_err(|e| self.diagnose(e, batch))?;
        Ok(StepResult {
            loss: loss_of(&ev),
            output: ev.output("output").cloned(),
            correct: ev.output(CORRECT).and_then(Tensor::item).map(|v| v as u64),
            confusion: ev.output(CONFUSION).cloned(),
        })
    }

    /// The model's output for inputs `x` (evaluation mode).
    pub fn predict(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        let g = self.predict.as_ref().ok_or_else(|| {
            TrainError::Config("a model (this trainer minimises an objective)".into())
        })?;
        let ev = self.exec("predict", g, &[("x", x)])?;
        Ok(ev.output("output").cloned().expect("predict has an output"))
    }

    /// Parameters in declaration order, with PyTorch `state_dict` names.
    ///
    /// On the GPU and CPU backends they are read back from the device (the GPU's store,
    /// the CPU's parameter arena) on the first call after an update (a GPU failure then
    /// panics; [`TrainStep::sync`] reports it instead).
    pub fn parameters(&self) -> &[(String, Tensor)] {
        if !self.device_ahead {
            return &self.params;
        }
        self.mirror.get_or_init(|| {
            let names: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
            self.download(&names)
                .unwrap_or_else(|e| panic!("reading the parameters back from the device: {e}"))
        })
    }

    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.parameters()
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// The model's state dict, as PyTorch's `model.state_dict()`: parameters and
    /// buffers (batch norm's running statistics) by name, in declaration order.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        if self.buffers.is_empty() {
            return self.parameters().to_vec();
        }
        let names: Vec<&str> = self.buffers.iter().map(String::as_str).collect();
        let buffers: Vec<(String, Tensor)> = if self.device_ahead {
            self.download(&names)
                .unwrap_or_else(|e| panic!("reading the buffers back from the device: {e}"))
        } else {
            names
                .iter()
                .map(|n| (n.to_string(), self.state[*n].clone()))
                .collect()
        };
        let params = self.parameters();
        self.dict_order
            .iter()
            .filter_map(|n| params.iter().chain(&buffers).find(|(k, _)| k == n).cloned())
            .collect()
    }

    /// Optimizer state and the RNG key, sorted by name.
    pub fn optimizer_state(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = if self.device_ahead {
            let names: Vec<&str> = self
                .state_names
                .iter()
                .filter(|k| !self.buffers.contains(k))
                .map(String::as_str)
                .collect();
            self.download(&names)
                .unwrap_or_else(|e| panic!("reading the optimizer state back from the device: {e}"))
        } else {
            self.state
                .iter()
                .filter(|(k, _)| !self.buffers.contains(k))
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect()
        };
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Replaces optimizer state by name (checkpoint resume); every name must exist with
    /// the same type.
    pub fn load_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<(), TrainError> {
        self.sync()?;
        for (name, t) in state {
            let cur = self
                .state
                .get(name)
                .ok_or_else(|| TrainError::StateDict(format!("unexpected state {name:?}")))?;
            if cur.ty() != t.ty() {
                return Err(TrainError::StateDict(format!(
                    "state {name:?}: expected {}, got {}",
                    cur.ty(),
                    t.ty()
                )));
            }
        }
        for (name, t) in state {
            self.state.insert(name.clone(), t.clone());
        }
        self.host_changed();
        Ok(())
    }

    /// Micro-batches accumulated since the last update (gradient accumulation).
    pub fn pending_micro_batches(&self) -> usize {
        self.micro
    }

    /// Sets the count of applied updates (checkpoint resume).
    pub fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// Loads parameters and buffers by name (as PyTorch's
    /// `load_state_dict(strict=True)`): every entry of [`TrainStep::state_dict`] must be
    /// present with its exact dtype and shape, and no extra names; the error lists every
    /// mismatch. Nothing changes unless everything matches.
    pub fn load_state_dict(&mut self, dict: &[(String, Tensor)]) -> Result<(), TrainError> {
        self.sync()?;
        let mut problems = Vec::new();
        let expected: Vec<(&String, &Tensor)> = self
            .params
            .iter()
            .map(|(n, t)| (n, t))
            .chain(self.buffers.iter().map(|n| (n, &self.state[n])))
            .collect();
        for (name, cur) in &expected {
            match dict.iter().find(|(n, _)| n == *name) {
                None => problems.push(format!("missing {name:?} ({})", cur.ty())),
                Some((_, t)) if t.ty() != cur.ty() => problems.push(format!(
                    "{name:?}: the model has {}, the state dict {}",
                    cur.ty(),
                    t.ty()
                )),
                Some(_) => {}
            }
        }
        for (name, t) in dict {
            if !expected.iter().any(|(n, _)| *n == name) {
                problems.push(format!("unexpected {name:?} ({})", t.ty()));
            }
        }
        if !problems.is_empty() {
            return Err(TrainError::StateDict(problems.join("; ")));
        }
        for (name, t) in dict {
            if let Some((_, slot)) = self.params.iter_mut().find(|(n, _)| n == name) {
                *slot = t.clone();
            } else {
                self.state.insert(name.clone(), t.clone());
            }
        }
        self.host_changed();
        Ok(())
    }
}

/// Early stopping on a validation metric: `update` after each epoch returns `true` when
/// the metric has not improved by more than `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
    /// `true` when larger is better (accuracy), `false` when smaller is (loss).
    pub maximize: bool,
    best: Option<f64>,
    best_epoch: usize,
    bad: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64, maximize: bool) -> EarlyStopping {
        EarlyStopping {
            patience,
            min_delta,
            maximize,
            best: None,
            best_epoch: 0,
            bad: 0,
        }
    }

    /// Records the metric of `epoch`; returns whether to stop.
    pub fn update(&mut self, epoch: usize, metric: f64) -> bool {
        let better = match self.best {
            None => true,
            Some(b) if self.maximize => metric > b + self.min_delta,
            Some(b) => metric < b - self.min_delta,
        };
        if better {
            self.best = Some(metric);
            self.best_epoch = epoch;
            self.bad = 0;
        } else {
            self.bad += 1;
        }
        self.bad >= self.patience
    }

    /// The best metric so far and its epoch.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.map(|b| (b, self.best_epoch))
    }
}

/// Checked mode inside the program: every update becomes `where(ok, new, old)` with
/// `ok = |loss| < inf` (and the probability-range check when the loss has one), so a
/// step with a non-finite loss leaves parameters and state exactly as they were even
/// when the backend writes updates in place. The trainer then reports the error.
fn gate_updates(g: &mut Graph) -> Result<(), aotgrad_ir::GraphError> {
    use aotgrad_ir::{BinaryOp, Op, Scalar, UnaryOp};
    let Some(loss) = g.output("loss") else {
        return Ok(());
    };
    let dtype = g.ty(loss).dtype;
    let abs = g.add(Op::Unary(UnaryOp::Abs), &[loss])?;
    let inf = g.splat(Scalar::from_f64(dtype, f64::INFINITY), Shape::scalar());
    let mut ok = g.add(Op::Binary(BinaryOp::Lt), &[abs, inf])?;
    if let Some(p) = g.output(PROB_CHECK) {
        ok = g.add(Op::Binary(BinaryOp::And), &[ok, p])?;
    }
    let updates = g.updates().to_vec();
    let mut gated = Vec::with_capacity(updates.len());
    for (target, value) in updates {
        let shape = g.ty(target).shape.clone();
        let rank = shape.rank();
        let ok_t = if rank == 0 {
            ok
        } else {
            let ones = g.add(Op::Reshape(Shape::known(&vec![1; rank])), &[ok])?;
            g.add(Op::Expand(shape), &[ones])?
        };
        gated.push((target, g.add(Op::Where, &[ok_t, value, target])?));
    }
    let (_, roots) = g.roots_mut();
    *roots = gated;
    Ok(())
}

/// The CPU program for `name`, compiled on first use.
fn cpu_program<'a>(
    cache: &'a mut HashMap<&'static str, CpuProgram>,
    name: &'static str,
    g: &Graph,
    opts: CpuOptions,
    layout: Option<std::sync::Arc<aotgrad_compiler::lower::ParamLayout>>,
) -> Result<&'a mut CpuProgram, TrainError> {
    // A program made for another arena layout (the arena was rebuilt with other
    // tensors) is made again.
    let stale = cache
        .get(name)
        .is_some_and(|p| match (p.layout(), &layout) {
            // The same arena's layout (every call but the first): no deep comparison.
            (Some(a), Some(b)) => !std::sync::Arc::ptr_eq(a, b) && **a != **b,
            (None, None) => false,
            _ => true,
        });
    if stale || !cache.contains_key(name) {
        let p = match layout {
            Some(l) => CpuProgram::for_arena(g, opts, l),
            None => CpuProgram::new(g, opts),
        }
        .map_err(|error| TrainError::Run {
            program: name,
            error,
        })?;
        cache.insert(name, p);
    }
    Ok(cache.get_mut(name).expect("inserted"))
}

/// The program's inputs from the batch feeds, plus the learning rate. Asks the
/// compiled program (a short list of leaves), not the graph: this runs every step.
fn inputs_of<'a>(
    prog: &CpuProgram,
    extra: &[(&'a str, &'a Tensor)],
    lr: &'a Tensor,
) -> Vec<(&'a str, &'a Tensor)> {
    let mut inputs: Vec<(&str, &Tensor)> = extra
        .iter()
        .filter(|(n, _)| prog.has_input(n))
        .copied()
        .collect();
    if prog.has_input(LR_INPUT) {
        inputs.push((LR_INPUT, lr));
    }
    inputs
}

//! [`Trainer`]: what a training job is (model, loss, optimizer, options), and how it
//! is traced into the graphs of its programs and compiled into a [`TrainStep`].

use std::collections::HashMap;
use std::rc::Rc;

use aotgrad_compiler::passes::{self, OptLevel};
use aotgrad_compiler::vjp_in;
use aotgrad_ir::{DType, Dim, Graph, GraphBuilder, Shape, Var};
use aotgrad_runtime::Tensor;

use super::controls::{Clip, Feed, ParamGroup, pattern_matches};
use super::gate::gate_updates;
use super::loss::{ClassTargets, Loss, LossFn};
use super::step::{CONFUSION, CORRECT, GRAD_NORM, StepParts, TrainStep};
use super::{Backend, PROB_CHECK, TrainError};
use crate::executor::{ExecutorOptions, ProgramKind};
use crate::lr_schedule::LrSchedule;
use crate::nn::module::{BufferSpec, Mode, Module, ParamSpec, RNG_STATE, Scope};
use crate::nn::{self, Init, Reduction, Vars};
use crate::optim::{LR_INPUT, OptParam, Optimizer};

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
    /// The batch's tensors: model inputs and loss targets, in declaration order.
    feeds: Vec<Feed>,
    /// The float dtype of parameters, buffers and optimizer state.
    dtype: DType,
    /// Parameters that get no gradient, no update and no optimizer state (patterns).
    frozen: Vec<String>,
    groups: Vec<ParamGroup>,
    clip: Clip,
    schedule: Option<LrSchedule>,
    /// Initialisers that replace a layer's default, by parameter pattern.
    inits: Vec<(String, Init)>,
    /// Module paths whose outputs the programs return (forward hooks).
    hooks: Vec<String>,
    seed: u64,
    accumulate: usize,
    checked: bool,
    check_numerics: bool,
    profile: bool,
    opt_level: OptLevel,
    l1: f64,
    l2: f64,
    /// The process group of data-parallel training, if any.
    group: Option<std::sync::Arc<dyn aotgrad_runtime::collective::Communicator>>,
    /// Gradient bytes per data-parallel reduction at most (see [`Trainer::bucket_bytes`]).
    bucket_bytes: usize,
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
            feeds: Vec::new(),
            dtype: DType::F32,
            frozen: Vec::new(),
            groups: Vec::new(),
            clip: Clip::default(),
            schedule: None,
            inits: Vec::new(),
            hooks: Vec::new(),
            seed: 0,
            accumulate: 1,
            checked: true,
            check_numerics: false,
            profile: false,
            opt_level: OptLevel::default(),
            l1: 0.0,
            l2: 0.0,
            group: None,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
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

    /// The per-sample input type: a batch's `x` is `[N, dims...]`.
    pub fn input(self, dtype: DType, dims: &[usize]) -> Trainer {
        self.batch_input("x", dtype, Shape::known(dims))
    }

    /// The per-sample target type: a batch's `y` is `[N, dims...]`.
    pub fn target(self, dtype: DType, dims: &[usize]) -> Trainer {
        self.batch_target("y", dtype, Shape::known(dims))
    }

    /// Declares a model input named `name` (a batch tensor `[N, dims...]`): the model's
    /// [`Module::forward_all`] gets the inputs in declaration order. Dims may be symbolic
    /// (`shape!["T", 8]`): each distinct size compiles once. Redeclaring a name replaces
    /// it.
    pub fn batch_input(mut self, name: &str, dtype: DType, dims: Shape) -> Trainer {
        self.set_feed(name, dtype, dims, false);
        self
    }

    /// Declares a batch tensor the loss reads but the model does not (a target, a mask
    /// for the loss, per-sample weights): absent from the predict program.
    pub fn batch_target(mut self, name: &str, dtype: DType, dims: Shape) -> Trainer {
        self.set_feed(name, dtype, dims, true);
        self
    }

    fn set_feed(&mut self, name: &str, dtype: DType, dims: Shape, target: bool) {
        self.feeds.retain(|f| f.name != name);
        self.feeds.push(Feed {
            name: name.to_string(),
            dtype,
            dims,
            target,
        });
    }

    /// The float dtype of parameters, buffers and optimizer state (default f32):
    /// `DType::F64` trains in f64 end to end on the interpreter and the CPU backend (the
    /// GPU backend refuses f64 tensors with its typed error). Inputs keep the dtypes
    /// declared for them; mixed operations promote as in PyTorch.
    pub fn dtype(mut self, dtype: DType) -> Trainer {
        self.dtype = dtype;
        self
    }

    /// Freezes the parameters matching `pattern` (PyTorch's `requires_grad = False`): no
    /// gradient is computed for them, no update, no optimizer state. A pattern is a
    /// parameter name (`fc1.weight`), a module path (`fc1`, every parameter under it), or
    /// a `*` at the start, the end or both (`*.bias`, `encoder.*`, `*bias*`); one that matches nothing is a
    /// compile error.
    pub fn freeze(mut self, pattern: &str) -> Trainer {
        self.frozen.push(pattern.to_string());
        self
    }

    /// A parameter group (PyTorch's `param_groups`): its own lr and/or weight decay for
    /// the parameters it matches. Parameters no group matches form the default group
    /// with the optimizer's settings; a parameter two groups match is an error.
    pub fn param_group(mut self, group: ParamGroup) -> Trainer {
        self.groups.push(group);
        self
    }

    /// `clip_grad_norm_(max_norm)` before every update, compiled into the step: all
    /// gradients are scaled by `min(1, max_norm / (total_norm + 1e-6))`, where
    /// `total_norm` is the 2-norm of the per-parameter 2-norms. The norm before clipping
    /// is returned as `StepResult::grad_norm`.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Trainer {
        self.clip.norm = Some(max_norm);
        self
    }

    /// `clip_grad_value_(clip_value)` before every update (applied before a norm clip
    /// when both are set).
    pub fn clip_grad_value(mut self, clip_value: f64) -> Trainer {
        self.clip.value = Some(clip_value);
        self
    }

    /// A per-step learning-rate schedule (the compiled step's lr input is set from it
    /// before every update).
    pub fn schedule(mut self, schedule: LrSchedule) -> Trainer {
        self.schedule = Some(schedule);
        self
    }

    /// Initialises the parameters matching `pattern` (as for [`Trainer::freeze`]) with
    /// `init` instead of their layer's default (PyTorch's `nn.init.xavier_uniform_(..)`).
    /// The first matching call wins.
    pub fn init(mut self, pattern: &str, init: Init) -> Trainer {
        self.inits.push((pattern.to_string(), init));
        self
    }

    /// Returns the output of the module at `path` (`encoder.0`, a `Sequential`'s layer
    /// name) from every program as `hook.<path>` (PyTorch's forward hooks):
    /// `StepResult::extra`, [`TrainStep::predict_all`], and [`Loss::named`] can read it.
    pub fn hook(mut self, path: &str) -> Trainer {
        self.hooks.push(path.to_string());
        self
    }

    /// Data-parallel training in the process group `comm` (PyTorch's
    /// `DistributedDataParallel`): every rank runs this program on its own batch (see
    /// [`crate::data::Shard`]), and each gradient is averaged over the group by an
    /// `all_reduce` compiled into the step, before clipping and the optimizer, so every
    /// rank applies the same update and keeps the same parameters (the seed must be the
    /// same on every rank). The average is taken in rank order: ranks agree bit for
    /// bit, and N ranks of batch B match one process of batch N*B up to summation
    /// order. Runs on the interpreter and CPU backends (the CPU's `all_reduce` kernel
    /// hands its buffer to the communicator); the GPU refuses a group of more than one
    /// rank with a typed error so far.
    pub fn data_parallel(
        mut self,
        comm: std::sync::Arc<dyn aotgrad_runtime::collective::Communicator>,
    ) -> Trainer {
        self.group = Some(comm);
        self
    }

    /// The most gradient bytes one data-parallel reduction moves (PyTorch DDP's
    /// `bucket_cap_mb`; 25 MiB by default, as DDP's). Gradients are bucketed in reverse
    /// parameter order (the order backward produces them), a bucket closes before the
    /// gradient that would overflow it (or one of another dtype), and each bucket is one
    /// `concat` of the flattened gradients, one `all_reduce` and one slice per gradient:
    /// one call moves many small gradients. The `schedule_collectives` pass then starts
    /// each bucket's reduction as soon as its last gradient exists, so smaller buckets
    /// overlap more of backward, at more calls per step.
    pub fn bucket_bytes(mut self, bytes: usize) -> Trainer {
        self.bucket_bytes = bytes.max(1);
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

    /// The graph input of a batch tensor: `[N, dims...]`.
    fn feed_var<'g>(b: &'g GraphBuilder, f: &Feed) -> Var<'g> {
        let mut shape = vec![Dim::sym(BATCH_DIM)];
        shape.extend(f.dims.dims().iter().cloned());
        b.input(&f.name, f.dtype, Shape(shape))
    }

    /// Traces one program. Returns the graph and what the model declared.
    fn trace(
        &self,
        kind: ProgramKind,
        specs: &[ParamSpec],
    ) -> Result<(Graph, Declared), TrainError> {
        let program = kind.name();
        let b = GraphBuilder::new(format!("{}.{program}", self.name));
        let trains = matches!(
            kind,
            ProgramKind::Step | ProgramKind::Accumulate | ProgramKind::Grads
        );
        if kind == ProgramKind::Apply {
            return self.trace_apply(b, specs);
        }
        let mode = if trains { Mode::Train } else { Mode::Eval };
        let s = Scope::new(&b, mode, trains).with_dtype(self.dtype);
        s.hook(&self.hooks);
        let loss = match &self.body {
            Body::Model(m) => {
                let mut vars = Vars::new(&b);
                let mut inputs = Vec::new();
                for f in self.feeds.iter().filter(|f| !f.target) {
                    let v = Self::feed_var(&b, f);
                    vars.insert(&f.name, v);
                    inputs.push(v);
                }
                if inputs.is_empty() {
                    return Err(TrainError::Config(
                        "input (call .input(dtype, dims) or .batch_input(name, dtype, dims))"
                            .into(),
                    ));
                }
                let what = format!("model ({})", m.type_name());
                let outs = b.within(what, self.made_at, || m.forward_all(&s, &inputs));
                let Some(&out) = outs.first() else {
                    return Err(TrainError::Config(
                        "a model that returns at least one output".into(),
                    ));
                };
                for (i, o) in outs.iter().enumerate() {
                    let name = output_name(i);
                    b.output(&name, *o);
                    vars.insert(&name, *o);
                }
                let (hooked, missing) = s.hooked();
                if let Some(path) = missing.first() {
                    return Err(TrainError::Config(format!(
                        "a module at {path:?} for the hook (no module there reported its output; layers run by Sequential or Scope::call do)"
                    )));
                }
                for (path, v) in hooked {
                    let name = nn::hook_output(&path);
                    b.output(&name, v);
                    vars.insert(&name, v);
                }
                if kind == ProgramKind::Predict {
                    None
                } else {
                    let mut target = None;
                    for f in self.feeds.iter().filter(|f| f.target) {
                        let v = Self::feed_var(&b, f);
                        vars.insert(&f.name, v);
                        target.get_or_insert(v);
                    }
                    let loss_def = self.loss.as_ref().expect("models have a loss");
                    let what = format!("loss {}", loss_def.description());
                    let loss = match &loss_def.f {
                        LossFn::Pair(f) => {
                            let y = target.ok_or_else(|| {
                                TrainError::Config(
                                    "target (call .target(dtype, dims) or .batch_target(name, dtype, dims))"
                                        .into(),
                                )
                            })?;
                            b.within(what, loss_def.made_at, || f(out, y))
                        }
                        LossFn::Named(f) => b.within(what, loss_def.made_at, || f(&vars)),
                    };
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
                    if kind == ProgramKind::Eval
                        && let Some(y) = target
                    {
                        classification_outputs(&b, out, y);
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
        // Frozen parameters stay graph params (the forward reads them) but are not
        // differentiated, updated or given optimizer state.
        let params: Vec<ParamSpec> = params
            .into_iter()
            .filter(|p| !self.is_frozen(&p.name))
            .collect();
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
                self.backward(&b, kind, loss, &params, &pvars, s.rng_key())?;
            }
        }
        let mut graph = b.finish().map_err(|error| TrainError::Build {
            program,
            error: at_users_line(error),
        })?;
        if self.checked && matches!(kind, ProgramKind::Step | ProgramKind::Accumulate) {
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

    /// The gradients of `loss` with respect to the parameters and what `kind` does
    /// with them: outputs (`Grads`), accumulation state (`Accumulate`) or the
    /// optimizer's update (`Step`); the dropout key advances.
    fn backward<'g>(
        &self,
        b: &'g GraphBuilder,
        kind: ProgramKind,
        loss: Var<'g>,
        params: &[ParamSpec],
        pvars: &[Var<'g>],
        rng_key: Option<Var<'g>>,
    ) -> Result<(), TrainError> {
        let program = kind.name();
        if let Some(e) = b.error() {
            return Err(TrainError::Build {
                program,
                error: at_users_line(e),
            });
        }
        let one = loss.ones_like();
        let mut grads = vjp_in(b, &[(loss, one)], pvars)
            .map_err(|error| TrainError::Grad { program, error })?;
        if self.group.is_some() {
            // Data parallel: every rank's gradient becomes the group's mean.
            let mean = aotgrad_ir::Op::AllReduce {
                op: aotgrad_ir::AllReduceOp::Mean,
            };
            grads = all_reduce_buckets(b, &grads, mean, self.bucket_bytes);
        }
        let named: Vec<(String, Var<'_>, Var<'_>)> = params
            .iter()
            .zip(pvars)
            .zip(grads)
            .map(|((p, v), g)| (p.name.clone(), *v, g))
            .collect();
        match kind {
            ProgramKind::Grads => {
                for (n, _, g) in &named {
                    b.output(&format!("grad.{n}"), *g);
                }
            }
            ProgramKind::Accumulate => {
                for (n, _, g) in &named {
                    let acc = b.state(&format!("{n}.{ACC_SUFFIX}"), g.dtype(), g.shape());
                    b.update(acc, acc + *g);
                }
            }
            _ => self.update(b, named)?,
        }
        if let Some(key) = rng_key {
            b.update(key, key + 1);
        }
        Ok(())
    }

    /// Clipping, then the optimizer's update of every `(name, param, grad)` with its
    /// parameter group's settings.
    fn update<'g>(
        &self,
        b: &'g GraphBuilder,
        mut named: Vec<(String, Var<'g>, Var<'g>)>,
    ) -> Result<(), TrainError> {
        let grads: Vec<Var<'g>> = named.iter().map(|(_, _, g)| *g).collect();
        if let Some((clipped, norm)) = self.clip.apply(b, &grads) {
            for ((_, _, g), c) in named.iter_mut().zip(clipped) {
                *g = c;
            }
            if let Some(norm) = norm {
                b.output(GRAD_NORM, norm);
            }
        }
        let lr = b.input(LR_INPUT, DType::F64, Shape::scalar());
        let mut params = Vec::with_capacity(named.len());
        for (name, p, g) in named {
            let group = self.group_of(&name)?;
            let (lr_scale, weight_decay) = match group {
                Some(gr) => (
                    match gr.lr {
                        Some(glr) if self.optim.lr() != 0.0 => glr / self.optim.lr(),
                        Some(_) => {
                            return Err(TrainError::Config(
                                "a non-zero optimizer lr for a parameter group's own lr (its ratio to it)"
                                    .into(),
                            ));
                        }
                        None => 1.0,
                    },
                    gr.weight_decay,
                ),
                None => (1.0, None),
            };
            params.push(OptParam {
                name,
                param: p,
                grad: g,
                lr_scale,
                weight_decay,
            });
        }
        self.optim.build(b, lr, &params);
        Ok(())
    }

    fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|p| pattern_matches(p, name))
    }

    /// The one parameter group matching `name`, if any; two is an error.
    fn group_of(&self, name: &str) -> Result<Option<&ParamGroup>, TrainError> {
        let mut hits = self.groups.iter().filter(|g| g.matches(name));
        let first = hits.next();
        if hits.next().is_some() {
            return Err(TrainError::Config(format!(
                "parameter {name:?} in one parameter group only (two groups match it)"
            )));
        }
        Ok(first)
    }

    /// Every freeze, init and group pattern matches at least one parameter (a typo
    /// would otherwise silently train, or initialise, the wrong thing).
    fn check_patterns(&self, specs: &[ParamSpec]) -> Result<(), TrainError> {
        let patterns = self
            .frozen
            .iter()
            .map(|p| ("freeze", p))
            .chain(self.inits.iter().map(|(p, _)| ("init", p)))
            .chain(
                self.groups
                    .iter()
                    .flat_map(|g| g.params.iter().map(|p| ("param_group", p))),
            );
        for (what, p) in patterns {
            if !specs.iter().any(|s| pattern_matches(p, &s.name)) {
                let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                return Err(TrainError::Config(format!(
                    "{what} pattern {p:?} to match a parameter; the model has {names:?}"
                )));
            }
        }
        Ok(())
    }

    /// The optimizer applied to the mean of `k` accumulated gradients, which are reset.
    fn trace_apply(
        &self,
        b: GraphBuilder,
        specs: &[ParamSpec],
    ) -> Result<(Graph, Declared), TrainError> {
        let inv_k = 1.0 / self.accumulate as f64;
        let mut named = Vec::new();
        for p in specs.iter().filter(|p| !self.is_frozen(&p.name)) {
            let v = b.param(&p.name, p.dtype, Shape::known(&p.shape));
            let acc = b.state(
                &format!("{}.{ACC_SUFFIX}", p.name),
                p.dtype,
                Shape::known(&p.shape),
            );
            b.update(acc, acc.zeros_like());
            named.push((p.name.clone(), v, acc * inv_k));
        }
        self.update(&b, named)?;
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
        let (traced, declared) = self.trace(ProgramKind::Step, &[])?;
        let specs = declared.params;
        self.check_patterns(&specs)?;
        // The class count behind integer targets, for naming a bad label.
        let output_dims = traced
            .outputs()
            .iter()
            .find(|(n, _)| n == "output")
            .map(|(_, id)| traced.ty(*id).shape.dims().to_vec())
            .unwrap_or_default();
        let classes = match self.loss.as_ref().map(|l| l.classes) {
            Some(ClassTargets::Fixed(n)) => Some(n),
            Some(ClassTargets::OutputAxis1) => output_dims.get(1).and_then(|d| d.known()),
            Some(ClassTargets::OutputLastAxis) => output_dims.last().and_then(|d| d.known()),
            _ => None,
        };
        let opt = |program: &'static str, g: Graph| {
            passes::optimize(&g, self.opt_level)
                .map_err(|error| TrainError::Optimize { program, error })
        };
        let step = opt("step", traced.clone())?;
        let grads = opt("grads", self.trace(ProgramKind::Grads, &specs)?.0)?;
        let has_data = matches!(self.body, Body::Model(_));
        let eval = if has_data {
            Some(opt("eval", self.trace(ProgramKind::Eval, &specs)?.0)?)
        } else {
            None
        };
        let predict = if has_data {
            Some(opt("predict", self.trace(ProgramKind::Predict, &specs)?.0)?)
        } else {
            None
        };
        let accumulate = if self.accumulate > 1 {
            Some((
                opt("accumulate", self.trace(ProgramKind::Accumulate, &specs)?.0)?,
                opt("apply", self.trace(ProgramKind::Apply, &specs)?.0)?,
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
                let init = self
                    .inits
                    .iter()
                    .find(|(pat, _)| pattern_matches(pat, &p.name))
                    .map_or(&p.init, |(_, init)| init);
                let value =
                    init.sample(key, &p.shape, p.dtype)
                        .map_err(|error| TrainError::Init {
                            param: p.name.clone(),
                            error,
                        })?;
                Ok((p.name.clone(), value))
            })
            .collect::<Result<_, TrainError>>()?;
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
        let state: Vec<(String, Tensor)> = state.into_iter().collect();
        TrainStep::new(StepParts {
            backend: *backend,
            traced,
            step,
            grads,
            eval,
            predict,
            accumulate,
            k: self.accumulate,
            params,
            state,
            buffers: declared.buffers.into_iter().map(|b| b.name).collect(),
            dict_order: declared.order,
            lr: self.optim.lr(),
            checked: self.checked,
            executor: ExecutorOptions {
                check_numerics: self.check_numerics,
                profile: self.profile,
            },
            group: self.group.clone(),
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
            trainable: specs
                .iter()
                .filter(|p| !self.is_frozen(&p.name))
                .map(|p| p.name.clone())
                .collect(),
            inputs: self
                .feeds
                .iter()
                .filter(|f| !f.target)
                .map(|f| f.name.clone())
                .collect(),
            schedule: self.schedule.clone(),
        })
    }
}

/// The name of the model's `i`-th output.
pub fn output_name(i: usize) -> String {
    if i == 0 {
        "output".to_string()
    } else {
        format!("output.{i}")
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

/// Where this crate's own sources are, as `file!()` spells them in this build
/// (`src/` in its workspace, a registry or path directory as a dependency).
fn own_source_dir() -> &'static str {
    let f = file!();
    f.strip_suffix("train/trainer.rs").unwrap_or(f)
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

/// For classification (class-index targets `y: i64[N]`, scores `out: [N, C]`): the
/// count of correct predictions, and with a known C the confusion matrix, computed
/// where the model runs so that only these numbers come back.
fn classification_outputs<'g>(b: &'g GraphBuilder, out: Var<'g>, y: Var<'g>) {
    if y.dtype() != DType::I64 || out.rank() != 2 || y.rank() != 1 {
        return;
    }
    let pred = out.argmax(1, false);
    let hit = pred.equal(y).cast(DType::I64);
    b.output(CORRECT, hit.sum_all());
    // counts[t][p] = sum over rows of onehot(y)[n, t] * onehot(pred)[n, p].
    if let Some(c) = out.shape().dims()[1].known() {
        let confusion = y.one_hot(c).t().matmul(pred.one_hot(c));
        b.output(CONFUSION, confusion);
    }
}

/// DDP's default bucket size, 25 MiB.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Each gradient replaced by its value after `reduce` over the group, `reduce` applied
/// once per bucket (see [`Trainer::bucket_bytes`]); a bucket of one gradient reduces it
/// as it is.
fn all_reduce_buckets<'g>(
    b: &'g GraphBuilder,
    grads: &[Var<'g>],
    reduce: aotgrad_ir::Op,
    cap: usize,
) -> Vec<Var<'g>> {
    // Parameters have static shapes; anything else would get a bucket of its own.
    let numel = |g: &Var<'g>| {
        g.shape()
            .0
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(d.known()?))
    };
    let bytes =
        |g: &Var<'g>| numel(g).map_or(usize::MAX, |n| n.saturating_mul(g.dtype().size_bytes()));
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    let mut size = 0usize;
    for i in (0..grads.len()).rev() {
        let n = bytes(&grads[i]);
        let fits = buckets.last().is_some_and(|bk| {
            grads[bk[0]].dtype() == grads[i].dtype() && size.saturating_add(n) <= cap
        });
        if fits {
            buckets.last_mut().expect("checked").push(i);
            size += n;
        } else {
            buckets.push(vec![i]);
            size = n;
        }
    }
    let mut out: Vec<Option<Var<'g>>> = vec![None; grads.len()];
    for bucket in buckets {
        if let [i] = bucket[..] {
            out[i] = Some(b.apply(reduce.clone(), &[grads[i]]));
            continue;
        }
        let flat: Vec<Var<'g>> = bucket.iter().map(|&i| grads[i].reshape(&[-1])).collect();
        let sum = b.apply(reduce.clone(), &[b.cat(&flat, 0)]);
        let mut at = 0i64;
        for &i in &bucket {
            let g = grads[i];
            let n = numel(&g).expect("a bucket of several holds static shapes") as i64;
            let dims: Vec<i64> = g
                .shape()
                .0
                .iter()
                .map(|d| d.known().map_or(-1, |d| d as i64))
                .collect();
            out[i] = Some(sum.slice(0, Some(at), Some(at + n), 1).reshape(&dims));
            at += n;
        }
    }
    out.into_iter()
        .map(|g| g.expect("every gradient is in a bucket"))
        .collect()
}

//! [`Trainer`]: what a training job is (model, loss, optimizer, options), and how it
//! is traced into the graphs of its programs and compiled into a [`TrainStep`].

use std::collections::HashMap;
use std::rc::Rc;

use aotgrad_compiler::passes::{self, OptLevel};
use aotgrad_compiler::vjp_in;
use aotgrad_ir::{DType, Dim, Graph, GraphBuilder, Shape, Var};
use aotgrad_runtime::Tensor;

use super::gate::gate_updates;
use super::loss::{ClassTargets, Loss};
use super::step::{CONFUSION, CORRECT, StepParts, TrainStep};
use super::{Backend, PROB_CHECK, TrainError};
use crate::executor::{ExecutorOptions, ProgramKind};
use crate::nn::module::{BufferSpec, Mode, Module, ParamSpec, RNG_STATE, Scope};
use crate::nn::{self, Reduction};
use crate::optim::{LR_INPUT, Optimizer};

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
        let s = Scope::new(&b, mode, trains);
        let loss = match &self.body {
            Body::Model(m) => {
                let x = Self::batched(&b, "x", &self.input, "input")?;
                let what = format!("model ({})", m.type_name());
                let out = b.within(what, self.made_at, || m.forward(&s, x));
                b.output("output", out);
                if kind == ProgramKind::Predict {
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
                    if kind == ProgramKind::Eval {
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
        let grads = vjp_in(b, &[(loss, one)], pvars)
            .map_err(|error| TrainError::Grad { program, error })?;
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
                    let acc = b.state(&format!("{n}.{ACC_SUFFIX}"), DType::F32, g.shape());
                    b.update(acc, acc + *g);
                }
            }
            _ => {
                let lr = b.input(LR_INPUT, DType::F64, Shape::scalar());
                self.optim.build(b, lr, &named);
            }
        }
        if let Some(key) = rng_key {
            b.update(key, key + 1);
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
        let (traced, declared) = self.trace(ProgramKind::Step, &[])?;
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

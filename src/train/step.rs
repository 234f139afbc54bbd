//! [`TrainStep`]: a trainer's compiled programs, run on one executor that holds the
//! parameters, optimizer state, buffers and RNG key between calls.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use aotgrad_ir::{Graph, TensorType};
use aotgrad_runtime::cpu::KernelProfile;
use aotgrad_runtime::gpu::Fetch;
use aotgrad_runtime::{Evaluation, RunError, Tensor};

use super::{BATCH_DIM, Backend, BatchTensors, PROB_CHECK, TrainError};
use crate::executor::{self, Executor, ExecutorOptions, ProgramKind, Stage, Updates};
use crate::lr_schedule::LrSchedule;
use crate::nn;
use crate::optim::{LR_INPUT, Optimizer};

/// The eval program's output holding the batch's confusion matrix.
pub const CONFUSION: &str = "metric.confusion";

/// The eval program's output counting correct class predictions.
pub const CORRECT: &str = "metric.correct";

/// The step's output holding the gradients' total norm before a norm clip.
pub const GRAD_NORM: &str = "grad_norm";

/// The scalar `loss` output of an evaluation (NaN if absent, which checked mode reports).
fn loss_of(ev: &Evaluation) -> f64 {
    ev.output("loss").and_then(Tensor::item).unwrap_or(f64::NAN)
}

/// The model's outputs of an evaluation: `output`, `output.1`, ... and the hooked
/// activations `hook.<path>`.
fn model_outputs(ev: &Evaluation) -> impl Iterator<Item = (String, Tensor)> + '_ {
    ev.outputs
        .iter()
        .filter(|(n, _)| n == "output" || n.starts_with("output.") || n.starts_with("hook."))
        .map(|(n, t)| (n.clone(), t.clone()))
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
    /// With `Trainer::clip_grad_norm`, from a training step: the gradients' total norm
    /// before clipping (what `clip_grad_norm_` returns).
    pub grad_norm: Option<f64>,
    /// The model's further outputs (`output.1`, ...) and hooked activations
    /// (`hook.<path>`), when the call fetched every output.
    pub extra: Vec<(String, Tensor)>,
}

impl StepResult {
    fn from_evaluation(loss: f64, ev: &Evaluation) -> StepResult {
        StepResult {
            loss,
            output: ev.output("output").cloned(),
            correct: ev.output(CORRECT).and_then(Tensor::item).map(|v| v as u64),
            confusion: ev.output(CONFUSION).cloned(),
            grad_norm: ev.output(GRAD_NORM).and_then(Tensor::item),
            extra: model_outputs(ev).filter(|(n, _)| n != "output").collect(),
        }
    }
}

/// Everything `Trainer::compile` hands a new step.
pub(super) struct StepParts {
    pub backend: Backend,
    pub group: Option<std::sync::Arc<dyn aotgrad_runtime::collective::Communicator>>,
    pub traced: Graph,
    pub step: Graph,
    pub grads: Graph,
    pub eval: Option<Graph>,
    pub predict: Option<Graph>,
    pub accumulate: Option<(Graph, Graph)>,
    pub k: usize,
    pub params: Vec<(String, Tensor)>,
    pub state: Vec<(String, Tensor)>,
    pub buffers: Vec<String>,
    pub dict_order: Vec<String>,
    pub lr: f64,
    pub checked: bool,
    pub executor: ExecutorOptions,
    pub loss_name: String,
    pub loss_description: String,
    pub optim: Optimizer,
    pub batch_stats: Vec<nn::BatchStatistics>,
    pub classes: Option<usize>,
    /// The parameters that train (not frozen), in declaration order.
    pub trainable: Vec<String>,
    /// The model's input names, in declaration order.
    pub inputs: Vec<String>,
    pub schedule: Option<LrSchedule>,
}

/// The compiled training programs and the executor that runs them.
pub struct TrainStep {
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
    /// Where the programs run and the persistent tensors live. Behind a `RefCell`:
    /// evaluating through `&self` compiles the eval program on first use.
    exec: RefCell<Box<dyn Executor>>,
    /// Parameter names in declaration order; state names (optimizer state, buffers,
    /// the RNG key) sorted.
    param_names: Vec<String>,
    state_names: Vec<String>,
    /// Every persistent tensor's type (what a load must match).
    types: HashMap<String, TensorType>,
    /// The model's buffers (state that belongs to the state dict).
    buffers: Vec<String>,
    /// Parameter and buffer names in PyTorch's `state_dict` order.
    dict_order: Vec<String>,
    lr: f64,
    steps: u64,
    checked: bool,
    loss_name: String,
    /// `Loss::description` of the trainer's loss (checkpoints record it).
    loss_description: String,
    /// The optimizer compiled into the step (checkpoints record its hyper-parameters).
    optim: Optimizer,
    /// Layers that need more than one value per channel in a training batch.
    batch_stats: Vec<nn::BatchStatistics>,
    /// How many classes integer targets index (cross entropy, NLL, one-hot MSE).
    classes: Option<usize>,
    trainable: Vec<String>,
    inputs: Vec<String>,
    /// Sets the lr before every update; the base lr is the optimizer's.
    schedule: Option<LrSchedule>,
    base_lr: f64,
    /// The parameters as read back for [`TrainStep::parameters`] (reset by every run
    /// that applies updates and every load).
    mirror: OnceCell<Vec<(String, Tensor)>>,
    /// Sees every step as it ends ([`TrainStep::observe`]).
    observer: Option<Box<dyn super::StepObserver>>,
}

impl TrainStep {
    pub(super) fn new(p: StepParts) -> Result<TrainStep, TrainError> {
        let param_names: Vec<String> = p.params.iter().map(|(n, _)| n.clone()).collect();
        let mut state_names: Vec<String> = p.state.iter().map(|(n, _)| n.clone()).collect();
        state_names.sort();
        let types = p
            .params
            .iter()
            .chain(&p.state)
            .map(|(n, t)| (n.clone(), t.ty()))
            .collect();
        let exec = executor::for_backend(p.backend, p.executor, p.group, p.params, p.state)
            .map_err(|error| TrainError::Run {
                program: "setup",
                error,
            })?;
        Ok(TrainStep {
            traced: p.traced,
            step: p.step,
            grads: p.grads,
            eval: p.eval,
            predict: p.predict,
            accumulate: p.accumulate,
            k: p.k,
            micro: 0,
            exec: RefCell::new(exec),
            param_names,
            state_names,
            types,
            buffers: p.buffers,
            dict_order: p.dict_order,
            lr: p.lr,
            steps: 0,
            checked: p.checked,
            loss_name: p.loss_name,
            loss_description: p.loss_description,
            optim: p.optim,
            batch_stats: p.batch_stats,
            classes: p.classes,
            trainable: p.trainable,
            inputs: p.inputs,
            schedule: p.schedule,
            base_lr: p.lr,
            mirror: OnceCell::new(),
            observer: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.exec.borrow().backend()
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

    /// The loss with its hyper-parameters (`Loss::description`).
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

    /// The graph program `kind` runs.
    fn graph(&self, kind: ProgramKind) -> Result<&Graph, TrainError> {
        let none = || {
            TrainError::Config(format!(
                "a program `{kind}` (evaluation needs a model, accumulation `.accumulate(k)`)"
            ))
        };
        match kind {
            ProgramKind::Step => Ok(&self.step),
            ProgramKind::Grads => Ok(&self.grads),
            ProgramKind::Eval => self.eval.as_ref().ok_or_else(none),
            ProgramKind::Predict => self.predict.as_ref().ok_or_else(none),
            ProgramKind::Accumulate => self.accumulate.as_ref().map(|a| &a.0).ok_or_else(none),
            ProgramKind::Apply => self.accumulate.as_ref().map(|a| &a.1).ok_or_else(none),
        }
    }

    /// Runs program `kind` on `extra` inputs and the learning rate.
    fn exec(
        &self,
        kind: ProgramKind,
        extra: &[(&str, &Tensor)],
        updates: Updates,
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, TrainError> {
        let g = self.graph(kind)?;
        let lr = Tensor::from_f64(&[self.lr], &[]).expect("scalar");
        let mut inputs = extra.to_vec();
        inputs.push((LR_INPUT, &lr));
        self.exec
            .borrow_mut()
            .run(kind, g, &inputs, updates, fetch)
            .map_err(|error| TrainError::Run {
                program: kind.name(),
                error,
            })
    }

    /// Runs a program whose updates write parameters and state (checked mode gates
    /// them inside the graph, see `gate_updates`).
    fn exec_update(
        &mut self,
        kind: ProgramKind,
        extra: &[(&str, &Tensor)],
        fetch: Fetch<'_>,
    ) -> Result<Evaluation, TrainError> {
        self.mirror = OnceCell::new();
        self.exec(kind, extra, Updates::Apply, fetch)
    }

    /// Stage `stage` of program `kind` as the backend last ran it (the lowered program,
    /// Cranelift IR, machine code, WGSL): `None` before the program's first run or when
    /// the backend has no such stage ([`TrainStep::stages`]).
    pub fn artifact(&self, kind: ProgramKind, stage: Stage) -> Option<Result<String, TrainError>> {
        let r = self.exec.borrow().inspect(kind, stage)?;
        Some(r.map_err(|error| TrainError::Run {
            program: kind.name(),
            error,
        }))
    }

    /// The stages [`TrainStep::artifact`] can show on this step's backend.
    pub fn stages(&self) -> &'static [Stage] {
        self.exec.borrow().stages()
    }

    /// With `Trainer::profile`, on the CPU backend: the lowered program `kind` as it
    /// last ran, and the time of each of its kernels summed over its calls. `None`
    /// before its first run, on another backend, or without profiling.
    pub fn kernel_profile(&self, kind: ProgramKind) -> Option<(String, KernelProfile)> {
        let exec = self.exec.borrow();
        let profile = exec.profile(kind)?;
        let program = exec.inspect(kind, Stage::Lowered)?.ok()?;
        Some((program, profile))
    }

    /// Reads the parameters back from the device (the GPU's store, the CPU's parameter
    /// arena), reporting a device error instead of panicking on it as the accessors do.
    pub fn sync(&mut self) -> Result<(), TrainError> {
        self.mirror = OnceCell::new();
        let names: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
        let params = self.read(&names)?;
        let _ = self.mirror.set(params);
        Ok(())
    }

    fn read(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>, TrainError> {
        self.exec
            .borrow()
            .read(names)
            .map_err(|error| TrainError::Run {
                program: "read-back",
                error,
            })
    }

    fn check(&self, ev: &Evaluation) -> Result<f64, TrainError> {
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

    /// Sets the learning rate of the next update from the schedule, if there is one.
    fn scheduled_lr(&mut self) {
        if let Some(s) = &self.schedule {
            self.lr = s.lr_at(self.base_lr, self.steps);
        }
    }

    /// One training step on `batch`: forward, loss, backward, update. Returns the loss
    /// computed before the update.
    pub fn run<B: BatchTensors + ?Sized>(&mut self, batch: &B) -> Result<f64, TrainError> {
        Ok(self
            .run_fetch(batch, Fetch::Only(&["loss", PROB_CHECK]))?
            .loss)
    }

    /// [`TrainStep::run`], also returning the model's output.
    pub fn run_full<B: BatchTensors + ?Sized>(
        &mut self,
        batch: &B,
    ) -> Result<StepResult, TrainError> {
        self.run_fetch(batch, Fetch::All)
    }

    /// One step reading back the outputs `fetch` names (on the GPU; the other backends
    /// have every output in host memory anyway).
    fn run_fetch<B: BatchTensors + ?Sized>(
        &mut self,
        batch: &B,
        fetch: Fetch<'_>,
    ) -> Result<StepResult, TrainError> {
        self.check_batch(batch, true)?;
        self.run_checked(batch, fetch)
            .map_err(|e| self.diagnose(e, batch))
    }

    /// Refuses a batch no program can use before anything runs: an empty one (whose
    /// mean loss would be NaN), and in training one that gives a batch-norm layer a
    /// single value per channel (PyTorch's error; its variance would be 0/0 and poison
    /// the running statistics).
    fn check_batch<B: BatchTensors + ?Sized>(
        &self,
        batch: &B,
        training: bool,
    ) -> Result<(), TrainError> {
        for (what, t) in batch.tensors() {
            if t.shape().first() == Some(&0) {
                return Err(TrainError::EmptyBatch {
                    what: what.to_string(),
                    shape: t.shape().to_vec(),
                });
            }
        }
        if !training {
            return Ok(());
        }
        let n = batch.batch_size();
        let env = [(std::sync::Arc::from(BATCH_DIM), n)].into_iter().collect();
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
    fn diagnose<B: BatchTensors + ?Sized>(&self, e: TrainError, batch: &B) -> TrainError {
        let tensors = batch.tensors();
        let y = tensors
            .iter()
            .find(|(n, _)| !self.inputs.iter().any(|i| i == n))
            .map(|(_, t)| *t);
        let (
            TrainError::Run {
                error: RunError::IndexOutOfRange { .. },
                ..
            },
            Some(classes),
            Some(labels),
        ) = (&e, self.classes, y.and_then(|y| y.as_i64().ok()))
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
    fn run_checked<B: BatchTensors + ?Sized>(
        &mut self,
        batch: &B,
        fetch: Fetch<'_>,
    ) -> Result<StepResult, TrainError> {
        let extra = batch.tensors();
        self.scheduled_lr();
        if self.accumulate.is_some() {
            let ev = self.exec_update(ProgramKind::Accumulate, &extra, Fetch::All)?;
            let loss = self.check(&ev)?;
            self.micro += 1;
            if self.micro == self.k {
                self.exec_update(ProgramKind::Apply, &[], Fetch::Only(&[]))?;
                self.micro = 0;
                self.steps += 1;
            }
            self.notify(loss, batch.batch_size());
            return Ok(StepResult::from_evaluation(loss, &ev));
        }
        let ev = self.exec_update(ProgramKind::Step, &extra, fetch)?;
        let loss = self.check(&ev)?;
        self.steps += 1;
        self.notify(loss, batch.batch_size());
        Ok(StepResult::from_evaluation(loss, &ev))
    }

    /// One epoch of training steps over `batches` (a `DataLoader`'s epoch, or any
    /// other source); returns the sample-weighted mean of the step losses.
    pub fn run_epoch<B: BatchTensors, E: std::fmt::Display>(
        &mut self,
        batches: impl IntoIterator<Item = Result<B, E>>,
    ) -> Result<f64, TrainError> {
        let (mut sum, mut seen) = (0.0, 0usize);
        for b in batches {
            let b = b.map_err(|e| TrainError::Batch(e.to_string()))?;
            let n = b.batch_size();
            sum += self.run(&b)? * n as f64;
            seen += n;
        }
        Ok(sum / seen.max(1) as f64)
    }

    /// One step of a data-free objective (`Trainer::minimize`); returns its value.
    pub fn step(&mut self) -> Result<f64, TrainError> {
        self.scheduled_lr();
        let ev = self.exec_update(ProgramKind::Step, &[], Fetch::Only(&["loss", PROB_CHECK]))?;
        let loss = self.check(&ev)?;
        self.steps += 1;
        self.notify(loss, 0);
        Ok(loss)
    }

    /// Hands every later step's loss, learning rate and batch size to `observer` (a
    /// [`crate::dashboard::Dashboard`]'s feed), replacing the one before.
    pub fn observe(&mut self, observer: Box<dyn super::StepObserver>) {
        self.observer = Some(observer);
    }

    /// Stops handing steps to the observer.
    pub fn stop_observing(&mut self) {
        self.observer = None;
    }

    fn notify(&self, loss: f64, samples: usize) {
        if let Some(o) = &self.observer {
            o.stepped(&super::StepEvent {
                step: self.steps,
                loss,
                lr: self.lr,
                samples,
            });
        }
    }

    /// Forward and backward only (no update): the loss and `(param, gradient)` pairs, as
    /// after PyTorch's `loss.backward()`.
    pub fn gradients<B: BatchTensors + ?Sized>(
        &self,
        batch: Option<&B>,
    ) -> Result<(f64, Vec<(String, Tensor)>), TrainError> {
        if let Some(b) = batch {
            self.check_batch(b, true)?;
        }
        let extra = batch.map(|b| b.tensors());
        let extra = extra.as_ref().map_or(&[][..], |e| &e[..]);
        let ev = self
            .exec(ProgramKind::Grads, extra, Updates::Discard, Fetch::All)
            .map_err(|e| match batch {
                Some(b) => self.diagnose(e, b),
                None => e,
            })?;
        let loss = loss_of(&ev);
        // Frozen parameters have no gradient (PyTorch's `.grad` stays None).
        let grads = self
            .trainable
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
    pub fn evaluate<B: BatchTensors + ?Sized>(&self, batch: &B) -> Result<StepResult, TrainError> {
        self.check_batch(batch, false)?;
        let ev = self
            .exec(
                ProgramKind::Eval,
                &batch.tensors(),
                Updates::Discard,
                Fetch::All,
            )
            .map_err(|e| self.diagnose(e, batch))?;
        Ok(StepResult::from_evaluation(loss_of(&ev), &ev))
    }

    /// The model's output for inputs `x` (evaluation mode): a model of one input.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        let name = self.inputs.first().map_or("x", String::as_str);
        let ev = self.exec(
            ProgramKind::Predict,
            &[(name, x)],
            Updates::Discard,
            Fetch::All,
        )?;
        Ok(ev.output("output").cloned().expect("predict has an output"))
    }

    /// Every output of the predict program (evaluation mode) for the model inputs in
    /// `batch` (other tensors in it are ignored): `output`, `output.1`, ... and the
    /// hooked activations `hook.<path>`, by name.
    pub fn predict_all<B: BatchTensors + ?Sized>(
        &self,
        batch: &B,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let tensors = batch.tensors();
        let feeds: Vec<(&str, &Tensor)> = tensors
            .into_iter()
            .filter(|(n, _)| self.inputs.iter().any(|i| i == n))
            .collect();
        let ev = self.exec(ProgramKind::Predict, &feeds, Updates::Discard, Fetch::All)?;
        Ok(model_outputs(&ev).collect())
    }

    /// Parameters in declaration order, with PyTorch `state_dict` names.
    ///
    /// On the GPU and CPU backends they are read back from the device on the first call
    /// after an update (a device failure then panics; [`TrainStep::sync`] reports it).
    pub fn parameters(&self) -> &[(String, Tensor)] {
        self.mirror.get_or_init(|| {
            let names: Vec<&str> = self.param_names.iter().map(String::as_str).collect();
            self.read(&names)
                .unwrap_or_else(|e| panic!("reading the parameters back: {e}"))
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
        let buffers = self
            .read(&names)
            .unwrap_or_else(|e| panic!("reading the buffers back: {e}"));
        let params = self.parameters();
        self.dict_order
            .iter()
            .filter_map(|n| params.iter().chain(&buffers).find(|(k, _)| k == n).cloned())
            .collect()
    }

    /// Optimizer state and the RNG key, sorted by name.
    pub fn optimizer_state(&self) -> Vec<(String, Tensor)> {
        let names: Vec<&str> = self
            .state_names
            .iter()
            .filter(|k| !self.buffers.contains(k))
            .map(String::as_str)
            .collect();
        self.read(&names)
            .unwrap_or_else(|e| panic!("reading the optimizer state back: {e}"))
    }

    /// Writes `tensors` into the executor after checking each against the type of the
    /// persistent tensor of its name (`what` names the kind in errors).
    fn load(&mut self, tensors: &[(String, Tensor)], what: &str) -> Result<(), TrainError> {
        for (name, t) in tensors {
            let ty = self
                .types
                .get(name)
                .ok_or_else(|| TrainError::StateDict(format!("unexpected {what} {name:?}")))?;
            if *ty != t.ty() {
                return Err(TrainError::StateDict(format!(
                    "{what} {name:?}: expected {ty}, got {}",
                    t.ty()
                )));
            }
        }
        self.mirror = OnceCell::new();
        self.exec
            .get_mut()
            .write(tensors.to_vec())
            .map_err(|error| TrainError::Run {
                program: "load",
                error,
            })
    }

    /// Replaces optimizer state by name (checkpoint resume); every name must exist with
    /// the same type.
    pub fn load_optimizer_state(&mut self, state: &[(String, Tensor)]) -> Result<(), TrainError> {
        if let Some((name, _)) = state.iter().find(|(n, _)| !self.state_names.contains(n)) {
            return Err(TrainError::StateDict(format!("unexpected state {name:?}")));
        }
        self.load(state, "state")
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
        let mut problems = Vec::new();
        let expected: Vec<(&String, &TensorType)> = self
            .param_names
            .iter()
            .chain(&self.buffers)
            .map(|n| (n, &self.types[n]))
            .collect();
        for (name, ty) in &expected {
            match dict.iter().find(|(n, _)| n == *name) {
                None => problems.push(format!("missing {name:?} ({ty})")),
                Some((_, t)) if t.ty() != **ty => problems.push(format!(
                    "{name:?}: the model has {ty}, the state dict {}",
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
        self.load(dict, "tensor")
    }
}

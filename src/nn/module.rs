//! Modules: PyTorch-style layers that declare their parameters while they build the
//! forward pass.
//!
//! A [`Module`] is a description (sizes, options); [`Module::forward`] runs inside a
//! [`Scope`], which knows the graph being built, the hierarchical name prefix (`fc1.`,
//! `0.`), whether the program is for training or evaluation, and the in-graph RNG key.
//! Parameters declared through [`Scope::param`] become graph params named exactly like
//! PyTorch's `state_dict` keys, and their initialisers are recorded so that a trainer can
//! create the initial values.

use std::cell::RefCell;
use std::panic::Location;
use std::rc::Rc;

use aotgrad_ir::{BuildErrorKind, DType, GraphBuilder, Shape, Var};
use aotgrad_runtime::Tensor;

pub use super::init::{FanMode, Init, InitError};

/// Name of the per-step RNG key state (`i64[]`).
pub const RNG_STATE: &str = "rng.key";

/// A parameter declared while building: its full name, shape and initialiser.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
    /// Its float dtype: the scope's ([`Scope::dtype`], the trainer's) unless the module
    /// asked for another ([`Scope::param_typed`]).
    pub dtype: DType,
}

/// Whether a program is built for training (dropout active) or evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// A buffer declared while building (`register_buffer`): persistent, not trained,
/// part of the state dict (batch norm's running statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct BufferSpec {
    pub name: String,
    pub init: Tensor,
}

#[derive(Default)]
struct Registry {
    params: Vec<ParamSpec>,
    buffers: Vec<BufferSpec>,
    /// Parameter and buffer names in declaration order: PyTorch's `state_dict` order
    /// (per module, its parameters, then its buffers).
    order: Vec<String>,
    random_calls: i64,
    batch_stats: Vec<BatchStatistics>,
}

/// A layer that normalises with batch statistics (batch norm in training): its input
/// must hold more than one value per channel (axis 1), which only the batch size at
/// run time can tell. [`Scope::require_batch_statistics`] records it; the trainer checks
/// every call's batch against it before running anything.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics {
    /// The layer's scope path and type, e.g. `bn1 (BatchNorm1d)`.
    pub layer: String,
    /// Its input's shape (symbolic in the batch dim).
    pub shape: Shape,
}

impl BatchStatistics {
    /// The values per channel with `env`'s symbols bound; `None` if a dim stays unbound.
    pub fn values_per_channel(
        &self,
        env: &std::collections::BTreeMap<std::sync::Arc<str>, usize>,
    ) -> Option<usize> {
        self.shape
            .dims()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, d)| d.bind(env))
            .try_fold(1usize, |acc, n| n.map(|n| acc.saturating_mul(n)))
    }
}

/// The per-step RNG key, created on first use so that programs without randomness carry
/// no RNG state.
struct KeySlot<'g> {
    enabled: bool,
    key: Option<Var<'g>>,
}

/// The context a module builds in. Cheap to clone; children share the registry.
#[derive(Clone)]
pub struct Scope<'g> {
    b: &'g GraphBuilder,
    prefix: String,
    mode: Mode,
    dtype: DType,
    key: Rc<RefCell<KeySlot<'g>>>,
    reg: Rc<RefCell<Registry>>,
    hooks: Rc<RefCell<Hooks<'g>>>,
}

/// Forward hooks: the module paths whose outputs the program returns, and what was
/// recorded for them while building.
#[derive(Default)]
struct Hooks<'g> {
    wanted: Vec<String>,
    seen: Vec<(String, Var<'g>)>,
}

/// The output name of a hooked module's activation (`hook.encoder.0`).
pub fn hook_output(path: &str) -> String {
    format!("hook.{path}")
}

impl<'g> Scope<'g> {
    /// A root scope. With `rng`, the first random op declares the `i64[]` state
    /// [`RNG_STATE`], which the program must advance every step (see
    /// [`Scope::rng_key`]); it seeds dropout masks.
    pub fn new(b: &'g GraphBuilder, mode: Mode, rng: bool) -> Scope<'g> {
        Scope {
            b,
            prefix: String::new(),
            mode,
            dtype: DType::F32,
            key: Rc::new(RefCell::new(KeySlot {
                enabled: rng,
                key: None,
            })),
            reg: Rc::default(),
            hooks: Rc::default(),
        }
    }

    /// The float dtype parameters declared in this scope (and its children) take.
    pub fn with_dtype(mut self, dtype: DType) -> Scope<'g> {
        self.dtype = dtype;
        self
    }

    /// The scope's float dtype for parameters (f32 unless the trainer says otherwise).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Asks for the outputs of the modules at `paths` (PyTorch's forward hooks): a
    /// composite module reports each child's output with [`Scope::observe`].
    pub fn hook(&self, paths: &[String]) {
        self.hooks.borrow_mut().wanted.extend_from_slice(paths);
    }

    /// Runs the submodule `name` on `x` (PyTorch's `self.name(x)`): its parameters are
    /// named `<prefix><name>.<param>`, a build error inside it names the layer, its type
    /// and this call's line, and a forward hook on its path sees its output.
    #[track_caller]
    pub fn call(&self, name: &str, module: &dyn Module, x: Var<'g>) -> Var<'g> {
        self.call_at(name, module, Location::caller(), x)
    }

    /// [`Scope::call`] with several inputs and outputs ([`Module::forward_all`]); a hook
    /// sees the first output.
    #[track_caller]
    pub fn call_all(&self, name: &str, module: &dyn Module, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        let (child, outs) = self.in_child(name, module, Location::caller(), |c| {
            module.forward_all(c, inputs)
        });
        if let Some(first) = outs.first() {
            child.observe(*first);
        }
        outs
    }

    /// [`Scope::call`] located at `at` (a `Sequential` names the line that added the
    /// layer, not its own).
    fn call_at(
        &self,
        name: &str,
        module: &dyn Module,
        at: &'static Location<'static>,
        x: Var<'g>,
    ) -> Var<'g> {
        let (child, out) = self.in_child(name, module, at, |c| module.forward(c, x));
        child.observe(out);
        out
    }

    /// Runs `f` in the child scope `name`, with build errors naming the layer and `at`.
    fn in_child<T>(
        &self,
        name: &str,
        module: &dyn Module,
        at: &'static Location<'static>,
        f: impl FnOnce(&Scope<'g>) -> T,
    ) -> (Scope<'g>, T) {
        let child = self.child(name);
        let what = format!("layer {name:?} ({})", module.type_name());
        let out = self.b.within(what, at, || f(&child));
        (child, out)
    }

    /// Records `value` as the output of the module at this scope's path if a hook asked
    /// for it ([`Sequential`] and [`Scope::call`] do it for each layer).
    pub fn observe(&self, value: Var<'g>) {
        let path = self.path().to_string();
        let mut hooks = self.hooks.borrow_mut();
        if hooks.wanted.contains(&path) && !hooks.seen.iter().any(|(p, _)| *p == path) {
            hooks.seen.push((path, value));
        }
    }

    /// What the hooks recorded, and the paths asked for that no module reported.
    pub fn hooked(&self) -> (Vec<(String, Var<'g>)>, Vec<String>) {
        let hooks = self.hooks.borrow();
        let missing = hooks
            .wanted
            .iter()
            .filter(|w| !hooks.seen.iter().any(|(p, _)| p == *w))
            .cloned()
            .collect();
        (hooks.seen.clone(), missing)
    }

    /// The RNG key state, if a random op declared it.
    pub fn rng_key(&self) -> Option<Var<'g>> {
        self.key.borrow().key
    }

    pub fn builder(&self) -> &'g GraphBuilder {
        self.b
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn training(&self) -> bool {
        self.mode == Mode::Train
    }

    /// The scope of a submodule: its parameters are named `<prefix><name>.<param>`.
    pub fn child(&self, name: &str) -> Scope<'g> {
        Scope {
            prefix: format!("{}{name}.", self.prefix),
            ..self.clone()
        }
    }

    /// Declares (or, within one graph, reuses) the parameter `<prefix><name>` in the
    /// scope's float dtype ([`Scope::dtype`]).
    #[track_caller]
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Var<'g> {
        self.param_typed(name, shape, init, self.dtype)
    }

    /// [`Scope::param`] with an explicit float dtype (a module that keeps, say, an f64
    /// accumulator in an f32 model). Integer dtypes are refused: they have no gradient.
    #[track_caller]
    pub fn param_typed(&self, name: &str, shape: &[usize], init: Init, dtype: DType) -> Var<'g> {
        let full = format!("{}{name}", self.prefix);
        if let Some(v) = self.b.get(&full) {
            return v;
        }
        if !dtype.is_float() {
            return self.b.report(
                "param",
                BuildErrorKind::Usage(format!(
                    "parameter {full:?} must have a float dtype, got {dtype}"
                )),
            );
        }
        let mut reg = self.reg.borrow_mut();
        reg.params.push(ParamSpec {
            name: full.clone(),
            shape: shape.to_vec(),
            init,
            dtype,
        });
        reg.order.push(full.clone());
        self.b.param(&full, dtype, Shape::known(shape))
    }

    /// Declares (or reuses) the buffer `<prefix><name>` with its initial value: a
    /// persistent `state` of the graph that training programs may update with
    /// [`Scope::update_buffer`] and that the state dict includes.
    #[track_caller]
    pub fn buffer(&self, name: &str, init: Tensor) -> Var<'g> {
        let full = format!("{}{name}", self.prefix);
        if let Some(v) = self.b.get(&full) {
            return v;
        }
        let shape = Shape::known(init.shape());
        let dtype = init.dtype();
        let mut reg = self.reg.borrow_mut();
        reg.buffers.push(BufferSpec {
            name: full.clone(),
            init,
        });
        reg.order.push(full.clone());
        self.b.state(&full, dtype, shape)
    }

    /// Gives a buffer its value for the next call (training programs only; evaluation
    /// programs leave buffers unchanged, as PyTorch's `eval()` does).
    pub fn update_buffer(&self, buffer: Var<'g>, value: Var<'g>) {
        if self.training() {
            self.b.update(buffer, value);
        }
    }

    /// The scope's path (`encoder.0`; empty at the root).
    pub fn path(&self) -> &str {
        self.prefix.strip_suffix('.').unwrap_or(&self.prefix)
    }

    /// Records that `layer` (a type name) normalises its input of `shape` with batch
    /// statistics in training programs ([`BatchStatistics`]).
    pub fn require_batch_statistics(&self, layer: &str, shape: Shape) {
        if !self.training() {
            return;
        }
        let path = if self.path().is_empty() {
            "the model".to_string()
        } else {
            format!("{:?}", self.path())
        };
        self.reg.borrow_mut().batch_stats.push(BatchStatistics {
            layer: format!("{path} ({layer})"),
            shape,
        });
    }

    /// The layers recorded by [`Scope::require_batch_statistics`].
    pub fn batch_statistics(&self) -> Vec<BatchStatistics> {
        self.reg.borrow().batch_stats.clone()
    }

    /// The parameters declared so far, in declaration order.
    pub fn params(&self) -> Vec<ParamSpec> {
        self.reg.borrow().params.clone()
    }

    /// The buffers declared so far, in declaration order.
    pub fn buffers(&self) -> Vec<BufferSpec> {
        self.reg.borrow().buffers.clone()
    }

    /// Parameter and buffer names in declaration (state-dict) order.
    pub fn state_dict_order(&self) -> Vec<String> {
        self.reg.borrow().order.clone()
    }

    /// A fresh `i64[]` key for one random op: distinct per call site within a step and
    /// distinct across steps (the step key changes). `None` outside training programs.
    pub fn next_key(&self) -> Option<Var<'g>> {
        let key = {
            let mut slot = self.key.borrow_mut();
            if !slot.enabled {
                return None;
            }
            *slot
                .key
                .get_or_insert_with(|| self.b.state(RNG_STATE, DType::I64, Shape::scalar()))
        };
        let mut reg = self.reg.borrow_mut();
        reg.random_calls += 1;
        // Mix in the call index with an odd multiplier, in i32 arithmetic: the GPU stores
        // i64 as i32 and wraps at 32 bits, so a product computed in i64 would give the
        // GPU other keys (other dropout masks) once it passes 2^31.
        let mixed = key.cast(DType::I32) * 0x2545_F491_i32 + (reg.random_calls as i32);
        Some(mixed.cast(DType::I64))
    }
}

/// A layer or model: builds its forward pass in a scope.
pub trait Module {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g>;

    /// Several inputs and several outputs (PyTorch's `forward(*args)` returning a
    /// tuple): the trainer calls it with the batch's inputs in declaration order and
    /// names the outputs `output`, `output.1`, ... By default a module takes one input
    /// and returns one output; a multi-input module overrides this (and makes its
    /// one-input `forward` say how many it needs, with [`report_inputs`]).
    #[track_caller]
    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        match inputs {
            [x] => vec![self.forward(s, *x)],
            _ => vec![report_inputs(s, &self.type_name(), 1, inputs.len())],
        }
    }

    /// The layer's type as error messages name it (`Linear`): by default the Rust type's
    /// name without its module path or generic arguments.
    fn type_name(&self) -> String {
        let full = std::any::type_name::<Self>();
        let plain = full.split('<').next().unwrap_or(full);
        plain.rsplit("::").next().unwrap_or(plain).to_string()
    }
}

/// The error of a module called with the wrong number of inputs.
#[track_caller]
pub fn report_inputs<'g>(s: &Scope<'g>, layer: &str, want: usize, got: usize) -> Var<'g> {
    s.builder().report(
        "forward",
        BuildErrorKind::Usage(format!(
            "{layer} takes {want} input(s), got {got} (declare them with Trainer::batch_input)"
        )),
    )
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        (**self).forward(s, x)
    }

    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        (**self).forward_all(s, inputs)
    }

    fn type_name(&self) -> String {
        (**self).type_name()
    }
}

/// `y = x W^T + b` with PyTorch's layout (`weight: [out, in]`) and default init.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

impl Linear {
    pub fn new(in_features: usize, out_features: usize) -> Linear {
        Linear {
            in_features,
            out_features,
            bias: true,
        }
    }

    pub fn no_bias(mut self) -> Linear {
        self.bias = false;
        self
    }
}

impl Module for Linear {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        // Said in the layer's terms: the product's message would show the weight
        // untransposed (`f32[N,2] @ f32[16,3]`).
        let features = x.shape().dims().last().and_then(|d| d.known());
        if !x.is_poisoned() && x.rank() >= 1 && features != Some(self.in_features) {
            let got = x
                .shape()
                .dims()
                .last()
                .map_or("none".into(), |d| d.to_string());
            return s.builder().report(
                "linear",
                BuildErrorKind::Usage(format!(
                    "expected {} input features, got {got} (input {})",
                    self.in_features,
                    x.ty()
                )),
            );
        }
        let bound = 1.0 / (self.in_features as f64).sqrt();
        let w = s.param(
            "weight",
            &[self.out_features, self.in_features],
            Init::Uniform { bound },
        );
        let b = self
            .bias
            .then(|| s.param("bias", &[self.out_features], Init::Uniform { bound }));
        x.linear(w, b)
    }
}

/// Children run in order; each is named by its index (`0.weight`) unless named
/// explicitly, as in PyTorch's `nn.Sequential`. An error raised while a layer builds
/// names the layer (its name and type) and the user's line that added it.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<SequentialLayer>,
}

struct SequentialLayer {
    name: String,
    module: Box<dyn Module>,
    /// The user's `push`/`push_named` call.
    added: &'static Location<'static>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer named by its position.
    #[track_caller]
    pub fn push(self, layer: impl Module + 'static) -> Sequential {
        let name = self.layers.len().to_string();
        self.add(name, Box::new(layer), Location::caller())
    }

    /// Appends a layer with an explicit name (`OrderedDict` style).
    #[track_caller]
    pub fn push_named(self, name: &str, layer: impl Module + 'static) -> Sequential {
        self.add(name.to_string(), Box::new(layer), Location::caller())
    }

    fn add(
        mut self,
        name: String,
        module: Box<dyn Module>,
        added: &'static Location<'static>,
    ) -> Sequential {
        self.layers.push(SequentialLayer {
            name,
            module,
            added,
        });
        self
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        self.layers
            .iter()
            .fold(x, |h, l| s.call_at(&l.name, l.module.as_ref(), l.added, h))
    }
}

macro_rules! activation {
    ($(#[$doc:meta])* $name:ident, |$x:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Default)]
        pub struct $name;
        impl Module for $name {
            fn forward<'g>(&self, _s: &Scope<'g>, $x: Var<'g>) -> Var<'g> {
                $body
            }
        }
    };
}

activation!(
    /// `max(x, 0)` (derivative 0 at 0, as PyTorch).
    ReLU,
    |x| x.relu()
);
activation!(
    /// The logistic function.
    Sigmoid,
    |x| x.sigmoid()
);
activation!(Tanh, |x| x.tanh());

/// `x` for `x >= 0`, `slope * x` otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakyReLU(pub f64);

impl Default for LeakyReLU {
    fn default() -> Self {
        LeakyReLU(0.01)
    }
}

impl Module for LeakyReLU {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.leaky_relu(self.0)
    }
}

/// Softmax along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Softmax(pub i64);

impl Module for Softmax {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.softmax(self.0)
    }
}

/// Flattens axes `start..=end` (PyTorch's `nn.Flatten()` is `start = 1, end = -1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flatten {
    pub start: i64,
    pub end: i64,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start: 1, end: -1 }
    }
}

impl Module for Flatten {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.flatten(self.start, self.end)
    }
}

/// Zeroes each element with probability `p` in training programs and scales the rest by
/// `1/(1-p)`; the identity in evaluation programs. The mask comes from the in-graph
/// counter-based RNG keyed by the step, so runs are reproducible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout(pub f64);

impl Module for Dropout {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        dropout(s, x, self.0)
    }
}

/// Functional dropout (see [`Dropout`]).
#[track_caller]
pub fn dropout<'g>(s: &Scope<'g>, x: Var<'g>, p: f64) -> Var<'g> {
    if !(0.0..=1.0).contains(&p) {
        return s.builder().report(
            "dropout",
            BuildErrorKind::Usage(format!("probability must be in [0, 1], got {p}")),
        );
    }
    if !s.training() || p == 0.0 {
        return x;
    }
    if p == 1.0 {
        return x.zeros_like();
    }
    let Some(key) = s.next_key() else {
        return s.builder().report(
            "dropout",
            BuildErrorKind::Usage("a training program needs an RNG key for dropout".into()),
        );
    };
    let u = s.builder().rand(key, x.dtype(), x.shape());
    u.ge(p).where_(x * (1.0 / (1.0 - p)), 0.0)
}

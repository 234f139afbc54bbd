//! The builder DSL: PyTorch-flavoured tracing of a program into a [`Graph`].
//!
//! ```
//! use aotgrad_ir::{GraphBuilder, DType, shape};
//!
//! let g = GraphBuilder::new("linreg");
//! let x = g.input("x", DType::F32, shape!["N", 1]);
//! let y = g.input("y", DType::F32, shape!["N", 1]);
//! let w = g.param("linear.weight", DType::F32, shape![1, 1]);
//! let b = g.param("linear.bias", DType::F32, shape![1]);
//! let pred = x.linear(w, Some(b));
//! let loss = (pred - y).square().sum_all();
//! g.output("loss", loss);
//! let graph = g.finish().unwrap();
//! assert_eq!(graph.outputs().len(), 1);
//! ```
//!
//! Errors: ops never panic on user mistakes. The first error is recorded together with
//! the op and the caller's source line (`#[track_caller]`), every value derived from a
//! failed one is "poisoned" and adds no further errors, and [`GraphBuilder::finish`]
//! returns the first error. This keeps operator overloading (`a + b`) usable.

mod arith;
mod conv;
mod creation;
mod index;
mod movement;
mod reduce;
mod sort;

use std::cell::RefCell;
use std::panic::Location;

pub use arith::Operand;
pub use conv::{BatchNorm, BatchNormOut, Conv2dOptions, Pair, Pool2dOptions};
pub use reduce::Axes;

use crate::{
    BuildError, BuildErrorKind, DType, Graph, GraphError, NodeId, Op, Shape, TensorType, verify,
};

/// Id of a value whose construction failed.
const POISON: NodeId = NodeId(u32::MAX);

/// Records a program as a graph. Values ([`Var`]) borrow the builder.
pub struct GraphBuilder {
    state: RefCell<State>,
}

struct State {
    graph: Graph,
    error: Option<BuildError>,
    /// The open [`GraphBuilder::within`] contexts, outermost first.
    context: Vec<crate::ErrorContext>,
}

/// A traced value: a handle to one node of the graph being built. `Copy`, so it can be
/// used any number of times like a PyTorch tensor.
#[derive(Clone, Copy)]
pub struct Var<'g> {
    b: &'g GraphBuilder,
    id: NodeId,
}

impl std::fmt::Debug for Var<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_poisoned() {
            write!(f, "Var(poisoned)")
        } else {
            write!(f, "Var({}: {})", self.id, self.ty())
        }
    }
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder {
            state: RefCell::new(State {
                graph: Graph::new(name),
                error: None,
                context: Vec::new(),
            }),
        }
    }

    /// Continues building on an existing graph (e.g. to add a loss to a model).
    pub fn from_graph(graph: Graph) -> GraphBuilder {
        GraphBuilder {
            state: RefCell::new(State {
                graph,
                error: None,
                context: Vec::new(),
            }),
        }
    }

    /// A handle to an existing node of the graph.
    pub fn var(&self, id: NodeId) -> Option<Var<'_>> {
        (id.index() < self.state.borrow().graph.len()).then_some(Var { b: self, id })
    }

    /// Finds an input, parameter or state by name.
    pub fn get(&self, name: &str) -> Option<Var<'_>> {
        let id = self.state.borrow().graph.find(name)?;
        Some(Var { b: self, id })
    }

    fn poison(&self) -> Var<'_> {
        Var {
            b: self,
            id: POISON,
        }
    }

    /// Builds `f` within a context of the user's model (a layer, a loss): a build error
    /// raised inside it carries `what` and `location` (the user's line that made the
    /// layer), so it names the layer rather than the library line that raised it.
    /// Contexts nest (a `Sequential` inside a `Sequential`).
    pub fn within<R>(
        &self,
        what: impl Into<String>,
        location: &'static Location<'static>,
        f: impl FnOnce() -> R,
    ) -> R {
        self.state.borrow_mut().context.push(crate::ErrorContext {
            what: what.into(),
            location,
        });
        let r = f();
        self.state.borrow_mut().context.pop();
        r
    }

    /// Records an error found by code built on the DSL (layers, losses) as this builder's
    /// build error, located at the user's call, and returns a poisoned value.
    #[track_caller]
    pub fn report(&self, op: &str, kind: impl Into<BuildErrorKind>) -> Var<'_> {
        self.fail(Location::caller(), op, kind)
    }

    /// Records `kind` as the build error unless one is already recorded.
    pub(crate) fn fail(
        &self,
        loc: &'static Location<'static>,
        op: &str,
        kind: impl Into<BuildErrorKind>,
    ) -> Var<'_> {
        let mut st = self.state.borrow_mut();
        if st.error.is_none() {
            st.error = Some(BuildError {
                op: op.to_string(),
                location: loc,
                context: st.context.clone(),
                error: Box::new(kind.into()),
            });
        }
        self.poison()
    }

    /// Adds a primitive node. `name` is the user-facing op reported in errors.
    pub(crate) fn add(
        &self,
        loc: &'static Location<'static>,
        name: &str,
        op: Op,
        inputs: &[Var<'_>],
    ) -> Var<'_> {
        if inputs.iter().any(|v| v.is_poisoned()) {
            return self.poison();
        }
        let ids: Vec<NodeId> = inputs.iter().map(|v| v.id).collect();
        let res = self.state.borrow_mut().graph.add(op, &ids);
        match res {
            Ok(id) => Var { b: self, id },
            Err(GraphError::Op(e)) => self.fail(loc, name, e),
            Err(GraphError::DuplicateName(n)) => {
                self.fail(loc, name, BuildErrorKind::DuplicateName(n))
            }
            Err(e) => self.fail(loc, name, BuildErrorKind::Usage(e.to_string())),
        }
    }

    fn leaf(&self, loc: &'static Location<'static>, op: Op) -> Var<'_> {
        let name = op.name();
        self.add(loc, name, op, &[])
    }

    /// A value fed in on every call.
    #[track_caller]
    pub fn input(&self, name: &str, dtype: DType, shape: Shape) -> Var<'_> {
        let ty = TensorType::new(dtype, shape);
        self.leaf(
            Location::caller(),
            Op::Input {
                name: name.into(),
                ty,
            },
        )
    }

    /// A trainable parameter (persistent across calls).
    #[track_caller]
    pub fn param(&self, name: &str, dtype: DType, shape: Shape) -> Var<'_> {
        let ty = TensorType::new(dtype, shape);
        self.leaf(
            Location::caller(),
            Op::Param {
                name: name.into(),
                ty,
            },
        )
    }

    /// Persistent non-trainable state (optimizer moments, counters).
    #[track_caller]
    pub fn state(&self, name: &str, dtype: DType, shape: Shape) -> Var<'_> {
        let ty = TensorType::new(dtype, shape);
        self.leaf(
            Location::caller(),
            Op::State {
                name: name.into(),
                ty,
            },
        )
    }

    /// Names `v` as an output of the graph.
    #[track_caller]
    pub fn output(&self, name: &str, v: Var<'_>) {
        let loc = Location::caller();
        if v.is_poisoned() {
            return;
        }
        let res = self.state.borrow_mut().graph.set_output(name, v.id);
        if let Err(e) = res {
            let kind = match e {
                GraphError::DuplicateName(n) => BuildErrorKind::DuplicateName(n),
                e => BuildErrorKind::Usage(e.to_string()),
            };
            self.fail(loc, "output", kind);
        }
    }

    /// Declares that after each call, `target` (a param or state) takes the value `value`.
    #[track_caller]
    pub fn update(&self, target: Var<'_>, value: Var<'_>) {
        let loc = Location::caller();
        if target.is_poisoned() || value.is_poisoned() {
            return;
        }
        let res = self
            .state
            .borrow_mut()
            .graph
            .set_update(target.id, value.id);
        if let Err(e) = res {
            self.fail(loc, "update", BuildErrorKind::Usage(e.to_string()));
        }
    }

    /// Adds one primitive op exactly as given (no promotion or broadcasting). For
    /// transformations such as autodiff and for ops the DSL has no method for.
    #[track_caller]
    pub fn apply<'g>(&'g self, op: Op, inputs: &[Var<'g>]) -> Var<'g> {
        let name = op.name();
        self.add(Location::caller(), name, op, inputs)
    }

    /// The first error recorded so far, if any.
    pub fn error(&self) -> Option<BuildError> {
        self.state.borrow().error.clone()
    }

    /// The finished, verified graph, or the first error the program made.
    pub fn finish(self) -> Result<Graph, BuildError> {
        let st = self.state.into_inner();
        if let Some(e) = st.error {
            return Err(e);
        }
        verify(&st.graph).map_err(|e| BuildError {
            op: "finish".into(),
            location: Location::caller(),
            context: Vec::new(),
            error: Box::new(BuildErrorKind::Usage(e.to_string())),
        })?;
        Ok(st.graph)
    }

    /// A snapshot of the graph built so far (for inspection while tracing).
    pub fn graph(&self) -> Graph {
        self.state.borrow().graph.clone()
    }
}

impl<'g> Var<'g> {
    pub fn id(self) -> NodeId {
        self.id
    }

    pub fn builder(self) -> &'g GraphBuilder {
        self.b
    }

    /// Whether an earlier error made this value meaningless.
    pub fn is_poisoned(self) -> bool {
        self.id == POISON
    }

    /// The value's type. A poisoned value reports `f32[]`.
    pub fn ty(self) -> TensorType {
        if self.is_poisoned() {
            return TensorType::scalar(DType::F32);
        }
        self.b.state.borrow().graph.ty(self.id).clone()
    }

    pub fn shape(self) -> Shape {
        self.ty().shape
    }

    pub fn dtype(self) -> DType {
        self.ty().dtype
    }

    pub fn rank(self) -> usize {
        self.ty().rank()
    }

    /// Adds a primitive with this value as the first operand.
    pub(crate) fn prim(
        self,
        loc: &'static Location<'static>,
        name: &str,
        op: Op,
        rest: &[Var<'g>],
    ) -> Var<'g> {
        let mut inputs = Vec::with_capacity(rest.len() + 1);
        inputs.push(self);
        inputs.extend_from_slice(rest);
        self.b.add(loc, name, op, &inputs)
    }

    pub(crate) fn fail(
        self,
        loc: &'static Location<'static>,
        name: &str,
        e: impl Into<BuildErrorKind>,
    ) -> Var<'g> {
        self.b.fail(loc, name, e)
    }

    /// Casts to `dtype` (no node if it already is).
    #[track_caller]
    pub fn cast(self, dtype: DType) -> Var<'g> {
        if self.is_poisoned() || self.dtype() == dtype {
            return self;
        }
        self.prim(Location::caller(), "cast", Op::Cast(dtype), &[])
    }

    /// PyTorch's `.to(dtype)`.
    #[track_caller]
    pub fn to(self, dtype: DType) -> Var<'g> {
        self.cast(dtype)
    }
}

//! The IR, the graph passes, autodiff and the interpreter: text round trips, snapshots
//! of every stage, facts of the derivative rules and of the interpreter, gradient checks.

#[path = "../common/models.rs"]
mod common_models;

mod autodiff_facts;
mod gradcheck_midgraph;
mod interp_facts;
mod ir_snapshots;
mod passes;
mod text_roundtrip;

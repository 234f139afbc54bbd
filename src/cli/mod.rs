//! The examples' and the `aotgrad` binary's scaffolding, kept apart from the library
//! (the model, the optimizer, the training step, data): the shared command-line flags,
//! the MNIST job two examples share, progress bars, run logs and their pictures.
//!
//! A program of your own needs none of it; it is public so that the examples (which
//! are separate crates) can use it, and so that you can copy what you like. The
//! library never depends on this module (`docs/ARCHITECTURE.md`, "Module graph").

pub mod args;
pub mod course_mnist;
pub mod mnist_job;
pub mod plot;
pub mod progress;
pub mod pyrepr;
pub mod runlog;
pub mod text_job;
pub mod torch_print;

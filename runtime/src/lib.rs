//! aotgrad-runtime: host tensors, `.npy` I/O, the reference interpreter (the oracle
//! every compiled backend is differentially tested against), the CPU backend and the
//! GPU backend.

pub mod cpu;
pub mod gpu;
pub mod interp;
mod leaf;
pub mod npy;
mod tensor;
mod variants;

pub use interp::{Evaluation, RunError, run};
pub use tensor::{Tensor, TensorError};

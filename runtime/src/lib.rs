//! aotgrad-runtime: host tensors, `.npy` I/O, the reference interpreter (the oracle
//! every compiled backend is differentially tested against), the CPU backend and the
//! GPU backend.

pub mod collective;
pub mod cpu;
pub mod gpu;
pub mod interp;
mod leaf;
pub mod npy;
mod tensor;
pub mod tensor_ops;
mod variants;

pub use interp::{Evaluation, RunError, run, run_in_group};
pub use tensor::{Tensor, TensorError};
pub use tensor_ops::{Arg, Ix, TensorOpError};

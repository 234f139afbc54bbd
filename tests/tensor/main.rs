//! Host tensor operations (`aotgrad::runtime::tensor_ops`): the course's tensor lessons
//! and API catalogue against PyTorch's values, the random creators' properties, and
//! the errors a learner's mistakes get.

mod catalogue;
mod errors;
mod random;

//! The `aotgrad` binary and the examples, as a user runs them: flags, output, errors.

#[path = "../common/support.rs"]
mod support;

mod cli_grad;
mod distributed;
mod errors;
mod examples;

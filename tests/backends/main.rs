//! The CPU and GPU backends against the interpreter and PyTorch: lowered programs,
//! kernels (rows, epilogues, windows, the parameter arena), op and model fixtures.

#[path = "../common/models.rs"]
mod common_models;
#[path = "../common/support.rs"]
mod support;

mod collective;
mod cpu_backend;
mod epilogues;
mod gpu_backend;
mod gpu_windows;
mod param_arena;
mod row_kernels;
mod torch_models;
mod torch_ops;

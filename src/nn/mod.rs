//! Neural-network building blocks on top of the DSL: losses (PyTorch's
//! `torch.nn.functional` semantics), layers and modules.

pub mod conv;
pub mod init;
pub mod layers;
pub mod loss;
pub mod models;
pub mod module;
pub mod recurrent;
pub mod sequence;
pub mod vars;

pub use conv::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout2d, MaxPool2d,
};
pub use init::{FanMode, Init, InitError};
pub use layers::{
    AvgPool1d, Conv1d, Embedding, GELU, Identity, LayerNorm, LogSoftmax, MaxPool1d, SiLU, Softplus,
    gelu,
};
pub use loss::{
    ClassLossOptions, Reduction, binary_cross_entropy, binary_cross_entropy_with_logits,
    cross_entropy, l1_loss, mse_loss, nll_loss,
};
pub use module::{
    BatchStatistics, BufferSpec, Dropout, Flatten, LeakyReLU, Linear, Mode, Module, ParamSpec,
    ReLU, Scope, Sequential, Sigmoid, Softmax, Tanh, dropout, hook_output, report_inputs,
};
pub use recurrent::{Cell, Gru, Lstm, MAX_UNROLLED_STEPS, Recurrent, RecurrentOutput, Rnn};
pub use sequence::{CausalSelfAttention, CharLstm, Gpt, GptConfig, causal_mask};
pub use vars::Vars;

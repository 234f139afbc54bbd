//! The sequence examples' trainers (issue 31), in the library so that the examples,
//! the benchmark suite (`aotgrad bench char_lstm gpt`) and the
//! parity test against PyTorch (`tests/training/sequence.rs`) train the same thing.

use crate::lr_schedule::LrSchedule;
use crate::nn::{CharLstm, Gpt, GptConfig};
use crate::optim::{Adam, Optimizer};
use crate::train::{Loss, ParamGroup, Trainer};

/// `examples/char_lstm.rs`'s training: [`CharLstm`] (embedding 64, two LSTM layers of
/// 256), cross entropy over every position, Adam at `lr`, the gradients' norm clipped
/// to `clip` (none at 0). The parity test (`tests/training/sequence.rs`) trains this
/// same trainer against PyTorch.
pub fn char_lstm_trainer(vocab: usize, lr: f64, clip: f64) -> Trainer {
    let t = Trainer::new(
        CharLstm::new(vocab),
        Loss::token_cross_entropy(),
        Optimizer::adam(lr),
    )
    .name("char_lstm");
    if clip > 0.0 {
        t.clip_grad_norm(clip)
    } else {
        t
    }
}

/// `examples/gpt.rs`'s training: [`Gpt`] of `cfg`, AdamW at peak `lr` with betas
/// (0.9, 0.95) and weight decay 0.1 on every matrix (nanoGPT's groups: none on biases
/// and LayerNorm parameters), clipping at 1.0, `warmup` steps of linear warm-up then
/// cosine decay to a tenth of `lr` at `steps`.
pub fn gpt_trainer(cfg: GptConfig, lr: f64, warmup: u64, steps: u64) -> Trainer {
    let optim = Optimizer::Adam(Adam {
        lr,
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.1,
        decoupled_weight_decay: true,
    });
    Trainer::new(Gpt(cfg), Loss::token_cross_entropy(), optim)
        .name("gpt")
        .param_group(ParamGroup::new(&["*.bias", "*ln_*"]).weight_decay(0.0))
        .clip_grad_norm(1.0)
        .schedule(LrSchedule::WarmupCosine {
            warmup_steps: warmup,
            total_steps: steps,
            min_factor: 0.1,
        })
}

//! The sequence models PyTorch learners train after MNIST (issue 31): a character-level
//! LSTM ("makemore") and a decoder-only transformer ("nanoGPT"), built from the layers
//! with PyTorch's `state_dict` names, plus the causal self-attention they share with any
//! user model.
//!
//! Both take `[N, T]` integer token ids and return `[N, T, vocab]` logits; train them
//! with [`crate::train::Loss::token_cross_entropy`] (cross entropy over every position).

use aotgrad_ir::{BuildErrorKind, DType, Var};

use super::layers::{Embedding, LayerNorm, gelu};
use super::module::{Init, Linear, Module, Scope, dropout};
use super::recurrent::Recurrent;

/// `Embedding(vocab, embed) -> LSTM(embed, hidden, num_layers, batch_first) ->
/// Linear(hidden, vocab)`: the character LSTM of `examples/char_lstm.rs`
/// (`embed.weight`, `lstm.weight_ih_l0`, ..., `head.weight`, `head.bias`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharLstm {
    pub vocab: usize,
    pub embed: usize,
    pub hidden: usize,
    pub num_layers: usize,
    /// Dropout between the LSTM layers (PyTorch's `dropout=` argument).
    pub dropout: f64,
}

impl CharLstm {
    /// The model: embedding 64, hidden 256, two layers, no dropout.
    pub fn new(vocab: usize) -> CharLstm {
        CharLstm {
            vocab,
            embed: 64,
            hidden: 256,
            num_layers: 2,
            dropout: 0.0,
        }
    }
}

impl Module for CharLstm {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, idx: Var<'g>) -> Var<'g> {
        let e = s.call("embed", &Embedding::new(self.vocab, self.embed), idx);
        let lstm = Recurrent::lstm(self.embed, self.hidden)
            .num_layers(self.num_layers)
            .dropout(self.dropout)
            .batch_first(true);
        let h = s.call("lstm", &lstm, e);
        s.call("head", &Linear::new(self.hidden, self.vocab), h)
    }

    fn type_name(&self) -> String {
        "CharLstm".into()
    }
}

/// The GPT's sizes (nanoGPT's `GPTConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptConfig {
    pub vocab: usize,
    /// The longest context (the position table's rows).
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub dropout: f64,
}

impl GptConfig {
    /// The model: 4 layers, 4 heads, width 128, context 128, dropout 0.1.
    pub fn small(vocab: usize) -> GptConfig {
        GptConfig {
            vocab,
            block_size: 128,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            dropout: 0.1,
        }
    }

    pub fn dropout(mut self, p: f64) -> GptConfig {
        self.dropout = p;
        self
    }
}

/// nanoGPT's weight init: every matrix N(0, 0.02), biases zero.
const GPT_STD: f64 = 0.02;

/// `nn.Linear(in, out)` with nanoGPT's init (weight N(0, std), bias zero).
#[track_caller]
fn gpt_linear<'g>(
    s: &Scope<'g>,
    name: &str,
    x: Var<'g>,
    inp: usize,
    out: usize,
    std: f64,
) -> Var<'g> {
    let c = s.child(name);
    let w = c.param("weight", &[out, inp], Init::Normal { std });
    let b = c.param("bias", &[out], Init::Constant(0.0));
    x.linear(w, Some(b))
}

/// The causal mask of `t` positions, `[t, t]` bool: position `i` sees `j <= i`.
pub fn causal_mask<'g>(s: &Scope<'g>, t: usize) -> Var<'g> {
    let pos = s.builder().arange(t, DType::I64);
    pos.unsqueeze(1).ge(pos.unsqueeze(0))
}

/// Multi-head causal self-attention over `[N, T, C]` (nanoGPT's `CausalSelfAttention`):
/// `c_attn` projects to q, k, v; each head attends with `softmax(q k^T / sqrt(d) +
/// mask)`, attention dropout, then `c_proj` and residual dropout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CausalSelfAttention {
    pub n_embd: usize,
    pub n_head: usize,
    pub dropout: f64,
    /// The std of `c_proj.weight` (nanoGPT scales it by `1/sqrt(2 n_layer)`).
    pub proj_std: f64,
}

impl Module for CausalSelfAttention {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        if x.is_poisoned() {
            return x;
        }
        let (c, nh) = (self.n_embd, self.n_head);
        let dims = x.shape();
        let t = (x.rank() == 3)
            .then(|| dims.dims()[1].known())
            .flatten()
            .filter(|_| dims.dims()[2].known() == Some(c));
        let Some(t) = t else {
            return s.builder().report(
                "CausalSelfAttention",
                BuildErrorKind::Usage(format!(
                    "expected [N, T, {c}] with a known T, got {}",
                    x.ty()
                )),
            );
        };
        if nh == 0 || c % nh != 0 {
            return s.builder().report(
                "CausalSelfAttention",
                BuildErrorKind::Usage(format!("n_embd {c} is not a multiple of n_head {nh}")),
            );
        }
        let hs = c / nh;
        let qkv = gpt_linear(s, "c_attn", x, c, 3 * c, GPT_STD);
        // [N, T, C] -> [N, nh, T, hs]
        let heads = |v: Var<'g>| {
            v.reshape(&[-1, t as i64, nh as i64, hs as i64])
                .permute(&[0, 2, 1, 3])
        };
        let q = heads(qkv.narrow(2, 0, c as i64));
        let k = heads(qkv.narrow(2, c as i64, c as i64));
        let v = heads(qkv.narrow(2, 2 * c as i64, c as i64));
        let scores = q.matmul(k.transpose(-2, -1)) * (1.0 / (hs as f64).sqrt());
        let masked = causal_mask(s, t).where_(scores, f64::NEG_INFINITY);
        let att = dropout(s, masked.softmax(-1), self.dropout);
        let y = att
            .matmul(v)
            .permute(&[0, 2, 1, 3])
            .reshape(&[-1, t as i64, c as i64]);
        let y = gpt_linear(s, "c_proj", y, c, c, self.proj_std);
        dropout(s, y, self.dropout)
    }

    fn type_name(&self) -> String {
        "CausalSelfAttention".into()
    }
}

/// One pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))` with a
/// GELU MLP of 4x width.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Block(GptConfig);

impl Module for Block {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let cfg = self.0;
        let c = cfg.n_embd;
        let proj_std = GPT_STD / ((2 * cfg.n_layer) as f64).sqrt();
        let attn = CausalSelfAttention {
            n_embd: c,
            n_head: cfg.n_head,
            dropout: cfg.dropout,
            proj_std,
        };
        let ln = LayerNorm::new(&[c]);
        let x = x + s.call("attn", &attn, s.call("ln_1", &ln, x));
        let h = s.call("ln_2", &ln, x);
        let m = s.child("mlp");
        let h = gelu(gpt_linear(&m, "c_fc", h, c, 4 * c, GPT_STD), false);
        let h = gpt_linear(&m, "c_proj", h, 4 * c, c, proj_std);
        x + dropout(s, h, cfg.dropout)
    }

    fn type_name(&self) -> String {
        "Block".into()
    }
}

/// nanoGPT's decoder-only transformer: token and position embeddings, `n_layer`
/// pre-norm blocks, a final LayerNorm, and the output layer tied to the token
/// embedding (`lm_head.weight` is `transformer.wte.weight`, so the state dict has the
/// latter only). Parameter names follow nanoGPT's `state_dict`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gpt(pub GptConfig);

impl Module for Gpt {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, idx: Var<'g>) -> Var<'g> {
        if idx.is_poisoned() {
            return idx;
        }
        let cfg = self.0;
        let t = (idx.rank() == 2)
            .then(|| idx.shape().dims()[1].known())
            .flatten();
        let Some(t) = t.filter(|&t| t >= 1 && t <= cfg.block_size) else {
            return s.builder().report(
                "GPT",
                BuildErrorKind::Usage(format!(
                    "expected [N, T] token ids with 1 <= T <= block_size = {}, got {}",
                    cfg.block_size,
                    idx.ty()
                )),
            );
        };
        let tr = s.child("transformer");
        // Declared here with nanoGPT's init; the embedding layer reuses it by name.
        let wte = tr.child("wte").param(
            "weight",
            &[cfg.vocab, cfg.n_embd],
            Init::Normal { std: GPT_STD },
        );
        let tok = tr.call("wte", &Embedding::new(cfg.vocab, cfg.n_embd), idx);
        let wpe = tr.child("wpe").param(
            "weight",
            &[cfg.block_size, cfg.n_embd],
            Init::Normal { std: GPT_STD },
        );
        let mut x = dropout(s, tok + wpe.narrow(0, 0, t as i64), cfg.dropout);
        let h = tr.child("h");
        for i in 0..cfg.n_layer {
            x = h.call(&i.to_string(), &Block(cfg), x);
        }
        let x = tr.call("ln_f", &LayerNorm::new(&[cfg.n_embd]), x);
        // Weight tying: the output layer reads the token embedding.
        x.linear(wte, None)
    }

    fn type_name(&self) -> String {
        "GPT".into()
    }
}

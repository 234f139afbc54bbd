//! Training trajectories against PyTorch (`tests/fixtures/torch28/trajectories.safetensors`
//! from `tools/fixtures/gen_models28.py`): the same initial state dict and batch, and the
//! losses of every step and the parameters after the last must match — on the
//! interpreter, the CPU backend and (when there is one) the GPU.
//!
//! - `seq_lstm`: `Embedding(padding_idx=0) -> LSTM(batch_first) -> masked mean -> Linear`
//!   over padded sequences with a mask (two model inputs), cross entropy, Adam;
//! - `two_inputs`: `Embedding` of tokens and `Linear` of features, `LayerNorm`, `GELU`,
//!   `Linear`, MSE, SGD with momentum;
//! - `controls`: an MLP with its first layer frozen, AdamW with two parameter groups
//!   (no decay and twice the lr on biases), `clip_grad_norm_(0.5)`, and linear warm-up
//!   then cosine decay;
//! - `controls_value_onecycle`: `clip_grad_value_` and `OneCycleLR` with SGD momentum;
//! - `f64_warmup_groups`: a float64 model against PyTorch's float64, `LinearLR` warm-up,
//!   Adam with an L2-decay parameter group.

use std::collections::HashMap;

use aotgrad::lr_schedule::LrSchedule;
use aotgrad::nn::{Embedding, LayerNorm, Linear, Module, Recurrent, Scope, Sequential, gelu};
use aotgrad::prelude::*;
use aotgrad::train::{ParamGroup, TensorDict};

use super::layers::{fixtures, worst};

struct SeqClassifier;

impl Module for SeqClassifier {
    fn forward<'g>(&self, s: &Scope<'g>, _x: Var<'g>) -> Var<'g> {
        aotgrad::nn::report_inputs(s, "SeqClassifier", 2, 1)
    }

    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        let (tokens, mask) = (inputs[0], inputs[1]);
        let e = s.call("emb", &Embedding::new(12, 8).padding_idx(0), tokens);
        let h = s.call("lstm", &Recurrent::lstm(8, 16).batch_first(true), e);
        let m = mask.unsqueeze(-1);
        let pooled = (h * m).sum(1, false) / m.sum(1, false);
        vec![s.call("fc", &Linear::new(16, 3), pooled)]
    }
}

struct TwoInputs;

impl Module for TwoInputs {
    fn forward<'g>(&self, s: &Scope<'g>, _x: Var<'g>) -> Var<'g> {
        aotgrad::nn::report_inputs(s, "TwoInputs", 2, 1)
    }

    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        let (tokens, feats) = (inputs[0], inputs[1]);
        let e = Embedding::new(10, 8)
            .forward(&s.child("emb"), tokens)
            .mean(1, false);
        let p = Linear::new(3, 8).forward(&s.child("proj"), feats);
        let h = s.builder().cat(&[e, p], -1);
        let h = LayerNorm::new(&[16]).forward(&s.child("norm"), h);
        vec![Linear::new(16, 1).forward(&s.child("head"), gelu(h, false))]
    }
}

fn trainer(case: &str) -> Trainer {
    match case {
        "seq_lstm" => Trainer::new(SeqClassifier, Loss::cross_entropy(), Optimizer::adam(0.01))
            .batch_input("tokens", DType::I64, shape![7])
            .batch_input("mask", DType::F32, shape![7])
            .batch_target("y", DType::I64, shape![]),
        "two_inputs" => Trainer::new(
            TwoInputs,
            Loss::mse(Reduction::Mean),
            Optimizer::sgd_momentum(0.05, 0.9),
        )
        .batch_input("tokens", DType::I64, shape![4])
        .batch_input("feats", DType::F32, shape![3])
        .batch_target("y", DType::F32, shape![1]),
        "controls" => Trainer::new(
            Sequential::new()
                .push(Linear::new(6, 16))
                .push(aotgrad::nn::ReLU)
                .push(Linear::new(16, 16))
                .push(aotgrad::nn::Tanh)
                .push(Linear::new(16, 3)),
            Loss::cross_entropy(),
            Optimizer::adamw(0.01, 0.1),
        )
        .input(DType::F32, &[6])
        .target(DType::I64, &[])
        .freeze("0")
        .param_group(ParamGroup::new(&["*.bias"]).lr(0.02).weight_decay(0.0))
        .clip_grad_norm(0.5)
        .schedule(LrSchedule::WarmupCosine {
            warmup_steps: 3,
            total_steps: 10,
            min_factor: 0.1,
        }),
        "controls_value_onecycle" => Trainer::new(
            Sequential::new()
                .push(Linear::new(5, 8))
                .push(aotgrad::nn::ReLU)
                .push(Linear::new(8, 3)),
            Loss::cross_entropy(),
            Optimizer::sgd_momentum(0.1, 0.9),
        )
        .input(DType::F32, &[5])
        .target(DType::I64, &[])
        .clip_grad_value(0.05)
        .schedule(LrSchedule::one_cycle(0.1, 8)),
        "f64_warmup_groups" => Trainer::new(
            Sequential::new()
                .push(Linear::new(4, 6))
                .push(aotgrad::nn::Tanh)
                .push(Linear::new(6, 1)),
            Loss::mse(Reduction::Mean),
            Optimizer::adam(0.05),
        )
        .dtype(DType::F64)
        .input(DType::F64, &[4])
        .target(DType::F64, &[1])
        .param_group(ParamGroup::new(&["0"]).weight_decay(0.01))
        .schedule(LrSchedule::LinearWarmup {
            warmup_steps: 4,
            start_factor: 0.25,
        }),
        other => panic!("{other}"),
    }
}

fn prefixed(t: &HashMap<String, Tensor>, prefix: &str) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = t
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn trajectories_match_pytorch() {
    let t = fixtures("trajectories.safetensors");
    let gpu = aotgrad::runtime::gpu::available_for_tests()
        .expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)");
    let mut backends = vec![Backend::Interpreter, Backend::Cpu { threads: 2 }];
    if gpu {
        backends.push(Backend::Gpu);
    }
    let mut failures = Vec::new();
    for case in [
        "seq_lstm",
        "two_inputs",
        "controls",
        "controls_value_onecycle",
        "f64_warmup_groups",
    ] {
        let mut batch = TensorDict::new();
        for (name, v) in prefixed(&t, &format!("{case}.batch.")) {
            batch.insert(&name, v);
        }
        let want_losses = t[&format!("{case}.losses")].to_f64_vec();
        let f64_case = case.starts_with("f64");
        for backend in &backends {
            if f64_case && *backend == Backend::Gpu {
                continue; // f32 only (the_gpu_refuses_f64_training)
            }
            // f64 agrees with PyTorch's f64 to round-off, ~1e-13 here.
            let factor = match backend {
                _ if f64_case => 1e-6,
                Backend::Gpu => 25.0,
                _ => 1.0,
            };
            let mut step = trainer(case).compile(backend).unwrap();
            step.load_state_dict(&prefixed(&t, &format!("{case}.init.")))
                .unwrap();
            for (k, want) in want_losses.iter().enumerate() {
                let got = step.run(&batch).unwrap();
                if (got - want).abs() > 1e-5 * factor * want.abs().max(1e-3) {
                    failures.push(format!("{case} on {backend:?}: loss {k}: {got} vs {want}"));
                }
            }
            let dict: HashMap<String, Tensor> = step.state_dict().into_iter().collect();
            for (name, want) in prefixed(&t, &format!("{case}.final.")) {
                let w = worst(&dict[&name], &want, 1e-4 * factor, 1e-5 * factor);
                if w > 1.0 {
                    failures.push(format!(
                        "{case} on {backend:?}: {name}: {w:.1}x the tolerance"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

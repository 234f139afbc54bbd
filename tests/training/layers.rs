//! The layers past the course (`Embedding`, `LayerNorm`, `GELU`, `SiLU`, `Conv1d`, the
//! 1-d pools, `RNN`/`LSTM`/`GRU`) against PyTorch: each case of
//! `tests/fixtures/torch28/layers.safetensors` (from `tools/fixtures/gen_models28.py`)
//! loads PyTorch's state dict by its names, and the outputs and the gradients of
//! `sum_i(y_i * r_i)` with respect to the input, the initial state and every parameter
//! match on the interpreter, the CPU backend and (when there is one) the GPU.

use std::collections::HashMap;
use std::path::Path;

use aotgrad::compiler::vjp_in;
use aotgrad::nn::{
    AvgPool1d, Conv1d, Embedding, GELU, LayerNorm, MaxPool1d, Mode, Module, Recurrent, Scope, SiLU,
};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};
use aotgrad::tensor_file::read_safetensors;

pub fn fixtures(file: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/torch28")
        .join(file);
    read_safetensors(&path).unwrap().0.into_iter().collect()
}

/// `|a - e| <= rtol |e| + atol * max|e|` for every element; the worst ratio.
pub fn worst(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    g.iter()
        .zip(&w)
        .map(|(a, e)| (a - e).abs() / (rtol * e.abs() + atol * scale).max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

fn layer(case: &str) -> Box<dyn Module> {
    match case {
        "embedding" => Box::new(Embedding::new(10, 4).padding_idx(0)),
        "layernorm" => Box::new(LayerNorm::new(&[6])),
        "gelu" => Box::new(GELU::default()),
        "gelu_tanh" => Box::new(GELU::tanh()),
        "silu" => Box::new(SiLU),
        "conv1d" => Box::new(Conv1d::new(3, 4, 3).stride(2).padding(1)),
        "maxpool1d" => Box::new(MaxPool1d::new(3).stride(2).padding(1)),
        "avgpool1d" => Box::new(AvgPool1d::new(3).stride(2).padding(1)),
        "rnn" => Box::new(Recurrent::rnn(4, 5).num_layers(2).batch_first(true)),
        "lstm" => Box::new(
            Recurrent::lstm(4, 5)
                .num_layers(2)
                .bidirectional(true)
                .batch_first(true),
        ),
        "gru" => Box::new(Recurrent::gru(4, 5)),
        other => panic!("case {other}"),
    }
}

const CASES: [&str; 11] = [
    "embedding",
    "layernorm",
    "gelu",
    "gelu_tanh",
    "silu",
    "conv1d",
    "maxpool1d",
    "avgpool1d",
    "rnn",
    "lstm",
    "gru",
];

/// The case's graph: inputs, outputs `y<i>`, loss `sum(y_i * r_i)` and its gradients
/// `g<input>` and `g.<param>`; with the feeds and the expected values.
fn case_graph(
    case: &str,
    t: &HashMap<String, Tensor>,
) -> (Graph, HashMap<String, Tensor>, Vec<(String, Tensor)>) {
    let b = GraphBuilder::new(case);
    let s = Scope::new(&b, Mode::Train, false);
    let mut feeds = HashMap::new();
    let mut inputs = Vec::new();
    let mut wrt = Vec::new();
    let mut wrt_names = Vec::new();
    for key in ["x", "h0", "c0"] {
        if let Some(v) = t.get(&format!("{case}.{key}")) {
            let var = b.input(key, v.dtype(), Shape::known(v.shape()));
            if v.dtype().is_float() {
                wrt.push(var);
                wrt_names.push(format!("g{key}"));
            }
            inputs.push(var);
            feeds.insert(key.to_string(), v.clone());
        }
    }
    let ys = layer(case).forward_all(&s, &inputs);
    let mut loss = None;
    for (i, y) in ys.iter().enumerate() {
        let r = &t[&format!("{case}.r{i}")];
        let rv = b.input(&format!("r{i}"), DType::F32, Shape::known(r.shape()));
        feeds.insert(format!("r{i}"), r.clone());
        b.output(&format!("y{i}"), *y);
        let term = (*y * rv).sum_all();
        loss = Some(match loss {
            None => term,
            Some(l) => l + term,
        });
    }
    for p in s.params() {
        let v = b.get(&p.name).unwrap();
        feeds.insert(p.name.clone(), t[&format!("{case}.p.{}", p.name)].clone());
        wrt.push(v);
        wrt_names.push(format!("g.{}", p.name));
    }
    let loss = loss.unwrap();
    let grads = vjp_in(&b, &[(loss, loss.ones_like())], &wrt).unwrap();
    for (n, g) in wrt_names.iter().zip(grads) {
        b.output(n, g);
    }
    let graph = b.finish().unwrap();
    let mut expected = Vec::new();
    for (name, _) in graph.outputs() {
        let key = match name.strip_prefix("g.") {
            Some(p) => format!("{case}.g.{p}"),
            None => format!("{case}.{name}"),
        };
        expected.push((name.clone(), t[&key].clone()));
    }
    (graph, feeds, expected)
}

#[test]
fn layers_match_pytorch_forward_and_backward() {
    let t = fixtures("layers.safetensors");
    let gpu = aotgrad::runtime::gpu::available_for_tests()
        .expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)");
    let mut failures = Vec::new();
    for case in CASES {
        let (g, feeds, expected) = case_graph(case, &t);
        let mut runs = vec![
            ("interp", aotgrad::run(&g, &feeds)),
            ("cpu", cpu::run_once(&g, &feeds, CpuOptions::default())),
        ];
        if gpu {
            runs.push(("gpu", aotgrad::runtime::gpu::run_once(&g, &feeds)));
        }
        for (backend, ev) in runs {
            let ev = ev.unwrap_or_else(|e| panic!("{case} on {backend}: {e}"));
            let factor = if backend == "gpu" { 10.0 } else { 1.0 };
            for (name, want) in &expected {
                let got = ev.output(name).unwrap();
                let w = worst(got, want, 1e-5 * factor, 1e-6 * factor);
                if w > 1.0 {
                    failures.push(format!("{case}/{name} on {backend}: {w:.1}x the tolerance"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The two refusals: `Linear` over `[N, 5, 4]` and `view(-1, C)` of `[N, 5, 3]`
/// now build (a merged dim `5*N`), run with any N, and agree with the unmerged form.
#[test]
fn merged_symbolic_dims_reshape_and_batched_linear() {
    let b = GraphBuilder::new("merged");
    let x = b.input("x", DType::F32, shape!["N", 5, 4]);
    let w = b.param("w", DType::F32, shape![3, 4]);
    let y = x.linear(w, None);
    assert_eq!(y.shape(), shape!["N", 5, 3]);
    let flat = y.view(&[-1, 3]);
    assert_eq!(flat.shape().to_string(), "[5*N,3]");
    assert_eq!(y.flatten(0, 1).shape(), flat.shape());
    let back = flat.reshape_shape(shape!["N", 5, 3]);
    b.output("flat", flat);
    b.output("back", back);
    b.output("sum", flat.sum_all());
    let g = b.finish().unwrap();
    // The text format round-trips the merged dim.
    let text = aotgrad::text::print(&g);
    assert!(text.contains("f32[5*N,3]"), "{text}");
    let parsed = aotgrad::text::parse(&text).unwrap();
    assert_eq!(aotgrad::text::print(&parsed), text);
    for n in [1usize, 4] {
        let xs: Vec<f32> = (0..n * 20).map(|i| i as f32 * 0.25 - 3.0).collect();
        let ws: Vec<f32> = (0..12).map(|i| (i as f32 - 5.0) * 0.1).collect();
        let feeds: HashMap<String, Tensor> = [
            ("x".to_string(), Tensor::from_f32(&xs, &[n, 5, 4]).unwrap()),
            ("w".to_string(), Tensor::from_f32(&ws, &[3, 4]).unwrap()),
        ]
        .into_iter()
        .collect();
        let want = aotgrad::run(&g, &feeds).unwrap();
        assert_eq!(want.output("flat").unwrap().shape(), &[5 * n, 3]);
        assert_eq!(want.output("back").unwrap().shape(), &[n, 5, 3]);
        let got = cpu::run_once(&g, &feeds, CpuOptions::default()).unwrap();
        for name in ["flat", "back"] {
            assert_eq!(got.output(name), want.output(name), "{name}, n = {n}");
        }
        let (a, e) = (
            got.output("sum").unwrap().item().unwrap(),
            want.output("sum").unwrap().item().unwrap(),
        );
        assert!((a - e).abs() < 1e-5, "sum: {a} vs {e}");
    }
    // A -1 that cannot divide says so with the user's target as written.
    let b = GraphBuilder::new("bad");
    let x = b.input("x", DType::F32, shape!["N", 5, 3]);
    x.view(&[-1, 4]);
    let e = b.finish().unwrap_err().to_string();
    assert!(e.contains("[-1, 4]") && e.contains("15*N"), "{e}");
}

/// Cross entropy over `[N, C, T]` with `[N, T]` targets equals it over the `[N*T, C]`
/// view with `[N*T]` targets, both symbolic in N.
#[test]
fn cross_entropy_over_sequences_both_layouts() {
    let b = GraphBuilder::new("ce");
    let x = b.input("x", DType::F32, shape!["N", 3, 4]);
    let y = b.input("y", DType::I64, shape!["N", 4]);
    let opts = aotgrad::nn::ClassLossOptions::default();
    let a = aotgrad::nn::cross_entropy(x, y, opts);
    let flat = x.permute(&[0, 2, 1]).reshape(&[-1, 3]);
    let c = aotgrad::nn::cross_entropy(flat, y.reshape(&[-1]), opts);
    b.output("a", a);
    b.output("c", c);
    let g = b.finish().unwrap();
    let xs: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.0).collect();
    let feeds: HashMap<String, Tensor> = [
        ("x".to_string(), Tensor::from_f32(&xs, &[2, 3, 4]).unwrap()),
        (
            "y".to_string(),
            Tensor::from_i64(&[0, 1, 2, 1, 2, 2, 0, 1], &[2, 4]).unwrap(),
        ),
    ]
    .into_iter()
    .collect();
    for ev in [
        aotgrad::run(&g, &feeds).unwrap(),
        cpu::run_once(&g, &feeds, CpuOptions::default()).unwrap(),
    ] {
        let (a, c) = (
            ev.output("a").unwrap().item().unwrap(),
            ev.output("c").unwrap().item().unwrap(),
        );
        assert!((a - c).abs() < 1e-6 * a.abs(), "{a} vs {c}");
    }
}

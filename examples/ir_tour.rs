//! A tour of the IR: trace the MNIST MLP (784-256-64-10) with a cross-entropy loss, print
//! its text, parse it back, verify it, and evaluate it on the reference interpreter for
//! a batch of 4 and a batch of 3 (the batch dim `N` is symbolic).
//!
//! `cargo run --release --example ir_tour`

use std::collections::HashMap;

use aotgrad::prelude::*;

/// A small deterministic generator for the demo weights (not the in-graph RNG).
fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

/// No flags: `--help` says what it does, and anything else is refused.
#[derive(clap::Parser)]
#[command(
    about = "A tour of the IR: trace, print, parse, verify and run the MNIST MLP's graph",
    after_help = "Takes no flags: the shared training flags of the other examples do not apply."
)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let Cli {} = clap::Parser::parse();
    aotgrad::cli::args::exit_code(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let g = GraphBuilder::new("mnist_mlp_ce");
    let x = g.input("x", DType::F32, shape!["N", 784]);
    let labels = g.input("labels", DType::I64, shape!["N"]);
    let mut h = x;
    let layers = [("fc1", 784, 256), ("fc2", 256, 64), ("fc3", 64, 10)];
    for (i, (name, fan_in, fan_out)) in layers.into_iter().enumerate() {
        let w = g.param(
            &format!("{name}.weight"),
            DType::F32,
            shape![fan_out, fan_in],
        );
        let b = g.param(&format!("{name}.bias"), DType::F32, shape![fan_out]);
        h = h.linear(w, Some(b));
        if i + 1 < layers.len() {
            h = h.relu();
        }
    }
    let logp = h.log_softmax(1);
    let nll = -(logp.gather(1, labels.unsqueeze(1)).mean_all());
    let accuracy = h.argmax(1, false).equal(labels).to(DType::F32).mean_all();
    g.output("loss", nll);
    g.output("accuracy", accuracy);
    let graph = g.finish()?;

    let text = aotgrad::text::print(&graph);
    println!("{text}");
    let reparsed = aotgrad::text::parse(&text)?;
    assert_eq!(reparsed, graph, "print/parse round trip");
    aotgrad::verify(&reparsed)?;
    println!("{} nodes; round trip and verification ok", graph.len());

    let mut seed = 42u64;
    let mut feeds: HashMap<String, Tensor> = HashMap::new();
    for (name, id) in graph.params() {
        let dims = graph
            .ty(id)
            .shape
            .as_known()
            .expect("params have static shapes");
        let n: usize = dims.iter().product();
        let scale = 1.0 / (dims.last().copied().unwrap_or(1) as f32).sqrt();
        let vals: Vec<f32> = (0..n).map(|_| 2.0 * scale * lcg(&mut seed)).collect();
        feeds.insert(name.to_string(), Tensor::from_f32(&vals, &dims)?);
    }
    for batch in [4usize, 3] {
        let xs: Vec<f32> = (0..batch * 784).map(|_| lcg(&mut seed) + 0.5).collect();
        let ys: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
        feeds.insert("x".into(), Tensor::from_f32(&xs, &[batch, 784])?);
        feeds.insert("labels".into(), Tensor::from_i64(&ys, &[batch])?);
        let out = aotgrad::run(&graph, &feeds)?;
        let loss = out
            .output("loss")
            .and_then(Tensor::item)
            .unwrap_or(f64::NAN);
        let acc = out
            .output("accuracy")
            .and_then(Tensor::item)
            .unwrap_or(f64::NAN);
        println!("batch {batch}: loss {loss:.4} accuracy {acc:.2}");
        // Random weights on 10 classes: the loss is near ln(10) = 2.30.
        assert!((1.0..4.0).contains(&loss), "loss {loss}");
    }
    println!("final: nodes={} ok=true", graph.len());
    Ok(())
}

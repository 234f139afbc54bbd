//! The GPU backend (wgpu, WGSL) against the interpreter.

use std::collections::HashMap;

use aotgrad::prelude::*;
use aotgrad::runtime::gpu;

fn gpu_on() -> bool {
    gpu::available_for_tests().expect("a GPU adapter")
}

#[test]
fn adapter_runs_a_fused_kernel() {
    if !gpu_on() {
        return;
    }
    eprintln!("adapter: {}", gpu::context().unwrap().describe());
    let g = GraphBuilder::new("relu");
    let x = g.input("x", DType::F32, Shape::known(&[2, 3]));
    g.output("y", (x * 2.0).relu());
    let graph = g.finish().unwrap();
    let mut feeds = HashMap::new();
    feeds.insert(
        "x".to_string(),
        Tensor::from_f32(&[-1.0, 0.5, 2.0, -3.0, 4.0, 0.0], &[2, 3]).unwrap(),
    );
    let ev = gpu::run_once(&graph, &feeds).unwrap();
    assert_eq!(
        ev.output("y").unwrap(),
        &Tensor::from_f32(&[0.0, 1.0, 4.0, 0.0, 8.0, 0.0], &[2, 3]).unwrap()
    );
}

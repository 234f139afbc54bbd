// Shared model definitions for the integration tests (included with `mod`).
#![allow(dead_code)]

use aotgrad::prelude::*;

/// Linear regression: `Linear(1,1)` with MSE (sum) on a symbolic batch.
pub fn linreg() -> Graph {
    let g = GraphBuilder::new("linreg");
    let x = g.input("x", DType::F32, shape!["N", 1]);
    let y = g.input("y", DType::F32, shape!["N", 1]);
    let w = g.param("linear.weight", DType::F32, shape![1, 1]);
    let b = g.param("linear.bias", DType::F32, shape![1]);
    let pred = x.linear(w, Some(b));
    g.output("pred", pred);
    g.output("loss", (pred - y).square().sum_all());
    g.finish().unwrap()
}

/// The MNIST MLP forward pass 784-256-64-10 with ReLU.
pub fn mnist_mlp_forward() -> Graph {
    let g = GraphBuilder::new("mnist_mlp");
    let x = g.input("x", DType::F32, shape!["N", 1, 28, 28]);
    let mut h = x.reshape(&[-1, 784]);
    let dims = [(784, 256), (256, 64), (64, 10)];
    for (i, (fan_in, fan_out)) in dims.into_iter().enumerate() {
        let w = g.param(
            &format!("fc{}.weight", i + 1),
            DType::F32,
            shape![fan_out, fan_in],
        );
        let b = g.param(&format!("fc{}.bias", i + 1), DType::F32, shape![fan_out]);
        h = h.linear(w, Some(b));
        if i < 2 {
            h = h.relu();
        }
    }
    g.output("logits", h);
    g.finish().unwrap()
}

/// The first `n` rows of a batch tensor (a short last batch).
pub fn take_rows(t: &Tensor, n: usize) -> Tensor {
    let row: usize = t.shape()[1..].iter().product();
    let mut shape = t.shape().to_vec();
    shape[0] = n;
    let data = match t.data() {
        aotgrad::ir::Data::F32(v) => aotgrad::ir::Data::F32(v[..n * row].to_vec()),
        aotgrad::ir::Data::I64(v) => aotgrad::ir::Data::I64(v[..n * row].to_vec()),
        d => panic!("unexpected {:?}", d.dtype()),
    };
    Tensor::new(&shape, data).unwrap()
}

//! Snapshots of the printed IR of DSL programs. Bless with `INSTA_UPDATE=always` or
//! `cargo insta review`.

use crate::common_models;

use aotgrad::compiler::{Seed, grad};
use aotgrad::nn;
use aotgrad::prelude::*;
use aotgrad::text;

#[test]
fn linreg_ir() {
    insta::assert_snapshot!(text::print(&common_models::linreg()));
}

#[test]
fn mnist_mlp_forward_ir() {
    insta::assert_snapshot!(text::print(&common_models::mnist_mlp_forward()));
}

#[test]
fn printed_ir_parses_back_identically() {
    for g in [common_models::linreg(), common_models::mnist_mlp_forward()] {
        let s = text::print(&g);
        let back = text::parse(&s).unwrap();
        assert_eq!(back, g);
        assert_eq!(text::print(&back), s);
    }
}

/// The joint (forward + gradient) graph of linear regression: what autodiff appends.
#[test]
fn linreg_joint_gradient_ir() {
    let joint = grad(
        &common_models::linreg(),
        &[("loss", Seed::Auto)],
        &["linear.weight", "linear.bias"],
    )
    .unwrap();
    insta::assert_snapshot!(text::print(&joint));
}

/// The MNIST MLP with MSE on one-hot targets (the seed program's loss), differentiated
/// with respect to all six parameters.
#[test]
fn mnist_mlp_mse_joint_gradient_ir() {
    let fwd = common_models::mnist_mlp_forward();
    let b = GraphBuilder::from_graph(fwd.clone());
    let logits = b.var(fwd.output("logits").unwrap()).unwrap();
    let labels = b.input("labels", DType::I64, shape!["N"]);
    let target = labels.one_hot(10).cast(DType::F32);
    b.output("loss", nn::mse_loss(logits, target, nn::Reduction::Mean));
    let fwd = b.finish().unwrap();
    let params: Vec<String> = fwd.params().map(|(n, _)| n.to_string()).collect();
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    let joint = grad(&fwd, &[("loss", Seed::Auto)], &params).unwrap();
    let s = text::print(&joint);
    assert_eq!(text::parse(&s).unwrap(), joint);
    insta::assert_snapshot!(s);
}

/// The whole compiled training step of linear regression (forward, MSE, backward, SGD
/// with momentum): one graph whose updates write the parameters and the momentum state.
#[test]
fn linreg_sgd_momentum_training_step_ir() {
    let model = nn::Sequential::new().push_named("linear", nn::Linear::new(1, 1));
    let step = Trainer::new(
        model,
        Loss::mse(Reduction::Sum),
        Optimizer::sgd_momentum(0.01, 0.9),
    )
    .name("linreg")
    .input(DType::F32, &[1])
    .target(DType::F32, &[1])
    .compile(&Backend::Interpreter)
    .unwrap();
    let s = text::print(step.step_graph());
    assert_eq!(text::parse(&s).unwrap(), *step.step_graph());
    insta::assert_snapshot!(s);
}

//! Snapshots of the printed IR of DSL programs. Bless with `INSTA_UPDATE=always` or
//! `cargo insta review`.

mod common_models;

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

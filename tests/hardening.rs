//! Regression tests for what a fuzzing harness found (issue 26): sizes that wrapped,
//! kernels that panicked inside JIT code, backends that disagreed with the interpreter.
//! Each test names the reproducer it pins down; every one failed before its fix.

use std::collections::HashMap;

use aotgrad::ir::{Conv2dOptions, Pool2dOptions};
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};
use aotgrad::{RunError, text};

fn parse_err(src: &str) -> String {
    text::parse(src).unwrap_err().to_string()
}

fn feeds(items: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    items
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

/// `unfold` with a dilation of 2^63: the dilated span `d * (k - 1) + 1` wrapped to 1, so
/// the node verified as `u8[1,3,1,4]` and the CPU JIT read far outside the input.
#[test]
fn a_dilation_that_overflows_the_window_span_is_refused() {
    let e = parse_err(
        "graph g {\n  %0: u8[1,4] = input \"x\"\n  \
         %1: u8[1,3,1,4] = unfold %0 {kernel=[1, 3], stride=[1, 1], dilation=[1, 9223372036854775808]}\n  \
         output \"y\" = %1\n}",
    );
    assert!(e.starts_with("3:"), "{e}");
    assert!(e.contains("does not fit in 1x4"), "{e}");
}

/// `pad` of `f32[2]` by `2^64 - 1` wrapped to `f32[1]`; `concat` of `f32[2^64 - 1]` and
/// `f32[2]` too.
#[test]
fn padding_and_concatenation_sizes_are_checked() {
    let e = parse_err(
        "graph g {\n  %0: f32[2] = input \"x\"\n  \
         %1: f32[1] = pad %0 {pads=[[18446744073709551615, 0]], value=f32:0.0}\n  \
         output \"y\" = %1\n}",
    );
    assert!(
        e.contains("padding overflows: axis 0: 2 + 18446744073709551615 + 0"),
        "{e}"
    );
    let e = parse_err(
        "graph g {\n  %0: f32[18446744073709551615] = input \"x\"\n  \
         %1: f32[2] = input \"z\"\n  %2: f32[1] = concat %0, %1 {axis=0}\n  \
         output \"y\" = %2\n}",
    );
    assert!(e.starts_with("2:"), "the 2^64-element input itself: {e}");
    assert!(e.contains("MAX_TENSOR_BYTES"), "{e}");
    // Within the limit, a pad that passes it is refused as too large.
    let g = GraphBuilder::new("g");
    let x = g.input("x", DType::F32, shape![2]);
    g.output("y", x.pad(&[(1 << 38, 0)], 0.0));
    let e = g.finish().unwrap_err().to_string();
    assert!(e.starts_with("`pad` at tests/hardening.rs:"), "{e}");
    assert!(
        e.contains(
            "f32[274877906946] needs 1099511627784 bytes, more than the 1099511627776 bytes"
        ),
        "{e}"
    );
}

/// `f32[99999999999,99999999999]` verified and the interpreter tried to allocate it,
/// aborting the process.
#[test]
fn a_declared_tensor_past_the_byte_limit_is_refused_before_allocation() {
    let e = parse_err(
        "graph g {\n  %0: f32[99999999999,99999999999] = input \"x\"\n  output \"y\" = %0\n}",
    );
    assert!(e.starts_with("2:"), "{e}");
    assert!(
        e.contains("f32[99999999999,99999999999] needs 39999999999200000000004 bytes"),
        "{e}"
    );
    let g = GraphBuilder::new("g");
    let x = g.input(
        "x",
        DType::F32,
        shape!["N", 99999999999usize, 99999999999usize],
    );
    g.output("y", x);
    assert!(g.finish().is_err());
}

/// A symbolic type within the limit can pass it once bound: `expand` of `f32[N,1]` to
/// `f32[N,2^30]` with `N = 1024` is 4 TiB. Every backend refuses it, naming the node,
/// before allocating anything.
#[test]
fn a_bound_size_past_the_limit_is_refused_by_every_executor() {
    let g = GraphBuilder::new("g");
    let x = g.input("x", DType::F32, shape!["N", 1]);
    g.output("y", x.expand(&[-1, 1 << 30]).sum_all());
    let graph = g.finish().unwrap();
    let f = feeds(&[("x", Tensor::from_f32(&[1.0; 1024], &[1024, 1]).unwrap())]);
    let check = |e: RunError, who: &str| {
        let RunError::TooLarge { node, op, error } = &e else {
            panic!("{who}: {e:?}");
        };
        assert_eq!((node.index(), *op), (1, "expand"), "{who}");
        assert_eq!(error.bytes, 4 << 40, "{who}");
        assert!(e.to_string().contains("f32[1024,1073741824] needs"), "{e}");
    };
    check(aotgrad::run(&graph, &f).unwrap_err(), "interpreter");
    check(
        cpu::run_once(&graph, &f, CpuOptions::default()).unwrap_err(),
        "cpu",
    );
    // The same graph with a small batch runs.
    let f = feeds(&[("x", Tensor::from_f32(&[1.0; 2], &[2, 1]).unwrap())]);
    let g = GraphBuilder::new("g");
    let x = g.input("x", DType::F32, shape!["N", 1]);
    g.output("y", x.expand(&[-1, 4]).sum_all());
    let small = g.finish().unwrap();
    assert_eq!(
        aotgrad::run(&small, &f).unwrap().outputs[0].1.item(),
        Some(8.0)
    );
}

/// Tensors whose shape product wraps cannot be built, so they cannot reach an executor.
#[test]
fn tensor_constructors_check_the_shape_product() {
    let e = Tensor::new(
        &[2305843009213693953, 8],
        aotgrad::ir::Data::F32(vec![0.0; 8]),
    );
    assert!(e.is_err(), "{e:?}");
    let e = Tensor::from_le_bytes(DType::F32, &[4611686018427387904], &[]);
    assert!(e.is_err(), "{e:?}");
    assert!(Tensor::from_le_bytes(DType::F32, &[2], &[0; 8]).is_ok());
}

/// Every window op of the DSL with extreme kernels, strides, paddings, dilations and
/// output sizes: an error or a graph, never a panic (the test profile checks overflow,
/// so an unchecked product that would wrap in release panics here).
#[test]
fn window_ops_with_extreme_parameters_never_panic() {
    const V: [usize; 8] = [0, 1, 2, 3, 1 << 20, 1 << 40, 1 << 62, usize::MAX];
    let (mut built, mut refused) = (0, 0);
    for (i, &a) in V.iter().enumerate() {
        for &b in &V[i % 3..] {
            for ceil in [false, true] {
                for op in 0..7 {
                    let r = std::panic::catch_unwind(|| {
                        let g = GraphBuilder::new("w");
                        let x = g.input("x", DType::F32, shape!["N", 2, 5, 6]);
                        let w = g.param("w", DType::F32, shape![2, 2, 3, 3]);
                        let o = Pool2dOptions::new([a, 2])
                            .stride([b, 1])
                            .padding([a.min(b), 0])
                            .dilation([1, b])
                            .ceil_mode(ceil)
                            .divisor_override(Some(b));
                        let conv = Conv2dOptions::default()
                            .stride([a, 1])
                            .padding([b, 1])
                            .dilation([1, a])
                            .groups(b);
                        let y = match op {
                            0 => x.max_pool2d_with_indices(o).1,
                            1 => x.avg_pool2d(o),
                            2 => x.adaptive_avg_pool2d([a, b]),
                            3 => x.conv2d(w, None, conv),
                            4 => x.unfold2d([a, 1], [b, 1], [a.min(b), 0], [1, b]),
                            5 => x.windows2d([a, 2], [b, 1], [1, a]),
                            _ => x.reshape(&[-1, 2, 30]).fold2d(
                                [a, b],
                                [1, 1],
                                [1, a],
                                [0, b],
                                [1, 1],
                            ),
                        };
                        g.output("y", y);
                        g.finish().is_ok()
                    });
                    match r {
                        Ok(true) => built += 1,
                        Ok(false) => refused += 1,
                        Err(_) => panic!("op {op} panicked with a={a} b={b} ceil={ceil}"),
                    }
                }
            }
        }
    }
    assert!(
        built > 20 && refused > 200,
        "{built} built, {refused} refused"
    );
}

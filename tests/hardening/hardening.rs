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
    assert!(
        e.starts_with("`pad` at tests/hardening/hardening.rs:"),
        "{e}"
    );
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

/// Runs `graph` on the interpreter, the CPU JIT (1 and 2 threads) and, when an adapter
/// exists, the GPU; every output must be bitwise the interpreter's.
fn assert_backends_agree(graph: &Graph, f: &HashMap<String, Tensor>, what: &str) {
    assert_agree(graph, f, what, true)
}

/// [`assert_backends_agree`], the GPU left out when `gpu` is false (WGSL lets an
/// implementation ignore the sign of a zero, so `0.0 + x` may be compiled to `x`).
fn assert_agree(graph: &Graph, f: &HashMap<String, Tensor>, what: &str, gpu: bool) {
    let want = aotgrad::run(graph, f).unwrap();
    let mut runs = vec![];
    for threads in [1, 2] {
        let opts = CpuOptions {
            threads,
            ..Default::default()
        };
        runs.push((
            format!("cpu/{threads}"),
            cpu::run_once(graph, f, opts).unwrap(),
        ));
    }
    if gpu
        && aotgrad::runtime::gpu::available_for_tests()
            .expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
    {
        runs.push((
            "gpu".into(),
            aotgrad::runtime::gpu::run_once(graph, f).unwrap(),
        ));
    }
    for (who, got) in runs {
        for (name, t) in &want.outputs {
            let g = got.output(name).unwrap();
            assert_eq!(
                (
                    t.shape(),
                    t.to_f64_vec()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                ),
                (
                    g.shape(),
                    g.to_f64_vec()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                ),
                "{what}: {name} on {who}: want {t}, got {g}"
            );
        }
    }
}

/// The interpreter's out-of-range index error; the CPU JIT's must equal it, and the
/// GPU's (when an adapter exists) be one too.
fn assert_index_error_everywhere(
    graph: &Graph,
    f: &HashMap<String, Tensor>,
    what: &str,
) -> RunError {
    let want = aotgrad::run(graph, f).unwrap_err();
    assert!(
        matches!(want, RunError::IndexOutOfRange { .. }),
        "{what}: {want}"
    );
    let got = cpu::run_once(graph, f, CpuOptions::default()).unwrap_err();
    assert_eq!(got, want, "{what}");
    if aotgrad::runtime::gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
    {
        let got = aotgrad::runtime::gpu::run_once(graph, f).unwrap_err();
        assert_eq!(got, want, "{what} on the GPU");
    }
    want
}

/// `scatter_add` of `true` into `true` stored the byte 2 on the CPU backend (2.0 after a
/// cast to f32, and `eq` with `true` failed); bool addition is logical or everywhere.
#[test]
fn bool_scatter_add_is_logical_or_on_every_backend() {
    // One value per row along the last axis (the fused select path) and a general
    // scatter (the library kernel).
    for (idx_shape, idx) in [
        ([2usize, 1usize], vec![1i64, 2]),
        ([2, 2], vec![1, 1, 0, 2]),
    ] {
        let g = GraphBuilder::new("g");
        let x = g.input("x", DType::Bool, shape![2, 3]);
        let i = g.input("i", DType::I64, shape![idx_shape[0], idx_shape[1]]);
        let s = g.input("s", DType::Bool, shape![idx_shape[0], idx_shape[1]]);
        let y = x.scatter_add(1, i, s);
        g.output("as_f32", y.cast(DType::F32));
        g.output(
            "is_true",
            y.equal(g.full(1.0, DType::Bool, shape![2, 3]))
                .cast(DType::F32),
        );
        let graph = g.finish().unwrap();
        let n = idx.len();
        let f = feeds(&[
            (
                "x",
                Tensor::new(&[2, 3], aotgrad::ir::Data::Bool(vec![true; 6])).unwrap(),
            ),
            ("i", Tensor::from_i64(&idx, &idx_shape).unwrap()),
            (
                "s",
                Tensor::new(&idx_shape, aotgrad::ir::Data::Bool(vec![true; n])).unwrap(),
            ),
        ]);
        let want = aotgrad::run(&graph, &f).unwrap();
        assert_eq!(want.output("as_f32").unwrap().to_f64_vec(), [1.0; 6]);
        assert_eq!(want.output("is_true").unwrap().to_f64_vec(), [1.0; 6]);
        assert_backends_agree(
            &graph,
            &f,
            &format!("bool scatter_add, index {idx_shape:?}"),
        );
    }
}

/// `argmin` over `f32[4,0]` along its non-empty axis panicked inside the native kernel
/// ("chunk size must be non-zero") and, called from JIT code, aborted the process.
#[test]
fn arg_reductions_over_empty_tensors_run_on_every_backend() {
    for (shape, axis) in [
        ([4usize, 0usize], 0usize),
        ([0, 4], 1),
        ([0, 4], 0),
        ([4, 0], 1),
        ([3, 0], 1),
    ] {
        for keepdim in [false, true] {
            let g = GraphBuilder::new("g");
            let x = g.input("x", DType::F32, shape![shape[0], shape[1]]);
            if shape[axis] == 0 {
                // PyTorch refuses an arg-reduction over an empty axis; so does the DSL.
                g.output("y", x.argmin(axis as i64, keepdim));
                let e = g.finish().unwrap_err().to_string();
                assert!(e.contains("to have non-zero size"), "{e}");
                // The primitive defines index 0 there (what a symbolic axis bound to 0
                // gets), the same on every backend.
                let graph = text::parse(&format!(
                    "graph g {{\n  %0: f32[{},{}] = input \"x\"\n  \
                     %1: i64[{}] = argmin %0 {{axis={axis}, keepdim=false}}\n  \
                     output \"y\" = %1\n}}",
                    shape[0],
                    shape[1],
                    shape[1 - axis]
                ))
                .unwrap();
                let f = feeds(&[("x", Tensor::from_f32(&[], &shape).unwrap())]);
                let want = aotgrad::run(&graph, &f).unwrap();
                assert_eq!(want.outputs[0].1.to_f64_vec(), vec![0.0; shape[1 - axis]]);
                assert_backends_agree(&graph, &f, &format!("argmin {shape:?} axis {axis}"));
                continue;
            }
            g.output("min", x.argmin(axis as i64, keepdim));
            g.output("max", x.argmax(axis as i64, keepdim));
            let graph = g.finish().unwrap();
            let f = feeds(&[("x", Tensor::from_f32(&[], &shape).unwrap())]);
            assert_backends_agree(&graph, &f, &format!("argmin {shape:?} axis {axis}"));
        }
    }
}

/// A `gather` whose only user is an empty `slice` made the CPU code generator panic
/// ("every checked node was emitted"): the empty loop had no index to check.
#[test]
fn a_gather_read_only_through_an_empty_slice_compiles() {
    let graph = text::parse(
        "graph g {\n  %0: f32[3,4] = input \"x\"\n  %1: i64[3,1] = input \"i\"\n  \
         %2: f32[3,1] = gather %0, %1 {axis=1}\n  \
         %3: f32[0,1] = slice %2 {ranges=[1:1:1, :]}\n  output \"y\" = %3\n}",
    )
    .unwrap();
    let f = feeds(&[
        ("x", Tensor::from_f32(&[0.0; 12], &[3, 4]).unwrap()),
        ("i", Tensor::from_i64(&[0, 1, 9], &[3, 1]).unwrap()),
    ]);
    // The gather is live: its bad index 9 is an error on every backend, although the
    // empty slice reads none of its elements (a fused gather would check only what
    // the view reads; the lowering stores a gather under a partial view whole).
    let want = assert_index_error_everywhere(&graph, &f, "gather under an empty slice");
    assert!(
        matches!(want, RunError::IndexOutOfRange { index: 9, .. }),
        "{want}"
    );
    // With good indices all agree, and the same holds for a slice that reads a part.
    let f = feeds(&[
        ("x", Tensor::from_f32(&[0.0; 12], &[3, 4]).unwrap()),
        ("i", Tensor::from_i64(&[0, 1, 3], &[3, 1]).unwrap()),
    ]);
    assert_backends_agree(&graph, &f, "gather under an empty slice");
    let part = text::parse(
        "graph g {\n  %0: f32[3,4] = input \"x\"\n  %1: i64[3,1] = input \"i\"\n  \
         %2: f32[3,1] = gather %0, %1 {axis=1}\n  \
         %3: f32[1,1] = slice %2 {ranges=[0:1:1, :]}\n  output \"y\" = %3\n}",
    )
    .unwrap();
    let bad = feeds(&[
        ("x", Tensor::from_f32(&[0.0; 12], &[3, 4]).unwrap()),
        ("i", Tensor::from_i64(&[0, 1, 9], &[3, 1]).unwrap()),
    ]);
    assert!(aotgrad::run(&part, &bad).is_err());
    assert!(cpu::run_once(&part, &bad, CpuOptions::default()).is_err());
    assert_backends_agree(&part, &f, "gather under a partial slice");
}

/// A dead `gather` (no output or update reads it) with an out-of-range index failed on
/// the interpreter, which evaluated every node, and ran on the compiled backends, which
/// never evaluate it. Dead nodes are evaluated nowhere now; a live gather read only in
/// part is checked whole everywhere (above).
#[test]
fn a_dead_gather_with_a_bad_index_is_not_an_error_anywhere() {
    let graph = text::parse(
        "graph g {\n  %0: f32[3,4] = input \"x\"\n  %1: i64[3,1] = input \"i\"\n  \
         %2: f32[3,1] = gather %0, %1 {axis=1}\n  \
         %3: f32[3,4] = scatter_add %0, %1, %2 {axis=1}\n  \
         %4: f32[] = sum %0 {axes=[0, 1], keepdim=false}\n  output \"y\" = %4\n}",
    )
    .unwrap();
    let f = feeds(&[
        ("x", Tensor::from_f32(&[1.0; 12], &[3, 4]).unwrap()),
        ("i", Tensor::from_i64(&[0, 1, 9], &[3, 1]).unwrap()),
    ]);
    assert_eq!(
        aotgrad::run(&graph, &f).unwrap().outputs[0].1.item(),
        Some(12.0)
    );
    assert_backends_agree(&graph, &f, "dead gather and scatter_add");
}

/// 50 000 nested `[` in an attribute overflowed the parser's stack.
#[test]
fn deeply_nested_attribute_lists_are_an_error() {
    let src = format!(
        "graph g {{\n  %0: f32[2] = input \"x\"\n  %1: f32[2] = permute %0 {{perm={}}}\n}}",
        "[".repeat(50_000)
    );
    let e = parse_err(&src);
    assert_eq!(e, "3:41: attribute lists nest at most 8 deep");
    // The deepest lists an op uses still parse.
    text::parse(
        "graph g {\n  %0: f32[2] = input \"x\"\n  \
         %1: f32[4] = pad %0 {pads=[[1, 1]], value=f32:0.0}\n  output \"y\" = %1\n}",
    )
    .unwrap();
}

/// `sum {axes=[]}` of `-0.0` then `recip` gave `+inf` at O0 and `-inf` at O2: the
/// simplifier dropped the sum (`0.0 + -0.0` is `+0.0`), and `x + 0.0 -> x` did the same.
/// O2 is bitwise O0 now, on every backend.
#[test]
fn o2_keeps_the_sign_of_a_zero() {
    use aotgrad::compiler::passes::{self, OptLevel};
    let graph = text::parse(
        "graph g {\n  %0: f32[3] = input \"x\"\n  \
         %1: f32[3] = sum %0 {axes=[], keepdim=false}\n  %2: f32[3] = recip %1\n  \
         %3: f32[3] = const 0.0\n  %4: f32[3] = add %0, %3\n  %5: f32[3] = recip %4\n  \
         %6: f32[3,1] = reshape %0 {shape=[3, 1]}\n  \
         %7: f32[3] = sum %6 {axes=[1], keepdim=false}\n  %8: f32[3] = recip %7\n  \
         output \"sum\" = %2\n  output \"add\" = %5\n  output \"sum1\" = %8\n}",
    )
    .unwrap();
    let o2 = passes::optimize(&graph, OptLevel::O2).unwrap();
    let f = feeds(&[("x", Tensor::from_f32(&[-0.0, 0.0, -2.0], &[3]).unwrap())]);
    let at_o0 = aotgrad::run(&graph, &f).unwrap();
    for name in ["sum", "add", "sum1"] {
        assert_eq!(
            at_o0.output(name).unwrap().to_f64_vec(),
            [f64::INFINITY, f64::INFINITY, -0.5],
            "{name}"
        );
    }
    let at_o2 = aotgrad::run(&o2, &f).unwrap();
    assert_eq!(at_o2, at_o0, "O2:\n{}", text::print(&o2));
    // The CPU JIT keeps IEEE zeros; WGSL need not (llvmpipe folds `0.0 + x` to `x`).
    assert_agree(&o2, &f, "O2", false);
    assert_agree(&graph, &f, "O0", false);
}

/// Out-of-range indices into zero-size gathers and scatters are errors (or not) on
/// every backend alike, and an identity update (`update "w" = %w`) comes back in
/// `Evaluation::updates` on every backend, as on the interpreter.
#[test]
fn zero_size_indexing_and_identity_updates_agree_across_backends() {
    let cases = [
        // A gather from an empty axis: every index is out of range.
        (
            "%0: f32[3,0] = input \"x\"\n  %1: i64[3,1] = input \"i\"\n  \
             %2: f32[3,1] = gather %0, %1 {axis=1}\n  output \"y\" = %2",
            vec![0usize, 3, 0],
            vec![0i64, 0, 0],
            vec![3, 1],
            true,
        ),
        // A scatter into an empty axis.
        (
            "%0: f32[3,0] = input \"x\"\n  %1: i64[3,1] = input \"i\"\n  \
             %3: f32[3,1] = const 1.0\n  %2: f32[3,0] = scatter_add %0, %1, %3 {axis=1}\n  \
             output \"y\" = %2",
            vec![0, 3, 0],
            vec![5, 0, 0],
            vec![3, 1],
            true,
        ),
        // An empty index: nothing is read, whatever the values would be.
        (
            "%0: f32[3,4] = input \"x\"\n  %1: i64[0,1] = input \"i\"\n  \
             %2: f32[0,1] = gather %0, %1 {axis=1}\n  output \"y\" = %2",
            vec![12, 3, 4],
            vec![],
            vec![0, 1],
            false,
        ),
        (
            "%0: f32[3,4] = input \"x\"\n  %1: i64[0,1] = input \"i\"\n  \
             %3: f32[0,1] = const 1.0\n  %2: f32[3,4] = scatter_add %0, %1, %3 {axis=1}\n  \
             output \"y\" = %2",
            vec![12, 3, 4],
            vec![],
            vec![0, 1],
            false,
        ),
    ];
    for (body, xs, idx, is, fails) in cases {
        let graph = text::parse(&format!("graph g {{\n  {body}\n}}")).unwrap();
        let f = feeds(&[
            ("x", Tensor::from_f32(&vec![1.0; xs[0]], &xs[1..]).unwrap()),
            ("i", Tensor::from_i64(&idx, &is).unwrap()),
        ]);
        if fails {
            assert_index_error_everywhere(&graph, &f, body);
        } else {
            assert_backends_agree(&graph, &f, body);
        }
    }
    // Identity and real updates side by side.
    let graph = text::parse(
        "graph g {\n  %0: f32[2] = param \"w\"\n  %1: f32[2] = param \"v\"\n  \
         %2: f32[2] = neg %1\n  %3: f32[] = sum %0 {axes=[0], keepdim=false}\n  \
         output \"s\" = %3\n  update \"w\" = %0\n  update \"v\" = %2\n}",
    )
    .unwrap();
    let f = feeds(&[
        ("w", Tensor::from_f32(&[1.0, 2.0], &[2]).unwrap()),
        ("v", Tensor::from_f32(&[3.0, 4.0], &[2]).unwrap()),
    ]);
    let mut want = aotgrad::run(&graph, &f).unwrap().updates;
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(want.len(), 2);
    let mut runs = vec![(
        "cpu",
        cpu::run_once(&graph, &f, CpuOptions::default()).unwrap(),
    )];
    if aotgrad::runtime::gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
    {
        runs.push(("gpu", aotgrad::runtime::gpu::run_once(&graph, &f).unwrap()));
    }
    for (who, ev) in runs {
        let mut got = ev.updates;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want, "{who}");
    }
}

/// BCE on probabilities that are exactly 0 or 1 (a saturated f32 sigmoid) has PyTorch's
/// finite gradient `(x - y) / max((1 - x) x, 1e-12)`, not the NaN of the clamped logs'
/// autodiff (`0 * inf`), which used to turn every parameter into NaN in one step.
#[test]
fn bce_at_saturated_probabilities_has_a_finite_gradient() {
    let b = GraphBuilder::new("bce_edges");
    let p = b.param("p", DType::F32, shape![4]);
    let y = b.input("y", DType::F32, shape![4]);
    b.output(
        "loss",
        aotgrad::nn::binary_cross_entropy(p, y, None, Reduction::Sum),
    );
    let joint = aotgrad::compiler::grad(
        &b.finish().unwrap(),
        &[("loss", aotgrad::compiler::Seed::Auto)],
        &["p"],
    )
    .unwrap();
    let f = feeds(&[
        ("p", Tensor::from_f32(&[1.0, 0.0, 1.0, 0.25], &[4]).unwrap()),
        ("y", Tensor::from_f32(&[1.0, 0.0, 0.0, 1.0], &[4]).unwrap()),
    ]);
    for ev in [
        aotgrad::run(&joint, &f).unwrap(),
        cpu::run_once(&joint, &f, CpuOptions::default()).unwrap(),
    ] {
        let g = ev.output("p.grad").unwrap().to_f64_vec();
        // PyTorch: [0, 0, 1e12, -4] (the third is (1 - 0) / 1e-12).
        assert_eq!(&g[..2], &[0.0, 0.0], "{g:?}");
        assert!((g[2] / 1e12 - 1.0).abs() < 1e-6, "{g:?}");
        assert!((g[3] + 4.0).abs() < 1e-6, "{g:?}");
        // The loss is PyTorch's: log clamped at -100 for the impossible third element.
        let l = ev.output("loss").unwrap().item().unwrap();
        assert!((l - (100.0 + 4f64.ln())).abs() < 1e-4, "{l}");
    }
}

//! Every error path of the DSL, the parser and the CLI, with its message.

use aotgrad::prelude::*;
use aotgrad::text;

use crate::support;
use support::cli;

/// Builds with `f`, expecting an error; returns its message with the caller's line.
fn build_err(f: impl for<'g> FnOnce(&'g GraphBuilder) -> Var<'g>) -> String {
    let g = GraphBuilder::new("e");
    let v = f(&g);
    g.output("out", v);
    g.finish().unwrap_err().to_string()
}

/// Asserts a DSL error's message, and that its location is the line of this file
/// that holds the user's `call` (so `#[track_caller]` reached the user's code).
fn assert_err(e: &str, call: &str, op: &str, msg: &str) {
    let prefix = format!("`{op}` at tests/cli/errors.rs:");
    let rest = e
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{e:?} does not start with {prefix:?}"));
    let (line, rest) = rest.split_once(':').unwrap();
    let (col, rest) = rest.split_once(": ").unwrap();
    assert!(col.parse::<u32>().is_ok(), "column in {e}");
    assert_eq!(rest, msg);
    let src = include_str!("errors.rs");
    let text = src.lines().nth(line.parse::<usize>().unwrap() - 1).unwrap();
    assert!(
        text.contains(call),
        "{e}: line {line} is {text:?}, which lacks {call:?}"
    );
}

#[test]
fn dsl_shape_errors_name_op_types_and_line() {
    let e = build_err(|g| {
        let a = g.input("a", DType::F32, shape![2, 3]);
        let b = g.input("b", DType::F32, shape![4, 5]);
        a.matmul(b)
    });
    assert_err(
        &e,
        ".matmul(",
        "matmul",
        "matmul operands do not agree: f32[2,3] @ f32[4,5] (inner dims differ)",
    );

    let e =
        build_err(|g| g.input("a", DType::F32, shape![2, 3]) + g.input("b", DType::F32, shape![4]));
    assert_err(&e, " + ", "add", "shapes [2,3] and [4] do not broadcast");

    let e = build_err(|g| {
        g.input("a", DType::F32, shape!["N", 3]) * g.input("b", DType::F32, shape![5, 3])
    });
    assert_err(&e, " * ", "mul", "shapes [N,3] and [5,3] do not broadcast");

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).reshape(&[4, -1]));
    assert_err(
        &e,
        ".reshape(",
        "reshape",
        "cannot reshape [2,3] (6 elements) to [4, -1]: the other dims hold 4 elements, which do not divide it",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).reshape(&[5]));
    assert_err(
        &e,
        ".reshape(",
        "reshape",
        "cannot reshape [2,3] (6 elements) to [5] (5 elements)",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).sum(2, false));
    assert_err(&e, ".sum(", "sum", "axis 2 is out of range for f32[2,3]");

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).sum([0, -2], false));
    assert_err(&e, ".sum(", "sum", "axis 0 is repeated in [0, -2]");

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3, 4]).t());
    assert_err(
        &e,
        ".t()",
        "t",
        "t() expects a tensor of rank <= 2, got rank 3",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).permute(&[0, 0]));
    assert_err(
        &e,
        ".permute(",
        "permute",
        "[0, 0] is not a permutation of the axes of f32[2,3]",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).expand(&[4, 3]));
    assert_err(
        &e,
        ".expand(",
        "expand",
        "shapes [2,3] and [4,3] do not broadcast",
    );

    let e = build_err(|g| {
        g.input("a", DType::F32, shape![2, 3])
            .slice(1, Some(0), None, 0)
    });
    assert_err(&e, ".slice(", "slice", "slice step must be at least 1");

    let e = build_err(|g| {
        g.input("a", DType::F32, shape!["N", 3])
            .slice(0, Some(1), None, 1)
    });
    assert_err(
        &e,
        ".slice(",
        "slice",
        "dim 0 of f32[N,3] is symbolic; slice needs a known size there",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).select(1, 3));
    assert_err(
        &e,
        ".select(",
        "select",
        "index 3 is out of range for axis 1 of f32[2,3]",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2, 3]).pad(&[(-2, -2)], 0.0));
    assert_err(
        &e,
        ".pad(",
        "pad",
        "cropping -2,-2 removes more than the 3 elements of axis 1",
    );

    let e = build_err(|g| {
        g.cat(
            &[
                g.input("a", DType::F32, shape![2, 3]),
                g.input("b", DType::F32, shape![2, 4]),
            ],
            0,
        )
    });
    assert_err(
        &e,
        "g.cat(",
        "cat",
        "operand shapes differ: f32[2,3] vs f32[2,4]",
    );

    let e = build_err(|g| g.cat(&[], 0));
    assert_err(&e, "g.cat(", "cat", "cat needs at least one value");
}

#[test]
fn dsl_dtype_and_usage_errors() {
    let e = build_err(|g| g.input("a", DType::F32, shape![2]).logical_not());
    assert_err(
        &e,
        ".logical_not(",
        "not",
        "expected a bool operand, got f32[2]",
    );

    let e = build_err(|g| g.input("a", DType::I64, shape![2]).mean_all());
    assert_err(
        &e,
        ".mean_all(",
        "mean",
        "expected a floating-point operand, got i64[2]",
    );

    let e = build_err(|g| g.input("a", DType::F32, shape![2]).one_hot(3));
    assert_err(
        &e,
        ".one_hot(",
        "one_hot",
        "expected an integer class-index operand, got f32[2]",
    );

    let e = build_err(|g| {
        g.input("a", DType::F32, shape![2, 3])
            .gather(1, g.input("i", DType::F32, shape![2, 1]))
    });
    assert_err(
        &e,
        ".gather(",
        "gather",
        "expected an i32 or i64 index operand, got f32[2,1]",
    );

    let e = build_err(|g| {
        g.input("a", DType::F32, shape![2])
            .norm(3, Axes::All, false)
    });
    assert_err(
        &e,
        ".norm(",
        "norm",
        "norm order 3 is not supported (1 or 2)",
    );

    let e = build_err(|g| g.bernoulli(g.input("k", DType::I64, shape![]), 1.5, shape![3]));
    assert_err(
        &e,
        "g.bernoulli(",
        "bernoulli",
        "probability 1.5 is not in [0, 1]",
    );

    let e = build_err(|g| g.rand(g.input("k", DType::I32, shape![]), DType::F32, shape![3]));
    assert_err(
        &e,
        "g.rand(",
        "rand",
        "expected an i64[] key operand, got i32[]",
    );

    let e = build_err(|g| {
        let a = g.input("x", DType::F32, shape![2]);
        let b = g.param("x", DType::F32, shape![2]);
        a + b
    });
    assert_err(
        &e,
        "g.param(",
        "param",
        "name \"x\" is already used by another input, parameter, state or output",
    );

    let e = build_err(|g| {
        let a = g.input("x", DType::F32, shape![2]);
        g.update(a, a);
        a
    });
    assert_err(
        &e,
        "g.update(",
        "update",
        "update target %0 is a `input`, not a param or state",
    );
}

#[test]
fn only_the_first_error_is_reported() {
    let e = build_err(|g| {
        let a = g.input("a", DType::F32, shape![2, 3]);
        let bad = a.sum(5, false);
        // Everything downstream of a failed value is poisoned and stays quiet.
        (bad.matmul(a) + a.reshape(&[7])).relu()
    });
    assert_err(&e, ".sum(", "sum", "axis 5 is out of range for f32[2,3]");
}

fn parse_err(src: &str) -> String {
    text::parse(src).unwrap_err().to_string()
}

#[test]
fn parser_errors_point_at_line_and_column() {
    let cases: &[(&str, &str)] = &[
        ("grph g {}", "1:1: expected `graph`, found `grph`"),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n",
            "3:1: expected a node `%n: type = ...`, `output`, `update` or `}`, found end of input",
        ),
        (
            "graph g {\n  %0: f33[2] = input \"x\"\n}",
            "2:7: unknown dtype `f33`",
        ),
        (
            "graph g {\n  %0: f32[2] = frob %0\n}",
            "2:21: `%0` is used before it is defined",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %0: f32[2] = input \"y\"\n}",
            "3:3: `%0` is defined twice",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[2] = frob %0\n}",
            "3:16: unknown op `frob`",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[3] = exp %0\n}",
            "3:7: declared type f32[3] does not match the type of `exp`: f32[2]",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[] = sum %0 {keepdim=false}\n}",
            "3:15: missing attribute `axes`",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[] = sum %0 {axes=[0], keepdim=false, extra=1}\n}",
            "3:48: unknown attribute `extra` for `sum`",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[] = sum %0 {axes=[0], keepdim=maybe}\n}",
            "3:33: expected true or false, found `maybe`",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[] = sum %0 {axes=[0], axes=[0]}\n}",
            "3:33: attribute `axes` is given twice",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\n}",
            "2:22: unterminated string",
        ),
        (
            "graph g {\n  %0: f32[2] = input $x\n}",
            "2:22: unexpected character '$'",
        ),
        (
            "graph g {\n  %0: f32[3] = const [1.0, 2.0]\n}",
            "2:16: `const`: constant holds 2 f32 values but its type f32[3] needs 3",
        ),
        (
            "graph g {\n  %0: f32[] = const abc\n}",
            "2:21: `abc` is not a f32 value",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  update \"w\" = %0\n}",
            "3:10: no param or state named \"w\"",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  output \"y\" = %0\n  output \"y\" = %0\n}",
            "4:10: name \"y\" is already used",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: i64[2] = input \"i\"\n  %2: f32[2] = add %0, %1\n}",
            "4:16: `add`: operand dtypes differ: f32[2] vs i64[2]",
        ),
        (
            "graph g {\n  %0: f32[2] = input \"x\"\n  %1: f32[2] = exp %0, %0\n}",
            "3:16: `exp`: expected 1 operand(s), got 2",
        ),
        (
            "graph g {\n  %0 f32[2] = input \"x\"\n}",
            "2:6: expected `:` after the value, found `f32`",
        ),
        (
            "graph g {} trailing",
            "1:12: expected end of input, found `trailing`",
        ),
    ];
    let mut wrong = Vec::new();
    for (src, want) in cases {
        let got = parse_err(src);
        if &got != want {
            wrong.push(format!("{src:?}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn cli_errors() {
    let dir = std::env::temp_dir().join(format!("aotgrad-cli-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.ir");
    std::fs::write(&bad, "graph g {\n  %0: f32[2] = nope\n}\n").unwrap();
    let good = dir.join("good.ir");
    std::fs::write(
        &good,
        "graph g {\n  %0: f32[2] = input \"x\"\n  output \"y\" = %0\n}\n",
    )
    .unwrap();
    let b = bad.display().to_string();
    let gd = good.display().to_string();

    let (ok, _, err) = cli(&["check", &b]);
    assert!(!ok);
    assert_eq!(err, format!("error: {b}:2:16: unknown op `nope`\n"));

    let (ok, _, err) = cli(&["check", "/nonexistent/x.ir"]);
    assert!(!ok);
    assert!(err.starts_with("error: /nonexistent/x.ir: "), "{err}");

    let (ok, _, err) = cli(&["run", &gd, "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(
        err,
        format!("error: {gd}: no tensor was given for input \"x\" (f32[2])\n")
    );

    let (ok, _, err) = cli(&["run", &gd, "--input", "x", "--out", dir.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err, "error: --input \"x\": expected NAME=PATH.npy\n");

    let (ok, _, err) = cli(&[
        "run",
        &gd,
        "--input",
        "x=/nonexistent.npy",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.starts_with("error: --input x: /nonexistent.npy: "),
        "{err}"
    );

    let (ok, _, err) = cli(&["frobnicate"]);
    assert!(!ok);
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_check_fmt_and_run() {
    use aotgrad::runtime::npy;
    let dir = std::env::temp_dir().join(format!("aotgrad-cli-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prog.ir");
    std::fs::write(&file, "# a comment\ngraph g {\n  %0: f32[N,3] = input \"x\"   // trailing comment\n  %1: f32[N] = sum %0 {axes=[1], keepdim=false}\n  output \"s\" = %1\n}\n").unwrap();
    let f = file.display().to_string();
    let (ok, out, _) = cli(&["check", &f]);
    assert!(ok);
    assert_eq!(out, format!("{f}: ok (2 nodes)\n"));
    let (ok, out, _) = cli(&["fmt", &f]);
    assert!(ok);
    assert_eq!(
        out,
        "graph g {\n  %0: f32[N,3] = input \"x\"\n  %1: f32[N] = sum %0 {axes=[1], keepdim=false}\n  output \"s\" = %1\n}\n"
    );
    let x = dir.join("x.npy");
    npy::write_npy(
        &x,
        &Tensor::from_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap(),
    )
    .unwrap();
    let outdir = dir.join("out");
    let (ok, out, err) = cli(&[
        "run",
        &f,
        "--input",
        &format!("x={}", x.display()),
        "--out",
        outdir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("s: f32[2] [6.0, 15.0] -> "), "{out}");
    let s = npy::read_npy(&outdir.join("s.npy")).unwrap();
    assert_eq!(s.as_f32().unwrap(), &[6.0, 15.0]);
    std::fs::remove_dir_all(&dir).ok();
}

/// `aotgrad run --out` wrote `"a/b"` and `"a_b"` (and an output `"w.next"` and the
/// update of `w`) to one file, the second silently replacing the first.
#[test]
fn cli_run_refuses_outputs_that_share_a_file() {
    use aotgrad::runtime::npy;
    let dir = std::env::temp_dir().join(format!("aotgrad-cli-clash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = dir.join("x.npy");
    npy::write_npy(&x, &Tensor::from_f32(&[1., 2.], &[2]).unwrap()).unwrap();
    let xs = format!("x={}", x.display());
    let w = dir.join("w.npy");
    npy::write_npy(&w, &Tensor::from_f32(&[3., 4.], &[2]).unwrap()).unwrap();
    let ws = format!("w={}", w.display());
    let cases = [
        (
            "  %1: f32[2] = neg %0\n  output \"a/b\" = %0\n  output \"a_b\" = %1\n",
            "output \"a/b\" and output \"a_b\" would both be written to",
        ),
        (
            "  %1: f32[2] = neg %0\n  %2: f32[2] = param \"w\"\n  output \"w.next\" = %1\n  \
             update \"w\" = %0\n",
            "output \"w.next\" and the update of \"w\" would both be written to",
        ),
        (
            "  %1: f32[2] = neg %0\n  output \"Y\" = %0\n  output \"y\" = %1\n",
            "output \"Y\" and output \"y\" would both be written to",
        ),
    ];
    for (i, (body, msg)) in cases.iter().enumerate() {
        let file = dir.join(format!("clash{i}.ir"));
        std::fs::write(
            &file,
            format!("graph g {{\n  %0: f32[2] = input \"x\"\n{body}}}\n"),
        )
        .unwrap();
        let out = dir.join(format!("out{i}"));
        let mut args = vec!["run", file.to_str().unwrap(), "--input", &xs];
        if body.contains("param") {
            args.extend(["--input", &ws]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        let (ok, stdout, err) = cli(&args);
        assert!(!ok, "{stdout}");
        assert!(err.contains(msg), "{err}");
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    }
    std::fs::remove_dir_all(&dir).ok();
}

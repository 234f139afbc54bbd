//! `aotgrad grad` and `aotgrad gradcheck` on IR files.

use std::path::PathBuf;

use aotgrad::compiler::{Seed, grad};
use aotgrad::runtime::npy;
use aotgrad::{Tensor, text};

use crate::support;
use support::cli;

const SRC: &str = "graph f {
  %0: f64[3] = input \"x\"
  %1: i64[3] = input \"k\"
  %2: f64[3] = mul %0, %0
  %3: f64[3] = sin %2
  %4: f64[] = sum %3 {axes=[0], keepdim=false}
  output \"y\" = %4
  output \"v\" = %3
}
";

fn setup(tag: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("aotgrad-cli-grad-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("f.ir");
    std::fs::write(&f, SRC).unwrap();
    (dir, f.display().to_string())
}

#[test]
fn grad_prints_the_joint_graph() {
    let (dir, f) = setup("print");
    let (ok, out, err) = cli(&["grad", &f, "--wrt", "x"]);
    assert!(ok, "{err}");
    let want = grad(&text::parse(SRC).unwrap(), &[("y", Seed::Auto)], &["x"]).unwrap();
    assert_eq!(out, text::print(&want));
    assert_eq!(text::parse(&out).unwrap(), want);

    // An explicit cotangent on the non-scalar output.
    let seed = dir.join("seed.npy");
    npy::write_npy(&seed, &Tensor::from_f64(&[1.0, -2.0, 0.5], &[3]).unwrap()).unwrap();
    let (ok, out, err) = cli(&[
        "grad",
        &f,
        "--wrt",
        "x",
        "--seed",
        &format!("v={}", seed.display()),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("output \"x.grad\""), "{out}");
    assert!(out.contains("const [1.0, -2.0, 0.5]"), "{out}");
}

#[test]
fn grad_errors() {
    let (dir, f) = setup("errors");
    let (ok, _, err) = cli(&["grad", &f, "--wrt", "z"]);
    assert!(!ok);
    assert_eq!(
        err,
        format!(
            "error: {f}: no input, param, state or output named \"z\" to differentiate with respect to\n"
        )
    );
    let (ok, _, err) = cli(&["grad", &f, "--wrt", "k"]);
    assert!(!ok);
    assert!(
        err.contains("cannot differentiate with respect to \"k\": it is i64[3]"),
        "{err}"
    );
    let (ok, _, err) = cli(&["grad", &f, "--wrt", "x", "--of", "v"]);
    assert!(!ok);
    assert!(
        err.contains("output \"v\" is f64[3], not a scalar"),
        "{err}"
    );
    let seed = dir.join("bad_seed.npy");
    npy::write_npy(&seed, &Tensor::from_f64(&[1.0, 2.0], &[2]).unwrap()).unwrap();
    let (ok, _, err) = cli(&[
        "grad",
        &f,
        "--wrt",
        "x",
        "--seed",
        &format!("v={}", seed.display()),
    ]);
    assert!(!ok);
    assert!(
        err.contains("seed for \"v\" is 2 f64 values, but the output is f64[3]"),
        "{err}"
    );
}

#[test]
fn gradcheck_command_reports_and_fails_on_wrong_gradients() {
    let (dir, f) = setup("check");
    let x = dir.join("x.npy");
    npy::write_npy(&x, &Tensor::from_f64(&[0.3, -1.2, 2.0], &[3]).unwrap()).unwrap();
    let k = dir.join("k.npy");
    npy::write_npy(&k, &Tensor::from_i64(&[1, 2, 3], &[3]).unwrap()).unwrap();
    let xs = format!("x={}", x.display());
    let ks = format!("k={}", k.display());
    let (ok, out, err) = cli(&["gradcheck", &f, "--input", &xs, "--input", &ks]);
    assert!(ok, "{err}");
    assert!(out.lines().next().unwrap().starts_with("input"), "{out}");
    assert!(out.contains("passed: worst relative error"), "{out}");

    // A graph whose gradient path is cut by stop_gradient: forward unchanged, AD wrong.
    let cut = dir.join("cut.ir");
    std::fs::write(
        &cut,
        SRC.replace("%3: f64[3] = sin %2", "%3: f64[3] = stop_gradient %2"),
    )
    .unwrap();
    let cs = cut.display().to_string();
    let (ok, _, err) = cli(&[
        "gradcheck",
        &cs,
        "--input",
        &xs,
        "--input",
        &ks,
        "--wrt",
        "x",
    ]);
    assert!(!ok);
    assert!(err.contains("gradcheck failed"), "{err}");
}

/// `--eps 0`, `--eps nan`, `--eps 1e300` and a NaN input used to print `passed: worst
/// relative error 0.000e0` (`f64::max` dropped every NaN comparison).
#[test]
fn gradcheck_fails_on_nan_and_refuses_bad_settings() {
    let (dir, f) = setup("nan");
    let x = dir.join("x.npy");
    npy::write_npy(&x, &Tensor::from_f64(&[0.3, -1.2, 2.0], &[3]).unwrap()).unwrap();
    let nan = dir.join("nan.npy");
    npy::write_npy(
        &nan,
        &Tensor::from_f64(&[0.3, f64::NAN, 2.0], &[3]).unwrap(),
    )
    .unwrap();
    let k = dir.join("k.npy");
    npy::write_npy(&k, &Tensor::from_i64(&[1, 2, 3], &[3]).unwrap()).unwrap();
    let xs = format!("x={}", x.display());
    let ks = format!("k={}", k.display());
    let run = |x: &str, extra: &[&str]| {
        let mut args = vec!["gradcheck", &f, "--input", x, "--input", &ks];
        args.extend(extra);
        cli(&args)
    };
    for eps in ["0", "nan", "-1e-6", "inf"] {
        let (ok, out, err) = run(&xs, &["--eps", eps]);
        assert!(!ok, "--eps {eps}: {out}");
        assert!(
            err.contains("the step must be a finite number above 0"),
            "{err}"
        );
    }
    for tol in ["nan", "-1", "inf"] {
        let (ok, out, err) = run(&xs, &["--tol", tol]);
        assert!(!ok, "--tol {tol}: {out}");
        assert!(
            err.contains("the tolerance must be a finite number"),
            "{err}"
        );
    }
    // A huge step is a number, but every difference quotient is NaN or wildly off.
    let (ok, out, err) = run(&xs, &["--eps", "1e300"]);
    assert!(!ok, "{out}");
    assert!(err.contains("gradcheck failed"), "{err}");
    let ns = format!("x={}", nan.display());
    let (ok, out, err) = run(&ns, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("gradcheck failed: worst relative error NaN"),
        "{err}"
    );
    // The library refuses the step too.
    let g = text::parse(SRC).unwrap();
    let feeds = [
        (
            "x".to_string(),
            Tensor::from_f64(&[0.3, -1.2, 2.0], &[3]).unwrap(),
        ),
        ("k".to_string(), Tensor::from_i64(&[1, 2, 3], &[3]).unwrap()),
    ]
    .into();
    let opts = aotgrad::GradcheckOptions {
        eps: 0.0,
        ..Default::default()
    };
    let e = aotgrad::gradcheck(&g, &feeds, &["x"], opts).unwrap_err();
    assert!(matches!(e, aotgrad::GradcheckError::BadEps(_)), "{e}");
}

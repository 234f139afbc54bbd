//! One test file per primitive, Cranelift's filetests as the model: `tests/ops/<op>.ir`
//! holds a small graph in the IR text, with directives in `#` comments above it:
//!
//! ```text
//! # run: interp cpu gpu          backends (default: all three; the GPU skips without
//! #                              an adapter, see `available_for_tests`)
//! # input x = [1.0, -2.0]        a leaf's values, row-major (`# input n: [2,3] = ...`
//! #                              gives a symbolic leaf its shape)
//! # expect y = [1.0, 2.0]        an output's values on the interpreter: bit for bit,
//! # expect y = [...] tol 1e-6    or within a relative (and absolute) tolerance
//! # expect-error: IndexOutOfRange  every backend fails with this `RunError` kind
//! # cpu-tol: 1e-6                the CPU against the interpreter (default: bitwise)
//! # gpu-tol: 1e-4                the GPU against the interpreter (default 1e-4)
//! # gradcheck: x                 autodiff against central differences in f64
//! # torch: torch.log1p(x)        the PyTorch equivalent; with `# expect-from: torch`
//! #                              the expectations are PyTorch's (tools/gen_op_cases.py)
//! ```
//!
//! `AOTGRAD_BLESS=1 cargo test --test ops` rewrites the `# expect` lines from the
//! interpreter (never those that come from PyTorch); read the diff before committing.
//! `coverage` fails when a primitive (`aotgrad::ir::op::mnemonics`) has no file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aotgrad::ir::Data;
use aotgrad::prelude::*;
use aotgrad::runtime::cpu::{self, CpuOptions};
use aotgrad::{Evaluation, GradcheckOptions, RunError};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ops");

/// One parsed file.
struct Case {
    path: PathBuf,
    src: String,
    graph: Graph,
    run: Vec<String>,
    inputs: Vec<(String, Option<Vec<usize>>, Vec<String>)>,
    expect: Vec<(String, Vec<String>, Option<f64>)>,
    expect_error: Option<String>,
    cpu_tol: f64,
    gpu_tol: f64,
    gradcheck: Vec<String>,
    from_torch: bool,
}

/// The items of a `[a, b, c]` list, as written.
fn list(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_case(path: &Path) -> Case {
    let src = std::fs::read_to_string(path).unwrap();
    let graph = aotgrad::text::parse(&src).unwrap_or_else(|e| panic!("{}:{e}", path.display()));
    let mut c = Case {
        path: path.to_path_buf(),
        src: src.clone(),
        graph,
        run: vec!["interp".into(), "cpu".into(), "gpu".into()],
        inputs: vec![],
        expect: vec![],
        expect_error: None,
        cpu_tol: 0.0,
        gpu_tol: 1e-4,
        gradcheck: vec![],
        from_torch: false,
    };
    for line in src.lines() {
        let Some(d) = line.trim().strip_prefix('#') else {
            continue;
        };
        let d = d.trim();
        let (key, rest) = d.split_once(':').unwrap_or((d, ""));
        macro_rules! bad {
            () => {
                panic!("{}: bad directive {line:?}", path.display())
            };
        }
        if let Some(r) = d.strip_prefix("input ") {
            let (lhs, vals) = r.split_once('=').unwrap_or_else(|| bad!());
            let (name, shape) = match lhs.split_once(':') {
                Some((n, s)) => (
                    n.trim(),
                    Some(list(s).iter().map(|d| d.parse().unwrap()).collect()),
                ),
                None => (lhs.trim(), None),
            };
            c.inputs.push((name.to_string(), shape, list(vals)));
        } else if let Some(r) = d.strip_prefix("expect ") {
            let (name, rest) = r.split_once('=').unwrap_or_else(|| bad!());
            let (vals, tol) = match rest.split_once("tol") {
                Some((v, t)) => (v, Some(t.trim().parse().unwrap_or_else(|_| bad!()))),
                None => (rest, None),
            };
            c.expect.push((name.trim().to_string(), list(vals), tol));
        } else {
            match key.trim() {
                "run" => c.run = rest.split_whitespace().map(String::from).collect(),
                "expect-error" => c.expect_error = Some(rest.trim().to_string()),
                "cpu-tol" => c.cpu_tol = rest.trim().parse().unwrap_or_else(|_| bad!()),
                "gpu-tol" => c.gpu_tol = rest.trim().parse().unwrap_or_else(|_| bad!()),
                "gradcheck" => c.gradcheck = rest.split_whitespace().map(String::from).collect(),
                "expect-from" => c.from_torch = rest.trim() == "torch",
                _ => {}
            }
        }
    }
    c
}

/// A leaf's tensor from its declared type (or the directive's shape) and values.
fn tensor(g: &Graph, name: &str, shape: &Option<Vec<usize>>, vals: &[String]) -> Tensor {
    let id = g.find(name).unwrap_or_else(|| panic!("no leaf {name:?}"));
    let ty = g.ty(id);
    let dims = shape
        .clone()
        .or_else(|| ty.shape.as_known())
        .unwrap_or_else(|| panic!("{name} is symbolic: give `# input {name}: [dims] = ...`"));
    let f = |v: &String| -> f64 {
        match v.as_str() {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "true" => 1.0,
            "false" => 0.0,
            s => s
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {s:?} is not a value")),
        }
    };
    let data = match ty.dtype {
        DType::F32 => Data::F32(vals.iter().map(|v| f(v) as f32).collect()),
        DType::F64 => Data::F64(vals.iter().map(f).collect()),
        DType::I64 => Data::I64(vals.iter().map(|v| v.parse().unwrap()).collect()),
        DType::I32 => Data::I32(vals.iter().map(|v| v.parse().unwrap()).collect()),
        DType::U8 => Data::U8(vals.iter().map(|v| v.parse().unwrap()).collect()),
        DType::Bool => Data::Bool(vals.iter().map(|v| f(v) != 0.0).collect()),
    };
    Tensor::new(&dims, data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// An element as the files write it: Rust's shortest round-trip form.
fn show(t: &Tensor) -> String {
    let items: Vec<String> = match t.data() {
        Data::F32(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Data::F64(v) => v.iter().map(|x| format!("{x:?}")).collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        d => (0..d.len()).map(|i| d.get(i).to_string()).collect(),
    };
    format!("[{}]", items.join(", "))
}

/// Equal bit for bit (`tol` 0; NaN equals NaN), or within `tol` relative plus `tol`
/// absolute.
fn agree(a: &Tensor, b: &Tensor, tol: f64) -> Result<(), String> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(format!("{a} vs {b}"));
    }
    for (i, (x, y)) in a.to_f64_vec().iter().zip(b.to_f64_vec()).enumerate() {
        let ok = (x.is_nan() && y.is_nan())
            || (tol == 0.0 && x.to_bits() == y.to_bits())
            || (tol > 0.0 && (*x == y || (x - y).abs() <= tol * x.abs().max(y.abs()) + tol));
        if !ok {
            return Err(format!("element {i}: {x:?} vs {y:?}"));
        }
    }
    Ok(())
}

fn run_on(backend: &str, g: &Graph, f: &HashMap<String, Tensor>) -> Result<Evaluation, RunError> {
    match backend {
        "interp" => aotgrad::run(g, f),
        "cpu" => cpu::run_once(g, f, CpuOptions::default()),
        "cpu2" => cpu::run_once(
            g,
            f,
            CpuOptions {
                threads: 2,
                ..Default::default()
            },
        ),
        "gpu" => aotgrad::runtime::gpu::run_once(g, f),
        other => panic!("unknown backend {other:?}"),
    }
}

fn check(c: &Case) -> Result<Option<String>, String> {
    let name = c.path.file_name().unwrap().to_string_lossy().into_owned();
    let feeds: HashMap<String, Tensor> = c
        .inputs
        .iter()
        .map(|(n, s, v)| (n.clone(), tensor(&c.graph, n, s, v)))
        .collect();
    let gpu = aotgrad::runtime::gpu::available_for_tests()
        .expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)");
    let backends: Vec<&str> = c
        .run
        .iter()
        .map(String::as_str)
        .filter(|b| *b != "gpu" || gpu)
        .flat_map(|b| {
            if b == "cpu" {
                vec!["cpu", "cpu2"]
            } else {
                vec![b]
            }
        })
        .collect();
    if let Some(kind) = &c.expect_error {
        for b in &backends {
            match run_on(b, &c.graph, &feeds) {
                Ok(_) => return Err(format!("{name}: {b} ran; expected {kind}")),
                Err(e) if format!("{e:?}").starts_with(kind.as_str()) => {}
                Err(e) => return Err(format!("{name}: {b}: {e:?}, expected {kind}")),
            }
        }
        return Ok(None);
    }
    let want = run_on("interp", &c.graph, &feeds).map_err(|e| format!("{name}: interp: {e}"))?;
    let bless = std::env::var("AOTGRAD_BLESS").is_ok_and(|v| v == "1") && !c.from_torch;
    let mut blessed = c.src.clone();
    for (out, vals, tol) in &c.expect {
        let got = want
            .output(out)
            .ok_or_else(|| format!("{name}: no output {out:?}"))?;
        if bless {
            let old = format!("# expect {out} = [{}]", vals.join(", "));
            let new = format!("# expect {out} = {}", show(got));
            blessed = blessed.replacen(&old, &new, 1);
            continue;
        }
        let expected = tensor_like(got, vals).map_err(|e| format!("{name}: {out}: {e}"))?;
        agree(&expected, got, tol.unwrap_or(0.0))
            .map_err(|e| format!("{name}: interp {out}: {e} (expected {})", show(&expected)))?;
    }
    for b in backends.iter().filter(|b| **b != "interp") {
        let got = run_on(b, &c.graph, &feeds).map_err(|e| format!("{name}: {b}: {e}"))?;
        let tol = if *b == "gpu" { c.gpu_tol } else { c.cpu_tol };
        for (out, w) in &want.outputs {
            let g = got
                .output(out)
                .ok_or_else(|| format!("{name}: {b}: no {out}"))?;
            agree(w, g, tol).map_err(|e| format!("{name}: {b} {out}: {e}"))?;
        }
    }
    if !c.gradcheck.is_empty() {
        let wrt: Vec<&str> = c.gradcheck.iter().map(String::as_str).collect();
        let r = aotgrad::gradcheck(&c.graph, &feeds, &wrt, GradcheckOptions::default())
            .map_err(|e| format!("{name}: gradcheck: {e}"))?;
        if !r.passed(1e-5) {
            return Err(format!("{name}: gradcheck failed:\n{r}"));
        }
    }
    Ok((bless && blessed != c.src).then_some(blessed))
}

/// The expected values as a tensor of `like`'s dtype and shape.
fn tensor_like(like: &Tensor, vals: &[String]) -> Result<Tensor, String> {
    let f = |v: &String| -> f64 {
        match v.as_str() {
            "nan" | "NaN" => f64::NAN,
            "inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            "true" => 1.0,
            "false" => 0.0,
            s => s.parse().unwrap_or(f64::NAN),
        }
    };
    let data = match like.dtype() {
        DType::F32 => Data::F32(vals.iter().map(|v| f(v) as f32).collect()),
        DType::F64 => Data::F64(vals.iter().map(f).collect()),
        DType::I64 => Data::I64(vals.iter().map(|v| f(v) as i64).collect()),
        DType::I32 => Data::I32(vals.iter().map(|v| f(v) as i32).collect()),
        DType::U8 => Data::U8(vals.iter().map(|v| f(v) as u8).collect()),
        DType::Bool => Data::Bool(vals.iter().map(|v| f(v) != 0.0).collect()),
    };
    Tensor::new(like.shape(), data).map_err(|e| format!("expected values: {e} (bless?)"))
}

fn files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ir"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_op_file_passes() {
    let mut failures = Vec::new();
    let mut blessed = 0;
    for path in files() {
        let c = parse_case(&path);
        match check(&c) {
            Ok(Some(new)) => {
                std::fs::write(&path, new).unwrap();
                blessed += 1;
            }
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    if blessed > 0 {
        eprintln!("blessed {blessed} file(s) in tests/ops: read the diff");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn coverage_every_primitive_has_a_file() {
    let have: Vec<String> = files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<&str> = aotgrad::ir::op::mnemonics()
        .into_iter()
        .filter(|m| !have.iter().any(|h| h == m))
        .collect();
    assert!(missing.is_empty(), "no tests/ops/<op>.ir for {missing:?}");
    // And every file tests an op of its name.
    for path in files() {
        let c = parse_case(&path);
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            c.graph.nodes().any(|(_, n)| n.op.name() == stem),
            "{} has no `{stem}` node",
            path.display()
        );
    }
}

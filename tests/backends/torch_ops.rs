//! Differential test against PyTorch: every op case of `fixtures/torch/ops.json` is built
//! with the DSL, run on the reference interpreter, and compared with PyTorch's f32
//! output (and, where given, its extra outputs such as max indices).

use std::collections::HashMap;

use aotgrad::GradcheckOptions;
use aotgrad::compiler::{Seed, grad};
use aotgrad::ir::{Axes, BatchNorm, Conv2dOptions, Data, Operand, Pool2dOptions};
use aotgrad::nn;
use aotgrad::prelude::*;
use serde_json::Value;

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/torch/ops.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn dtype(s: &str) -> DType {
    DType::from_name(s).unwrap_or_else(|| panic!("fixture dtype {s}"))
}

fn tensor(rec: &Value, dt: DType) -> Tensor {
    let shape: Vec<usize> = rec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let vals = rec["data"].as_array().unwrap();
    let data = match dt {
        DType::F32 => Data::F32(vals.iter().map(|v| v.as_f64().unwrap() as f32).collect()),
        DType::F64 => Data::F64(vals.iter().map(|v| v.as_f64().unwrap()).collect()),
        DType::I64 => Data::I64(vals.iter().map(|v| v.as_i64().unwrap()).collect()),
        DType::Bool => Data::Bool(vals.iter().map(|v| v.as_bool().unwrap()).collect()),
        d => panic!("fixture dtype {d}"),
    };
    Tensor::new(&shape, data).unwrap()
}

fn axes(v: &Value) -> Axes {
    match v {
        Value::Null => Axes::All,
        Value::Number(n) => Axes::List(vec![n.as_i64().unwrap()]),
        Value::Array(a) => Axes::List(a.iter().map(|x| x.as_i64().unwrap()).collect()),
        v => panic!("bad dim {v}"),
    }
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The right operand: an input tensor or a Python number from kwargs.
fn operand<'g>(ins: &HashMap<&str, Var<'g>>, kw: &Value, key: &str) -> Operand<'g> {
    if let Some(v) = ins.get(key) {
        return (*v).into();
    }
    match &kw[key] {
        Value::Number(n) if n.is_i64() => (n.as_i64().unwrap() as i32).into(),
        Value::Number(n) => n.as_f64().unwrap().into(),
        v => panic!("operand {key}: {v}"),
    }
}

/// `x op y` through the operators, for a tensor or a Rust-number right operand.
fn arith<'g>(op: &str, x: Var<'g>, y: Operand<'g>) -> Var<'g> {
    macro_rules! apply {
        ($y:expr) => {
            match op {
                "add" => x + $y,
                "sub" => x - $y,
                "mul" => x * $y,
                _ => x / $y,
            }
        };
    }
    match y {
        Operand::Var(v) => apply!(v),
        Operand::Float(f) => apply!(f),
        Operand::Int(i) => apply!(i as i32),
    }
}

/// The case's `(rtol, atol)`, or the file's default.
fn tolerance(case: &Value, default: &Value) -> (f64, f64) {
    let tol = if case["tolerance"].is_null() {
        default
    } else {
        &case["tolerance"]
    };
    (tol["rtol"].as_f64().unwrap(), tol["atol"].as_f64().unwrap())
}

fn pair(v: &Value) -> [usize; 2] {
    let v: Vec<usize> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    [v[0], v[1]]
}

fn pool_options(kw: &Value) -> Pool2dOptions {
    let mut o = Pool2dOptions::new(pair(&kw["kernel_size"]))
        .stride(pair(&kw["stride"]))
        .padding(pair(&kw["padding"]))
        .ceil_mode(kw["ceil_mode"].as_bool().unwrap());
    if let Some(d) = kw.get("dilation") {
        o = o.dilation(pair(d));
    }
    if let Some(c) = kw.get("count_include_pad") {
        o = o.count_include_pad(c.as_bool().unwrap());
    }
    o.divisor_override(kw["divisor_override"].as_u64().map(|d| d as usize))
}

fn reduction(kw: &Value) -> nn::Reduction {
    kw["reduction"].as_str().unwrap_or("mean").parse().unwrap()
}

/// Builds one case; returns the named outputs ("output" plus extra outputs).
fn build<'g>(g: &'g GraphBuilder, case: &Value) -> Vec<(String, Var<'g>)> {
    let kw = &case["kwargs"];
    let mut ins: HashMap<&str, Var<'g>> = HashMap::new();
    let mut order = Vec::new();
    for i in case["inputs"].as_array().unwrap() {
        let name = i["name"].as_str().unwrap();
        let shape = Shape::known(
            &i["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect::<Vec<_>>(),
        );
        let v = g.input(name, dtype(i["dtype"].as_str().unwrap()), shape);
        ins.insert(name, v);
        order.push(v);
    }
    let x = order[0];
    let kd = |k: &str| kw[k].as_bool().unwrap_or(false);
    let ki = |k: &str| kw[k].as_i64().unwrap();
    let out = |v: Var<'g>| vec![("output".to_string(), v)];
    match case["op"].as_str().unwrap() {
        op @ ("add" | "sub" | "mul" | "div") => out(arith(op, x, operand(&ins, kw, "other"))),
        "pow" => out(x.pow(operand(&ins, kw, "exponent"))),
        "maximum" => out(x.maximum(ins["other"])),
        "minimum" => out(x.minimum(ins["other"])),
        "where" => out(ins["condition"].where_(ins["input"], ins["other"])),
        "lt" => out(x.lt(ins["other"])),
        "ge" => out(x.ge(ins["other"])),
        "eq" => out(x.equal(ins["other"])),
        "neg" => out(-x),
        "exp" => out(x.exp()),
        "log" => out(x.log()),
        "sqrt" => out(x.sqrt()),
        "rsqrt" => out(x.rsqrt()),
        "reciprocal" => out(x.reciprocal()),
        "square" => out(x.square()),
        "sin" => out(x.sin()),
        "cos" => out(x.cos()),
        "tanh" => out(x.tanh()),
        "sigmoid" => out(x.sigmoid()),
        "relu" => out(x.relu()),
        "leaky_relu" => out(x.leaky_relu(kw["negative_slope"].as_f64().unwrap())),
        "abs" => out(x.abs()),
        "clamp" => out(x.clamp(kw["min"].as_f64(), kw["max"].as_f64())),
        "sign" => out(x.sign()),
        "floor" => out(x.floor()),
        "ceil" => out(x.ceil()),
        "sum" => out(x.sum(axes(&kw["dim"]), kd("keepdim"))),
        "mean" => out(x.mean(axes(&kw["dim"]), kd("keepdim"))),
        "var" => out(x.var(axes(&kw["dim"]), ki("correction") as usize, kd("keepdim"))),
        "std" => out(x.std(axes(&kw["dim"]), ki("correction") as usize, kd("keepdim"))),
        "max_dim" | "min_dim" => {
            let (d, k) = (ki("dim"), kd("keepdim"));
            let (v, i) = if case["op"] == "max_dim" {
                (x.max(d, k), x.argmax(d, k))
            } else {
                (x.min(d, k), x.argmin(d, k))
            };
            vec![("output".into(), v), ("indices".into(), i)]
        }
        "max" => out(x.max(Axes::All, false)),
        "amax" => out(x.max(axes(&kw["dim"]), kd("keepdim"))),
        "amin" => out(x.min(axes(&kw["dim"]), kd("keepdim"))),
        "argmax" => out(x.argmax(ki("dim"), kd("keepdim"))),
        "prod" => out(x.prod(axes(&kw["dim"]), kd("keepdim"))),
        "logsumexp" => out(x.logsumexp(axes(&kw["dim"]), kd("keepdim"))),
        "softmax" => out(x.softmax(ki("dim"))),
        "log_softmax" => out(x.log_softmax(ki("dim"))),
        "norm" => out(x.norm(ki("ord") as u32, axes(&kw["dim"]), kd("keepdim"))),
        "reshape" => out(x.reshape(&ints(&kw["shape"]))),
        "permute" => out(x.permute(&ints(&kw["dims"]))),
        "transpose" => out(x.transpose(ki("dim0"), ki("dim1"))),
        "expand" => out(x.expand(&ints(&kw["size"]))),
        "squeeze" => out(x.squeeze(ki("dim"))),
        "unsqueeze" => out(x.unsqueeze(ki("dim"))),
        "flatten" => out(x.flatten(ki("start_dim"), ki("end_dim"))),
        "cat" => out(g.cat(&order, ki("dim"))),
        "stack" => out(g.stack(&order, ki("dim"))),
        "slice" => {
            let mut v = x;
            for (axis, s) in kw["slices"].as_array().unwrap().iter().enumerate() {
                let s = ints(s);
                v = v.slice(axis as i64, Some(s[0]), Some(s[1]), s[2] as usize);
            }
            out(v)
        }
        "select" => out(x.select(ki("dim"), ki("index"))),
        "pad" => {
            let p = ints(&kw["pad"]);
            let pairs: Vec<(i64, i64)> = p.chunks(2).map(|c| (c[0], c[1])).collect();
            out(x.pad(&pairs, kw["value"].as_f64().unwrap()))
        }
        "gather" => out(x.gather(ki("dim"), ins["index"])),
        "index_select" => out(x.index_select(ki("dim"), ins["index"])),
        "scatter_add" => out(x.scatter_add(ki("dim"), ins["index"], ins["src"])),
        "one_hot" => out(x.one_hot(ki("num_classes") as usize)),
        "matmul" => out(x.matmul(ins["other"])),
        "linear" => out(x.linear(ins["weight"], ins.get("bias").copied())),
        "mse_loss" => out(nn::mse_loss(x, ins["target"], reduction(kw))),
        "l1_loss" => out(nn::l1_loss(x, ins["target"], reduction(kw))),
        "binary_cross_entropy" => out(nn::binary_cross_entropy(
            x,
            ins["target"],
            ins.get("weight").copied(),
            reduction(kw),
        )),
        "binary_cross_entropy_with_logits" => out(nn::binary_cross_entropy_with_logits(
            x,
            ins["target"],
            ins.get("weight").copied(),
            ins.get("pos_weight").copied(),
            reduction(kw),
        )),
        op @ ("cross_entropy" | "nll_loss") => {
            let opts = nn::ClassLossOptions {
                weight: ins.get("weight").copied(),
                ignore_index: kw["ignore_index"].as_i64().unwrap_or(-100),
                label_smoothing: kw["label_smoothing"].as_f64().unwrap_or(0.0),
                reduction: reduction(kw),
            };
            if op == "cross_entropy" {
                out(nn::cross_entropy(x, ins["target"], opts))
            } else {
                out(nn::nll_loss(x, ins["target"], opts))
            }
        }
        "conv2d" => {
            let opts = Conv2dOptions::default()
                .stride(pair(&kw["stride"]))
                .padding(pair(&kw["padding"]))
                .dilation(pair(&kw["dilation"]))
                .groups(ki("groups") as usize);
            out(x.conv2d(ins["weight"], ins.get("bias").copied(), opts))
        }
        "max_pool2d" => {
            let (v, idx) = x.max_pool2d_with_indices(pool_options(kw));
            vec![("output".into(), v), ("indices".into(), idx)]
        }
        "avg_pool2d" => out(x.avg_pool2d(pool_options(kw))),
        "batch_norm" => {
            let r = x.batch_norm(BatchNorm {
                running_mean: ins.get("running_mean").copied(),
                running_var: ins.get("running_var").copied(),
                weight: ins.get("weight").copied(),
                bias: ins.get("bias").copied(),
                training: kd("training"),
                momentum: kw["momentum"].as_f64().unwrap(),
                eps: kw["eps"].as_f64().unwrap(),
            });
            vec![
                ("output".into(), r.output),
                ("running_mean".into(), r.running_mean.unwrap()),
                ("running_var".into(), r.running_var.unwrap()),
            ]
        }
        op => panic!("no DSL mapping for fixture op {op}"),
    }
}

/// Every case runs on the reference interpreter, the CPU backend and the GPU backend.
const BACKENDS: [&str; 3] = ["interp", "cpu", "gpu"];

/// Whether `backend` takes part in this run: the GPU does unless no adapter exists and
/// the opt-out variable is set (a missing adapter fails the test otherwise).
fn enabled(backend: &str) -> bool {
    backend != "gpu"
        || aotgrad::runtime::gpu::available_for_tests()
            .expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
}

/// The GPU computes f64 tensors nowhere (WGSL has no f64): such cases must be refused
/// with the documented error, which this recognises.
fn refused_f64(backend: &str, e: &aotgrad::RunError) -> bool {
    use aotgrad::compiler::codegen::wgsl::WgslError;
    backend == "gpu"
        && matches!(e, aotgrad::RunError::Wgsl(WgslError::Unsupported { why, .. })
            if why.contains("WGSL has no f64"))
}

/// Vulkan's precision floors for GPU builtins (exp, log, sin, cos, tanh are a few ulp or
/// an absolute 2^-11 for sin/cos) are looser than libm's.
fn backend_tolerance(backend: &str, (rtol, atol): (f64, f64)) -> (f64, f64) {
    if backend == "gpu" {
        (rtol.max(1e-4), atol.max(1e-4))
    } else {
        (rtol, atol)
    }
}

fn run_on(
    backend: &str,
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
) -> Result<aotgrad::Evaluation, aotgrad::RunError> {
    match backend {
        "interp" => aotgrad::run(graph, feeds),
        "gpu" => aotgrad::runtime::gpu::run_once(graph, feeds),
        _ => aotgrad::runtime::cpu::run_once(graph, feeds, Default::default()),
    }
}

#[test]
fn forward_values_match_pytorch() {
    let fx = fixtures();
    let default_tol = &fx["default_tolerance"];
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let g = GraphBuilder::new("case");
        for (n, v) in build(&g, case) {
            g.output(&n, v);
        }
        let graph = match g.finish() {
            Ok(gr) => gr,
            Err(e) => {
                failures.push(format!("{name}: build error {e}"));
                continue;
            }
        };
        let feeds: HashMap<String, Tensor> = case["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_string(),
                    tensor(i, dtype(i["dtype"].as_str().unwrap())),
                )
            })
            .collect();
        for backend in BACKENDS.into_iter().filter(|b| enabled(b)) {
            let res = match run_on(backend, &graph, &feeds) {
                Ok(r) => r,
                Err(e) if refused_f64(backend, &e) => continue,
                Err(e) => {
                    failures.push(format!("{name} [{backend}]: run error {e}"));
                    continue;
                }
            };
            let (rtol, atol) = backend_tolerance(backend, tolerance(case, default_tol));
            let mut expected = vec![("output".to_string(), &case["output"])];
            if let Some(extra) = case["extra_outputs"].as_object() {
                expected.extend(extra.iter().map(|(k, v)| (k.clone(), v)));
            }
            for (out_name, rec) in expected {
                let want = tensor(rec, dtype(rec["dtype"].as_str().unwrap()));
                let got = res.output(&out_name).unwrap();
                let ok = if want.dtype().is_float() {
                    got.allclose(&want, rtol, atol)
                } else {
                    got == &want
                };
                if !ok {
                    failures.push(format!(
                        "{name}/{out_name} [{backend}]: got {got}, want {want}"
                    ));
                }
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} PyTorch op cases match");
    assert!(checked >= 180, "only {checked} cases ran");
}

/// The case as a graph with its outputs, plus its feeds.
/// With `wide`, f32 inputs become f64 inputs, so that literals round to f64 as in
/// PyTorch's f64 run.
fn case_graph(case: &Value, wide: bool) -> Option<(Graph, HashMap<String, Tensor>)> {
    let g = GraphBuilder::new("case");
    let case = &widened(case, wide);
    for (n, v) in build(&g, case) {
        g.output(&n, v);
    }
    let graph = g.finish().expect("case builds");
    let feeds = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                tensor(i, dtype(i["dtype"].as_str().unwrap())),
            )
        })
        .collect();
    Some((graph, feeds))
}

fn widened(case: &Value, wide: bool) -> Value {
    let mut c = case.clone();
    if wide {
        for i in c["inputs"].as_array_mut().unwrap() {
            if i["dtype"] == "f32" {
                i["dtype"] = "f64".into();
            }
        }
    }
    c
}

fn requires_grad(case: &Value) -> Vec<&str> {
    case["requires_grad"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// Gradients (vector-Jacobian products with the fixture's random cotangent) of every
/// case, in f32 against PyTorch's f32 and in f64 against PyTorch's f64.
#[test]
fn gradients_match_pytorch_in_f32_and_f64() {
    let fx = fixtures();
    let default_tol = &fx["default_tolerance"];
    let (mut checked, mut failures) = (0, Vec::new());
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let wrt = requires_grad(case);
        if wrt.is_empty() || case["grads"].is_null() {
            continue;
        }
        let (rtol, atol) = tolerance(case, default_tol);
        for wide in [false, true] {
            let (graph, feeds) = case_graph(case, wide).unwrap();
            let (dt, grads_key) = if wide {
                (DType::F64, "grads_f64")
            } else {
                (DType::F32, "grads")
            };
            let cot = tensor(&case["cotangent"], dt);
            let joint = match grad(&graph, &[("output", Seed::Const(cot.data().clone()))], &wrt) {
                Ok(j) => j,
                Err(e) => {
                    failures.push(format!("{name} ({dt}): grad error {e}"));
                    continue;
                }
            };
            // The GPU computes f64 scalars in f32 (documented), so the f64 run, which
            // checks agreement to round-off, is for the interpreter and the CPU.
            let backends = BACKENDS
                .into_iter()
                .filter(|b| enabled(b) && !(wide && *b == "gpu"));
            for backend in backends {
                let res = match run_on(backend, &joint, &feeds) {
                    Ok(r) => r,
                    Err(e) if refused_f64(backend, &e) => continue,
                    Err(e) => {
                        failures.push(format!("{name} ({dt}) [{backend}]: run error {e}"));
                        continue;
                    }
                };
                // f64 gradients agree with PyTorch's f64 to near round-off.
                let (rtol, atol) = if wide {
                    (1e-9, 1e-12)
                } else {
                    backend_tolerance(backend, (rtol, atol))
                };
                if wide {
                    let want = tensor(&case["output_f64"], dt);
                    let got = res.output("output").unwrap();
                    if !got.allclose(&want, 1e-12, 1e-14) {
                        failures.push(format!(
                            "{name} output (f64) [{backend}]: got {got}, want {want}"
                        ));
                    }
                }
                for w in &wrt {
                    let want = tensor(&case[grads_key][*w], dt);
                    let got = res.output(&format!("{w}.grad")).unwrap();
                    if !got.allclose(&want, rtol, atol) {
                        failures.push(format!(
                            "{name} d/d{w} ({dt}) [{backend}]: got {got}, want {want}"
                        ));
                    }
                }
            }
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} gradient mismatches over {checked} cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} PyTorch gradient cases match in f32 and f64");
    assert!(checked >= 200, "only {checked} cases ran");
}

/// Cases where central differences straddle a kink or a tie on purpose: there the
/// one-sided derivative PyTorch picks is a convention, not a limit FD can find.
const FD_SKIP: &[&str] = &[
    "floor", "ceil", "sign", "max", "max_dim", "min_dim", "amax", "amin",
];

/// Every differentiable case through `aotgrad::gradcheck` (AD vs central differences in
/// f64 with a random output cotangent): independent of PyTorch.
#[test]
fn gradients_match_finite_differences() {
    let fx = fixtures();
    let (mut checked, mut failures) = (0, Vec::new());
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let wrt = requires_grad(case);
        if wrt.is_empty() || FD_SKIP.contains(&case["op"].as_str().unwrap()) {
            continue;
        }
        let Some((graph, feeds)) = case_graph(case, false) else {
            continue;
        };
        match aotgrad::gradcheck(&graph, &feeds, &wrt, GradcheckOptions::default()) {
            Ok(rep) if rep.passed(1e-5) => {}
            Ok(rep) => failures.push(format!("{name}:\n{rep}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cases fail gradcheck:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 180, "only {checked} cases ran");
}

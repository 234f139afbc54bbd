//! The course's tensor lessons (P26, the S3 tutorial) and its tensor API catalogue
//! (S1), with aotgrad's host tensor operations, printed as PyTorch prints them so a
//! learner can put the two outputs side by side: every item is its Python
//! expression (`>>> x.sum(dim=0)`) and then the value in PyTorch's format. The text up
//! to the random creators is PyTorch's own, character for character
//! (`tests/fixtures/course/tensor_lessons.txt`, from `tools/course/tensor_lessons.py`).
//!
//! Every operation here is a small graph evaluated by aotgrad's reference interpreter
//! (`aotgrad::runtime::tensor_ops`): the same semantics a compiled step has.

use aotgrad::cli::args::{ExampleSpec, TrainArgs};
use aotgrad::cli::torch_print::{torch_size, torch_str};
use aotgrad::compiler::{Seed, grad};
use aotgrad::ir::Scalar;
use aotgrad::prelude::*;
use clap::Parser;
use std::collections::HashMap;

#[derive(Parser)]
#[command(about = "The course's tensor lessons (P26) and tensor API catalogue (S1)")]
struct Cli {
    #[command(flatten)]
    train: TrainArgs,
}

const SPEC: ExampleSpec = ExampleSpec {
    name: "tensor_lessons",
    takes: &[&["--check", "--seed"]],
    defaults: &[],
};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn show(label: &str, value: impl std::fmt::Display) {
    println!(">>> {label}");
    println!("{value}");
}

fn p(t: &Tensor) -> String {
    torch_str(t)
}

fn tuple(items: &[&Tensor]) -> String {
    let s: Vec<String> = items.iter().map(|t| p(t)).collect();
    format!("({})", s.join(", "))
}

fn sizes(ts: &[Tensor]) -> String {
    let s: Vec<String> = ts.iter().map(|t| torch_size(t.shape())).collect();
    format!("[{}]", s.join(", "))
}

/// `torch.return_types.<name>(values=..., indices=...)` as PyTorch prints it.
fn ret(name: &str, (values, indices): (Tensor, Tensor)) -> String {
    format!(
        "torch.return_types.{name}(\nvalues={},\nindices={})",
        p(&values),
        p(&indices)
    )
}

fn f32s(v: &[f32], shape: &[usize]) -> R<Tensor> {
    Ok(Tensor::from_f32(v, shape)?)
}

fn main() -> std::process::ExitCode {
    aotgrad::cli::args::exit_code(run())
}

fn run() -> R<()> {
    let args = SPEC.parse::<Cli>(|c| &c.train).train;
    lessons()?;
    creation()?;
    indexing()?;
    views()?;
    math()?;
    statistics()?;
    comparisons()?;

    // Not PyTorch's values: aotgrad's counter-based generator, keyed by the seed.
    println!("== random creators (aotgrad's generator, not PyTorch's values) ==");
    let seed = args.seed as i64;
    let u = Tensor::rand(seed, &[2, 3], DType::F32)?;
    show("torch.rand(2, 3)", p(&u));
    show(
        "torch.randn(2, 3)",
        p(&Tensor::randn(seed, &[2, 3], DType::F32)?),
    );
    show(
        "torch.randint(1, 10, [3, 3])",
        p(&Tensor::randint(seed, 1, 10, &[3, 3])?),
    );
    let perm = Tensor::randperm(seed, 10)?;
    show("torch.randperm(10)", p(&perm));
    show(
        "torch.rand_like(u).shape",
        torch_size(u.rand_like(seed + 1)?.shape()),
    );
    let sorted = perm.sort(0, false)?.0;
    let is_perm = sorted.equal(&Tensor::arange(0.0, 10.0, 1.0, DType::I64)?)?;
    println!(
        "final: randperm_is_permutation={is_perm} seed={}",
        args.seed
    );
    Ok(())
}

/// One-output gradient of a tiny graph: PyTorch's `.backward()` then `x.grad`.
fn backward(
    name: &str,
    f: impl FnOnce(&GraphBuilder) -> Var<'_>,
    x: Tensor,
    seed: Seed,
) -> R<Tensor> {
    let g = GraphBuilder::new(name);
    let y = f(&g);
    g.output("y", y);
    let joint = grad(&g.finish()?, &[("y", seed)], &["x"])?;
    let ev = aotgrad::run(&joint, &HashMap::from([("x".to_string(), x)]))?;
    Ok(ev.output("x.grad").cloned().ok_or("no x.grad")?)
}

fn lessons() -> R<()> {
    println!("== P26: the tensor lessons ==");
    let six = Tensor::ones(DType::F32, &[4, 3]).mul(6)?;
    let two = Tensor::ones(DType::F32, &[3]).mul(2)?;
    show(
        "torch.ones(4, 3) * 6 / (torch.ones(3) * 2)",
        p(&six.div(&two)?),
    );
    show(
        "torch.ones(4, 3) * 6 @ (torch.ones(3) * 2)",
        p(&six.matmul(&two)?),
    );
    let x = f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3])?;
    show("x", p(&x));
    show("x.sum(dim=0)", p(&x.sum(0, false)?));
    show("x.sum(dim=1)", p(&x.sum(1, false)?));
    show("x.std(dim=0)", p(&x.std(0, 1, false)?));
    show("x.std(dim=1)", p(&x.std(1, 1, false)?));
    show("x.mean(dim=0)", p(&x.mean(0, false)?));
    show("x.mean(dim=1)", p(&x.mean(1, false)?));
    show("x.view(3, 2)", p(&x.view(&[3, 2])?));
    show("x.view(-1)", p(&x.view(&[-1])?));
    show(
        "torch.cat([x, x, x], 0).shape",
        torch_size(Tensor::cat(&[&x, &x, &x], 0)?.shape()),
    );
    show(
        "torch.cat([x, x, x], 1)",
        p(&Tensor::cat(&[&x, &x, &x], 1)?),
    );
    let y = Tensor::arange(0.0, 24.0, 1.0, DType::F32)?.view(&[2, 3, 4])?;
    show("y[:, 0, 0]", p(&y.index(&s![.., 0, 0])?));
    let rows = Tensor::from_i64(&[0, 0, 1], &[3])?;
    show(
        "y[[0, 0, 1]].shape",
        torch_size(y.index_select(0, &rows)?.shape()),
    );
    show(
        "y[0, 0, 0].item()",
        aotgrad::cli::pyrepr::py_repr(y.at(&[0, 0, 0])?),
    );
    let gx = backward(
        "three_x_squared",
        |g| {
            let x = g.input("x", DType::F32, shape![1]);
            (x.pow(2.0) * 3.0).sum_all()
        },
        f32s(&[2.0], &[1])?,
        Seed::Auto,
    )?;
    show("x = [2.], (3 * x**2).backward(): x.grad", p(&gx));
    let gx = backward(
        "x_squared",
        |g| g.input("x", DType::F32, shape![2, 2]).pow(2.0),
        f32s(&[1., 2., 3., 4.], &[2, 2])?,
        Seed::Ones,
    )?;
    show(
        "x = [[1, 2], [3, 4]], (x**2).backward(ones): x.grad",
        p(&gx),
    );
    Ok(())
}

fn creation() -> R<()> {
    println!("== S1: creation and dtypes ==");
    show("torch.tensor([2., 3.2])", p(&f32s(&[2., 3.2], &[2])?));
    show(
        "torch.full([], 7.)",
        p(&Tensor::full(Scalar::F32(7.0), &[])),
    );
    show(
        "torch.full([2, 3], 7.)",
        p(&Tensor::full(Scalar::F32(7.0), &[2, 3])),
    );
    show("torch.eye(3, 4)", p(&Tensor::eye(3, 4, DType::F32)?));
    show(
        "torch.arange(0, 10)",
        p(&Tensor::arange(0.0, 10.0, 1.0, DType::I64)?),
    );
    show(
        "torch.arange(0, 10, 2)",
        p(&Tensor::arange(0.0, 10.0, 2.0, DType::I64)?),
    );
    show(
        "torch.linspace(0, 10, steps=4)",
        p(&Tensor::linspace(0.0, 10.0, 4, DType::F32)?),
    );
    show(
        "torch.linspace(0, 10, steps=11)",
        p(&Tensor::linspace(0.0, 10.0, 11, DType::F32)?),
    );
    let x = f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3])?;
    show("torch.zeros_like(x)", p(&x.zeros_like()));
    show(
        "torch.empty(2, 3).shape",
        torch_size(Tensor::empty(DType::F32, &[2, 3]).shape()),
    );
    let f = f32s(&[1.7, -2.5, 0.2], &[3])?;
    show("f.long()", p(&f.long()));
    show("f.long().float()", p(&f.long().float()));
    show("f.double()", p(&f.cast(DType::F64)));
    Ok(())
}

/// The course's 4 x 10 "probabilities" for topk, gather and kthvalue (no ties).
fn prob() -> R<Tensor> {
    f32s(
        &[
            0.10, 0.50, 0.20, 0.90, 0.30, 0.00, 0.80, 0.70, 0.40, 0.60, //
            0.90, 0.10, 0.80, 0.20, 0.70, 0.30, 0.60, 0.40, 0.50, 0.05, //
            0.45, 0.50, 0.55, 0.52, 0.10, 0.20, 0.30, 0.40, 0.60, 0.70, //
            0.00, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90,
        ],
        &[4, 10],
    )
}

fn images() -> R<Tensor> {
    Ok(Tensor::arange(0.0, (4 * 3 * 28 * 28) as f64, 1.0, DType::F32)?.view(&[4, 3, 28, 28])?)
}

fn indexing() -> R<()> {
    println!("== S1: indexing ==");
    let a = images()?;
    let size = |ix: &[Ix]| -> R<String> { Ok(torch_size(a.index(ix)?.shape())) };
    show("a[0].shape", size(&s![0])?);
    show("a[0, 0].shape", size(&s![0, 0])?);
    show("a[0, 0, 2, 4]", p(&a.index(&s![0, 0, 2, 4])?));
    show("a[:2].shape", size(&s![..2])?);
    show("a[:2, :1, :, :].shape", size(&s![..2, ..1, .., ..])?);
    show("a[:2, 1:, :, :].shape", size(&s![..2, 1.., .., ..])?);
    show("a[:2, -1:, :, :].shape", size(&s![..2, -1.., .., ..])?);
    show(
        "a[:, :, 0:28:2, 0:28:2].shape",
        size(&s![.., .., 0..28;2, 0..28;2])?,
    );
    show("a[:, :, ::2, ::2].shape", size(&s![.., .., ..;2, ..;2])?);
    let i02 = Tensor::from_i64(&[0, 2], &[2])?;
    show(
        "a.index_select(0, torch.tensor([0, 2])).shape",
        torch_size(a.index_select(0, &i02)?.shape()),
    );
    let i8 = Tensor::arange(0.0, 8.0, 1.0, DType::I64)?;
    show(
        "a.index_select(2, torch.arange(8)).shape",
        torch_size(a.index_select(2, &i8)?.shape()),
    );
    show("a[...].shape", size(&s![Ix::Ellipsis])?);
    show("a[0, ...].shape", size(&s![0, Ix::Ellipsis])?);
    show("a[:, 1, ...].shape", size(&s![.., 1, Ix::Ellipsis])?);
    show("a[..., :2].shape", size(&s![Ix::Ellipsis, ..2])?);

    let m = f32s(&[0., 1., 2., 3., 4., 5.], &[2, 3])?;
    let mask = m.gt(2)?;
    show("m", p(&m));
    show("m > 2", p(&mask));
    show("m[m > 2]", p(&m.mask(&mask)?));
    show("torch.masked_select(m, m > 2)", p(&m.masked_select(&mask)?));
    show("m[m > 2] = 0; m", p(&m.masked_fill(&mask, 0)?));
    let src = Tensor::from_i64(&[4, 3, 5, 6, 7, 8], &[2, 3])?;
    let at = Tensor::from_i64(&[0, 2, 5], &[3])?;
    show(
        "torch.take(src, torch.tensor([0, 2, 5]))",
        p(&src.take(&at)?),
    );
    let cond = f32s(&[0.6, 0.4, 0.3, 0.9], &[2, 2])?;
    show(
        "torch.where(cond > 0.5, torch.zeros(2, 2), torch.ones(2, 2))",
        p(&Tensor::where_cond(
            &cond.gt(0.5)?,
            &Tensor::zeros(DType::F32, &[2, 2]),
            &Tensor::ones(DType::F32, &[2, 2]),
        )?),
    );
    let (_, idx) = prob()?.topk(3, 1, true)?;
    let label = Tensor::arange(0.0, 10.0, 1.0, DType::I64)?.add(100)?;
    show("idx = prob.topk(dim=1, k=3).indices", p(&idx));
    show(
        "torch.gather(label.expand(4, 10), 1, idx)",
        p(&label.expand(&[4, 10])?.gather(1, &idx)?),
    );
    Ok(())
}

fn views() -> R<()> {
    println!("== S1: views, joins and splits ==");
    let a = images()?;
    let size = |t: Tensor| torch_size(t.shape());
    show(
        "a.view(4, 3 * 28 * 28).shape",
        size(a.view(&[4, 3 * 28 * 28])?),
    );
    show(
        "a.reshape(4 * 3, 28, 28).shape",
        size(a.view(&[4 * 3, 28, 28])?),
    );
    show("a.view(-1, 28).shape", size(a.view(&[-1, 28])?));
    show("a.unsqueeze(0).shape", size(a.unsqueeze(0)?));
    show("a.unsqueeze(-1).shape", size(a.unsqueeze(-1)?));
    show("a.unsqueeze(4).shape", size(a.unsqueeze(4)?));
    show("a.unsqueeze(-4).shape", size(a.unsqueeze(-4)?));
    let bias = Tensor::arange(0.0, 32.0, 1.0, DType::F32)?.view(&[1, 32, 1, 1])?;
    show("bias.squeeze().shape", size(bias.squeeze_all()?));
    show("bias.squeeze(0).shape", size(bias.squeeze(0)?));
    show("bias.squeeze(-1).shape", size(bias.squeeze(-1)?));
    show("bias.squeeze(1).shape", size(bias.squeeze(1)?));
    show(
        "bias.expand(4, 32, 14, 14).shape",
        size(bias.expand(&[4, 32, 14, 14])?),
    );
    show(
        "bias.expand(-1, 32, -1, -1).shape",
        size(bias.expand(&[-1, 32, -1, -1])?),
    );
    show(
        "bias.repeat(4, 32, 1, 1).shape",
        size(bias.repeat(&[4, 32, 1, 1])?),
    );
    show(
        "bias.repeat(4, 1, 32, 32).shape",
        size(bias.repeat(&[4, 1, 32, 32])?),
    );
    let s = Tensor::arange(0.0, 6.0, 1.0, DType::F32)?.view(&[2, 3])?;
    show("s.t()", p(&s.t()?));
    show("s.repeat(2, 2)", p(&s.repeat(&[2, 2])?));
    let a1 = a
        .transpose(1, 3)?
        .contiguous()
        .view(&[4, 3 * 28 * 28])?
        .view(&[4, 28, 28, 3])?
        .transpose(1, 3)?;
    let all_eq = a
        .eq(&a1)?
        .cast(DType::I64)
        .min(Axes::All, false)?
        .cast(DType::Bool);
    show(
        "a.transpose(1, 3).contiguous().view(4, 3*28*28).view(4, 28, 28, 3).transpose(1, 3) == a",
        p(&all_eq),
    );
    show(
        "a.permute(0, 2, 3, 1).shape",
        size(a.permute(&[0, 2, 3, 1])?),
    );
    let c1 = Tensor::arange(0.0, (4 * 32 * 8) as f64, 1.0, DType::F32)?.view(&[4, 32, 8])?;
    let c2 = Tensor::arange(0.0, (5 * 32 * 8) as f64, 1.0, DType::F32)?.view(&[5, 32, 8])?;
    show(
        "torch.cat([c1, c2], dim=0).shape",
        size(Tensor::cat(&[&c1, &c2], 0)?),
    );
    show(
        "torch.stack([c1, c1], dim=2).shape",
        size(Tensor::stack(&[&c1, &c1], 2)?),
    );
    show(
        "[t.shape for t in c1.split([1, 3], dim=0)]",
        sizes(&c1.split_sizes(&[1, 3], 0)?),
    );
    show(
        "[t.shape for t in c1.split(3, dim=0)]",
        sizes(&c1.split(3, 0)?),
    );
    show(
        "[t.shape for t in c1.chunk(2, dim=0)]",
        sizes(&c1.chunk(2, 0)?),
    );
    Ok(())
}

fn math() -> R<()> {
    println!("== S1: math ==");
    // The course's literal 3.14, not π.
    #[allow(clippy::approx_constant)]
    let pi = Tensor::scalar_f32(3.14);
    show(
        "pi.floor(), pi.ceil(), pi.trunc(), pi.frac()",
        tuple(&[&pi.floor()?, &pi.ceil()?, &pi.trunc()?, &pi.frac()?]),
    );
    let g = f32s(&[-3.2, 15.1, 8.0, 0.5], &[2, 2])?;
    show(
        "g.max(), g.min()",
        tuple(&[&g.max(Axes::All, false)?, &g.min(Axes::All, false)?]),
    );
    show("g.clamp(10)", p(&g.clamp(Some(10.0), None)?));
    show("g.clamp(0, 10)", p(&g.clamp(Some(0.0), Some(10.0))?));
    let t3 = Tensor::full(Scalar::F32(3.0), &[2, 2]);
    show("t3.pow(2)", p(&t3.pow(2.0)?));
    show("(t3 ** 2).sqrt()", p(&t3.pow(2.0)?.sqrt()?));
    show("(t3 ** 2).rsqrt()", p(&t3.pow(2.0)?.rsqrt()?));
    let e = Tensor::ones(DType::F32, &[2, 2]).exp()?;
    show("torch.exp(torch.ones(2, 2))", p(&e));
    // Not the course's log(exp(1)): exp(1) rounds to 2.7182817f, whose correctly
    // rounded log is 0.99999994 (what libm, and so aotgrad, returns); PyTorch's
    // vectorised log returns 1.0 there, one ulp away.
    show(
        "torch.log(torch.tensor([1., 2., 10.]))",
        p(&f32s(&[1., 2., 10.], &[3])?.log()?),
    );
    let r4 = Tensor::arange(0.0, 4.0, 1.0, DType::F32)?;
    show(
        "torch.ones(3, 4) + torch.arange(4.)",
        p(&Tensor::ones(DType::F32, &[3, 4]).add(&r4)?),
    );
    show(
        "torch.arange(3.).view(3, 1) * torch.arange(4.)",
        p(&Tensor::arange(0.0, 3.0, 1.0, DType::F32)?
            .view(&[3, 1])?
            .mul(&r4)?),
    );
    Ok(())
}

fn statistics() -> R<()> {
    println!("== S1: statistics ==");
    let st = Tensor::arange(0.0, 8.0, 1.0, DType::F32)?.view(&[2, 4])?;
    show("st", p(&st));
    show(
        "st.norm(1), st.norm(2)",
        tuple(&[
            &st.norm(1, Axes::All, false)?,
            &st.norm(2, Axes::All, false)?,
        ]),
    );
    show("st.norm(1, dim=1)", p(&st.norm(1, 1, false)?));
    show("st.norm(2, dim=1)", p(&st.norm(2, 1, false)?));
    show(
        "st.min(), st.max(), st.mean(), st.prod(), st.sum()",
        tuple(&[
            &st.min(Axes::All, false)?,
            &st.max(Axes::All, false)?,
            &st.mean(Axes::All, false)?,
            &st.prod(Axes::All, false)?,
            &st.sum_all()?,
        ]),
    );
    show(
        "st.argmax(), st.argmin()",
        tuple(&[&st.argmax_all()?, &st.argmin_all()?]),
    );
    show("st.argmax(dim=1)", p(&st.argmax(1, false)?));
    show("st.max(dim=1)", ret("max", st.max_dim(1, false)?));
    show(
        "st.max(dim=1, keepdim=True)",
        ret("max", st.max_dim(1, true)?),
    );
    let prob = prob()?;
    show("prob.topk(3, dim=1)", ret("topk", prob.topk(3, 1, true)?));
    show(
        "prob.topk(3, dim=1, largest=False)",
        ret("topk", prob.topk(3, 1, false)?),
    );
    show(
        "prob.kthvalue(8, dim=1)",
        ret("kthvalue", prob.kthvalue(8, 1, false)?),
    );
    show(
        "st.std(), st.var(dim=1)",
        tuple(&[&st.std(Axes::All, 1, false)?, &st.var(1, 1, false)?]),
    );
    Ok(())
}

fn comparisons() -> R<()> {
    println!("== S1: comparisons ==");
    let st = Tensor::arange(0.0, 8.0, 1.0, DType::F32)?.view(&[2, 4])?;
    show("st > 3", p(&st.gt(3)?));
    show("torch.gt(st, 3)", p(&st.gt(3)?));
    show("st != 0", p(&st.ne(0)?));
    show("torch.eq(st, st)", p(&st.eq(&st)?));
    show(
        "torch.equal(st, st)",
        if st.equal(&st)? { "True" } else { "False" },
    );
    show("torch.ge(st, 7)", p(&st.ge(7)?));
    Ok(())
}

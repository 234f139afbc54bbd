//! Every case of `tests/fixtures/tensor_ops/catalogue.safetensors` (written by
//! `tools/fixtures/gen_tensor_ops.py` from PyTorch): the same op on the same inputs
//! with `Tensor`'s methods, compared output by output. Integer and bool results must
//! be equal; float results within 1e-6 (a few f32 ulps of the magnitudes involved:
//! PyTorch's vectorised kernels and libm differ in the last bit for exp, log, pow,
//! tanh, and log-softmax inherits the rounding of its logsumexp).

use std::collections::HashMap;
use std::path::Path;

use aotgrad::prelude::*;
use aotgrad::tensor_file::read_safetensors;

type Out = Result<Vec<Tensor>, TensorOpError>;

fn fixtures() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tensor_ops/catalogue.safetensors");
    read_safetensors(&path).unwrap().0.into_iter().collect()
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64(v, &[v.len()]).unwrap()
}

fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_f32(v, shape).unwrap()
}

/// aotgrad's version of each case, by name; `x` holds the case's inputs.
fn run(name: &str, x: &[Tensor]) -> Out {
    let b = |t: Result<bool, TensorOpError>| -> Result<Tensor, TensorOpError> {
        Ok(Tensor::new(&[], aotgrad::ir::Data::Bool(vec![t?])).unwrap())
    };
    Ok(match name {
        "p26_div" => vec![x[0].div(&x[1])?],
        "p26_matmul" => vec![x[0].matmul(&x[1])?],
        "p26_sums" => vec![
            x[0].sum(0, false)?,
            x[0].sum(1, false)?,
            x[0].mean(0, false)?,
            x[0].mean(1, false)?,
        ],
        "p26_std" => vec![
            x[0].std(0, 1, false)?,
            x[0].std(1, 1, false)?,
            x[0].var(0, 1, false)?,
        ],
        "p26_cat" => vec![
            Tensor::cat(&[&x[0], &x[0], &x[0]], 0)?,
            Tensor::cat(&[&x[0], &x[0], &x[0]], 1)?,
        ],
        "p26_index" => vec![
            x[0].index(&s![.., 0, 0])?,
            x[0].index_select(0, &x[1])?,
            x[0].index(&s![0, 0, 0])?,
        ],
        "p26_view" => vec![x[0].view(&[6, 4])?, x[0].view(&[-1])?, x[0].view(&[4, -1])?],
        "full0d" => vec![Tensor::full(aotgrad::ir::Scalar::F32(7.0), &[])],
        "eye" => vec![Tensor::eye(3, 4, DType::F32)?],
        "arange" => vec![
            Tensor::arange(0.0, 10.0, 3.0, DType::I64)?,
            Tensor::arange(1.0, 2.5, 0.5, DType::F32)?,
            Tensor::arange(0.0, 5.0, 1.0, DType::F32)?,
        ],
        "linspace" => vec![
            Tensor::linspace(-10.0, 10.0, 4, DType::F32)?,
            Tensor::linspace(0.0, 1.0, 7, DType::F32)?,
            Tensor::linspace(3.0, 10.0, 5, DType::F32)?,
        ],
        "like" => vec![x[0].zeros_like(), x[0].ones_like(), x[0].full_like(2.5)],
        "dtypes" => vec![x[0].long(), x[0].long().float()],
        "index_basic" => vec![
            x[0].index(&s![0, 0, 2, 4])?,
            x[0].index(&s![.., .., 0..28;2, 0..28;2])?,
            x[0].index(&s![..2, -1.., .., ..])?,
            x[0].index(&s![Ix::Ellipsis, ..2])?,
        ],
        "index_more" => vec![
            x[0].index(&s![1, Ix::Ellipsis, 3])?,
            x[0].index(&s![-1, ..;2, 5..1000, -3])?,
            x[0].index(&s![Ix::NewAxis, 0, 0, 0, ..4])?,
        ],
        "index_select" => vec![x[0].index_select(0, &x[1])?],
        "mask" => {
            let m = x[0].gt(2)?;
            vec![
                x[0].mask(&m)?,
                x[0].masked_fill(&m, 0)?,
                x[0].masked_select(&m)?,
            ]
        }
        "masked_select_bcast" => vec![x[0].masked_select(&x[1])?],
        "mask_rows" => vec![x[0].mask(&x[1])?],
        "take" => vec![x[0].take(&x[1])?],
        "where" => {
            let c = x[0].gt(3)?;
            vec![
                Tensor::where_cond(&c, &x[0], &x[0].zeros_like())?,
                Tensor::where_cond(&c, &x[0], 1.5)?,
            ]
        }
        "gather" => {
            let (_, idx) = x[0].topk(3, 1, true)?;
            let label = x[1].expand(&[4, 10])?;
            vec![idx.clone(), label.gather(1, &idx)?]
        }
        "nonzero" => vec![x[0].nonzero()?],
        "squeeze" => vec![
            x[0].squeeze_all()?,
            x[0].squeeze(0)?,
            x[0].squeeze(-1)?,
            x[0].unsqueeze(0)?,
            x[0].unsqueeze(-1)?,
        ],
        "expand_repeat" => vec![
            x[0].expand(&[4, 32, 14, 14])?,
            x[0].expand(&[-1, 32, -1, -1])?,
            x[0].repeat(&[4, 32, 1, 1])?,
        ],
        "repeat_small" => vec![x[0].repeat(&[2, 2])?, x[0].repeat(&[2, 1, 3])?],
        "transpose" => vec![
            x[1].t()?,
            x[0].transpose(1, 3)?.contiguous(),
            x[0].permute(&[0, 2, 3, 1])?,
            x[0].flatten(1, 2)?,
            x[0].view(&[2, -1])?,
        ],
        "flip" => vec![x[0].flip(&[0])?, x[0].flip(&[1])?, x[0].flip(&[0, 1])?],
        "cat_stack" => vec![
            Tensor::cat(&[&x[0], &x[1]], 0)?,
            Tensor::cat(&[&x[0], &x[1]], 1)?,
            Tensor::stack(&[&x[0], &x[1]], 0)?,
            Tensor::stack(&[&x[0], &x[1]], 2)?,
        ],
        "split_chunk" => {
            let mut v = x[0].split(2, 0)?;
            v.extend(x[0].split_sizes(&[1, 4], 0)?);
            v.extend(x[0].chunk(2, 0)?);
            v
        }
        "math" => {
            let v = &x[0];
            vec![
                v.floor()?,
                v.ceil()?,
                v.trunc()?,
                v.frac()?,
                v.clamp(Some(-1.0), Some(2.0))?,
                v.clamp(Some(0.5), None)?,
                v.abs()?.sqrt()?,
                v.abs()?.rsqrt()?,
                v.exp()?,
                v.abs()?.log()?,
                v.pow(2.0)?,
                v.abs()?.pow(0.5)?,
                Tensor::scalar_f32(2.0).pow(v)?,
                v.sign()?,
                v.neg()?,
                v.sigmoid()?,
                v.relu()?,
                v.tanh()?,
            ]
        }
        "arith" => vec![
            x[0].add(&x[1])?,
            x[0].sub(1)?,
            x[0].mul(0.1)?,
            x[0].div(3)?,
            x[0].maximum(&Tensor::scalar_f32(3.5))?,
            x[0].minimum(&Tensor::scalar_f32(3.5))?,
        ],
        "int_math" => vec![
            x[0].add(1)?,
            x[0].mul(&x[0])?,
            x[0].div(2)?,
            x[0].float().mean(Axes::All, false)?,
            x[0].sum(1, false)?,
            x[0].max(Axes::All, false)?,
        ],
        "reduce" => {
            let r = &x[0];
            vec![
                r.sum_all()?,
                r.sum(0, false)?,
                r.sum(1, true)?,
                r.mean(Axes::All, false)?,
                r.mean(1, false)?,
                r.prod(1, false)?,
                r.max(Axes::All, false)?,
                r.min(Axes::All, false)?,
                r.argmax_all()?,
                r.argmin_all()?,
                r.argmax(1, false)?,
                r.argmin(0, true)?,
                r.max([0, 1], false)?,
                r.std(Axes::All, 1, false)?,
                r.var(1, 1, false)?,
                r.std(0, 0, false)?,
            ]
        }
        "max_dim" => {
            let (mv, mi) = x[0].max_dim(1, false)?;
            let (nv, ni) = x[0].min_dim(0, true)?;
            vec![mv, mi, nv, ni]
        }
        "norm" => vec![
            x[0].norm(1, Axes::All, false)?,
            x[0].norm(2, Axes::All, false)?,
            x[0].norm(2, 1, false)?,
            x[0].norm(1, 0, true)?,
        ],
        "order" => {
            let (rt, r) = (&x[0], &x[1]);
            let (tv, ti) = rt.topk(2, 1, true)?;
            let (lv, li) = rt.topk(2, 0, false)?;
            let (kv, ki) = rt.kthvalue(2, 1, false)?;
            let (kkv, kki) = rt.kthvalue(3, 0, true)?;
            let (sv, si) = r.sort(1, true)?;
            vec![
                tv,
                ti,
                lv,
                li,
                kv,
                ki,
                kkv,
                kki,
                sv,
                si,
                r.argsort(0, false)?,
            ]
        }
        "softmax" => vec![
            x[0].softmax(1)?,
            x[0].log_softmax(0)?,
            x[0].logsumexp(1, false)?,
        ],
        "compare" => vec![
            x[0].eq(&x[1])?,
            x[0].ge(3)?,
            x[0].gt(2)?,
            x[0].ne(2)?,
            x[0].lt(5)?,
            x[0].le(4)?,
            b(x[0].equal(&x[0].clone()))?,
            b(x[0].equal(&x[0].add(1)?))?,
        ],
        "broadcast" => vec![
            x[0].add(&x[1])?,
            x[0].mul(&x[1])?,
            x[0].expand(&[3, 4])?.sub(&x[1])?,
        ],
        "matmul" => vec![
            x[0].matmul(&x[1])?,
            Tensor::ones(DType::F32, &[2, 2, 3]).matmul(&x[1])?,
        ],
        other => panic!("no aotgrad version of fixture case {other:?}: add it to run()"),
    })
}

#[test]
fn every_catalogue_case_matches_pytorch() {
    let fx = fixtures();
    let mut cases: Vec<&str> = fx
        .keys()
        .filter_map(|k| k.split_once(".out0").map(|(c, _)| c))
        .collect();
    cases.sort_unstable();
    assert!(
        cases.len() >= 40,
        "only {} cases in the fixture",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let inputs: Vec<Tensor> = (0..)
            .map_while(|i| fx.get(&format!("{case}.in{i}")).cloned())
            .collect();
        let want: Vec<&Tensor> = (0..)
            .map_while(|i| fx.get(&format!("{case}.out{i}")))
            .collect();
        let got = match run(case, &inputs) {
            Ok(g) => g,
            Err(e) => {
                failures.push(format!("{case}: {e}"));
                continue;
            }
        };
        assert_eq!(got.len(), want.len(), "{case}: output count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if g.dtype() != w.dtype() || g.shape() != w.shape() {
                failures.push(format!(
                    "{case}.out{i}: got {} {:?}, PyTorch {} {:?}",
                    g.dtype(),
                    g.shape(),
                    w.dtype(),
                    w.shape()
                ));
                continue;
            }
            let ok = if g.dtype().is_float() {
                g.allclose(w, 1e-6, 1e-6)
            } else {
                g == *w
            };
            if !ok {
                failures.push(format!("{case}.out{i}: got {g}, PyTorch {w}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn p26_lesson_values_are_the_course_text() {
    // The numbers the course's S3 tutorial prints, independent of the fixture.
    let six = Tensor::ones(DType::F32, &[4, 3]).mul(6).unwrap();
    let two = Tensor::ones(DType::F32, &[3]).mul(2).unwrap();
    assert_eq!(
        six.div(&two).unwrap(),
        Tensor::full(aotgrad::ir::Scalar::F32(3.0), &[4, 3])
    );
    assert_eq!(six.matmul(&two).unwrap(), f32s(&[36.0; 4], &[4]));
    let m = f32s(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    assert_eq!(m.sum(0, false).unwrap(), f32s(&[5., 7., 9.], &[3]));
    assert_eq!(m.sum(1, false).unwrap(), f32s(&[6., 15.], &[2]));
    let sd = m.std(0, 1, false).unwrap();
    assert!(
        sd.as_f32()
            .unwrap()
            .iter()
            .all(|&s| (s - 2.1213).abs() < 1e-4)
    );
    assert_eq!(m.std(1, 1, false).unwrap(), f32s(&[1., 1.], &[2]));
    let rows = m.index_select(0, &i64s(&[0, 0, 1])).unwrap();
    assert_eq!(rows.shape(), &[3, 3]);
    assert_eq!(m.at(&[-1, -1]).unwrap(), 6.0);
}

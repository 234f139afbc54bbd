//! A learner's mistakes with host tensors are typed errors naming the op, the shapes
//! and the learner's own line, never panics.

use aotgrad::prelude::*;

fn m23() -> Tensor {
    Tensor::from_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]).unwrap()
}

#[test]
fn shape_and_axis_mistakes_name_the_op_and_the_callers_line() {
    let x = m23();
    let line = line!() + 1;
    let e = x.sum(2, false).unwrap_err().to_string();
    assert!(e.starts_with("`sum` at tests/tensor/errors.rs:"), "{e}");
    assert!(e.contains(&format!(":{line}:")), "{e}");
    assert!(e.contains("axis 2 is out of range for f32[2,3]"), "{e}");

    let e = x
        .add(&Tensor::zeros(DType::F32, &[4]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("do not broadcast") && e.contains("[2,3]") && e.contains("[4]"),
        "{e}"
    );
    let e = x.view(&[4, -1]).unwrap_err().to_string();
    // `view` is the DSL's reshape: the message names it and both element counts.
    assert!(
        e.contains("`reshape`") && e.contains("(6 elements) to [4, -1]"),
        "{e}"
    );
    let e = x.matmul(&x).unwrap_err().to_string();
    assert!(e.contains("matmul"), "{e}");
    let e = Tensor::cat(&[&x, &Tensor::zeros(DType::F32, &[2, 2])], 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cat"), "{e}");
    let e = x.topk(4, 1, true).unwrap_err().to_string();
    assert!(
        e.contains("k = 4 is larger than axis 1's 3 elements"),
        "{e}"
    );
    let e = x.kthvalue(0, 1, false).unwrap_err().to_string();
    assert!(e.contains("k = 0 is outside 1..=3"), "{e}");
    let e = x.repeat(&[2]).unwrap_err().to_string();
    assert!(
        e.contains("repeat needs at least one count per axis"),
        "{e}"
    );
    let e = x.split_sizes(&[1, 1, 2], 1).unwrap_err().to_string();
    assert!(e.contains("do not add up"), "{e}");
    let e = Tensor::arange(0.0, 5.0, -1.0, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("arange") && e.contains("sign"), "{e}");
    let e = Tensor::randint(0, 5, 5, &[3]).unwrap_err().to_string();
    assert!(e.contains("low < high"), "{e}");
}

#[test]
fn index_mistakes_are_errors() {
    let x = m23();
    let e = x.index(&s![0, 0, 0]).unwrap_err().to_string();
    assert!(
        e.contains("too many indices") && e.contains("[2, 3]"),
        "{e}"
    );
    let e = x
        .index(&s![Ix::Ellipsis, Ix::Ellipsis])
        .unwrap_err()
        .to_string();
    assert!(e.contains("only one ellipsis"), "{e}");
    for bad in [s![0;2], s![..;0]] {
        let e = x.index(&bad).unwrap_err().to_string();
        assert!(
            e.contains("a step must follow a range and be at least 1"),
            "{e}"
        );
    }
    let e = x.index(&s![5]).unwrap_err().to_string();
    assert!(e.contains("select"), "{e}");
    let e = x.at(&[0]).unwrap_err().to_string();
    assert!(e.contains("1 indices for a tensor of rank 2"), "{e}");
    // A gather index out of range is a run-time error of the data, still typed.
    let e = x
        .index_select(0, &Tensor::from_i64(&[0, 2], &[2]).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            e,
            TensorOpError::Run {
                op: "index_select",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("index_select"), "{e}");
}

#[test]
fn mask_mistakes_are_errors() {
    let x = m23();
    let e = x.masked_select(&x).unwrap_err().to_string();
    assert!(e.contains("must be a bool tensor, found f32"), "{e}");
    let rows = Tensor::new(&[3], aotgrad::ir::Data::Bool(vec![true, false, true])).unwrap();
    let e = x.mask(&rows).unwrap_err().to_string();
    assert!(
        e.contains("not the leading axes") && e.contains("[2, 3]"),
        "{e}"
    );
    let big = Tensor::new(&[2, 2, 3], aotgrad::ir::Data::Bool(vec![true; 12])).unwrap();
    let e = x.masked_fill(&big, 0).unwrap_err().to_string();
    assert!(
        e.contains("does not broadcast to the tensor's shape [2, 3]"),
        "{e}"
    );
    let e = x.masked_select(&Tensor::new(&[4], aotgrad::ir::Data::Bool(vec![true; 4])).unwrap());
    assert!(e.unwrap_err().to_string().contains("broadcast"));
}

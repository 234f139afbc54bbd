//! PyTorch's `print(tensor)` (`torch/_tensor_str.py` with the default print options:
//! precision 4, line width 80, summarised past 1000 elements with 3 edge items), so
//! the course's tensor lessons print what the course prints, character for character.
//!
//! The rules, as PyTorch's `_Formatter` applies them to the non-zero finite values:
//! whole numbers print as `36.` ("int mode"), others with 4 decimals, and scientific
//! notation (`1.0000e-05`) takes over when the largest / smallest > 1000, the largest
//! > 1e8 or the smallest < 1e-4. Every element is right-aligned to the widest.

use aotgrad_ir::DType;

use crate::Tensor;

const PRECISION: usize = 4;
const LINEWIDTH: usize = 80;
const THRESHOLD: usize = 1000;
const EDGEITEMS: usize = 3;

/// `str(tensor)` as PyTorch prints it: `tensor([[1., 2.],\n        [3., 4.]])`.
pub fn torch_str(t: &Tensor) -> String {
    let indent = "tensor(".len();
    let mut suffixes = Vec::new();
    let body = if t.is_empty() {
        if t.shape().len() != 1 {
            suffixes.push(format!("size={}", py_tuple(t.shape())));
        }
        if t.dtype() != DType::F32 {
            suffixes.push(format!("dtype={}", torch_dtype(t.dtype())));
        }
        "[]".to_string()
    } else {
        if !matches!(t.dtype(), DType::F32 | DType::I64 | DType::Bool) {
            suffixes.push(format!("dtype={}", torch_dtype(t.dtype())));
        }
        let summarize = t.len() > THRESHOLD;
        let values = t.to_f64_vec();
        let view = View {
            shape: t.shape(),
            values: &values,
            offset: 0,
        };
        let f = Formatter::new(t.dtype(), &view.summarized(summarize));
        view.render(indent, summarize, &f)
    };
    let mut out = format!("tensor({body}");
    let mut last = body.len() - body.rfind('\n').map_or(0, |i| i + 1) + indent + 1;
    for s in suffixes {
        if last + s.len() + 2 > LINEWIDTH {
            out.push_str(&format!(",\n{}{s}", " ".repeat(indent)));
            last = indent + s.len();
        } else {
            out.push_str(&format!(", {s}"));
            last += s.len() + 2;
        }
    }
    out.push(')');
    out
}

/// `x.shape` as PyTorch prints it: `torch.Size([4, 3, 14, 14])`.
pub fn torch_size(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

/// PyTorch's name of a dtype (`torch.float32`).
pub fn torch_dtype(d: DType) -> &'static str {
    match d {
        DType::Bool => "torch.bool",
        DType::U8 => "torch.uint8",
        DType::I32 => "torch.int32",
        DType::I64 => "torch.int64",
        DType::F32 => "torch.float32",
        DType::F64 => "torch.float64",
    }
}

fn py_tuple(shape: &[usize]) -> String {
    match shape {
        [d] => format!("({d},)"),
        _ => {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", dims.join(", "))
        }
    }
}

/// A sub-tensor: `shape` over `values[offset..]`, row-major.
struct View<'a> {
    shape: &'a [usize],
    values: &'a [f64],
    offset: usize,
}

impl View<'_> {
    fn row(&self, i: usize) -> View<'_> {
        let inner: usize = self.shape[1..].iter().product();
        View {
            shape: &self.shape[1..],
            values: self.values,
            offset: self.offset + i * inner,
        }
    }

    /// The indices of the first axis that print: all, or the edge items.
    fn shown(&self, summarize: bool) -> Vec<Option<usize>> {
        let n = self.shape[0];
        if summarize && n > 2 * EDGEITEMS {
            (0..EDGEITEMS)
                .map(Some)
                .chain([None])
                .chain((n - EDGEITEMS..n).map(Some))
                .collect()
        } else {
            (0..n).map(Some).collect()
        }
    }

    /// The values the formatter sizes itself by (PyTorch's `get_summarized_data`).
    fn summarized(&self, summarize: bool) -> Vec<f64> {
        if self.shape.is_empty() {
            return vec![self.values[self.offset]];
        }
        let mut out = Vec::new();
        for i in self.shown(summarize).into_iter().flatten() {
            if self.shape.len() == 1 {
                out.push(self.values[self.offset + i]);
            } else {
                out.extend(self.row(i).summarized(summarize));
            }
        }
        out
    }

    fn render(&self, indent: usize, summarize: bool, f: &Formatter) -> String {
        match self.shape.len() {
            0 => f.format(self.values[self.offset]),
            1 => {
                let per_line = ((LINEWIDTH.saturating_sub(indent)) / (f.width + 2)).max(1);
                let items: Vec<String> = self
                    .shown(summarize)
                    .into_iter()
                    .map(|i| match i {
                        Some(i) => f.format(self.values[self.offset + i]),
                        None => " ...".to_string(),
                    })
                    .collect();
                let lines: Vec<String> = items.chunks(per_line).map(|c| c.join(", ")).collect();
                format!(
                    "[{}]",
                    lines.join(&format!(",\n{}", " ".repeat(indent + 1)))
                )
            }
            dim => {
                let rows: Vec<String> = self
                    .shown(summarize)
                    .into_iter()
                    .map(|i| match i {
                        Some(i) => self.row(i).render(indent + 1, summarize, f),
                        None => "...".to_string(),
                    })
                    .collect();
                let sep = format!(",{}{}", "\n".repeat(dim - 1), " ".repeat(indent + 1));
                format!("[{}]", rows.join(&sep))
            }
        }
    }
}

/// PyTorch's `_Formatter`: one width and one notation for every element.
struct Formatter {
    float: bool,
    bool_: bool,
    int_mode: bool,
    sci_mode: bool,
    width: usize,
}

impl Formatter {
    fn new(dtype: DType, values: &[f64]) -> Formatter {
        let mut f = Formatter {
            float: dtype.is_float(),
            bool_: dtype == DType::Bool,
            int_mode: true,
            sci_mode: false,
            width: 1,
        };
        if !f.float {
            for &v in values {
                f.width = f.width.max(f.plain(v).len());
            }
            return f;
        }
        let finite: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v != 0.0)
            .collect();
        if finite.is_empty() {
            return f;
        }
        let max = finite.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let min = finite.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        f.int_mode = finite.iter().all(|v| *v == v.ceil());
        f.sci_mode = max / min > 1000.0 || max > 1.0e8 || min < 1.0e-4;
        for &v in &finite {
            let len = if f.sci_mode {
                sci(v).len()
            } else if f.int_mode {
                format!("{v:.0}").len() + 1
            } else {
                format!("{v:.PRECISION$}").len()
            };
            f.width = f.width.max(len);
        }
        f
    }

    /// An integer or bool element as Python's `str` writes it.
    fn plain(&self, v: f64) -> String {
        if self.bool_ {
            if v != 0.0 { "True" } else { "False" }.to_string()
        } else {
            format!("{}", v as i64)
        }
    }

    fn format(&self, v: f64) -> String {
        let s = if !self.float {
            self.plain(v)
        } else if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else if self.sci_mode {
            sci(v)
        } else if self.int_mode {
            format!("{v:.0}.")
        } else {
            format!("{v:.PRECISION$}")
        };
        format!("{s:>w$}", w = self.width)
    }
}

/// Python's `'{:.4e}'.format(v)`: a signed exponent of at least two digits.
fn sci(v: f64) -> String {
    let s = format!("{v:.PRECISION$e}");
    let (m, e) = s.split_once('e').expect("`{:e}` has an exponent");
    let e: i32 = e.parse().expect("an integer exponent");
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_f32(v, shape).unwrap()
    }

    #[test]
    fn prints_as_pytorch() {
        // Each expectation is PyTorch 2.x's print output for the same tensor.
        assert_eq!(torch_str(&t(&[7.0], &[])), "tensor(7.)");
        assert_eq!(
            torch_str(&t(&[1., 2., 3., 4., 5., 6.], &[2, 3])),
            "tensor([[1., 2., 3.],\n        [4., 5., 6.]])"
        );
        assert_eq!(
            torch_str(&t(&[2.1213203, 2.1213203, 2.1213203], &[3])),
            "tensor([2.1213, 2.1213, 2.1213])"
        );
        assert_eq!(
            torch_str(&t(&[0.1582, -0.4119], &[2])),
            "tensor([ 0.1582, -0.4119])"
        );
        assert_eq!(
            torch_str(&t(&[1e-5, 1.0], &[2])),
            "tensor([1.0000e-05, 1.0000e+00])"
        );
        assert_eq!(
            torch_str(&Tensor::from_i64(&[3, 4, 5], &[3]).unwrap()),
            "tensor([3, 4, 5])"
        );
        assert_eq!(
            torch_str(&Tensor::from_f64(&[0.5], &[1]).unwrap()),
            "tensor([0.5000], dtype=torch.float64)"
        );
        assert_eq!(torch_str(&t(&[], &[0])), "tensor([])");
        assert_eq!(
            torch_str(&Tensor::zeros(DType::I64, &[0, 3])),
            "tensor([], size=(0, 3), dtype=torch.int64)"
        );
        assert_eq!(
            torch_str(&t(&[f32::NAN, 1.0, f32::NEG_INFINITY], &[3])),
            "tensor([nan, 1., -inf])"
        );
        let b = Tensor::new(&[2], aotgrad_ir::Data::Bool(vec![true, false])).unwrap();
        assert_eq!(torch_str(&b), "tensor([ True, False])");
        assert_eq!(torch_size(&[4, 3, 14, 14]), "torch.Size([4, 3, 14, 14])");
    }
}

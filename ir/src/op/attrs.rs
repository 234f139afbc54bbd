//! Text attributes of each op, printed and parsed side by side so they cannot drift.
//!
//! An attribute value is an atom (`3`, `true`, `f32`, `N`, `0:3:1`, `-inf`) or a list of
//! values. Each op lists its attributes in [`Op::attrs`] and reads them back in
//! [`Op::from_text`].

use std::collections::BTreeMap;
use std::fmt;

use super::{
    AllReduceOp, ArgReduceOp, BinaryOp, ConstValue, Distribution, Op, ReduceOp, SliceAxis, UnaryOp,
    Window,
};
use crate::{DType, Dim, Scalar, Shape};

/// A parsed or to-be-printed attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Atom(String),
    List(Vec<AttrValue>),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Atom(a) => f.write_str(a),
            AttrValue::List(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

fn atom(s: impl ToString) -> AttrValue {
    AttrValue::Atom(s.to_string())
}

fn list<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> AttrValue) -> AttrValue {
    AttrValue::List(items.into_iter().map(f).collect())
}

fn shape_attr(s: &Shape) -> AttrValue {
    list(&s.0, atom)
}

impl Op {
    /// The attributes printed after the operands, in a fixed order.
    pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
        match self {
            Op::Input { .. }
            | Op::Param { .. }
            | Op::State { .. }
            | Op::Const { .. }
            | Op::Unary(_)
            | Op::Binary(_)
            | Op::Where => vec![],
            Op::Cast(d) => vec![("dtype", atom(d))],
            Op::Reduce { axes, keepdim, .. } => {
                vec![("axes", list(axes, atom)), ("keepdim", atom(keepdim))]
            }
            Op::ArgReduce { axis, keepdim, .. } => {
                vec![("axis", atom(axis)), ("keepdim", atom(keepdim))]
            }
            Op::Reshape(s) | Op::Expand(s) => vec![("shape", shape_attr(s))],
            Op::Permute(p) => vec![("perm", list(p, atom))],
            Op::Slice(axes) => vec![(
                "ranges",
                list(axes, |a| match a {
                    SliceAxis::Full => atom(":"),
                    SliceAxis::Range { start, stop, step } => {
                        atom(format!("{start}:{stop}:{step}"))
                    }
                }),
            )],
            Op::Pad { pads, value } => vec![
                ("pads", list(pads, |(a, b)| list([a, b], atom))),
                ("value", atom(pad_value_text(value))),
            ],
            Op::Concat { axis } | Op::Gather { axis } | Op::ScatterAdd { axis } => {
                vec![("axis", atom(axis))]
            }
            Op::MatMul { trans_a, trans_b } => {
                // Only the unusual case is spelled out: plain matmuls stay short.
                let mut v = vec![];
                if *trans_a {
                    v.push(("trans_a", atom(true)));
                }
                if *trans_b {
                    v.push(("trans_b", atom(true)));
                }
                v
            }
            Op::Iota { shape, axis, dtype } => vec![
                ("shape", shape_attr(shape)),
                ("axis", atom(axis)),
                ("dtype", atom(dtype)),
            ],
            Op::Random { shape, dtype, .. } => {
                vec![("shape", shape_attr(shape)), ("dtype", atom(dtype))]
            }
            Op::Unfold(w) => window_attrs(w),
            Op::Fold { window, size } => {
                let mut v = window_attrs(window);
                v.push(("size", list(size, atom)));
                v
            }
            Op::AllReduce { op } => vec![("op", atom(op.name()))],
            Op::TopK { axis, k, largest } => vec![
                ("axis", atom(axis)),
                ("k", atom(k)),
                ("largest", atom(largest)),
            ],
        }
    }

    /// Rebuilds a non-leaf op from its mnemonic and attributes. Leaves are parsed by the
    /// parser itself because their payload (a name or literal) is not an attribute.
    pub fn from_text(name: &str, a: &mut AttrReader) -> Result<Op, AttrError> {
        if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
            return Ok(Op::Unary(u));
        }
        if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
            return Ok(Op::Binary(b));
        }
        if let Some(r) = ReduceOp::ALL.into_iter().find(|r| r.name() == name) {
            return Ok(Op::Reduce {
                op: r,
                axes: a.usizes("axes")?,
                keepdim: a.bool("keepdim")?,
            });
        }
        Ok(match name {
            "where" => Op::Where,
            "cast" => Op::Cast(a.dtype("dtype")?),
            "argmax" | "argmin" => Op::ArgReduce {
                op: if name == "argmax" {
                    ArgReduceOp::ArgMax
                } else {
                    ArgReduceOp::ArgMin
                },
                axis: a.usize("axis")?,
                keepdim: a.bool("keepdim")?,
            },
            "reshape" => Op::Reshape(a.shape("shape")?),
            "expand" => Op::Expand(a.shape("shape")?),
            "permute" => Op::Permute(a.usizes("perm")?),
            "slice" => Op::Slice(a.slices("ranges")?),
            "pad" => {
                let pads = a.pairs("pads")?;
                let value = a.take("value")?;
                Op::Pad {
                    pads,
                    value: parse_untyped_scalar(&value).ok_or_else(|| AttrError {
                        key: Some("value".into()),
                        message: format!("expected a number, found `{value}`"),
                    })?,
                }
            }
            "concat" => Op::Concat {
                axis: a.usize("axis")?,
            },
            "matmul" => Op::MatMul {
                trans_a: a.flag("trans_a")?,
                trans_b: a.flag("trans_b")?,
            },
            "gather" => Op::Gather {
                axis: a.usize("axis")?,
            },
            "scatter_add" => Op::ScatterAdd {
                axis: a.usize("axis")?,
            },
            "iota" => Op::Iota {
                shape: a.shape("shape")?,
                axis: a.usize("axis")?,
                dtype: a.dtype("dtype")?,
            },
            "random_uniform" | "random_normal" => Op::Random {
                dist: if name == "random_uniform" {
                    Distribution::Uniform
                } else {
                    Distribution::Normal
                },
                shape: a.shape("shape")?,
                dtype: a.dtype("dtype")?,
            },
            "unfold" => Op::Unfold(a.window()?),
            "fold" => Op::Fold {
                window: a.window()?,
                size: a.pair("size")?,
            },
            "all_reduce" => Op::AllReduce {
                op: match a.atom("op")?.as_str() {
                    "sum" => AllReduceOp::Sum,
                    "mean" => AllReduceOp::Mean,
                    other => {
                        return Err(AttrError {
                            key: Some("op".into()),
                            message: format!("expected sum or mean, found `{other}`"),
                        });
                    }
                },
            },
            "topk" => Op::TopK {
                axis: a.usize("axis")?,
                k: a.usize("k")?,
                largest: a.bool("largest")?,
            },
            _ => {
                return Err(AttrError {
                    key: None,
                    message: format!("unknown op `{name}`"),
                });
            }
        })
    }
}

fn window_attrs(w: &Window) -> Vec<(&'static str, AttrValue)> {
    vec![
        ("kernel", list(w.kernel, atom)),
        ("stride", list(w.stride, atom)),
        ("dilation", list(w.dilation, atom)),
    ]
}

/// A constant's payload in text: a scalar for a splat, a bracketed flat list for dense.
pub fn const_text(value: &ConstValue) -> String {
    match value {
        ConstValue::Splat(s) => s.to_string(),
        ConstValue::Dense(d) => {
            let items: Vec<String> = (0..d.len()).map(|i| d.get(i).to_string()).collect();
            format!("[{}]", items.join(", "))
        }
    }
}

/// Parses an atom as a scalar of `dtype`, exactly (no rounding through another type).
pub fn parse_scalar(dtype: DType, s: &str) -> Option<Scalar> {
    if let Some(hex) = s.strip_prefix("nan:0x") {
        return match dtype {
            DType::F32 => Some(Scalar::F32(f32::from_bits(
                u32::from_str_radix(hex, 16).ok()?,
            ))),
            DType::F64 => Some(Scalar::F64(f64::from_bits(
                u64::from_str_radix(hex, 16).ok()?,
            ))),
            _ => None,
        };
    }
    Some(match dtype {
        DType::Bool => Scalar::Bool(s.parse().ok()?),
        DType::U8 => Scalar::U8(s.parse().ok()?),
        DType::I32 => Scalar::I32(s.parse().ok()?),
        DType::I64 => Scalar::I64(s.parse().ok()?),
        DType::F32 => Scalar::F32(s.parse().ok()?),
        DType::F64 => Scalar::F64(s.parse().ok()?),
    })
}

/// A pad value carries its dtype (`f32:0.0`) so that it parses back bit for bit.
fn parse_untyped_scalar(v: &AttrValue) -> Option<Scalar> {
    let AttrValue::Atom(s) = v else { return None };
    let (d, rest) = s.split_once(':')?;
    parse_scalar(DType::from_name(d)?, rest)
}

/// Why an attribute could not be read; `key` lets the parser point at it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrError {
    pub key: Option<String>,
    pub message: String,
}

/// Typed access to the `{key=value, ...}` block of one parsed node.
#[derive(Debug, Default)]
pub struct AttrReader {
    entries: BTreeMap<String, AttrValue>,
}

impl AttrReader {
    pub fn new(entries: impl IntoIterator<Item = (String, AttrValue)>) -> AttrReader {
        AttrReader {
            entries: entries.into_iter().collect(),
        }
    }

    /// Keys nobody asked for: reported as unknown attributes.
    pub fn leftover(&self) -> Option<&str> {
        self.entries.keys().next().map(String::as_str)
    }

    fn err(key: &str, message: String) -> AttrError {
        AttrError {
            key: Some(key.into()),
            message,
        }
    }

    pub fn take(&mut self, key: &str) -> Result<AttrValue, AttrError> {
        self.entries
            .remove(key)
            .ok_or_else(|| Self::err(key, format!("missing attribute `{key}`")))
    }

    fn atom(&mut self, key: &str) -> Result<String, AttrError> {
        match self.take(key)? {
            AttrValue::Atom(s) => Ok(s),
            v => Err(Self::err(
                key,
                format!("expected a single value, found `{v}`"),
            )),
        }
    }

    fn atoms(&mut self, key: &str) -> Result<Vec<AttrValue>, AttrError> {
        match self.take(key)? {
            AttrValue::List(v) => Ok(v),
            v => Err(Self::err(key, format!("expected a list, found `{v}`"))),
        }
    }

    pub fn usize(&mut self, key: &str) -> Result<usize, AttrError> {
        let s = self.atom(key)?;
        s.parse()
            .map_err(|_| Self::err(key, format!("expected a non-negative integer, found `{s}`")))
    }

    pub fn usizes(&mut self, key: &str) -> Result<Vec<usize>, AttrError> {
        self.atoms(key)?
            .iter()
            .map(|v| match v {
                AttrValue::Atom(s) => s.parse().ok(),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Self::err(key, "expected a list of non-negative integers".into()))
    }

    /// Two non-negative integers (`[kh, kw]`).
    pub fn pair(&mut self, key: &str) -> Result<[usize; 2], AttrError> {
        let v = self.usizes(key)?;
        <[usize; 2]>::try_from(v.as_slice())
            .map_err(|_| Self::err(key, format!("expected two integers, found {}", v.len())))
    }

    /// The `kernel`, `stride` and `dilation` of a window op.
    pub fn window(&mut self) -> Result<Window, AttrError> {
        Ok(Window {
            kernel: self.pair("kernel")?,
            stride: self.pair("stride")?,
            dilation: self.pair("dilation")?,
        })
    }

    pub fn bool(&mut self, key: &str) -> Result<bool, AttrError> {
        let s = self.atom(key)?;
        s.parse()
            .map_err(|_| Self::err(key, format!("expected true or false, found `{s}`")))
    }

    /// An optional boolean attribute that defaults to false.
    pub fn flag(&mut self, key: &str) -> Result<bool, AttrError> {
        if self.entries.contains_key(key) {
            self.bool(key)
        } else {
            Ok(false)
        }
    }

    pub fn dtype(&mut self, key: &str) -> Result<DType, AttrError> {
        let s = self.atom(key)?;
        DType::from_name(&s).ok_or_else(|| Self::err(key, format!("unknown dtype `{s}`")))
    }

    pub fn shape(&mut self, key: &str) -> Result<Shape, AttrError> {
        let dims = self.atoms(key)?;
        dims.iter()
            .map(|v| match v {
                AttrValue::Atom(s) => parse_dim(s),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(Shape)
            .ok_or_else(|| Self::err(key, "expected a list of sizes or symbol names".into()))
    }

    pub fn pairs(&mut self, key: &str) -> Result<Vec<(usize, usize)>, AttrError> {
        let items = self.atoms(key)?;
        items
            .iter()
            .map(|v| match v {
                AttrValue::List(p) if p.len() == 2 => match (&p[0], &p[1]) {
                    (AttrValue::Atom(a), AttrValue::Atom(b)) => {
                        Some((a.parse().ok()?, b.parse().ok()?))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Self::err(key, "expected a list of [before, after] pairs".into()))
    }

    pub fn slices(&mut self, key: &str) -> Result<Vec<SliceAxis>, AttrError> {
        let items = self.atoms(key)?;
        items
            .iter()
            .map(|v| match v {
                AttrValue::Atom(s) if s == ":" => Some(SliceAxis::Full),
                AttrValue::Atom(s) => {
                    let mut it = s.split(':').map(str::parse::<usize>);
                    let (start, stop, step) =
                        (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
                    it.next()
                        .is_none()
                        .then_some(SliceAxis::Range { start, stop, step })
                }
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or_else(|| Self::err(key, "expected a list of `:` or `start:stop:step`".into()))
    }
}

/// A dim is a number, a symbol name (letter or `_` first), or a merged dim (`5*N`).
pub fn parse_dim(s: &str) -> Option<Dim> {
    if let Ok(n) = s.parse::<usize>() {
        return Some(Dim::Known(n));
    }
    if s.contains('*') {
        return crate::shape::Numel::parse(s).map(|n| n.as_dim());
    }
    let mut chars = s.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then(|| Dim::sym(s))
}

/// The pad value is printed with its dtype so the round trip is exact.
pub fn pad_value_text(value: &Scalar) -> String {
    format!("{}:{}", value.dtype(), value)
}

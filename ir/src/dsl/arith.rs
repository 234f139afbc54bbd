//! Elementwise arithmetic: operators with PyTorch promotion and broadcasting, unary math,
//! activations.

use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;

use super::Var;
use crate::{
    BinaryOp, Category, ConstValue, DType, Op, OpError, Scalar, Shape, TensorType, UnaryOp,
};

type Loc = &'static Location<'static>;

/// The right-hand side of an elementwise op: another value or a Rust number (`f64` or
/// `i32`). A number takes the other operand's dtype (PyTorch's "wrapped number" rule), so
/// `x * 0.01` on an f32 tensor multiplies by `0.01f32`.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'g> {
    Var(Var<'g>),
    Float(f64),
    Int(i64),
}

impl<'g> From<Var<'g>> for Operand<'g> {
    fn from(v: Var<'g>) -> Self {
        Operand::Var(v)
    }
}
impl From<f64> for Operand<'_> {
    fn from(v: f64) -> Self {
        Operand::Float(v)
    }
}
impl From<i32> for Operand<'_> {
    fn from(v: i32) -> Self {
        Operand::Int(v as i64)
    }
}
impl From<i64> for Operand<'_> {
    fn from(v: i64) -> Self {
        Operand::Int(v)
    }
}

impl<'g> Var<'g> {
    /// A constant shaped like `shape`, holding `value` rounded to `dtype`.
    pub(crate) fn splat(self, loc: Loc, value: Scalar, shape: Shape) -> Var<'g> {
        let ty = TensorType::new(value.dtype(), shape);
        self.b.add(
            loc,
            "const",
            Op::Const {
                value: ConstValue::Splat(value),
                ty,
            },
            &[],
        )
    }

    /// Broadcasts to `target` (PyTorch `broadcast_to`): adds leading size-1 axes, then
    /// expands size-1 axes.
    pub(crate) fn broadcast_as(self, loc: Loc, name: &str, target: &Shape) -> Var<'g> {
        let shape = self.shape();
        if self.is_poisoned() || &shape == target {
            return self;
        }
        if !shape.broadcasts_to(target) {
            return self.fail(
                loc,
                name,
                OpError::NotBroadcastable {
                    lhs: shape,
                    rhs: target.clone(),
                },
            );
        }
        // A splat constant is re-splatted at the target shape instead of expanded.
        let splat = match &self.b.state.borrow().graph.node(self.id).op {
            Op::Const {
                value: ConstValue::Splat(s),
                ..
            } => Some(*s),
            _ => None,
        };
        if let Some(s) = splat {
            return self.splat(loc, s, target.clone());
        }
        let mut v = self;
        if shape.rank() < target.rank() {
            let mut dims = vec![crate::Dim::Known(1); target.rank() - shape.rank()];
            dims.extend(shape.0.iter().cloned());
            v = v.prim(loc, name, Op::Reshape(Shape(dims)), &[]);
        }
        if v.shape() != *target {
            v = v.prim(loc, name, Op::Expand(target.clone()), &[]);
        }
        v
    }

    /// Promotes and broadcasts two operands to a common type, then applies `op`.
    pub(crate) fn binary(
        self,
        loc: Loc,
        name: &str,
        rhs: Operand<'g>,
        op: BinaryOp,
        swap: bool,
    ) -> Var<'g> {
        if self.is_poisoned() {
            return self;
        }
        let (a, b) = match rhs {
            Operand::Var(b) => {
                if b.is_poisoned() {
                    return b;
                }
                let dtype = promoted(op, DType::promote(self.dtype(), b.dtype()));
                let shape = match Shape::broadcast(&self.shape(), &b.shape()) {
                    Some(s) => s,
                    None => {
                        return self.fail(
                            loc,
                            name,
                            OpError::NotBroadcastable {
                                lhs: self.shape(),
                                rhs: b.shape(),
                            },
                        );
                    }
                };
                (
                    self.cast(dtype).broadcast_as(loc, name, &shape),
                    b.cast(dtype).broadcast_as(loc, name, &shape),
                )
            }
            Operand::Float(_) | Operand::Int(_) => {
                let (cat, s) = match rhs {
                    Operand::Float(f) => (Category::Float, Scalar::F64(f)),
                    Operand::Int(i) => (Category::Int, Scalar::I64(i)),
                    Operand::Var(_) => unreachable!(),
                };
                let dtype = promoted(op, DType::promote_with_literal(self.dtype(), cat));
                let a = self.cast(dtype);
                (a, a.splat(loc, s.cast(dtype), self.shape()))
            }
        };
        let (a, b) = if swap { (b, a) } else { (a, b) };
        a.prim(loc, name, Op::Binary(op), &[b])
    }

    /// `op` applied elementwise with PyTorch's promotion and broadcasting, named by its
    /// mnemonic in errors: what `a + b`, `a.lt(b)`, ... do, for code that picks the op
    /// at run time (the host tensor operations).
    #[track_caller]
    pub fn binary_op(self, op: BinaryOp, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), op.name(), rhs.into(), op, false)
    }

    /// `op` applied elementwise (float functions of integers compute in f32, as
    /// PyTorch's do).
    #[track_caller]
    pub fn unary_op(self, op: UnaryOp) -> Var<'g> {
        self.unary(Location::caller(), op.name(), op)
    }

    pub(crate) fn unary(self, loc: Loc, name: &str, op: UnaryOp) -> Var<'g> {
        // PyTorch computes float functions of integer tensors in the default float type.
        let float_only = !matches!(
            op,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign | UnaryOp::Not | UnaryOp::StopGradient
        );
        let x = if float_only && !self.dtype().is_float() {
            self.cast(DType::F32)
        } else {
            self
        };
        x.prim(loc, name, Op::Unary(op), &[])
    }

    #[track_caller]
    pub fn pow(self, exponent: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(
            Location::caller(),
            "pow",
            exponent.into(),
            BinaryOp::Pow,
            false,
        )
    }
    #[track_caller]
    pub fn maximum(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(
            Location::caller(),
            "maximum",
            rhs.into(),
            BinaryOp::Maximum,
            false,
        )
    }
    #[track_caller]
    pub fn minimum(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(
            Location::caller(),
            "minimum",
            rhs.into(),
            BinaryOp::Minimum,
            false,
        )
    }
    #[track_caller]
    pub fn lt(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "lt", rhs.into(), BinaryOp::Lt, false)
    }
    #[track_caller]
    pub fn le(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "le", rhs.into(), BinaryOp::Le, false)
    }
    #[track_caller]
    pub fn gt(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "gt", rhs.into(), BinaryOp::Gt, false)
    }
    #[track_caller]
    pub fn ge(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "ge", rhs.into(), BinaryOp::Ge, false)
    }
    /// Elementwise `==` (PyTorch's `eq`).
    #[track_caller]
    pub fn equal(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "eq", rhs.into(), BinaryOp::Eq, false)
    }
    /// Elementwise `!=` (PyTorch's `ne`).
    #[track_caller]
    pub fn not_equal(self, rhs: impl Into<Operand<'g>>) -> Var<'g> {
        self.binary(Location::caller(), "ne", rhs.into(), BinaryOp::Ne, false)
    }
    #[track_caller]
    pub fn logical_and(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(Location::caller(), "and", rhs.into(), BinaryOp::And, false)
    }
    #[track_caller]
    pub fn logical_or(self, rhs: Var<'g>) -> Var<'g> {
        self.binary(Location::caller(), "or", rhs.into(), BinaryOp::Or, false)
    }
    #[track_caller]
    pub fn logical_not(self) -> Var<'g> {
        self.unary(Location::caller(), "not", UnaryOp::Not)
    }

    /// `where(self, a, b)`: `a` where this bool condition holds, else `b`; all three
    /// broadcast and `a`, `b` are promoted to a common dtype.
    #[track_caller]
    pub fn where_(self, a: impl Into<Operand<'g>>, b: impl Into<Operand<'g>>) -> Var<'g> {
        let loc = Location::caller();
        let (a, b) = (a.into(), b.into());
        let like = match (a, b) {
            (Operand::Var(v), _) | (_, Operand::Var(v)) => v,
            _ => {
                return self.fail(
                    loc,
                    "where",
                    crate::BuildErrorKind::Usage("where needs at least one tensor branch".into()),
                );
            }
        };
        let to_var = |o: Operand<'g>, other: Operand<'g>| match o {
            Operand::Var(v) => v,
            Operand::Float(f) => {
                let dt = match other {
                    Operand::Var(v) => DType::promote_with_literal(v.dtype(), Category::Float),
                    _ => DType::F32,
                };
                like.splat(loc, Scalar::F64(f).cast(dt), Shape::scalar())
            }
            Operand::Int(i) => {
                let dt = match other {
                    Operand::Var(v) => DType::promote_with_literal(v.dtype(), Category::Int),
                    _ => DType::I64,
                };
                like.splat(loc, Scalar::I64(i).cast(dt), Shape::scalar())
            }
        };
        let (a, b) = (to_var(a, b), to_var(b, a));
        if [self, a, b].iter().any(|v| v.is_poisoned()) {
            return self.b.poison();
        }
        let dtype = DType::promote(a.dtype(), b.dtype());
        let shape = [self.shape(), a.shape(), b.shape()]
            .iter()
            .try_fold(Shape::scalar(), |acc, s| Shape::broadcast(&acc, s));
        let Some(shape) = shape else {
            return self.fail(
                loc,
                "where",
                OpError::NotBroadcastable {
                    lhs: a.shape(),
                    rhs: b.shape(),
                },
            );
        };
        let c = self.broadcast_as(loc, "where", &shape);
        let a = a.cast(dtype).broadcast_as(loc, "where", &shape);
        let b = b.cast(dtype).broadcast_as(loc, "where", &shape);
        c.prim(loc, "where", Op::Where, &[a, b])
    }

    #[track_caller]
    pub fn abs(self) -> Var<'g> {
        self.unary(Location::caller(), "abs", UnaryOp::Abs)
    }
    #[track_caller]
    pub fn sign(self) -> Var<'g> {
        self.unary(Location::caller(), "sign", UnaryOp::Sign)
    }
    #[track_caller]
    pub fn exp(self) -> Var<'g> {
        self.unary(Location::caller(), "exp", UnaryOp::Exp)
    }
    #[track_caller]
    pub fn log(self) -> Var<'g> {
        self.unary(Location::caller(), "log", UnaryOp::Log)
    }
    #[track_caller]
    pub fn sqrt(self) -> Var<'g> {
        self.unary(Location::caller(), "sqrt", UnaryOp::Sqrt)
    }
    #[track_caller]
    pub fn reciprocal(self) -> Var<'g> {
        self.unary(Location::caller(), "recip", UnaryOp::Recip)
    }
    #[track_caller]
    pub fn rsqrt(self) -> Var<'g> {
        self.sqrt().reciprocal()
    }
    #[track_caller]
    pub fn sin(self) -> Var<'g> {
        self.unary(Location::caller(), "sin", UnaryOp::Sin)
    }
    #[track_caller]
    pub fn cos(self) -> Var<'g> {
        self.unary(Location::caller(), "cos", UnaryOp::Cos)
    }
    #[track_caller]
    pub fn tanh(self) -> Var<'g> {
        self.unary(Location::caller(), "tanh", UnaryOp::Tanh)
    }
    #[track_caller]
    pub fn floor(self) -> Var<'g> {
        self.unary(Location::caller(), "floor", UnaryOp::Floor)
    }
    #[track_caller]
    pub fn ceil(self) -> Var<'g> {
        self.unary(Location::caller(), "ceil", UnaryOp::Ceil)
    }
    /// Rounds toward zero (`torch.trunc`).
    #[track_caller]
    pub fn trunc(self) -> Var<'g> {
        self.unary(Location::caller(), "trunc", UnaryOp::Trunc)
    }
    /// The fractional part with the sign of `x`: `x - trunc(x)` (`torch.frac`).
    #[track_caller]
    pub fn frac(self) -> Var<'g> {
        let loc = Location::caller();
        let t = self.unary(loc, "frac", UnaryOp::Trunc);
        let x = if self.dtype().is_float() {
            self
        } else {
            self.cast(DType::F32)
        };
        x.binary(loc, "frac", Operand::Var(t), BinaryOp::Sub, false)
    }
    /// `log(1 + x)`, accurate where `x` is tiny (`torch.log1p`).
    #[track_caller]
    pub fn log1p(self) -> Var<'g> {
        self.unary(Location::caller(), "log1p", UnaryOp::Log1p)
    }
    /// `exp(x) - 1`, accurate where `x` is tiny (`torch.expm1`).
    #[track_caller]
    pub fn expm1(self) -> Var<'g> {
        self.unary(Location::caller(), "expm1", UnaryOp::Expm1)
    }
    /// The error function (`torch.erf`).
    #[track_caller]
    pub fn erf(self) -> Var<'g> {
        self.unary(Location::caller(), "erf", UnaryOp::Erf)
    }
    #[track_caller]
    pub fn square(self) -> Var<'g> {
        self * self
    }
    /// The same value with no gradient flowing through it (PyTorch's `detach`).
    #[track_caller]
    pub fn detach(self) -> Var<'g> {
        self.unary(Location::caller(), "stop_gradient", UnaryOp::StopGradient)
    }

    /// `max(x, 0)` as compare+select, so the derivative at 0 is 0 like PyTorch's, and a
    /// NaN propagates (the select is on `x <= 0`, which is false for NaN) as in PyTorch.
    #[track_caller]
    pub fn relu(self) -> Var<'g> {
        self.le(0.0).where_(0.0, self)
    }

    #[track_caller]
    pub fn leaky_relu(self, negative_slope: f64) -> Var<'g> {
        self.gt(0.0).where_(self, self * negative_slope)
    }

    /// Logistic sigmoid in a form whose value and composed gradient never overflow:
    /// with `z = exp(-|x|)`, `sigmoid(x) = (x >= 0 ? 1 : z) / (1 + z)`.
    #[track_caller]
    pub fn sigmoid(self) -> Var<'g> {
        let x = if self.dtype().is_float() {
            self
        } else {
            self.cast(DType::F32)
        };
        let z = (-x.abs()).exp();
        let num = x.ge(0.0).where_(z.ones_like(), z);
        num / (z + 1.0)
    }

    /// `log(1 + exp(x))` as `max(x, 0) + log1p(exp(-|x|))`: no overflow for large
    /// `|x|`, and no rounding of `1 + tiny` for very negative `x`.
    #[track_caller]
    pub fn softplus(self) -> Var<'g> {
        self.relu() + (-self.abs()).exp().log1p()
    }

    /// `min(max(x, lo), hi)` with PyTorch's gradient (1 on the closed interval).
    #[track_caller]
    pub fn clamp(self, min: Option<f64>, max: Option<f64>) -> Var<'g> {
        let mut v = self;
        if let Some(lo) = min {
            v = v.lt(lo).where_(lo, v);
        }
        if let Some(hi) = max {
            v = v.gt(hi).where_(hi, v);
        }
        v
    }

    /// A tensor of ones with this value's type.
    #[track_caller]
    pub fn ones_like(self) -> Var<'g> {
        self.full_like(1.0)
    }

    #[track_caller]
    pub fn zeros_like(self) -> Var<'g> {
        self.full_like(0.0)
    }

    #[track_caller]
    pub fn full_like(self, value: f64) -> Var<'g> {
        self.splat(
            Location::caller(),
            Scalar::F64(value).cast(self.dtype()),
            self.shape(),
        )
    }
}

/// Division and power of integers happen in f32 (PyTorch true division).
fn promoted(op: BinaryOp, dtype: DType) -> DType {
    match op {
        BinaryOp::Div | BinaryOp::Pow if !dtype.is_float() => DType::F32,
        _ => dtype,
    }
}

macro_rules! binop_impls {
    ($Trait:ident, $method:ident, $op:expr, $name:literal) => {
        impl<'g> $Trait<Var<'g>> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                self.binary(Location::caller(), $name, Operand::Var(rhs), $op, false)
            }
        }
        // Exactly one float and one integer type: with more, `(x + 1.0).log()` would be
        // ambiguous (the literal's type must be known before the method is resolved).
        binop_impls!(@scalar $Trait, $method, $op, $name, f64, i32);
    };
    (@scalar $Trait:ident, $method:ident, $op:expr, $name:literal, $($t:ty),*) => {$(
        impl<'g> $Trait<$t> for Var<'g> {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: $t) -> Var<'g> {
                self.binary(Location::caller(), $name, Operand::from(rhs), $op, false)
            }
        }
        impl<'g> $Trait<Var<'g>> for $t {
            type Output = Var<'g>;
            #[track_caller]
            fn $method(self, rhs: Var<'g>) -> Var<'g> {
                rhs.binary(Location::caller(), $name, Operand::from(self), $op, true)
            }
        }
    )*};
}

binop_impls!(Add, add, BinaryOp::Add, "add");
binop_impls!(Sub, sub, BinaryOp::Sub, "sub");
binop_impls!(Mul, mul, BinaryOp::Mul, "mul");
binop_impls!(Div, div, BinaryOp::Div, "div");

impl<'g> Neg for Var<'g> {
    type Output = Var<'g>;
    #[track_caller]
    fn neg(self) -> Var<'g> {
        self.unary(Location::caller(), "neg", UnaryOp::Neg)
    }
}

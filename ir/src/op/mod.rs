//! The primitive op set.
//!
//! Every primitive is one variant of [`Op`]. Each stage of the compiler has exactly one
//! `match` over `Op` with no wildcard arm (shape rule: [`infer`]; text attributes:
//! [`attrs`]; derivative rule: `aotgrad-compiler`'s `autodiff::rules`; reference
//! evaluation: `aotgrad-runtime`'s `interp::eval`), so adding a variant makes the
//! compiler list every place that still has to learn it. Composite ops (softmax, mean,
//! linear, ...) are not here: the DSL builds them from these.

pub mod attrs;
mod infer;
mod table;

pub use table::{BinaryOp, Cost, CpuCall, Operands, UnaryOp};

use crate::{DType, Data, Scalar, Shape, TensorType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArgReduceOp {
    ArgMax,
    ArgMin,
}

/// How an [`Op::AllReduce`] combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllReduceOp {
    /// The elementwise sum over the group's ranks.
    Sum,
    /// The sum divided by the group's size (floats only).
    Mean,
}

impl AllReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            AllReduceOp::Sum => "sum",
            AllReduceOp::Mean => "mean",
        }
    }
}

/// Distributions of the counter-based RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Uniform on `[0, 1)`.
    Uniform,
    /// Standard normal (Box-Muller over two uniforms).
    Normal,
}

/// The range taken along one axis by [`Op::Slice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SliceAxis {
    /// The whole axis (the only choice on a symbolic axis).
    Full,
    /// `start..stop` by `step`, with `start <= stop <= size` and `step >= 1`.
    Range {
        start: usize,
        stop: usize,
        step: usize,
    },
}

/// A sliding window over the last two axes (`H`, `W`) of a tensor: the geometry of
/// [`Op::Unfold`] and [`Op::Fold`]. Padding is not part of it: the DSL pads first (with
/// zero for convolution and average pooling, `-inf` for max pooling), so one pair of
/// primitives serves every window op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
}

impl Window {
    /// Output positions along axis `a` (0 = H, 1 = W) of an input of `size`, or `None`
    /// when the (dilated) kernel does not fit, or a field is zero.
    /// The dilated span `d * (k - 1) + 1` is computed checked: a span that overflows
    /// cannot fit in any size.
    pub fn out_len(&self, a: usize, size: usize) -> Option<usize> {
        let (k, s, d) = (self.kernel[a], self.stride[a], self.dilation[a]);
        if k == 0 || s == 0 || d == 0 {
            return None;
        }
        let span = d.checked_mul(k - 1)?.checked_add(1)?;
        (size >= span).then(|| (size - span) / s + 1)
    }
}

/// A constant: one value repeated over the node's shape (which may be symbolic), or
/// dense row-major data for a static shape.
#[derive(Debug, Clone, PartialEq)]
pub enum ConstValue {
    Splat(Scalar),
    Dense(Data),
}

/// A primitive operation. Leaves (`Input`, `Param`, `State`, `Const`) carry their type;
/// every other op's type follows from its operands by [`Op::infer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Data fed in on every call (a batch, a label vector, the learning rate).
    Input {
        name: String,
        ty: TensorType,
    },
    /// A trainable parameter, persistent across calls.
    Param {
        name: String,
        ty: TensorType,
    },
    /// Persistent non-trainable state (optimizer moments, RNG counters, step count).
    State {
        name: String,
        ty: TensorType,
    },
    Const {
        value: ConstValue,
        ty: TensorType,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(cond, a, b)`: `a` where `cond` is true, else `b`.
    Where,
    Cast(DType),
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdim: bool,
    },
    ArgReduce {
        op: ArgReduceOp,
        axis: usize,
        keepdim: bool,
    },
    Reshape(Shape),
    /// Broadcast size-1 axes to the target shape (same rank).
    Expand(Shape),
    Permute(Vec<usize>),
    Slice(Vec<SliceAxis>),
    /// Constant padding: `(before, after)` elements per axis.
    Pad {
        pads: Vec<(usize, usize)>,
        value: Scalar,
    },
    Concat {
        axis: usize,
    },
    /// Batched matrix product `[..., M, K] @ [..., K, N]`; the flags read an operand's
    /// last two axes transposed, so layout passes can fold permutes away.
    MatMul {
        trans_a: bool,
        trans_b: bool,
    },
    /// `torch.gather(input, axis, index)`.
    Gather {
        axis: usize,
    },
    /// `input.scatter_add(axis, index, src)`.
    ScatterAdd {
        axis: usize,
    },
    /// The index along `axis`, broadcast over `shape`.
    Iota {
        shape: Shape,
        axis: usize,
        dtype: DType,
    },
    /// Sliding windows as a view (im2col without the copy): `[..., H, W]` becomes
    /// `[..., kh, kw, OH, OW]` with `out[.., i, j, oh, ow] = x[.., oh*sh + i*dh,
    /// ow*sw + j*dw]`. Every element is an affine function of the input, so the lowering
    /// makes it a strided view and never a kernel of its own.
    Unfold(Window),
    /// The adjoint of [`Op::Unfold`] (col2im, `F.fold`): `[..., kh, kw, OH, OW]` becomes
    /// `[..., H, W]` (`size`), each input element added at the position `Unfold` read it
    /// from, so overlapping windows sum. Summation order is fixed: by `i`, then `j`.
    Fold {
        window: Window,
        size: [usize; 2],
    },
    /// The positions of the `k` largest (or smallest) elements along `axis`, in that
    /// order, as i64 indices (`torch.topk(..).indices`); the axis keeps its place with
    /// size `k`. The order is total and stable: by value (NaN above every number, as
    /// PyTorch sorts it), ties by lower index first. Values are a `gather` away, so
    /// sort, argsort, kthvalue and randperm are this one primitive.
    TopK {
        axis: usize,
        k: usize,
        largest: bool,
    },
    /// The elementwise sum (or mean) of this value over every rank of the process group
    /// the program runs in (data-parallel training's gradient exchange). Every rank ends
    /// with the same bits: the sum is taken in rank order, whatever the transport. In a
    /// group of one (the reference interpreter, a single process) it is the identity.
    AllReduce {
        op: AllReduceOp,
    },
    /// Counter-based random numbers from an `i64[]` key operand: element `i` of the
    /// output is a pure function of (key, i), identical on every backend.
    Random {
        dist: Distribution,
        shape: Shape,
        dtype: DType,
    },
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Prod];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
        }
    }
}

impl ArgReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ArgReduceOp::ArgMax => "argmax",
            ArgReduceOp::ArgMin => "argmin",
        }
    }
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "random_uniform",
            Distribution::Normal => "random_normal",
        }
    }
}

/// Every primitive's mnemonic in the text format: the table ops from their `ALL`, the
/// others listed here beside [`Op::name`] (which matches every variant). The per-op
/// test files (`tests/ops/<mnemonic>.ir`) are checked against this list.
pub fn mnemonics() -> Vec<&'static str> {
    let mut out = vec![
        "input",
        "param",
        "state",
        "const",
        "where",
        "cast",
        "argmax",
        "argmin",
        "reshape",
        "expand",
        "permute",
        "slice",
        "pad",
        "concat",
        "matmul",
        "gather",
        "scatter_add",
        "iota",
        "random_uniform",
        "random_normal",
        "unfold",
        "fold",
        "topk",
        "all_reduce",
    ];
    out.extend(UnaryOp::ALL.map(UnaryOp::name));
    out.extend(BinaryOp::ALL.map(BinaryOp::name));
    out.extend(ReduceOp::ALL.map(ReduceOp::name));
    out
}

impl Op {
    /// The op's mnemonic in the text format.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::State { .. } => "state",
            Op::Const { .. } => "const",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::Cast(_) => "cast",
            Op::Reduce { op, .. } => op.name(),
            Op::ArgReduce { op, .. } => op.name(),
            Op::Reshape(_) => "reshape",
            Op::Expand(_) => "expand",
            Op::Permute(_) => "permute",
            Op::Slice(_) => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::MatMul { .. } => "matmul",
            Op::Gather { .. } => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::Iota { .. } => "iota",
            Op::Random { dist, .. } => dist.name(),
            Op::Unfold(_) => "unfold",
            Op::Fold { .. } => "fold",
            Op::TopK { .. } => "topk",
            Op::AllReduce { .. } => "all_reduce",
        }
    }

    /// Leaves have no operands and a declared type.
    pub fn is_leaf(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::State { .. } | Op::Const { .. }
        )
    }

    /// The user-visible name of an input, parameter or state leaf.
    pub fn leaf_name(&self) -> Option<&str> {
        match self {
            Op::Input { name, .. } | Op::Param { name, .. } | Op::State { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The type of this op applied to operands of the given types, or why it is invalid.
    ///
    /// Every result is also checked against [`crate::MAX_TENSOR_BYTES`] (the known part
    /// of a symbolic shape; the bound sizes are checked again when a run binds them).
    pub fn infer(&self, operands: &[&TensorType]) -> Result<TensorType, crate::OpError> {
        let ty = infer::infer(self, operands)?;
        crate::limits::check_shape(ty.dtype, &ty.shape).map_err(crate::OpError::TooLarge)?;
        Ok(ty)
    }
}

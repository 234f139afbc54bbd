//! The elementwise primitives, one row each.
//!
//! A row gives everything about an op that is data: its variant, its mnemonic in the
//! text format, the operand dtypes it accepts, what it returns, what computing one
//! element costs (the lowering's recompute-or-store choice), whether gradients flow
//! through it, and whether the CPU backend computes it by calling a runtime helper (a
//! libm function, the same one the interpreter calls, so the two agree bit for bit).
//! `ALL`, `name`, the shape rule's dtype check, the cost table, the activity analysis
//! and the helper ABI are all derived from the rows; what cannot be data (the
//! derivative rule, the reference evaluation, the Cranelift and WGSL lowerings) is one
//! exhaustive `match` per stage, so adding a row makes the compiler list every place
//! the new op still has to reach. See docs/ARCHITECTURE.md, "Adding an op".

/// The operand dtypes an elementwise op accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operands {
    /// Any dtype.
    Any,
    /// Every dtype but bool.
    Numeric,
    /// Numeric dtypes with a sign (not u8).
    SignedNumeric,
    /// f32 and f64.
    Float,
    /// bool only.
    Bool,
}

impl Operands {
    pub fn accepts(self, d: crate::DType) -> bool {
        use crate::DType;
        match self {
            Operands::Any => true,
            Operands::Numeric => d != DType::Bool,
            Operands::SignedNumeric => !matches!(d, DType::Bool | DType::U8),
            Operands::Float => d.is_float(),
            Operands::Bool => d == DType::Bool,
        }
    }

    /// How a shape-rule error says what was expected.
    pub fn expected(self) -> &'static str {
        match self {
            Operands::Any => "any",
            Operands::Numeric => "a numeric",
            Operands::SignedNumeric => "a signed numeric",
            Operands::Float => "a floating-point",
            Operands::Bool => "a bool",
        }
    }
}

/// What computing one element costs, in the lowering's units: a fused tree whose
/// cost passes `RECOMPUTE_LIMIT` is stored once rather than recomputed in every
/// consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// No instruction (an identity such as `stop_gradient`).
    Free,
    /// One simple instruction.
    Cheap,
    /// A divide or square root.
    Divide,
    /// A call into libm (`exp`, `log`, `erf`, ...).
    Transcendental,
}

impl Cost {
    pub fn units(self) -> usize {
        match self {
            Cost::Free => 0,
            Cost::Cheap => 1,
            Cost::Divide => 4,
            Cost::Transcendental => 16,
        }
    }
}

/// How the CPU backend computes an op: an inline instruction, or a call to the runtime
/// helper `aotgrad_<name>_<f32|f64>` (see `aotgrad_compiler::codegen::helpers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuCall {
    Inline,
    Helper,
}

/// Counts the rows of a table.
macro_rules! count {
    () => { 0 };
    ($head:ident $($tail:ident)*) => { 1 + count!($($tail)*) };
}

macro_rules! unary_ops {
    ($(
        $(#[$doc:meta])*
        $v:ident = $name:literal, $operands:ident, $cost:ident, grad: $grad:literal, $cpu:ident;
    )*) => {
        /// Elementwise ops of one operand; the output type is the input type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum UnaryOp {
            $($(#[$doc])* $v,)*
        }

        impl UnaryOp {
            /// Every unary op, in table order.
            pub const ALL: [UnaryOp; count!($($v)*)] = [$(UnaryOp::$v),*];

            /// The mnemonic in the text format.
            pub fn name(self) -> &'static str {
                match self { $(UnaryOp::$v => $name,)* }
            }

            /// The operand dtypes it accepts.
            pub fn operands(self) -> Operands {
                match self { $(UnaryOp::$v => Operands::$operands,)* }
            }

            /// What one element costs.
            pub fn cost(self) -> Cost {
                match self { $(UnaryOp::$v => Cost::$cost,)* }
            }

            /// Whether a gradient flows through it (on float operands).
            pub fn differentiable(self) -> bool {
                match self { $(UnaryOp::$v => $grad,)* }
            }

            /// How the CPU backend computes it.
            pub fn cpu_call(self) -> CpuCall {
                match self { $(UnaryOp::$v => CpuCall::$cpu,)* }
            }
        }
    };
}

macro_rules! binary_ops {
    ($(
        $(#[$doc:meta])*
        $v:ident = $name:literal, $operands:ident, comparison: $cmp:literal, $cost:ident,
            grad: $grad:literal, $cpu:ident;
    )*) => {
        /// Elementwise ops of two operands of identical type (the DSL inserts broadcasts
        /// and casts, so the primitives never have to).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum BinaryOp {
            $($(#[$doc])* $v,)*
        }

        impl BinaryOp {
            /// Every binary op, in table order.
            pub const ALL: [BinaryOp; count!($($v)*)] = [$(BinaryOp::$v),*];

            /// The mnemonic in the text format.
            pub fn name(self) -> &'static str {
                match self { $(BinaryOp::$v => $name,)* }
            }

            /// The operand dtypes it accepts (both operands have one type).
            pub fn operands(self) -> Operands {
                match self { $(BinaryOp::$v => Operands::$operands,)* }
            }

            /// Comparisons produce `bool`; the others the operands' type.
            pub fn is_comparison(self) -> bool {
                match self { $(BinaryOp::$v => $cmp,)* }
            }

            /// What one element costs.
            pub fn cost(self) -> Cost {
                match self { $(BinaryOp::$v => Cost::$cost,)* }
            }

            /// Whether gradients flow into its (float) operands.
            pub fn differentiable(self) -> bool {
                match self { $(BinaryOp::$v => $grad,)* }
            }

            /// How the CPU backend computes it.
            pub fn cpu_call(self) -> CpuCall {
                match self { $(BinaryOp::$v => CpuCall::$cpu,)* }
            }
        }
    };
}

unary_ops! {
    Neg = "neg", SignedNumeric, Cheap, grad: true, Inline;
    Abs = "abs", Numeric, Cheap, grad: true, Inline;
    Sign = "sign", SignedNumeric, Cheap, grad: false, Inline;
    Exp = "exp", Float, Transcendental, grad: true, Helper;
    Log = "log", Float, Transcendental, grad: true, Helper;
    Sqrt = "sqrt", Float, Divide, grad: true, Inline;
    Recip = "recip", Float, Divide, grad: true, Inline;
    Sin = "sin", Float, Transcendental, grad: true, Helper;
    Cos = "cos", Float, Transcendental, grad: true, Helper;
    Tanh = "tanh", Float, Transcendental, grad: true, Helper;
    Floor = "floor", Float, Cheap, grad: false, Inline;
    Ceil = "ceil", Float, Cheap, grad: false, Inline;
    /// Rounds toward zero (`torch.trunc`); `frac` is `x - trunc(x)`.
    Trunc = "trunc", Float, Cheap, grad: false, Inline;
    /// `log(1 + x)`, accurate where `x` is tiny (softplus, BCE).
    Log1p = "log1p", Float, Transcendental, grad: true, Helper;
    /// `exp(x) - 1`, accurate where `x` is tiny.
    Expm1 = "expm1", Float, Transcendental, grad: true, Helper;
    /// The error function (GELU's exact form).
    Erf = "erf", Float, Transcendental, grad: true, Helper;
    /// Logical not of a bool tensor.
    Not = "not", Bool, Cheap, grad: false, Inline;
    /// Identity whose derivative is zero (`detach`); lets composites such as
    /// logsumexp subtract a max without differentiating through it.
    StopGradient = "stop_gradient", Any, Free, grad: false, Inline;
}

binary_ops! {
    Add = "add", Numeric, comparison: false, Cheap, grad: true, Inline;
    Sub = "sub", Numeric, comparison: false, Cheap, grad: true, Inline;
    Mul = "mul", Numeric, comparison: false, Cheap, grad: true, Inline;
    Div = "div", Float, comparison: false, Divide, grad: true, Inline;
    Pow = "pow", Float, comparison: false, Transcendental, grad: true, Helper;
    /// NaN-propagating maximum.
    Maximum = "maximum", Numeric, comparison: false, Cheap, grad: true, Inline;
    /// NaN-propagating minimum.
    Minimum = "minimum", Numeric, comparison: false, Cheap, grad: true, Inline;
    Lt = "lt", Numeric, comparison: true, Cheap, grad: false, Inline;
    Le = "le", Numeric, comparison: true, Cheap, grad: false, Inline;
    Gt = "gt", Numeric, comparison: true, Cheap, grad: false, Inline;
    Ge = "ge", Numeric, comparison: true, Cheap, grad: false, Inline;
    Eq = "eq", Any, comparison: true, Cheap, grad: false, Inline;
    Ne = "ne", Any, comparison: true, Cheap, grad: false, Inline;
    /// Logical and of bool tensors.
    And = "and", Bool, comparison: false, Cheap, grad: false, Inline;
    /// Logical or of bool tensors.
    Or = "or", Bool, comparison: false, Cheap, grad: false, Inline;
}

impl BinaryOp {
    /// The addition of two values of `dtype`, as `scatter_add` (and any accumulation a
    /// backend builds) defines it: logical or for `bool` (a sum of truth values
    /// saturates at true, as PyTorch's bool `scatter_add`), arithmetic addition
    /// otherwise. Every backend takes bool addition from here, so no kernel can store
    /// the byte 2 in a bool.
    pub fn add_for(dtype: crate::DType) -> BinaryOp {
        if dtype == crate::DType::Bool {
            BinaryOp::Or
        } else {
            BinaryOp::Add
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_all_lists_every_row() {
        let mut names: Vec<&str> = UnaryOp::ALL.iter().map(|u| u.name()).collect();
        names.extend(BinaryOp::ALL.iter().map(|b| b.name()));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a mnemonic is used twice");
        assert_eq!(UnaryOp::ALL.len(), UnaryOp::StopGradient as usize + 1);
        assert_eq!(BinaryOp::ALL.len(), BinaryOp::Or as usize + 1);
    }

    #[test]
    fn helpers_are_float_ops() {
        for u in UnaryOp::ALL {
            if u.cpu_call() == CpuCall::Helper {
                assert_eq!(u.operands(), Operands::Float, "{u:?}");
            }
        }
    }
}

//! The CPU helper ABI: every function JIT code calls, with its signature, in one list
//! that the code generator declares (`clif::emit`) and the runtime provides
//! (`aotgrad_runtime::cpu` resolves each entry to a function, with an exhaustive match).
//! The math helpers come from the op table: an elementwise op whose row says
//! `CpuCall::Helper` gets `aotgrad_<name>_f32` and `aotgrad_<name>_f64`.

use aotgrad_ir::{BinaryOp, CpuCall, DType, UnaryOp};

/// One function generated code may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Helper {
    /// `aotgrad_kernel(ctx, k, bufs) -> status`: a matmul or library kernel.
    Kernel,
    /// `aotgrad_check(ctx, k, bufs) -> status`: check-numerics after kernel `k`.
    Check,
    /// `aotgrad_parallel(ctx, f, bufs, n)`: loop function `f` split over the pool.
    Parallel,
    /// `aotgrad_mark(ctx, k)`: the profile's clock before kernel `k`.
    Mark,
    /// A unary op computed by a call (f32 or f64).
    Unary(UnaryOp, DType),
    /// A binary op computed by a call (f32 or f64).
    Binary(BinaryOp, DType),
}

/// The float types the math helpers exist for.
const FLOATS: [DType; 2] = [DType::F32, DType::F64];

impl Helper {
    /// The symbol the JIT module imports.
    pub fn name(self) -> String {
        let suffix = |d: DType| if d == DType::F64 { "f64" } else { "f32" };
        match self {
            Helper::Kernel => "aotgrad_kernel".into(),
            Helper::Check => "aotgrad_check".into(),
            Helper::Parallel => "aotgrad_parallel".into(),
            Helper::Mark => "aotgrad_mark".into(),
            Helper::Unary(u, d) => format!("aotgrad_{}_{}", u.name(), suffix(d)),
            Helper::Binary(b, d) => format!("aotgrad_{}_{}", b.name(), suffix(d)),
        }
    }

    /// Parameter and return types: `p` a pointer-sized integer, `i` i32, `f`/`d`
    /// f32/f64; an empty return is none.
    pub fn signature(self) -> (&'static str, &'static str) {
        let f = |d: DType| if d == DType::F64 { "d" } else { "f" };
        match self {
            Helper::Kernel | Helper::Check => ("ppp", "i"),
            Helper::Parallel => ("pppp", ""),
            Helper::Mark => ("pp", ""),
            Helper::Unary(_, d) => (f(d), f(d)),
            Helper::Binary(_, d) => (if d == DType::F64 { "dd" } else { "ff" }, f(d)),
        }
    }
}

/// Every helper: the runtime's four, then the math helpers of the op table.
pub fn all() -> Vec<Helper> {
    let mut out = vec![
        Helper::Kernel,
        Helper::Check,
        Helper::Parallel,
        Helper::Mark,
    ];
    for u in UnaryOp::ALL {
        if u.cpu_call() == CpuCall::Helper {
            out.extend(FLOATS.map(|d| Helper::Unary(u, d)));
        }
    }
    for b in BinaryOp::ALL {
        if b.cpu_call() == CpuCall::Helper {
            out.extend(FLOATS.map(|d| Helper::Binary(b, d)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<String> = all().into_iter().map(Helper::name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        assert!(names.contains(&"aotgrad_erf_f64".to_string()));
        assert!(names.contains(&"aotgrad_pow_f32".to_string()));
    }
}

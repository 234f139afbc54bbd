//! Element arithmetic for the interpreter: one trait, implemented for every numeric
//! dtype, so each op's loop is written once. Integers wrap (no panics on overflow);
//! floats follow IEEE and PyTorch's NaN propagation for maximum/minimum.

pub(crate) trait Num: Copy + PartialOrd + std::fmt::Debug {
    fn zero() -> Self;
    fn one() -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn sign(self) -> Self;
    fn is_nan(self) -> bool;

    /// NaN-propagating maximum (PyTorch's `maximum` and `amax`).
    fn maxi(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o > self {
            o
        } else {
            self
        }
    }

    fn mini(self, o: Self) -> Self {
        if self.is_nan() || o.is_nan() {
            if self.is_nan() { self } else { o }
        } else if o < self {
            o
        } else {
            self
        }
    }
}

pub(crate) trait Float: Num {
    fn div(self, o: Self) -> Self;
    fn recip(self) -> Self;
    fn powf(self, o: Self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn trunc(self) -> Self;
    fn ln_1p(self) -> Self;
    fn exp_m1(self) -> Self;
    fn erf(self) -> Self;
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn zero() -> Self { 0 }
            fn one() -> Self { 1 }
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn neg(self) -> Self { self.wrapping_neg() }
            #[allow(unused_comparisons)]
            fn abs(self) -> Self { if self < 0 { self.wrapping_neg() } else { self } }
            #[allow(unused_comparisons)]
            fn sign(self) -> Self { if self > 0 { 1 } else if self < 0 { (0 as $t).wrapping_sub(1) } else { 0 } }
            fn is_nan(self) -> bool { false }
        }
    )*};
}
int_num!(u8, i32, i64);

macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn zero() -> Self { 0.0 }
            fn one() -> Self { 1.0 }
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn neg(self) -> Self { -self }
            fn abs(self) -> Self { <$t>::abs(self) }
            // PyTorch: sign(0) = 0, sign(NaN) = NaN... as 0 in practice; keep NaN.
            fn sign(self) -> Self { if self > 0.0 { 1.0 } else if self < 0.0 { -1.0 } else { self * 0.0 } }
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
        }
        impl Float for $t {
            fn div(self, o: Self) -> Self { self / o }
            fn recip(self) -> Self { 1.0 / self }
            fn powf(self, o: Self) -> Self { <$t>::powf(self, o) }
            fn exp(self) -> Self { Transcendental::exp_(self) }
            fn ln(self) -> Self { <$t>::ln(self) }
            fn sqrt(self) -> Self { <$t>::sqrt(self) }
            fn sin(self) -> Self { <$t>::sin(self) }
            fn cos(self) -> Self { <$t>::cos(self) }
            fn tanh(self) -> Self { Transcendental::tanh_(self) }
            fn floor(self) -> Self { <$t>::floor(self) }
            fn ceil(self) -> Self { <$t>::ceil(self) }
            fn trunc(self) -> Self { <$t>::trunc(self) }
            fn ln_1p(self) -> Self { <$t>::ln_1p(self) }
            fn exp_m1(self) -> Self { <$t>::exp_m1(self) }
            fn erf(self) -> Self { erf_of(self) }
        }
    )*};
}
float_num!(f32, f64);

/// `exp` and `tanh`: f32 through `aotgrad_ir::math`, the sequence the CPU code generator
/// emits (bitwise the same results, vectorisable there); f64 through the C library.
trait Transcendental {
    fn exp_(self) -> Self;
    fn tanh_(self) -> Self;
}
impl Transcendental for f32 {
    fn exp_(self) -> f32 {
        aotgrad_ir::math::exp_f32(self)
    }
    fn tanh_(self) -> f32 {
        aotgrad_ir::math::tanh_f32(self)
    }
}
impl Transcendental for f64 {
    fn exp_(self) -> f64 {
        f64::exp(self)
    }
    fn tanh_(self) -> f64 {
        f64::tanh(self)
    }
}

/// `erf` through the `libm` crate (the standard library's is unstable): musl's
/// implementation, the same bits on every host.
trait Erf {
    fn erf_(self) -> Self;
}
impl Erf for f32 {
    fn erf_(self) -> f32 {
        libm::erff(self)
    }
}
impl Erf for f64 {
    fn erf_(self) -> f64 {
        libm::erf(self)
    }
}
fn erf_of<T: Erf>(x: T) -> T {
    x.erf_()
}

/// Applies `$body` (which may call generic `Num` functions on `$v`) to the numeric
/// variants of a `Data`, rebuilding the same variant. Bool is excluded: the verifier
/// guarantees numeric ops never see it.
macro_rules! num_map {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            aotgrad_ir::Data::U8($v) => aotgrad_ir::Data::U8($body),
            aotgrad_ir::Data::I32($v) => aotgrad_ir::Data::I32($body),
            aotgrad_ir::Data::I64($v) => aotgrad_ir::Data::I64($body),
            aotgrad_ir::Data::F32($v) => aotgrad_ir::Data::F32($body),
            aotgrad_ir::Data::F64($v) => aotgrad_ir::Data::F64($body),
            aotgrad_ir::Data::Bool(_) => {
                unreachable!("verified graphs apply numeric ops to numbers")
            }
        }
    };
}

/// Like [`num_map`] for the float variants only.
macro_rules! float_map {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            aotgrad_ir::Data::F32($v) => aotgrad_ir::Data::F32($body),
            aotgrad_ir::Data::F64($v) => aotgrad_ir::Data::F64($body),
            _ => unreachable!("verified graphs apply float ops to floats"),
        }
    };
}

pub(crate) use {float_map, num_map};

// Scalar functions every aotgrad WGSL shader may call, with the interpreter's
// semantics where WGSL's builtins differ. WGSL lets an implementation assume no NaN
// exists (llvmpipe folds `x != x` to false), so NaN is tested on the bits (`isnan_`).
// The rest: NaN-propagating max/min, sign of NaN and of
// zeros, tanh saturated before it overflows, pow on negative bases, saturating
// float-to-int casts, and log1p/expm1/erf, which WGSL lacks.
fn isnan_(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn fmax_(x: f32, y: f32) -> f32 { if (isnan_(x)) { return x; } if (isnan_(y)) { return y; } return select(x, y, y > x); }
fn fmin_(x: f32, y: f32) -> f32 { if (isnan_(x)) { return x; } if (isnan_(y)) { return y; } return select(x, y, y < x); }
fn sign_(x: f32) -> f32 { if (isnan_(x)) { return x; } if (x > 0.0) { return 1.0; } if (x < 0.0) { return -1.0; } return x * 0.0; }
fn tanh_(x: f32) -> f32 { if (abs(x) > 15.0) { return sign(x); } return tanh(x); }
fn pow_(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  let r = exp2(y * log2(abs(x)));
  if (x < 0.0) {
    if (floor(y) != y) { return bitcast<f32>(0x7fc00000u); }
    if (abs(y % 2.0) == 1.0) { return -r; }
  }
  return r;
}
fn f2i_(x: f32) -> i32 { if (isnan_(x)) { return 0; } if (x >= 2147483648.0) { return 2147483647; } if (x <= -2147483648.0) { return i32(-2147483647) - 1; } return i32(x); }
fn f2u8_(x: f32) -> u32 { if (isnan_(x)) { return 0u; } return u32(clamp(x, 0.0, 255.0)); }
fn log1p_(x: f32) -> f32 {
  let u = 1.0 + x;
  if (u == 1.0) { return x; }
  if (abs(x) > 1e6) { return log(u); }
  return log(u) * (x / (u - 1.0));
}
fn expm1_(x: f32) -> f32 {
  let u = exp(x);
  if (u == 1.0) { return x; }
  let um1 = u - 1.0;
  if (um1 == -1.0) { return -1.0; }
  if (abs(x) > 1.0) { return um1; }
  return um1 * x / log(u);
}
fn erf_(x: f32) -> f32 {
  let a = abs(x);
  if (a < 0.5) {
    let z = x * x;
    return x * 1.1283791671 * (1.0 - z * (0.3333333333 - z * (0.1 - z * (0.0238095238 - z * 0.0046296296))));
  }
  // Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7).
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let p = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - p * exp(-a * a));
}

//! Parameter initialisers: PyTorch's layer defaults and its named `torch.nn.init`
//! functions (`xavier_uniform_`, `kaiming_normal_`, `orthogonal_`, ...), drawn from the
//! counter-based RNG so that the same seed gives the same values on every machine.
//!
//! The fan of a tensor follows `torch.nn.init._calculate_fan_in_and_fan_out`: for a
//! weight `[out, in, k...]`, `fan_in = in * prod(k)` and `fan_out = out * prod(k)`;
//! tensors of fewer than two dims have no fan (PyTorch's error, here [`InitError`]).
//! The values are not PyTorch's (another generator); their distribution is.

use aotgrad_ir::DType;
use aotgrad_ir::Data;
use aotgrad_runtime::Tensor;
use aotgrad_runtime::interp::rng;

/// How a parameter's initial value is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// U(-bound, bound): PyTorch's default for `Linear` weight and bias is
    /// `bound = 1/sqrt(fan_in)` (kaiming-uniform with a = sqrt(5) reduces to it).
    Uniform { bound: f64 },
    /// N(0, std^2).
    Normal { std: f64 },
    /// Every element equal.
    Constant(f64),
    /// `xavier_uniform_(gain)`: U(-b, b) with `b = gain * sqrt(6 / (fan_in + fan_out))`.
    XavierUniform { gain: f64 },
    /// `xavier_normal_(gain)`: N(0, s^2) with `s = gain * sqrt(2 / (fan_in + fan_out))`.
    XavierNormal { gain: f64 },
    /// `kaiming_uniform_(a, mode, nonlinearity='leaky_relu')`: U(-b, b) with
    /// `b = sqrt(2 / (1 + a^2)) * sqrt(3 / fan)` (`a = 0` is ReLU's gain).
    KaimingUniform { a: f64, mode: FanMode },
    /// `kaiming_normal_(a, mode, nonlinearity='leaky_relu')`: N(0, s^2) with
    /// `s = sqrt(2 / (1 + a^2)) / sqrt(fan)`.
    KaimingNormal { a: f64, mode: FanMode },
    /// `orthogonal_(gain)`: the tensor viewed as `[shape[0], rest]` is a (semi-)
    /// orthogonal matrix times `gain` (QR of a Gaussian matrix with the signs of R's
    /// diagonal folded in, as PyTorch does); for recurrent weights.
    Orthogonal { gain: f64 },
}

/// Which fan a Kaiming initialiser preserves the variance of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    FanIn,
    FanOut,
}

/// An initialiser that cannot apply to a parameter's shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{init} needs a tensor of at least 2 dims to compute its fan, got shape {shape:?}")]
pub struct InitError {
    pub init: &'static str,
    pub shape: Vec<usize>,
}

impl Init {
    /// PyTorch's name of the initialiser (errors name it).
    pub fn name(&self) -> &'static str {
        match self {
            Init::Uniform { .. } => "uniform_",
            Init::Normal { .. } => "normal_",
            Init::Constant(_) => "constant_",
            Init::XavierUniform { .. } => "xavier_uniform_",
            Init::XavierNormal { .. } => "xavier_normal_",
            Init::KaimingUniform { .. } => "kaiming_uniform_",
            Init::KaimingNormal { .. } => "kaiming_normal_",
            Init::Orthogonal { .. } => "orthogonal_",
        }
    }

    /// Draws the values for `shape` from the counter-based RNG with `key`, as `dtype`
    /// (deterministic: the same key always gives the same values, on every machine; an
    /// f32 parameter is the f64 draw rounded once).
    pub fn sample(&self, key: i64, shape: &[usize], dtype: DType) -> Result<Tensor, InitError> {
        let n: usize = shape.iter().product();
        let uniform = |bound: f64| -> Vec<f64> {
            (0..n)
                .map(|i| (rng::uniform_f64(key, i) * 2.0 - 1.0) * bound)
                .collect()
        };
        let normal =
            |std: f64| -> Vec<f64> { (0..n).map(|i| rng::normal_f64(key, i) * std).collect() };
        let fans = || fans(self.name(), shape);
        let vals = match *self {
            Init::Uniform { bound } => uniform(bound),
            Init::Normal { std } => normal(std),
            Init::Constant(c) => vec![c; n],
            Init::XavierUniform { gain } => {
                let (fi, fo) = fans()?;
                uniform(gain * (6.0 / (fi + fo) as f64).sqrt())
            }
            Init::XavierNormal { gain } => {
                let (fi, fo) = fans()?;
                normal(gain * (2.0 / (fi + fo) as f64).sqrt())
            }
            Init::KaimingUniform { a, mode } => {
                let fan = pick(fans()?, mode);
                uniform(leaky_gain(a) * (3.0 / fan as f64).sqrt())
            }
            Init::KaimingNormal { a, mode } => {
                let fan = pick(fans()?, mode);
                normal(leaky_gain(a) / (fan as f64).sqrt())
            }
            Init::Orthogonal { gain } => {
                if shape.len() < 2 {
                    return Err(InitError {
                        init: self.name(),
                        shape: shape.to_vec(),
                    });
                }
                orthogonal(key, shape[0], n / shape[0].max(1), gain)
            }
        };
        let data = match dtype {
            DType::F64 => Data::F64(vals),
            _ => Data::F32(vals.into_iter().map(|v| v as f32).collect()),
        };
        Ok(Tensor::new(shape, data).expect("sized from shape"))
    }
}

fn leaky_gain(a: f64) -> f64 {
    (2.0 / (1.0 + a * a)).sqrt()
}

fn pick((fan_in, fan_out): (usize, usize), mode: FanMode) -> usize {
    match mode {
        FanMode::FanIn => fan_in,
        FanMode::FanOut => fan_out,
    }
    .max(1)
}

/// `(fan_in, fan_out)` of a weight `[out, in, k...]`.
fn fans(init: &'static str, shape: &[usize]) -> Result<(usize, usize), InitError> {
    if shape.len() < 2 {
        return Err(InitError {
            init,
            shape: shape.to_vec(),
        });
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

/// A `rows x cols` matrix with orthonormal rows (rows <= cols) or columns, times `gain`:
/// modified Gram-Schmidt (twice, for round-off) on the columns of a Gaussian matrix of
/// the taller orientation. Gram-Schmidt's R has a positive diagonal, which is the sign
/// correction PyTorch applies to its QR.
fn orthogonal(key: i64, rows: usize, cols: usize, gain: f64) -> Vec<f64> {
    let (tall, wide) = (rows.max(cols), rows.min(cols));
    // Column j of the tall matrix is q[j]; entry i of it is draw (i * wide + j).
    let mut q: Vec<Vec<f64>> = (0..wide)
        .map(|j| {
            (0..tall)
                .map(|i| rng::normal_f64(key, i * wide + j))
                .collect()
        })
        .collect();
    for j in 0..wide {
        for _ in 0..2 {
            for k in 0..j {
                let (done, rest) = q.split_at_mut(j);
                let (col, prev) = (&mut rest[0], &done[k]);
                let dot: f64 = col.iter().zip(prev).map(|(a, b)| a * b).sum();
                col.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
            }
        }
        let norm = q[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        // A Gaussian column is in the span of the others with probability 0.
        let norm = if norm > 0.0 { norm } else { 1.0 };
        q[j].iter_mut().for_each(|v| *v /= norm);
    }
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // The tall matrix is [rows, cols] itself when rows >= cols, else its transpose.
            out[r * cols + c] = gain * if rows >= cols { q[c][r] } else { q[r][c] };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(t: &Tensor) -> (f64, f64) {
        let v = t.to_f64_vec();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var)
    }

    #[test]
    fn xavier_and_kaiming_have_pytorchs_variance() {
        let shape = [256, 128];
        let (fi, fo) = (128.0, 256.0);
        let cases = [
            (Init::XavierUniform { gain: 1.0 }, 2.0 / (fi + fo)),
            (Init::XavierNormal { gain: 2.0 }, 4.0 * 2.0 / (fi + fo)),
            (
                Init::KaimingUniform {
                    a: 0.0,
                    mode: FanMode::FanIn,
                },
                2.0 / fi,
            ),
            (
                Init::KaimingNormal {
                    a: 0.0,
                    mode: FanMode::FanOut,
                },
                2.0 / fo,
            ),
        ];
        for (init, want) in cases {
            let t = init.sample(7, &shape, DType::F32).unwrap();
            let (mean, var) = stats(&t);
            assert!(mean.abs() < 0.01, "{init:?}: mean {mean}");
            assert!(
                (var / want - 1.0).abs() < 0.05,
                "{init:?}: var {var}, want {want}"
            );
        }
    }

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        for (r, c) in [(8, 8), (12, 5), (5, 12)] {
            let t = Init::Orthogonal { gain: 1.0 }
                .sample(3, &[r, c], DType::F64)
                .unwrap();
            let m = t.as_f64().unwrap();
            let (outer, inner) = if r <= c { (r, c) } else { (c, r) };
            for a in 0..outer {
                for b in 0..outer {
                    let dot: f64 = (0..inner)
                        .map(|k| {
                            let at = |i: usize, k: usize| {
                                if r <= c { m[i * c + k] } else { m[k * c + i] }
                            };
                            at(a, k) * at(b, k)
                        })
                        .sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "{r}x{c} ({a},{b}): {dot}");
                }
            }
        }
    }

    #[test]
    fn fanless_shapes_are_refused_and_f64_keeps_every_digit() {
        let e = Init::XavierUniform { gain: 1.0 }
            .sample(1, &[5], DType::F32)
            .unwrap_err();
        assert_eq!(e.init, "xavier_uniform_");
        let a = Init::Uniform { bound: 0.3 }
            .sample(9, &[4], DType::F64)
            .unwrap();
        let b = Init::Uniform { bound: 0.3 }
            .sample(9, &[4], DType::F32)
            .unwrap();
        for (x, y) in a.as_f64().unwrap().iter().zip(b.as_f32().unwrap()) {
            assert_eq!(*x as f32, *y);
        }
        assert!(a.as_f64().unwrap().iter().any(|&x| x != (x as f32) as f64));
    }
}

//! Layers past the course's MNIST models: `Embedding`, `LayerNorm`, `GELU`, `SiLU`,
//! `Identity`, `Conv1d` and the 1-d pools, with PyTorch's shapes, defaults,
//! initialisation and `state_dict` names. Each is a composition of primitive ops (no
//! op of its own): its gradient is the autodiff of those ops, checked against PyTorch
//! in `tests/training/layers.rs`.

use aotgrad_ir::{BuildErrorKind, Conv2dOptions, DType, Pool2dOptions, Var};

use super::module::{Init, Module, Scope};

/// Reports a layer's misuse as a build error naming the layer (and, through the
/// trainer, the user's line that added it).
#[track_caller]
fn misuse<'g>(s: &Scope<'g>, layer: &'static str, msg: String) -> Var<'g> {
    s.builder().report(layer, BuildErrorKind::Usage(msg))
}

/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: `weight
/// [num_embeddings, embedding_dim]` drawn from N(0, 1) (the `padding_idx` row zero);
/// input integer indices of any shape `[...]`, output `[..., embedding_dim]`. The
/// `padding_idx` row gets no gradient (it stays as loaded or zero), as in PyTorch.
/// An index outside `[0, num_embeddings)` is a run-time `IndexOutOfRange` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedding {
    pub num_embeddings: usize,
    pub embedding_dim: usize,
    pub padding_idx: Option<usize>,
}

impl Embedding {
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Embedding {
        Embedding {
            num_embeddings,
            embedding_dim,
            padding_idx: None,
        }
    }

    pub fn padding_idx(mut self, idx: usize) -> Embedding {
        self.padding_idx = Some(idx);
        self
    }
}

impl Module for Embedding {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, idx: Var<'g>) -> Var<'g> {
        if idx.is_poisoned() {
            return idx;
        }
        if idx.dtype().is_float() || idx.dtype() == DType::Bool {
            return misuse(
                s,
                "Embedding",
                format!("expected integer indices, got {}", idx.ty()),
            );
        }
        if let Some(p) = self.padding_idx
            && p >= self.num_embeddings
        {
            return misuse(
                s,
                "Embedding",
                format!(
                    "padding_idx {p} is out of range for {} embeddings",
                    self.num_embeddings
                ),
            );
        }
        let mut w = s.param(
            "weight",
            &[self.num_embeddings, self.embedding_dim],
            Init::Normal { std: 1.0 },
        );
        if let Some(p) = self.padding_idx {
            // The padding row reads the weight without a gradient path: rows other
            // than `p` see `w`, row `p` sees `detach(w)`.
            let rows = s.builder().arange(self.num_embeddings, DType::I64);
            let is_pad = rows
                .equal(s.builder().scalar(p as f64, DType::I64))
                .unsqueeze(1);
            w = is_pad.where_(w.detach(), w);
        }
        // [...] indices -> [prod(...)] rows (a merged dim when the batch is symbolic)
        // -> [..., embedding_dim].
        let flat = idx.cast(DType::I64).reshape(&[-1]);
        let mut target = idx.shape();
        target.0.push(self.embedding_dim.into());
        w.index_select(0, flat).reshape_shape(target)
    }
}

/// `nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)`:
/// normalises over the last `normalized_shape.len()` dims with the biased variance;
/// `weight` ones and `bias` zeros of `normalized_shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    pub normalized_shape: Vec<usize>,
    pub eps: f64,
    pub elementwise_affine: bool,
    pub bias: bool,
}

impl LayerNorm {
    pub fn new(normalized_shape: &[usize]) -> LayerNorm {
        LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
        }
    }

    pub fn eps(mut self, eps: f64) -> LayerNorm {
        self.eps = eps;
        self
    }

    pub fn no_affine(mut self) -> LayerNorm {
        self.elementwise_affine = false;
        self
    }

    pub fn no_bias(mut self) -> LayerNorm {
        self.bias = false;
        self
    }
}

impl Module for LayerNorm {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        if x.is_poisoned() {
            return x;
        }
        let k = self.normalized_shape.len();
        let dims = x.shape();
        let tail_ok = k >= 1
            && dims.rank() >= k
            && dims.dims()[dims.rank() - k..]
                .iter()
                .zip(&self.normalized_shape)
                .all(|(d, &n)| d.known() == Some(n));
        if !tail_ok || !x.dtype().is_float() {
            return misuse(
                s,
                "LayerNorm",
                format!(
                    "expected input with shape [*, {}], got {}",
                    self.normalized_shape
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    x.ty()
                ),
            );
        }
        let axes: Vec<i64> = (1..=k as i64).map(|i| -i).collect();
        let mean = x.mean(axes.clone(), true);
        let centered = x - mean;
        let var = centered.square().mean(axes, true);
        let mut y = centered * (var + self.eps).rsqrt();
        if self.elementwise_affine {
            y = y * s.param("weight", &self.normalized_shape, Init::Constant(1.0));
            if self.bias {
                y = y + s.param("bias", &self.normalized_shape, Init::Constant(0.0));
            }
        }
        y
    }
}

/// `nn.GELU(approximate='none' | 'tanh')`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GELU {
    pub tanh_approximation: bool,
}

impl GELU {
    /// `approximate='tanh'`.
    pub fn tanh() -> GELU {
        GELU {
            tanh_approximation: true,
        }
    }
}

impl Module for GELU {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        gelu(x, self.tanh_approximation)
    }
}

/// `F.gelu`: `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, or with the tanh
/// approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu<'g>(x: Var<'g>, tanh_approximation: bool) -> Var<'g> {
    if tanh_approximation {
        let inner = (x + x * x * x * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
        x * 0.5 * (inner.tanh() + 1.0)
    } else {
        x * 0.5 * ((x * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0)
    }
}

/// `nn.SiLU`: `x * sigmoid(x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SiLU;

impl Module for SiLU {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x * x.sigmoid()
    }
}

/// `nn.Identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity;

impl Module for Identity {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x
    }
}

/// `nn.Softplus(beta=1)` (threshold as the DSL's `softplus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Softplus;

impl Module for Softplus {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.softplus()
    }
}

/// `nn.LogSoftmax(dim)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSoftmax(pub i64);

impl Module for LogSoftmax {
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.log_softmax(self.0)
    }
}

/// `nn.Conv1d(in_channels, out_channels, kernel_size, stride, padding, dilation,
/// groups, bias)` on `[N, C, L]`: weight `[out, in/groups, k]`, bias `[out]`, both
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Runs as a 2-d convolution of height 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv1d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv1d {
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Conv1d {
        Conv1d {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }
    pub fn stride(mut self, s: usize) -> Conv1d {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: usize) -> Conv1d {
        self.padding = p;
        self
    }
    pub fn dilation(mut self, d: usize) -> Conv1d {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Conv1d {
        self.groups = g;
        self
    }
    pub fn no_bias(mut self) -> Conv1d {
        self.bias = false;
        self
    }
}

/// A `[N, C, L]` input as `[N, C, 1, L]`, or the layer's error.
#[track_caller]
fn as_2d<'g>(s: &Scope<'g>, layer: &'static str, x: Var<'g>) -> Result<Var<'g>, Var<'g>> {
    if x.is_poisoned() {
        return Err(x);
    }
    if x.rank() != 3 {
        return Err(misuse(
            s,
            layer,
            format!("expected a [N, C, L] input, got {}", x.ty()),
        ));
    }
    Ok(x.unsqueeze(2))
}

impl Module for Conv1d {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let g = self.groups.max(1);
        if !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return misuse(
                s,
                "Conv1d",
                format!(
                    "in_channels {} and out_channels {} must be divisible by groups {g}",
                    self.in_channels, self.out_channels
                ),
            );
        }
        let x4 = match as_2d(s, "Conv1d", x) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let fan_in = self.in_channels / g * self.kernel;
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let w = s.param(
            "weight",
            &[self.out_channels, self.in_channels / g, self.kernel],
            Init::Uniform { bound },
        );
        let b = self
            .bias
            .then(|| s.param("bias", &[self.out_channels], Init::Uniform { bound }));
        let w4 = w.unsqueeze(2);
        let opts = Conv2dOptions {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
            groups: g,
        };
        x4.conv2d(w4, b, opts).squeeze(2)
    }
}

/// `nn.MaxPool1d(kernel_size, stride=kernel_size, padding, dilation, ceil_mode)` on
/// `[N, C, L]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool1d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub ceil_mode: bool,
}

impl MaxPool1d {
    pub fn new(kernel: usize) -> MaxPool1d {
        MaxPool1d {
            kernel,
            stride: kernel,
            padding: 0,
            dilation: 1,
            ceil_mode: false,
        }
    }
    pub fn stride(mut self, s: usize) -> MaxPool1d {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: usize) -> MaxPool1d {
        self.padding = p;
        self
    }
}

impl Module for MaxPool1d {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let x4 = match as_2d(s, "MaxPool1d", x) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let opts = Pool2dOptions::new([1, self.kernel])
            .stride([1, self.stride])
            .padding([0, self.padding])
            .dilation([1, self.dilation])
            .ceil_mode(self.ceil_mode);
        x4.max_pool2d(opts).squeeze(2)
    }
}

/// `nn.AvgPool1d(kernel_size, stride=kernel_size, padding, ceil_mode,
/// count_include_pad)` on `[N, C, L]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool1d {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

impl AvgPool1d {
    pub fn new(kernel: usize) -> AvgPool1d {
        AvgPool1d {
            kernel,
            stride: kernel,
            padding: 0,
            ceil_mode: false,
            count_include_pad: true,
        }
    }
    pub fn stride(mut self, s: usize) -> AvgPool1d {
        self.stride = s;
        self
    }
    pub fn padding(mut self, p: usize) -> AvgPool1d {
        self.padding = p;
        self
    }
}

impl Module for AvgPool1d {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let x4 = match as_2d(s, "AvgPool1d", x) {
            Ok(v) => v,
            Err(e) => return e,
        };
        let opts = Pool2dOptions::new([1, self.kernel])
            .stride([1, self.stride])
            .padding([0, self.padding])
            .ceil_mode(self.ceil_mode)
            .count_include_pad(self.count_include_pad);
        x4.avg_pool2d(opts).squeeze(2)
    }
}

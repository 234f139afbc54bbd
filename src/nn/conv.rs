//! Convolutional layers: `Conv2d`, pooling, `BatchNorm2d`/`BatchNorm1d`, `Dropout2d`,
//! with PyTorch's parameter names, shapes, default initialisation and train/eval
//! behaviour.

use aotgrad_ir::{BatchNorm, BuildErrorKind, Conv2dOptions, Pair, Pool2dOptions, Shape, Var};
use aotgrad_runtime::Tensor;

use super::module::{Init, Module, Scope};

/// `nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
/// groups, bias)`: weight `[out, in/groups, kh, kw]` and bias `[out]`, both drawn from
/// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with `fan_in = in/groups * kh * kw` (PyTorch's
/// kaiming-uniform with `a = sqrt(5)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub options: Conv2dOptions,
    pub bias: bool,
}

impl Conv2d {
    pub fn new(in_channels: usize, out_channels: usize, kernel: impl Into<Pair>) -> Conv2d {
        Conv2d {
            in_channels,
            out_channels,
            kernel: kernel.into().0,
            options: Conv2dOptions::default(),
            bias: true,
        }
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Conv2d {
        self.options = self.options.stride(s);
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Conv2d {
        self.options = self.options.padding(p);
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Conv2d {
        self.options = self.options.dilation(d);
        self
    }
    pub fn groups(mut self, g: usize) -> Conv2d {
        self.options = self.options.groups(g);
        self
    }
    pub fn no_bias(mut self) -> Conv2d {
        self.bias = false;
        self
    }
}

impl Module for Conv2d {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let g = self.options.groups.max(1);
        if !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return s.builder().report(
                "Conv2d",
                BuildErrorKind::Usage(format!(
                    "in_channels {} and out_channels {} must be divisible by groups {g}",
                    self.in_channels, self.out_channels
                )),
            );
        }
        let [kh, kw] = self.kernel;
        let fan_in = self.in_channels / g * kh * kw;
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let w = s.param(
            "weight",
            &[self.out_channels, self.in_channels / g, kh, kw],
            Init::Uniform { bound },
        );
        let b = self
            .bias
            .then(|| s.param("bias", &[self.out_channels], Init::Uniform { bound }));
        x.conv2d(w, b, self.options)
    }
}

/// `nn.MaxPool2d(kernel_size, stride=kernel_size, padding, dilation, ceil_mode)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d(pub Pool2dOptions);

impl MaxPool2d {
    pub fn new(kernel: impl Into<Pair>) -> MaxPool2d {
        MaxPool2d(Pool2dOptions::new(kernel))
    }
}

impl Module for MaxPool2d {
    #[track_caller]
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.max_pool2d(self.0)
    }
}

/// `nn.AvgPool2d(kernel_size, stride=kernel_size, padding, ceil_mode,
/// count_include_pad, divisor_override)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d(pub Pool2dOptions);

impl AvgPool2d {
    pub fn new(kernel: impl Into<Pair>) -> AvgPool2d {
        AvgPool2d(Pool2dOptions::new(kernel))
    }
}

impl Module for AvgPool2d {
    #[track_caller]
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.avg_pool2d(self.0)
    }
}

/// `nn.AdaptiveAvgPool2d(output_size)` (output sizes that divide the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveAvgPool2d(pub [usize; 2]);

impl Module for AdaptiveAvgPool2d {
    #[track_caller]
    fn forward<'g>(&self, _s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        x.adaptive_avg_pool2d(self.0)
    }
}

/// Batch normalisation's settings, shared by [`BatchNorm2d`] and [`BatchNorm1d`].
macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $ranks:expr, $want:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct $name {
            pub num_features: usize,
            pub eps: f64,
            pub momentum: f64,
            pub affine: bool,
        }

        impl $name {
            pub fn new(num_features: usize) -> $name {
                $name {
                    num_features,
                    eps: 1e-5,
                    momentum: 0.1,
                    affine: true,
                }
            }
            pub fn eps(mut self, eps: f64) -> $name {
                self.eps = eps;
                self
            }
            pub fn momentum(mut self, m: f64) -> $name {
                self.momentum = m;
                self
            }
            pub fn affine(mut self, on: bool) -> $name {
                self.affine = on;
                self
            }
        }

        impl Module for $name {
            #[track_caller]
            fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
                let want = format!($want, c = self.num_features);
                let spec = BatchNormSpec {
                    layer: stringify!($name),
                    ranks: &$ranks,
                    want,
                    num_features: self.num_features,
                    eps: self.eps,
                    momentum: self.momentum,
                    affine: self.affine,
                };
                spec.forward(s, x)
            }
        }
    };
}

batch_norm_layer!(
    /// `nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    /// track_running_stats=True)` over `[N, C, H, W]`: parameters `weight`/`bias`, buffers
    /// `running_mean`, `running_var` and `num_batches_tracked`, as PyTorch names them.
    /// Training programs normalise with the batch statistics and update the running ones;
    /// evaluation programs use the running statistics.
    BatchNorm2d,
    [4],
    "[N, {c}, H, W]"
);

batch_norm_layer!(
    /// `nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    /// track_running_stats=True)` over `[N, C]` or `[N, C, L]`, otherwise as
    /// [`BatchNorm2d`].
    BatchNorm1d,
    [2, 3],
    "[N, {c}] or [N, {c}, L]"
);

/// What one batch-norm layer builds.
struct BatchNormSpec<'a> {
    layer: &'static str,
    ranks: &'a [usize],
    want: String,
    num_features: usize,
    eps: f64,
    momentum: f64,
    affine: bool,
}

impl BatchNormSpec<'_> {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let c = self.num_features;
        if x.is_poisoned() {
            return x;
        }
        if !self.ranks.contains(&x.rank()) || x.shape().0.get(1).and_then(|d| d.known()) != Some(c)
        {
            return s.builder().report(
                self.layer,
                BuildErrorKind::Usage(format!("expected {}, got {}", self.want, x.shape())),
            );
        }
        // PyTorch refuses a training batch with one value per channel (the unbiased
        // variance would be 0/0 and poison the running statistics): checked per call,
        // where the batch size is known.
        s.require_batch_statistics(self.layer, x.shape());
        let (weight, bias) = if self.affine {
            (
                Some(s.param("weight", &[c], Init::Constant(1.0))),
                Some(s.param("bias", &[c], Init::Constant(0.0))),
            )
        } else {
            (None, None)
        };
        // Running statistics in the model's float dtype (f64 models keep f64 buffers).
        let zeros = Tensor::from_f32(&vec![0.0; c], &[c])
            .expect("sized")
            .cast(s.dtype());
        let ones = Tensor::from_f32(&vec![1.0; c], &[c])
            .expect("sized")
            .cast(s.dtype());
        let rm = s.buffer("running_mean", zeros);
        let rv = s.buffer("running_var", ones);
        let tracked = s.buffer(
            "num_batches_tracked",
            Tensor::from_i64(&[0], &[]).expect("scalar"),
        );
        let out = x.batch_norm(BatchNorm {
            running_mean: Some(rm),
            running_var: Some(rv),
            weight,
            bias,
            training: s.training(),
            momentum: self.momentum,
            eps: self.eps,
        });
        if let (Some(m), Some(v)) = (out.running_mean, out.running_var) {
            s.update_buffer(rm, m);
            s.update_buffer(rv, v);
            s.update_buffer(tracked, tracked + 1);
        }
        out.output
    }
}

/// `nn.Dropout2d(p)`: zeroes whole channels (`[N, C, H, W]` -> one draw per `(n, c)`)
/// with probability `p` in training programs and scales the rest by `1/(1-p)`; the
/// identity in evaluation programs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout2d(pub f64);

impl Module for Dropout2d {
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        let p = self.0;
        let b = s.builder();
        if !(0.0..=1.0).contains(&p) {
            return b.report(
                "Dropout2d",
                BuildErrorKind::Usage(format!("probability must be in [0, 1], got {p}")),
            );
        }
        if x.rank() != 4 && x.rank() != 3 {
            return b.report(
                "Dropout2d",
                BuildErrorKind::Usage(format!(
                    "expected [N, C, H, W] or [C, H, W], got {}",
                    x.shape()
                )),
            );
        }
        if !s.training() || p == 0.0 {
            return x;
        }
        if p == 1.0 {
            return x.zeros_like();
        }
        let Some(key) = s.next_key() else {
            return b.report(
                "Dropout2d",
                BuildErrorKind::Usage("a training program needs an RNG key for dropout".into()),
            );
        };
        let mut dims = x.shape().0;
        let r = dims.len();
        for d in &mut dims[r - 2..] {
            *d = aotgrad_ir::Dim::Known(1);
        }
        let u = b.rand(key, x.dtype(), Shape(dims));
        let keep = u.ge(p).cast(x.dtype()) * (1.0 / (1.0 - p));
        x * keep
    }
}

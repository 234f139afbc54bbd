//! Convolution, pooling and batch normalisation over `[N, C, H, W]` images, with
//! PyTorch's `torch.nn.functional` semantics and output shapes.
//!
//! All of them are composites of one primitive pair: [`Op::Unfold`] (a strided *view*
//! `[.., H, W] -> [.., kh, kw, OH, OW]`; the lowering never copies it unless a matmul
//! needs it dense) and its adjoint [`Op::Fold`]. Padding is an explicit `pad` first
//! (zeros for convolution and average pooling, `-inf` for max pooling), so gradients
//! come out by composition: `unfold -> fold`, `pad -> slice`, `matmul -> matmul`,
//! `gather -> scatter_add`.
//!
//! - `conv2d` is im2col + GEMM per sample: the windows reshaped to
//!   `[N, groups, C/groups*kh*kw, OH*OW]` (the one materialised copy) times the weight
//!   `[groups, O/groups, C/groups*kh*kw]`, as PyTorch's CPU convolution does. The batch
//!   stays its own axis because the batch size is symbolic and a merged `N*L` axis is
//!   not a dimension the IR can name.
//! - `max_pool2d` takes each window's first maximum (`argmax`, NaN wins) and gathers
//!   it, so the gradient goes to that one element as in PyTorch, ties included.
//! - `avg_pool2d` sums the window view (a reduction reading the input in place) and
//!   divides by a constant `[OH, OW]` table of PyTorch's divisors.

use std::panic::Location;

use super::Var;
use crate::{Axes, BuildErrorKind, DType, Data, Op, OpError, Shape, Window};

type Loc = &'static Location<'static>;

/// A per-axis `(H, W)` pair, from one number (`3`) or two (`[3, 5]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair(pub [usize; 2]);

impl From<usize> for Pair {
    fn from(v: usize) -> Pair {
        Pair([v, v])
    }
}

impl From<[usize; 2]> for Pair {
    fn from(v: [usize; 2]) -> Pair {
        Pair(v)
    }
}

/// `F.conv2d`'s options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dOptions {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dOptions {
    fn default() -> Self {
        Conv2dOptions {
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        }
    }
}

impl Conv2dOptions {
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.stride = s.into().0;
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.padding = p.into().0;
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.dilation = d.into().0;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// `F.max_pool2d` / `F.avg_pool2d` options. `stride` defaults to the kernel size, as in
/// PyTorch; `dilation` applies to max pooling only, `count_include_pad` and
/// `divisor_override` to average pooling only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dOptions {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub divisor_override: Option<usize>,
}

impl Pool2dOptions {
    pub fn new(kernel: impl Into<Pair>) -> Pool2dOptions {
        let kernel = kernel.into().0;
        Pool2dOptions {
            kernel,
            stride: kernel,
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
            divisor_override: None,
        }
    }
    pub fn stride(mut self, s: impl Into<Pair>) -> Self {
        self.stride = s.into().0;
        self
    }
    pub fn padding(mut self, p: impl Into<Pair>) -> Self {
        self.padding = p.into().0;
        self
    }
    pub fn dilation(mut self, d: impl Into<Pair>) -> Self {
        self.dilation = d.into().0;
        self
    }
    pub fn ceil_mode(mut self, on: bool) -> Self {
        self.ceil_mode = on;
        self
    }
    pub fn count_include_pad(mut self, on: bool) -> Self {
        self.count_include_pad = on;
        self
    }
    pub fn divisor_override(mut self, d: Option<usize>) -> Self {
        self.divisor_override = d;
        self
    }
}

/// The operands of [`Var::batch_norm`] (`F.batch_norm`).
#[derive(Debug, Clone, Copy)]
pub struct BatchNorm<'g> {
    pub running_mean: Option<Var<'g>>,
    pub running_var: Option<Var<'g>>,
    pub weight: Option<Var<'g>>,
    pub bias: Option<Var<'g>>,
    /// Normalise with the batch's statistics (and return updated running stats).
    pub training: bool,
    pub momentum: f64,
    pub eps: f64,
}

/// The result of [`Var::batch_norm`]: the output and, in training mode with running
/// statistics, their new values (`(1 - momentum) * old + momentum * batch`, the
/// variance unbiased, as PyTorch).
#[derive(Debug, Clone, Copy)]
pub struct BatchNormOut<'g> {
    pub output: Var<'g>,
    pub running_mean: Option<Var<'g>>,
    pub running_var: Option<Var<'g>>,
}

fn usage(msg: String) -> BuildErrorKind {
    BuildErrorKind::Usage(msg)
}

/// The largest kernel, stride, padding, dilation or output size a window op takes: no
/// axis of a tensor within [`crate::MAX_TENSOR_BYTES`] is longer, so nothing larger can
/// mean anything, and below it the products the window arithmetic forms (two or three
/// parameters) fit in `i128` and `u128`.
const MAX_WINDOW_PARAM: usize = 1 << 40;

/// PyTorch's pooling output size along one axis (`pooling_output_shape`), in `i128`
/// (the parameters are at most [`MAX_WINDOW_PARAM`]).
fn pool_out(size: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let [size, k, s, p, d] = [size, k, s, p, d].map(|v| v as i128);
    let span = d * (k - 1) + 1;
    let num = size + 2 * p - span + if ceil { s - 1 } else { 0 };
    if num < 0 {
        return None;
    }
    let mut out = num / s + 1;
    if ceil && (out - 1) * s >= size + p {
        out -= 1;
    }
    (out >= 1).then(|| usize::try_from(out).ok()).flatten()
}

impl<'g> Var<'g> {
    /// The sliding-window view (the [`Op::Unfold`] primitive): `[.., H, W]` becomes
    /// `[.., kh, kw, OH, OW]`, no padding.
    #[track_caller]
    pub fn windows2d(
        self,
        kernel: impl Into<Pair>,
        stride: impl Into<Pair>,
        dilation: impl Into<Pair>,
    ) -> Var<'g> {
        let w = Window {
            kernel: kernel.into().0,
            stride: stride.into().0,
            dilation: dilation.into().0,
        };
        let loc = Location::caller();
        let params = [
            ("kernel", w.kernel),
            ("stride", w.stride),
            ("dilation", w.dilation),
        ];
        if self.is_poisoned() || !self.window_params_ok(loc, "windows2d", &params) {
            return self.b.poison();
        }
        self.prim(loc, "windows2d", Op::Unfold(w), &[])
    }

    /// `F.unfold` (im2col): `[N, C, H, W]` becomes `[N, C*kh*kw, L]`, zero padding.
    #[track_caller]
    pub fn unfold2d(
        self,
        kernel: impl Into<Pair>,
        dilation: impl Into<Pair>,
        padding: impl Into<Pair>,
        stride: impl Into<Pair>,
    ) -> Var<'g> {
        let loc = Location::caller();
        let (k, d, p, s) = (
            kernel.into().0,
            dilation.into().0,
            padding.into().0,
            stride.into().0,
        );
        let params = [
            ("kernel", k),
            ("dilation", d),
            ("padding", p),
            ("stride", s),
        ];
        if self.is_poisoned() || !self.window_params_ok(loc, "unfold2d", &params) {
            return self.b.poison();
        }
        let Some((n, c)) = self.image(loc, "unfold2d") else {
            return self.b.poison();
        };
        let win = self.pad2d(p, p, 0.0).windows2d(k, s, d);
        if win.is_poisoned() {
            return win;
        }
        let dims = win.shape().0;
        let l = dims[4].known().unwrap_or(0) * dims[5].known().unwrap_or(0);
        win.reshape_to(loc, dims_of(&[n], &[c * k[0] * k[1], l]))
    }

    /// `F.fold` (col2im), the adjoint of [`Var::unfold2d`]: `[N, C*kh*kw, L]` becomes
    /// `[N, C, H, W]` (`output_size`), overlapping windows summed.
    #[track_caller]
    pub fn fold2d(
        self,
        output_size: impl Into<Pair>,
        kernel: impl Into<Pair>,
        dilation: impl Into<Pair>,
        padding: impl Into<Pair>,
        stride: impl Into<Pair>,
    ) -> Var<'g> {
        let loc = Location::caller();
        let (size, k, d, p, s) = (
            output_size.into().0,
            kernel.into().0,
            dilation.into().0,
            padding.into().0,
            stride.into().0,
        );
        if self.is_poisoned() {
            return self;
        }
        let params = [
            ("output size", size),
            ("kernel", k),
            ("dilation", d),
            ("padding", p),
            ("stride", s),
        ];
        if !self.window_params_ok(loc, "fold2d", &params) {
            return self.b.poison();
        }
        let w = Window {
            kernel: k,
            stride: s,
            dilation: d,
        };
        let padded = [size[0] + 2 * p[0], size[1] + 2 * p[1]];
        let dims = self.shape().0;
        let (Some(oh), Some(ow)) = (w.out_len(0, padded[0]), w.out_len(1, padded[1])) else {
            return self.fail(
                loc,
                "fold2d",
                usage(format!(
                    "kernel {k:?} dilated by {d:?} does not fit in {padded:?}"
                )),
            );
        };
        // Products of two parameters: checked (each is at most 2^40).
        let (kk, l) = (k[0].checked_mul(k[1]), oh.checked_mul(ow));
        let c = match (dims.get(1).and_then(|d| d.known()), kk, l) {
            (Some(ckk), Some(kk), Some(l))
                if dims.len() == 3 && ckk % kk == 0 && dims[2].known() == Some(l) =>
            {
                ckk / kk
            }
            _ => {
                return self.fail(
                    loc,
                    "fold2d",
                    usage(format!(
                        "expected [N, C*{}, {}], got {}",
                        k[0] as u128 * k[1] as u128,
                        oh as u128 * ow as u128,
                        self.shape()
                    )),
                );
            }
        };
        let cols = self.reshape_to(loc, dims_of(&[dims[0].clone()], &[c, k[0], k[1], oh, ow]));
        let out = cols.prim(
            loc,
            "fold2d",
            Op::Fold {
                window: w,
                size: padded,
            },
            &[],
        );
        out.crop2d(p, size)
    }

    /// `F.conv2d(x, weight, bias, stride, padding, dilation, groups)` on `[N, C, H, W]`
    /// (or unbatched `[C, H, W]`), weight `[O, C/groups, kh, kw]`, bias `[O]`.
    #[track_caller]
    pub fn conv2d(self, weight: Var<'g>, bias: Option<Var<'g>>, opts: Conv2dOptions) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() || weight.is_poisoned() || bias.is_some_and(|b| b.is_poisoned()) {
            return self.b.poison();
        }
        if self.rank() == 3 {
            return self
                .unsqueeze(0)
                .conv2d(weight, bias, opts)
                .squeeze_axes(loc, &[0]);
        }
        let Some((n, c)) = self.image(loc, "conv2d") else {
            return self.b.poison();
        };
        let wdims: Option<Vec<usize>> = weight.shape().0.iter().map(|d| d.known()).collect();
        let g = opts.groups;
        let bad = |msg: String| self.fail(loc, "conv2d", usage(msg));
        let params = [
            ("stride", opts.stride),
            ("padding", opts.padding),
            ("dilation", opts.dilation),
        ];
        if !self.window_params_ok(loc, "conv2d", &params) {
            return self.b.poison();
        }
        let Some([o, cg, kh, kw]) = wdims.and_then(|v| <[usize; 4]>::try_from(v).ok()) else {
            return bad(format!(
                "weight must be [out, in/groups, kh, kw], got {}",
                weight.shape()
            ));
        };
        if g == 0 || c % g != 0 || o % g != 0 || cg.checked_mul(g) != Some(c) {
            return bad(format!(
                "input {} with groups={g} needs weight [O, {}, kh, kw] with O divisible by {g}, got {}",
                self.shape(),
                c.checked_div(g).unwrap_or(0),
                weight.shape()
            ));
        }
        if let Some(b) = bias
            && b.shape() != Shape::known(&[o])
        {
            return bad(format!("bias must be [{o}], got {}", b.shape()));
        }
        let win = self.pad2d(opts.padding, opts.padding, 0.0).prim(
            loc,
            "conv2d",
            Op::Unfold(Window {
                kernel: [kh, kw],
                stride: opts.stride,
                dilation: opts.dilation,
            }),
            &[],
        );
        if win.is_poisoned() {
            return win;
        }
        let dims = win.shape().0;
        let (oh, ow) = (dims[4].known().unwrap_or(0), dims[5].known().unwrap_or(0));
        let ckk = cg * kh * kw;
        // [N, C, kh, kw, OH, OW] -> [N, g, C/g*kh*kw, OH*OW]: the im2col buffer.
        let cols = win.reshape_to(loc, dims_of(std::slice::from_ref(&n), &[g, ckk, oh * ow]));
        let w = weight.reshape_to(loc, Shape::known(&[g, o / g, ckk]));
        let y = w.matmul(cols).reshape_to(loc, dims_of(&[n], &[o, oh, ow]));
        match bias {
            Some(b) => y + b.reshape_to(loc, Shape::known(&[o, 1, 1])),
            None => y,
        }
    }

    /// `F.max_pool2d`: each window's maximum (the first one, NaN wins); the gradient
    /// flows to that element only.
    #[track_caller]
    pub fn max_pool2d(self, opts: Pool2dOptions) -> Var<'g> {
        self.max_pool_impl(Location::caller(), opts).0
    }

    /// `F.max_pool2d(.., return_indices=True)`: the values and, per output, the flat
    /// `h * W + w` position of the maximum in its input plane (`i64`).
    #[track_caller]
    pub fn max_pool2d_with_indices(self, opts: Pool2dOptions) -> (Var<'g>, Var<'g>) {
        let loc = Location::caller();
        let (v, arg) = self.max_pool_impl(loc, opts);
        if v.is_poisoned() {
            return (v, v);
        }
        let [h, w] = self.spatial();
        let out = v.shape().0;
        let r = out.len();
        let (oh, ow) = (
            out[r - 2].known().unwrap_or(0),
            out[r - 1].known().unwrap_or(0),
        );
        let (k, s, p, d) = (opts.kernel, opts.stride, opts.padding, opts.dilation);
        // table[a, oh, ow]: the input position of window element a = i*kw + j. Its
        // size is checked before it is allocated (the window view it mirrors was
        // checked as f32 or bool, the table is i64).
        let kk = k[0] * k[1];
        if let Err(e) = crate::limits::check_size(DType::I64, &[kk, oh, ow]) {
            let e = self.fail(loc, "max_pool2d", OpError::TooLarge(e));
            return (e, e);
        }
        let mut table = Vec::with_capacity(oh * ow * kk);
        for i in 0..k[0] {
            for j in 0..k[1] {
                for y in 0..oh {
                    for x in 0..ow {
                        let row = (y * s[0] + i * d[0]) as i64 - p[0] as i64;
                        let col = (x * s[1] + j * d[1]) as i64 - p[1] as i64;
                        let inside = (0..h as i64).contains(&row) && (0..w as i64).contains(&col);
                        table.push(if inside { row * w as i64 + col } else { -1 });
                    }
                }
            }
        }
        let table = self.b.constant(Data::I64(table), &[k[0] * k[1], oh, ow]);
        let mut full = arg.shape();
        full.0[r - 2] = crate::Dim::Known(k[0] * k[1]);
        let idx = table
            .broadcast_as(loc, "max_pool2d", &full)
            .gather((r - 2) as i64, arg)
            .squeeze_axes(loc, &[r - 2]);
        (v, idx)
    }

    #[track_caller]
    fn max_pool_impl(self, loc: Loc, o: Pool2dOptions) -> (Var<'g>, Var<'g>) {
        if self.is_poisoned() {
            return (self, self);
        }
        if self.rank() == 3 {
            let (v, a) = self.unsqueeze(0).max_pool_impl(loc, o);
            return (v.squeeze_axes(loc, &[0]), a.squeeze_axes(loc, &[0]));
        }
        let Some(win) = self.pool_windows(loc, "max_pool2d", o, o.dilation, f64::NEG_INFINITY)
        else {
            return (self.b.poison(), self.b.poison());
        };
        // [N, C, kh, kw, OH, OW] -> [N, C, kh*kw, OH, OW]: the window elements on one
        // axis, the outputs contiguous behind it, so the copy, the argmax and the
        // gather each walk long contiguous rows (an innermost window axis of 2 or 3
        // elements measured 3x slower).
        let dims = win.shape().0;
        let kk = o.kernel[0] * o.kernel[1];
        let rows = win.reshape_to(
            loc,
            dims_of(
                &dims[..2],
                &[
                    kk,
                    dims[4].known().unwrap_or(0),
                    dims[5].known().unwrap_or(0),
                ],
            ),
        );
        let arg = rows.argmax(2, true);
        let v = rows.gather(2, arg).squeeze_axes(loc, &[2]);
        (v, arg)
    }

    /// `F.avg_pool2d` with `ceil_mode`, `count_include_pad` and `divisor_override`.
    #[track_caller]
    pub fn avg_pool2d(self, opts: Pool2dOptions) -> Var<'g> {
        let loc = Location::caller();
        if self.is_poisoned() {
            return self;
        }
        if self.rank() == 3 {
            return self.unsqueeze(0).avg_pool2d(opts).squeeze_axes(loc, &[0]);
        }
        if !self.dtype().is_float() {
            return self.fail(
                loc,
                "avg_pool2d",
                usage(format!("needs a floating-point input, got {}", self.ty())),
            );
        }
        let Some(win) = self.pool_windows(loc, "avg_pool2d", opts, [1, 1], 0.0) else {
            return self.b.poison();
        };
        let sums = win.sum(Axes::List(vec![2, 3]), false);
        let [h, w] = self.spatial();
        let dims = sums.shape().0;
        let (oh, ow) = (dims[2].known().unwrap_or(0), dims[3].known().unwrap_or(0));
        let (k, s, p) = (opts.kernel, opts.stride, opts.padding);
        // PyTorch's divisor per output: the window clipped to the padded input, or to the
        // input itself without count_include_pad.
        let extent = |o: usize, a: usize, size: usize| {
            let start = (o * s[a]) as i64 - p[a] as i64;
            let end = (start + k[a] as i64).min((size + p[a]) as i64);
            let with_pad = end - start;
            let real = end.min(size as i64) - start.max(0);
            if opts.count_include_pad {
                with_pad
            } else {
                real
            }
        };
        let mut div = Vec::with_capacity(oh * ow);
        for y in 0..oh {
            for x in 0..ow {
                div.push(match opts.divisor_override {
                    Some(d) => d as f64,
                    None => (extent(y, 0, h) * extent(x, 1, w)) as f64,
                });
            }
        }
        if div.iter().all(|&d| d == div[0]) {
            return sums / div[0];
        }
        let data = match self.dtype() {
            DType::F64 => Data::F64(div),
            _ => Data::F32(div.iter().map(|&d| d as f32).collect()),
        };
        sums / self.b.constant(data, &[oh, ow])
    }

    /// `F.adaptive_avg_pool2d` for output sizes that divide the input (including the
    /// global `(1, 1)`): equal windows, so it is `avg_pool2d` with `kernel = H / out`.
    #[track_caller]
    pub fn adaptive_avg_pool2d(self, output_size: impl Into<Pair>) -> Var<'g> {
        let loc = Location::caller();
        let out = output_size.into().0;
        if self.is_poisoned() {
            return self;
        }
        if self.rank() < 3 {
            return self.fail(
                loc,
                "adaptive_avg_pool2d",
                usage(format!(
                    "needs [N, C, H, W] or [C, H, W], got {}",
                    self.shape()
                )),
            );
        }
        let [h, w] = self.spatial();
        if out == [1, 1] {
            let r = self.rank() as i64;
            return self.mean(Axes::List(vec![r - 2, r - 1]), true);
        }
        if out[0] == 0 || out[1] == 0 || h % out[0] != 0 || w % out[1] != 0 {
            return self.fail(
                loc,
                "adaptive_avg_pool2d",
                usage(format!(
                    "output size {out:?} must divide the input's {h}x{w} (uneven bins are not supported)"
                )),
            );
        }
        self.avg_pool2d(Pool2dOptions::new([h / out[0], w / out[1]]))
    }

    /// `F.batch_norm` over every axis but 1 (`[N, C]`, `[N, C, L]`, `[N, C, H, W]`).
    /// Training mode normalises with the batch mean and biased variance and, given
    /// running statistics, returns their updates (unbiased variance); evaluation mode
    /// normalises with the running statistics.
    #[track_caller]
    pub fn batch_norm(self, a: BatchNorm<'g>) -> BatchNormOut<'g> {
        let loc = Location::caller();
        let poisoned = BatchNormOut {
            output: self.b.poison(),
            running_mean: None,
            running_var: None,
        };
        let others = [a.running_mean, a.running_var, a.weight, a.bias];
        if self.is_poisoned() || others.iter().flatten().any(|v| v.is_poisoned()) {
            return poisoned;
        }
        let r = self.rank();
        let c = self.shape().0.get(1).and_then(|d| d.known());
        let Some(c) = c.filter(|_| r >= 2 && self.dtype().is_float()) else {
            self.fail(
                loc,
                "batch_norm",
                usage(format!(
                    "needs a float [N, C, ...] input with known C, got {}",
                    self.ty()
                )),
            );
            return poisoned;
        };
        for v in others.iter().flatten() {
            if v.shape() != Shape::known(&[c]) {
                self.fail(
                    loc,
                    "batch_norm",
                    usage(format!(
                        "per-channel operands must be [{c}], got {}",
                        v.shape()
                    )),
                );
                return poisoned;
            }
        }
        let mut per_channel = vec![1i64; r];
        per_channel[1] = c as i64;
        let axes: Vec<i64> = (0..r as i64).filter(|&d| d != 1).collect();
        let (mean, var, updates) = if a.training {
            let mean = self.mean(Axes::List(axes.clone()), true);
            let centered = self - mean;
            let var = centered.square().mean(Axes::List(axes.clone()), true);
            let updates = match (a.running_mean, a.running_var) {
                (Some(rm), Some(rv)) => {
                    let m = a.momentum;
                    let batch_mean = mean.reshape(&[c as i64]);
                    let unbiased = self.var(Axes::List(axes), 1, false);
                    (
                        Some(rm * (1.0 - m) + batch_mean * m),
                        Some(rv * (1.0 - m) + unbiased * m),
                    )
                }
                _ => (None, None),
            };
            (mean, var, updates)
        } else {
            match (a.running_mean, a.running_var) {
                (Some(rm), Some(rv)) => (
                    rm.reshape(&per_channel),
                    rv.reshape(&per_channel),
                    (None, None),
                ),
                _ => {
                    self.fail(
                        loc,
                        "batch_norm",
                        usage("evaluation mode needs running_mean and running_var".into()),
                    );
                    return poisoned;
                }
            }
        };
        let mut y = (self - mean) * (var + a.eps).rsqrt();
        if let Some(w) = a.weight {
            y = y * w.reshape(&per_channel);
        }
        if let Some(b) = a.bias {
            y = y + b.reshape(&per_channel);
        }
        BatchNormOut {
            output: y,
            running_mean: updates.0,
            running_var: updates.1,
        }
    }

    /// `[N, C, H, W]` with known `C`, `H`, `W`: the batch dim (maybe symbolic) and `C`.
    fn image(self, loc: Loc, name: &str) -> Option<(crate::Dim, usize)> {
        let dims = self.shape().0;
        let ok = dims.len() == 4 && dims[1..].iter().all(|d| d.known().is_some());
        if !ok {
            self.fail(
                loc,
                name,
                usage(format!(
                    "needs an [N, C, H, W] input with known C, H, W, got {}",
                    self.shape()
                )),
            );
            return None;
        }
        Some((dims[0].clone(), dims[1].known()?))
    }

    /// Refuses (and poisons the graph with) a window parameter above
    /// [`MAX_WINDOW_PARAM`]; `true` when all are within it.
    #[track_caller]
    fn window_params_ok(self, loc: Loc, op: &str, params: &[(&str, [usize; 2])]) -> bool {
        for (what, v) in params {
            if v.iter().any(|&x| x > MAX_WINDOW_PARAM) {
                self.fail(
                    loc,
                    op,
                    usage(format!(
                        "{what} {v:?} is larger than any axis can be (at most 2^40)"
                    )),
                );
                return false;
            }
        }
        true
    }

    /// The known sizes of the last two axes.
    fn spatial(self) -> [usize; 2] {
        let d = self.shape().0;
        let r = d.len();
        [d[r - 2].known().unwrap_or(0), d[r - 1].known().unwrap_or(0)]
    }

    /// Pads the last two axes by `lo` before and `hi` after (negative `hi` crops).
    #[track_caller]
    fn pad2d(self, lo: [usize; 2], hi: [usize; 2], value: f64) -> Var<'g> {
        if lo == [0, 0] && hi == [0, 0] {
            return self;
        }
        self.pad(
            &[(lo[1] as i64, hi[1] as i64), (lo[0] as i64, hi[0] as i64)],
            value,
        )
    }

    /// Removes `p` elements from both ends of the last two axes, leaving `size`.
    #[track_caller]
    fn crop2d(self, p: [usize; 2], size: [usize; 2]) -> Var<'g> {
        if p == [0, 0] {
            return self;
        }
        let r = self.rank() as i64;
        self.slice(r - 2, Some(p[0] as i64), Some((p[0] + size[0]) as i64), 1)
            .slice(r - 1, Some(p[1] as i64), Some((p[1] + size[1]) as i64), 1)
    }

    /// The pooling windows `[N, C, kh, kw, OH, OW]` of an `[N, C, H, W]` input padded
    /// with `value` so that PyTorch's output size (`ceil_mode` included) comes out.
    #[track_caller]
    fn pool_windows(
        self,
        loc: Loc,
        name: &str,
        o: Pool2dOptions,
        dilation: [usize; 2],
        value: f64,
    ) -> Option<Var<'g>> {
        self.image(loc, name)?;
        let [h, w] = self.spatial();
        let (k, s, p) = (o.kernel, o.stride, o.padding);
        let params = [
            ("kernel", k),
            ("stride", s),
            ("padding", p),
            ("dilation", dilation),
        ];
        if !self.window_params_ok(loc, name, &params) {
            return None;
        }
        if k.contains(&0) || s.contains(&0) || dilation.contains(&0) {
            self.fail(
                loc,
                name,
                usage(format!(
                    "kernel {k:?}, stride {s:?} and dilation {dilation:?} must be positive"
                )),
            );
            return None;
        }
        if p[0] > k[0] / 2 || p[1] > k[1] / 2 {
            self.fail(
                loc,
                name,
                usage(format!(
                    "padding {p:?} must be at most half of the kernel size {k:?}"
                )),
            );
            return None;
        }
        let outs = [0, 1].map(|a| pool_out([h, w][a], k[a], s[a], p[a], dilation[a], o.ceil_mode));
        let (Some(oh), Some(ow)) = (outs[0], outs[1]) else {
            self.fail(
                loc,
                name,
                usage(format!(
                    "a {k:?} window (stride {s:?}, padding {p:?}, dilation {dilation:?}) gives no output for a {h}x{w} input"
                )),
            );
            return None;
        };
        // The padded extent the last window needs; below `H + 2p` (floor mode drops
        // rows) the high side is cropped instead.
        let need = [0, 1].map(|a| ([oh, ow][a] - 1) * s[a] + dilation[a] * (k[a] - 1) + 1);
        let hi = [0, 1].map(|a| need[a] as i64 - [h, w][a] as i64 - p[a] as i64);
        let padded = self.pad(&[(p[1] as i64, hi[1]), (p[0] as i64, hi[0])], value);
        Some(padded.prim(
            loc,
            name,
            Op::Unfold(Window {
                kernel: k,
                stride: s,
                dilation,
            }),
            &[],
        ))
    }
}

/// `lead` dims followed by known sizes.
fn dims_of(lead: &[crate::Dim], rest: &[usize]) -> Shape {
    let mut d = lead.to_vec();
    d.extend(rest.iter().map(|&n| crate::Dim::Known(n)));
    Shape(d)
}

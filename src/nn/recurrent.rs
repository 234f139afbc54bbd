//! Recurrent layers: `RNN`, `LSTM`, `GRU` with PyTorch's gate order, parameter names
//! (`weight_ih_l0`, `bias_hh_l1_reverse`, ...), initialisation (every weight and bias
//! U(-1/sqrt(hidden), 1/sqrt(hidden))), `batch_first`, `num_layers`, `bidirectional`,
//! inter-layer `dropout`, an initial state in and the final state out.
//!
//! The recurrence is unrolled at trace time over the sequence length, which must
//! therefore be a known size (the batch may stay symbolic): a `[N, T, F]` input with
//! `T = 64` becomes 64 copies of the cell in the graph. The input projection of all time
//! steps is one matrix product before the loop; only `h W_hh^T` is per step. Limit:
//! sequences of up to [`MAX_UNROLLED_STEPS`] steps (beyond that the graph's size, and
//! its compile time, grow past what a training step should carry; pad or chunk the
//! sequence and carry the state, as truncated BPTT does).

use aotgrad_ir::{BuildErrorKind, Shape, Var};

use super::module::{Init, Module, Scope, dropout, report_inputs};

/// The longest sequence a recurrent layer unrolls.
pub const MAX_UNROLLED_STEPS: usize = 1024;

/// Which recurrence a [`Recurrent`] layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// `h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)` (`nonlinearity='tanh'`).
    RnnTanh,
    /// The same with ReLU (`nonlinearity='relu'`).
    RnnRelu,
    /// Gates `i, f, g, o` in that order, as PyTorch stacks them.
    Lstm,
    /// Gates `r, z, n` in that order.
    Gru,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::RnnTanh | Cell::RnnRelu => "RNN",
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
}

/// `nn.RNN` / `nn.LSTM` / `nn.GRU` (see the module docs). Build with [`Recurrent::rnn`],
/// [`Recurrent::lstm`] or [`Recurrent::gru`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recurrent {
    pub cell: Cell,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bias: bool,
    pub batch_first: bool,
    pub dropout: f64,
    pub bidirectional: bool,
}

/// What a recurrent layer returns: PyTorch's `output, h_n` (and `c_n` for an LSTM).
#[derive(Debug, Clone, Copy)]
pub struct RecurrentOutput<'g> {
    /// `[N, T, D*H]` (`batch_first`) or `[T, N, D*H]`.
    pub output: Var<'g>,
    /// `[num_layers * D, N, H]`.
    pub h_n: Var<'g>,
    /// The LSTM's cell state, `[num_layers * D, N, H]`.
    pub c_n: Option<Var<'g>>,
}

pub type Lstm = Recurrent;
pub type Gru = Recurrent;
pub type Rnn = Recurrent;

impl Recurrent {
    fn new(cell: Cell, input_size: usize, hidden_size: usize) -> Recurrent {
        Recurrent {
            cell,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
        }
    }

    /// `nn.RNN(input_size, hidden_size)` with tanh.
    pub fn rnn(input_size: usize, hidden_size: usize) -> Recurrent {
        Recurrent::new(Cell::RnnTanh, input_size, hidden_size)
    }

    /// `nn.LSTM(input_size, hidden_size)`.
    pub fn lstm(input_size: usize, hidden_size: usize) -> Recurrent {
        Recurrent::new(Cell::Lstm, input_size, hidden_size)
    }

    /// `nn.GRU(input_size, hidden_size)`.
    pub fn gru(input_size: usize, hidden_size: usize) -> Recurrent {
        Recurrent::new(Cell::Gru, input_size, hidden_size)
    }

    /// `nonlinearity='relu'` (RNN only).
    pub fn relu(mut self) -> Recurrent {
        if self.cell == Cell::RnnTanh {
            self.cell = Cell::RnnRelu;
        }
        self
    }

    pub fn num_layers(mut self, n: usize) -> Recurrent {
        self.num_layers = n;
        self
    }

    pub fn batch_first(mut self, on: bool) -> Recurrent {
        self.batch_first = on;
        self
    }

    pub fn bidirectional(mut self, on: bool) -> Recurrent {
        self.bidirectional = on;
        self
    }

    pub fn dropout(mut self, p: f64) -> Recurrent {
        self.dropout = p;
        self
    }

    pub fn no_bias(mut self) -> Recurrent {
        self.bias = false;
        self
    }

    fn directions(&self) -> usize {
        if self.bidirectional { 2 } else { 1 }
    }

    #[track_caller]
    fn fail<'g>(&self, s: &Scope<'g>, msg: String) -> RecurrentOutput<'g> {
        let v = s
            .builder()
            .report(self.cell.name(), BuildErrorKind::Usage(msg));
        RecurrentOutput {
            output: v,
            h_n: v,
            c_n: (self.cell == Cell::Lstm).then_some(v),
        }
    }

    /// Runs the layer on `x` from the initial state `h0` (and `c0`), zeros when `None`.
    #[track_caller]
    pub fn forward_state<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        h0: Option<Var<'g>>,
        c0: Option<Var<'g>>,
    ) -> RecurrentOutput<'g> {
        let name = self.cell.name();
        if x.is_poisoned() {
            return self.fail(s, "poisoned input".into());
        }
        if x.rank() != 3 || x.shape().dims()[2].known() != Some(self.input_size) {
            let layout = if self.batch_first {
                "[N, T, F]"
            } else {
                "[T, N, F]"
            };
            return self.fail(
                s,
                format!(
                    "expected a {layout} input with F = input_size = {}, got {}",
                    self.input_size,
                    x.ty()
                ),
            );
        }
        if self.num_layers == 0 || self.hidden_size == 0 {
            return self.fail(
                s,
                "num_layers and hidden_size must be at least 1".to_string(),
            );
        }
        // Work in [N, T, F].
        let x = if self.batch_first {
            x
        } else {
            x.transpose(0, 1)
        };
        let Some(steps) = x.shape().dims()[1].known() else {
            return self.fail(
                s,
                format!(
                    "the sequence length must be a known size to unroll {name} over it, got {} (pad to a fixed length)",
                    x.ty()
                ),
            );
        };
        if steps == 0 || steps > MAX_UNROLLED_STEPS {
            return self.fail(
                s,
                format!("sequence length {steps} is outside 1..={MAX_UNROLLED_STEPS}"),
            );
        }
        if self.cell != Cell::Lstm && c0.is_some() {
            return self.fail(s, format!("{name} has no cell state (c0)"));
        }
        let (h, d) = (self.hidden_size, self.directions());
        let state_of = |init: Option<Var<'g>>, k: usize| init.map(|v| v.select(0, k as i64));
        let mut input = x;
        let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
        for layer in 0..self.num_layers {
            if layer > 0 && self.dropout > 0.0 {
                input = dropout(s, input, self.dropout);
            }
            let in_size = if layer == 0 { self.input_size } else { h * d };
            let mut outs = Vec::new();
            for dir in 0..d {
                let suffix = if dir == 1 {
                    format!("l{layer}_reverse")
                } else {
                    format!("l{layer}")
                };
                let k = layer * d + dir;
                let (out, hn, cn) = self.direction(
                    s,
                    input,
                    in_size,
                    &suffix,
                    dir == 1,
                    steps,
                    state_of(h0, k),
                    state_of(c0, k),
                );
                outs.push(out);
                h_n.push(hn);
                c_n.extend(cn);
            }
            input = if d == 1 {
                outs[0]
            } else {
                s.builder().cat(&outs, -1)
            };
        }
        let output = if self.batch_first {
            input
        } else {
            input.transpose(0, 1)
        };
        RecurrentOutput {
            output,
            h_n: s.builder().stack(&h_n, 0),
            c_n: (!c_n.is_empty()).then(|| s.builder().stack(&c_n, 0)),
        }
    }

    /// One direction of one layer over `[N, T, in]`: the outputs `[N, T, H]` and the
    /// final `h` (and `c`), each `[N, H]`.
    #[allow(clippy::too_many_arguments)]
    fn direction<'g>(
        &self,
        s: &Scope<'g>,
        x: Var<'g>,
        in_size: usize,
        suffix: &str,
        reverse: bool,
        steps: usize,
        h0: Option<Var<'g>>,
        c0: Option<Var<'g>>,
    ) -> (Var<'g>, Var<'g>, Option<Var<'g>>) {
        let (h, g) = (self.hidden_size, self.cell.gates());
        let bound = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform { bound };
        let w_ih = s.param(
            &format!("weight_ih_{suffix}"),
            &[g * h, in_size],
            init.clone(),
        );
        let w_hh = s.param(&format!("weight_hh_{suffix}"), &[g * h, h], init.clone());
        let (b_ih, b_hh) = if self.bias {
            (
                Some(s.param(&format!("bias_ih_{suffix}"), &[g * h], init.clone())),
                Some(s.param(&format!("bias_hh_{suffix}"), &[g * h], init)),
            )
        } else {
            (None, None)
        };
        // All steps' input projections at once: [N, T, G*H].
        let xp = x.linear(w_ih, b_ih);
        // [N, H] zeros with the batch's (possibly symbolic) size and the params' dtype.
        let batch = x.shape().dims()[0].clone();
        let zeros = || {
            s.builder()
                .zeros(w_hh.dtype(), Shape(vec![batch.clone(), h.into()]))
        };
        let mut hs = h0.unwrap_or_else(zeros);
        let mut cs = (self.cell == Cell::Lstm).then(|| c0.unwrap_or_else(zeros));
        let mut outs = vec![None; steps];
        for i in 0..steps {
            let t = if reverse { steps - 1 - i } else { i };
            let xt = xp.select(1, t as i64);
            let hp = hs.linear(w_hh, b_hh);
            hs = match self.cell {
                Cell::RnnTanh => (xt + hp).tanh(),
                Cell::RnnRelu => (xt + hp).relu(),
                Cell::Lstm => {
                    let gates = (xt + hp).chunk(4, -1);
                    let (ig, fg, gg, og) = (
                        gates[0].sigmoid(),
                        gates[1].sigmoid(),
                        gates[2].tanh(),
                        gates[3].sigmoid(),
                    );
                    let c = fg * cs.expect("LSTM has a cell state") + ig * gg;
                    cs = Some(c);
                    og * c.tanh()
                }
                Cell::Gru => {
                    let xi = xt.chunk(3, -1);
                    let hh = hp.chunk(3, -1);
                    let r = (xi[0] + hh[0]).sigmoid();
                    let z = (xi[1] + hh[1]).sigmoid();
                    let n = (xi[2] + r * hh[2]).tanh();
                    (z * -1.0 + 1.0) * n + z * hs
                }
            };
            outs[t] = Some(hs);
        }
        let outs: Vec<Var<'g>> = outs.into_iter().map(|o| o.expect("every step")).collect();
        (s.builder().stack(&outs, 1), hs, cs)
    }
}

impl Module for Recurrent {
    /// The output sequence only (PyTorch's `output, _ = lstm(x)`), so that a recurrent
    /// layer fits a `Sequential`; [`Recurrent::forward_state`] has the states.
    #[track_caller]
    fn forward<'g>(&self, s: &Scope<'g>, x: Var<'g>) -> Var<'g> {
        self.forward_state(s, x, None, None).output
    }

    /// `(x[, h0[, c0]]) -> (output, h_n[, c_n])`.
    #[track_caller]
    fn forward_all<'g>(&self, s: &Scope<'g>, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        let most = if self.cell == Cell::Lstm { 3 } else { 2 };
        if inputs.is_empty() || inputs.len() > most {
            return vec![report_inputs(s, self.cell.name(), most, inputs.len())];
        }
        let r = self.forward_state(s, inputs[0], inputs.get(1).copied(), inputs.get(2).copied());
        let mut out = vec![r.output, r.h_n];
        out.extend(r.c_n);
        out
    }

    fn type_name(&self) -> String {
        self.cell.name().to_string()
    }
}

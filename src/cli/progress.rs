//! Progress of one training epoch: an indicatif bar with the running loss, samples/s and
//! ETA on a terminal; on anything else (CI logs, pipes, files) the course's plain lines,
//! `Train Epoch: E [seen/total (p%)]\tLoss: x`, every `every` batches and at the end.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct EpochProgress {
    bar: Option<ProgressBar>,
    epoch: usize,
    batches: usize,
    samples: usize,
    seen: usize,
    done: usize,
    every: usize,
    loss_sum: f64,
    started: Instant,
}

impl EpochProgress {
    /// Progress over `batches` batches (`samples` samples) of epoch `epoch` (1-based
    /// in what it prints). A bar only when stdout is a terminal.
    pub fn new(epoch: usize, batches: usize, samples: usize) -> EpochProgress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} {bar:30} {pos}/{len} batches | {msg} | eta {eta}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(epoch.to_string());
            bar
        });
        EpochProgress {
            bar,
            epoch,
            batches,
            samples,
            seen: 0,
            done: 0,
            every: 20,
            loss_sum: 0.0,
            started: Instant::now(),
        }
    }

    /// Plain-line mode prints every `n` batches (default 20).
    pub fn every(mut self, n: usize) -> EpochProgress {
        self.every = n.max(1);
        self
    }

    /// One finished batch of `n` samples with loss `loss`.
    pub fn batch(&mut self, n: usize, loss: f64) {
        self.seen += n;
        self.done += 1;
        self.loss_sum += loss * n as f64;
        let rate = self.seen as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!(
                    "loss {loss:.4} (mean {:.4}) | {rate:.0} samples/s",
                    self.loss_sum / self.seen as f64
                ));
                bar.inc(1);
            }
            None => {
                if (self.done - 1).is_multiple_of(self.every) || self.done == self.batches {
                    println!(
                        "Train Epoch: {} [{}/{} ({:.0}%)]\tLoss: {:.6}",
                        self.epoch,
                        self.seen,
                        self.samples,
                        100.0 * self.done as f64 / self.batches.max(1) as f64,
                        loss
                    );
                }
            }
        }
    }

    /// The sample-weighted mean loss so far.
    pub fn mean_loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    /// Samples per second since the epoch started.
    pub fn samples_per_s(&self) -> f64 {
        self.seen as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Clears the bar (the caller prints the epoch's summary line).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

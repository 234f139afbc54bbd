//! Early stopping on a validation metric.

/// Early stopping on a validation metric: `update` after each epoch returns `true` when
/// the metric has not improved by more than `min_delta` for `patience` epochs.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    pub min_delta: f64,
    /// `true` when larger is better (accuracy), `false` when smaller is (loss).
    pub maximize: bool,
    best: Option<f64>,
    best_epoch: usize,
    bad: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize, min_delta: f64, maximize: bool) -> EarlyStopping {
        EarlyStopping {
            patience,
            min_delta,
            maximize,
            best: None,
            best_epoch: 0,
            bad: 0,
        }
    }

    /// Records the metric of `epoch`; returns whether to stop.
    pub fn update(&mut self, epoch: usize, metric: f64) -> bool {
        let better = match self.best {
            None => true,
            Some(b) if self.maximize => metric > b + self.min_delta,
            Some(b) => metric < b - self.min_delta,
        };
        if better {
            self.best = Some(metric);
            self.best_epoch = epoch;
            self.bad = 0;
        } else {
            self.bad += 1;
        }
        self.bad >= self.patience
    }

    /// The best metric so far and its epoch.
    pub fn best(&self) -> Option<(f64, usize)> {
        self.best.map(|b| (b, self.best_epoch))
    }
}

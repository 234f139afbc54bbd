//! A hook that sees every training step as it ends, for live views of a run (the
//! dashboard) that must not slow it: the step calls it on the training thread with a
//! few numbers, and a good observer only hands them on (to a channel) and returns.

/// What a step reports to its observer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepEvent {
    /// Updates applied so far (this step included).
    pub step: u64,
    /// The loss before this step's update.
    pub loss: f64,
    /// The learning rate the step used.
    pub lr: f64,
    /// Samples in the batch (0 for a data-free objective).
    pub samples: usize,
}

/// Sees every step of a [`super::TrainStep`] ([`super::TrainStep::observe`]).
pub trait StepObserver: Send {
    fn stepped(&self, event: &StepEvent);
}

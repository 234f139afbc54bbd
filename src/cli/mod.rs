//! The examples' and the `aotgrad` binary's scaffolding, kept apart from the library
//! (the model, the optimizer, the training step, data): the shared command-line flags,
//! the MNIST job two examples share, progress bars, run logs and their pictures.
//!
//! A program of your own needs none of it; it is public so that the examples (which
//! are separate crates) can use it, and so that you can copy what you like. The
//! library never depends on this module (`docs/ARCHITECTURE.md`, "Module graph").

pub mod args;
pub mod course_mnist;
pub mod dashboard_overhead;
pub mod finished_runs;
pub mod mnist_job;
pub mod pictures;
pub mod plot;
pub mod progress;
pub mod pyrepr;
pub mod runlog;
pub mod text_job;
pub mod torch_print;

/// A process group of the examples: MPI's ranks, `None` for a process alone.
pub type Group = Option<std::sync::Arc<dyn crate::runtime::collective::Communicator>>;

/// Runs `body` in MPI's process group with `--distributed` (else alone). A rank whose
/// body fails says why, with its rank, and ends every rank: the others may be waiting
/// in a reduction.
pub fn as_rank<T>(
    distributed: bool,
    body: impl FnOnce(Group) -> Result<T, Box<dyn std::error::Error>>,
) -> Result<T, Box<dyn std::error::Error>> {
    let group = if distributed {
        Some(crate::distributed::mpi_world()?)
    } else {
        None
    };
    let r = body(group.clone());
    if let (Err(e), Some(g)) = (&r, &group) {
        eprintln!("error: rank {} of {}: {e}", g.rank(), g.world());
        g.fail(1);
    }
    r
}

/// `trainer` averaging its gradients over `group`'s ranks (when there is a group), in
/// buckets of at most `bucket_kb` kilobytes when given (`--bucket-kb`).
pub fn data_parallel(
    trainer: crate::train::Trainer,
    group: &Group,
    bucket_kb: Option<usize>,
) -> crate::train::Trainer {
    let Some(g) = group else { return trainer };
    let trainer = trainer.data_parallel(g.clone());
    match bucket_kb {
        Some(kb) => trainer.bucket_bytes(kb.saturating_mul(1024)),
        None => trainer,
    }
}

//! Data-parallel jobs across processes: joining the MPI job `mpirun` started, checking
//! at start-up that every rank runs the same program, and summing a rank's metrics
//! over the group. The step's own gradient reduction is compiled into it
//! ([`crate::train::Trainer::data_parallel`]); this module is what a training loop
//! around it needs (`cli::mnist_job` uses all of it).

use std::sync::Arc;

use aotgrad_ir::Data;
use aotgrad_runtime::collective::{CollectiveError, Communicator};

/// Why a distributed run could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    #[error(
        "--distributed needs MPI, and this binary was built without it: install OpenMPI and \
         libclang (Debian: apt install openmpi-bin libopenmpi-dev libclang-dev), build with \
         `--features mpi`, and start the ranks with `mpirun -np N` (for example \
         `mpirun -np 2 target/release/examples/mnist --distributed`)"
    )]
    NoMpi,
    #[error(transparent)]
    Collective(#[from] CollectiveError),
    #[error(
        "rank {rank} runs a different job than rank 0 (every rank must run the same model, \
         batch and flags): rank 0 has `{expected}`, rank {rank} has `{got}`"
    )]
    Mismatch {
        rank: usize,
        expected: String,
        got: String,
    },
}

/// This process's place in the MPI job (a group of one outside `mpirun`). MPI is
/// initialised here, once per process, and finalised when the last handle drops.
pub fn mpi_world() -> Result<Arc<dyn Communicator>, DistributedError> {
    #[cfg(feature = "mpi")]
    {
        let group = aotgrad_runtime::collective::mpi::MpiGroup::init()?;
        Ok(Arc::new(group))
    }
    #[cfg(not(feature = "mpi"))]
    {
        Err(DistributedError::NoMpi)
    }
}

/// Checks that every rank describes its job with the same lines (parameters with
/// their shapes, the step graph's fingerprint, the batch): a rank that differs is named
/// with its first differing line, on every rank, before any step runs, instead of a
/// hang or garbage at the first reduction.
pub fn check_same_job(comm: &dyn Communicator, description: &str) -> Result<(), DistributedError> {
    let all = comm.all_gather(description.as_bytes())?;
    let first = String::from_utf8_lossy(&all[0]).into_owned();
    for (rank, other) in all.iter().enumerate().skip(1) {
        let other = String::from_utf8_lossy(other);
        if other != first {
            let mut a = first.lines();
            let mut b = other.lines();
            loop {
                match (a.next(), b.next()) {
                    (Some(x), Some(y)) if x == y => continue,
                    (x, y) => {
                        return Err(DistributedError::Mismatch {
                            rank,
                            expected: x.unwrap_or("(nothing more)").to_string(),
                            got: y.unwrap_or("(nothing more)").to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// `values` summed over the group (in rank order: every rank gets the same bits).
pub fn sum_over_ranks(comm: &dyn Communicator, values: &mut [f64]) -> Result<(), CollectiveError> {
    let mut d = Data::F64(values.to_vec());
    comm.all_reduce_sum(&mut d)?;
    if let Data::F64(v) = d {
        values.copy_from_slice(&v);
    }
    Ok(())
}

/// Rank `rank`'s contiguous share of `n` evaluation samples: every sample exactly once
/// over the group (no padding, unlike training's shards, so sums are exact).
pub fn eval_share(n: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let world = world.max(1);
    (rank * n / world)..((rank + 1) * n / world)
}

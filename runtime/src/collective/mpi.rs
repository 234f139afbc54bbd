//! The ranks `mpirun` started, on OpenMPI through rsmpi (cargo feature `mpi`).
//!
//! [`Communicator::all_reduce_sum`] never calls `MPI_Allreduce`: its order of addition
//! is the library's (it changes with the algorithm OpenMPI picks for a message size
//! and rank count), so two ranks could end a step with different bits. Instead each
//! buffer is cut into `world` chunks of whole elements; an all-to-all hands chunk `r`
//! of every rank to rank `r` (reduce-scatter), which adds them in rank order
//! (`((x0 + x1) + x2) + ...`, as [`super::ThreadGroup`] does), and an all-gather hands
//! every owner's sum to every rank. Each element is added once, by one rank, in a fixed
//! order: bitwise identical on every rank and in every run, at the traffic of a
//! ring all-reduce (`2 (w-1)/w` of the buffer per rank).
//!
//! MPI runs with `MPI_THREAD_SERIALIZED`: every call holds the group's mutex, so the
//! step's collective thread and the main thread (start-up checks, evaluation sums) can
//! share the group.

use std::sync::Mutex;

use mpi::Threading;
use mpi::datatype::{Partition, PartitionMut};
use mpi::traits::{Communicator as _, CommunicatorCollectives};

use super::{CollectiveError, Communicator, add_into};
use crate::Tensor;
use aotgrad_ir::Data;

/// Bytes moved per MPI call at most: counts are C `int`s.
const MAX_PIECE_BYTES: usize = 1 << 30;

/// This process's rank of `MPI_COMM_WORLD`.
pub struct MpiGroup {
    rank: usize,
    world: usize,
    timeout: std::time::Duration,
    mpi: Mutex<Mpi>,
}

struct Mpi {
    // Declared first: dropped (freed) before the universe finalizes MPI.
    comm: mpi::topology::SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

// SAFETY: the MPI handles are plain C handles; MPI was initialised with
// `MPI_THREAD_SERIALIZED`, and every use of them goes through `MpiGroup::mpi`'s mutex,
// so no two threads ever call MPI at once, which is what that level requires.
unsafe impl Send for Mpi {}

impl MpiGroup {
    /// Initialises MPI (once per process) and joins `MPI_COMM_WORLD`. Outside `mpirun`
    /// this is a group of one.
    pub fn init() -> Result<MpiGroup, CollectiveError> {
        let refuse = |message: String| CollectiveError::Transport {
            rank: 0,
            world: 0,
            message,
        };
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| refuse("MPI is already initialised in this process".into()))?;
        if level < Threading::Serialized {
            return Err(refuse(format!(
                "this MPI library offers thread level {level:?}; aotgrad needs Serialized"
            )));
        }
        let comm = universe.world();
        Ok(MpiGroup {
            rank: comm.rank() as usize,
            world: comm.size() as usize,
            timeout: std::time::Duration::from_secs(300),
            mpi: Mutex::new(Mpi {
                comm,
                _universe: universe,
            }),
        })
    }

    /// How long a step waits for a reduction before it reports the group dead (MPI's
    /// own calls cannot time out: the wait gives up, the process exits with the error,
    /// and `mpirun` then ends the other ranks).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> MpiGroup {
        self.timeout = timeout;
        self
    }

    fn transport(&self, message: impl Into<String>) -> CollectiveError {
        CollectiveError::Transport {
            rank: self.rank,
            world: self.world,
            message: message.into(),
        }
    }

    /// Ends the job on every rank (after an error on this one, so that no peer waits
    /// for it forever).
    pub fn abort(&self, code: i32) -> ! {
        let mpi = self.mpi.lock().unwrap_or_else(|p| p.into_inner());
        mpi::traits::Communicator::abort(&mpi.comm, code)
    }
}

/// `n` elements cut into `world` chunks of whole elements: chunk `r`'s range.
fn chunk(n: usize, world: usize, r: usize) -> std::ops::Range<usize> {
    (r * n / world)..((r + 1) * n / world)
}

fn count(bytes: usize) -> i32 {
    i32::try_from(bytes).expect("pieces are at most MAX_PIECE_BYTES")
}

impl Communicator for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn timeout(&self) -> std::time::Duration {
        self.timeout
    }

    fn fail(&self, code: i32) {
        self.abort(code)
    }

    fn all_reduce_sum(&self, buf: &mut Data) -> Result<(), CollectiveError> {
        let (rank, world) = (self.rank, self.world);
        if world == 1 || buf.is_empty() {
            return Ok(());
        }
        let dtype = buf.dtype();
        let esize = dtype.size_bytes();
        let n = buf.len();
        // Taken, not copied (a failed reduction fails the step that asked for it).
        let taken = std::mem::replace(buf, Data::U8(Vec::new()));
        let mut bytes = Tensor::new(&[n], taken)
            .map_err(|e| self.transport(e.to_string()))?
            .to_le_bytes();
        let mpi = self
            .mpi
            .lock()
            .map_err(|_| CollectiveError::Broken { rank })?;
        // Pieces keep every count within a C int.
        let piece = (MAX_PIECE_BYTES / esize).max(1);
        let mut at = 0;
        while at < n {
            let m = piece.min(n - at);
            let part = &mut bytes[at * esize..(at + m) * esize];
            // Reduce-scatter: chunk r of every rank to rank r.
            let counts: Vec<i32> = (0..world)
                .map(|r| count(chunk(m, world, r).len() * esize))
                .collect();
            let displs: Vec<i32> = (0..world)
                .map(|r| count(chunk(m, world, r).start * esize))
                .collect();
            let mine = chunk(m, world, rank).len() * esize;
            // One spare byte each: an empty Vec's pointer is 0x1, which OpenMPI reads
            // as MPI_IN_PLACE (a rank whose chunk is empty, `n < world`).
            let mut gathered = vec![0u8; mine * world + 1];
            let recv_counts = vec![count(mine); world];
            let recv_displs: Vec<i32> = (0..world).map(|r| count(r * mine)).collect();
            {
                let send = Partition::new(&part[..], &counts[..], &displs[..]);
                let mut recv = PartitionMut::new(
                    &mut gathered[..mine * world],
                    &recv_counts[..],
                    &recv_displs[..],
                );
                mpi.comm.all_to_all_varcount_into(&send, &mut recv);
            }
            // This rank's chunk, added in rank order.
            let elems = mine / esize;
            let decode = |r: usize| {
                Tensor::from_le_bytes(dtype, &[elems], &gathered[r * mine..(r + 1) * mine])
                    .map(Tensor::into_data)
                    .map_err(|e| self.transport(e.to_string()))
            };
            let mut acc = decode(0)?;
            for r in 1..world {
                if !add_into(&mut acc, &decode(r)?) {
                    return Err(self.transport("a rank sent another dtype"));
                }
            }
            let mut sum = Tensor::new(&[elems], acc)
                .map_err(|e| self.transport(e.to_string()))?
                .to_le_bytes();
            sum.push(0); // as `gathered`: never an empty buffer's 0x1
            // All-gather every owner's sum into place.
            let mut recv = PartitionMut::new(part, &counts[..], &displs[..]);
            mpi.comm.all_gather_varcount_into(&sum[..mine], &mut recv);
            at += m;
        }
        drop(mpi);
        *buf = Tensor::from_le_bytes(dtype, &[n], &bytes)
            .map_err(|e| self.transport(e.to_string()))?
            .into_data();
        Ok(())
    }
}

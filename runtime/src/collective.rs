//! Process groups for data-parallel training: what a program's `all_reduce` runs on.
//!
//! A [`Communicator`] is one rank's handle on its group. Its one collective,
//! [`Communicator::all_reduce_sum`], must leave *bitwise identical* results on every
//! rank and between runs, whatever the transport: the sum is always taken in rank
//! order (`((x0 + x1) + x2) + ...`), never in the order messages arrive. Groups:
//!
//! - [`SingleProcess`]: a group of one (every single-process run; `all_reduce` is the
//!   identity);
//! - [`ThreadGroup`]: ranks on threads of one process, meeting in shared memory — the
//!   test bed of the distributed trainer, and data parallelism on one machine;
//! - [`mpi::MpiGroup`] (cargo feature `mpi`): the ranks `mpirun` started, one per
//!   process, on OpenMPI; the sum is a reduce-scatter then an all-gather, each chunk
//!   added in rank order by the rank that owns it, never `MPI_Allreduce` (whose order
//!   is the library's choice).
//!
//! Waiting is bounded: a rank whose peers do not arrive within the group's timeout
//! gets [`CollectiveError::Timeout`] instead of hanging.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aotgrad_ir::Data;

/// A collective that could not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectiveError {
    #[error(
        "rank {rank} of {world}: the other ranks did not reach all_reduce #{call} within {waited:?} (a rank died or runs a different program)"
    )]
    Timeout {
        rank: usize,
        world: usize,
        call: u64,
        waited: Duration,
    },
    #[error(
        "all_reduce #{call}: rank {rank} gave {got} but rank 0 gave {expected} (the ranks run different programs)"
    )]
    Mismatch {
        call: u64,
        rank: usize,
        expected: String,
        got: String,
    },
    #[error("rank {rank}: the process group is broken (a rank panicked inside a collective)")]
    Broken { rank: usize },
    #[error("rank {rank} of {world}: {message}")]
    Transport {
        rank: usize,
        world: usize,
        message: String,
    },
}

/// One rank's handle on its process group.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Replaces `buf` with the elementwise sum of every rank's `buf`, added in rank
    /// order, identically on every rank. Every rank must call it with the same dtype
    /// and length, in the same sequence of calls.
    fn all_reduce_sum(&self, buf: &mut Data) -> Result<(), CollectiveError>;

    /// This rank failed: end the job on every rank, so that none waits for it in a
    /// collective (MPI: `MPI_Abort`; a clean exit would block in `MPI_Finalize`, which
    /// waits for the peers). Groups in one process have nothing to do: their waits
    /// time out.
    fn fail(&self, _code: i32) {}

    /// How long a rank waits for its peers before it reports a dead or diverged group.
    fn timeout(&self) -> Duration {
        Duration::from_secs(300)
    }

    /// Every rank's `bytes`, in rank order, on every rank. Built from
    /// [`Communicator::all_reduce_sum`] (a sum of zeros and one rank's bytes per slot is
    /// that rank's bytes exactly), so every transport has it; used at start-up, not per
    /// step.
    fn all_gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CollectiveError> {
        let (rank, world) = (self.rank(), self.world());
        let mut lens = vec![0i64; world];
        lens[rank] = bytes.len() as i64;
        let mut lens = Data::I64(lens);
        self.all_reduce_sum(&mut lens)?;
        let Data::I64(lens) = lens else {
            unreachable!("the sum keeps the dtype")
        };
        let lens: Vec<usize> = lens.iter().map(|&n| n.max(0) as usize).collect();
        let start: usize = lens[..rank].iter().sum();
        let mut all = vec![0u8; lens.iter().sum()];
        all[start..start + bytes.len()].copy_from_slice(bytes);
        let mut all = Data::U8(all);
        self.all_reduce_sum(&mut all)?;
        let Data::U8(all) = all else {
            unreachable!("the sum keeps the dtype")
        };
        let mut at = 0;
        Ok(lens
            .iter()
            .map(|&n| {
                at += n;
                all[at - n..at].to_vec()
            })
            .collect())
    }
}

#[cfg(feature = "mpi")]
pub mod mpi;

/// A group of one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut Data) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// `acc += x` elementwise in the dtype (integers wrap, as the IR's `add`; bools or).
pub(crate) fn add_into(acc: &mut Data, x: &Data) -> bool {
    match (acc, x) {
        (Data::F32(a), Data::F32(b)) => a.iter_mut().zip(b).for_each(|(a, b)| *a += b),
        (Data::F64(a), Data::F64(b)) => a.iter_mut().zip(b).for_each(|(a, b)| *a += b),
        (Data::I64(a), Data::I64(b)) => a
            .iter_mut()
            .zip(b)
            .for_each(|(a, b)| *a = a.wrapping_add(*b)),
        (Data::I32(a), Data::I32(b)) => a
            .iter_mut()
            .zip(b)
            .for_each(|(a, b)| *a = a.wrapping_add(*b)),
        (Data::U8(a), Data::U8(b)) => a
            .iter_mut()
            .zip(b)
            .for_each(|(a, b)| *a = a.wrapping_add(*b)),
        (Data::Bool(a), Data::Bool(b)) => a.iter_mut().zip(b).for_each(|(a, b)| *a |= b),
        _ => return false,
    }
    true
}

fn describe(d: &Data) -> String {
    format!("{} x {}", d.len(), d.dtype())
}

/// The rendezvous the ranks of a [`ThreadGroup`] share.
struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    arrived: Condvar,
}

struct State {
    /// Completed collectives.
    call: u64,
    slots: Vec<Option<Data>>,
    /// The last completed collective's result (or why it failed).
    result: Option<Arc<Result<Data, CollectiveError>>>,
}

/// Ranks on threads of one process: each thread owns one handle (they are `Send`).
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `world` handles of one group, rank `i` at index `i`; a collective waits at most
    /// `timeout` for the others.
    pub fn new(world: usize, timeout: Duration) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(State {
                call: 0,
                slots: vec![None; world],
                result: None,
            }),
            arrived: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Communicator for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.shared.world
    }

    /// Past the group's own timeout, whose error (naming the call) comes first.
    fn timeout(&self) -> Duration {
        self.shared.timeout * 2
    }

    fn all_reduce_sum(&self, buf: &mut Data) -> Result<(), CollectiveError> {
        let s = &self.shared;
        let broken = || CollectiveError::Broken { rank: self.rank };
        let mut st = s.state.lock().map_err(|_| broken())?;
        let call = st.call;
        st.slots[self.rank] = Some(buf.clone());
        if st.slots.iter().all(Option::is_some) {
            // The last to arrive adds them up, in rank order, once for everyone.
            let slots: Vec<Data> = st
                .slots
                .iter_mut()
                .map(|x| x.take().expect("all arrived"))
                .collect();
            let mut acc = slots[0].clone();
            let mut result = Ok(());
            for (r, x) in slots.iter().enumerate().skip(1) {
                if x.dtype() != acc.dtype() || x.len() != acc.len() || !add_into(&mut acc, x) {
                    result = Err(CollectiveError::Mismatch {
                        call,
                        rank: r,
                        expected: describe(&slots[0]),
                        got: describe(x),
                    });
                    break;
                }
            }
            st.result = Some(Arc::new(result.map(|()| acc)));
            st.call += 1;
            s.arrived.notify_all();
        } else {
            let start = Instant::now();
            while st.call == call {
                let left = s.timeout.saturating_sub(start.elapsed());
                if left.is_zero() {
                    // Withdraw, so a late peer does not count this rank as present.
                    st.slots[self.rank] = None;
                    return Err(CollectiveError::Timeout {
                        rank: self.rank,
                        world: s.world,
                        call,
                        waited: start.elapsed(),
                    });
                }
                st = s.arrived.wait_timeout(st, left).map_err(|_| broken())?.0;
            }
        }
        // A later collective cannot have replaced the result yet: it needs this rank.
        match st.result.as_deref() {
            Some(Ok(sum)) => {
                *buf = sum.clone();
                Ok(())
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(broken()),
        }
    }
}

/// A group's collectives run on a thread of their own, one at a time in the order they
/// were started (the same order on every rank: every rank runs the same program), so
/// that a step computes while a bucket of gradients moves: [`Background::start`]
/// returns at once, [`Pending::wait`] blocks until that reduction is done, for at most
/// the group's timeout.
pub struct Background {
    comm: Arc<dyn Communicator>,
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
    /// Signalled when the worker has ended.
    done: Option<std::sync::mpsc::Receiver<()>>,
    timeout: Duration,
    started: std::sync::atomic::AtomicU64,
}

struct Job {
    data: Data,
    reply: std::sync::mpsc::Sender<Result<Data, CollectiveError>>,
}

/// A reduction [`Background::start`]ed and not yet waited for.
pub struct Pending {
    call: u64,
    rank: usize,
    world: usize,
    reply: std::sync::mpsc::Receiver<Result<Data, CollectiveError>>,
    timeout: Duration,
}

impl Background {
    /// Collectives of `comm` on a new thread; a wait gives up after `timeout`.
    pub fn new(comm: Arc<dyn Communicator>, timeout: Duration) -> Background {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let c = comm.clone();
        let worker = std::thread::Builder::new()
            .name(format!("aotgrad-collective-{}", comm.rank()))
            .spawn(move || {
                for mut job in rx {
                    let r = c.all_reduce_sum(&mut job.data).map(|()| job.data);
                    // The step may have given up waiting; nobody to tell then.
                    let _ = job.reply.send(r);
                }
                // Its handle on the group goes before the signal: the owner (the main
                // thread, for MPI) then drops the last one.
                drop(c);
                let _ = done_tx.send(());
            })
            .ok();
        Background {
            comm,
            jobs: worker.is_some().then_some(tx),
            done: worker.is_some().then_some(done),
            worker,
            timeout,
            started: Default::default(),
        }
    }

    pub fn comm(&self) -> &dyn Communicator {
        &*self.comm
    }

    /// Starts summing `data` over the group.
    pub fn start(&self, data: Data) -> Result<Pending, CollectiveError> {
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let broken = CollectiveError::Broken { rank };
        let (reply, rx) = std::sync::mpsc::channel();
        let jobs = self.jobs.as_ref().ok_or_else(|| broken.clone())?;
        jobs.send(Job { data, reply }).map_err(|_| broken)?;
        let call = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Pending {
            call,
            rank,
            world,
            reply: rx,
            timeout: self.timeout,
        })
    }
}

impl Pending {
    /// The sum over the group.
    pub fn wait(self) -> Result<Data, CollectiveError> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.reply.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(CollectiveError::Timeout {
                rank: self.rank,
                world: self.world,
                call: self.call,
                waited: self.timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(CollectiveError::Broken { rank: self.rank }),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Closing the queue ends the worker after the collectives already started (a
        // step that failed half-way may leave some; the peers finish them).
        // A worker stuck in a collective whose peers died is left behind (bounded
        // wait): the process is about to report the error and exit.
        self.jobs = None;
        if let (Some(w), Some(done)) = (self.worker.take(), self.done.take())
            && done.recv_timeout(self.timeout).is_ok()
        {
            let _ = w.join();
        }
    }
}

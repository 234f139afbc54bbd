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
//! - an MPI group (issue 30, behind a cargo feature) implements the same trait.
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
}

/// One rank's handle on its process group.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Replaces `buf` with the elementwise sum of every rank's `buf`, added in rank
    /// order, identically on every rank. Every rank must call it with the same dtype
    /// and length, in the same sequence of calls.
    fn all_reduce_sum(&self, buf: &mut Data) -> Result<(), CollectiveError>;
}

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
fn add_into(acc: &mut Data, x: &Data) -> bool {
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

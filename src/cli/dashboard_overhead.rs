//! What the dashboard costs a training run: `aotgrad bench MODEL --dashboard` times the
//! model's step alternately without and with a dashboard attached, while a client reads
//! the page's event stream as a browser does, and reports both rates.
//!
//! The rounds come in pairs, one without and one with the dashboard, in alternating
//! order (AB, BA, AB, ...), and the cost is the median over the pairs of the rate lost
//! within each pair: a machine whose speed drifts during the measurement (a shared
//! VM's does, by 5-15% over seconds) drifts both halves of a pair alike.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::dashboard::Dashboard;
use crate::train::Backend;

/// Both sides of the measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Overhead {
    pub model: String,
    /// Steps per second, median round, without and with the dashboard.
    pub plain_steps_per_s: f64,
    pub dashboard_steps_per_s: f64,
    /// Pairs of rounds.
    pub rounds: usize,
    /// The throughput lost within each pair, as a fraction, sorted.
    pub pair_costs: Vec<f64>,
    /// Bytes the watching client received.
    pub streamed_bytes: usize,
    /// What one step pays on the training thread: the observer's call, timed over a
    /// million calls, in nanoseconds.
    pub observer_ns: f64,
    /// CPU time of the dashboard's own threads (publisher, server, streams) over the
    /// dashboard rounds, as a fraction of those rounds' wall time (Linux: from
    /// `/proc/self/task`; `None` elsewhere).
    pub threads_cpu: Option<f64>,
}

impl Overhead {
    /// The throughput lost to the dashboard, as a fraction (0.01 is 1%): the median
    /// pair's.
    pub fn cost(&self) -> f64 {
        self.pair_costs[self.pair_costs.len() / 2]
    }

    /// The pairs' interquartile range of the cost: how far to trust [`Overhead::cost`].
    pub fn cost_iqr(&self) -> (f64, f64) {
        let n = self.pair_costs.len();
        (self.pair_costs[n / 4], self.pair_costs[(3 * n) / 4])
    }
}

fn rate(
    step: &mut crate::train::TrainStep,
    batch: &Option<crate::data::Batch>,
    secs: f64,
) -> Result<f64, String> {
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed().as_secs_f64() < secs {
        match batch {
            Some(b) => step.run(b).map_err(|e| e.to_string())?,
            None => step.step().map_err(|e| e.to_string())?,
        };
        n += 1;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Measures `model` (a `bench` model) on `backend`: `rounds` rounds of `secs` seconds
/// each side.
pub fn measure(
    model: &str,
    backend: Backend,
    rounds: usize,
    secs: f64,
) -> Result<Overhead, String> {
    let (trainer, batch) = crate::bench::setup_any(model)?;
    let mut step = trainer.compile(&backend).map_err(|e| e.to_string())?;
    rate(&mut step, &batch, secs.min(0.5))?; // compile and warm up
    let dash = Dashboard::serve(model, "127.0.0.1:0".parse().expect("an address"))
        .map_err(|e| e.to_string())?;
    let addr = dash.addr();
    // The watching browser: reads the stream as fast as it comes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || -> usize {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = write!(s, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {}
            }
        }
        total
    });
    // Once: the programs' text and the fusion explanation (a one-off per run).
    dash.attach(&mut step);
    rate(&mut step, &batch, secs.min(0.5))?;
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    let (mut cpu_ticks, mut dash_wall) = (Some(0u64), 0.0);
    for i in 0..rounds.max(1) {
        for with_dashboard in [i % 2 == 1, i % 2 == 0] {
            if with_dashboard {
                step.observe(dash.observer());
                let (before, t) = (dashboard_ticks(), Instant::now());
                with.push(rate(&mut step, &batch, secs)?);
                dash_wall += t.elapsed().as_secs_f64();
                cpu_ticks = match (cpu_ticks, before, dashboard_ticks()) {
                    (Some(acc), Some(b), Some(a)) => Some(acc + a.saturating_sub(b)),
                    _ => None,
                };
            } else {
                step.stop_observing();
                plain.push(rate(&mut step, &batch, secs)?);
            }
        }
    }
    step.stop_observing();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let streamed_bytes = reader.join().unwrap_or(0);
    // The observer alone, on a dashboard of its own (its million steps would crowd the
    // measured one's page).
    let lone = Dashboard::serve("observer", "127.0.0.1:0".parse().expect("an address"))
        .map_err(|e| e.to_string())?;
    let observer = lone.observer();
    let calls = 1_000_000u64;
    let t = Instant::now();
    for i in 0..calls {
        observer.stepped(&crate::train::StepEvent {
            step: i,
            loss: 0.5,
            lr: 1e-3,
            samples: 64,
        });
    }
    let observer_ns = t.elapsed().as_secs_f64() * 1e9 / calls as f64;
    drop(lone);
    let threads_cpu = cpu_ticks.map(|t| t as f64 / TICKS_PER_S / dash_wall.max(1e-9));
    let mut pair_costs: Vec<f64> = plain.iter().zip(&with).map(|(p, w)| 1.0 - w / p).collect();
    pair_costs.sort_by(f64::total_cmp);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Overhead {
        model: model.to_string(),
        plain_steps_per_s: median(&mut plain),
        dashboard_steps_per_s: median(&mut with),
        rounds: rounds.max(1),
        pair_costs,
        streamed_bytes,
        observer_ns,
        threads_cpu,
    })
}

/// The kernel's clock ticks per second in `/proc` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// User and system ticks of this process's dashboard threads (their names start with
/// `aotgrad-dashboa`, the kernel's 15-character cut of `aotgrad-dashboard*`).
fn dashboard_ticks() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("aotgrad-dashboa") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += ticks(11) + ticks(12);
    }
    Some(total)
}

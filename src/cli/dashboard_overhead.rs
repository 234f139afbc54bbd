//! What the dashboard costs a training run: `aotgrad bench MODEL --dashboard` times the
//! model's step alternately without and with a dashboard attached, while a client reads
//! the page's event stream as a browser does, and reports both rates.
//!
//! The rounds alternate (plain, dashboard, plain, ...) so that a machine whose speed
//! drifts during the measurement drifts both sides alike; each side's rate is its
//! median round.

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
    pub rounds: usize,
    /// Bytes the watching client received.
    pub streamed_bytes: usize,
}

impl Overhead {
    /// The throughput lost to the dashboard, as a fraction (0.01 is 1%).
    pub fn cost(&self) -> f64 {
        1.0 - self.dashboard_steps_per_s / self.plain_steps_per_s
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
    for _ in 0..rounds.max(1) {
        step.stop_observing();
        plain.push(rate(&mut step, &batch, secs)?);
        step.observe(dash.observer());
        with.push(rate(&mut step, &batch, secs)?);
    }
    step.stop_observing();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let streamed_bytes = reader.join().unwrap_or(0);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(Overhead {
        model: model.to_string(),
        plain_steps_per_s: median(&mut plain),
        dashboard_steps_per_s: median(&mut with),
        rounds: rounds.max(1),
        streamed_bytes,
    })
}

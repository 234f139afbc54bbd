//! The publisher: a thread of its own that takes what the training thread hands over,
//! every [`PUBLISH_EVERY`], and applies it to the shared state in one short lock, then
//! wakes the event streams. A step hands over its numbers by pushing them on a vector
//! behind an uncontended lock ([`Feed`]: tens of nanoseconds, no allocation most of
//! the time, no wake-up of another thread); the rarer updates (metrics, texts,
//! pictures) go down a channel. Work the
//! training thread should not pay for (the samples-per-second meter, lowering the graph
//! to explain its fusion) happens here.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::Shared;
use crate::train::{StepEvent, StepObserver};

/// The longest the publisher gathers updates before applying them.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The shortest stretch of steps one samples-per-second point covers.
const RATE_EVERY: Duration = Duration::from_millis(500);

/// What the training side sends.
pub enum Update {
    Points {
        series: String,
        points: Vec<[f64; 2]>,
    },
    Meta {
        key: String,
        value: String,
    },
    Panel {
        name: String,
        value: Value,
    },
    Picture {
        name: String,
        title: String,
        png: Vec<u8>,
    },
    /// Explain the fusion of this (optimised) step graph at the first step's batch size.
    Fusion {
        graph: Box<aotgrad_ir::Graph>,
    },
    Finished,
    /// Answered once everything sent before it is published.
    Sync(std::sync::mpsc::Sender<()>),
    /// The dashboard is dropped: publish what came before and end. (The channel does
    /// not close by itself: a step's observer may outlive the dashboard.)
    Close,
}

/// Steps waiting for the publisher.
#[derive(Default)]
pub struct Pending {
    steps: Vec<(StepEvent, Instant)>,
    /// The dashboard is gone: steps are no longer kept.
    closed: bool,
}

/// A [`StepObserver`] that hands each step to the publisher.
pub struct Feed(pub Arc<Mutex<Pending>>);

impl StepObserver for Feed {
    fn stepped(&self, event: &StepEvent) {
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // After the dashboard is dropped, training goes on without it.
        if !p.closed {
            p.steps.push((*event, Instant::now()));
        }
    }
}

/// Measures samples (or steps, for data-free objectives) per second over stretches of
/// at least [`RATE_EVERY`]. A pause between two steps far longer than the stretch's
/// steps so far (an evaluation, a checkpoint: more than [`PAUSE_FACTOR`] times their
/// mean and over [`PAUSE_MIN`]) is not training: the stretch restarts after it, so the
/// rate is the training's, as the progress bar's is.
#[derive(Default)]
struct RateMeter {
    since: Option<Instant>,
    last: Option<Instant>,
    samples: usize,
    steps: usize,
}

const PAUSE_FACTOR: u32 = 10;
const PAUSE_MIN: Duration = Duration::from_millis(50);

impl RateMeter {
    /// A `(step, rate)` point when the stretch is long enough.
    fn add(&mut self, e: &StepEvent, at: Instant) -> Option<(String, [f64; 2])> {
        let (Some(since), Some(last)) = (self.since, self.last) else {
            // The first step's end starts the clock.
            self.since = Some(at);
            self.last = Some(at);
            return None;
        };
        let gap = at.saturating_duration_since(last);
        self.last = Some(at);
        if self.steps > 0 {
            let mean = last.saturating_duration_since(since) / self.steps as u32;
            if gap > PAUSE_MIN && gap > mean * PAUSE_FACTOR {
                *self = RateMeter {
                    since: Some(at),
                    last: Some(at),
                    ..RateMeter::default()
                };
                return None;
            }
        }
        self.samples += e.samples;
        self.steps += 1;
        let dt = at.saturating_duration_since(since);
        if dt < RATE_EVERY {
            return None;
        }
        let (name, n) = if self.samples > 0 {
            ("samples_per_s", self.samples)
        } else {
            ("steps_per_s", self.steps)
        };
        let point = [e.step as f64, n as f64 / dt.as_secs_f64()];
        *self = RateMeter {
            since: Some(at),
            last: Some(at),
            ..RateMeter::default()
        };
        Some((name.to_string(), point))
    }
}

/// The publisher's loop; returns when the dashboard is dropped ([`Update::Close`]).
pub fn publish(rx: Receiver<Update>, pending: Arc<Mutex<Pending>>, shared: Arc<Shared>) {
    let mut rate = RateMeter::default();
    let mut fusion: Option<Box<aotgrad_ir::Graph>> = None;
    loop {
        let deadline = Instant::now() + PUBLISH_EVERY;
        let mut updates = Vec::new();
        let mut closed = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Update::Close) | Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
                Ok(u) => updates.push(u),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let steps = {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            p.closed |= closed;
            std::mem::take(&mut p.steps)
        };
        if updates.is_empty() && steps.is_empty() {
            if closed {
                break;
            }
            continue;
        }
        // Group what arrived, outside the lock.
        let mut points: BTreeMap<String, Vec<[f64; 2]>> = BTreeMap::new();
        let mut rest = Vec::new();
        let mut last_step = None;
        if !steps.is_empty() {
            let loss = steps.iter().map(|(e, _)| [e.step as f64, e.loss]).collect();
            let lr = steps.iter().map(|(e, _)| [e.step as f64, e.lr]).collect();
            points.insert("loss".into(), loss);
            points.insert("lr".into(), lr);
            for (e, at) in &steps {
                if let Some((name, p)) = rate.add(e, *at) {
                    points.entry(name).or_default().push(p);
                }
            }
            last_step = steps.last().map(|(e, _)| *e);
        }
        for u in updates {
            match u {
                Update::Points { series, points: p } => points.entry(series).or_default().extend(p),
                Update::Fusion { graph } => fusion = Some(graph),
                other => rest.push(other),
            }
        }
        if let (Some(e), Some(g)) = (&last_step, &fusion)
            && e.samples > 0
        {
            let text = explain_fusion(g, e.samples);
            rest.push(Update::Panel {
                name: "fusion".into(),
                value: json!({"kind": "text", "title": "Fusion: values written to memory", "text": text}),
            });
            fusion = None;
        }
        {
            let mut st = shared.lock();
            let Some(run) = st.runs.first_mut() else {
                break;
            };
            for (series, p) in &points {
                run.push(series, p);
            }
            if let Some(e) = last_step {
                run.set_meta("step", &e.step.to_string());
            }
            let mut finished = false;
            let mut acks = Vec::new();
            for u in rest {
                match u {
                    Update::Meta { key, value } => run.set_meta(&key, &value),
                    Update::Panel { name, value } => run.set_panel(&name, value),
                    Update::Picture { name, title, png } => run.set_picture(0, &name, &title, png),
                    Update::Finished => finished = true,
                    Update::Sync(ack) => acks.push(ack),
                    Update::Points { .. } | Update::Fusion { .. } | Update::Close => {}
                }
            }
            if finished {
                run.set_meta("status", "finished");
                st.finished = true;
            }
            st.version += 1;
            drop(st);
            for ack in acks {
                let _ = ack.send(());
            }
        }
        shared.news.notify_all();
        if closed {
            break;
        }
    }
    let mut st = shared.lock();
    if !st.finished {
        st.finished = true;
        if let Some(run) = st.runs.first_mut() {
            run.set_meta("status", "finished");
        }
        st.version += 1;
    }
    drop(st);
    shared.news.notify_all();
}

/// The fusion explanation of the optimised step at batch size `n` (every other
/// symbolic size at 64, as `aotgrad opt --explain-fusion` does).
fn explain_fusion(g: &aotgrad_ir::Graph, n: usize) -> String {
    use aotgrad_compiler::lower;
    let mut env = BTreeMap::new();
    env.insert(Arc::<str>::from(crate::train::BATCH_DIM), n);
    for (_, node) in g.nodes() {
        for s in node.ty.shape.dims().iter().flat_map(|d| d.symbols()) {
            env.entry(s).or_insert(64);
        }
    }
    let binds: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    match lower::lower(g, &env, lower::LowerOptions::default()) {
        Ok(p) => format!(
            "# {} kernels at {}; each line is a value the fused program writes to memory,\n# and why it is not fused into its consumers\n{}",
            p.kernels.len(),
            binds.join(", "),
            lower::explain_fusion(g, &p)
        ),
        Err(e) => format!("lowering at {}: {e}", binds.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: u64) -> StepEvent {
        StepEvent {
            step: i,
            loss: 0.0,
            lr: 0.0,
            samples: 10,
        }
    }

    #[test]
    fn the_rate_is_the_trainings_and_leaves_out_pauses() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut r = RateMeter::default();
        let mut points = Vec::new();
        // 10 ms steps of 10 samples (1000 samples/s), a 2 s evaluation after step 60,
        // then 10 ms steps again.
        let mut at = 0;
        for i in 0..=120 {
            at += if i == 61 { 2000 } else { 10 };
            points.extend(r.add(&step(i), ms(at)));
        }
        // Stretches of 0.5 s: steps 1-50, then (after the pause) 62-111.
        let steps: Vec<f64> = points.iter().map(|(_, [s, _])| *s).collect();
        assert_eq!(steps, [50.0, 111.0], "{points:?}");
        for (name, [_, rate]) in &points {
            assert_eq!(name, "samples_per_s");
            assert!((rate - 1000.0).abs() < 1.0, "{points:?}");
        }
        // A data-free objective counts steps.
        let mut r = RateMeter::default();
        let p: Vec<_> = (0..100)
            .filter_map(|i| {
                let e = StepEvent {
                    samples: 0,
                    ..step(i)
                };
                r.add(&e, ms(i * 10))
            })
            .collect();
        assert_eq!(p[0].0, "steps_per_s");
        assert!((p[0].1[1] - 100.0).abs() < 0.5, "{p:?}");
    }
}

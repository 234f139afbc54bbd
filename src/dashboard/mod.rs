//! A local web page that shows a training run live: the loss per step (with a
//! smoothing control), evaluation metrics, the learning rate, samples per second, the
//! backend and device, the compiled step's IR, fusion and memory plan, the kernel
//! profile, a confusion matrix, test images with their predictions, and pictures.
//! The examples' `--dashboard` flag starts one; `aotgrad dashboard DIR...` shows
//! finished runs with the same page.
//!
//! ```no_run
//! use aotgrad::dashboard::Dashboard;
//! # fn demo(step: &mut aotgrad::train::TrainStep) -> Result<(), Box<dyn std::error::Error>> {
//! let dash = Dashboard::serve("my run", "127.0.0.1:0".parse()?)?;
//! println!("dashboard: {}", dash.url());
//! dash.attach(step); // every step's loss, lr and samples/s from now on
//! // ... train; after each epoch:
//! dash.record(step.steps(), &[("test_loss", 0.31), ("test_accuracy", 0.91)]);
//! # Ok(()) }
//! ```
//!
//! The training thread only ever sends to a channel: a thread of the dashboard's own
//! (`feed.rs`) gathers the updates and publishes them to the page's event streams, and
//! each browser connection has its own thread (`server.rs`), so a slow or vanished
//! browser cannot slow training. On loopback (the default) the server answers only
//! requests addressed to loopback; on any other address it makes a random token that
//! every request must carry (it is in the printed URL).

mod assets;
mod feed;
pub mod http;
mod server;
mod state;

use std::net::SocketAddr;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::json;

use crate::executor::{ProgramKind, Stage};
use crate::metrics::Confusion;
use crate::train::TrainStep;
use feed::Update;
use server::Server;
use state::{RunState, State};

pub use server::MAX_CONNECTIONS;

/// Why a dashboard could not start or take a picture.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("dashboard: cannot listen on {addr}: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error(
        "dashboard: picture name {0:?} must be 1-100 letters, digits, '_', '-' or '.', not starting with '.'"
    )]
    PictureName(String),
}

/// Named series of `(step, value)` points.
pub type SeriesData = Vec<(String, Vec<[f64; 2]>)>;

/// A finished run to show: its name, facts, scalar series, texts and pictures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunData {
    pub name: String,
    pub meta: Vec<(String, String)>,
    /// `(series, [(step, value)])`.
    pub series: SeriesData,
    /// `(title, text)`.
    pub texts: Vec<(String, String)>,
    /// `(file name, PNG bytes)`.
    pub pictures: Vec<(String, Vec<u8>)>,
}

/// Images with their true and predicted labels (a test batch's first images).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageGrid {
    pub width: usize,
    pub height: usize,
    /// Row-major gray levels, `width * height` bytes per image.
    pub images: Vec<Vec<u8>>,
    pub labels: Vec<String>,
    pub predicted: Vec<String>,
}

/// A served page; see the module docs. Dropping it marks the run finished and stops
/// the server.
pub struct Dashboard {
    server: Server,
    tx: Option<Sender<Update>>,
    /// Steps on their way to the publisher (what [`Dashboard::observer`]s push).
    pending: Arc<Mutex<feed::Pending>>,
    publisher: Option<JoinHandle<()>>,
}

impl Dashboard {
    /// Serves a live run named `name` on `addr` (port 0: a free one).
    pub fn serve(name: &str, addr: SocketAddr) -> Result<Dashboard, DashboardError> {
        let mut run = RunState::new(name);
        run.set_meta("status", "running");
        let state = State {
            runs: vec![run],
            ..State::default()
        };
        let server =
            Server::start(addr, state).map_err(|error| DashboardError::Listen { addr, error })?;
        let (tx, rx) = channel();
        let shared = server.shared().clone();
        let pending = Arc::new(Mutex::new(feed::Pending::default()));
        let p = pending.clone();
        let publisher = std::thread::Builder::new()
            .name("aotgrad-dashboard-feed".into())
            .spawn(move || feed::publish(rx, p, shared))
            .map_err(|error| DashboardError::Listen { addr, error })?;
        Ok(Dashboard {
            server,
            tx: Some(tx),
            pending,
            publisher: Some(publisher),
        })
    }

    /// Serves finished runs (`aotgrad dashboard DIR...`), overlaid on the same charts.
    pub fn serve_runs(runs: Vec<RunData>, addr: SocketAddr) -> Result<Dashboard, DashboardError> {
        let mut state = State {
            finished: true,
            ..State::default()
        };
        for (i, r) in runs.into_iter().enumerate() {
            let mut run = RunState::new(&r.name);
            run.set_meta("status", "finished");
            for (k, v) in &r.meta {
                run.set_meta(k, v);
            }
            for (name, pts) in &r.series {
                run.push(name, pts);
            }
            for (j, (title, text)) in r.texts.iter().enumerate() {
                run.set_panel(
                    &format!("text{j}"),
                    json!({"kind": "text", "title": title, "text": text}),
                );
            }
            for (name, png) in r.pictures {
                check_picture_name(&name)?;
                let title = name.clone();
                run.set_picture(i, &name, &title, png);
            }
            state.runs.push(run);
        }
        let server =
            Server::start(addr, state).map_err(|error| DashboardError::Listen { addr, error })?;
        Ok(Dashboard {
            server,
            tx: None,
            pending: Arc::default(),
            publisher: None,
        })
    }

    /// The page's address (with its token, when one is required).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Browser connections being served now.
    pub fn connections(&self) -> usize {
        self.server.shared().connections()
    }

    fn send(&self, u: Update) {
        if let Some(tx) = &self.tx {
            // The publisher ends only when the dashboard drops: a failed send is moot.
            let _ = tx.send(u);
        }
    }

    /// Feeds every later step of `step` to the page (loss, learning rate, samples per
    /// second) and shows its programs ([`Dashboard::show_step`]).
    pub fn attach(&self, step: &mut TrainStep) {
        step.observe(self.observer());
        self.send(Update::Fusion {
            graph: Box::new(step.optimized_step_graph().clone()),
        });
        self.show_step(step);
    }

    /// An observer that feeds a step's loss, learning rate and samples per second to
    /// this page ([`TrainStep::observe`]); [`Dashboard::attach`] installs one and also
    /// shows the step's programs. It costs a step an uncontended lock and a push.
    pub fn observer(&self) -> Box<dyn crate::train::StepObserver> {
        Box::new(feed::Feed(self.pending.clone()))
    }

    /// Shows the backend and device, the step's optimizer and loss, and its programs'
    /// text: the traced and the optimised graph, and once it has run, the lowered
    /// program with its memory plan and (with `Trainer::profile`) the kernel profile
    /// ([`Dashboard::refresh`] updates those two after an epoch).
    pub fn show_step(&self, step: &TrainStep) {
        let backend = step.backend();
        self.info("backend", backend_name(backend));
        self.info("device", &device(backend));
        self.info("optimizer", &step.optimizer().description());
        self.info("loss", step.loss_description());
        let params: usize = step.parameters().iter().map(|(_, t)| t.len()).sum();
        self.info("parameters", &params.to_string());
        self.text(
            "traced",
            "Traced step graph (forward, backward, update)",
            &crate::text::print(step.step_graph()),
        );
        self.text(
            "optimized",
            "Optimised step graph",
            &crate::text::print(step.optimized_step_graph()),
        );
        self.refresh(step);
    }

    /// Shows what changes as a step runs: the lowered program as it last ran (with its
    /// memory plan) and the kernel profile. Cheaper than [`Dashboard::show_step`]: the
    /// graphs' text is not printed again.
    pub fn refresh(&self, step: &TrainStep) {
        if let Some(Ok(lowered)) = step.artifact(ProgramKind::Step, Stage::Lowered) {
            self.text("lowered", "Lowered step: kernels and memory plan", &lowered);
        }
        if let Some((_, profile)) = step.kernel_profile(ProgramKind::Step) {
            self.text(
                "profile",
                "CPU kernel profile of the step",
                &crate::bench::profile_table("step", &profile),
            );
        }
    }

    /// Adds points `(step, value)` to the named series (per-epoch metrics, say).
    pub fn record(&self, step: u64, values: &[(&str, f64)]) {
        for (name, v) in values {
            self.send(Update::Points {
                series: name.to_string(),
                points: vec![[step as f64, *v]],
            });
        }
    }

    /// Sets a fact shown in the page's header (`epoch`, `device`, ...).
    pub fn info(&self, key: &str, value: &str) {
        self.send(Update::Meta {
            key: key.to_string(),
            value: value.to_string(),
        });
    }

    /// Shows (or replaces) a text panel.
    pub fn text(&self, name: &str, title: &str, text: &str) {
        self.send(Update::Panel {
            name: name.to_string(),
            value: json!({"kind": "text", "title": title, "text": text}),
        });
    }

    /// Shows (or replaces) the confusion matrix, rows true and columns predicted.
    pub fn confusion(&self, title: &str, c: &Confusion, labels: &[String]) {
        self.send(Update::Panel {
            name: "confusion".into(),
            value: json!({"kind": "confusion", "title": title, "labels": labels, "counts": c.counts}),
        });
    }

    /// Shows (or replaces) a grid of images with their true and predicted labels.
    pub fn images(&self, title: &str, grid: &ImageGrid) {
        self.send(Update::Panel {
            name: "images".into(),
            value: json!({
                "kind": "images",
                "title": title,
                "width": grid.width,
                "height": grid.height,
                "images": grid.images,
                "labels": grid.labels,
                "predicted": grid.predicted,
            }),
        });
    }

    /// Shows (or replaces) a PNG picture, served from memory as `/picture/0/NAME`.
    pub fn picture(&self, name: &str, title: &str, png: Vec<u8>) -> Result<(), DashboardError> {
        check_picture_name(name)?;
        self.send(Update::Picture {
            name: name.to_string(),
            title: title.to_string(),
            png,
        });
        Ok(())
    }

    /// Waits (at most 5 s) until everything sent so far is on the page's state.
    pub fn sync(&self) {
        let (tx, rx) = channel();
        self.send(Update::Sync(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
    }

    /// Marks the run finished (the page says so); the page stays served until the
    /// dashboard is dropped.
    pub fn finish(&self) {
        self.send(Update::Finished);
    }

    /// Marks the run finished and serves until the process is interrupted (Ctrl-C):
    /// the examples' `--dashboard-keep`.
    pub fn serve_forever(self) -> ! {
        self.finish();
        self.sync();
        loop {
            std::thread::park();
        }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.finish();
        // The publisher ends after it published what was sent before.
        self.send(Update::Close);
        self.tx = None;
        if let Some(p) = self.publisher.take() {
            let _ = p.join();
        }
        self.server.stop();
    }
}

fn check_picture_name(name: &str) -> Result<(), DashboardError> {
    let ok = (1..=100).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(DashboardError::PictureName(name.to_string()))
    }
}

fn backend_name(backend: crate::train::Backend) -> &'static str {
    use crate::train::Backend;
    match backend {
        Backend::Cpu { .. } => "cpu (Cranelift)",
        Backend::Gpu => "gpu (wgpu, WGSL)",
        Backend::Interpreter => "interp (reference interpreter)",
    }
}

/// The device a backend runs on, in words: the GPU adapter's name, or the CPU's model.
fn device(backend: crate::train::Backend) -> String {
    use crate::train::Backend;
    match backend {
        Backend::Gpu => match aotgrad_runtime::gpu::context() {
            Ok(ctx) => ctx.describe(),
            Err(e) => format!("no GPU: {e}"),
        },
        Backend::Cpu { threads } => format!("{} ({threads} thread(s))", cpu_model()),
        Backend::Interpreter => format!("{} (reference interpreter)", cpu_model()),
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

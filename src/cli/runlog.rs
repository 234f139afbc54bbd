//! What a training run records: scalars per step (loss, metrics, learning rate) written
//! as they arrive to a CSV file and to TensorBoard event files, and rendered as curves
//! (PNG and SVG) at the end. The examples expose it as `--plot DIR` and
//! `--tensorboard DIR`.
//!
//! ```no_run
//! use aotgrad::cli::runlog::RunLog;
//! let dir = std::path::Path::new("runs/mnist");
//! let mut log = RunLog::new(&["loss", "lr", "test_loss", "test_accuracy"])
//!     .csv(&dir.join("metrics.csv"))?
//!     .tensorboard(dir)?;
//! log.record(1, 0, &[("loss", 0.9), ("lr", 0.01)])?;
//! log.record(118, 1, &[("test_loss", 0.3), ("test_accuracy", 0.91)])?;
//! let files = log.plot(dir)?; // loss.png, loss.svg, accuracy.png, ...
//! # Ok::<(), aotgrad::cli::runlog::LogError>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use plotters::prelude::{BitMapBackend, IntoDrawingArea, SVGBackend};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("unknown column {name:?} (the log has {columns:?})")]
    UnknownColumn { name: String, columns: Vec<String> },
    #[error("plotting {path}: {message}")]
    Plot { path: String, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |error| LogError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// One recorded row: the step, the epoch, and a value per column (or none).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub step: u64,
    pub epoch: usize,
    pub values: Vec<Option<f64>>,
}

/// Scalars of a run; see the module docs.
pub struct RunLog {
    columns: Vec<String>,
    rows: Vec<Row>,
    csv: Option<(PathBuf, BufWriter<File>)>,
    events: Option<EventWriter>,
}

impl RunLog {
    /// A log with these value columns (after `step` and `epoch`).
    pub fn new(columns: &[&str]) -> RunLog {
        RunLog {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            csv: None,
            events: None,
        }
    }

    /// Also writes every row to a CSV file as it arrives (header: `step,epoch,...`;
    /// a missing value is an empty field). Creates the parent directory.
    pub fn csv(mut self, path: &Path) -> Result<RunLog, LogError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut w = BufWriter::new(File::create(path).map_err(io(path))?);
        writeln!(w, "step,epoch,{}", self.columns.join(",")).map_err(io(path))?;
        self.csv = Some((path.to_path_buf(), w));
        Ok(self)
    }

    /// Also writes every value as a TensorBoard scalar (tag = column name) to an event
    /// file in `dir`, as PyTorch's `SummaryWriter(dir).add_scalar` does.
    pub fn tensorboard(mut self, dir: &Path) -> Result<RunLog, LogError> {
        self.events = Some(EventWriter::create(dir)?);
        Ok(self)
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Records `values` (by column name) at `step` of `epoch`.
    pub fn record(
        &mut self,
        step: u64,
        epoch: usize,
        values: &[(&str, f64)],
    ) -> Result<(), LogError> {
        let mut row = vec![None; self.columns.len()];
        for (name, v) in values {
            let i = self.columns.iter().position(|c| c == name).ok_or_else(|| {
                LogError::UnknownColumn {
                    name: name.to_string(),
                    columns: self.columns.clone(),
                }
            })?;
            row[i] = Some(*v);
        }
        if let Some((path, w)) = &mut self.csv {
            let fields: Vec<String> = row
                .iter()
                .map(|v| v.map(|v| v.to_string()).unwrap_or_default())
                .collect();
            writeln!(w, "{step},{epoch},{}", fields.join(",")).map_err(io(path))?;
        }
        if let Some(ev) = &mut self.events {
            for (name, v) in values {
                ev.scalar(name, *v, step)?;
            }
        }
        self.rows.push(Row {
            step,
            epoch,
            values: row,
        });
        Ok(())
    }

    /// Writes a PNG picture as a TensorBoard image (`add_image`), with `--tensorboard`.
    pub fn image(&mut self, tag: &str, png: &[u8], step: u64) -> Result<(), LogError> {
        let Some(ev) = &mut self.events else {
            return Ok(());
        };
        let size = image::load_from_memory_with_format(png, image::ImageFormat::Png)
            .map(|i| (i.width(), i.height()))
            .map_err(|e| LogError::Plot {
                path: tag.to_string(),
                message: e.to_string(),
            })?;
        ev.image(tag, png, size, step)
    }

    /// Writes a histogram of `values` (`add_histogram`, a layer's weights), with
    /// `--tensorboard`.
    pub fn histogram(&mut self, tag: &str, values: &[f64], step: u64) -> Result<(), LogError> {
        match &mut self.events {
            Some(ev) => ev.histogram(tag, values, step),
            None => Ok(()),
        }
    }

    /// Whether event files are written (`--tensorboard`).
    pub fn has_events(&self) -> bool {
        self.events.is_some()
    }

    /// Pushes buffered CSV and event data to disk (call at the end of each epoch, so a
    /// crash loses at most the current epoch's rows).
    pub fn flush(&mut self) -> Result<(), LogError> {
        if let Some((path, w)) = &mut self.csv {
            w.flush().map_err(io(path))?;
        }
        if let Some(ev) = &mut self.events {
            ev.flush()?;
        }
        Ok(())
    }

    /// Renders one chart per kind of value (columns ending in `loss` share one,
    /// columns containing `acc` another, every other column its own) as PNG and SVG in
    /// `dir`; returns the files written.
    pub fn plot(&self, dir: &Path) -> Result<Vec<PathBuf>, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut charts: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, c) in self.columns.iter().enumerate() {
            let kind = if c.ends_with("loss") {
                "loss".to_string()
            } else if c.contains("acc") {
                "accuracy".to_string()
            } else {
                c.clone()
            };
            match charts.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, cols)) => cols.push(i),
                None => charts.push((kind, vec![i])),
            }
        }
        let mut files = Vec::new();
        for (kind, cols) in charts {
            let series: Vec<(String, Vec<(f64, f64)>)> = cols
                .iter()
                .map(|&i| {
                    let pts = self
                        .rows
                        .iter()
                        .filter_map(|r| r.values[i].map(|v| (r.step as f64, v)))
                        .filter(|(_, v)| v.is_finite())
                        .collect();
                    (self.columns[i].clone(), pts)
                })
                .filter(|(_, pts): &(String, Vec<(f64, f64)>)| !pts.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            let png = dir.join(format!("{kind}.png"));
            let svg = dir.join(format!("{kind}.svg"));
            let plot_err = |p: &Path| {
                let path = p.display().to_string();
                move |message: String| LogError::Plot { path, message }
            };
            crate::cli::plot::draw(
                BitMapBackend::new(&png, (800, 480)).into_drawing_area(),
                &kind,
                &series,
            )
            .map_err(plot_err(&png))?;
            crate::cli::plot::draw(
                SVGBackend::new(&svg, (800, 480)).into_drawing_area(),
                &kind,
                &series,
            )
            .map_err(plot_err(&svg))?;
            files.push(png);
            files.push(svg);
        }
        Ok(files)
    }
}

/// A histogram as TensorBoard's `HistogramProto` holds it: [`HISTOGRAM_BUCKETS`]
/// equal-width buckets over the finite values' range, each named by its right edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub min: f64,
    pub max: f64,
    pub num: f64,
    pub sum: f64,
    pub sum_squares: f64,
    /// Right edges, ascending.
    pub limits: Vec<f64>,
    pub counts: Vec<f64>,
}

/// Buckets of a weight histogram (TensorBoard re-buckets for display anyway).
pub const HISTOGRAM_BUCKETS: usize = 30;

impl Histogram {
    /// The histogram of the finite `values` (NaN and infinities are left out).
    pub fn of(values: &[f64]) -> Histogram {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (min, max) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if finite.is_empty() {
            return Histogram {
                min: 0.0,
                max: 0.0,
                num: 0.0,
                sum: 0.0,
                sum_squares: 0.0,
                limits: vec![0.0],
                counts: vec![0.0],
            };
        }
        let n = if max > min { HISTOGRAM_BUCKETS } else { 1 };
        let width = (max - min) / n as f64;
        let mut counts = vec![0.0; n];
        for &v in &finite {
            let i = if width > 0.0 {
                (((v - min) / width) as usize).min(n - 1)
            } else {
                0
            };
            counts[i] += 1.0;
        }
        let limits = (1..=n)
            .map(|i| if i == n { max } else { min + width * i as f64 })
            .collect();
        Histogram {
            min,
            max,
            num: finite.len() as f64,
            sum: finite.iter().sum(),
            sum_squares: finite.iter().map(|v| v * v).sum(),
            limits,
            counts,
        }
    }
}

/// TensorBoard's event-file format: TFRecord framing (length, masked CRC-32C of the
/// length, data, masked CRC-32C of the data) around `Event` protocol buffers, written
/// by hand (three message types, a handful of fields) rather than pulling in a
/// protobuf toolchain.
struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    fn create(dir: &Path) -> Result<EventWriter, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let path = dir.join(format!("events.out.tfevents.{now}.aotgrad"));
        let out = BufWriter::new(File::create(&path).map_err(io(&path))?);
        let mut w = EventWriter { path, out };
        // The first event names the file format version.
        let mut ev = Vec::new();
        pb_double(&mut ev, 1, wall_time());
        pb_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        Ok(w)
    }

    fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<(), LogError> {
        let mut val = Vec::new();
        pb_bytes(&mut val, 1, tag.as_bytes()); // Summary.Value.tag
        pb_float(&mut val, 2, value as f32); // Summary.Value.simple_value
        let mut summary = Vec::new();
        pb_bytes(&mut summary, 1, &val); // Summary.value
        let mut ev = Vec::new();
        pb_double(&mut ev, 1, wall_time()); // Event.wall_time
        pb_varint_field(&mut ev, 2, step); // Event.step
        pb_bytes(&mut ev, 5, &summary); // Event.summary
        self.record(&ev)
    }

    /// An image summary (`add_image`): a PNG with its size.
    fn image(
        &mut self,
        tag: &str,
        png: &[u8],
        (w, h): (u32, u32),
        step: u64,
    ) -> Result<(), LogError> {
        let mut img = Vec::new();
        pb_varint_field(&mut img, 1, h as u64); // Image.height
        pb_varint_field(&mut img, 2, w as u64); // Image.width
        pb_varint_field(&mut img, 3, 3); // Image.colorspace: RGB
        pb_bytes(&mut img, 4, png); // Image.encoded_image_string
        self.value(tag, 4, &img, step) // Summary.Value.image
    }

    /// A histogram summary (`add_histogram`) of `values`.
    fn histogram(&mut self, tag: &str, values: &[f64], step: u64) -> Result<(), LogError> {
        let h = Histogram::of(values);
        let mut histo = Vec::new();
        pb_double(&mut histo, 1, h.min);
        pb_double(&mut histo, 2, h.max);
        pb_double(&mut histo, 3, h.num);
        pb_double(&mut histo, 4, h.sum);
        pb_double(&mut histo, 5, h.sum_squares);
        pb_packed_doubles(&mut histo, 6, &h.limits);
        pb_packed_doubles(&mut histo, 7, &h.counts);
        self.value(tag, 5, &histo, step) // Summary.Value.histo
    }

    /// An event holding one summary value whose payload is field `field` of `Value`.
    fn value(&mut self, tag: &str, field: u64, payload: &[u8], step: u64) -> Result<(), LogError> {
        let mut val = Vec::new();
        pb_bytes(&mut val, 1, tag.as_bytes());
        pb_bytes(&mut val, field, payload);
        let mut summary = Vec::new();
        pb_bytes(&mut summary, 1, &val);
        let mut ev = Vec::new();
        pb_double(&mut ev, 1, wall_time());
        pb_varint_field(&mut ev, 2, step);
        pb_bytes(&mut ev, 5, &summary);
        self.record(&ev)
    }

    fn record(&mut self, data: &[u8]) -> Result<(), LogError> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.out.write_all(&buf).map_err(io(&self.path))
    }

    fn flush(&mut self) -> Result<(), LogError> {
        self.out.flush().map_err(io(&self.path))
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// TFRecord's CRC: CRC-32C, rotated and offset so that a CRC of CRC data is not zero.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn pb_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    pb_varint(out, field << 3);
    pb_varint(out, v);
}

fn pb_double(out: &mut Vec<u8>, field: u64, v: f64) {
    pb_varint(out, (field << 3) | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn pb_float(out: &mut Vec<u8>, field: u64, v: f32) {
    pb_varint(out, (field << 3) | 5);
    out.extend_from_slice(&v.to_le_bytes());
}

fn pb_packed_doubles(out: &mut Vec<u8>, field: u64, v: &[f64]) {
    let bytes: Vec<u8> = v.iter().flat_map(|d| d.to_le_bytes()).collect();
    pb_bytes(out, field, &bytes);
}

fn pb_bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
    pb_varint(out, (field << 3) | 2);
    pb_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// One scalar read back from an event file: tag, step, value.
pub type Scalar = (String, u64, f64);

/// The scalars (`simple_value` summaries, what `add_scalar` writes) of a TensorBoard
/// event file, in file order. Records whose CRC does not match end the reading, as a
/// file still being written ends in a partial record; other summaries (images,
/// histograms) are skipped.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>, LogError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 12 {
        let len_bytes = &rest[..8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len_crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != len_crc {
            break;
        }
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(16))
            .filter(|&e| e <= rest.len())
        else {
            break;
        };
        let data = &rest[12..end - 4];
        let data_crc = u32::from_le_bytes(rest[end - 4..end].try_into().expect("4 bytes"));
        if masked_crc(data) != data_crc {
            break;
        }
        event_scalars(data, &mut out);
        rest = &rest[end..];
    }
    Ok(out)
}

/// A protobuf field: its number and its value (varint, fixed or bytes).
enum PbValue<'a> {
    Varint(u64),
    /// A double (skipped: no scalar the reader needs is one).
    Fixed64,
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

/// The fields of one protobuf message; stops at the first malformed field.
fn pb_fields(mut b: &[u8]) -> Vec<(u64, PbValue<'_>)> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let Some(key) = varint(&mut b) else { break };
        let value = match key & 7 {
            0 => match varint(&mut b) {
                Some(v) => PbValue::Varint(v),
                None => break,
            },
            1 if b.len() >= 8 => {
                b = &b[8..];
                PbValue::Fixed64
            }
            2 => {
                let Some(n) = varint(&mut b).and_then(|n| usize::try_from(n).ok()) else {
                    break;
                };
                if n > b.len() {
                    break;
                }
                let v = PbValue::Bytes(&b[..n]);
                b = &b[n..];
                v
            }
            5 if b.len() >= 4 => {
                let v = PbValue::Fixed32(b[..4].try_into().expect("4 bytes"));
                b = &b[4..];
                v
            }
            _ => break,
        };
        out.push((key >> 3, value));
    }
    out
}

/// The scalars of one `Event`.
fn event_scalars(event: &[u8], out: &mut Vec<Scalar>) {
    let fields = pb_fields(event);
    let step = fields
        .iter()
        .find_map(|(f, v)| match (f, v) {
            (2, PbValue::Varint(s)) => Some(*s),
            _ => None,
        })
        .unwrap_or(0);
    for (f, v) in &fields {
        let (5, PbValue::Bytes(summary)) = (f, v) else {
            continue;
        };
        for (f, v) in pb_fields(summary) {
            let (1, PbValue::Bytes(value)) = (f, v) else {
                continue;
            };
            let mut tag = None;
            let mut simple = None;
            for (f, v) in pb_fields(value) {
                match (f, v) {
                    (1, PbValue::Bytes(t)) => tag = Some(String::from_utf8_lossy(t).into_owned()),
                    (2, PbValue::Fixed32(x)) => simple = Some(f32::from_le_bytes(x) as f64),
                    _ => {}
                }
            }
            if let (Some(tag), Some(v)) = (tag, simple) {
                out.push((tag, step, v));
            }
        }
    }
}

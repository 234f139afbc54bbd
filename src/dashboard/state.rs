//! What the dashboard shows, held by the server: one or more runs, each with its facts
//! (backend, device, status), its scalar series (step, value) and its panels (texts,
//! a confusion matrix, an image grid, pictures). Every client keeps a [`Cursor`] of what
//! it has been sent, and gets only what is new: points appended since, panels changed
//! since. The first message a client gets is the same diff from an empty cursor.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// All runs being shown.
#[derive(Debug, Default)]
pub struct State {
    pub runs: Vec<RunState>,
    /// The run ended (live mode) or the runs were loaded from disk (finished runs).
    pub finished: bool,
    /// Bumped on every change, so that waiting clients can tell there is news.
    pub version: u64,
}

/// One run.
#[derive(Debug, Default)]
pub struct RunState {
    pub name: String,
    meta: BTreeMap<String, String>,
    meta_version: u64,
    series: Vec<(String, Vec<[f64; 2]>)>,
    /// Panels in the order they were first shown: name, version, JSON.
    panels: Vec<(String, u64, Value)>,
    /// PNG pictures by name, served at `/picture/RUN/NAME` (never from the disk).
    pictures: BTreeMap<String, Vec<u8>>,
}

impl RunState {
    pub fn new(name: &str) -> RunState {
        RunState {
            name: name.to_string(),
            ..RunState::default()
        }
    }

    pub fn set_meta(&mut self, key: &str, value: &str) {
        if self.meta.get(key).map(String::as_str) != Some(value) {
            self.meta.insert(key.to_string(), value.to_string());
            self.meta_version += 1;
        }
    }

    /// Appends points to a series (created on first use).
    pub fn push(&mut self, series: &str, points: &[[f64; 2]]) {
        match self.series.iter_mut().find(|(n, _)| n == series) {
            Some((_, p)) => p.extend_from_slice(points),
            None => self.series.push((series.to_string(), points.to_vec())),
        }
    }

    /// Sets a panel (replacing one of the same name, which keeps its place).
    /// An unchanged panel keeps its version: clients are not sent it again.
    pub fn set_panel(&mut self, name: &str, value: Value) {
        match self.panels.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, _, old)) if *old == value => {}
            Some((_, v, old)) => {
                *v += 1;
                *old = value;
            }
            None => self.panels.push((name.to_string(), 1, value)),
        }
    }

    pub fn panel(&self, name: &str) -> Option<&Value> {
        self.panels
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v)
    }

    /// Stores a PNG picture and shows it as a panel.
    pub fn set_picture(&mut self, run: usize, name: &str, title: &str, png: Vec<u8>) {
        let version = self.panel(&picture_panel(name)).map_or(1, |p| {
            p.get("version").and_then(Value::as_u64).unwrap_or(0) + 1
        });
        self.pictures.insert(name.to_string(), png);
        let url = format!("/picture/{run}/{name}");
        self.set_panel(
            &picture_panel(name),
            json!({"kind": "picture", "title": title, "url": url, "version": version}),
        );
    }

    pub fn picture(&self, name: &str) -> Option<&[u8]> {
        self.pictures.get(name).map(Vec::as_slice)
    }
}

fn picture_panel(name: &str) -> String {
    format!("picture:{name}")
}

/// What one client has been sent, per run.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    runs: Vec<RunCursor>,
    finished: bool,
}

#[derive(Debug, Default, Clone)]
struct RunCursor {
    meta_version: u64,
    /// Points sent, by series index.
    points: Vec<usize>,
    /// Panel versions sent, by panel index.
    panels: Vec<u64>,
}

impl State {
    /// The news for a client at `cursor` as a JSON message, advancing the cursor; `None`
    /// when there is nothing new.
    pub fn diff(&self, cursor: &mut Cursor) -> Option<String> {
        let mut runs = Vec::new();
        cursor.runs.resize_with(self.runs.len(), RunCursor::default);
        for (i, (run, c)) in self.runs.iter().zip(&mut cursor.runs).enumerate() {
            let mut msg = Map::new();
            if c.meta_version != run.meta_version || c.meta_version == 0 {
                msg.insert("meta".into(), json!(run.meta));
                c.meta_version = run.meta_version.max(1);
            }
            c.points.resize(run.series.len(), 0);
            let mut series = Map::new();
            for ((name, pts), sent) in run.series.iter().zip(&mut c.points) {
                if *sent < pts.len() {
                    let new: Vec<Value> = pts[*sent..]
                        .iter()
                        .map(|[x, y]| json!([x, finite(*y)]))
                        .collect();
                    series.insert(name.clone(), Value::Array(new));
                    *sent = pts.len();
                }
            }
            if !series.is_empty() {
                msg.insert("series".into(), Value::Object(series));
            }
            c.panels.resize(run.panels.len(), 0);
            let mut panels = Vec::new();
            for ((name, version, value), sent) in run.panels.iter().zip(&mut c.panels) {
                if *sent != *version {
                    panels.push(json!({"name": name, "panel": value}));
                    *sent = *version;
                }
            }
            if !panels.is_empty() {
                msg.insert("panels".into(), Value::Array(panels));
            }
            if !msg.is_empty() {
                msg.insert("index".into(), json!(i));
                msg.insert("name".into(), json!(run.name));
                runs.push(Value::Object(msg));
            }
        }
        let finished_news = self.finished && !cursor.finished;
        cursor.finished = self.finished;
        if runs.is_empty() && !finished_news {
            return None;
        }
        Some(json!({"finished": self.finished, "runs": runs}).to_string())
    }
}

/// JSON has no NaN or infinity: such a value is sent as `null` (a gap in the chart).
fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_everything_once_then_only_what_is_new() {
        let mut s = State::default();
        s.runs.push(RunState::new("mnist"));
        s.runs[0].set_meta("backend", "cpu");
        s.runs[0].push("loss", &[[1.0, 2.0], [2.0, f64::NAN]]);
        s.runs[0].set_panel("ir", json!({"kind": "text", "text": "graph"}));
        let mut c = Cursor::default();
        let first: Value = serde_json::from_str(&s.diff(&mut c).unwrap()).unwrap();
        assert_eq!(first["runs"][0]["meta"]["backend"], "cpu");
        assert_eq!(
            first["runs"][0]["series"]["loss"],
            json!([[1.0, 2.0], [2.0, null]])
        );
        assert_eq!(first["runs"][0]["panels"][0]["name"], "ir");
        assert_eq!(s.diff(&mut c), None);

        s.runs[0].push("loss", &[[3.0, 1.5]]);
        s.runs[0].set_panel("ir", json!({"kind": "text", "text": "graph 2"}));
        let next: Value = serde_json::from_str(&s.diff(&mut c).unwrap()).unwrap();
        assert_eq!(next["runs"][0]["series"]["loss"], json!([[3.0, 1.5]]));
        assert_eq!(next["runs"][0]["panels"][0]["panel"]["text"], "graph 2");
        assert!(next["runs"][0].get("meta").is_none());
        // The same panel again is no news.
        s.runs[0].set_panel("ir", json!({"kind": "text", "text": "graph 2"}));
        assert_eq!(s.diff(&mut c), None);

        s.finished = true;
        let last: Value = serde_json::from_str(&s.diff(&mut c).unwrap()).unwrap();
        assert_eq!(last["finished"], true);
        assert_eq!(s.diff(&mut c), None);
    }
}

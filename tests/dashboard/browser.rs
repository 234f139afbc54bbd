//! The page in a real browser: headless Chromium, driven over WebDriver by
//! `chromedriver`, loads the dashboard of a running `mnist --dashboard`, and checks that
//! the loss chart gains points while it watches, that the IR panel holds the step's
//! text, and that the epoch's confusion matrix and digit grid appear; then it saves a
//! screenshot (`target/dashboard-screenshot.png`; `AOTGRAD_SCREENSHOT=PATH` copies it).
//!
//! Without `chromedriver` and Chromium the test prints one line and passes;
//! `AOTGRAD_REQUIRE_BROWSER=1` (set by `.ci/run`, which installs Debian's `chromium`
//! and `chromium-driver`) makes their absence a failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.is_file())
}

/// Kills a child process when dropped (a failing test leaves nothing running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver command: `method path` with a JSON body; returns the answer's `value`.
fn webdriver(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver may keep the connection open: read the head, then the body by its
    // length (or its chunks).
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let end = loop {
        if let Some(e) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break e;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{method} {path}: connection closed");
        out.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().unwrap());
    let complete = |b: &[u8]| match length {
        Some(n) => b.len() >= n,
        None => b.ends_with(b"0\r\n\r\n"),
    };
    let mut payload = out[end + 4..].to_vec();
    while !complete(&payload) {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if length.is_none() && head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    let v: Value = serde_json::from_slice(&payload).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {e}: {}",
            String::from_utf8_lossy(&payload)
        )
    });
    if v["value"].get("error").is_some() {
        panic!("{method} {path}: {}", v["value"]);
    }
    v["value"].clone()
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !b"=\r\n".contains(c)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= (val(c) as u32) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

/// Polls `script` (a WebDriver script returning a value) until `ok` holds.
fn wait_for(
    port: u16,
    session: &str,
    what: &str,
    secs: u64,
    script: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = webdriver(
            port,
            "POST",
            &format!("/session/{session}/execute/sync"),
            Some(json!({"script": script, "args": []})),
        );
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "waited {secs} s for {what}; last {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

const PAGE_FACTS: &str = r#"
const chart = document.querySelector('[data-chart="loss"]');
const ir = document.querySelector('[data-panel="traced"] pre');
return {
  points: chart ? Number(chart.dataset.points) : 0,
  canvas: !!(chart && chart.querySelector('canvas')),
  ir: ir ? ir.textContent : null,
  confusion: document.querySelectorAll('[data-panel="confusion"] td').length,
  digits: document.querySelectorAll('[data-panel="images"] canvas').length,
  lowered: !!document.querySelector('[data-panel="lowered"]'),
  backend: (document.querySelector('[data-fact="backend"]') || {}).textContent || null,
  status: document.getElementById('status').textContent,
};
"#;

#[test]
fn the_page_shows_a_live_run_in_headless_chromium() {
    let required = std::env::var("AOTGRAD_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (Some(driver), Some(chromium)) = (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        assert!(
            !required,
            "AOTGRAD_REQUIRE_BROWSER=1 but chromedriver or chromium is not on PATH"
        );
        // Straight to the process's stderr: the harness captures a passing test's
        // output, and this line must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "skipping the browser test: no chromedriver and chromium on PATH (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };

    // A run long enough to be watched: the test stops it when it has seen enough.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_aotgrad"));
    let mnist = crate::finished_runs::example("mnist");
    let mut child = Command::new(&mnist)
        .args([
            "--dashboard",
            "--epochs",
            "50",
            "--batch",
            "64",
            "--loss",
            "ce",
            "--optim",
            "adam",
            "--profile",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", mnist.display()));
    let stdout = child.stdout.take().unwrap();
    let _run = Killed(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the example printed its dashboard URL")
            .unwrap();
        if let Some(rest) = line.strip_prefix("dashboard: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the example's output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let port = free_port();
    let driver = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _driver = Killed(driver);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": chromium,
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,2300", "--hide-scrollbars"],
    }}}});
    let session = webdriver(port, "POST", "/session", Some(caps));
    let sid = session["sessionId"].as_str().unwrap().to_string();
    // Ends the browser even when an assertion fails (killing chromedriver would leave
    // Chromium running).
    let _session = Session(port, sid.clone());
    webdriver(
        port,
        "POST",
        &format!("/session/{sid}/url"),
        Some(json!({"url": url})),
    );

    let first = wait_for(port, &sid, "the first loss points", 90, PAGE_FACTS, |v| {
        v["points"].as_u64().unwrap_or(0) > 0
    });
    let p1 = first["points"].as_u64().unwrap();
    let later = wait_for(port, &sid, "more loss points", 90, PAGE_FACTS, |v| {
        v["points"].as_u64().unwrap_or(0) > p1
    });
    assert!(
        later["canvas"].as_bool().unwrap(),
        "uPlot drew the chart: {later}"
    );
    let ir = later["ir"].as_str().expect("the traced-graph panel");
    assert!(
        ir.starts_with("graph mnist_mlp.step {"),
        "{}",
        &ir[..ir.len().min(200)]
    );
    assert!(
        ir.contains("matmul") && ir.contains("update "),
        "the whole step's text"
    );
    assert_eq!(later["backend"], "cpu (Cranelift)");
    assert!(
        later["status"].as_str().unwrap().starts_with("live"),
        "{later}"
    );

    // After the first epoch: the confusion matrix, the digits, the lowered program.
    let epoch = wait_for(
        port,
        &sid,
        "the first epoch's panels",
        180,
        PAGE_FACTS,
        |v| {
            v["confusion"].as_u64() == Some(100)
                && v["digits"].as_u64() == Some(32)
                && v["lowered"] == true
        },
    );
    eprintln!(
        "browser: {} loss points, then {}, then {}",
        p1, later["points"], epoch["points"]
    );

    // Open the lowered program's panel for the picture, and wait a frame.
    webdriver(
        port,
        "POST",
        &format!("/session/{sid}/execute/sync"),
        Some(
            json!({"script": "const d = document.querySelector('[data-panel=\"lowered\"] details'); if (d) d.open = true; return true;", "args": []}),
        ),
    );
    std::thread::sleep(Duration::from_millis(500));
    let shot = webdriver(port, "GET", &format!("/session/{sid}/screenshot"), None);
    let png = base64_decode(shot.as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let out = bin.parent().unwrap().join("dashboard-screenshot.png");
    std::fs::write(&out, &png).unwrap();
    if let Ok(copy) = std::env::var("AOTGRAD_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }
    eprintln!("browser: screenshot {}", out.display());
}

/// A WebDriver session, deleted (its browser closed) when dropped.
struct Session(u16, String);

impl Drop for Session {
    fn drop(&mut self) {
        let (port, sid) = (self.0, &self.1);
        let _ = std::panic::catch_unwind(|| {
            webdriver(port, "DELETE", &format!("/session/{sid}"), None)
        });
    }
}

//! The server answers only its own routes, refuses what it does not understand, keeps
//! serving after bad requests, and never lets a client slow the training thread.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use aotgrad::dashboard::{Dashboard, MAX_CONNECTIONS};
use aotgrad::nn::{Linear, Sequential};
use aotgrad::prelude::*;

use crate::net::{get, read_events, send};

pub fn tiny_step() -> TrainStep {
    let model = Sequential::new().push_named("linear", Linear::new(1, 1));
    Trainer::new(
        model,
        Loss::mse(Reduction::Mean),
        Optimizer::from_name("sgd", 0.01, 0.0).unwrap(),
    )
    .name("tiny")
    .input(DType::F32, &[1])
    .target(DType::F32, &[1])
    .compile(&Backend::Interpreter)
    .unwrap()
}

pub fn tiny_batch() -> Batch {
    Batch {
        x: Tensor::from_f32(&[1., 2., 3.], &[3, 1]).unwrap(),
        y: Tensor::from_f32(&[2., 4., 6.], &[3, 1]).unwrap(),
    }
}

fn serve() -> Dashboard {
    Dashboard::serve("test", "127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn the_page_and_its_assets_are_served_with_strict_headers() {
    let d = serve();
    let a = d.addr();
    let page = get(a, "/");
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("/assets/dashboard.js") && html.contains("uPlot.iife.min.js"));
    assert!(!html.contains("{{QUERY}}"), "the template was filled in");
    assert!(
        page.head
            .contains("content-security-policy: default-src 'none'")
    );
    assert!(page.head.contains("x-content-type-options: nosniff"));
    for asset in [
        "dashboard.js",
        "dashboard.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "uPlot-LICENSE.txt",
    ] {
        let r = get(a, &format!("/assets/{asset}"));
        assert_eq!(r.status, 200, "{asset}");
        assert!(r.body.len() > 100, "{asset}");
    }
    let state = get(a, "/state");
    assert_eq!(state.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
    assert_eq!(v["runs"][0]["name"], "test");
    // HEAD: the head only.
    let head = send(
        a,
        format!("HEAD / HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
    );
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn paths_outside_the_routes_are_not_found_and_nothing_is_read_from_disk() {
    let d = serve();
    d.picture("ok.png", "ok", vec![1, 2, 3]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let a = d.addr();
    assert_eq!(get(a, "/picture/0/ok.png").body, vec![1, 2, 3]);
    for path in [
        "/assets/../Cargo.toml",
        "/assets/..%2f..%2fCargo.toml",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/assets/",
        "/assets",
        "/assets/dashboard.js/..",
        "/picture/0/../../../etc/passwd",
        "/picture/0/..%2fCargo.toml",
        "/picture/1/ok.png",
        "/picture/-1/ok.png",
        "/picture/0/",
        "/src/dashboard/mod.rs",
        "/Cargo.toml",
        "/index.html/../Cargo.toml",
        "/favicon.ico",
    ] {
        let r = get(a, path);
        assert_eq!(r.status, 404, "{path}");
        let body = r.text();
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    // Picture names are checked where they are given.
    assert!(d.picture("../x.png", "x", vec![]).is_err());
    assert!(d.picture("a/b.png", "x", vec![]).is_err());
    assert!(d.picture(".hidden", "x", vec![]).is_err());
}

#[test]
fn malformed_and_oversized_requests_are_refused_and_the_server_lives_on() {
    let d = serve();
    let a = d.addr();
    let host = format!("Host: {a}\r\n");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"\x00\xff\xfe\r\n\r\n".to_vec(), 400),
        (
            format!("POST /state HTTP/1.1\r\n{host}Content-Length: 4\r\n\r\nabcd").into_bytes(),
            405,
        ),
        (format!("DELETE / HTTP/1.1\r\n{host}\r\n").into_bytes(), 405),
        (
            format!("GET / HTTP/1.1\r\n{host}Content-Length: 10\r\n\r\n").into_bytes(),
            413,
        ),
        (b"GET / HTTP/9.9\r\n\r\n".to_vec(), 505),
        (b"GET relative HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(20_000)).into_bytes(),
            431,
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(5_000)).into_bytes(),
            431,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n",
                "y".repeat(1 << 20)
            )
            .into_bytes(),
            431,
        ),
    ];
    for (raw, status) in &cases {
        let r = send(a, raw);
        assert_eq!(
            r.status,
            *status,
            "{:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(60)])
        );
    }
    // A client that sends half a request and hangs up.
    {
        let mut s = TcpStream::connect(a).unwrap();
        s.write_all(b"GET / HT").unwrap();
    }
    assert_eq!(get(a, "/").status, 200, "still serving");
}

#[test]
fn a_client_that_never_finishes_its_request_is_cut_off() {
    let d = serve();
    let t = Instant::now();
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut out);
    let r = crate::net::parse(&out);
    assert_eq!(r.status, 408);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
}

#[test]
fn on_loopback_only_loopback_hosts_are_answered() {
    let d = serve();
    let a = d.addr();
    let p = a.port();
    for host in [format!("127.0.0.1:{p}"), format!("localhost:{p}")] {
        let r = send(
            a,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{host}");
    }
    // DNS rebinding: a page of another site whose name now points here.
    for host in [
        format!("evil.example:{p}"),
        "127.0.0.1:1".into(),
        "localhost".into(),
    ] {
        let r = send(
            a,
            format!("GET /state HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 421, "{host}");
        assert!(!r.text().contains("runs"));
    }
}

#[test]
fn beyond_loopback_every_request_needs_the_token() {
    let d = Dashboard::serve("remote", "0.0.0.0:0".parse().unwrap()).unwrap();
    let url = d.url();
    let token = url
        .split_once("?token=")
        .map(|(_, t)| t.to_string())
        .expect("a token in the URL");
    assert_eq!(token.len(), 32, "128 bits in hex: {url}");
    let a = SocketAddr::from(([127, 0, 0, 1], d.addr().port()));
    for path in ["/", "/state", "/events", "/assets/dashboard.js"] {
        assert_eq!(get(a, path).status, 403, "{path}");
        assert_eq!(get(a, &format!("{path}?token=0123")).status, 403, "{path}");
        let wrong = "f".repeat(32);
        assert_eq!(
            get(a, &format!("{path}?token={wrong}")).status,
            403,
            "{path}"
        );
    }
    let page = get(a, &format!("/?token={token}"));
    assert_eq!(page.status, 200);
    assert!(
        page.text()
            .contains(&format!("/assets/dashboard.js?token={token}"))
    );
    assert_eq!(get(a, &format!("/state?token={token}")).status, 200);
    // Another dashboard gets another token.
    let other = Dashboard::serve("remote", "0.0.0.0:0".parse().unwrap()).unwrap();
    assert_ne!(other.url().split_once("?token=").unwrap().1, token);
}

#[test]
fn the_stream_carries_every_step_and_says_goodbye_when_the_run_ends() {
    let d = serve();
    let a = d.addr();
    let mut step = tiny_step();
    d.attach(&mut step);
    let b = tiny_batch();
    for _ in 0..5 {
        step.run(&b).unwrap();
    }
    d.record(step.steps(), &[("test_loss", 0.5)]);
    let got = read_events(a, "/events", 20, |s| s.contains("test_loss"));
    assert!(got.contains("event: reset"), "{got}");
    let update = got
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| l.contains("\"series\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .fold(Vec::new(), |mut acc, v| {
            if let Some(p) = v["runs"][0]["series"]["loss"].as_array() {
                acc.extend(p.iter().cloned());
            }
            acc
        });
    assert_eq!(update.len(), 5, "{got}");
    assert_eq!(update[4][0], 5.0);
    // The traced graph's text is on the page.
    let state: serde_json::Value = serde_json::from_slice(&get(a, "/state").body).unwrap();
    let panels = state["runs"][0]["panels"].as_array().unwrap();
    let traced = panels.iter().find(|p| p["name"] == "traced").unwrap();
    assert!(
        traced["panel"]["text"]
            .as_str()
            .unwrap()
            .starts_with("graph tiny.step {")
    );
    assert_eq!(
        state["runs"][0]["meta"]["backend"],
        "interp (reference interpreter)"
    );

    // A stream open while the run ends gets its last news and a goodbye.
    let addr = a;
    let reader =
        std::thread::spawn(move || read_events(addr, "/events", 20, |s| s.contains("event: bye")));
    std::thread::sleep(Duration::from_millis(500));
    drop(d);
    let tail = reader.join().unwrap();
    assert!(tail.contains("event: bye"), "{tail}");
    assert!(tail.contains("\"finished\":true"), "{tail}");
    // The server is gone with the run.
    assert!(TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_err());
    // Training goes on without it.
    step.run(&b).unwrap();
}

#[test]
fn a_stalled_client_never_blocks_training() {
    let d = serve();
    let a = d.addr();
    let mut step = tiny_step();
    d.attach(&mut step);
    // A page that asks for the stream and then never reads a byte.
    let mut stalled = TcpStream::connect(a).unwrap();
    write!(stalled, "GET /events HTTP/1.1\r\nHost: {a}\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let b = tiny_batch();
    let big = "x".repeat(1 << 20);
    let mut slowest = Duration::ZERO;
    let t = Instant::now();
    // Train and publish megabytes until the socket buffers are full and the stream's
    // write times out: the stalled client is dropped, and no step waited for it.
    let mut i = 0;
    while d.connections() > 0 && t.elapsed() < Duration::from_secs(60) {
        let s = Instant::now();
        step.run(&b).unwrap();
        d.text("big", "a megabyte", &format!("{i}{big}"));
        slowest = slowest.max(s.elapsed());
        i += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(d.connections(), 0, "the stalled client was dropped");
    assert!(
        slowest < Duration::from_millis(500),
        "a step took {slowest:?} with a stalled client"
    );
    eprintln!(
        "{i} steps in {:?} until the stalled client was dropped; slowest step {slowest:?}",
        t.elapsed()
    );
    // Others are served as before.
    assert_eq!(get(a, "/").status, 200);
    drop(stalled);
}

#[test]
fn many_clients_at_once_are_served_or_turned_away_and_training_goes_on() {
    let d = serve();
    let a = d.addr();
    let mut step = tiny_step();
    d.attach(&mut step);
    let n = MAX_CONNECTIONS + 36;
    let clients: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                read_events(a, "/events", 10, |s| {
                    s.contains("\"loss\"") || s.starts_with("HTTP/1.1 503")
                })
            })
        })
        .collect();
    let b = tiny_batch();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        step.run(&b).unwrap();
    }
    let answers: Vec<String> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let served = answers
        .iter()
        .filter(|s| s.starts_with("HTTP/1.1 200"))
        .count();
    let busy = answers
        .iter()
        .filter(|s| s.starts_with("HTTP/1.1 503"))
        .count();
    assert_eq!(served + busy, n, "every client got an answer");
    assert!(
        served >= MAX_CONNECTIONS / 2,
        "served {served}, busy {busy}"
    );
    assert!(
        answers
            .iter()
            .filter(|s| s.starts_with("HTTP/1.1 200"))
            .all(|s| s.contains("\"loss\"")),
        "every served page got the steps"
    );
    assert!(step.steps() > 10);
    // The page is served again once they are gone.
    assert_eq!(get(a, "/").status, 200);
}

#[test]
fn a_busy_address_and_a_bad_picture_name_are_errors_that_say_so() {
    let d = serve();
    let taken = d.addr();
    let e = Dashboard::serve("again", taken)
        .err()
        .expect("the port is taken");
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("dashboard: cannot listen on {taken}: ")),
        "{msg}"
    );
    let e = d.picture("../x.png", "x", vec![]).unwrap_err().to_string();
    assert_eq!(
        e,
        "dashboard: picture name \"../x.png\" must be 1-100 letters, digits, '_', '-' or '.', not starting with '.'"
    );
}

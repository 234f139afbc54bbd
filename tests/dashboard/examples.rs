//! `--dashboard` on the training examples: the URL line, a server that stops with the
//! run, `--dashboard-keep`, and a token beyond loopback.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::finished_runs::{example, run_example};
use crate::net::get;

fn url_of(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("no dashboard line in {stdout}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn every_training_example_serves_a_dashboard() {
    let cases: [(&str, &[&str]); 15] = [
        ("linear_regression", &[]),
        ("logistic_regression", &[]),
        ("zscore_regression", &["--epochs", "100"]),
        ("quadratic", &[]),
        ("himmelblau", &["--epochs", "300"]),
        ("multivariate_regression", &["--epochs", "2000"]),
        ("raw_regression", &["--epochs", "200"]),
        ("diabetes", &["--epochs", "2"]),
        ("diabetes_full_batch", &["--epochs", "20"]),
        ("titanic", &["--epochs", "2"]),
        ("mnist", &["--limit", "512", "--epochs", "1"]),
        ("lenet", &["--limit", "256", "--epochs", "1"]),
        ("mnist_raw_mlp", &["--limit", "400", "--epochs", "1"]),
        ("overfitting_toolbox", &["--limit", "1000", "--epochs", "1"]),
        (
            "char_lstm",
            &[
                "--steps",
                "4",
                "--eval-every",
                "2",
                "--eval-batches",
                "1",
                "--sample-chars",
                "8",
                "--block",
                "16",
            ],
        ),
    ];
    for (name, args) in cases {
        let stdout = run_example(name, &[&["--dashboard"][..], args].concat());
        let url = url_of(&stdout);
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.contains("token"),
            "{name}: {url}"
        );
        // The run is over, and its server with it.
        let addr = addr_of(&url);
        assert!(
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).is_err(),
            "{name}: still listening after the run"
        );
    }
}

/// Runs `name --dashboard --dashboard-keep ARGS` to its end, GETs `paths` from the
/// page it keeps serving, and stops it: its output and the answers.
fn kept(name: &str, args: &[&str], paths: &[&str]) -> (String, Vec<crate::net::Answer>) {
    let mut child = Command::new(example(name))
        .args(["--dashboard", "--dashboard-keep"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let url = loop {
        let line = lines.next().expect("the keep line").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("still serving") {
            break url_of(&seen);
        }
    };
    let answers = paths.iter().map(|p| get(addr_of(&url), p)).collect();
    let _ = child.kill();
    let _ = child.wait();
    (seen, answers)
}

#[test]
fn dashboard_keep_serves_the_finished_run_until_interrupted() {
    let (seen, answers) = kept(
        "logistic_regression",
        &["--epochs", "50"],
        &["/state", "/picture/0/probability.png"],
    );
    let (state, picture) = (&answers[0], &answers[1]);
    assert!(seen.contains("final: "), "the run ended first: {seen}");
    let v: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
    assert_eq!(v["finished"], true);
    let run = &v["runs"][0];
    assert_eq!(run["name"], "logistic_regression");
    assert_eq!(run["series"]["loss"].as_array().unwrap().len(), 50);
    assert_eq!(run["meta"]["status"], "finished");
    assert_eq!(run["meta"]["step"], "50");
    // The course's picture is on the page too.
    assert_eq!(picture.status, 200);
    assert_eq!(&picture.body[..4], b"\x89PNG");
}

#[test]
fn a_dashboard_beyond_loopback_prints_a_tokened_url() {
    let stdout = run_example("linear_regression", &["--dashboard-addr", "0.0.0.0:0"]);
    let url = url_of(&stdout);
    let token = url
        .split_once("?token=")
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 32);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
}

#[test]
fn on_the_gpu_the_page_names_the_adapter() {
    if !aotgrad::runtime::gpu::available_for_tests().expect("a GPU adapter (AOTGRAD_REQUIRE_GPU=1)")
    {
        return;
    }
    let (seen, answers) = kept(
        "mnist",
        &[
            "--backend",
            "gpu",
            "--limit",
            "256",
            "--epochs",
            "1",
            "--batch",
            "128",
        ],
        &["/state"],
    );
    let state = &answers[0];
    let adapter = seen
        .lines()
        .find_map(|l| l.strip_prefix("GPU adapter: "))
        .unwrap_or_else(|| panic!("no adapter line: {seen}"));
    let v: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
    let meta = &v["runs"][0]["meta"];
    assert_eq!(meta["backend"], "gpu (wgpu, WGSL)");
    assert_eq!(meta["device"], adapter);
    assert_eq!(v["runs"][0]["series"]["loss"].as_array().unwrap().len(), 2);
}

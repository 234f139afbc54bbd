//! `--plot` writes the course's pictures beside the curves, and `aotgrad dashboard
//! DIR...` serves finished runs from what `--plot` and `--tensorboard` wrote, overlaid.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::net::get;

pub fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_aotgrad"));
    let path = bin
        .parent()
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests through `cargo test --workspace` (which builds the examples)",
        path.display()
    );
    path
}

pub fn run_example(name: &str, args: &[&str]) -> String {
    let out = Command::new(example(name)).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aotgrad-dash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    (
        u32::from_be_bytes(b[16..20].try_into().unwrap()),
        u32::from_be_bytes(b[20..24].try_into().unwrap()),
    )
}

#[test]
fn plot_writes_the_courses_pictures() {
    let dir = scratch("pictures");
    let d = |n: &str| dir.join(n);
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("linear_regression", &[], &["fit"]),
        ("logistic_regression", &[], &["probability"]),
        ("himmelblau", &["--epochs", "2000"], &["himmelblau"]),
        ("gradient_descent", &[], &["loss_vs_w", "p29_fits"]),
        (
            "mnist",
            &["--limit", "1024", "--epochs", "1"],
            &["test_digits"],
        ),
    ];
    for (name, extra, pictures) in cases {
        let out_dir = d(name);
        let mut args = vec!["--plot", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let stdout = run_example(name, &args);
        for p in pictures {
            let png = out_dir.join(format!("{p}.png"));
            assert!(
                stdout.contains(&format!("wrote {}", png.display())),
                "{stdout}"
            );
            let (w, h) = png_size(&png);
            assert!(w >= 400 && h >= 300, "{name}: {p}.png is {w}x{h}");
            let svg = std::fs::read_to_string(out_dir.join(format!("{p}.svg"))).unwrap();
            assert!(svg.starts_with("<svg"), "{name}: {p}.svg");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn finished_runs_are_served_overlaid_from_plot_and_tensorboard_directories() {
    let dir = scratch("finished");
    let a = dir.join("slow");
    let b = dir.join("fast");
    let tb = dir.join("tb");
    run_example(
        "logistic_regression",
        &["--epochs", "300", "--plot", a.to_str().unwrap()],
    );
    run_example(
        "logistic_regression",
        &[
            "--epochs",
            "300",
            "--lr",
            "0.05",
            "--plot",
            b.to_str().unwrap(),
            "--tensorboard",
            tb.to_str().unwrap(),
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_aotgrad"))
        .args([
            "dashboard",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            tb.to_str().unwrap(),
        ])
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    let url = loop {
        let line = lines.next().expect("a URL line").unwrap();
        if let Some(rest) = line.strip_prefix("dashboard: ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        said.push(line);
    };
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&get(addr, "/state").body).unwrap();
    let page = get(addr, "/");
    let picture = get(addr, "/picture/0/probability.png");
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(page.status, 200);
    assert_eq!(state["finished"], true);
    let runs = state["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["slow", "fast", "tb"], "{said:?}");
    for r in runs {
        let loss = r["series"]["loss"].as_array().unwrap();
        assert_eq!(loss.len(), 300, "{}", r["name"]);
        assert_eq!(loss[0][0], 1.0);
    }
    // The CSV and the event file of one run hold the same losses (to f32).
    let (csv, events) = (&runs[1]["series"]["loss"], &runs[2]["series"]["loss"]);
    for i in [0, 150, 299] {
        let (x, y) = (csv[i][1].as_f64().unwrap(), events[i][1].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "step {i}: {x} vs {y}"
        );
    }
    // Two different learning rates: two different runs.
    assert_ne!(
        runs[0]["series"]["loss"][299],
        runs[1]["series"]["loss"][299]
    );
    // The run's pictures are served from memory.
    assert_eq!(picture.status, 200);
    assert_eq!(&picture.body[..4], b"\x89PNG");
    let panels = runs[0]["panels"].as_array().unwrap();
    assert!(
        panels
            .iter()
            .any(|p| p["name"] == "picture:probability.png")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_dashboard_command_refuses_a_directory_without_runs() {
    let dir = scratch("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aotgrad"))
        .args(["dashboard", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no metrics.csv or events.out.tfevents"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_aotgrad"))
        .args(["dashboard", "/nonexistent/run"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
    let _ = std::fs::remove_dir_all(&dir);
}

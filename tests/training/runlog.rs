//! The run log: CSV rows, curve files that are real PNG/SVG, TensorBoard event files in
//! TFRecord framing with valid checksums, and its errors; and an example writing them.

use std::path::PathBuf;
use std::process::Command;

use aotgrad::cli::runlog::{LogError, RunLog, masked_crc};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("aotgrad-runlog-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Splits a TFRecord file into its records, checking both checksums of each.
fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().unwrap());
        assert_eq!(
            crc,
            masked_crc(len_bytes),
            "length checksum of record {}",
            out.len()
        );
        let data = &bytes[i + 12..i + 12 + len];
        let crc = u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().unwrap());
        assert_eq!(
            crc,
            masked_crc(data),
            "data checksum of record {}",
            out.len()
        );
        out.push(data.to_vec());
        i += 16 + len;
    }
    out
}

#[test]
fn csv_plots_and_tensorboard_events() {
    let dir = tmp("all");
    let mut log = RunLog::new(&["loss", "lr", "test_accuracy"])
        .csv(&dir.join("metrics.csv"))
        .unwrap()
        .tensorboard(&dir.join("tb"))
        .unwrap();
    for step in 1..=30u64 {
        let loss = 1.0 / step as f64;
        log.record(
            step,
            1 + (step as usize - 1) / 10,
            &[("loss", loss), ("lr", 0.1)],
        )
        .unwrap();
        if step % 10 == 0 {
            log.record(
                step,
                step as usize / 10,
                &[("test_accuracy", 0.5 + step as f64 / 100.0)],
            )
            .unwrap();
        }
    }
    let files = log.plot(&dir).unwrap();
    log.flush().unwrap();

    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,epoch,loss,lr,test_accuracy");
    assert_eq!(lines[1], "1,1,1,0.1,");
    assert_eq!(lines.len(), 1 + 30 + 3);
    assert!(lines.contains(&"10,1,,,0.6"), "{csv}");

    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "loss.png",
        "loss.svg",
        "lr.png",
        "accuracy.png",
        "accuracy.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if f.extension().unwrap() == "png" {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
            assert!(
                bytes.len() > 2000,
                "{} is too small to hold a chart",
                f.display()
            );
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(
                text.contains("<svg") && text.trim_end().ends_with("</svg>"),
                "{}",
                f.display()
            );
            assert!(
                text.contains("<polyline") || text.contains("<path"),
                "{}",
                f.display()
            );
        }
    }

    let tb: Vec<PathBuf> = std::fs::read_dir(dir.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tb.len(), 1);
    assert!(
        tb[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
    );
    let recs = records(&std::fs::read(&tb[0]).unwrap());
    // The version event, then one event per scalar: 30 x (loss, lr) + 3 accuracies.
    assert_eq!(recs.len(), 1 + 60 + 3);
    assert!(recs[0].windows(13).any(|w| w == b"brain.Event:2"));
    assert!(recs[1].windows(4).any(|w| w == b"loss"));
    // Event.step = 1 (field 2, varint) and simple_value = 1.0f32 (field 2 of Value, fixed32).
    assert!(recs[1].windows(2).any(|w| w == [0x10, 0x01]));
    assert!(
        recs[1]
            .windows(5)
            .any(|w| w == [0x15, 0x00, 0x00, 0x80, 0x3f])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_columns_and_unwritable_paths_are_errors() {
    let mut log = RunLog::new(&["loss"]);
    match log.record(1, 1, &[("accuracy", 1.0)]) {
        Err(LogError::UnknownColumn { name, .. }) => assert_eq!(name, "accuracy"),
        other => panic!("{other:?}"),
    }
    let file = tmp("file");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"not a directory").unwrap();
    let e = RunLog::new(&["loss"])
        .csv(&file.join("metrics.csv"))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("metrics.csv") || e.to_string().contains(&*file.to_string_lossy()),
        "{e}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn an_example_writes_its_curves_and_events() {
    let exe = example_exe("linear_regression");
    let dir = tmp("example");
    let out = Command::new(exe)
        .args(["--epochs", "30", "--plot"])
        .arg(&dir)
        .arg("--tensorboard")
        .arg(dir.join("tb"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["metrics.csv", "loss.png", "loss.svg"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31, "{csv}");
    assert_eq!(std::fs::read_dir(dir.join("tb")).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

fn example_exe(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_aotgrad"));
    bin.parent()
        .unwrap()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// `--scheduler step:10:0.5` halves the learning rate every 10 epochs, as the logged
/// `lr` column shows; a malformed spec and an unsupported `--checkpoint` are refused.
#[test]
fn scheduler_flag_changes_the_logged_learning_rate() {
    let dir = tmp("sched");
    let out = Command::new(example_exe("linear_regression"))
        .args([
            "--epochs",
            "30",
            "--lr",
            "0.02",
            "--scheduler",
            "step:10:0.5",
            "--plot",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let lrs: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(lrs.len(), 30);
    assert_eq!((lrs[0], lrs[9]), (0.02, 0.02), "{csv}");
    assert_eq!((lrs[10], lrs[19]), (0.01, 0.01), "{csv}");
    assert_eq!((lrs[20], lrs[29]), (0.005, 0.005), "{csv}");
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(example_exe("linear_regression"))
        .args(["--scheduler", "step:ten:0.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"ten\" is not a non-negative number"),
        "{err}"
    );

    let out = Command::new(example_exe("linear_regression"))
        .args(["--epochs", "2", "--checkpoint", "/tmp/x.safetensors"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linear_regression does not use --checkpoint"),
        "{err}"
    );
}

//! `--tensorboard` event files hold scalars, the run's pictures as images and the
//! parameters' histograms, and TensorBoard's own reader (the `tensorboard` Python
//! package's `EventAccumulator`) reads every one of them back.
//!
//! Needs a Python with `tensorboard` (`AOTGRAD_PYTHON`, else `python3`); without one
//! the test prints one line and passes, and `AOTGRAD_REQUIRE_TENSORBOARD=1` (set by
//! `.ci/run`, which installs it in a virtualenv) makes it a failure.

use std::process::Command;

use crate::finished_runs::{run_example, scratch};

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.IMAGES: 0, ea.HISTOGRAMS: 0, ea.SCALARS: 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "images": {}, "histograms": {}}
for t in tags["scalars"]:
    out["scalars"][t] = [[e.step, e.value] for e in acc.Scalars(t)]
for t in tags["images"]:
    out["images"][t] = [[e.step, e.width, e.height, len(e.encoded_image_string), e.encoded_image_string[:8].hex()] for e in acc.Images(t)]
for t in tags["histograms"]:
    out["histograms"][t] = [{"step": e.step, "min": e.histogram_value.min, "max": e.histogram_value.max,
        "num": e.histogram_value.num, "sum": e.histogram_value.sum,
        "counts": sum(e.histogram_value.bucket), "limits": len(e.histogram_value.bucket_limit)}
        for e in acc.Histograms(t)]
print(json.dumps(out))
"#;

#[test]
fn tensorboard_reads_back_scalars_images_and_histograms() {
    let python = std::env::var("AOTGRAD_PYTHON").unwrap_or_else(|_| "python3".into());
    let has = Command::new(&python)
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has {
        assert!(
            std::env::var("AOTGRAD_REQUIRE_TENSORBOARD").as_deref() != Ok("1"),
            "AOTGRAD_REQUIRE_TENSORBOARD=1 but {python} cannot import tensorboard"
        );
        // Straight to the process's stderr: the harness captures a passing test's
        // output, and this line must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipping the TensorBoard reader test: {python} has no tensorboard (pip install tensorboard; AOTGRAD_PYTHON=...)"
        );
        return;
    }
    let dir = scratch("tensorboard");
    run_example(
        "mnist",
        &[
            "--limit",
            "1024",
            "--epochs",
            "2",
            "--tensorboard",
            dir.to_str().unwrap(),
        ],
    );
    let out = Command::new(&python)
        .args(["-c", READER, dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Scalars: two steps of 512 per epoch, and the test metrics per epoch.
    assert_eq!(
        v["scalars"]["loss"].as_array().unwrap().len(),
        4,
        "{}",
        v["scalars"]
    );
    assert_eq!(v["scalars"]["test_accuracy"].as_array().unwrap().len(), 2);
    // The digits picture, as a PNG image of the picture's size.
    let img = &v["images"]["test_digits"][0];
    assert_eq!(img[4], "89504e470d0a1a0a", "{img}");
    assert_eq!(
        (img[1].as_u64(), img[2].as_u64()),
        (Some(788), Some(498)),
        "{img}"
    );
    // A histogram per parameter and epoch, counting every weight.
    for (name, count) in [
        ("fc1.weight", 256 * 784),
        ("fc1.bias", 256),
        ("fc3.weight", 10 * 64),
    ] {
        let h = v["histograms"][name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {}", v["histograms"]));
        assert_eq!(h.len(), 2, "{name}");
        for e in h {
            assert_eq!(e["num"].as_f64(), Some(count as f64), "{name}");
            assert_eq!(e["counts"].as_f64(), Some(count as f64), "{name}");
            assert!(e["min"].as_f64() < e["max"].as_f64(), "{name}: {e}");
        }
        assert_eq!(h[0]["step"], 2);
        assert_eq!(h[1]["step"], 4);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

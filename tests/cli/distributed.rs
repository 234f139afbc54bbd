//! Data-parallel MNIST under `mpirun` (`--distributed`, cargo feature `mpi`): N ranks
//! of batch B follow one process of batch N*B, every rank ends with the same bits,
//! uneven shards, resume, and the failures (different jobs, a rank that dies, a binary
//! built without MPI).
//!
//! The MPI examples are built here, with `--features mpi`, into a target directory of
//! their own (the default build needs no system package). Without `mpirun` these tests
//! print one line and pass; `.ci/run` installs OpenMPI and sets `AOTGRAD_REQUIRE_MPI=1`,
//! which makes them mandatory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn required() -> bool {
    std::env::var("AOTGRAD_REQUIRE_MPI").is_ok_and(|v| v == "1")
}

fn skip(why: &str) -> Option<PathBuf> {
    assert!(!required(), "AOTGRAD_REQUIRE_MPI=1 but {why}");
    println!("skipping the MPI tests: {why} (.ci/run installs OpenMPI and makes them mandatory)");
    None
}

/// The directory of the examples built with MPI, built once per test run; `None` (with
/// a printed line) where MPI is not installed.
fn mpi_examples() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let has_mpirun = Command::new("mpirun")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_mpirun {
            return Err("no mpirun on PATH".into());
        }
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_aotgrad"));
        let profile_dir = bin.parent().expect("target/<profile>");
        let target = profile_dir.parent().expect("target").join("mpi");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--features", "mpi"])
            .args(["--example", "mnist", "--example", "lenet"])
            .args(["--example", "char_lstm", "--example", "gpt"])
            .arg("--target-dir")
            .arg(&target)
            .output()
            .map_err(|e| format!("cargo could not start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the examples with --features mpi failed (needs libopenmpi-dev \
                 and libclang-dev):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(target.join("debug").join("examples"))
    });
    match dir {
        Ok(d) => Some(d.clone()),
        Err(why) => skip(why),
    }
}

/// Runs `cmd` for at most two minutes (a hang is a failure, not a stuck test).
fn bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after 120 s (a hang):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mpirun` with the flags a container's root needs, then `apps` (`:`-separated MPMD
/// programs: each `(ranks, program, args)`).
fn mpirun(dir: &Path, apps: &[(usize, &str, &[&str])]) -> Output {
    // One MPI job at a time: idle ranks poll, and jobs side by side on a 2-core
    // machine starve each other.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|p| p.into_inner());
    let mut cmd = Command::new("mpirun");
    cmd.args(["--allow-run-as-root", "--oversubscribe"]);
    for (i, (n, name, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-np", &n.to_string()]);
        cmd.arg(dir.join(name)).arg("--distributed").args(*args);
    }
    bounded(cmd)
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn succeeded(o: &Output) -> String {
    assert!(o.status.success(), "failed:\n{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The value of `key=` on the `final:` line.
fn fin(out: &str, key: &str) -> f64 {
    let line = out
        .lines()
        .find_map(|l| l.find("final: ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no final line in:\n{out}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {line}"))
        .parse()
        .unwrap()
}

/// The checksum of the parameters rank 0 reports, after checking every rank agreed.
fn params_crc(out: &str, world: usize) -> String {
    let line = out
        .lines()
        .find(|l| l.contains("parameters after training"))
        .unwrap_or_else(|| panic!("no parameter line in:\n{out}"));
    assert!(
        line.contains(&format!("the same on all {world} ranks")),
        "{line}"
    );
    line.split("crc32c ").nth(1).unwrap()[..8].to_string()
}

/// The examples as `cargo test` built them (without MPI).
fn plain_example(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_aotgrad"));
    bin.parent().unwrap().join("examples").join(name)
}

const SHORT: &[&str] = &["--limit", "4000", "--epochs", "1", "--seed", "3"];

#[test]
fn two_ranks_follow_one_process_of_the_global_batch() {
    let Some(dir) = mpi_examples() else { return };
    let two = succeeded(&mpirun(
        &dir,
        &[(2, "mnist", &[SHORT, &["--batch", "100"]].concat())],
    ));
    assert!(
        two.contains("2 ranks x batch 100 = global batch 200"),
        "{two}"
    );
    params_crc(&two, 2);
    let one = Command::new(dir.join("mnist"))
        .args(SHORT)
        .args(["--batch", "200"])
        .output()
        .unwrap();
    let one = succeeded(&one);
    // Same samples per step (the shards interleave the shuffled order); only the
    // order of the gradient sum differs: rank 0's half plus rank 1's half.
    for key in ["train_loss", "test_accuracy"] {
        let (a, b) = (fin(&two, key), fin(&one, key));
        assert!(
            (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
            "{key}: {a} vs {b}"
        );
    }
    // Two runs of the same job: the same bits.
    let again = succeeded(&mpirun(
        &dir,
        &[(2, "mnist", &[SHORT, &["--batch", "100"]].concat())],
    ));
    assert_eq!(params_crc(&two, 2), params_crc(&again, 2));
}

#[test]
fn three_ranks_with_uneven_shards_and_small_buckets_stay_identical() {
    let Some(dir) = mpi_examples() else { return };
    // 1000 samples over 3 ranks: shards of 334, padded as PyTorch's sampler pads.
    let args = [
        "--limit",
        "1000",
        "--epochs",
        "1",
        "--batch",
        "50",
        "--bucket-kb",
        "8",
    ];
    let out = succeeded(&mpirun(&dir, &[(3, "lenet", &args)]));
    assert!(
        out.contains("3 ranks x batch 50 = global batch 150"),
        "{out}"
    );
    params_crc(&out, 3);
    assert!(fin(&out, "train_loss").is_finite(), "{out}");
}

#[test]
fn resuming_on_the_same_rank_count_is_bitwise_identical() {
    let Some(dir) = mpi_examples() else { return };
    let tmp = std::env::temp_dir().join(format!("aotgrad-mpi-resume-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let ck = tmp.join("ck.safetensors");
    let ck = ck.to_str().unwrap();
    let base = ["--limit", "2000", "--batch", "100", "--seed", "5"];
    let straight = succeeded(&mpirun(
        &dir,
        &[(2, "mnist", &[&base[..], &["--epochs", "2"]].concat())],
    ));
    succeeded(&mpirun(
        &dir,
        &[(
            2,
            "mnist",
            &[&base[..], &["--epochs", "1", "--checkpoint", ck]].concat(),
        )],
    ));
    let resumed = succeeded(&mpirun(
        &dir,
        &[(
            2,
            "mnist",
            &[&base[..], &["--epochs", "2", "--resume", ck]].concat(),
        )],
    ));
    assert!(resumed.contains("resumed from"), "{resumed}");
    assert_eq!(params_crc(&straight, 2), params_crc(&resumed, 2));
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn ranks_running_different_jobs_are_refused_before_the_first_step() {
    let Some(dir) = mpi_examples() else { return };
    let o = mpirun(
        &dir,
        &[
            (1, "mnist", &["--limit", "500", "--batch", "100"]),
            (1, "mnist", &["--limit", "500", "--batch", "50"]),
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("rank 1 runs a different job than rank 0")
            && t.contains("rank 0 has `batch 100`, rank 1 has `batch 50`"),
        "{t}"
    );
    let o = mpirun(
        &dir,
        &[
            (1, "mnist", &["--limit", "500"]),
            (1, "lenet", &["--limit", "500"]),
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("runs a different job"), "{}", text(&o));
}

#[test]
fn a_rank_that_dies_ends_the_job_instead_of_hanging_it() {
    let Some(dir) = mpi_examples() else { return };
    // Rank 1 fails after the start-up check (its checkpoint does not exist) while rank
    // 0 waits in the first reduction: mpirun ends the job, within `bounded`'s limit.
    let o = mpirun(
        &dir,
        &[
            (1, "mnist", &["--limit", "500"]),
            (
                1,
                "mnist",
                &["--limit", "500", "--resume", "/nonexistent/ck.safetensors"],
            ),
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("/nonexistent/ck.safetensors"),
        "{}",
        text(&o)
    );
}

#[test]
fn distributed_without_the_mpi_feature_says_how_to_enable_it() {
    if cfg!(feature = "mpi") {
        println!("skipping: this build has the mpi feature");
        return;
    }
    let o = Command::new(plain_example("mnist"))
        .args(["--distributed", "--limit", "10"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("built without it") && t.contains("--features mpi") && t.contains("mpirun -np"),
        "{t}"
    );
}

/// The sequence examples on two ranks: each draws its own windows of every step
/// (index `step * world + rank`), the averaged gradients keep every rank's parameters
/// the same bits, rank 0 alone evaluates its share, samples and reports.
#[test]
fn the_sequence_examples_train_on_two_ranks() {
    let Some(dir) = mpi_examples() else { return };
    for (name, extra) in [
        ("char_lstm", &["--block", "16"][..]),
        ("gpt", &["--warmup", "2", "--batch", "8"][..]),
    ] {
        let args = [
            &[
                "--steps",
                "8",
                "--eval-every",
                "4",
                "--eval-batches",
                "3",
                "--sample-chars",
                "20",
            ][..],
            extra,
        ]
        .concat();
        let out = succeeded(&mpirun(&dir, &[(2, name, &args)]));
        assert!(
            out.contains("parameters after training: the same on all 2 ranks"),
            "{name}:\n{out}"
        );
        assert!(out.contains("distributed: 2 ranks"), "{name}:\n{out}");
        assert_eq!(fin(&out, "steps"), 8.0, "{name}");
        assert!(fin(&out, "val_loss").is_finite(), "{name}");
        // One report, from rank 0.
        assert_eq!(out.matches("final: ").count(), 1, "{name}:\n{out}");
    }
}

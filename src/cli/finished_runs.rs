//! Finished runs read back for `aotgrad dashboard DIR...`: what `--plot DIR` wrote
//! (`metrics.csv` and the pictures) and what `--tensorboard DIR` wrote (event files'
//! scalars, including PyTorch `SummaryWriter`'s `add_scalar`). A directory holding
//! neither but with such subdirectories (a TensorBoard log directory of runs) gives one
//! run per subdirectory.

use std::path::{Path, PathBuf};

use crate::dashboard::{RunData, SeriesData};

/// The largest picture read (a run directory is the user's; a stray huge file there
/// should not be held in memory).
const MAX_PICTURE: u64 = 16 << 20;

/// The runs in `dirs`, each named by its directory (made unique by its parent when
/// two share a name).
pub fn load(dirs: &[PathBuf]) -> Result<Vec<RunData>, String> {
    let mut runs = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            return Err(format!("{}: not a directory", dir.display()));
        }
        if let Some(r) = load_run(dir)? {
            runs.push(r);
            continue;
        }
        let subs = sorted_entries(dir, Path::is_dir)?;
        let before = runs.len();
        for s in subs {
            if let Some(r) = load_run(&s)? {
                runs.push(r);
            }
        }
        if runs.len() == before {
            return Err(format!(
                "{}: no metrics.csv or events.out.tfevents.* here or in its subdirectories \
                 (write them with --plot DIR or --tensorboard DIR)",
                dir.display()
            ));
        }
    }
    // Two runs of one name: tell them apart by their parent directory.
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for (i, r) in runs.iter_mut().enumerate() {
        if names.iter().filter(|n| **n == names[i]).count() > 1 {
            r.name = format!("{} #{}", r.name, i + 1);
        }
    }
    Ok(runs)
}

/// The paths in `dir` that `keep` accepts, sorted.
fn sorted_entries(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    Ok(paths)
}

fn load_run(dir: &Path) -> Result<Option<RunData>, String> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let files = sorted_entries(dir, Path::is_file)?;
    let csv = dir.join("metrics.csv");
    let events: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    let mut run = RunData {
        name,
        ..RunData::default()
    };
    if csv.is_file() {
        run.series = read_csv(&csv)?;
        run.meta.push(("source".into(), "metrics.csv".into()));
    } else if !events.is_empty() {
        // The event files' scalars by tag (a resumed run appends a file).
        for path in &events {
            let scalars = crate::cli::runlog::read_scalars(path).map_err(|e| e.to_string())?;
            for (tag, step, v) in scalars {
                match run.series.iter_mut().find(|(n, _)| *n == tag) {
                    Some((_, pts)) => pts.push([step as f64, v]),
                    None => run.series.push((tag, vec![[step as f64, v]])),
                }
            }
        }
        for (_, pts) in &mut run.series {
            pts.sort_by(|a, b| a[0].total_cmp(&b[0]));
        }
        run.meta
            .push(("source".into(), format!("{} event file(s)", events.len())));
    } else {
        return Ok(None);
    }
    for p in &files {
        let is_png = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
        let small = p.metadata().is_ok_and(|m| m.len() <= MAX_PICTURE);
        let Some(file) = p.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let safe = file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
            && !file.starts_with('.')
            && file.len() <= 100;
        if is_png && small && safe {
            let png = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            run.pictures.push((file, png));
        }
    }
    Ok(Some(run))
}

/// `metrics.csv` as series: `step`, `epoch`, then a column per value (empty = none).
fn read_csv(path: &Path) -> Result<SeriesData, String> {
    let err = |e: csv::Error| format!("{}: {e}", path.display());
    let mut r = csv::Reader::from_path(path).map_err(err)?;
    let header: Vec<String> = r.headers().map_err(err)?.iter().map(String::from).collect();
    if header.first().map(String::as_str) != Some("step") {
        return Err(format!(
            "{}: the first column is not `step` (not a --plot metrics.csv)",
            path.display()
        ));
    }
    let cols: Vec<usize> = (1..header.len())
        .filter(|&i| header[i] != "epoch")
        .collect();
    let mut series: SeriesData = cols
        .iter()
        .map(|&i| (header[i].clone(), Vec::new()))
        .collect();
    for (line, rec) in r.records().enumerate() {
        let rec = rec.map_err(err)?;
        let step: f64 = rec
            .get(0)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: row {}: no step", path.display(), line + 2))?;
        for (k, &i) in cols.iter().enumerate() {
            if let Some(v) = rec.get(i).filter(|s| !s.is_empty()) {
                let v: f64 = v.parse().map_err(|_| {
                    format!(
                        "{}: row {}: {v:?} is not a number",
                        path.display(),
                        line + 2
                    )
                })?;
                series[k].1.push([step, v]);
            }
        }
    }
    series.retain(|(_, p)| !p.is_empty());
    Ok(series)
}

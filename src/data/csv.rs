//! CSV files: numeric tables as tensors, and raw string tables for feature engineering.
//! Gzipped files (`.gz`) are read transparently.

use std::path::Path;

use aotgrad_runtime::Tensor;

use super::{DataError, read_maybe_gz};

/// A CSV file as strings: optional header and rows (quoted fields handled).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The index of a header column.
    pub fn column(&self, name: &str) -> Result<usize, DataError> {
        self.headers.iter().position(|h| h == name).ok_or_else(|| {
            DataError::Invalid(format!("no column {name:?} (have {:?})", self.headers))
        })
    }
}

/// Reads a CSV file as strings. With `header`, the first row names the columns.
pub fn read_table(path: &Path, header: bool) -> Result<Table, DataError> {
    let bytes = read_maybe_gz(path)?;
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(header)
        .from_reader(&bytes[..]);
    let err = |e: ::csv::Error| DataError::Csv {
        path: path.display().to_string(),
        line: e.position().map_or(0, |p| p.line()),
        reason: e.to_string(),
    };
    let headers = if header {
        rdr.headers()
            .map_err(err)?
            .iter()
            .map(str::to_string)
            .collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(err)?;
        rows.push(rec.iter().map(str::to_string).collect());
    }
    Ok(Table { headers, rows })
}

/// Reads a numeric CSV file into an `f32 [rows, cols]` tensor; a field that is not a
/// finite number is an error naming its line and column. `nan`, `inf` (which Rust's
/// float parser accepts) and values past f32's range are refused: a missing value must
/// be filled or dropped on purpose, not carried into training as NaN.
pub fn read_numeric(path: &Path, header: bool) -> Result<Tensor, DataError> {
    let t = read_table(path, header)?;
    let cols = t.rows.first().map_or(0, Vec::len);
    let mut vals = Vec::with_capacity(t.rows.len() * cols);
    let first_line = if header { 2 } else { 1 };
    for (r, row) in t.rows.iter().enumerate() {
        for (c, f) in row.iter().enumerate() {
            let bad = |what: &str| DataError::Csv {
                path: path.display().to_string(),
                line: (r + first_line) as u64,
                reason: match t.headers.get(c) {
                    Some(h) => format!("column {} ({h:?}) is {f:?}, {what}", c + 1),
                    None => format!("column {} is {f:?}, {what}", c + 1),
                },
            };
            let v: f32 = f.trim().parse().map_err(|_| bad("not a number"))?;
            if !v.is_finite() {
                return Err(bad(
                    "not a finite number (fill or drop missing values before loading)",
                ));
            }
            vals.push(v);
        }
    }
    Tensor::from_f32(&vals, &[t.rows.len(), cols]).map_err(|e| DataError::Invalid(e.to_string()))
}

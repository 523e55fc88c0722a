//! Reading numeric columns from CSV files with errors that name the file, row and column.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Named numeric columns read from a CSV file. Empty cells and `NaN`/`nan`/`NA` become NaN (a
/// gap the analyses skip and count); anything else that is not a number is an error.
pub struct Columns {
    /// One vector per requested column, in request order.
    pub values: Vec<Vec<f64>>,
}

/// Reads `columns` from the CSV file at `path` (header row required).
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<Columns> {
    read(path, None, columns).map(|(_, c)| c)
}

/// Reads `columns` split by the text of column `group`: one entry per distinct value, in the
/// order each first appears.
pub fn read_grouped(path: &Path, group: &str, columns: &[&str]) -> Result<Vec<(String, Columns)>> {
    let (labels, all) = read(path, Some(group), columns)?;
    let mut out: Vec<(String, Columns)> = Vec::new();
    for (row, label) in labels.into_iter().enumerate() {
        let at = match out.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                out.push((
                    label,
                    Columns {
                        values: vec![Vec::new(); columns.len()],
                    },
                ));
                out.len() - 1
            }
        };
        for (k, col) in all.values.iter().enumerate() {
            out[at].1.values[k].push(col[row]);
        }
    }
    Ok(out)
}

fn read(path: &Path, label: Option<&str>, columns: &[&str]) -> Result<(Vec<String>, Columns)> {
    let shown = path.display();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("{shown}: cannot open"))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{shown}: cannot read the header row"))?
        .clone();
    if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
        bail!("{shown}: the file is empty (a header row naming the columns is required)");
    }
    let mut idx = Vec::with_capacity(columns.len());
    let label_at = match label {
        Some(c) => Some(headers.iter().position(|h| h == c).ok_or_else(|| {
            anyhow::anyhow!(
                "{shown}: no column `{c}` in the header (columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })?),
        None => None,
    };
    let mut labels = Vec::new();
    for c in columns {
        match headers.iter().position(|h| h == *c) {
            Some(i) => idx.push(i),
            None => bail!(
                "{shown}: no column `{c}` in the header (columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let mut values = vec![Vec::new(); columns.len()];
    for (n, rec) in rdr.records().enumerate() {
        // Row numbers as a spreadsheet shows them: the header is row 1.
        let row = n + 2;
        let rec = rec.with_context(|| format!("{shown}: row {row}: malformed CSV"))?;
        if let Some(i) = label_at {
            labels.push(rec.get(i).unwrap_or("").to_string());
        }
        for (k, &i) in idx.iter().enumerate() {
            let cell = rec.get(i).unwrap_or("");
            let v = match cell {
                "" | "NaN" | "nan" | "NA" => f64::NAN,
                s => s.parse::<f64>().map_err(|_| {
                    anyhow::anyhow!(
                        "{shown}: row {row}, column `{}`: cannot parse `{s}` as a number",
                        columns[k]
                    )
                })?,
            };
            values[k].push(v);
        }
    }
    if values[0].is_empty() {
        bail!("{shown}: no data rows after the header");
    }
    Ok((labels, Columns { values }))
}

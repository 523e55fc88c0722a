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
    Ok(Columns { values })
}

//! SQL over the lake with DataFusion: every table registered by name, with the `date`
//! partition column from the directory names.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use kaiabc_schemas::Table;

use super::{ensure_layout, table_dir, LakeError};

/// How query results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header.
    Csv,
    /// JSON: one array of objects.
    Json,
}

/// An empty DataFusion session as every lake session starts: DataFusion's defaults, with
/// [`super::first_row::FirstRowPerPartition`], [`super::topk::PartitionTopK`] and the typed
/// `first_value`/`last_value` of [`super::first_last`] for latest-per-node queries and
/// [`super::date_trunc::UtcDateTrunc`] for grouping the lake's UTC times.
pub(crate) fn new_context() -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_optimizer_rule(Arc::new(super::first_row::FirstRowPerPartition))
        .with_physical_optimizer_rules(super::topk::physical_rules())
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_udf(super::date_trunc::UtcDateTrunc::udf());
    ctx.register_udaf(super::first_last::first_value_udaf().as_ref().clone());
    ctx.register_udaf(super::first_last::last_value_udaf().as_ref().clone());
    ctx
}

/// The schema a lake table is registered with: the table's own, with every string column read
/// as `Utf8View`. The files' strings are short (node ids, sensor types, reasons), so a view
/// holds them inline: decoding copies no bytes, and grouping and comparing them compares two
/// words instead of calling `memcmp` (the latest-per-node queries ×0.71, the hourly mean
/// ×0.77 in `lake_sql`). [`collect`] turns them back into `Utf8`, so no answer's types change.
pub(crate) fn scan_schema(t: Table) -> SchemaRef {
    retyped(&t.schema(), &DataType::Utf8, DataType::Utf8View)
}

/// `schema` with every field of type `from` of type `to`, its metadata kept.
fn retyped(schema: &Schema, from: &DataType, to: DataType) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if t == from => Arc::new(f.as_ref().clone().with_data_type(to.clone())),
            _ => Arc::clone(f),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batches` with each `Utf8View` column cast to `Utf8`: what every answer had before the
/// lake's strings were read as views, and what the exports and older readers expect.
fn without_views(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), LakeError> {
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &DataType::Utf8View)
    {
        return Ok((schema, batches));
    }
    let out = retyped(&schema, &DataType::Utf8View, DataType::Utf8);
    let batches = batches
        .into_iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .map(|c| match c.data_type() {
                    DataType::Utf8View => arrow::compute::cast(c, &DataType::Utf8),
                    _ => Ok(Arc::clone(c)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
        })
        .collect::<Result<Vec<_>, LakeError>>()?;
    Ok((out, batches))
}

/// A DataFusion session with every table of [`Table::ALL`] registered.
pub async fn session(root: &Path) -> Result<SessionContext, LakeError> {
    ensure_layout(root)?;
    let ctx = new_context();
    for t in Table::ALL {
        let dir = table_dir(root, t);
        let dir = std::fs::canonicalize(&dir).map_err(LakeError::io("resolve", &dir))?;
        let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Date32)]);
        let url = format!("{}/", dir.display());
        ctx.register_listing_table(t.name(), url, opts, Some(scan_schema(t)), None)
            .await?;
    }
    Ok(ctx)
}

/// Runs one SQL statement over the lake; the result has at least one (perhaps empty) batch.
pub async fn query(root: &Path, sql: &str) -> Result<Vec<RecordBatch>, LakeError> {
    collect(&session(root).await?, sql).await
}

/// Runs one SQL statement in a session over a lake (a directory's, or a bucket's); the result
/// has at least one (perhaps empty) batch.
pub async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, LakeError> {
    let df = ctx.sql(sql).await?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let (schema, mut batches) = without_views(schema, df.collect().await?)?;
    // An empty result still carries its columns (a CSV header, a Parquet schema).
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// Query results as one zstd-compressed Parquet file in memory (an export's download).
pub fn parquet_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>, LakeError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let perr = |source| LakeError::Parquet {
        path: "<export>".into(),
        source,
    };
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, first.schema(), Some(props))
        .map_err(perr)?;
    for b in batches {
        w.write(b).map_err(perr)?;
    }
    w.close().map_err(perr)?;
    Ok(out)
}

/// Writes query results in `format`.
pub fn write_batches(
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> Result<(), LakeError> {
    match format {
        OutputFormat::Table => {
            let text = arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{text}").map_err(LakeError::io("write", Path::new("<stdout>")))?;
        }
        OutputFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut w = arrow::json::ArrayWriter::new(out);
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            w.write_batches(&refs)?;
            w.finish()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{LakeConfig, LakeRow, LakeWriter};
    use crate::sink::Sink;
    use kaiabc_schemas::{parse_timestamp, DeadLetter, Reason, Rejection};

    #[tokio::test]
    async fn sql_sees_committed_rows_with_their_date_partition() {
        let dir = tempfile::tempdir().unwrap();
        // An empty lake answers with zero rows, not an error.
        let b = query(dir.path(), "SELECT count(*) AS n FROM readings")
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&b)
            .unwrap()
            .to_string();
        assert!(text.contains("| 0 |"), "{text}");
        let mut w = LakeWriter::new(LakeConfig::at(dir.path()), 0).unwrap();
        let at = parse_timestamp("2025-07-01T10:00:00Z").unwrap();
        let dl = DeadLetter::new(
            at,
            "file:x.csv:3",
            b"garbage",
            Rejection::new(Reason::ParseError, "bad"),
        );
        w.process(&mut vec![LakeRow::DeadLetter(dl)]).unwrap();
        w.checkpoint().unwrap();
        w.commit().unwrap();
        let b = query(
            dir.path(),
            "SELECT reason, source, CAST(date AS VARCHAR) AS d FROM dead_letters",
        )
        .await
        .unwrap();
        // The files' strings are scanned as views, but answered as `Utf8`, empty or not.
        assert_eq!(b[0].schema().field(0).data_type(), &DataType::Utf8);
        let none = query(dir.path(), "SELECT node_id FROM readings WHERE false")
            .await
            .unwrap();
        assert_eq!(none[0].schema().field(0).data_type(), &DataType::Utf8);
        let mut out = Vec::new();
        write_batches(&b, OutputFormat::Csv, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "reason,source,d\nPARSE_ERROR,file:x.csv:3,2025-07-01\n"
        );
        let e = query(dir.path(), "SELECT nope FROM readings")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}

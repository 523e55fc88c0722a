//! Sensor-log files (CSV, JSONL, Parquet), read line by line into raw readings, each with its
//! line number and payload so that a bad line becomes a dead letter instead of an error.

mod csv_line;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use kaiabc_schemas::{format_timestamp, RawReading, RawValues, Rejection};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub use csv_line::CsvColumns;

/// A log's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A header with the reading's field names, then one reading per line.
    Csv,
    /// One JSON reading per line (the API's field names, RFC 3339 UTC timestamps).
    Jsonl,
    /// A Parquet file with the reading's field names as columns.
    Parquet,
}

impl Format {
    /// From a name: `csv`, `jsonl` (or `json`, `ndjson`), `parquet`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "json" | "ndjson" => Some(Format::Jsonl),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// From a file's extension.
    pub fn infer(path: &Path) -> Option<Self> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Self::parse)
    }
}

/// Errors that stop reading a file (a bad *line* never does).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV header lacks a required column.
    #[error("{path}: the CSV header {header:?} lacks column {missing}")]
    Header {
        /// The file.
        path: PathBuf,
        /// The header line.
        header: String,
        /// The missing column.
        missing: &'static str,
    },
    /// The Parquet file could not be read or lacks a required column.
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One record of a log as read: its 1-based line (the CSV header is line 1; for Parquet, the
/// row number), its bytes and what they parsed to.
pub struct LogRecord<'a> {
    /// Line number (1-based).
    pub line: u64,
    /// The record's bytes (for Parquet, the row rendered as JSON).
    pub payload: &'a [u8],
    /// The parse result; validation comes after.
    pub parsed: Result<RawReading, Rejection>,
}

/// Reads every record of `path` in order and hands it to `f`. Blank lines are skipped.
pub fn read_log(
    path: &Path,
    format: Format,
    mut f: impl FnMut(LogRecord<'_>),
) -> Result<u64, FileError> {
    let parser = LineParser::open(path, format)?;
    read_records(path, format, |rec| {
        let parsed = match (rec.parsed, &parser) {
            (Some(parsed), _) => parsed,
            (None, Some(p)) => p.parse(rec.payload),
            (None, None) => unreachable!("text logs have a line parser"),
        };
        f(LogRecord {
            line: rec.line,
            payload: rec.payload,
            parsed,
        })
    })
}

/// One record as read, before a text line is parsed: parsing can then happen elsewhere (on the
/// worker that owns the record's node) with the file's [`LineParser`].
pub struct RawRecord<'a> {
    /// Line number (1-based; see [`LogRecord::line`]).
    pub line: u64,
    /// The record's bytes (for Parquet, the row rendered as JSON).
    pub payload: &'a [u8],
    /// Parquet rows come parsed; text lines do not.
    pub parsed: Option<Result<RawReading, Rejection>>,
}

/// How a text log's lines become raw readings: the CSV header's column positions, or JSON.
#[derive(Clone, Debug)]
pub enum LineParser {
    /// CSV with these columns.
    Csv(CsvColumns),
    /// One JSON object per line.
    Jsonl,
}

/// The node id and timestamp text of a line, found without parsing the rest.
#[derive(Debug, Default, PartialEq)]
pub struct Peek<'a> {
    /// The node id as the full parse will see it, if present.
    pub node_id: Option<std::borrow::Cow<'a, str>>,
    /// The timestamp text, if present.
    pub timestamp: Option<std::borrow::Cow<'a, str>>,
}

impl LineParser {
    /// The parser for a log: reads a CSV file's header (an error names a missing required
    /// column); `None` for Parquet, whose rows come parsed.
    pub fn open(path: &Path, format: Format) -> Result<Option<Self>, FileError> {
        match format {
            Format::Parquet => Ok(None),
            Format::Jsonl => Ok(Some(LineParser::Jsonl)),
            Format::Csv => {
                let io = |source| FileError::Io {
                    path: path.to_path_buf(),
                    source,
                };
                let mut r = BufReader::new(File::open(path).map_err(io)?);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    if r.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                        // An empty file has no records; any header will do.
                        return Ok(Some(LineParser::Csv(CsvColumns::empty())));
                    }
                    let bytes = trim_eol(&buf);
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return CsvColumns::from_header(bytes)
                        .map(|c| Some(LineParser::Csv(c)))
                        .map_err(|missing| FileError::Header {
                            path: path.to_path_buf(),
                            header: String::from_utf8_lossy(bytes).into_owned(),
                            missing,
                        });
                }
            }
        }
    }

    /// Parses one line.
    pub fn parse(&self, bytes: &[u8]) -> Result<RawReading, Rejection> {
        match self {
            LineParser::Csv(c) => c.parse(bytes),
            LineParser::Jsonl => RawReading::from_json(bytes),
        }
    }

    /// The line's node id and timestamp text, at a fraction of a full parse's cost.
    pub fn peek<'a>(&self, bytes: &'a [u8]) -> Peek<'a> {
        match self {
            LineParser::Csv(c) => c.peek(bytes),
            LineParser::Jsonl => {
                #[derive(serde::Deserialize)]
                struct Fields<'a> {
                    #[serde(borrow, default)]
                    node_id: Option<std::borrow::Cow<'a, str>>,
                    #[serde(borrow, default)]
                    timestamp: Option<std::borrow::Cow<'a, str>>,
                }
                serde_json::from_slice::<Fields<'_>>(bytes)
                    .map(|f| Peek {
                        node_id: f.node_id,
                        timestamp: f.timestamp,
                    })
                    .unwrap_or_default()
            }
        }
    }
}

fn trim_eol(mut bytes: &[u8]) -> &[u8] {
    while let Some((last, rest)) = bytes.split_last() {
        if *last == b'\n' || *last == b'\r' {
            bytes = rest;
        } else {
            break;
        }
    }
    bytes
}

/// Reads every record of `path` in order, leaving text lines unparsed. Blank lines and the
/// CSV header are skipped.
pub fn read_records(
    path: &Path,
    format: Format,
    mut f: impl FnMut(RawRecord<'_>),
) -> Result<u64, FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match format {
        Format::Parquet => read_parquet(path, |rec| {
            f(RawRecord {
                line: rec.line,
                payload: rec.payload,
                parsed: Some(rec.parsed),
            })
        }),
        Format::Csv | Format::Jsonl => {
            let file = File::open(path).map_err(io)?;
            let mut r = BufReader::with_capacity(1 << 20, file);
            let mut buf = Vec::with_capacity(256);
            let mut line = 0u64;
            let mut records = 0u64;
            let mut header = format == Format::Csv;
            loop {
                buf.clear();
                if r.read_until(b'\n', &mut buf).map_err(io)? == 0 {
                    break;
                }
                line += 1;
                let bytes = trim_eol(&buf);
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if std::mem::take(&mut header) {
                    continue;
                }
                records += 1;
                f(RawRecord {
                    line,
                    payload: bytes,
                    parsed: None,
                });
            }
            Ok(records)
        }
    }
}

fn read_parquet(path: &Path, mut f: impl FnMut(LogRecord<'_>)) -> Result<u64, FileError> {
    let err = |message: String| FileError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| err(e.to_string()))?;
    let mut row = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        let cols = ParquetColumns::new(&batch).map_err(err)?;
        for i in 0..batch.num_rows() {
            row += 1;
            let raw = cols.row(i);
            let payload = serde_json::to_vec(&raw).unwrap_or_default();
            f(LogRecord {
                line: row,
                payload: &payload,
                parsed: Ok(raw),
            });
        }
    }
    Ok(row)
}

/// A batch's columns cast to the types of [`RawReading`].
struct ParquetColumns {
    node_id: Option<arrow::array::ArrayRef>,
    seq: Option<arrow::array::ArrayRef>,
    timestamp: Option<arrow::array::ArrayRef>,
    floats: [Option<arrow::array::ArrayRef>; 7],
    sensor_type: Option<arrow::array::ArrayRef>,
    quality: Option<arrow::array::ArrayRef>,
}

const FLOAT_COLUMNS: [&str; 7] = [
    "temperature_kelvin",
    "humidity_percent",
    "pressure_pa",
    "light_lux",
    "raw_temperature",
    "raw_humidity",
    "raw_pressure",
];

impl ParquetColumns {
    fn new(batch: &RecordBatch) -> Result<Self, String> {
        let get = |name: &str, ty: &DataType| -> Result<Option<arrow::array::ArrayRef>, String> {
            batch
                .column_by_name(name)
                .map(|c| cast(c, ty).map_err(|e| format!("column {name}: {e}")))
                .transpose()
        };
        let timestamp = match batch.column_by_name("timestamp") {
            Some(c) if matches!(c.data_type(), DataType::Timestamp(_, _)) => Some(
                cast(
                    c,
                    &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                )
                .map_err(|e| format!("column timestamp: {e}"))?,
            ),
            Some(_) => get("timestamp", &DataType::Utf8)?,
            None => None,
        };
        let mut floats: [Option<arrow::array::ArrayRef>; 7] = Default::default();
        for (slot, name) in floats.iter_mut().zip(FLOAT_COLUMNS) {
            *slot = get(name, &DataType::Float64)?;
        }
        Ok(Self {
            node_id: get("node_id", &DataType::Utf8)?,
            seq: get("seq", &DataType::Int64)?,
            timestamp,
            floats,
            sensor_type: get("sensor_type", &DataType::Utf8)?,
            quality: get("quality", &DataType::Utf8)?,
        })
    }

    fn row(&self, i: usize) -> RawReading {
        let s = |c: &Option<arrow::array::ArrayRef>| {
            c.as_ref()
                .filter(|a| a.is_valid(i))
                .map(|a| a.as_string::<i32>().value(i).to_string())
        };
        let fl = |k: usize| {
            self.floats[k]
                .as_ref()
                .filter(|a| a.is_valid(i))
                .map(|a| a.as_primitive::<arrow::datatypes::Float64Type>().value(i))
        };
        let timestamp =
            self.timestamp
                .as_ref()
                .filter(|a| a.is_valid(i))
                .map(|a| match a.data_type() {
                    DataType::Timestamp(_, _) => {
                        let us = a
                            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                            .value(i);
                        chrono::DateTime::from_timestamp_micros(us)
                            .map(|t| format_timestamp(&t))
                            .unwrap_or_default()
                    }
                    _ => a.as_string::<i32>().value(i).to_string(),
                });
        let raw = [fl(4), fl(5), fl(6)];
        RawReading {
            node_id: s(&self.node_id),
            seq: self
                .seq
                .as_ref()
                .filter(|a| a.is_valid(i))
                .map(|a| a.as_primitive::<arrow::datatypes::Int64Type>().value(i)),
            timestamp,
            temperature_kelvin: fl(0),
            humidity_percent: fl(1),
            pressure_pa: fl(2),
            light_lux: fl(3),
            sensor_type: s(&self.sensor_type),
            quality: s(&self.quality),
            raw_values: raw.iter().any(Option::is_some).then_some(RawValues {
                temperature: raw[0],
                humidity: raw[1],
                pressure: raw[2],
            }),
            raw_value: None,
            firmware_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kaiabc_schemas::Reason;

    fn collect(text: &str, format: Format) -> Vec<(u64, String, Result<RawReading, Reason>)> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, text).unwrap();
        let mut out = Vec::new();
        read_log(&p, format, |r| {
            out.push((
                r.line,
                String::from_utf8_lossy(r.payload).into_owned(),
                r.parsed.map_err(|e| e.reason),
            ))
        })
        .unwrap();
        out
    }

    #[test]
    fn csv_lines_keep_their_numbers_and_bad_lines_do_not_stop_the_file() {
        let text = "node_id,seq,timestamp,temperature_kelvin,humidity_percent,pressure_pa,light_lux,sensor_type,quality\r\n\
            a,1,2025-07-01T00:00:00Z,300.5,,101000,,BME280,good\r\n\
            \r\n\
            a,2,2025-07-01T00:05:00Z,warm,,,,BME280,good\n\
            a,3,2025-07-01T00:10:00Z\n\
            \"b\",4,2025-07-01T00:15:00Z,301,50,101000,3.5,BME280,fair\n";
        let rows = collect(text, Format::Csv);
        assert_eq!(rows.len(), 4);
        let (line, payload, first) = &rows[0];
        assert_eq!(*line, 2);
        assert!(payload.ends_with("good"), "CR/LF trimmed: {payload:?}");
        let first = first.as_ref().unwrap();
        assert_eq!(first.temperature_kelvin, Some(300.5));
        assert_eq!(first.humidity_percent, None);
        assert_eq!(first.pressure_pa, Some(101000.0));
        assert_eq!(rows[1].0, 4);
        assert_eq!(rows[1].2, Err(Reason::ParseError));
        assert_eq!(rows[2].2, Err(Reason::ParseError));
        let quoted = rows[3].2.as_ref().unwrap();
        assert_eq!(quoted.node_id.as_deref(), Some("b"));
        assert_eq!(quoted.light_lux, Some(3.5));
        assert_eq!(quoted.quality.as_deref(), Some("fair"));
    }

    #[test]
    fn a_csv_without_required_columns_is_a_file_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "node,when,temp\na,b,c\n").unwrap();
        let e = read_log(&p, Format::Csv, |_| {}).unwrap_err();
        assert!(e.to_string().contains("node_id"), "{e}");
    }

    #[test]
    fn jsonl_lines_parse_independently() {
        let text = "{\"node_id\":\"a\",\"timestamp\":\"2025-07-01T00:00:00Z\",\"temperature_kelvin\":300}\n\
                    {\"node_id\":\"a\",\n\
                    {\"node_id\":\"a\",\"timestamp\":\"2025-07-01T00:01:00Z\",\"temperature_kelvin\":301,\"raw_values\":{\"temperature\":27.85}}\n";
        let rows = collect(text, Format::Jsonl);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].2.is_ok());
        assert_eq!(rows[1].2, Err(Reason::ParseError));
        assert_eq!(
            rows[2]
                .2
                .as_ref()
                .unwrap()
                .raw_values
                .as_ref()
                .unwrap()
                .temperature,
            Some(27.85)
        );
    }

    #[test]
    fn parquet_logs_are_read_by_column_name_with_timestamp_or_text_times() {
        use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, batch: RecordBatch| {
            let p = dir.path().join(name);
            let f = File::create(&p).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            p
        };
        // Times as a millisecond timestamp column (converted), and a null temperature.
        let typed = RecordBatch::try_from_iter(vec![
            ("node_id", Arc::new(StringArray::from(vec!["a", "b"])) as _),
            ("seq", Arc::new(Int64Array::from(vec![Some(1), None])) as _),
            (
                "timestamp",
                Arc::new(
                    TimestampMillisecondArray::from(vec![1_751_328_000_123, 1_751_328_060_000])
                        .with_timezone("UTC"),
                ) as _,
            ),
            (
                "temperature_kelvin",
                Arc::new(Float64Array::from(vec![Some(300.5), None])) as _,
            ),
        ])
        .unwrap();
        let mut rows = Vec::new();
        read_log(&write("typed.parquet", typed), Format::Parquet, |r| {
            rows.push((
                r.line,
                r.parsed.unwrap(),
                String::from_utf8_lossy(r.payload).into_owned(),
            ))
        })
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, 1);
        assert_eq!(
            rows[0].1.timestamp.as_deref(),
            Some("2025-07-01T00:00:00.123000Z")
        );
        assert_eq!(rows[0].1.seq, Some(1));
        assert_eq!(rows[1].1.temperature_kelvin, None);
        assert!(
            rows[1].2.contains("\"node_id\":\"b\""),
            "payload is the row as JSON"
        );
        let missing = rows[1].1.clone().validate(chrono::Utc::now()).unwrap_err();
        assert_eq!(missing.reason, Reason::MissingField);
        // Times as text are passed through for validation.
        let text = RecordBatch::try_from_iter(vec![
            ("node_id", Arc::new(StringArray::from(vec!["c"])) as _),
            (
                "timestamp",
                Arc::new(StringArray::from(vec!["2025-07-01T00:00:00Z"])) as _,
            ),
            (
                "temperature_kelvin",
                Arc::new(Float64Array::from(vec![301.0])) as _,
            ),
        ])
        .unwrap();
        let mut got = None;
        read_log(&write("text.parquet", text), Format::Parquet, |r| {
            got = Some(r.parsed.unwrap())
        })
        .unwrap();
        let r = got.unwrap().validate(chrono::Utc::now()).unwrap();
        assert_eq!(r.node_id, "c");
        assert_eq!(r.temperature_kelvin, 301.0);
    }

    #[test]
    fn formats_are_inferred_from_extensions() {
        assert_eq!(Format::infer(Path::new("a/b.csv")), Some(Format::Csv));
        assert_eq!(Format::infer(Path::new("b.jsonl")), Some(Format::Jsonl));
        assert_eq!(Format::infer(Path::new("b.parquet")), Some(Format::Parquet));
        assert_eq!(Format::infer(Path::new("b.txt")), None);
    }
}

//! Exact lookups of reading keys in the lake's files, for the keys a node's summary cannot rule
//! out: the day's committed `readings` files and the files its own writer has staged, narrowed
//! by each row group's node and time statistics, with the decoded keys of recent row groups
//! kept in a cache bounded by rows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, Int64Array, StringArray, TimestampMicrosecondArray};
use kaiabc_schemas::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

use super::record::date_of;
use super::{staging_dir, table_dir, LakeError};

/// Decoded keys kept by default: about 30 MB.
pub const DEFAULT_CACHED_ROWS: usize = 1_000_000;

/// A listing is trusted while its directory's mtime is unchanged, once that mtime is this much
/// older than the listing: file systems stamp times in coarse ticks, so a change within the
/// same tick as the listing would not show.
const SETTLED: Duration = Duration::from_secs(1);

/// A seq of `None`, as stored in the cache.
const NO_SEQ: i64 = i64::MIN;

/// What a row group's statistics say it holds.
#[derive(Clone, Debug)]
struct GroupRange {
    /// Lowest and highest node id (`None`: no statistics, so anything).
    nodes: Option<(String, String)>,
    /// Earliest and latest timestamp, µs.
    time: Option<(i64, i64)>,
}

impl GroupRange {
    fn may_hold(&self, node: &str, micros: i64) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|(a, b)| a.as_str() <= node && node <= b.as_str())
            && self.time.is_none_or(|(a, b)| (a..=b).contains(&micros))
    }
}

/// A directory's files as last listed.
struct Listing {
    mtime: SystemTime,
    taken: SystemTime,
    files: Vec<PathBuf>,
}

/// One row group's keys, per node.
type GroupKeys = HashMap<String, HashSet<(i64, i64)>>;

/// Looks reading keys up in one worker's view of the lake (see the module docs).
pub struct ReadingLookup {
    root: PathBuf,
    /// Staged files of this writer only: `readings.part-{run}-`; a crashed run's leftovers
    /// were never committed, so they do not count.
    staged_prefix: String,
    listings: HashMap<PathBuf, Listing>,
    footers: HashMap<PathBuf, Arc<Vec<GroupRange>>>,
    groups: HashMap<(PathBuf, usize), GroupKeys>,
    /// Cached groups, oldest first, with their rows.
    order: VecDeque<((PathBuf, usize), usize)>,
    rows: usize,
    budget: usize,
}

impl std::fmt::Debug for ReadingLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadingLookup")
            .field("root", &self.root)
            .field("cached_rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ReadingLookup {
    /// Lookups under `root`, counting the files staged by the writer whose run id is `run_id`
    /// ([`super::LakeWriter::run_id`]), with up to `cached_rows` decoded keys kept.
    pub fn new(root: &Path, run_id: &str, cached_rows: usize) -> Self {
        Self {
            root: root.to_path_buf(),
            staged_prefix: format!("{}.part-{run_id}-", Table::Readings.name()),
            listings: HashMap::new(),
            footers: HashMap::new(),
            groups: HashMap::new(),
            order: VecDeque::new(),
            rows: 0,
            budget: cached_rows.max(1),
        }
    }

    /// Whether a file holds a reading of `node` at `micros` with `seq`.
    pub fn holds(&mut self, node: &str, micros: i64, seq: Option<i64>) -> Result<bool, LakeError> {
        let staging = staging_dir(&self.root);
        let partition = table_dir(&self.root, Table::Readings)
            .join(format!("date={}", date_of(micros).format("%Y-%m-%d")));
        // Staging first: a file renamed out of it after this listing is in the partition's,
        // taken after.
        let prefix = self.staged_prefix.clone();
        let staged = self.list(&staging, |n| n.starts_with(&prefix) && n.ends_with(".tmp"))?;
        let committed = self.list(&partition, |n| n.ends_with(".parquet"))?;
        let key = (micros, seq.unwrap_or(NO_SEQ));
        for path in staged.iter().chain(&committed) {
            let Some(groups) = self.footer(path)? else {
                continue;
            };
            for (i, g) in groups.iter().enumerate() {
                if !g.may_hold(node, micros) {
                    continue;
                }
                let Some(keys) = self.group(path, i)? else {
                    break;
                };
                if keys.get(node).is_some_and(|k| k.contains(&key)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// The files of `dir` whose names pass `keep` (none if it does not exist).
    fn list(&mut self, dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, LakeError> {
        let mtime = match std::fs::metadata(dir).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LakeError::io("stat", dir)(e)),
        };
        if let Some(l) = self.listings.get(dir) {
            let settled = l.taken.duration_since(l.mtime).is_ok_and(|d| d > SETTLED);
            if l.mtime == mtime && settled {
                return Ok(l.files.clone());
            }
        }
        let taken = SystemTime::now();
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir).map_err(LakeError::io("list", dir))? {
            let e = e.map_err(LakeError::io("list", dir))?;
            if e.file_name().to_str().is_some_and(&keep) {
                files.push(e.path());
            }
        }
        files.sort();
        // Footers of files no longer listed here (renamed or removed) are dropped.
        if let Some(old) = self.listings.get(dir) {
            for f in &old.files {
                if files.binary_search(f).is_err() {
                    self.footers.remove(f);
                }
            }
        }
        self.listings.insert(
            dir.to_path_buf(),
            Listing {
                mtime,
                taken,
                files: files.clone(),
            },
        );
        Ok(files)
    }

    /// The row groups' ranges of a file; `None` if it is gone (renamed since it was listed) or,
    /// for a staged file, not yet complete.
    fn footer(&mut self, path: &Path) -> Result<Option<Arc<Vec<GroupRange>>>, LakeError> {
        if let Some(f) = self.footers.get(path) {
            return Ok(Some(Arc::clone(f)));
        }
        let staged = path.extension().is_some_and(|e| e == "tmp");
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LakeError::io("open", path)(e)),
        };
        let meta = match ParquetRecordBatchReaderBuilder::try_new(file) {
            Ok(b) => Arc::clone(b.metadata()),
            // Its writer is still writing it: what it holds is still pending in the nodes.
            Err(_) if staged => return Ok(None),
            Err(source) => {
                return Err(LakeError::Parquet {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let ranges = Arc::new(ranges(&meta));
        self.footers.insert(path.to_path_buf(), Arc::clone(&ranges));
        Ok(Some(ranges))
    }

    /// The keys of row group `i` of `path` (decoded once, then cached); `None` if the file is
    /// gone.
    fn group(&mut self, path: &Path, i: usize) -> Result<Option<&GroupKeys>, LakeError> {
        let id = (path.to_path_buf(), i);
        if !self.groups.contains_key(&id) {
            let Some((keys, rows)) = decode(path, i)? else {
                return Ok(None);
            };
            while self.rows + rows > self.budget {
                let Some((old, n)) = self.order.pop_front() else {
                    break;
                };
                self.groups.remove(&old);
                self.rows -= n;
            }
            self.rows += rows;
            self.order.push_back((id.clone(), rows));
            self.groups.insert(id.clone(), keys);
        }
        Ok(self.groups.get(&id))
    }

    /// Decoded keys held in the cache.
    pub fn cached_rows(&self) -> usize {
        self.rows
    }
}

/// Each row group's node and time ranges from its statistics.
fn ranges(meta: &ParquetMetaData) -> Vec<GroupRange> {
    let schema = meta.file_metadata().schema_descr();
    let index = |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
    let (node_col, ts_col) = (index("node_id"), index("timestamp"));
    meta.row_groups()
        .iter()
        .map(|rg| {
            let nodes = node_col.and_then(|c| match rg.column(c).statistics() {
                Some(Statistics::ByteArray(s)) => {
                    let min = std::str::from_utf8(s.min_opt()?.data()).ok()?;
                    let max = std::str::from_utf8(s.max_opt()?.data()).ok()?;
                    Some((min.to_string(), max.to_string()))
                }
                _ => None,
            });
            let time = ts_col.and_then(|c| match rg.column(c).statistics() {
                Some(Statistics::Int64(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
                _ => None,
            });
            GroupRange { nodes, time }
        })
        .collect()
}

/// Reads the keys of row group `i` of `path`, with its row count; `None` if the file is gone.
fn decode(path: &Path, i: usize) -> Result<Option<(GroupKeys, usize)>, LakeError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LakeError::io("open", path)(e)),
    };
    let pq = |source| LakeError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(pq)?;
    let mask = ProjectionMask::columns(b.parquet_schema(), ["node_id", "seq", "timestamp"]);
    let reader = b
        .with_projection(mask)
        .with_row_groups(vec![i])
        .build()
        .map_err(pq)?;
    let mut keys = GroupKeys::new();
    let mut rows = 0;
    for batch in reader {
        let batch = batch.map_err(LakeError::Arrow)?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| LakeError::Config(format!("{} lacks column {name}", path.display())))
        };
        let (node, seq, ts) = (column("node_id")?, column("seq")?, column("timestamp")?);
        let wrong =
            || LakeError::Config(format!("{}: unexpected key column types", path.display()));
        let node = node
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(wrong)?;
        let seq = seq
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(wrong)?;
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(wrong)?;
        rows += batch.num_rows();
        for r in 0..batch.num_rows() {
            let s = if seq.is_null(r) { NO_SEQ } else { seq.value(r) };
            let id = node.value(r);
            match keys.get_mut(id) {
                Some(set) => {
                    set.insert((ts.value(r), s));
                }
                None => {
                    keys.insert(id.to_string(), HashSet::from([(ts.value(r), s)]));
                }
            }
        }
    }
    Ok(Some((keys, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{LakeConfig, LakeRow, LakeWriter};
    use crate::sink::Sink;
    use kaiabc_schemas::{parse_timestamp, Quality, ReadingRow, SensorReading};

    fn reading(node: &str, ts: &str, seq: Option<i64>) -> LakeRow {
        LakeRow::Reading(ReadingRow {
            reading: SensorReading {
                node_id: node.into(),
                seq,
                timestamp: parse_timestamp(ts).unwrap(),
                temperature_kelvin: 300.0,
                humidity_percent: None,
                pressure_pa: None,
                light_lux: None,
                sensor_type: "BME280".into(),
                quality: Quality::Good,
                raw_values: None,
                firmware_version: None,
            },
            filtered_temperature_kelvin: None,
            kalman_variance: None,
            late: false,
            filtered_humidity_percent: None,
            filtered_pressure_pa: None,
            filter: None,
        })
    }

    fn micros(ts: &str) -> i64 {
        parse_timestamp(ts).unwrap().timestamp_micros()
    }

    #[test]
    fn finds_staged_then_committed_keys_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LakeConfig::at(dir.path());
        cfg.row_group_rows = 2;
        let mut w = LakeWriter::new(cfg, 0).unwrap();
        let mut look = ReadingLookup::new(dir.path(), w.run_id(), 10);
        let t = "2025-07-01T10:00:00Z";
        let mut rows = vec![
            reading("a", t, Some(1)),
            reading("b", t, Some(1)),
            reading("c", t, None),
            reading("c", "2025-07-01T10:01:00Z", Some(2)),
        ];
        w.process(&mut rows).unwrap();
        assert!(
            !look.holds("a", micros(t), Some(1)).unwrap(),
            "only buffered"
        );
        w.checkpoint().unwrap();
        assert!(look.holds("a", micros(t), Some(1)).unwrap(), "staged");
        w.commit().unwrap();
        assert!(look.holds("a", micros(t), Some(1)).unwrap(), "committed");
        assert!(look.holds("c", micros(t), None).unwrap());
        assert!(!look.holds("c", micros(t), Some(1)).unwrap(), "another seq");
        assert!(!look.holds("a", micros(t), Some(2)).unwrap());
        assert!(!look
            .holds("a", micros("2025-07-02T10:00:00Z"), Some(1))
            .unwrap());
        assert!(look.cached_rows() <= 10);
        // Another writer's staged file (a crashed run's) does not count.
        let mut other = LakeWriter::new(LakeConfig::at(dir.path()), 1).unwrap();
        other.process(&mut vec![reading("z", t, Some(9))]).unwrap();
        other.checkpoint().unwrap();
        assert!(!look.holds("z", micros(t), Some(9)).unwrap());
    }
}

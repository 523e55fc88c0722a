//! The lake's writer: buffers rows per table and day, stages sorted zstd Parquet files under
//! `_staging/` (fsynced) and commits them by renaming them into their partitions.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use chrono::{NaiveDate, Utc};
use kaiabc_schemas::{
    AlertRow, DeadLetter, FleetSnapshot, OscillatorState, PhaseShiftReport, ReadingRow,
    RhythmWindow, Table,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::ZstdLevel;
use parquet::file::properties::WriterProperties;

use super::encoding::{round_computed, table_properties};
use super::record::{date_of, Columns, LakeRecord, LakeRow};
use super::{ensure_layout, staging_dir, table_dir, LakeError};
use crate::sink::{CommitSummary, Sink};

/// How the lake is written.
#[derive(Clone, Debug, PartialEq)]
pub struct LakeConfig {
    /// The lake's root directory.
    pub root: PathBuf,
    /// A partition's buffer is written out as a file when it reaches this many rows (and at the
    /// per-day roll at the watermark). Every worker holds up to this many rows of each table
    /// while it sorts them: 256 Ki rows kept a 2 000-node replay under 600 MB where 1 M took
    /// 1.2 GB, and was 12 % faster; 128 Ki (one row group a file) keeps it under 460 MB with
    /// the replay's allocator keeping freed memory, for 1.8 % more bytes (DEVELOPERS.md "The
    /// lake's encodings").
    pub max_rows_per_file: usize,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level (1–22). With computed doubles rounded, 3 writes 5 % less than 1 for 1 % more
    /// time in a replay; higher levels were no smaller.
    pub zstd_level: i32,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("data/lake"),
            max_rows_per_file: 131_072,
            row_group_rows: 128 * 1024,
            zstd_level: 3,
        }
    }
}

impl LakeConfig {
    /// A default configuration rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            ..Self::default()
        }
    }
}

/// Rows of one table, per `date=` partition.
struct Buffer<R: LakeRecord> {
    parts: BTreeMap<NaiveDate, Part<R>>,
    /// Rows of the last file staged: the expected size of the next one.
    hint: usize,
    /// The last row's day (days since the epoch) and its date: rows come a day at a time, and
    /// chrono's date of every row was 1 % of a replay.
    last_day: Option<(i64, NaiveDate)>,
}

impl<R: LakeRecord> Default for Buffer<R> {
    fn default() -> Self {
        Self {
            parts: BTreeMap::new(),
            hint: 0,
            last_day: None,
        }
    }
}

impl<R: LakeRecord> Buffer<R> {
    /// The `date=` partition of a row at `micros`.
    fn date(&mut self, micros: i64) -> NaiveDate {
        const MICROS_PER_DAY: i64 = 86_400_000_000;
        let day = micros.div_euclid(MICROS_PER_DAY);
        match self.last_day {
            Some((d, date)) if d == day => date,
            _ => {
                let date = date_of(micros);
                self.last_day = Some((day, date));
                date
            }
        }
    }
}

/// One partition's rows: their columns in arrival order, and their sort keys with the key's
/// strings interned, so sorting compares integers and buffering allocates no string per row.
struct Part<R: LakeRecord> {
    columns: R::Columns,
    keys: Vec<(u32, i64, u32)>,
    first: Interner,
    third: Interner,
}

impl<R: LakeRecord> Default for Part<R> {
    fn default() -> Self {
        Self {
            columns: R::Columns::default(),
            keys: Vec::new(),
            first: Interner::default(),
            third: Interner::default(),
        }
    }
}

impl<R: LakeRecord> Part<R> {
    fn with_capacity(rows: usize) -> Self {
        Self {
            columns: R::Columns::with_capacity(rows),
            keys: Vec::with_capacity(rows),
            ..Self::default()
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn push(&mut self, row: &R) {
        let (a, t, c) = row.sort_key();
        let key = (self.first.id(a), t, self.third.id(c));
        self.keys.push(key);
        self.columns.push(row);
    }

    /// The rows as one batch sorted by key (ties keep arrival order).
    ///
    /// A counting sort on the first key's rank, then each run sorted by (time, tie-break) only
    /// if it is not in order already: rows of a node mostly arrive in time order, so this is
    /// linear where a comparison sort of the whole part was 4 % of a replay.
    fn sorted_batch(mut self) -> Result<RecordBatch, LakeError> {
        let first = self.first.ranks();
        let third = self.third.ranks();
        let mut start = vec![0usize; first.len() + 1];
        for &(a, _, _) in &self.keys {
            start[first[a as usize] as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut next = start.clone();
        let mut order = vec![0u32; self.keys.len()];
        for (i, &(a, _, _)) in self.keys.iter().enumerate() {
            let slot = &mut next[first[a as usize] as usize];
            order[*slot] = i as u32;
            *slot += 1;
        }
        let key = |i: &u32| {
            let (_, t, c) = self.keys[*i as usize];
            (t, third[c as usize])
        };
        for run in start.windows(2) {
            let run = &mut order[run[0]..run[1]];
            if !run.is_sorted_by_key(key) {
                run.sort_by_key(key);
            }
        }
        let batch = self.columns.finish()?;
        if order.iter().enumerate().all(|(i, &j)| i as u32 == j) {
            return Ok(batch);
        }
        Ok(take_record_batch(&batch, &UInt32Array::from(order))?)
    }
}

/// Distinct strings numbered in order of first appearance.
///
/// Every row interns two strings (its node and a tie-break, most often the same empty one), so
/// this is on each row's path. Strings of up to [`INLINE`] bytes (every node id seen in
/// practice) are keyed by their bytes packed into three words held in the map itself, so a
/// lookup compares integers in place instead of following a pointer to a boxed string and
/// calling `memcmp` (interning was 6 % of a replay's CPU, half of it in `memcmp`); the last
/// one is checked first.
#[derive(Default)]
struct Interner {
    short: foldhash::HashMap<ShortKey, u32>,
    long: foldhash::HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    /// The short key looked up last, and its id.
    last: Option<(ShortKey, u32)>,
}

/// The longest string [`Interner`] keys by value.
const INLINE: usize = 23;

/// A string of up to [`INLINE`] bytes, zero-padded, its length in the last byte (so `"a"` and
/// `"a\0"` differ).
type ShortKey = [u64; 3];

fn short_key(s: &str) -> Option<ShortKey> {
    if s.len() > INLINE {
        return None;
    }
    let mut bytes = [0u8; INLINE + 1];
    bytes[..s.len()].copy_from_slice(s.as_bytes());
    bytes[INLINE] = s.len() as u8;
    Some(std::array::from_fn(|i| {
        u64::from_ne_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"))
    }))
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        let next = self.names.len() as u32;
        let i = match short_key(s) {
            Some(key) => {
                if let Some((last, i)) = self.last {
                    if last == key {
                        return i;
                    }
                }
                let i = *self.short.entry(key).or_insert(next);
                self.last = Some((key, i));
                i
            }
            None => match self.long.get(s) {
                Some(&i) => i,
                None => {
                    self.long.insert(s.into(), next);
                    next
                }
            },
        };
        if i == next {
            self.names.push(s.into());
        }
        i
    }

    /// Each id's rank among the distinct strings in byte order.
    fn ranks(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        let mut rank = vec![0; order.len()];
        for (r, &id) in order.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        rank
    }
}

/// A file written and fsynced under `_staging/`, waiting to be renamed into place.
#[derive(Debug)]
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    rows: usize,
}

/// One worker's writer of every table.
pub struct LakeWriter {
    cfg: LakeConfig,
    /// Per table: its columns' encodings differ (see [`table_properties`]).
    props: BTreeMap<Table, WriterProperties>,
    run_id: String,
    worker: usize,
    file_seq: u64,
    readings: Buffer<ReadingRow>,
    states: Buffer<OscillatorState>,
    rhythms: Buffer<RhythmWindow>,
    dead_letters: Buffer<DeadLetter>,
    phase_shifts: Buffer<PhaseShiftReport>,
    fleet: Buffer<FleetSnapshot>,
    alerts: Buffer<AlertRow>,
    staged: Vec<Staged>,
    /// Sorted batches whose staging failed (a full disk, no file descriptors): written again
    /// before anything else is staged, so a transient error loses no row.
    unstaged: Vec<(Table, NaiveDate, RecordBatch)>,
    /// Partition directories renamed into whose fsync has not succeeded yet.
    unsynced: std::collections::BTreeSet<PathBuf>,
    /// Files and rows renamed since the last commit that succeeded.
    renamed: CommitSummary,
}

impl LakeWriter {
    /// A writer for worker `worker`; creates the lake's directories.
    pub fn new(cfg: LakeConfig, worker: usize) -> Result<Self, LakeError> {
        if cfg.max_rows_per_file == 0 || cfg.row_group_rows == 0 {
            return Err(LakeError::Config(
                "max_rows_per_file and row_group_rows must be positive".into(),
            ));
        }
        let level = ZstdLevel::try_new(cfg.zstd_level)
            .map_err(|e| LakeError::Config(format!("zstd level {}: {e}", cfg.zstd_level)))?;
        ensure_layout(&cfg.root)?;
        let created_by = format!("kaiabc-stream {}", env!("CARGO_PKG_VERSION"));
        let props = Table::ALL
            .iter()
            .map(|&t| {
                let p = table_properties(t, level, cfg.row_group_rows, &created_by);
                (t, p)
            })
            .collect();
        // Unique across runs and processes, so files of different runs never collide.
        let run_id = format!(
            "{}-{}",
            Utc::now().format("%Y%m%dT%H%M%S%6f"),
            std::process::id()
        );
        Ok(Self {
            cfg,
            props,
            run_id,
            worker,
            file_seq: 0,
            readings: Buffer::default(),
            states: Buffer::default(),
            rhythms: Buffer::default(),
            dead_letters: Buffer::default(),
            phase_shifts: Buffer::default(),
            fleet: Buffer::default(),
            alerts: Buffer::default(),
            staged: Vec::new(),
            unstaged: Vec::new(),
            unsynced: Default::default(),
            renamed: CommitSummary::default(),
        })
    }

    /// The worker this writer belongs to.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// What this writer's file names carry to tell them from other writers' (and runs').
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The lake's root.
    pub fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// Rows buffered and not yet staged.
    pub fn buffered_rows(&self) -> usize {
        fn n<R: LakeRecord>(b: &Buffer<R>) -> usize {
            b.parts.values().map(Part::len).sum()
        }
        n(&self.readings)
            + n(&self.states)
            + n(&self.rhythms)
            + n(&self.dead_letters)
            + n(&self.phase_shifts)
            + n(&self.fleet)
            + n(&self.alerts)
    }

    /// Buffers one row (staging its partition if the buffer is full).
    pub fn push(&mut self, row: LakeRow) -> Result<(), LakeError> {
        match row {
            LakeRow::Reading(r) => self.push_into(r, |w| &mut w.readings),
            LakeRow::State(r) => self.push_into(r, |w| &mut w.states),
            LakeRow::Rhythm(r) => self.push_into(r, |w| &mut w.rhythms),
            LakeRow::DeadLetter(r) => self.push_into(r, |w| &mut w.dead_letters),
            LakeRow::PhaseShift(r) => self.push_into(r, |w| &mut w.phase_shifts),
            LakeRow::Fleet(r) => self.push_into(*r, |w| &mut w.fleet),
            LakeRow::Alert(r) => self.push_into(*r, |w| &mut w.alerts),
            // A barrier, not a row: the lake sink commits at it and saves its checkpoints.
            LakeRow::Checkpoint(_) => Ok(()),
        }
    }

    fn push_into<R: LakeRecord>(
        &mut self,
        row: R,
        buffer: fn(&mut Self) -> &mut Buffer<R>,
    ) -> Result<(), LakeError> {
        let max = self.cfg.max_rows_per_file;
        let buf = buffer(self);
        let date = buf.date(row.time_micros());
        // Pre-size only the day being filled and the next (as a day rolls), so a late row for
        // an old day never reserves a whole file's room.
        let hint = if buf.parts.len() < 2 { buf.hint } else { 0 };
        let part = buf
            .parts
            .entry(date)
            .or_insert_with(|| Part::with_capacity(hint.min(max)));
        part.push(&row);
        if part.len() >= max {
            // The day goes on: its next file will likely be as full.
            let part = std::mem::replace(part, Part::with_capacity(max));
            buffer(self).hint = part.len();
            self.stage(date, part)?;
        }
        Ok(())
    }

    /// Stages every partition of every table whose date is before `date` (complete days).
    pub fn roll_before(&mut self, date: NaiveDate) -> Result<(), LakeError> {
        self.roll(Some(date))
    }

    /// Stages every partition of every table before `before`, or all of them (after what an
    /// earlier failure left unstaged).
    fn roll(&mut self, before: Option<NaiveDate>) -> Result<(), LakeError> {
        self.restage()?;
        self.roll_table(before, |w| &mut w.readings)?;
        self.roll_table(before, |w| &mut w.states)?;
        self.roll_table(before, |w| &mut w.rhythms)?;
        self.roll_table(before, |w| &mut w.dead_letters)?;
        self.roll_table(before, |w| &mut w.phase_shifts)?;
        self.roll_table(before, |w| &mut w.fleet)?;
        self.roll_table(before, |w| &mut w.alerts)
    }

    fn roll_table<R: LakeRecord>(
        &mut self,
        before: Option<NaiveDate>,
        buffer: fn(&mut Self) -> &mut Buffer<R>,
    ) -> Result<(), LakeError> {
        let parts = &mut buffer(self).parts;
        let dates: Vec<NaiveDate> = parts
            .keys()
            .copied()
            .filter(|d| before.is_none_or(|b| *d < b))
            .collect();
        for d in dates {
            let part = buffer(self).parts.remove(&d).unwrap_or_default();
            buffer(self).hint = part.len();
            if part.len() > 0 {
                self.stage(d, part)?;
            }
        }
        Ok(())
    }

    /// Sorts `rows`, rounds their computed doubles ([`round_computed`]) and stages them
    /// ([`LakeWriter::stage_batch`]).
    fn stage<R: LakeRecord>(&mut self, date: NaiveDate, part: Part<R>) -> Result<(), LakeError> {
        let batch = round_computed(R::TABLE, part.sorted_batch()?);
        self.stage_batch(R::TABLE, date, batch)
    }

    /// Stages again what earlier failures left unstaged, oldest first.
    fn restage(&mut self) -> Result<(), LakeError> {
        let mut waiting = std::mem::take(&mut self.unstaged).into_iter();
        while let Some((table, date, batch)) = waiting.next() {
            if let Err(e) = self.stage_batch(table, date, batch) {
                self.unstaged.extend(waiting);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Batches left unstaged by failures, waiting to be staged again.
    pub fn unstaged_batches(&self) -> usize {
        self.unstaged.len()
    }

    /// Writes `batch` as one zstd Parquet file under `_staging/` and fsyncs it; if that fails,
    /// the file is removed and the batch kept to be staged again.
    fn stage_batch(
        &mut self,
        table: Table,
        date: NaiveDate,
        batch: RecordBatch,
    ) -> Result<(), LakeError> {
        let rows = batch.num_rows();
        self.file_seq += 1;
        let name = format!(
            "part-{}-w{:02}-{:05}.parquet",
            self.run_id, self.worker, self.file_seq
        );
        let tmp = staging_dir(&self.cfg.root).join(format!("{}.{}.tmp", table.name(), name));
        let dest = table_dir(&self.cfg.root, table)
            .join(format!("date={}", date.format("%Y-%m-%d")))
            .join(name);
        let props = self.props.get(&table).expect("properties for every table");
        match write_file(&tmp, &batch, props) {
            Ok(()) => {
                tracing::debug!(table = table.name(), rows, path = %tmp.display(), "staged");
                self.staged.push(Staged { tmp, dest, rows });
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.unstaged.push((table, date, batch));
                Err(e)
            }
        }
    }
}

/// Writes `batch` to a new Parquet file at `path` and fsyncs it.
fn write_file(path: &Path, batch: &RecordBatch, props: &WriterProperties) -> Result<(), LakeError> {
    let file = File::create(path).map_err(LakeError::io("create", path))?;
    let parquet = |source| LakeError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).map_err(parquet)?;
    w.write(batch).map_err(parquet)?;
    let file = w.into_inner().map_err(parquet)?;
    file.sync_all().map_err(LakeError::io("fsync", path))
}

fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LakeError::io("fsync", dir))
}

impl Sink<LakeRow> for LakeWriter {
    type Error = LakeError;

    /// Buffers every row; a staging failure on the way keeps its rows (see
    /// `LakeWriter::stage_batch`) and is returned after the rest are buffered.
    fn process(&mut self, rows: &mut Vec<LakeRow>) -> Result<(), LakeError> {
        let mut first = None;
        for row in rows.drain(..) {
            if let Err(e) = self.push(row) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn watermark(&mut self, watermark_micros: i64) -> Result<(), LakeError> {
        self.roll_before(date_of(watermark_micros))
    }

    fn checkpoint(&mut self) -> Result<(), LakeError> {
        self.roll(None)?;
        sync_dir(&staging_dir(&self.cfg.root))
    }

    /// Renames the staged files into their partitions, then fsyncs those directories. A
    /// failure keeps the files not yet renamed and the directories not yet synced: calling it
    /// again carries on where it stopped.
    fn commit(&mut self) -> Result<CommitSummary, LakeError> {
        let mut done = 0;
        let renamed: Result<(), LakeError> = self.staged.iter().try_for_each(|s| {
            let dir = s.dest.parent().expect("a partition directory");
            std::fs::create_dir_all(dir).map_err(LakeError::io("create", dir))?;
            std::fs::rename(&s.tmp, &s.dest).map_err(LakeError::io("rename", &s.tmp))?;
            self.unsynced.insert(dir.to_path_buf());
            done += 1;
            Ok(())
        });
        for s in self.staged.drain(..done) {
            self.renamed.files += 1;
            self.renamed.rows += s.rows;
        }
        renamed?;
        while let Some(d) = self.unsynced.first().cloned() {
            sync_dir(&d)?;
            if let Some(table) = d.parent() {
                sync_dir(table)?;
            }
            self.unsynced.remove(&d);
        }
        Ok(std::mem::take(&mut self.renamed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::{table_files, LakeRow};
    use kaiabc_schemas::{parse_timestamp, Quality, SensorReading, Table};
    use parquet::basic::{Compression, Encoding};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// A measured and a computed value with more significant bits than float32 holds.
    const MEASURED: f64 = 297.603_000_000_1;
    const FILTERED: f64 = 297.611_234_567_89;

    fn reading(node: &str, ts: &str) -> LakeRow {
        LakeRow::Reading(ReadingRow {
            reading: SensorReading {
                node_id: node.into(),
                seq: Some(1),
                timestamp: parse_timestamp(ts).unwrap(),
                temperature_kelvin: MEASURED,
                humidity_percent: None,
                pressure_pa: Some(101_000.0),
                light_lux: None,
                sensor_type: "BME280".into(),
                quality: Quality::Good,
                raw_values: None,
                firmware_version: None,
            },
            filtered_temperature_kelvin: Some(FILTERED),
            kalman_variance: Some(0.01),
            late: false,
            filtered_humidity_percent: None,
            filtered_pressure_pa: None,
            filter: None,
        })
    }

    /// Equal strings get one id and different ones different ids, whatever their length and
    /// whichever path found them (the last one, the short keys, the long ones); ranks follow
    /// byte order. Short keys pad with zeros, so `"a"` and `"a\0"` must stay apart.
    #[test]
    fn interned_strings_keep_their_identity_and_order() {
        let long = "a node id longer than twenty-three bytes";
        let names = [
            "",
            "b",
            "a",
            "a\0",
            "",
            long,
            "b",
            "a",
            long,
            "a\0",
            "b",
            "23456789012345678901234",
        ];
        let mut interner = Interner::default();
        let ids: Vec<u32> = names.iter().map(|s| interner.id(s)).collect();
        for (i, a) in names.iter().enumerate() {
            for (j, b) in names.iter().enumerate() {
                assert_eq!(ids[i] == ids[j], a == b, "{a:?} and {b:?}");
            }
        }
        let ranks = interner.ranks();
        for (i, a) in names.iter().enumerate() {
            for (j, b) in names.iter().enumerate() {
                let (ra, rb) = (ranks[ids[i] as usize], ranks[ids[j] as usize]);
                assert_eq!(ra.cmp(&rb), a.cmp(b), "{a:?} and {b:?}");
            }
        }
    }

    /// A staging directory that cannot take files (here a plain file stands in its place, as
    /// a full disk or a lack of descriptors would refuse a create) fails the roll and the
    /// commit without losing a row; once it is back, the next commit writes every row once.
    #[test]
    fn a_failed_stage_or_commit_loses_nothing_and_the_next_one_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = LakeConfig::at(dir.path());
        cfg.max_rows_per_file = 2;
        let mut w = LakeWriter::new(cfg, 0).unwrap();
        let staging = staging_dir(dir.path());
        let away = dir.path().join("_staging.away");
        let block = || {
            std::fs::rename(&staging, &away).unwrap();
            std::fs::write(&staging, b"not a directory").unwrap();
        };
        let unblock = || {
            std::fs::remove_file(&staging).unwrap();
            std::fs::rename(&away, &staging).unwrap();
        };
        // One file staged, then the directory goes.
        w.process(&mut vec![
            reading("a", "2025-07-01T00:00:00Z"),
            reading("a", "2025-07-01T00:01:00Z"),
        ])
        .unwrap();
        block();
        // A full buffer fails to stage: every row is still buffered or kept.
        let e = w
            .process(&mut vec![
                reading("b", "2025-07-01T00:00:00Z"),
                reading("b", "2025-07-01T00:01:00Z"),
                reading("c", "2025-07-01T00:00:00Z"),
            ])
            .unwrap_err();
        assert!(e.to_string().contains("create"), "{e}");
        assert_eq!(w.unstaged_batches(), 1);
        assert!(w.checkpoint().is_err());
        assert!(
            w.commit().is_err(),
            "the staged file cannot be renamed from there"
        );
        assert!(table_files(dir.path(), Table::Readings).unwrap().is_empty());
        unblock();
        w.checkpoint().unwrap();
        let s = w.commit().unwrap();
        assert_eq!(s.rows, 5, "{s:?}");
        assert_eq!(w.unstaged_batches(), 0);
        let mut rows = 0;
        for f in table_files(dir.path(), Table::Readings).unwrap() {
            rows += SerializedFileReader::new(File::open(&f).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows();
        }
        assert_eq!(rows, 5);
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn nothing_is_visible_before_commit_and_files_are_sorted_zstd() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LakeWriter::new(LakeConfig::at(dir.path()), 0).unwrap();
        let mut rows = vec![
            reading("b", "2025-07-01T10:00:00Z"),
            reading("a", "2025-07-01T11:00:00Z"),
            reading("a", "2025-07-01T09:00:00Z"),
            reading("a", "2025-07-02T00:00:00Z"),
        ];
        w.process(&mut rows).unwrap();
        w.checkpoint().unwrap();
        assert!(table_files(dir.path(), Table::Readings).unwrap().is_empty());
        let s = w.commit().unwrap();
        assert_eq!((s.files, s.rows), (2, 4));
        let files = table_files(dir.path(), Table::Readings).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].to_string_lossy().contains("date=2025-07-01"));
        let r = SerializedFileReader::new(File::open(&files[0]).unwrap()).unwrap();
        let meta = r.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 3);
        assert!(matches!(
            meta.row_group(0).column(0).compression(),
            Compression::ZSTD(_)
        ));
        // Each column in its encoding (`table_properties`).
        let encodings = |name: &str| {
            let rg = meta.row_group(0);
            let i = (0..rg.num_columns())
                .find(|&i| rg.column(i).column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            rg.column(i).encodings().collect::<Vec<_>>()
        };
        assert!(encodings("timestamp").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(encodings("seq").contains(&Encoding::DELTA_BINARY_PACKED));
        assert!(encodings("filtered_temperature_kelvin").contains(&Encoding::BYTE_STREAM_SPLIT));
        let raw = encodings("temperature_kelvin");
        assert!(raw.contains(&Encoding::PLAIN) && !raw.contains(&Encoding::BYTE_STREAM_SPLIT));
        assert!(encodings("node_id").contains(&Encoding::RLE_DICTIONARY));
        // Sorted by (node_id, timestamp): a 09:00, a 11:00, b 10:00.
        let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            File::open(&files[0]).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
        let nodes = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(
            nodes.iter().flatten().collect::<Vec<_>>(),
            vec!["a", "a", "b"]
        );
        // The measured value reads back exactly; the computed one to float32's precision.
        let value = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .unwrap()
                .value(0)
        };
        assert_eq!(value("temperature_kelvin"), MEASURED);
        assert_eq!(value("filtered_temperature_kelvin"), FILTERED as f32 as f64);
        assert_ne!(FILTERED as f32 as f64, FILTERED);
        // Nothing is left in staging.
        assert_eq!(
            std::fs::read_dir(staging_dir(dir.path())).unwrap().count(),
            0
        );
    }

    #[test]
    fn the_watermark_rolls_complete_days_and_full_buffers_roll_early() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LakeConfig {
            max_rows_per_file: 2,
            ..LakeConfig::at(dir.path())
        };
        let mut w = LakeWriter::new(cfg, 3).unwrap();
        w.push(reading("a", "2025-07-01T01:00:00Z")).unwrap();
        w.push(reading("a", "2025-07-02T01:00:00Z")).unwrap();
        assert_eq!(w.buffered_rows(), 2);
        w.watermark(
            parse_timestamp("2025-07-02T00:00:00Z")
                .unwrap()
                .timestamp_micros(),
        )
        .unwrap();
        assert_eq!(w.buffered_rows(), 1, "July 1 is complete and staged");
        w.push(reading("b", "2025-07-02T02:00:00Z")).unwrap();
        assert_eq!(w.buffered_rows(), 0, "a full buffer is staged");
        assert_eq!(w.commit().unwrap().files, 2);
    }
}

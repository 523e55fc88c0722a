//! Recognising exact copies of readings with bounded memory per node: a summary of every key a
//! node has seen ([`KeyRuns`]), the exact keys not yet known to be in the lake's files
//! ([`Pending`]), and the lake itself ([`PastReadings`]) for whatever the summary cannot rule out.
//!
//! A reading's key is `(timestamp, seq)`. A copy is the same key again, at any later time; the
//! same seq at another time is not one (a node that rebooted counts from 1 again), nor the same
//! time with another seq. Almost every reading is newer than anything its node has seen, which
//! the summary answers at once; a late one falls in one of the summary's runs or not, and only
//! if it does is the lake asked.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The most runs a summary keeps; beyond it the two closest in time merge into one that covers
/// both (a summary only ever over-approximates, so merging costs lookups, never correctness).
/// 64 runs are 2 KiB: a node would need to reboot 64 times to reach it.
pub const MAX_RUNS: usize = 64;

/// Keys of a node in which sequence numbers and times both rise: what a node sends between two
/// reboots. It covers every `(t, seq)` with `seq` in `seq` and `t` in `time`: the keys it was
/// built from, and the gaps between them (readings lost on the way, which a late resend fills).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Lowest and highest seq.
    pub seq: (i64, i64),
    /// Earliest and latest event time, µs.
    pub time: (i64, i64),
}

impl Run {
    fn at(micros: i64, seq: i64) -> Self {
        Self {
            seq: (seq, seq),
            time: (micros, micros),
        }
    }

    fn covers(&self, micros: i64, seq: i64) -> bool {
        (self.seq.0..=self.seq.1).contains(&seq) && (self.time.0..=self.time.1).contains(&micros)
    }

    fn merge(&mut self, o: &Run) {
        self.seq = (self.seq.0.min(o.seq.0), self.seq.1.max(o.seq.1));
        self.time = (self.time.0.min(o.time.0), self.time.1.max(o.time.1));
    }
}

/// A bounded summary of a set of reading keys that answers "certainly not in the set" or
/// "maybe": runs of sequenced keys ([`Run`]), the time span of keys without a seq, and the
/// latest time of all. At most [`MAX_RUNS`] runs, whatever the number of keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRuns {
    /// In the order they were started (the run a node is extending is the last).
    runs: Vec<Run>,
    /// Earliest and latest time of keys without a seq.
    unsequenced: Option<(i64, i64)>,
    /// The latest time of any key.
    latest: Option<i64>,
}

impl KeyRuns {
    /// The latest event time summarised (`None`: empty).
    pub fn latest(&self) -> Option<i64> {
        self.latest
    }

    /// The runs, oldest first.
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Whether the set may hold this key: `false` means it certainly does not.
    pub fn may_contain(&self, micros: i64, seq: Option<i64>) -> bool {
        if self.latest.is_none_or(|l| micros > l) {
            return false;
        }
        match seq {
            None => self
                .unsequenced
                .is_some_and(|(a, b)| (a..=b).contains(&micros)),
            Some(s) => self.runs.iter().rev().any(|r| r.covers(micros, s)),
        }
    }

    /// Adds a key.
    pub fn insert(&mut self, micros: i64, seq: Option<i64>) {
        self.latest = Some(self.latest.map_or(micros, |l| l.max(micros)));
        let Some(s) = seq else {
            self.unsequenced = Some(match self.unsequenced {
                None => (micros, micros),
                Some((a, b)) => (a.min(micros), b.max(micros)),
            });
            return;
        };
        // Newest run first: the one the node is extending, almost always.
        for r in self.runs.iter_mut().rev() {
            if r.covers(micros, s) {
                return;
            }
            if s >= r.seq.1 && micros >= r.time.1 {
                r.seq.1 = s;
                r.time.1 = micros;
                return;
            }
            if s <= r.seq.0 && micros <= r.time.0 {
                r.seq.0 = s;
                r.time.0 = micros;
                return;
            }
        }
        self.runs.push(Run::at(micros, s));
        if self.runs.len() > MAX_RUNS {
            self.merge_closest();
        }
    }

    /// Adds every key `other` may hold.
    pub fn absorb(&mut self, other: &KeyRuns) {
        for r in &other.runs {
            self.runs.insert(0, *r);
        }
        if let Some((a, b)) = other.unsequenced {
            self.insert(a, None);
            self.insert(b, None);
        }
        if let Some(l) = other.latest {
            self.latest = Some(self.latest.map_or(l, |m| m.max(l)));
        }
        while self.runs.len() > MAX_RUNS {
            self.merge_closest();
        }
    }

    /// Merges the two runs closest in time into one.
    fn merge_closest(&mut self) {
        let mut order: Vec<usize> = (0..self.runs.len()).collect();
        order.sort_by_key(|&i| self.runs[i].time);
        let gap = |a: &Run, b: &Run| b.time.0.saturating_sub(a.time.1).max(0);
        let Some((a, b)) = order
            .windows(2)
            .map(|w| (w[0], w[1]))
            .min_by_key(|&(a, b)| gap(&self.runs[a], &self.runs[b]))
        else {
            return;
        };
        let other = self.runs[b];
        self.runs[a].merge(&other);
        self.runs.remove(b);
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
    }
}

/// Where the lake's sink has got to, as the node operator on the same worker counts it: reading
/// rows are numbered in the order the operator emits them (which is the order the sink receives
/// them), from 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFiles {
    /// Changes whenever the rest does.
    pub version: u64,
    /// Every reading row up to this number is in a file (staged or committed).
    pub all_through: u64,
    /// Every reading row up to `rolled.0` dated before `rolled.1` (µs) is in a file: the sink
    /// wrote out the days before its watermark.
    pub rolled: (u64, i64),
}

impl InFiles {
    /// Whether the row numbered `ordinal`, at `micros`, is in a file.
    pub fn holds(&self, ordinal: u64, micros: i64) -> bool {
        ordinal <= self.all_through || (ordinal <= self.rolled.0 && micros < self.rolled.1)
    }
}

/// [`InFiles`] shared between a worker's sink, which advances it (from whatever thread writes),
/// and its node operator, which reads it.
#[derive(Debug, Default)]
pub struct FilesProgress(Mutex<InFiles>);

impl FilesProgress {
    /// The latest progress.
    pub fn get(&self) -> InFiles {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every reading row up to `through` is in a file.
    pub fn all_in_files(&self, through: u64) {
        let mut p = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if through > p.all_through {
            p.all_through = through;
            p.version += 1;
        }
    }

    /// Every reading row up to `through` dated before `before_micros` is in a file. Only a new
    /// day counts: the sink calls this at every watermark, and a new version for each would
    /// give every pending key a mark of its own.
    pub fn rolled(&self, through: u64, before_micros: i64) {
        let mut p = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if before_micros > p.rolled.1 {
            p.rolled = (through.max(p.rolled.0), before_micros);
            p.version += 1;
        }
    }
}

/// When a reading row was emitted: its number (see [`InFiles`]) and the progress version the
/// operator had seen then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// The row's number on its worker.
    pub ordinal: u64,
    /// [`InFiles::version`] when it was emitted.
    pub version: u64,
}

impl Emitted {
    /// A row no sink reports on: its key stays pending for good (a node used on its own).
    pub const UNTRACKED: Emitted = Emitted {
        ordinal: u64::MAX,
        version: u64::MAX,
    };
}

/// Keys stored with a seq of `None`.
const NO_SEQ: i64 = i64::MIN;

/// Keys a node emitted that may not be in the lake's files yet (the sink may still hold them in
/// memory), kept exactly until the sink says they are. Keys are 16 bytes; the rows emitted
/// between two progress reports share one mark, so a live node holds a few seconds of keys
/// and a replayed one about a day's (until the sink writes the day out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pending {
    keys: VecDeque<(i64, i64)>,
    /// Consecutive stretches of `keys`: how many, the highest ordinal among them, and the
    /// progress version they were emitted under.
    marks: VecDeque<Mark>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    len: usize,
    ordinal: u64,
    version: u64,
}

impl Pending {
    /// Whether this exact key is pending.
    pub fn contains(&self, micros: i64, seq: Option<i64>) -> bool {
        let key = (micros, seq.unwrap_or(NO_SEQ));
        self.keys.iter().rev().any(|k| *k == key)
    }

    /// Keeps a key emitted at `at`.
    pub fn push(&mut self, micros: i64, seq: Option<i64>, at: Emitted) {
        // Grown by a quarter at a time, not doubled: a replayed node holds about a day of keys,
        // and doubling would leave up to half of that room unused.
        if self.keys.len() == self.keys.capacity() {
            self.keys.reserve_exact((self.keys.len() / 4).max(16));
        }
        self.keys.push_back((micros, seq.unwrap_or(NO_SEQ)));
        match self.marks.back_mut() {
            Some(m) if m.version == at.version => {
                m.len += 1;
                m.ordinal = m.ordinal.max(at.ordinal);
            }
            _ => self.marks.push_back(Mark {
                len: 1,
                ordinal: at.ordinal,
                version: at.version,
            }),
        }
    }

    /// Forgets the keys the sink has written out.
    pub fn prune(&mut self, files: &InFiles) {
        while let Some(m) = self.marks.front_mut() {
            if m.ordinal <= files.all_through {
                self.keys.drain(..m.len);
                self.marks.pop_front();
                continue;
            }
            if m.ordinal > files.rolled.0 {
                return;
            }
            // The days before the watermark are out: drop keys from the front while they are
            // dated before it (a late key among them waits for the next full write).
            while m.len > 0 && self.keys.front().is_some_and(|k| k.0 < files.rolled.1) {
                self.keys.pop_front();
                m.len -= 1;
            }
            if m.len > 0 {
                return;
            }
            self.marks.pop_front();
        }
        if self.keys.capacity() > 64 && self.keys.len() < self.keys.capacity() / 4 {
            self.keys.shrink_to(self.keys.len() * 2);
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<(i64, i64)>()
            + self.marks.capacity() * std::mem::size_of::<Mark>()
    }
}

/// What the lake knows of readings from before a node's state existed in this run, and an exact
/// lookup in its files for keys a node's summary cannot rule out.
pub trait PastReadings {
    /// The summary of this node's readings the lake held when the run started (taken once, when
    /// the node is first seen in the run).
    fn summary(&self, node_id: &str) -> Option<KeyRuns>;
    /// Whether the lake's files (committed, or staged by this run) hold this exact key.
    fn holds(&self, node_id: &str, micros: i64, seq: Option<i64>) -> bool;
}

/// No lake: nothing from before, nothing in files (every key a node emits stays [`Pending`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPast;

impl PastReadings for NoPast {
    fn summary(&self, _: &str) -> Option<KeyRuns> {
        None
    }

    fn holds(&self, _: &str, _: i64, _: Option<i64>) -> bool {
        false
    }
}

/// What the node operator needs from the lake to recognise copies: what it held before the run,
/// and how far the sink on the same worker has written out the rows emitted since.
#[derive(Clone)]
pub struct LakeKeys {
    /// The lake before the run, and lookups in its files.
    pub past: Rc<dyn PastReadings>,
    /// Advanced by the sink.
    pub files: Arc<FilesProgress>,
}

impl LakeKeys {
    /// No lake (every emitted key stays pending).
    pub fn none() -> Self {
        Self {
            past: Rc::new(NoPast),
            files: Arc::default(),
        }
    }
}

impl std::fmt::Debug for LakeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeKeys")
            .field("files", &self.files.get())
            .finish_non_exhaustive()
    }
}

/// Whether a key is a copy, as far as a node knows by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Certainly not seen: newer than anything seen, or outside every run.
    New,
    /// Seen: the exact key is pending.
    Copy,
    /// Maybe seen, and not pending: only the lake can say.
    AskLake,
}

/// A node's duplicate detection: the summary of every key it saw (and the lake held for it when
/// the run started), and the keys not yet in the lake's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dedup {
    /// Every key seen, summarised.
    pub seen: KeyRuns,
    /// Keys emitted and not yet in files.
    pub pending: Pending,
}

impl Dedup {
    /// Whether `(micros, seq)` was seen before.
    pub fn check(&self, micros: i64, seq: Option<i64>) -> Seen {
        if !self.seen.may_contain(micros, seq) {
            Seen::New
        } else if self.pending.contains(micros, seq) {
            Seen::Copy
        } else {
            Seen::AskLake
        }
    }

    /// Records a key whose row was emitted at `at`.
    pub fn record(&mut self, micros: i64, seq: Option<i64>, at: Emitted) {
        self.seen.insert(micros, seq);
        self.pending.push(micros, seq, at);
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.seen.heap_bytes() + self.pending.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn in_order_keys_make_one_run_and_later_keys_are_new() {
        let mut k = KeyRuns::default();
        for i in 0..10_000 {
            // A lost reading every 7 leaves a gap in seq: still one run.
            if i % 7 != 3 {
                k.insert(i * MIN + (i % 5) * 1000, Some(i + 1));
            }
        }
        assert_eq!(k.runs().len(), 1);
        assert!(!k.may_contain(10_000 * MIN, Some(10_001)));
        assert!(k.may_contain(5 * MIN, Some(6)));
        // The lost one, resent late: maybe (the lake decides).
        assert!(k.may_contain(3 * MIN + 3000, Some(4)));
        // Same seq at another time (before the first key) is not covered.
        assert!(!k.may_contain(-MIN, Some(1)));
    }

    #[test]
    fn a_reboot_starts_a_run_and_its_seqs_are_not_copies() {
        let mut k = KeyRuns::default();
        for i in 0..100 {
            k.insert(i * MIN, Some(i + 1));
        }
        // Rebooted: seq from 1 again, an hour later.
        for i in 0..100 {
            let t = (160 + i) * MIN;
            assert!(!k.may_contain(t, Some(i + 1)), "seq {} after reboot", i + 1);
            k.insert(t, Some(i + 1));
        }
        assert_eq!(k.runs().len(), 2);
        assert!(k.may_contain(50 * MIN, Some(51)));
        assert!(!k.may_contain(130 * MIN, Some(51)), "the gap between boots");
    }

    #[test]
    fn many_reboots_stay_bounded_and_cover_every_key() {
        let mut k = KeyRuns::default();
        let mut keys = Vec::new();
        for boot in 0..1000i64 {
            for i in 0..10 {
                let t = (boot * 20 + i) * MIN;
                keys.push((t, i + 1));
                k.insert(t, Some(i + 1));
            }
        }
        assert!(k.runs().len() <= MAX_RUNS);
        assert!(keys.iter().all(|&(t, s)| k.may_contain(t, Some(s))));
    }

    #[test]
    fn unsequenced_keys_are_a_time_span() {
        let mut k = KeyRuns::default();
        k.insert(10, None);
        k.insert(20, None);
        assert!(k.may_contain(15, None));
        assert!(!k.may_contain(15, Some(1)));
        assert!(!k.may_contain(25, None));
    }

    #[test]
    fn absorbing_keeps_both_sets() {
        let mut a = KeyRuns::default();
        let mut b = KeyRuns::default();
        a.insert(100, Some(5));
        b.insert(10, Some(1));
        b.insert(20, None);
        a.absorb(&b);
        assert!(a.may_contain(100, Some(5)) && a.may_contain(10, Some(1)));
        assert!(a.may_contain(20, None));
        assert_eq!(a.latest(), Some(100));
    }

    fn at(ordinal: u64, version: u64) -> Emitted {
        Emitted { ordinal, version }
    }

    #[test]
    fn pending_keys_go_once_the_sink_has_written_them() {
        let mut p = Pending::default();
        p.push(1, Some(1), at(1, 0));
        p.push(2, Some(2), at(2, 0));
        p.push(3, None, at(3, 1));
        assert!(p.contains(3, None) && !p.contains(3, Some(3)));
        let files = InFiles {
            version: 2,
            all_through: 2,
            rolled: (0, 0),
        };
        p.prune(&files);
        assert_eq!(p.len(), 1);
        assert!(!p.contains(1, Some(1)) && p.contains(3, None));
    }

    /// The bound the design promises: a node sending one reading a minute for a year, with
    /// a reboot a week, a lost reading in 50 and a late resend of it, holds at most 32 KiB of
    /// duplicate detection at any time, whether the sink writes out every 10 s (live) or a
    /// day at a time an hour after it ends (replay).
    #[test]
    fn a_year_at_one_reading_a_minute_stays_within_32_kib() {
        for live in [true, false] {
            let mut d = Dedup::default();
            let (mut files, mut ordinal, mut most) = (InFiles::default(), 0u64, 0usize);
            let (mut seq, mut lost) = (0i64, Vec::new());
            let day = 1440;
            for minute in 0..365 * day {
                let t = minute * MIN;
                seq = if minute % (7 * day) == 0 { 1 } else { seq + 1 };
                let mut keys = vec![(t, seq)];
                if minute % 50 == 0 {
                    lost.push((t, seq));
                    keys.clear();
                }
                if minute % 50 == 30 {
                    keys.extend(lost.pop());
                }
                for (t, s) in keys {
                    assert_ne!(d.check(t, Some(s)), Seen::Copy);
                    ordinal += 1;
                    d.record(
                        t,
                        Some(s),
                        Emitted {
                            ordinal,
                            version: files.version,
                        },
                    );
                }
                if live {
                    files.all_through = ordinal;
                    files.version += 1;
                } else if !live && minute % day == 60 && minute > day {
                    files.rolled = (ordinal, (minute - 60) * MIN);
                    files.version += 1;
                }
                d.pending.prune(&files);
                most = most.max(d.heap_bytes());
            }
            eprintln!("live {live}: at most {most} bytes");
            assert!(most <= 32 * 1024, "live {live}: {most} bytes");
            assert_eq!(d.seen.runs().len(), 53, "a run per boot");
        }
    }

    #[test]
    fn a_written_day_goes_and_the_day_being_filled_stays() {
        let day = 86_400_000_000i64;
        let mut p = Pending::default();
        for i in 0..48 {
            p.push(i * day / 24, Some(i), at(i as u64 + 1, 0));
        }
        // The sink wrote out the first day after receiving 40 rows.
        p.prune(&InFiles {
            version: 1,
            all_through: 0,
            rolled: (40, day),
        });
        // The mark's rows reach 48, past what the sink had received: nothing goes yet.
        assert_eq!(p.len(), 48);
        p.prune(&InFiles {
            version: 2,
            all_through: 0,
            rolled: (48, day),
        });
        assert_eq!(p.len(), 24);
        assert!(p.contains(day, Some(24)) && !p.contains(0, Some(0)));
    }
}

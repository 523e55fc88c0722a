//! What the lake held before a run, for the node operator's duplicate detection: each node's
//! key summary (read once at start, taken when the node is first seen) and exact lookups in the
//! worker's view of the lake's files.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use kaiabc_connectors::lake::{
    for_each_reading_key, LakeError, LakeWriter, ReadingLookup, DEFAULT_CACHED_ROWS,
};
use kaiabc_operators::dedup::{FilesProgress, KeyRuns, LakeKeys, PastReadings};

/// Every node's key summary as the lake held them at start (bounded per node: see
/// [`KeyRuns`]).
#[derive(Debug, Default)]
pub struct LakeSummaries(Mutex<HashMap<String, KeyRuns>>);

impl LakeSummaries {
    /// Summarises the keys of every committed reading under `root` (one pass over three
    /// columns of the `readings` files).
    pub fn read(root: &Path) -> Result<Arc<Self>, LakeError> {
        let mut map: HashMap<String, KeyRuns> = HashMap::new();
        for_each_reading_key(root, |node, micros, seq| match map.get_mut(node) {
            Some(runs) => runs.insert(micros, seq),
            None => {
                let mut runs = KeyRuns::default();
                runs.insert(micros, seq);
                map.insert(node.to_string(), runs);
            }
        })?;
        Ok(Arc::new(Self(Mutex::new(map))))
    }

    /// Takes the summary of `node` (each node is first seen once, on the worker that owns it).
    fn take(&self, node: &str) -> Option<KeyRuns> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
    }
}

/// One worker's [`PastReadings`]: the summaries, and lookups in the committed files and in the
/// files its own writer staged.
struct LakePast {
    summaries: Arc<LakeSummaries>,
    lookup: RefCell<ReadingLookup>,
}

impl PastReadings for LakePast {
    fn summary(&self, node_id: &str) -> Option<KeyRuns> {
        self.summaries.take(node_id)
    }

    fn holds(&self, node_id: &str, micros: i64, seq: Option<i64>) -> bool {
        match self.lookup.borrow_mut().holds(node_id, micros, seq) {
            Ok(held) => held,
            // A reading is better kept twice than lost: the lake's readers can still tell
            // copies apart by (node_id, timestamp, seq).
            Err(e) => {
                tracing::warn!(node_id = node_id, error = %e, code = e.code(), "could not look a reading up in the lake; keeping it");
                false
            }
        }
    }
}

/// The node operator's view of the lake on the worker whose sink writes with `writer`; the
/// sink advances `files`.
pub fn lake_keys(
    summaries: &Arc<LakeSummaries>,
    writer: &LakeWriter,
    files: &Arc<FilesProgress>,
) -> LakeKeys {
    LakeKeys {
        past: Rc::new(LakePast {
            summaries: Arc::clone(summaries),
            lookup: RefCell::new(ReadingLookup::new(
                writer.root(),
                writer.run_id(),
                DEFAULT_CACHED_ROWS,
            )),
        }),
        files: Arc::clone(files),
    }
}

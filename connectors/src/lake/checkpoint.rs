//! Per-node checkpoints beside the lake, so a restarted pipeline resumes every node's clock and
//! filter where the committed rows end.
//!
//! Layout: `_checkpoints/` under the lake root holds one base file per run
//! (`r{run}-base.ckpt`, every node known when the run started) and one segment per commit and
//! worker (`r{run}-w{worker}-{seq}.ckpt`, the nodes that changed). Names sort in the order they
//! must be applied; a later entry for a node replaces an earlier one. Opening the store folds
//! everything into the next run's base and deletes the older files, so the directory holds one
//! run's segments at most. Files are written under `_staging/`, fsynced and renamed into place.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use kaiabc_schemas::{NodeCheckpointEntry, OscillatorState};
use serde::{Deserialize, Serialize};

use super::{staging_dir, LakeError};

/// The file format's magic and version: bumped when [`FileEntry`] changes.
const MAGIC: &[u8; 5] = b"KCKP1";

/// The checkpoint directory under a lake root.
pub fn checkpoint_dir(root: &Path) -> PathBuf {
    root.join("_checkpoints")
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    node_id: String,
    state: Vec<u8>,
    /// The latest `OscillatorState` as JSON (empty: none). JSON because that type's serde
    /// attributes assume a self-describing format.
    latest: Vec<u8>,
}

/// The checkpoints found when the store was opened, and the run they were folded into.
#[derive(Debug, Default)]
pub struct Restored {
    /// This run's number (one more than the last run that left files).
    pub run: u64,
    /// Each node's latest checkpoint.
    pub nodes: HashMap<String, NodeCheckpointEntry>,
    /// Files read (base and segments).
    pub files: usize,
}

impl Restored {
    /// Each node's encoded state, for the operators to resume from.
    pub fn states(&self) -> HashMap<String, Vec<u8>> {
        self.nodes
            .iter()
            .map(|(k, v)| (k.clone(), v.state.clone()))
            .collect()
    }

    /// Each node's latest oscillator state.
    pub fn latest(&self) -> impl Iterator<Item = &OscillatorState> {
        self.nodes.values().filter_map(|e| e.latest.as_ref())
    }
}

/// Reads every checkpoint under `root`, writes them as the new run's base and deletes the files
/// of earlier runs. A file that cannot be read is an error (not silently skipped: that would
/// restart its nodes from scratch and their rows would no longer match their clocks).
pub fn open_checkpoints(root: &Path) -> Result<Restored, LakeError> {
    let (restored, names) = read_all(root)?;
    if !names.is_empty() {
        let dir = checkpoint_dir(root);
        let mut entries: Vec<&NodeCheckpointEntry> = restored.nodes.values().collect();
        entries.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        write_file(root, &format!("r{:08}-base.ckpt", restored.run), entries)?;
        for name in &names {
            let path = dir.join(name);
            std::fs::remove_file(&path).map_err(LakeError::io("remove", &path))?;
        }
        sync_dir(&dir)?;
    }
    Ok(restored)
}

/// How often [`read_checkpoints`] lists the files again when one vanished as it read.
const READ_ATTEMPTS: usize = 20;

/// Reads every checkpoint under `root` without compacting them: for the other processes of a
/// cluster sharing the lake, while the first one ([`open_checkpoints`]) compacts. A file
/// that vanishes while it is read was replaced by that compaction's base (written before the
/// files it covers are deleted), so the files are listed and read again.
pub fn read_checkpoints(root: &Path) -> Result<Restored, LakeError> {
    let mut attempt = 0;
    loop {
        match read_all(root) {
            Err(LakeError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound && attempt < READ_ATTEMPTS =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other.map(|(restored, _)| restored),
        }
    }
}

/// Every checkpoint under `root`, in order, and the names of the files read.
fn read_all(root: &Path) -> Result<(Restored, Vec<String>), LakeError> {
    let dir = checkpoint_dir(root);
    std::fs::create_dir_all(&dir).map_err(LakeError::io("create", &dir))?;
    std::fs::create_dir_all(staging_dir(root)).map_err(LakeError::io("create", root))?;
    let mut names: Vec<(u64, String)> = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(LakeError::io("list", &dir))? {
        let e = e.map_err(LakeError::io("list", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(run) = run_of(&name) {
            names.push((run, name));
        }
    }
    names.sort();
    let mut restored = Restored {
        run: names.last().map_or(1, |(r, _)| r + 1),
        ..Restored::default()
    };
    for (_, name) in &names {
        let path = dir.join(name);
        for mut e in read_file(&path)? {
            // A checkpoint taken after only late readings has no newer state: keep the last.
            if e.latest.is_none() {
                e.latest = restored
                    .nodes
                    .get(&e.node_id)
                    .and_then(|old| old.latest.clone());
            }
            restored.nodes.insert(e.node_id.clone(), e);
        }
        restored.files += 1;
    }
    Ok((restored, names.into_iter().map(|(_, n)| n).collect()))
}

/// The run number of a checkpoint file name (`r{run}-….ckpt`).
fn run_of(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('r')?.strip_suffix(".ckpt")?;
    rest.split('-').next()?.parse().ok()
}

fn read_file(path: &Path) -> Result<Vec<NodeCheckpointEntry>, LakeError> {
    let bytes = std::fs::read(path).map_err(LakeError::io("read", path))?;
    let bad = |why: String| LakeError::Checkpoint {
        path: path.to_path_buf(),
        why,
    };
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("not a version-1 checkpoint file".into()))?;
    let entries: Vec<FileEntry> = postcard::from_bytes(body).map_err(|e| bad(e.to_string()))?;
    entries
        .into_iter()
        .map(|e| {
            let latest = if e.latest.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(&e.latest).map_err(|x| bad(x.to_string()))?)
            };
            Ok(NodeCheckpointEntry {
                node_id: e.node_id,
                state: e.state,
                latest,
            })
        })
        .collect()
}

fn write_file<'a>(
    root: &Path,
    name: &str,
    entries: impl IntoIterator<Item = &'a NodeCheckpointEntry>,
) -> Result<(), LakeError> {
    let file: Vec<FileEntry> = entries
        .into_iter()
        .map(|e| FileEntry {
            node_id: e.node_id.clone(),
            state: e.state.clone(),
            latest: e
                .latest
                .as_ref()
                .map(|s| serde_json::to_vec(s).unwrap_or_default())
                .unwrap_or_default(),
        })
        .collect();
    let mut bytes = MAGIC.to_vec();
    bytes = postcard::to_extend(&file, bytes).map_err(|e| LakeError::Checkpoint {
        path: PathBuf::from(name),
        why: e.to_string(),
    })?;
    let tmp = staging_dir(root).join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).map_err(LakeError::io("create", &tmp))?;
    f.write_all(&bytes).map_err(LakeError::io("write", &tmp))?;
    f.sync_all().map_err(LakeError::io("fsync", &tmp))?;
    let dir = checkpoint_dir(root);
    let dest = dir.join(name);
    // The error names the file being moved (under `_staging/`), as the lake writer's renames do.
    std::fs::rename(&tmp, &dest).map_err(LakeError::io("rename", &tmp))?;
    sync_dir(&dir)
}

fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(LakeError::io("fsync", dir))
}

/// Writes one worker's checkpoint segments during a run.
#[derive(Debug)]
pub struct CheckpointWriter {
    root: PathBuf,
    run: u64,
    worker: usize,
    seq: u64,
}

impl CheckpointWriter {
    /// A writer for `worker` in `run` (from [`open_checkpoints`]).
    pub fn new(root: impl Into<PathBuf>, run: u64, worker: usize) -> Self {
        Self {
            root: root.into(),
            run,
            worker,
            seq: 0,
        }
    }

    /// Saves the nodes' checkpoints durably (nothing to do for none).
    pub fn write(&mut self, nodes: &[NodeCheckpointEntry]) -> Result<(), LakeError> {
        if nodes.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let name = format!("r{:08}-w{:04}-{:010}.ckpt", self.run, self.worker, self.seq);
        write_file(&self.root, &name, nodes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, byte: u8) -> NodeCheckpointEntry {
        NodeCheckpointEntry {
            node_id: node.into(),
            state: vec![byte; 3],
            latest: None,
        }
    }

    /// The other processes of a cluster read what the first compacts, and leave the files be.
    #[test]
    fn reading_without_compacting_sees_the_same_nodes_and_keeps_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = open_checkpoints(root).unwrap();
        let mut w0 = CheckpointWriter::new(root, first.run, 0);
        let mut w1 = CheckpointWriter::new(root, first.run, 1);
        w0.write(&[entry("a", 1)]).unwrap();
        w1.write(&[entry("b", 1)]).unwrap();
        w0.write(&[entry("a", 2)]).unwrap();
        let files = || std::fs::read_dir(checkpoint_dir(root)).unwrap().count();
        let read = read_checkpoints(root).unwrap();
        assert_eq!(files(), 3, "nothing compacted");
        let opened = open_checkpoints(root).unwrap();
        assert_eq!(files(), 1, "compacted into the base");
        assert_eq!((read.run, read.files), (opened.run, opened.files));
        assert_eq!(read.nodes, opened.nodes);
        assert_eq!(read.nodes["a"].state, vec![2; 3]);
        // After the compaction, a reader sees the base alone, and the same nodes.
        let again = read_checkpoints(root).unwrap();
        assert_eq!(again.nodes, opened.nodes);
        assert_eq!(again.run, opened.run + 1);
    }

    #[test]
    fn later_segments_win_and_opening_folds_runs_into_one_base() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let first = open_checkpoints(root).unwrap();
        assert_eq!((first.run, first.nodes.len(), first.files), (1, 0, 0));
        let mut w0 = CheckpointWriter::new(root, first.run, 0);
        let mut w1 = CheckpointWriter::new(root, first.run, 1);
        w0.write(&[entry("a", 1), entry("b", 1)]).unwrap();
        w1.write(&[entry("c", 1)]).unwrap();
        w0.write(&[entry("a", 2)]).unwrap();
        w0.write(&[]).unwrap();
        let second = open_checkpoints(root).unwrap();
        assert_eq!(second.run, 2);
        assert_eq!(second.files, 3);
        assert_eq!(second.nodes["a"].state, vec![2; 3]);
        assert_eq!(second.nodes["b"].state, vec![1; 3]);
        assert_eq!(second.nodes["c"].state, vec![1; 3]);
        // Only the new base is left; opening again reads it alone.
        let names: Vec<_> = std::fs::read_dir(checkpoint_dir(root))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["r00000002-base.ckpt".to_string()]);
        CheckpointWriter::new(root, second.run, 0)
            .write(&[entry("b", 9)])
            .unwrap();
        let third = open_checkpoints(root).unwrap();
        assert_eq!((third.run, third.files), (3, 2));
        assert_eq!(third.nodes["b"].state, vec![9; 3]);
        assert_eq!(third.nodes["a"].state, vec![2; 3]);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        open_checkpoints(root).unwrap();
        let bad = checkpoint_dir(root).join("r00000001-w0000-0000000001.ckpt");
        std::fs::write(&bad, b"KCKP1\xff\xff\xff").unwrap();
        let e = open_checkpoints(root).unwrap_err().to_string();
        assert!(e.contains("r00000001-w0000-0000000001.ckpt"), "{e}");
        std::fs::write(&bad, b"hello").unwrap();
        let e = open_checkpoints(root).unwrap_err().to_string();
        assert!(e.contains("not a version-1 checkpoint"), "{e}");
    }
}

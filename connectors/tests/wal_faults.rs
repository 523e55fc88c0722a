//! The write-ahead log on a disk that refuses a write: a group cut short by the file-size limit
//! (`EFBIG`, which a write meets as it would a full disk's `ENOSPC`) is not acknowledged, leaves
//! no partial record behind, and the log goes on once there is room again. A test binary of its
//! own: the limit (`RLIMIT_FSIZE`) holds for the whole process.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kaiabc_connectors::wal::{self, WalConfig, WalError, WalReader, WalRecord, WalWriter};

/// Appends `payload` and waits for the log's answer.
fn append(w: &WalWriter, payload: Vec<u8>) -> Result<u64, WalError> {
    let (tx, rx) = mpsc::channel();
    w.append(payload, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn read_all(r: &mut WalReader) -> Vec<WalRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        r.poll(1000, &mut out).unwrap();
    }
    out
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

/// Sets the soft limit on the size of files this process writes.
fn file_size_limit(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process's own limits, with a valid pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn payload(i: usize) -> Vec<u8> {
    format!("{{\"reading\":{i}}}").into_bytes()
}

#[test]
fn a_refused_write_is_not_acknowledged_and_leaves_no_partial_record() {
    // SAFETY: ignoring SIGXFSZ makes a write past the limit fail with EFBIG instead of ending
    // the process; nothing else in this test binary depends on that signal.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let dir = tempfile::tempdir().unwrap();
    let (w, r, _) = wal::open(WalConfig::at(dir.path())).unwrap();
    for i in 0..10 {
        assert_eq!(append(&w, payload(i)).unwrap(), i as u64);
    }
    let seg = segment(dir.path());
    let size = std::fs::metadata(&seg).unwrap().len();
    // Room for part of the next record only: the write stops halfway.
    file_size_limit(size + 100);
    let refused = append(&w, vec![b'x'; 1000]).unwrap_err();
    assert_eq!(refused.code(), "WAL_IO", "{refused}");
    assert!(refused.to_string().contains("write"), "{refused}");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        size,
        "the partial record was cut off"
    );
    // Room again: the log carries on, and the refused record never took an offset.
    file_size_limit(libc::RLIM_INFINITY);
    assert_eq!(append(&w, payload(10)).unwrap(), 10);
    w.close();
    drop((w, r));

    let (_w, mut r, recovered) = wal::open(WalConfig::at(dir.path())).unwrap();
    assert_eq!(recovered.truncated_bytes, 0, "{recovered:?}");
    let got: Vec<Vec<u8>> = read_all(&mut r).into_iter().map(|x| x.payload).collect();
    assert_eq!(got, (0..=10).map(payload).collect::<Vec<_>>());
}

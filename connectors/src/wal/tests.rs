//! Tests of the write-ahead log: order, group commit, restart from the committed offset,
//! segment deletion, a torn tail, the disk bound.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

fn cfg(dir: &std::path::Path) -> WalConfig {
    WalConfig::at(dir)
}

/// Appends `payload` and waits until it is on disk; its offset.
fn append_sync(w: &WalWriter, payload: &[u8]) -> u64 {
    let (tx, rx) = mpsc::channel();
    w.append(payload.to_vec(), Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap()
}

/// Reads until `n` records came back (or 10 s passed).
fn read_n(r: &mut WalReader, n: usize) -> Vec<WalRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n && Instant::now() < deadline {
        if r.poll(n - out.len(), &mut out).unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

#[test]
fn records_come_back_in_offset_order_and_groups_share_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (w, mut r, rec) = open(cfg(dir.path())).unwrap();
    assert_eq!(rec, Recovered::default());
    const THREADS: usize = 8;
    const EACH: usize = 500;
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let w = w.clone();
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    let payload = format!("t{t} r{i}").into_bytes();
                    let tx = tx.clone();
                    let p = payload.clone();
                    w.append(
                        payload,
                        Box::new(move |o| tx.send((o.unwrap(), p)).unwrap()),
                    );
                }
            });
        }
    });
    drop(tx);
    let acked: Vec<(u64, Vec<u8>)> = rx.iter().take(THREADS * EACH).collect();
    // Callbacks run in offset order, one per record.
    let offsets: Vec<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(offsets, (0..(THREADS * EACH) as u64).collect::<Vec<_>>());
    let got = read_n(&mut r, THREADS * EACH);
    assert_eq!(got.len(), THREADS * EACH);
    for (rec, (o, p)) in got.iter().zip(&acked) {
        assert_eq!((rec.offset, &rec.payload), (*o, p));
    }
    // Eight threads appending at once: many records per fdatasync.
    assert!(
        w.syncs() < (THREADS * EACH) as u64 / 2,
        "{} syncs for {} records",
        w.syncs(),
        THREADS * EACH
    );
    w.close();
}

#[test]
fn a_restart_resumes_at_the_committed_offset_and_covered_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.segment_bytes = 1024; // a few records per segment
    {
        let (w, mut r, _) = open(c.clone()).unwrap();
        for i in 0..200u32 {
            append_sync(&w, format!("record {i:03} {}", "x".repeat(40)).as_bytes());
        }
        let got = read_n(&mut r, 200);
        assert_eq!(got.len(), 200);
        assert!(w.segments() > 5, "{} segments", w.segments());
        let before = w.segments();
        let deleted = r.commit(150).unwrap();
        assert!(deleted > 0);
        assert_eq!(w.segments(), before - deleted);
        // No segment holding an offset >= 150 was deleted.
        let segs = frame::segments(dir.path()).unwrap();
        assert!(segs[0].first <= 150, "{:?}", segs[0]);
        w.close();
    }
    let (w, mut r, rec) = open(c).unwrap();
    assert_eq!((rec.committed, rec.end, rec.truncated_bytes), (150, 200, 0));
    let got = read_n(&mut r, 50);
    assert_eq!(got.first().map(|g| g.offset), Some(150));
    assert_eq!(got.last().map(|g| g.offset), Some(199));
    assert!(String::from_utf8_lossy(&got[0].payload).starts_with("record 150"));
    // New records carry on from the end.
    assert_eq!(append_sync(&w, b"after the restart"), 200);
    let more = read_n(&mut r, 1);
    assert_eq!(more[0].payload, b"after the restart");
    w.close();
}

#[test]
fn a_torn_tail_is_cut_off_and_writing_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (w, _r, _) = open(cfg(dir.path())).unwrap();
        for i in 0..10u32 {
            append_sync(&w, format!("whole {i}").as_bytes());
        }
        w.close();
    }
    // A crash in the middle of a write: the last record is cut short.
    let seg = frame::segments(dir.path()).unwrap().pop().unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg.path)
        .unwrap();
    f.set_len(seg.len - 3).unwrap();
    drop(f);
    let (w, mut r, rec) = open(cfg(dir.path())).unwrap();
    assert_eq!(
        rec.end, 9,
        "the cut record is gone, the nine before it are whole"
    );
    assert!(rec.truncated_bytes > 0);
    let got = read_n(&mut r, 9);
    assert_eq!(got.len(), 9);
    assert_eq!(got[8].payload, b"whole 8");
    assert_eq!(append_sync(&w, b"next"), 9);
    assert_eq!(read_n(&mut r, 1)[0].payload, b"next");
    w.close();
    drop(r);
    // Garbage after the last whole record (a sector of a write that never completed).
    let seg = frame::segments(dir.path()).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&seg.path).unwrap();
    bytes.extend_from_slice(&[0xAB; 100]);
    std::fs::write(&seg.path, &bytes).unwrap();
    let (w, mut r, rec) = open(cfg(dir.path())).unwrap();
    assert_eq!((rec.end, rec.truncated_bytes), (10, 100));
    assert_eq!(read_n(&mut r, 10).len(), 10);
    w.close();
}

#[test]
fn a_damaged_record_fails_its_checksum() {
    let mut buf = Vec::new();
    let mut h = crc32fast::Hasher::new();
    h.update(b"payload");
    frame::encode(&mut buf, 7, b"payload", &h);
    assert!(matches!(
        frame::parse(&buf),
        frame::Parsed::Record { offset: 7, .. }
    ));
    for i in [0, 5, 9, frame::HEADER + 2] {
        let mut bad = buf.clone();
        bad[i] ^= 0x10;
        assert!(
            !matches!(
                frame::parse(&bad),
                frame::Parsed::Record {
                    offset: 7,
                    payload: b"payload",
                    ..
                }
            ),
            "a flipped bit at byte {i} went unnoticed"
        );
    }
    assert_eq!(
        frame::parse(&buf[..buf.len() - 1]),
        frame::Parsed::Incomplete
    );
}

#[test]
fn appends_are_refused_beyond_the_disk_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path());
    c.max_bytes = 1000;
    let (w, _r, _) = open(c).unwrap();
    let mut refused = None;
    for _ in 0..100 {
        let (tx, rx) = mpsc::channel();
        w.append(vec![1; 100], Box::new(move |r| tx.send(r).unwrap()));
        if let Err(e) = rx.recv().unwrap() {
            refused = Some(e);
            break;
        }
    }
    let e = refused.expect("the log grew past its bound");
    assert_eq!(e.code(), "WAL_FULL");
    w.close();
    let (tx, rx) = mpsc::channel();
    w.append(vec![1], Box::new(move |r| tx.send(r).unwrap()));
    assert_eq!(rx.recv().unwrap().unwrap_err().code(), "WAL_CLOSED");
}

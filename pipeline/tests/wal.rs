//! The write-ahead log end to end: what `kaiabc run` acknowledged survives a `kill -9` before
//! any commit, a torn tail (a record cut short by power loss) is cut off on restart and the
//! rest is read again, and the log's committed segments are deleted.

mod common;

use std::time::Duration;

use common::live::{csv, launch, publish, readings_of, stop, wait_until};

/// The segments of the log in `lake/_wal`, oldest first.
fn segments(lake: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut s: Vec<_> = std::fs::read_dir(lake.join("_wal"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s
}

#[test]
fn acknowledged_readings_survive_a_kill_before_any_commit_and_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // No commit for an hour: everything acknowledged is only in the log when it dies.
    let (mut server, _, mqtt) = launch(
        &lake,
        &["--mqtt-anonymous", "--commit-interval-seconds", "3600"],
    );
    publish(mqtt, &readings_of("t", 1..=5));
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    assert_eq!(csv(&lake, "SELECT count(*) AS n FROM readings"), "n\n0\n");

    // Power loss in the middle of the last write: its record is cut short.
    let last = segments(&lake).pop().expect("a log segment");
    let len = std::fs::metadata(&last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);

    let (server, _, mqtt) = launch(
        &lake,
        &["--mqtt-anonymous", "--commit-interval-seconds", "1"],
    );
    wait_until("the readings read again from the log", || {
        (csv(&lake, "SELECT count(*) AS n FROM readings") == "n\n4\n").then_some(())
    });
    // The node never got the torn one acknowledged (in real life): it sends it again.
    publish(mqtt, &readings_of("t", 5..=5));
    let stderr = stop(server);
    assert_eq!(
        csv(
            &lake,
            "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi \
             FROM readings"
        ),
        "n,d,lo,hi\n5,5,1,5\n",
        "{stderr}"
    );
    // One state per reading, in order, as if nothing had happened.
    assert_eq!(
        csv(
            &lake,
            "SELECT count(*) AS n FROM states WHERE node_id = 't'"
        ),
        "n\n5\n"
    );
    assert!(
        stderr.contains("torn record") || stderr.contains("cut off"),
        "the cut is logged: {stderr}"
    );
}

#[test]
fn segments_a_commit_covered_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (server, _, mqtt) = launch(
        &lake,
        &["--mqtt-anonymous", "--commit-interval-seconds", "1"],
    );
    publish(mqtt, &readings_of("s", 1..=5));
    wait_until("a commit", || {
        let committed = std::fs::read_to_string(lake.join("_wal/committed")).ok()?;
        (committed.trim().parse::<u64>().ok()? >= 5).then_some(())
    });
    stop(server);
    // A restart starts a new segment at the end; the old one is wholly committed and goes.
    let (server, _, mqtt) = launch(
        &lake,
        &["--mqtt-anonymous", "--commit-interval-seconds", "1"],
    );
    publish(mqtt, &readings_of("s2", 1..=2));
    std::thread::sleep(Duration::from_millis(2500));
    stop(server);
    let segs = segments(&lake);
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert_eq!(csv(&lake, "SELECT count(*) AS n FROM readings"), "n\n7\n");
}

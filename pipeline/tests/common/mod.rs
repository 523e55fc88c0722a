//! Helpers shared by the `kaiabc` end-to-end tests: run the real binary, check its exit status.

pub mod crash;
pub mod deploy;
pub mod kafka;
pub mod live;

use std::process::{Command, Output};

/// Runs `kaiabc` with `args`.
pub fn kaiabc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kaiabc"))
        .args(args)
        .output()
        .expect("run kaiabc")
}

/// Runs `kaiabc`, asserts success, returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = kaiabc(args);
    assert!(
        out.status.success(),
        "kaiabc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

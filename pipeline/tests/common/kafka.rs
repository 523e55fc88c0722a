//! A real Kafka-protocol broker for the tests and benches: tansu, installed once by
//! `scripts/tansu.sh`, started on a free loopback port.
#![allow(dead_code)] // each test crate uses its own subset

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::live::{free_port, wait_until};

/// A child process killed when the test ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(what, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
}

/// tansu, installed by `scripts/tansu.sh` (the test command exports `KAIABC_TANSU`), working in
/// `dir` with `storage` (`sqlite://tansu.db`, relative to `dir`, or `memory://tansu/`). Returns
/// the process and its bootstrap address.
pub fn tansu(dir: &Path, storage: &str) -> (Proc, String) {
    let bin = std::env::var("KAIABC_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap())
                .join(".cache/kaiabc/tools/tansu-0.6.0/bin/tansu")
        });
    assert!(
        bin.exists(),
        "{} is missing: run scripts/tansu.sh (the test command does)",
        bin.display()
    );
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            // Relative to the working directory: tansu joins the URL's path onto it.
            "--storage-engine",
            storage,
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_for_port(port, "tansu");
    (p, format!("127.0.0.1:{port}"))
}

/// Mosquitto (Debian's, installed by `scripts/services.sh`) on a free loopback port, with
/// `settings` (lines of `mosquitto.conf`) after its listener; written into `dir`, where its
/// log (stderr: Mosquitto drops root before it could open a log file there) goes to
/// `mosquitto.log`.
pub fn mosquitto(dir: &Path, settings: &str) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\n{settings}")).unwrap();
    let bin = ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|b| Path::new(b).exists())
        .unwrap_or("mosquitto");
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = Command::new(bin)
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto (scripts/services.sh installs it)");
    let p = Proc(child);
    wait_for_port(port, "mosquitto");
    (p, port)
}

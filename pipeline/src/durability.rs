//! Whether what the server has acknowledged is being made durable in the lake: the lake sinks
//! report each failed and each successful commit here, and health, metrics and logs read it.
//! A failure is loud (an error log at its start and then once a minute, `/v1/health` degraded
//! with the reason, a counter) and never silent; it clears by itself when a commit succeeds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a failure that goes on is logged again.
const LOG_AGAIN: Duration = Duration::from_secs(60);

/// A failure under way.
#[derive(Clone, Debug)]
pub struct Failing {
    /// What failed and why (the last error).
    pub reason: String,
    /// When the first failure of this run of them happened.
    pub since: Instant,
    /// When it was last logged.
    logged: Instant,
}

/// The lake's durability, shared by the sinks (writers) and the server (readers).
#[derive(Debug, Default)]
pub struct Durability {
    failing: Mutex<Option<Failing>>,
    /// Commits (or stagings) that failed, since start.
    failures: AtomicU64,
    /// Set when the server stops: a sink then gives up retrying after a few more tries.
    stopping: AtomicBool,
}

impl Durability {
    /// A write to the lake failed (`what`: the operation, e.g. "lake commit").
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let reason = format!("{what}: {error}");
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match f.as_mut() {
            None => {
                tracing::error!(%reason, "the lake cannot be written; acknowledged data waits in the write-ahead log (or Kafka) and is retried");
                *f = Some(Failing {
                    reason,
                    since: now,
                    logged: now,
                });
            }
            Some(x) => {
                if now.duration_since(x.logged) >= LOG_AGAIN {
                    tracing::error!(%reason, failing_for_s = x.since.elapsed().as_secs(), "the lake still cannot be written");
                    x.logged = now;
                }
                x.reason = reason;
            }
        }
    }

    /// A commit succeeded: a failure under way is over.
    pub fn succeeded(&self) {
        let mut f = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(x) = f.take() {
            tracing::warn!(after_s = x.since.elapsed().as_secs_f64(), reason = %x.reason, "the lake is written again");
        }
    }

    /// The failure under way, if any.
    pub fn failing(&self) -> Option<Failing> {
        self.failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Failures since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The server is stopping.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the server is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Its figures for `/metrics` (Prometheus text format).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let failing = self.failing();
        for (name, kind, help, value) in [
            (
                "kaiabc_lake_write_failures_total",
                "counter",
                "Lake stagings and commits that failed (each is retried until it succeeds).",
                self.failures() as f64,
            ),
            (
                "kaiabc_lake_write_failing",
                "gauge",
                "1 while the lake cannot be written (acknowledged data waits in the write-ahead \
                 log or Kafka).",
                f64::from(u8::from(failing.is_some())),
            ),
            (
                "kaiabc_lake_write_failing_seconds",
                "gauge",
                "How long the lake has been failing to be written (0 when it is not).",
                failing.map_or(0.0, |f| f.since.elapsed().as_secs_f64()),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_reported_until_a_commit_succeeds() {
        let d = Durability::default();
        assert!(d.failing().is_none());
        d.failed("lake commit", &"create _staging/x: No space left on device");
        d.failed("lake commit", &"create _staging/y: No space left on device");
        let f = d.failing().unwrap();
        assert!(f.reason.contains("_staging/y"), "{}", f.reason);
        assert_eq!(d.failures(), 2);
        d.succeeded();
        assert!(d.failing().is_none());
        assert_eq!(d.failures(), 2);
    }
}

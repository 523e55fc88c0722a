//! Per-client rate limits for the HTTP API, by the contract's classes (ingestion, state
//! queries, configuration changes) as token buckets, with the `X-RateLimit-*` headers on every
//! limited response and 429 plus `Retry-After` when a bucket is empty; and the cap on a
//! client's concurrent WebSocket connections.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client may spend: requests a minute per class, and WebSocket connections at once.
/// The defaults are the API contract's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Readings submitted (single, batch or bulk) a minute per credential: for a node key,
    /// per node.
    pub ingest_per_minute: u32,
    /// State queries (every `GET`, and the `POST`s that only read) a minute per credential.
    pub query_per_minute: u32,
    /// Configuration and control changes (`PUT`, registration, commands) a minute per
    /// credential.
    pub change_per_minute: u32,
    /// WebSocket connections open at once per client (its node, or its token's subject).
    pub ws_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::CONTRACT
    }
}

impl Limits {
    /// The API contract's limits: ingestion 100 a minute per node, state queries 60 and
    /// configuration updates 10 a minute per client, 5 WebSocket connections per client.
    pub const CONTRACT: Self = Self {
        ingest_per_minute: 100,
        query_per_minute: 60,
        change_per_minute: 10,
        ws_per_client: 5,
    };

    /// The same limit for every class (tests that must not be limited).
    #[cfg(test)]
    pub fn all(per_minute: u32) -> Self {
        Self {
            ingest_per_minute: per_minute,
            query_per_minute: per_minute,
            change_per_minute: per_minute,
            ws_per_client: per_minute,
        }
    }

    fn per_minute(&self, class: Class) -> u32 {
        match class {
            Class::Ingest => self.ingest_per_minute,
            Class::Query => self.query_per_minute,
            Class::Change => self.change_per_minute,
        }
    }
}

/// The contract's rate-limit class of a request; each has its own bucket per credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Sensor readings in.
    Ingest,
    /// Reads: state, history, analytics, diagnostics.
    Query,
    /// Changes: settings, registration, control commands.
    Change,
}

impl Class {
    /// Its name, as the OpenAPI document and the 429's message give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingestion",
            Self::Query => "state queries",
            Self::Change => "configuration updates",
        }
    }
}

/// The state of one request's bucket, for the headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The class whose bucket it took from.
    pub class: Class,
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket's size (requests per minute).
    pub limit: u32,
    /// Whole requests left.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Seconds until the next request is allowed (when refused).
    pub retry_after: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by a hash of the class and the credential (so keys and tokens are not
/// kept), and the open WebSocket connections per client.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<u64, Bucket>>,
    sockets: Arc<Mutex<HashMap<u64, u32>>>,
    hasher: foldhash::quality::RandomState,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// One open WebSocket connection counted against its client; dropping it (the connection
/// closed) gives the slot back.
#[derive(Debug)]
pub struct Socket {
    key: u64,
    sockets: Arc<Mutex<HashMap<u64, u32>>>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Ok(mut open) = self.sockets.lock() {
            if let Some(n) = open.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.key);
                }
            }
        }
    }
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
            sockets: Arc::default(),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Opens a WebSocket connection for `client`, or `None` when it already has its limit's
    /// worth open.
    pub fn open_socket(&self, client: &str) -> Option<Socket> {
        let key = self.hasher.hash_one(("ws", client));
        let mut open = self.sockets.lock().ok()?;
        let n = open.entry(key).or_insert(0);
        if *n >= self.limits.ws_per_client.max(1) {
            return None;
        }
        *n += 1;
        Some(Socket {
            key,
            sockets: Arc::clone(&self.sockets),
        })
    }

    /// Takes one request of `class` from the bucket of `credential`.
    pub fn check(&self, class: Class, credential: &str, now: Instant) -> Verdict {
        let per_minute = self.limits.per_minute(class).max(1);
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let key = self.hasher.hash_one((class, credential));
        let Ok(mut buckets) = self.buckets.lock() else {
            return Verdict {
                class,
                allowed: true,
                limit: per_minute,
                remaining: per_minute,
                reset_seconds: 0,
                retry_after: 0,
            };
        };
        if buckets.len() >= MAX_BUCKETS {
            // A bucket idle for a minute is full again: forgetting it changes nothing.
            buckets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        Verdict {
            class,
            allowed,
            limit: per_minute,
            remaining: b.tokens.floor() as u32,
            reset_seconds: ((capacity - b.tokens) / rate).ceil() as u64,
            retry_after: if allowed {
                0
            } else {
                ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refuses_and_refills_at_its_rate() {
        let rl = RateLimiter::new(Limits {
            ingest_per_minute: 6,
            ..Limits::default()
        });
        let t0 = Instant::now();
        for i in 0..6 {
            let v = rl.check(Class::Ingest, "k1", t0);
            assert!(v.allowed, "{i}");
            assert_eq!(v.remaining, 5 - i);
        }
        let v = rl.check(Class::Ingest, "k1", t0);
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.retry_after, v.limit), (0, 10, 6));
        // Another credential has its own bucket; so has another class of the same one.
        assert!(rl.check(Class::Ingest, "k2", t0).allowed);
        assert_eq!(rl.check(Class::Query, "k1", t0).remaining, 59);
        assert_eq!(rl.check(Class::Change, "k1", t0).remaining, 9);
        // One token per 10 s comes back.
        assert!(
            rl.check(Class::Ingest, "k1", t0 + Duration::from_secs(10))
                .allowed
        );
        assert!(
            !rl.check(Class::Ingest, "k1", t0 + Duration::from_secs(11))
                .allowed
        );
        let full = rl.check(Class::Ingest, "k1", t0 + Duration::from_secs(600));
        assert!(full.allowed);
        assert_eq!(full.remaining, 5);
    }

    #[test]
    fn a_client_holds_its_share_of_sockets_until_they_close() {
        let rl = RateLimiter::new(Limits {
            ws_per_client: 2,
            ..Limits::default()
        });
        let a = rl.open_socket("ada").unwrap();
        let _b = rl.open_socket("ada").unwrap();
        assert!(rl.open_socket("ada").is_none());
        assert!(rl.open_socket("bob").is_some(), "another client's share");
        drop(a);
        assert!(
            rl.open_socket("ada").is_some(),
            "a closed socket's slot is back"
        );
    }
}

//! Per-credential rate limits (token buckets) for the HTTP API, with the `X-RateLimit-*`
//! headers on every limited response and 429 plus `Retry-After` when a bucket is empty.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per minute, per credential kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per node API key.
    pub node_per_minute: u32,
    /// Per bearer token.
    pub user_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            node_per_minute: 120,
            user_per_minute: 600,
        }
    }
}

/// Which kind of credential a request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `X-API-Key`.
    Node,
    /// A bearer token.
    User,
}

/// The state of one request's bucket, for the headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
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

/// Token buckets keyed by a hash of the credential (so keys and tokens are not kept).
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<u64, Bucket>>,
    hasher: foldhash::quality::RandomState,
}

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// Takes one request from the bucket of `credential`.
    pub fn check(&self, kind: Kind, credential: &str, now: Instant) -> Verdict {
        let per_minute = match kind {
            Kind::Node => self.limits.node_per_minute,
            Kind::User => self.limits.user_per_minute,
        }
        .max(1);
        let capacity = f64::from(per_minute);
        let rate = capacity / 60.0;
        let key = self.hasher.hash_one((kind as u8, credential));
        let Ok(mut buckets) = self.buckets.lock() else {
            return Verdict {
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
            node_per_minute: 6,
            user_per_minute: 60,
        });
        let t0 = Instant::now();
        for i in 0..6 {
            let v = rl.check(Kind::Node, "k1", t0);
            assert!(v.allowed, "{i}");
            assert_eq!(v.remaining, 5 - i);
        }
        let v = rl.check(Kind::Node, "k1", t0);
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.retry_after, v.limit), (0, 10, 6));
        // Another credential has its own bucket; a user's is bigger.
        assert!(rl.check(Kind::Node, "k2", t0).allowed);
        assert_eq!(rl.check(Kind::User, "k1", t0).remaining, 59);
        // One token per 10 s comes back.
        assert!(
            rl.check(Kind::Node, "k1", t0 + Duration::from_secs(10))
                .allowed
        );
        assert!(
            !rl.check(Kind::Node, "k1", t0 + Duration::from_secs(11))
                .allowed
        );
        let full = rl.check(Kind::Node, "k1", t0 + Duration::from_secs(600));
        assert!(full.allowed);
        assert_eq!(full.remaining, 5);
    }
}

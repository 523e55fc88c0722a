//! What one client address may hold or spend, shared by the MQTT gate and the HTTP API, so
//! one client cannot take what the others need:
//! - [`FailedAuth`]: after so many failed authentications in a minute an address is refused
//!   without a check until its minute is over. Each check of a node key is an argon2 hash
//!   (tens of milliseconds, 19 MiB): 500 wrong MQTT logins once made a valid login wait 3.8 s.
//! - [`Checks`]: key checks under way per address, a few at a time, so 128 wrong keys sent at
//!   once from one address queue behind each other (and are refused without a check once the
//!   address has failed its share) instead of being hashed together.
//! - [`Connections`]: connections open at once per address, under the server-wide cap: 4 096
//!   idle connections from one client filled that cap and every other client was refused.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in a minute.
pub const FAILED_PER_MINUTE: u32 = 20;

/// The window the count runs over.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses kept before those whose minute is over are dropped.
const MAX_ADDRESSES: usize = 10_000;

/// Failed authentications per client address in its current minute.
#[derive(Debug, Default)]
pub struct FailedAuth(Mutex<HashMap<IpAddr, (Instant, u32)>>);

impl FailedAuth {
    /// How long `ip` is still refused, when it has used up its failures for this minute.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        self.blocked_at(ip, Instant::now())
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (since, n) = m.get(&ip)?;
        let left = WINDOW.checked_sub(now.saturating_duration_since(*since))?;
        (*n >= FAILED_PER_MINUTE && !left.is_zero()).then_some(left)
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now());
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_ADDRESSES {
            m.retain(|_, (since, _)| now.saturating_duration_since(*since) < WINDOW);
        }
        let e = m.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

/// Key checks one address may have under way at once.
pub const CHECKS_PER_ADDRESS: usize = 4;

/// Key checks under way per client address.
#[derive(Debug, Default)]
pub struct Checks(Mutex<HashMap<IpAddr, std::sync::Arc<tokio::sync::Semaphore>>>);

/// One check's turn, given back when dropped.
#[derive(Debug)]
pub struct Turn<'a> {
    checks: &'a Checks,
    ip: IpAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Checks {
    /// Waits until `ip` may start one more key check.
    pub async fn turn(&self, ip: IpAddr) -> Turn<'_> {
        let sem = {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            std::sync::Arc::clone(m.entry(ip).or_insert_with(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(CHECKS_PER_ADDRESS))
            }))
        };
        // The semaphore is never closed.
        let permit = sem.acquire_owned().await.ok();
        Turn {
            checks: self,
            ip,
            permit,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut m = self.checks.0.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody holds or waits for a turn of this address (only the table has the
        // semaphore): forget it.
        if m.get(&self.ip).is_some_and(|s| {
            std::sync::Arc::strong_count(s) == 1 && s.available_permits() == CHECKS_PER_ADDRESS
        }) {
            m.remove(&self.ip);
        }
    }
}

/// Connections open at once per client address.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place in [`Connections`], given back when dropped.
#[derive(Debug)]
pub struct Place {
    table: std::sync::Arc<Connections>,
    ip: IpAddr,
}

impl Connections {
    /// A table allowing `max` connections per address (at least one).
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            max: max.max(1),
            open: Mutex::default(),
        })
    }

    /// The most an address may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more connection from `ip`, unless it holds its share already.
    pub fn take(self: &std::sync::Arc<Self>, ip: IpAddr) -> Option<Place> {
        let mut m = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Place {
            table: std::sync::Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut m = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_address_checks_a_few_keys_at_once_and_others_are_not_held_up() {
        let c = Checks::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut turns = Vec::new();
        for _ in 0..CHECKS_PER_ADDRESS {
            turns.push(c.turn(a).await);
        }
        let waiting = tokio::time::timeout(Duration::from_millis(50), c.turn(a)).await;
        assert!(waiting.is_err(), "one more from the same address waits");
        let other = tokio::time::timeout(Duration::from_millis(50), c.turn(b)).await;
        assert!(other.is_ok(), "another address does not wait");
        drop(other);
        turns.pop();
        let next = tokio::time::timeout(Duration::from_millis(50), c.turn(a)).await;
        assert!(next.is_ok(), "a finished check lets the next one start");
        drop(next);
        turns.clear();
        assert!(
            c.0.lock().unwrap().is_empty(),
            "idle addresses are forgotten"
        );
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_places_back() {
        let c = Connections::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p1 = c.take(a).unwrap();
        let _p2 = c.take(a).unwrap();
        assert!(c.take(a).is_none(), "a third from one address");
        assert!(c.take(b).is_some(), "another address is not affected");
        drop(p1);
        assert!(
            c.take(a).is_some(),
            "a closed connection gives its place back"
        );
        drop(c.take(b));
        assert!(!c.open.lock().unwrap().contains_key(&b), "empty entries go");
    }

    #[test]
    fn an_address_is_blocked_for_the_rest_of_its_minute_and_others_are_not() {
        let f = FailedAuth::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for i in 0..FAILED_PER_MINUTE {
            assert_eq!(f.blocked_at(a, t0), None, "after {i} failures");
            f.failed_at(a, t0);
        }
        let t1 = t0 + Duration::from_secs(15);
        assert_eq!(f.blocked_at(a, t1), Some(Duration::from_secs(45)));
        assert_eq!(f.blocked_at(b, t1), None, "another address is not blocked");
        let t2 = t0 + WINDOW;
        assert_eq!(f.blocked_at(a, t2), None, "the minute is over");
        f.failed_at(a, t2);
        assert_eq!(f.blocked_at(a, t2), None, "a new minute counts from zero");
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let f = FailedAuth::default();
        let t0 = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 {
            f.failed_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + WINDOW;
        f.failed_at("192.168.1.1".parse().unwrap(), later);
        assert_eq!(
            f.0.lock().unwrap().len(),
            1,
            "expired addresses were dropped"
        );
    }
}

//! Failed authentications per client address, shared by the MQTT gate's logins and the HTTP
//! API's keys: after so many in a minute an address is refused without a check until its
//! minute is over. Each check of a node key is an argon2 hash (tens of milliseconds, 19 MiB),
//! so one client trying many keys could otherwise hold the checking pool: 500 wrong MQTT
//! logins once made a valid login wait 3.8 s.

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

#[cfg(test)]
mod tests {
    use super::*;

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

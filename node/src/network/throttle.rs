//! Rate limits on serving `sync`, per peer: bytes per second and requests in flight.
//!
//! A sync request is a few bytes and its answer up to [`super::SyncLimits::response_bytes_max`],
//! so an unthrottled peer could make a node read and send gigabytes. [`SyncThrottle`] (plain
//! logic, time passed in) keeps a token bucket of bytes per peer: answers are charged when they
//! are sent, the bucket refills at [`SyncThrottleLimits::bytes_per_sec`] up to
//! [`SyncThrottleLimits::burst_bytes`], and a request is served only while the peer's bucket is
//! not in debt and it has fewer than [`SyncThrottleLimits::in_flight_max`] requests being
//! answered. Others are answered `Busy` at once, without reading the store.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;

/// Limits of [`SyncThrottle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncThrottleLimits {
    /// Bytes of answers per second a peer may receive, on average.
    pub bytes_per_sec: u64,
    /// Bytes a peer may receive at once after a quiet period (the bucket's size).
    pub burst_bytes: u64,
    /// Requests of one peer being answered at once.
    pub in_flight_max: u32,
}

impl Default for SyncThrottleLimits {
    fn default() -> Self {
        // A node catching up asks one request at a time; 2 MiB/s is thousands of small blocks a
        // second, and a burst holds several full answers.
        SyncThrottleLimits { bytes_per_sec: 2 << 20, burst_bytes: 16 << 20, in_flight_max: 2 }
    }
}

/// Why a request was not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    /// The peer has as many requests being answered as allowed.
    #[error("{0} sync requests already being answered")]
    InFlight(u32),
    /// The peer received its share of bytes; it may ask again once the bucket refills.
    #[error("sync byte budget spent")]
    Bytes,
}

#[derive(Clone, Debug)]
struct Budget {
    /// Bytes the peer may still receive; negative after an answer larger than what was left.
    tokens: i64,
    updated: Instant,
    in_flight: u32,
}

/// Per-peer sync budgets; see the module docs.
#[derive(Debug)]
pub struct SyncThrottle {
    limits: SyncThrottleLimits,
    peers: HashMap<PeerId, Budget>,
}

impl SyncThrottle {
    /// No peer has asked anything yet.
    pub fn new(limits: SyncThrottleLimits) -> SyncThrottle {
        SyncThrottle { limits, peers: HashMap::new() }
    }

    fn budget(&mut self, peer: PeerId, now: Instant) -> &mut Budget {
        let burst = i64::try_from(self.limits.burst_bytes).unwrap_or(i64::MAX);
        let rate = self.limits.bytes_per_sec;
        let budget =
            self.peers.entry(peer).or_insert(Budget { tokens: burst, updated: now, in_flight: 0 });
        let elapsed = now.saturating_duration_since(budget.updated);
        let refill = (u128::from(rate) * elapsed.as_micros() / 1_000_000).min(burst as u128);
        budget.tokens = budget.tokens.saturating_add(refill as i64).min(burst);
        budget.updated = now;
        budget
    }

    /// A request of `peer` arrives at `now`: admitted (and counted in flight) or throttled.
    pub fn admit(&mut self, peer: PeerId, now: Instant) -> Result<(), Throttled> {
        let in_flight_max = self.limits.in_flight_max;
        let budget = self.budget(peer, now);
        if budget.in_flight >= in_flight_max {
            return Err(Throttled::InFlight(in_flight_max));
        }
        if budget.tokens <= 0 {
            return Err(Throttled::Bytes);
        }
        budget.in_flight += 1;
        Ok(())
    }

    /// An answer of `bytes` goes to `peer` at `now`.
    pub fn charge(&mut self, peer: PeerId, bytes: usize, now: Instant) {
        let budget = self.budget(peer, now);
        budget.tokens = budget.tokens.saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A request of `peer` admitted earlier is over (answered or failed).
    pub fn ended(&mut self, peer: PeerId) {
        if let Some(budget) = self.peers.get_mut(&peer) {
            budget.in_flight = budget.in_flight.saturating_sub(1);
        }
    }

    /// `peer` disconnected: its budget is forgotten once nothing of it is in flight (a peer that
    /// reconnects starts with a full bucket, but reconnecting costs a handshake and a slot).
    pub fn forget(&mut self, peer: &PeerId) {
        if self.peers.get(peer).is_some_and(|b| b.in_flight == 0) {
            self.peers.remove(peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_peer_gets_its_rate_and_no_more_and_others_are_unaffected() {
        let limits =
            SyncThrottleLimits { bytes_per_sec: 1_000, burst_bytes: 5_000, in_flight_max: 2 };
        let mut throttle = SyncThrottle::new(limits);
        let (greedy, other) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        throttle.admit(greedy, t0).unwrap();
        throttle.admit(greedy, t0).unwrap();
        assert_eq!(throttle.admit(greedy, t0), Err(Throttled::InFlight(2)));
        // One large answer spends the burst and more.
        throttle.charge(greedy, 8_000, t0);
        throttle.ended(greedy);
        throttle.ended(greedy);
        assert_eq!(throttle.admit(greedy, t0), Err(Throttled::Bytes));
        throttle.admit(other, t0).unwrap();
        // 3 s repay the 3 000 bytes of debt; one more byte is needed.
        assert_eq!(throttle.admit(greedy, t0 + Duration::from_secs(3)), Err(Throttled::Bytes));
        throttle.admit(greedy, t0 + Duration::from_millis(3_001)).unwrap();
        // The bucket never holds more than the burst, however long the quiet.
        throttle.ended(greedy);
        let later = t0 + Duration::from_secs(3_600);
        throttle.admit(greedy, later).unwrap();
        throttle.charge(greedy, 5_000, later);
        throttle.ended(greedy);
        assert_eq!(throttle.admit(greedy, later), Err(Throttled::Bytes));
    }

    #[test]
    fn a_peer_with_nothing_in_flight_is_forgotten() {
        let mut throttle = SyncThrottle::new(SyncThrottleLimits::default());
        let peer = PeerId::random();
        let t0 = Instant::now();
        throttle.admit(peer, t0).unwrap();
        throttle.forget(&peer);
        assert_eq!(throttle.peers.len(), 1, "kept while a request is in flight");
        throttle.ended(peer);
        throttle.forget(&peer);
        assert!(throttle.peers.is_empty());
    }
}

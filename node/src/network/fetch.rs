//! Fetching a blob from whichever of its providers serves it first.
//!
//! Anyone can publish a Kademlia provider record, and a provider can take a request and never
//! answer, or answer a chunk at a time: a fetch that asked one provider after the other would sit
//! on such a provider until its deadline, so whoever runs one could choose which nodes see a blob
//! in time (a trainer could make chosen validators score its model `Unavailable`). [`fetch`]
//! therefore asks the [`FetchPlan::preferred`] providers first, in order (the blob's author,
//! then the chain's validators), and strangers after them in random order; when the blob has not
//! arrived [`FetchPlan::hedge_after`] after the last ask, it asks the next provider as well and
//! keeps every transfer running: the first whole and matching blob wins and the other transfers
//! are dropped. Each ask also starts a lookup in the background that goes on until it finds a
//! provider not known yet, so a validator that fetched the blob meanwhile (and re-provided it)
//! is found, and preferred to strangers, even where this node's own records name others. A
//! provider that failed (refused, announced too many bytes, sent bytes that do not match) is
//! asked again only after [`RETRY_PAUSE`], and only while no provider that has not failed is
//! left to ask; one that is still transferring is never asked twice.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use consensus::types::Hash;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::PeerId;
use tokio::time::Instant;

use super::blob::BlobFetchError;
use super::{NetworkClient, NetworkError};

/// How long a provider that failed is left alone before it is asked again.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// How [`fetch`] picks among a blob's providers, and until when it tries.
#[derive(Clone, Debug)]
pub struct FetchPlan {
    /// Providers asked before any other, in this order.
    pub preferred: Vec<PeerId>,
    /// How long the fetch waits on the providers it asked before it asks another one too.
    pub hedge_after: Duration,
    /// When the fetch gives up.
    pub deadline: Instant,
}

/// Whom a fetch asked, and how it went.
#[derive(Debug, Default)]
struct Asked {
    /// Providers whose transfer is still running.
    running: HashSet<PeerId>,
    /// Providers whose transfer failed, with when it failed.
    failed: HashMap<PeerId, Instant>,
}

impl Asked {
    /// The provider to ask next among `known`: the preferred ones in order, then the others;
    /// first those that never failed, then those whose failure is [`RETRY_PAUSE`] old. Never
    /// one still running.
    fn next(&self, known: &HashSet<PeerId>, preferred: &[PeerId], now: Instant) -> Option<PeerId> {
        let strangers = known.iter().filter(|p| !preferred.contains(p));
        preferred
            .iter()
            .filter(|p| known.contains(p))
            .chain(strangers)
            .filter(|p| !self.running.contains(p))
            .filter(|p| self.failed.get(p).is_none_or(|at| now >= *at + RETRY_PAUSE))
            .min_by_key(|p| self.failed.contains_key(p))
            .copied()
    }
}

/// Fetches blob `hash` of at most `size_bytes_max` bytes from its providers as [`FetchPlan`]
/// says, until one serves it whole and matching or the plan's deadline passes.
pub(super) async fn fetch(
    client: &NetworkClient,
    hash: Hash,
    size_bytes_max: u64,
    plan: &FetchPlan,
) -> Result<PathBuf, BlobFetchError> {
    let mut asked = Asked::default();
    let mut transfers = FuturesUnordered::new();
    let mut lookup: Option<BoxFuture<'_, Result<HashSet<PeerId>, NetworkError>>> = None;
    let mut known = HashSet::new();
    let mut last: Option<BlobFetchError> = None;
    // When another provider may be asked: at once, `hedge_after` after each ask, as soon as a
    // transfer fails, or as soon as a lookup finds providers while nothing transfers.
    let mut next_ask = Instant::now();
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            let asked = asked.running.len() + asked.failed.len();
            let last = match last {
                Some(error) => error.to_string(),
                None if asked == 0 => "no provider found".to_owned(),
                None => "none answered".to_owned(),
            };
            return Err(BlobFetchError::TimedOut { hash, asked, last });
        }
        if now >= next_ask {
            match asked.next(&known, &plan.preferred, now) {
                Some(peer) => {
                    asked.failed.remove(&peer);
                    asked.running.insert(peer);
                    transfers.push(async move {
                        (peer, client.fetch_blob_from(peer, hash, size_bytes_max).await)
                    });
                    next_ask = now + plan.hedge_after;
                }
                None if asked.running.is_empty() => {
                    next_ask = now + RETRY_PAUSE.min(plan.hedge_after)
                }
                None => next_ask = now + plan.hedge_after,
            }
            // Look for providers not known yet (a validator that fetched the blob since).
            if lookup.is_none() {
                lookup = Some(client.find_providers_beyond(hash, known.clone()).boxed());
            }
        }
        tokio::select! {
            found = async { lookup.as_mut().expect("checked by the guard").await }, if lookup.is_some() => {
                lookup = None;
                match found {
                    Ok(found) if found.iter().any(|p| !known.contains(p)) => {
                        known.extend(found);
                        if asked.running.is_empty() {
                            next_ask = Instant::now();
                        }
                    }
                    Ok(_) => {}
                    Err(error) => last = Some(BlobFetchError::Network(error)),
                }
            }
            Some((peer, result)) = transfers.next() => {
                asked.running.remove(&peer);
                match result {
                    Ok(path) => return Ok(path),
                    Err(error) => {
                        tracing::warn!(%peer, %hash, %error, "blob fetch from a provider failed");
                        asked.failed.insert(peer, Instant::now());
                        last = Some(error);
                        next_ask = Instant::now();
                    }
                }
            }
            _ = tokio::time::sleep_until(next_ask.min(plan.deadline)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` providers, all known, none asked yet.
    fn providers(n: usize) -> (Vec<PeerId>, HashSet<PeerId>, Asked) {
        let p: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        let known = p.iter().copied().collect();
        (p, known, Asked::default())
    }

    #[test]
    fn preferred_providers_come_first_in_order_and_strangers_after() {
        let (p, known, mut asked) = providers(4);
        let now = Instant::now();
        let preferred = [p[2], p[0], PeerId::random()];
        assert_eq!(asked.next(&known, &preferred, now), Some(p[2]));
        asked.running.insert(p[2]);
        assert_eq!(asked.next(&known, &preferred, now), Some(p[0]), "a running one is skipped");
        asked.running.insert(p[0]);
        let stranger = asked.next(&known, &preferred, now).unwrap();
        assert!(stranger == p[1] || stranger == p[3]);
        asked.running.insert(stranger);
        let other = asked.next(&known, &preferred, now).unwrap();
        assert!(other != stranger && (other == p[1] || other == p[3]));
        asked.running.insert(other);
        assert_eq!(asked.next(&known, &preferred, now), None, "every provider is transferring");
    }

    #[test]
    fn a_failed_provider_waits_its_pause_and_comes_after_fresh_ones() {
        let (p, known, mut asked) = providers(2);
        let now = Instant::now();
        asked.failed.insert(p[0], now);
        assert_eq!(asked.next(&known, &[p[0], p[1]], now), Some(p[1]), "fresh before failed");
        asked.running.insert(p[1]);
        assert_eq!(asked.next(&known, &[p[0]], now), None, "failed moments ago");
        let later = now + RETRY_PAUSE;
        assert_eq!(asked.next(&known, &[p[0]], later), Some(p[0]), "asked again after the pause");
    }
}

//! Reachability: whether peers can dial this node, how each connection runs, and the relays a
//! node behind a NAT listens through.
//!
//! Every node runs AutoNAT (v1): it asks connected peers to dial its observed addresses back and
//! so learns whether it is [`Reachability::Public`] or [`Reachability::Private`]. A validator
//! also serves circuit relay v2 ([`super::NetworkConfig::relay_server`]). A private node reserves
//! a slot on up to [`RELAYS_MAX`] member peers that offer the relay and listens through them
//! (`…/p2p/RELAY/p2p-circuit`), so a peer that must dial it can; DCUtR then tries to replace a
//! relayed connection with a direct one (a punched hole). Kademlia stays in server mode either
//! way: a private node still answers the peers connected to it (over connections it opened, or
//! through a relay), and a wrong verdict then costs a relay reservation, not the node's part in
//! finding blob providers.
//!
//! `Reach` is the bookkeeping, a plain struct the event loop feeds with connections, Identify
//! answers and AutoNAT's verdicts, and asks which relays to reserve on.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol, autonat, relay};

/// Most relays a private node listens through at once.
pub const RELAYS_MAX: usize = 2;

/// Whether peers can dial this node, as AutoNAT last found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Not known yet (no probe has answered).
    #[default]
    Unknown,
    /// A peer dialed one of its addresses back.
    Public,
    /// Peers could not dial it back: it is behind a NAT or a firewall.
    Private,
}

impl Reachability {
    /// Its lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }
}

impl From<&autonat::NatStatus> for Reachability {
    fn from(status: &autonat::NatStatus) -> Reachability {
        match status {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        }
    }
}

/// One connection to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The peer's address on it (for a relayed connection, the circuit through the relay).
    pub address: Multiaddr,
    /// Whether this node dialed it.
    pub outbound: bool,
    /// Whether it runs through a relay (`/p2p-circuit`) rather than directly.
    pub relayed: bool,
}

impl Link {
    fn new(endpoint: &ConnectedPoint) -> Link {
        let address = endpoint.get_remote_address().clone();
        let relayed = address.iter().any(|p| p == Protocol::P2pCircuit);
        Link { address, outbound: endpoint.is_dialer(), relayed }
    }
}

/// Blob bytes received from a peer (chunk data in its answers), by the kind of connection they
/// came over: so a node can tell whether an artifact came through a relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobBytes {
    /// Over direct connections (dialed by either side, or a punched hole).
    pub direct: u64,
    /// Over connections through a relay.
    pub relayed: u64,
}

/// The bookkeeping of [`self`]'s module docs.
#[derive(Debug, Default)]
pub(crate) struct Reach {
    reachability: Reachability,
    /// Open connections, by peer.
    links: HashMap<PeerId, HashMap<ConnectionId, Link>>,
    /// Blob bytes received from each connected peer since it connected.
    blob_bytes: HashMap<PeerId, BlobBytes>,
    /// Connected peers that offer the relay, with an address to reach them at.
    relays: HashMap<PeerId, Multiaddr>,
    /// Relays this node asked to listen through, with the listener.
    reserved: HashMap<PeerId, ListenerId>,
}

impl Reach {
    /// What AutoNAT last found.
    pub(crate) fn reachability(&self) -> Reachability {
        self.reachability
    }

    /// Records AutoNAT's verdict; says whether it changed.
    pub(crate) fn set_reachability(&mut self, reachability: Reachability) -> bool {
        std::mem::replace(&mut self.reachability, reachability) != reachability
    }

    /// A connection opened.
    pub(crate) fn opened(&mut self, peer: PeerId, id: ConnectionId, endpoint: &ConnectedPoint) {
        self.links.entry(peer).or_default().insert(id, Link::new(endpoint));
    }

    /// A connection closed; a peer with none left is no longer a relay candidate, and its blob
    /// byte counts are dropped.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(links) = self.links.get_mut(&peer) {
            links.remove(&id);
            if links.is_empty() {
                self.links.remove(&peer);
                self.relays.remove(&peer);
                self.blob_bytes.remove(&peer);
            }
        }
    }

    /// `peer` answered a blob request with `bytes` bytes of chunk data over connection `id`
    /// (which is open: the answer just came over it).
    pub(crate) fn blob_received(&mut self, peer: PeerId, id: ConnectionId, bytes: u64) {
        let Some(link) = self.links.get(&peer).and_then(|links| links.get(&id)) else { return };
        let counts = self.blob_bytes.entry(peer).or_default();
        let count = if link.relayed { &mut counts.relayed } else { &mut counts.direct };
        *count = count.saturating_add(bytes);
    }

    /// The blob bytes received from `peer` since it connected.
    pub(crate) fn blob_bytes(&self, peer: &PeerId) -> BlobBytes {
        self.blob_bytes.get(peer).copied().unwrap_or_default()
    }

    /// The open connections to a peer.
    pub(crate) fn links(&self, peer: &PeerId) -> Vec<Link> {
        self.links.get(peer).map(|l| l.values().cloned().collect()).unwrap_or_default()
    }

    /// A connected peer's Identify answer: it is a relay candidate if it offers the relay's hop
    /// protocol and can be reached directly, at the address this node dialed it at or else its
    /// first direct listen address.
    pub(crate) fn identified(
        &mut self,
        peer: PeerId,
        protocols: &[StreamProtocol],
        listen_addrs: &[Multiaddr],
    ) {
        let Some(links) = self.links.get(&peer) else { return };
        if !protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.relays.remove(&peer);
            return;
        }
        let direct = |a: &&Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
        let dialed = links.values().find(|l| l.outbound && !l.relayed).map(|l| &l.address);
        if let Some(address) = dialed.or_else(|| listen_addrs.iter().find(direct)) {
            self.relays.insert(peer, without_peer(address));
        }
    }

    /// The relays to reserve on now, each with the circuit address to listen on: none unless
    /// the node is private, and only members (`is_member`), up to [`RELAYS_MAX`] in all.
    pub(crate) fn relays_to_reserve(
        &self,
        is_member: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Multiaddr)> {
        if self.reachability != Reachability::Private {
            return Vec::new();
        }
        let room = RELAYS_MAX.saturating_sub(self.reserved.len());
        let mut candidates: Vec<_> = self
            .relays
            .iter()
            .filter(|(peer, _)| !self.reserved.contains_key(peer) && is_member(peer))
            .collect();
        // One order for one set of peers, whatever the map's.
        candidates.sort_by_key(|(peer, _)| **peer);
        candidates
            .into_iter()
            .take(room)
            .map(|(peer, address)| {
                (*peer, address.clone().with(Protocol::P2p(*peer)).with(Protocol::P2pCircuit))
            })
            .collect()
    }

    /// This node listens through `relay` with `listener`.
    pub(crate) fn reserving(&mut self, relay: PeerId, listener: ListenerId) {
        self.reserved.insert(relay, listener);
    }

    /// A listener closed: if it was a relay's, that relay may be chosen again.
    pub(crate) fn listener_closed(&mut self, listener: ListenerId) {
        self.reserved.retain(|_, l| *l != listener);
    }
}

/// `address` without its `/p2p/…` parts.
fn without_peer(address: &Multiaddr) -> Multiaddr {
    address.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

/// The relay server's limits: a validator relays for peers behind NATs, within bounds that keep
/// a relay's cost small (a circuit carries at most one artifact's chunks before DCUtR upgrades
/// it or it ends).
pub(crate) fn relay_server_config() -> relay::Config {
    relay::Config {
        max_reservations: 128,
        max_reservations_per_peer: 2,
        reservation_duration: Duration::from_secs(3_600),
        max_circuits: 32,
        max_circuits_per_peer: 4,
        max_circuit_duration: Duration::from_secs(600),
        max_circuit_bytes: 64 << 20,
        ..relay::Config::default()
    }
}

/// AutoNAT's timing: the first probe a second after start and a retry every 5 s until a verdict
/// is certain (the defaults, 15 s and 90 s, outlast a testnet's round), servers reused after 5 s,
/// and probes served for private addresses too (test networks run on private subnets).
pub(crate) fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(1),
        retry_interval: Duration::from_secs(5),
        refresh_interval: Duration::from_secs(300),
        throttle_server_period: Duration::from_secs(5),
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    use super::*;

    fn dialer(address: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn listener(address: &str) -> ConnectedPoint {
        ConnectedPoint::Listener {
            local_addr: "/ip4/10.0.0.9/tcp/4001".parse().unwrap(),
            send_back_addr: address.parse().unwrap(),
        }
    }

    const HOP: &[StreamProtocol] = &[relay::HOP_PROTOCOL_NAME];

    #[test]
    fn links_say_which_side_dialed_and_whether_a_relay_carries_them() {
        let mut reach = Reach::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        reach.opened(a, ConnectionId::new_unchecked(1), &dialer("/ip4/10.0.0.1/tcp/4001"));
        let circuit = format!("/ip4/10.0.0.1/tcp/4001/p2p/{a}/p2p-circuit");
        reach.opened(b, ConnectionId::new_unchecked(2), &listener(&circuit));
        assert_eq!(
            reach.links(&a),
            vec![Link {
                address: "/ip4/10.0.0.1/tcp/4001".parse().unwrap(),
                outbound: true,
                relayed: false
            }]
        );
        let to_b = &reach.links(&b)[0];
        assert!(to_b.relayed && !to_b.outbound);

        // Blob bytes count by the connection they came over; an unknown one counts nowhere.
        reach.blob_received(a, ConnectionId::new_unchecked(1), 100);
        reach.blob_received(b, ConnectionId::new_unchecked(2), 7);
        reach.blob_received(b, ConnectionId::new_unchecked(2), 3);
        reach.blob_received(b, ConnectionId::new_unchecked(9), 1_000);
        assert_eq!(reach.blob_bytes(&a), BlobBytes { direct: 100, relayed: 0 });
        assert_eq!(reach.blob_bytes(&b), BlobBytes { direct: 0, relayed: 10 });

        reach.closed(b, ConnectionId::new_unchecked(2));
        assert!(reach.links(&b).is_empty());
        assert_eq!(reach.blob_bytes(&b), BlobBytes::default(), "gone with the last connection");
    }

    #[test]
    fn a_private_node_reserves_on_member_relays_it_can_reach_directly() {
        let mut reach = Reach::default();
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for (i, peer) in peers.iter().enumerate() {
            let address = format!("/ip4/10.0.0.{}/tcp/4001/p2p/{peer}", i + 1);
            reach.opened(*peer, ConnectionId::new_unchecked(i), &dialer(&address));
        }
        // peers[0] offers no relay; peers[1..] do.
        reach.identified(peers[0], &[], &[]);
        for peer in &peers[1..] {
            reach.identified(*peer, HOP, &[]);
        }
        assert!(reach.relays_to_reserve(|_| true).is_empty(), "not private yet");
        assert!(reach.set_reachability(Reachability::Private));
        assert!(!reach.set_reachability(Reachability::Private), "no change");

        // peers[3] is not a member: only peers[1] and peers[2] qualify.
        let chosen = reach.relays_to_reserve(|p| *p != peers[3]);
        let mut expected: Vec<PeerId> = vec![peers[1], peers[2]];
        expected.sort();
        assert_eq!(chosen.iter().map(|(p, _)| *p).collect::<Vec<_>>(), expected);
        let (relay, circuit) = &chosen[0];
        let i = peers.iter().position(|p| p == relay).unwrap() + 1;
        assert_eq!(
            circuit.to_string(),
            format!("/ip4/10.0.0.{i}/tcp/4001/p2p/{relay}/p2p-circuit")
        );

        // Reserved on both: nothing more, up to RELAYS_MAX; a closed listener frees its place.
        reach.reserving(peers[1], ListenerId::next());
        let second = ListenerId::next();
        reach.reserving(peers[2], second);
        assert!(reach.relays_to_reserve(|_| true).is_empty());
        reach.listener_closed(second);
        assert_eq!(reach.relays_to_reserve(|_| true).len(), 1);

        // A relay that disconnects is no longer a candidate; a public node reserves nowhere.
        reach.closed(peers[3], ConnectionId::new_unchecked(3));
        reach.closed(peers[2], ConnectionId::new_unchecked(2));
        assert!(reach.relays_to_reserve(|_| true).is_empty());
        reach.set_reachability(Reachability::Public);
        reach.listener_closed(ListenerId::next());
        assert!(reach.relays_to_reserve(|_| true).is_empty());
    }

    #[test]
    fn a_relay_that_dialed_us_is_reached_at_its_direct_listen_address() {
        let mut reach = Reach::default();
        let relay = PeerId::random();
        reach.opened(relay, ConnectionId::new_unchecked(1), &listener("/ip4/10.0.0.5/tcp/51234"));
        let listen: Vec<Multiaddr> = vec![
            format!("/ip4/10.0.0.7/tcp/4001/p2p/{relay}/p2p-circuit").parse().unwrap(),
            "/ip4/10.0.0.5/tcp/4001".parse().unwrap(),
        ];
        reach.identified(relay, HOP, &listen);
        reach.set_reachability(Reachability::Private);
        let chosen = reach.relays_to_reserve(|_| true);
        assert_eq!(
            chosen[0].1.to_string(),
            format!("/ip4/10.0.0.5/tcp/4001/p2p/{relay}/p2p-circuit")
        );
        // A peer never identified (not connected) is not a candidate.
        reach.identified(PeerId::random(), HOP, &listen);
        assert_eq!(reach.relays_to_reserve(|_| true).len(), 1);
    }
}

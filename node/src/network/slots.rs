//! Connection slots: per-IP, per-subnet and total limits, reserved slots for the genesis
//! validators, and eviction of idle slot-fillers.
//!
//! libp2p's `connection_limits` counts connections per peer (the node uses it for that and for
//! handshakes in progress), but a PeerId costs nothing: one host with many identities could fill
//! every slot. [`Slots`] (plain logic, time
//! passed in) therefore also counts by remote IP and by subnet (/24 for IPv4, /48 for IPv6), and
//! [`SlotGuard`] applies it as a [`NetworkBehaviour`]:
//!
//! - a genesis validator (a *reserved* peer) is always admitted and never counted, so no one can
//!   keep the validators apart by filling slots;
//! - an inbound connection from another peer is refused when its IP, its subnet or the node as a
//!   whole holds as many slots as allowed, unless one of those slots is held by an *idle* peer:
//!   one that has sent nothing useful (a gossip message that passed the stateless checks, an
//!   answer to our request) for [`ConnectionLimits::idle_grace`]. That peer's connection is
//!   closed and the newcomer takes its slot, so slot-fillers make room for honest peers;
//! - a connection we dialed counts only in the total (and may likewise take an idle peer's slot);
//! - handshakes still in progress are limited per IP before the peer is known.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use super::config::ConnectionLimits;

/// Which limit refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Handshakes in progress from one IP.
    PendingPerIp,
    /// Connections from one IP.
    PerIp,
    /// Connections from one subnet.
    PerSubnet,
    /// Connections in total (besides the reserved peers').
    Total,
}

/// A connection refused by a slot limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection refused: {scope:?} limit of {limit} reached and no idle peer to evict")]
pub struct Refused {
    /// The limit.
    pub scope: Scope,
    /// Its value.
    pub limit: u32,
}

#[derive(Clone, Debug)]
struct Slot {
    peer: PeerId,
    /// The remote IP of an inbound connection; `None` for one we dialed.
    inbound_ip: Option<IpAddr>,
    opened: Instant,
}

/// The slot table: which connections hold slots, and who may take one.
#[derive(Debug)]
pub struct Slots {
    limits: ConnectionLimits,
    reserved: HashSet<PeerId>,
    slots: HashMap<ConnectionId, Slot>,
    /// Connections being closed to make room; they hold no slot any more.
    evicted: HashSet<ConnectionId>,
    pending: HashMap<ConnectionId, IpAddr>,
    /// When each peer last sent something useful.
    useful: HashMap<PeerId, Instant>,
}

/// The subnet an IP belongs to, for the per-subnet limit: /24 for IPv4, /48 for IPv6.
fn subnet(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// The IP of a multiaddr, if it has one.
fn ip_of(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Slots {
    /// An empty table; `reserved` peers (the genesis validators) are always admitted.
    pub fn new(limits: ConnectionLimits) -> Slots {
        let reserved = limits.reserved.iter().copied().collect();
        Slots {
            limits,
            reserved,
            slots: HashMap::new(),
            evicted: HashSet::new(),
            pending: HashMap::new(),
            useful: HashMap::new(),
        }
    }

    /// Whether `peer` is a reserved (genesis validator) peer.
    pub fn is_reserved(&self, peer: &PeerId) -> bool {
        self.reserved.contains(peer)
    }

    /// A handshake from `ip` starts: refused when that IP has as many in progress as allowed.
    pub fn admit_pending(&mut self, id: ConnectionId, ip: Option<IpAddr>) -> Result<(), Refused> {
        if let Some(ip) = ip {
            let limit = self.limits.pending_per_ip_max;
            if self.pending.values().filter(|p| **p == ip).count() >= limit as usize {
                return Err(Refused { scope: Scope::PendingPerIp, limit });
            }
            self.pending.insert(id, ip);
        }
        Ok(())
    }

    /// A handshake ended (the connection was established or failed).
    pub fn pending_ended(&mut self, id: ConnectionId) {
        self.pending.remove(&id);
    }

    /// Whether an established connection of `peer` may take a slot at `now`; `inbound_ip` is
    /// the remote IP of an inbound connection (`None` for one we dialed, which only the total
    /// limit counts). On success, the connection to close to make room, if one had to go.
    pub fn admit(
        &self,
        peer: &PeerId,
        inbound_ip: Option<IpAddr>,
        now: Instant,
    ) -> Result<Option<(PeerId, ConnectionId)>, Refused> {
        if self.is_reserved(peer) {
            return Ok(None);
        }
        let mut victim: Option<(PeerId, ConnectionId)> = None;
        let scopes = [
            (Scope::PerIp, self.limits.per_ip_max),
            (Scope::PerSubnet, self.limits.per_subnet_max),
            (Scope::Total, self.limits.established_total_max),
        ];
        for (scope, limit) in scopes {
            let in_scope = |slot: &Slot| match (scope, inbound_ip, slot.inbound_ip) {
                (Scope::Total, _, _) => true,
                (Scope::PerIp, Some(ip), Some(other)) => ip == other,
                (Scope::PerSubnet, Some(ip), Some(other)) => subnet(ip) == subnet(other),
                _ => false,
            };
            if matches!(scope, Scope::PerIp | Scope::PerSubnet) && inbound_ip.is_none() {
                continue;
            }
            let holders: Vec<(&ConnectionId, &Slot)> = self
                .slots
                .iter()
                .filter(|(id, slot)| {
                    !self.evicted.contains(id)
                        && !self.is_reserved(&slot.peer)
                        && victim.is_none_or(|(_, v)| v != **id)
                        && in_scope(slot)
                })
                .collect();
            if holders.len() < limit as usize {
                continue;
            }
            // One eviction per newcomer: a second full scope refuses it.
            let chosen = if victim.is_none() { self.idlest(&holders, now) } else { None };
            match chosen {
                Some(chosen) => victim = Some(chosen),
                None => return Err(Refused { scope, limit }),
            }
        }
        Ok(victim)
    }

    /// The inbound connection among `holders` whose peer has been idle longest, if idle past
    /// the grace period.
    fn idlest(
        &self,
        holders: &[(&ConnectionId, &Slot)],
        now: Instant,
    ) -> Option<(PeerId, ConnectionId)> {
        holders
            .iter()
            .filter(|(_, slot)| slot.inbound_ip.is_some())
            .map(|(id, slot)| {
                let active = self.useful.get(&slot.peer).copied().unwrap_or(slot.opened);
                (active.max(slot.opened), slot.peer, **id)
            })
            .filter(|(active, _, _)| {
                now.saturating_duration_since(*active) >= self.limits.idle_grace
            })
            .min_by_key(|(active, _, _)| *active)
            .map(|(_, peer, id)| (peer, id))
    }

    /// Marks a connection as being closed to make room: it holds no slot from now on.
    pub fn evict(&mut self, id: ConnectionId) {
        self.evicted.insert(id);
    }

    /// A connection was established (after [`Slots::admit`] let it in).
    pub fn opened(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        inbound_ip: Option<IpAddr>,
        now: Instant,
    ) {
        self.slots.insert(id, Slot { peer, inbound_ip, opened: now });
    }

    /// A connection closed.
    pub fn closed(&mut self, id: ConnectionId, peer: PeerId) {
        self.slots.remove(&id);
        self.evicted.remove(&id);
        if !self.slots.values().any(|s| s.peer == peer) {
            self.useful.remove(&peer);
        }
    }

    /// `peer` sent something useful at `now`.
    pub fn mark_useful(&mut self, peer: PeerId, now: Instant) {
        if self.slots.values().any(|s| s.peer == peer) {
            self.useful.insert(peer, now);
        }
    }

    /// Connections holding slots (reserved peers' included).
    pub fn held(&self) -> usize {
        self.slots.len() - self.evicted.len()
    }
}

/// [`Slots`] as a behaviour of the swarm.
pub(crate) struct SlotGuard {
    slots: Slots,
    to_close: VecDeque<(PeerId, ConnectionId)>,
    waker: Option<Waker>,
}

impl SlotGuard {
    pub(crate) fn new(limits: ConnectionLimits) -> SlotGuard {
        SlotGuard { slots: Slots::new(limits), to_close: VecDeque::new(), waker: None }
    }

    /// `peer` sent something useful: its slot is safe from eviction for a while.
    pub(crate) fn mark_useful(&mut self, peer: PeerId) {
        self.slots.mark_useful(peer, Instant::now());
    }

    /// Admits an established connection of `peer`, closing an idle one if it needs the room.
    fn take_slot(
        &mut self,
        peer: PeerId,
        ip: Option<IpAddr>,
    ) -> Result<dummy::ConnectionHandler, ConnectionDenied> {
        match self.slots.admit(&peer, ip, Instant::now()) {
            Ok(victim) => {
                if let Some((victim_peer, victim_id)) = victim {
                    tracing::info!(%peer, evicted = %victim_peer, ?ip, "evicting an idle peer to make room");
                    self.slots.evict(victim_id);
                    self.to_close.push_back((victim_peer, victim_id));
                    if let Some(waker) = self.waker.take() {
                        waker.wake();
                    }
                }
                Ok(dummy::ConnectionHandler)
            }
            Err(refused) => {
                tracing::debug!(%peer, ?ip, %refused, "refusing a connection");
                Err(ConnectionDenied::new(refused))
            }
        }
    }
}

impl NetworkBehaviour for SlotGuard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.slots.admit_pending(id, ip_of(remote)).map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.slots.pending_ended(id);
        self.take_slot(peer, ip_of(remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // A peer we dialed (a blob provider, say) counts only in the total.
        self.take_slot(peer, None)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let ip = match e.endpoint {
                    ConnectedPoint::Listener { send_back_addr, .. } => ip_of(send_back_addr),
                    ConnectedPoint::Dialer { .. } => None,
                };
                self.slots.opened(e.connection_id, e.peer_id, ip, Instant::now());
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { peer_id, connection_id, .. }) => {
                self.slots.closed(connection_id, peer_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.slots.pending_ended(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.to_close.pop_front() {
            Some((peer_id, id)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            }),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(reserved: Vec<PeerId>) -> ConnectionLimits {
        ConnectionLimits {
            per_ip_max: 2,
            per_subnet_max: 3,
            established_total_max: 4,
            pending_per_ip_max: 2,
            idle_grace: Duration::from_secs(10),
            reserved,
            ..ConnectionLimits::default()
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// Admits and opens a connection of a fresh peer; returns it.
    fn open(
        slots: &mut Slots,
        from: Option<IpAddr>,
        now: Instant,
    ) -> Result<(PeerId, ConnectionId), Refused> {
        let peer = PeerId::random();
        if let Some((_, victim)) = slots.admit(&peer, from, now)? {
            slots.evict(victim);
        }
        let id = ConnectionId::new_unchecked(rand_id());
        slots.opened(id, peer, from, now);
        Ok((peer, id))
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn one_ip_gets_its_share_and_validators_always_get_in() {
        let validator = PeerId::random();
        let mut slots = Slots::new(limits(vec![validator]));
        let t0 = Instant::now();
        open(&mut slots, ip("10.0.0.1"), t0).unwrap();
        open(&mut slots, ip("10.0.0.1"), t0).unwrap();
        let refused = open(&mut slots, ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::PerIp);
        open(&mut slots, ip("10.0.0.2"), t0).unwrap();
        assert_eq!(open(&mut slots, ip("10.0.0.3"), t0).unwrap_err().scope, Scope::PerSubnet);
        open(&mut slots, ip("10.0.1.1"), t0).unwrap();
        assert_eq!(open(&mut slots, ip("10.0.2.1"), t0).unwrap_err().scope, Scope::Total);
        assert_eq!(slots.admit(&PeerId::random(), None, t0).unwrap_err().scope, Scope::Total);
        // A genesis validator from the crowded IP is admitted and takes nobody's slot.
        assert_eq!(slots.admit(&validator, ip("10.0.0.1"), t0), Ok(None));
        slots.opened(ConnectionId::new_unchecked(rand_id()), validator, ip("10.0.0.1"), t0);
        assert_eq!(open(&mut slots, ip("10.0.2.1"), t0).unwrap_err().scope, Scope::Total);
        assert_eq!(slots.held(), 5);
    }

    #[test]
    fn idle_slot_fillers_make_room_and_useful_peers_keep_their_slots() {
        let mut slots = Slots::new(limits(Vec::new()));
        let t0 = Instant::now();
        let (busy, _) = open(&mut slots, ip("10.0.0.1"), t0).unwrap();
        let (idle, idle_conn) = open(&mut slots, ip("10.0.0.1"), t0).unwrap();
        // Within the grace period nobody is evicted.
        let early = t0 + Duration::from_secs(5);
        assert_eq!(
            slots.admit(&PeerId::random(), ip("10.0.0.1"), early).unwrap_err().scope,
            Scope::PerIp
        );
        let late = t0 + Duration::from_secs(11);
        slots.mark_useful(busy, t0 + Duration::from_secs(9));
        assert_eq!(
            slots.admit(&PeerId::random(), ip("10.0.0.1"), late).unwrap(),
            Some((idle, idle_conn))
        );
        // Once evicted, the idle connection holds no slot, and is not chosen twice.
        open(&mut slots, ip("10.0.0.1"), late).unwrap();
        assert_eq!(
            slots.admit(&PeerId::random(), ip("10.0.0.1"), late).unwrap_err().scope,
            Scope::PerIp
        );
        slots.closed(idle_conn, idle);
        assert_eq!(slots.held(), 2);
    }

    #[test]
    fn handshakes_in_progress_are_limited_per_ip() {
        let mut slots = Slots::new(limits(Vec::new()));
        let a = ConnectionId::new_unchecked(rand_id());
        slots.admit_pending(a, ip("10.0.0.1")).unwrap();
        slots.admit_pending(ConnectionId::new_unchecked(rand_id()), ip("10.0.0.1")).unwrap();
        let refused = slots.admit_pending(ConnectionId::new_unchecked(rand_id()), ip("10.0.0.1"));
        assert_eq!(refused.unwrap_err().scope, Scope::PendingPerIp);
        slots.admit_pending(ConnectionId::new_unchecked(rand_id()), ip("10.0.0.2")).unwrap();
        slots.pending_ended(a);
        slots.admit_pending(ConnectionId::new_unchecked(rand_id()), ip("10.0.0.1")).unwrap();
    }
}

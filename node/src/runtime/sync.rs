//! Sync bookkeeping: which peer to ask for blocks next, whether a request may start, how many
//! blocks to ask for, and whether an answer calls for another request. A plain state machine
//! with no I/O, tested below: the driver sends the requests it decides on and commits the blocks
//! that come back.
//!
//! One request is in flight at most. A peer that may be ahead (it just connected, or gossiped
//! evidence of a height ahead) is asked first; otherwise peers take turns in connection order. A
//! failed request only frees the slot: the next request by turn goes to the peer after the last
//! one asked by turn. A peer whose answer filled the request, or left the node still behind, is
//! asked again at once.

use consensus::types::Height;
use libp2p::PeerId;

use crate::network::codec::SyncRequest;

/// How far behind gossip must show the node before it syncs at once: one block behind is the
/// usual gossip lag, which the tick catches if it persists.
const BEHIND_AT_ONCE: u64 = 2;

/// A request to send: `request` to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The peer to ask.
    pub peer: PeerId,
    /// What to ask it for.
    pub request: SyncRequest,
}

/// The peers to sync from and the request in flight; see the module docs.
#[derive(Clone, Debug)]
pub struct SyncBook {
    /// Peers that passed the chain handshake, in connection order.
    peers: Vec<PeerId>,
    /// Index in `peers` of the peer asked last by turn.
    turn: usize,
    in_flight: bool,
    /// Blocks asked for in one request.
    blocks_max: u32,
}

impl SyncBook {
    /// A book with no peers, asking for `blocks_max` blocks at a time.
    pub fn new(blocks_max: u32) -> Self {
        SyncBook { peers: Vec::new(), turn: 0, in_flight: false, blocks_max }
    }

    /// How many peers there are to ask.
    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// `peer` passed the chain handshake. It may be ahead: ask it (an empty answer costs one
    /// round trip), with the ledger at `ledger`.
    pub fn connected(&mut self, peer: PeerId, ledger: Height) -> Option<Ask> {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
        self.ask(Some(peer), ledger)
    }

    /// `peer` is gone: it is asked no more (an answer already on its way still counts).
    pub fn disconnected(&mut self, peer: PeerId) {
        self.peers.retain(|p| *p != peer);
    }

    /// Gossip from `source` moved the known committed height to `target`: sync at once, from
    /// `source` first, when that is two or more blocks past the ledger's.
    pub fn shown_ahead(&mut self, source: PeerId, ledger: Height, target: Height) -> Option<Ask> {
        if target.0 >= ledger.0.saturating_add(BEHIND_AT_ONCE) {
            self.ask(Some(source), ledger)
        } else {
            None
        }
    }

    /// The periodic check: sync from the next peer by turn when behind at all.
    pub fn tick(&mut self, ledger: Height, target: Height) -> Option<Ask> {
        if target > ledger { self.ask(None, ledger) } else { None }
    }

    /// Asks for the blocks after `ledger`, from `prefer` if it is a peer, else from the next
    /// peer by turn; nothing while a request is in flight or without peers.
    pub fn ask(&mut self, prefer: Option<PeerId>, ledger: Height) -> Option<Ask> {
        if self.in_flight || self.peers.is_empty() {
            return None;
        }
        let peer = match prefer.filter(|p| self.peers.contains(p)) {
            Some(peer) => peer,
            None => {
                self.turn = (self.turn + 1) % self.peers.len();
                self.peers[self.turn]
            }
        };
        self.in_flight = true;
        Some(Ask { peer, request: SyncRequest { from: ledger.next(), count: self.blocks_max } })
    }

    /// The request in flight came back, answered or failed: another may start (while the
    /// answer's blocks are committed, too).
    pub fn answered(&mut self) {
        self.in_flight = false;
    }

    /// `answer` was answered with `received` blocks, of which `applied` were committed, leaving
    /// the ledger at `ledger` and the known committed height at `target`. Its peer is asked again
    /// if it helped and either filled the request (it may hold more) or the node is still behind.
    pub fn applied(
        &mut self,
        answer: Ask,
        received: usize,
        applied: usize,
        ledger: Height,
        target: Height,
    ) -> Option<Ask> {
        let full = received == answer.request.count as usize;
        if applied > 0 && (full || target > ledger) {
            self.ask(Some(answer.peer), ledger)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKS: u32 = 16;

    /// A book with `n` peers connected, in order, each one's first request answered.
    fn book(n: usize) -> (SyncBook, Vec<PeerId>) {
        let mut book = SyncBook::new(BLOCKS);
        let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        for peer in &peers {
            assert_eq!(book.connected(*peer, Height(0)).map(|a| a.peer), Some(*peer));
            book.answered();
        }
        (book, peers)
    }

    /// The peer of the next request by turn, answered at once.
    fn by_turn(book: &mut SyncBook) -> PeerId {
        let ask =
            book.tick(Height(3), Height(9)).expect("behind, with peers and nothing in flight");
        book.answered();
        ask.peer
    }

    #[test]
    fn a_new_peer_is_asked_for_the_blocks_after_the_ledger() {
        let mut book = SyncBook::new(BLOCKS);
        let peer = PeerId::random();
        let ask = book.connected(peer, Height(41)).unwrap();
        assert_eq!(ask, Ask { peer, request: SyncRequest { from: Height(42), count: BLOCKS } });
        assert_eq!(book.peers(), 1);
        book.answered();
        book.connected(peer, Height(41)).unwrap();
        assert_eq!(book.peers(), 1, "a peer connecting again is one peer");
    }

    #[test]
    fn peers_take_turns_in_connection_order() {
        let (mut book, peers) = book(3);
        let turns: Vec<PeerId> = (0..6).map(|_| by_turn(&mut book)).collect();
        let expected = [peers[1], peers[2], peers[0], peers[1], peers[2], peers[0]];
        assert_eq!(turns, expected);
    }

    #[test]
    fn one_request_in_flight_at_most() {
        let (mut book, peers) = book(2);
        let (ledger, far) = (Height(3), Height(20));
        assert!(book.tick(ledger, far).is_some());
        assert_eq!(book.tick(ledger, far), None);
        assert_eq!(book.ask(Some(peers[0]), ledger), None);
        assert_eq!(book.shown_ahead(peers[1], ledger, far), None);
        let late = PeerId::random();
        assert_eq!(book.connected(late, ledger), None, "a new peer waits for the answer");
        assert_eq!(book.peers(), 3, "but it is a peer");
        let answer =
            Ask { peer: peers[0], request: SyncRequest { from: Height(4), count: BLOCKS } };
        assert_eq!(book.applied(answer, 16, 16, Height(19), far), None);
        book.answered();
        assert!(book.tick(ledger, far).is_some());
    }

    #[test]
    fn a_failed_request_frees_the_slot_and_the_next_turn_goes_to_the_next_peer() {
        let (mut book, peers) = book(3);
        let failed = by_turn(&mut book);
        assert_eq!(failed, peers[1]);
        assert_eq!(by_turn(&mut book), peers[2]);
    }

    #[test]
    fn a_peer_that_left_is_asked_no_more() {
        let (mut book, peers) = book(3);
        book.disconnected(peers[1]);
        assert_eq!(book.peers(), 2);
        let turns: Vec<PeerId> = (0..4).map(|_| by_turn(&mut book)).collect();
        assert!(!turns.contains(&peers[1]), "{turns:?}");
        assert!(turns.contains(&peers[0]) && turns.contains(&peers[2]), "{turns:?}");
        // Evidence from the peer that left goes to a peer by turn.
        let ask = book.shown_ahead(peers[1], Height(3), Height(9)).unwrap();
        assert_ne!(ask.peer, peers[1]);
    }

    #[test]
    fn a_request_in_flight_outlives_its_peer() {
        let (mut book, peers) = book(2);
        let ask = book.ask(Some(peers[0]), Height(3)).unwrap();
        book.disconnected(ask.peer);
        assert_eq!(book.tick(Height(3), Height(9)), None, "its answer is still awaited");
        book.answered();
        assert_eq!(book.tick(Height(3), Height(9)).map(|a| a.peer), Some(peers[1]));
    }

    #[test]
    fn without_peers_nothing_is_asked_and_nothing_waits() {
        let mut book = SyncBook::new(BLOCKS);
        assert_eq!(book.tick(Height(3), Height(9)), None);
        assert_eq!(book.shown_ahead(PeerId::random(), Height(3), Height(9)), None);
        let peer = PeerId::random();
        assert_eq!(book.connected(peer, Height(3)).map(|a| a.peer), Some(peer));
    }

    #[test]
    fn gossip_syncs_at_once_only_two_blocks_behind_and_from_its_source() {
        let (mut book, peers) = book(3);
        let ledger = Height(10);
        assert_eq!(book.shown_ahead(peers[2], ledger, ledger), None);
        assert_eq!(book.shown_ahead(peers[2], ledger, Height(11)), None, "the usual gossip lag");
        let ask = book.shown_ahead(peers[2], ledger, Height(12)).unwrap();
        assert_eq!(ask.peer, peers[2]);
        assert_eq!(ask.request.from, Height(11));
        book.answered();
        // Asking a source out of turn leaves the turns as they were.
        assert_eq!(by_turn(&mut book), peers[1]);
    }

    #[test]
    fn the_tick_syncs_when_behind_at_all() {
        let (mut book, _) = book(2);
        assert_eq!(book.tick(Height(10), Height(10)), None);
        let ask = book.tick(Height(10), Height(11)).unwrap();
        assert_eq!(ask.request, SyncRequest { from: Height(11), count: BLOCKS });
    }

    #[test]
    fn a_useful_answer_asks_its_peer_again_while_it_may_hold_more() {
        let (mut book, peers) = book(3);
        let ask = book.shown_ahead(peers[2], Height(10), Height(40)).unwrap();
        book.answered();
        let full = BLOCKS as usize;
        // Full and applied: the peer may hold more.
        let again = book.applied(ask, full, full, Height(26), Height(26)).unwrap();
        assert_eq!(again.peer, peers[2]);
        assert_eq!(again.request.from, Height(27));
        book.answered();
        // Short, but still behind: ask again.
        assert_eq!(book.applied(ask, 3, 3, Height(13), Height(40)).map(|a| a.peer), Some(peers[2]));
        book.answered();
        // Short and caught up: done.
        assert_eq!(book.applied(ask, 3, 3, Height(13), Height(13)), None);
        // Nothing applied (an empty answer, or blocks the ledger had): done, even when full.
        assert_eq!(book.applied(ask, full, 0, Height(10), Height(40)), None);
        assert_eq!(book.applied(ask, 0, 0, Height(10), Height(40)), None);
    }
}

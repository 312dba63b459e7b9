//! The switch's logic, with no I/O: which ports a frame goes to (MAC learning, flooding), when it
//! arrives there (one-way delay with jitter, first in first out per link), whether it is lost,
//! and how many frames each link may hold.
//!
//! Time is a [`Duration`] since the switch started, handed in by the caller, and the randomness
//! comes from a seeded RNG, so the whole schedule is a function of the frames, their times and the
//! seed: the unit tests below check it without root or sockets. [`super::packet`] feeds it frames
//! from the hosts' veth ends and sends what it releases.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Duration;

use anyhow::ensure;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Bytes of an Ethernet header (destination, source, type).
pub const ETHERNET_HEADER_BYTES: usize = 14;
/// Frames one link may hold in flight; a frame arriving at a full link is dropped and counted
/// (a bounded buffer, as a real link's queue is). At 1,500 bytes a frame, 4,096 frames are 6 MB
/// in flight per link: far beyond what a testnet sends within one delay.
pub const LINK_QUEUE_FRAMES: usize = 4_096;
/// Most MAC addresses learned; beyond it, frames to unlearned addresses are flooded.
pub const MAC_TABLE_MAX: usize = 4_096;

/// How each one-way link between two hosts behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Mean one-way delay.
    pub latency: Duration,
    /// Each frame's delay is drawn uniformly from `latency ± jitter`.
    pub jitter: Duration,
    /// Share of frames lost, in `[0, 1)`, drawn independently per frame and link.
    pub loss: f64,
}

impl LinkModel {
    /// Checks that the jitter fits within the latency and the loss is a share below 1.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.jitter <= self.latency,
            "the jitter ({} ms) must not exceed the latency ({} ms)",
            self.jitter.as_millis(),
            self.latency.as_millis()
        );
        ensure!(
            (0.0..1.0).contains(&self.loss),
            "the loss must be a share in [0, 1), got {}",
            self.loss
        );
        Ok(())
    }

    /// The longest one-way delay a frame can see (before queueing behind an earlier frame).
    pub fn max_delay(&self) -> Duration {
        self.latency + self.jitter
    }
}

/// What the switch did with the frames it was given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received from the hosts.
    pub received: u64,
    /// Frame copies released to a port (a flooded frame counts once per port).
    pub delivered: u64,
    /// Frame copies dropped by the emulated loss.
    pub lost: u64,
    /// Frame copies dropped because their link's queue was full.
    pub overflow: u64,
    /// Frames too short to be Ethernet, or truncated on receipt.
    pub malformed: u64,
    /// Frame copies the port refused to send (see [`super::packet`]).
    pub send_failed: u64,
}

/// One direction between two ports: the frames in flight, oldest first.
#[derive(Debug, Default)]
struct Link {
    queue: VecDeque<(Duration, Vec<u8>)>,
    /// When the newest frame on the link arrives: a later frame never arrives before it.
    last_due: Duration,
}

/// A learning switch whose links delay and drop frames (see the module docs).
#[derive(Debug)]
pub struct Switch {
    model: LinkModel,
    ports: usize,
    queue_frames: usize,
    /// Which port each learned MAC address sits behind.
    macs: HashMap<Mac, usize>,
    /// Link `src * ports + dst`.
    links: Vec<Link>,
    /// Each queued frame's due time and link: the next frame to release is at the top.
    due: BinaryHeap<Reverse<(Duration, usize)>>,
    rng: ChaCha8Rng,
    stats: Stats,
}

impl Switch {
    /// A switch of `ports` ports whose every link follows `model`, each link holding at most
    /// `queue_frames` frames, drawing delays and losses from `seed`.
    pub fn new(ports: usize, model: LinkModel, queue_frames: usize, seed: u64) -> Switch {
        Switch {
            model,
            ports,
            queue_frames,
            macs: HashMap::new(),
            links: (0..ports * ports).map(|_| Link::default()).collect(),
            due: BinaryHeap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            stats: Stats::default(),
        }
    }

    /// What the switch did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counts a frame copy that a port failed to send.
    pub fn send_failed(&mut self) {
        self.stats.send_failed += 1;
    }

    /// Counts a frame that arrived truncated.
    pub fn malformed(&mut self) {
        self.stats.received += 1;
        self.stats.malformed += 1;
    }

    /// Takes a frame that the host on `port` sent at `now`: learns its source address, and queues
    /// a copy for each port it goes to (the learned port of its destination, or every other port
    /// for a broadcast, multicast or unlearned destination), each after its own delay, unless
    /// lost or its link is full.
    pub fn ingress(&mut self, port: usize, frame: &[u8], now: Duration) {
        assert!(port < self.ports, "port {port} of {}", self.ports);
        self.stats.received += 1;
        if frame.len() < ETHERNET_HEADER_BYTES {
            self.stats.malformed += 1;
            return;
        }
        let dst: Mac = frame[0..6].try_into().expect("6 bytes");
        let src: Mac = frame[6..12].try_into().expect("6 bytes");
        // A group address never sources a frame; only unicast sources are learned.
        if !is_group(&src) && (self.macs.len() < MAC_TABLE_MAX || self.macs.contains_key(&src)) {
            self.macs.insert(src, port);
        }
        match self.macs.get(&dst).copied().filter(|_| !is_group(&dst)) {
            // Behind the port it came from: nothing to forward.
            Some(out) if out == port => {}
            Some(out) => self.enqueue(port, out, frame, now),
            None => {
                for out in (0..self.ports).filter(|&p| p != port) {
                    self.enqueue(port, out, frame, now);
                }
            }
        }
    }

    fn enqueue(&mut self, src: usize, dst: usize, frame: &[u8], now: Duration) {
        if self.model.loss > 0.0 && self.rng.random::<f64>() < self.model.loss {
            self.stats.lost += 1;
            return;
        }
        let index = src * self.ports + dst;
        let link = &mut self.links[index];
        if link.queue.len() >= self.queue_frames {
            self.stats.overflow += 1;
            return;
        }
        let jitter = self.model.jitter.as_micros() as u64;
        let offset = if jitter == 0 { 0 } else { self.rng.random_range(0..=2 * jitter) };
        let delay = self.model.latency - self.model.jitter + Duration::from_micros(offset);
        // First in, first out: a frame waits for the one before it on the same link, as on a
        // real path, so jitter never reorders a TCP stream.
        let due = (now + delay).max(link.last_due);
        link.last_due = due;
        link.queue.push_back((due, frame.to_vec()));
        self.due.push(Reverse((due, index)));
    }

    /// When the next queued frame is due, if any is queued.
    pub fn next_due(&self) -> Option<Duration> {
        self.due.peek().map(|Reverse((due, _))| *due)
    }

    /// The next frame due by `now`, with the port to send it out of.
    pub fn pop_due(&mut self, now: Duration) -> Option<(usize, Vec<u8>)> {
        let &Reverse((due, index)) = self.due.peek()?;
        if due > now {
            return None;
        }
        self.due.pop();
        // A link's frames are due in queue order, so the heap's entry is the link's oldest frame
        // (or one with the same due time: equally good).
        let (_, frame) = self.links[index].queue.pop_front().expect("a queued frame per entry");
        self.stats.delivered += 1;
        Some((index % self.ports, frame))
    }
}

/// Whether `mac` is a group (broadcast or multicast) address.
fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROADCAST: Mac = [0xff; 6];

    fn mac(n: u8) -> Mac {
        [0x02, 0, 0, 0, 0, n]
    }

    /// A frame from `src` to `dst` whose payload is `id`.
    fn frame(dst: Mac, src: Mac, id: u32) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&id.to_be_bytes());
        f
    }

    fn id(frame: &[u8]) -> u32 {
        u32::from_be_bytes(frame[14..18].try_into().unwrap())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn model(latency: u64, jitter: u64, loss: f64) -> LinkModel {
        LinkModel { latency: ms(latency), jitter: ms(jitter), loss }
    }

    /// Every frame released by `until`, with its port and release time, polled every 100 µs.
    fn drain(switch: &mut Switch, until: Duration) -> Vec<(usize, Duration, Vec<u8>)> {
        let mut out = Vec::new();
        let mut now = Duration::ZERO;
        while now <= until {
            while let Some((port, f)) = switch.pop_due(now) {
                out.push((port, now, f));
            }
            now += Duration::from_micros(100);
        }
        out
    }

    #[test]
    fn a_frame_arrives_after_the_latency_and_not_before() {
        let mut switch = Switch::new(2, model(50, 0, 0.0), LINK_QUEUE_FRAMES, 1);
        switch.ingress(0, &frame(mac(2), mac(1), 7), ms(3));
        assert_eq!(switch.next_due(), Some(ms(53)));
        assert!(switch.pop_due(ms(52)).is_none(), "released early");
        let (port, f) = switch.pop_due(ms(53)).unwrap();
        assert_eq!((port, id(&f)), (1, 7));
        assert!(switch.pop_due(ms(100)).is_none());
        assert_eq!(switch.next_due(), None);
        assert_eq!(switch.stats().delivered, 1);
    }

    #[test]
    fn jitter_stays_in_bounds_and_never_reorders_a_link() {
        let mut switch = Switch::new(3, model(50, 10, 0.0), LINK_QUEUE_FRAMES, 9);
        // Port 1 and 2 introduce themselves (broadcasts), then port 0 streams to both.
        switch.ingress(1, &frame(BROADCAST, mac(2), 0), ms(0));
        switch.ingress(2, &frame(BROADCAST, mac(3), 0), ms(0));
        let sent: Vec<Duration> =
            (0..500).map(|i| ms(1) + Duration::from_micros(200 * i)).collect();
        for (i, &at) in (1..).zip(&sent) {
            let dst = if i % 2 == 0 { mac(2) } else { mac(3) };
            switch.ingress(0, &frame(dst, mac(1), i), at);
        }
        let out = drain(&mut switch, ms(300));
        let mut delays = Vec::new();
        for port in [1, 2] {
            let got: Vec<(Duration, u32)> = out
                .iter()
                .filter(|(p, _, f)| *p == port && id(f) > 0)
                .map(|(_, at, f)| (*at, id(f)))
                .collect();
            assert_eq!(got.len(), 250);
            let ids: Vec<u32> = got.iter().map(|(_, i)| *i).collect();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "port {port} got frames out of order");
            for (at, i) in got {
                let delay = at - sent[i as usize - 1];
                // At least latency − jitter; at most latency + jitter, plus the 100 µs poll and
                // the wait behind an earlier frame (itself within bounds).
                assert!(
                    delay >= ms(40) && delay <= ms(60) + Duration::from_micros(100),
                    "{delay:?}"
                );
                delays.push(delay);
            }
        }
        let spread =
            delays.iter().max().unwrap().as_micros() - delays.iter().min().unwrap().as_micros();
        assert!(spread > 10_000, "the jitter varies delays (spread {spread} µs)");
    }

    #[test]
    fn loss_follows_its_rate_and_its_seed() {
        let lost = |seed: u64, loss: f64| {
            let mut switch = Switch::new(2, model(1, 0, loss), usize::MAX, seed);
            for i in 0..100_000 {
                switch.ingress(0, &frame(BROADCAST, mac(1), i), Duration::ZERO);
            }
            let stats = switch.stats();
            assert_eq!(stats.lost + switch.due.len() as u64, 100_000);
            stats.lost
        };
        let one = lost(5, 0.01);
        assert!((800..=1_200).contains(&one), "{one} of 100,000 lost at 1 %");
        assert_eq!(lost(5, 0.01), one, "the same seed loses the same frames");
        assert_ne!(lost(6, 0.01), one, "another seed loses others");
        assert_eq!(lost(5, 0.0), 0);
        let ten = lost(5, 0.1);
        assert!((9_500..=10_500).contains(&ten), "{ten} of 100,000 lost at 10 %");
    }

    #[test]
    fn macs_are_learned_and_unknown_or_group_destinations_flooded() {
        let mut switch = Switch::new(4, model(1, 0, 0.0), LINK_QUEUE_FRAMES, 1);
        let ports = |switch: &mut Switch| -> Vec<usize> {
            let mut p: Vec<usize> = drain(switch, ms(10)).into_iter().map(|(p, _, _)| p).collect();
            p.sort_unstable();
            p
        };
        // Port 0's host asks for an unknown host: flooded to every other port.
        switch.ingress(0, &frame(mac(3), mac(1), 1), ms(0));
        assert_eq!(ports(&mut switch), [1, 2, 3]);
        // Port 2's host answers: port 0 is known, so only port 0 gets it.
        switch.ingress(2, &frame(mac(1), mac(3), 2), ms(0));
        assert_eq!(ports(&mut switch), [0]);
        // Now both are known: unicast goes one way only; a broadcast still floods.
        switch.ingress(0, &frame(mac(3), mac(1), 3), ms(0));
        assert_eq!(ports(&mut switch), [2]);
        switch.ingress(2, &frame(BROADCAST, mac(3), 4), ms(0));
        assert_eq!(ports(&mut switch), [0, 1, 3]);
        let multicast = [0x33, 0x33, 0, 0, 0, 1];
        switch.ingress(1, &frame(multicast, mac(2), 5), ms(0));
        assert_eq!(ports(&mut switch), [0, 2, 3]);
        // A host that moves is learned at its new port; a frame to a host behind its own port
        // is not sent back.
        switch.ingress(3, &frame(BROADCAST, mac(3), 6), ms(0));
        assert_eq!(ports(&mut switch), [0, 1, 2]);
        switch.ingress(0, &frame(mac(3), mac(1), 7), ms(0));
        assert_eq!(ports(&mut switch), [3]);
        switch.ingress(3, &frame(mac(3), mac(9), 8), ms(0));
        assert_eq!(ports(&mut switch), Vec::<usize>::new());
    }

    #[test]
    fn a_full_link_drops_and_counts_what_it_cannot_hold() {
        let mut switch = Switch::new(2, model(50, 0, 0.0), 3, 1);
        for i in 0..5 {
            switch.ingress(0, &frame(BROADCAST, mac(1), i), ms(0));
        }
        switch.ingress(0, &[0u8; 10], ms(0));
        let stats = switch.stats();
        assert_eq!((stats.received, stats.overflow, stats.malformed), (6, 2, 1));
        let out = drain(&mut switch, ms(60));
        assert_eq!(out.iter().map(|(_, _, f)| id(f)).collect::<Vec<_>>(), [0, 1, 2]);
        // Once drained, the link takes frames again.
        switch.ingress(0, &frame(BROADCAST, mac(1), 9), ms(60));
        assert_eq!(switch.stats().overflow, 2);
    }

    #[test]
    fn link_models_are_checked() {
        assert!(model(50, 10, 0.01).validate().is_ok());
        assert!(model(5, 10, 0.0).validate().is_err(), "jitter above latency");
        assert!(model(50, 0, 1.0).validate().is_err(), "all frames lost");
        assert!(model(50, 0, -0.1).validate().is_err());
        assert_eq!(model(50, 10, 0.0).max_delay(), ms(60));
    }
}

//! `testnet --hosts`: every node on a host of its own, the hosts on one emulated Ethernet segment
//! whose links have latency, jitter and loss.
//!
//! Each node runs in its own network namespace with its own IPv4 address ([`host_addr`]) on
//! `eth0`, one end of a veth pair; the other end stays in the root namespace, up, without an
//! address (and with ARP and IPv6 off, so the root namespace's stack never answers for the
//! segment). The switch is a thread of the launcher that reads and writes raw Ethernet frames on
//! those root-side ends ([`packet`]): it learns MAC addresses, floods the rest, and delivers each
//! frame after its link's one-way delay or drops it at its loss rate ([`switch`]).
//!
//! Why a switch in userspace: the kernel these tests run on has no `netem` queueing discipline
//! (and no iptables or nftables), so `tc` cannot delay or drop. Emulating the link below IP keeps
//! everything above it real: the nodes' kernel TCP sees the delay in its round trips and
//! retransmits what the switch drops, libp2p dials and Kademlia look-ups cross it, and each node
//! only knows its peers through its bootstrap list and Kademlia (mDNS is off). Each one-way link
//! (host A to host B) is first in, first out, so jitter varies the delay but does not reorder a
//! stream, as on a real path.
//!
//! The launcher reaches each node's API through a forwarder to the node's own loopback
//! ([`forward`]), outside the emulated links. Namespaces are named after the launcher's process
//! id ([`netns::PREFIX`], and the veths' root-side ends `cPIDsSERIALnHOST` in hex);
//! [`Segment`] removes everything it made when dropped (on success, failure and Ctrl-C alike),
//! and the next `--hosts` run removes what a killed run left behind.

pub mod forward;
pub mod netns;
pub mod packet;
pub mod switch;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, bail};

pub use switch::{LinkModel, Stats};

use forward::Forwarder;
use netns::{NetNs, ip};
use packet::PacketSocket;
use switch::{LINK_QUEUE_FRAMES, Switch};

/// The segment's network: host `i` has address [`host_addr`]`(i)` in `10.77.0.0/16`. Each run's
/// segment is its own (its hosts are reachable only from their namespaces), so runs at the same
/// time do not collide.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
/// The segment's prefix length.
pub const PREFIX_LEN: u8 = 16;
/// The libp2p port of every node, on its host's address.
pub const P2P_PORT: u16 = 4001;
/// The HTTP API port of every node, on its host's loopback.
pub const HTTP_PORT: u16 = 8080;
/// The link model by default: 50 ms one way, ± 10 ms, 1 % of frames lost.
pub const DEFAULT_MODEL: LinkModel = LinkModel {
    latency: std::time::Duration::from_millis(50),
    jitter: std::time::Duration::from_millis(10),
    loss: 0.01,
};

/// Segments this process has made.
static SEGMENTS: AtomicU32 = AtomicU32::new(0);

/// The address of host `i` on the segment.
pub fn host_addr(i: usize) -> Ipv4Addr {
    let offset = u32::try_from(i + 1).expect("a few hundred hosts");
    Ipv4Addr::from(u32::from(SUBNET) + offset)
}

/// One host: its namespace, the root-side end of its veth pair and the forwarder to its API.
#[derive(Debug)]
struct Host {
    /// Dropped before the namespace.
    forwarder: Option<Forwarder>,
    ns: NetNs,
    /// The veth end in the root namespace.
    outer: String,
    api: SocketAddr,
}

/// The hosts, their links and the switch between them; dropping it stops the switch and removes
/// every namespace and veth pair.
#[derive(Debug)]
pub struct Segment {
    hosts: Vec<Host>,
    model: LinkModel,
    stop: Arc<AtomicBool>,
    switch: Option<JoinHandle<io::Result<()>>>,
    stats: Arc<Mutex<Stats>>,
}

impl Segment {
    /// Makes one host per name (namespace `crucible-PID-NAME`, address [`host_addr`]), starts the
    /// switch with links following `model` (losses and jitter drawn from `seed`) and a forwarder
    /// to each host's API. Needs root. First removes what killed runs left behind, and says so.
    pub fn create(names: &[String], model: LinkModel, seed: u64) -> anyhow::Result<Segment> {
        netns::require_root()?;
        model.validate()?;
        let stale = netns::remove_stale()?;
        if !stale.is_empty() {
            eprintln!(
                "removed {} network namespaces and veths left by a killed testnet: {}",
                stale.len(),
                stale.join(", ")
            );
        }
        let mut segment = Segment {
            hosts: Vec::with_capacity(names.len()),
            model,
            stop: Arc::new(AtomicBool::new(false)),
            switch: None,
            stats: Arc::new(Mutex::new(Stats::default())),
        };
        let pid = std::process::id();
        // The kernel removes a namespace's veths some time after `ip netns delete`, so a later
        // segment of this process names its root-side ends afresh (15 characters at most: pids
        // stay below 2^22, six hex digits).
        let serial = SEGMENTS.fetch_add(1, Ordering::Relaxed);
        let mut ports = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let outer = format!("c{pid:x}s{serial:x}n{i:x}");
            segment.add_host(&format!("{}{pid}-{name}", netns::PREFIX), &outer, host_addr(i))?;
            ports.push(PacketSocket::open(&outer).with_context(|| format!("opening {outer}"))?);
        }
        let switch = Switch::new(names.len(), model, LINK_QUEUE_FRAMES, seed);
        let (stop, stats) = (segment.stop.clone(), segment.stats.clone());
        segment.switch = Some(
            std::thread::Builder::new()
                .name("hosts-switch".into())
                .spawn(move || packet::serve(&ports, switch, &stop, &stats))
                .context("starting the switch thread")?,
        );
        Ok(segment)
    }

    /// Makes namespace `ns_name` with a veth pair: `eth0` inside, with `addr`, and `outer` in
    /// the root namespace for the switch; starts the forwarder to its API.
    fn add_host(&mut self, ns_name: &str, outer: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let ns = NetNs::add(ns_name)?;
        // Made with its inner end already in the namespace, so a failure below leaves nothing in
        // the root namespace once the namespace is gone.
        ip(&["link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns_name])?;
        netns::disable_offloads(outer)?;
        // The root namespace's stack stays off the segment: no ARP answers, no IPv6 chatter
        // (a kernel without IPv6 has no such switch, which is as good).
        ip(&["link", "set", outer, "arp", "off", "up"])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{outer}/disable_ipv6"), "1");
        let fd = ns.fd()?;
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<()> {
                netns::enter(&fd).context("entering a host's namespace")?;
                netns::disable_offloads("eth0")?;
                // Sysctls under /proc/sys/net are those of the caller's namespace.
                let _ = std::fs::write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1");
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| bail!("the thread setting up {ns_name} panicked"))
        })?;
        ip(&["-n", ns_name, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", "eth0"])?;
        ip(&["-n", ns_name, "link", "set", "eth0", "up"])?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding an API forwarder")?;
        let api = listener.local_addr()?;
        let target = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
        let forwarder = Forwarder::start(listener, ns.fd()?, target)?;
        self.hosts.push(Host { forwarder: Some(forwarder), ns, outer: outer.into(), api });
        Ok(())
    }

    /// The links' model.
    pub fn model(&self) -> LinkModel {
        self.model
    }

    /// Where the launcher reaches host `i`'s API (a loopback port of the root namespace).
    pub fn api(&self, i: usize) -> SocketAddr {
        self.hosts[i].api
    }

    /// Host `i`'s namespace name.
    pub fn namespace(&self, i: usize) -> &str {
        self.hosts[i].ns.name()
    }

    /// A descriptor of host `i`'s namespace, to start its node in.
    pub fn netns(&self, i: usize) -> io::Result<OwnedFd> {
        self.hosts[i].ns.fd()
    }

    /// The switch's counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails if the switch has stopped (a socket error): the hosts are cut off from each other.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if self.switch.as_ref().is_some_and(|t| t.is_finished()) {
            let result = self.switch.take().expect("checked").join();
            match result {
                Ok(Err(err)) => bail!("the hosts' switch stopped: {err}"),
                _ => bail!("the hosts' switch stopped"),
            }
        }
        Ok(())
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(switch) = self.switch.take() {
            let _ = switch.join();
        }
        for host in &mut self.hosts {
            host.forwarder = None;
            // The pair goes at once. Left to the namespace, it would stay until the kernel frees
            // the namespace, which waits for the killed nodes' orphaned TCP sockets to give up
            // retransmitting (minutes).
            if let Err(err) = ip(&["link", "delete", &host.outer]) {
                eprintln!("warning: removing veth {}: {err:#}", host.outer);
            }
        }
        self.hosts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_get_distinct_addresses_in_the_subnet() {
        assert_eq!(host_addr(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(host_addr(254), Ipv4Addr::new(10, 77, 0, 255));
        assert_eq!(host_addr(255), Ipv4Addr::new(10, 77, 1, 0));
        let mask = u32::MAX << (32 - PREFIX_LEN);
        for i in [0, 300, 1_000] {
            assert_eq!(u32::from(host_addr(i)) & mask, u32::from(SUBNET));
        }
        DEFAULT_MODEL.validate().unwrap();
    }
}

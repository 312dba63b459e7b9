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
//! Why a switch in userspace: the kernel these tests run on has no `netem` queueing discipline,
//! so `tc` cannot delay or drop (its NAT works, once iptables is installed: see below). Emulating the link below IP keeps
//! everything above it real: the nodes' kernel TCP sees the delay in its round trips and
//! retransmits what the switch drops, libp2p dials and Kademlia look-ups cross it, and each node
//! only knows its peers through its bootstrap list and Kademlia (mDNS is off). Each one-way link
//! (host A to host B) is first in, first out, so jitter varies the delay but does not reorder a
//! stream, as on a real path.
//!
//! **Behind a NAT** (`--nat-trainers`): such a host's namespace has no port on the segment. Its
//! `eth0` is a veth to a home router of its own (namespace `…-NAME-nat`), which holds the host's
//! segment address and masquerades the private network behind it ([`LAN_HOST`] behind
//! [`LAN_ROUTER`], the kernel's own NAT through `iptables -t nat … MASQUERADE`): the host can
//! dial out, and nothing on the segment can dial in, as for a trainer at home. Its traffic
//! crosses the same emulated links.
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
/// The router's address on a NATed host's private network.
pub const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
/// A NATed host's own address, on its private network.
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);
/// The private network's prefix length.
const LAN_PREFIX_LEN: u8 = 24;
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
    /// Its home router, for a host behind a NAT (then `outer` is the router's).
    router: Option<NetNs>,
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
    /// Makes one host per name (namespace `crucible-PID-NAME`, address [`host_addr`]; the hosts
    /// whose index is in `behind_nat` behind a NAT of their own, see the module docs), starts the
    /// switch with links following `model` (losses and jitter drawn from `seed`) and a forwarder
    /// to each host's API. Needs root (and iptables for a NAT). First removes what killed runs
    /// left behind, and says so.
    pub fn create(
        names: &[String],
        behind_nat: &[usize],
        model: LinkModel,
        seed: u64,
    ) -> anyhow::Result<Segment> {
        netns::require_root()?;
        model.validate()?;
        if !behind_nat.is_empty() {
            netns::require_iptables()?;
        }
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
            let ns_name = format!("{}{pid}-{name}", netns::PREFIX);
            segment.add_host(&ns_name, &outer, host_addr(i), behind_nat.contains(&i))?;
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

    /// Makes host `ns_name` on the segment at `addr` ([`Segment::attach`]), or behind a NAT
    /// whose router is there ([`Segment::behind_router`]), and starts the forwarder to its API.
    fn add_host(
        &mut self,
        ns_name: &str,
        outer: &str,
        addr: Ipv4Addr,
        behind_nat: bool,
    ) -> anyhow::Result<()> {
        let (ns, router) = if behind_nat {
            let (ns, router) = Segment::behind_router(ns_name, outer, addr)?;
            (ns, Some(router))
        } else {
            (Segment::attach(ns_name, outer, addr)?, None)
        };
        let (api, forwarder) = Segment::forward_api(&ns)?;
        self.hosts.push(Host { forwarder: Some(forwarder), ns, router, outer: outer.into(), api });
        Ok(())
    }

    /// Makes host `ns_name` behind a home router `ns_name-nat` that is on the segment at `addr`
    /// and masquerades the host's private network; returns the host's namespace and the
    /// router's.
    fn behind_router(ns_name: &str, outer: &str, addr: Ipv4Addr) -> anyhow::Result<(NetNs, NetNs)> {
        let router_name = format!("{ns_name}-nat");
        let router = Segment::attach(&router_name, outer, addr)?;
        let ns = NetNs::add(ns_name)?;
        // The pair is made with its ends already in the router and the host.
        let pair =
            ["link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", ns_name];
        ip(&[&["-n", router_name.as_str()][..], &pair].concat())?;
        netns::in_namespace(&router.fd()?, || {
            netns::disable_offloads("lan0")?;
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .context("turning on forwarding")?;
            Ok(())
        })?;
        netns::in_namespace(&ns.fd()?, || netns::disable_offloads("eth0"))?;
        let lan = |ip: Ipv4Addr| format!("{ip}/{LAN_PREFIX_LEN}");
        ip(&["-n", &router_name, "addr", "add", &lan(LAN_ROUTER), "dev", "lan0"])?;
        ip(&["-n", &router_name, "link", "set", "lan0", "up"])?;
        ip(&["-n", ns_name, "addr", "add", &lan(LAN_HOST), "dev", "eth0"])?;
        ip(&["-n", ns_name, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns_name, "route", "add", "default", "via", &LAN_ROUTER.to_string()])?;
        netns::exec_in(
            &router_name,
            &["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE"],
        )?;
        Ok((ns, router))
    }

    /// Starts a forwarder from a root loopback port to the API port on `ns`'s loopback.
    fn forward_api(ns: &NetNs) -> anyhow::Result<(SocketAddr, Forwarder)> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding an API forwarder")?;
        let api = listener.local_addr()?;
        let target = SocketAddr::from(([127, 0, 0, 1], HTTP_PORT));
        Ok((api, Forwarder::start(listener, ns.fd()?, target)?))
    }

    /// Makes namespace `ns_name` with a veth pair: `eth0` inside, with `addr`, and `outer` in
    /// the root namespace for the switch.
    fn attach(ns_name: &str, outer: &str, addr: Ipv4Addr) -> anyhow::Result<NetNs> {
        let ns = NetNs::add(ns_name)?;
        // Made with its inner end already in the namespace, so a failure below leaves nothing in
        // the root namespace once the namespace is gone.
        ip(&["link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns_name])?;
        netns::disable_offloads(outer)?;
        // The root namespace's stack stays off the segment: no ARP answers, no IPv6 chatter
        // (a kernel without IPv6 has no such switch, which is as good).
        ip(&["link", "set", outer, "arp", "off", "up"])?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{outer}/disable_ipv6"), "1");
        netns::in_namespace(&ns.fd()?, || {
            netns::disable_offloads("eth0")?;
            // Sysctls under /proc/sys/net are those of the caller's namespace.
            let _ = std::fs::write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1");
            Ok(())
        })
        .with_context(|| format!("setting up {ns_name}"))?;
        ip(&["-n", ns_name, "addr", "add", &format!("{addr}/{PREFIX_LEN}"), "dev", "eth0"])?;
        ip(&["-n", ns_name, "link", "set", "eth0", "up"])?;
        Ok(ns)
    }

    /// The links' model.
    pub fn model(&self) -> LinkModel {
        self.model
    }

    /// Where the launcher reaches host `i`'s API (a loopback port of the root namespace).
    pub fn api(&self, i: usize) -> SocketAddr {
        self.hosts[i].api
    }

    /// Host `i`'s own address: on the segment, or on its private network behind its NAT.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        if self.behind_nat(i) { LAN_HOST } else { host_addr(i) }
    }

    /// Whether host `i` is behind a NAT of its own.
    pub fn behind_nat(&self, i: usize) -> bool {
        self.hosts[i].router.is_some()
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

//! Network namespaces and veth pairs: made and removed with iproute2's `ip`, entered with
//! `setns`, and the veths' offloads turned off with one `ioctl`.
//!
//! Every namespace this module makes starts with [`PREFIX`] and the launcher's process id, and
//! every root-side veth end names it too ([`veth_owner`]), so a run can tell its own leftovers
//! from another live run's, and [`remove_stale`] can remove what a run left when it was killed
//! before it could clean up.

// The system calls std does not wrap; each unsafe block says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};

/// The start of every namespace a testnet makes: `crucible-PID-NODE`.
pub const PREFIX: &str = "crucible-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// Fails with a clear message unless this process runs as root.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "--hosts needs root: it makes a network namespace and a veth pair per node and reads \
             and writes their frames with raw sockets (run it as root, e.g. with sudo)"
        );
    }
    Ok(())
}

/// Runs `ip ARGS`; fails with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2; --hosts needs it)")?;
    if !output.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// A named network namespace (`ip netns add`), removed when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    /// Makes namespace `name` with its loopback up.
    pub fn add(name: &str) -> anyhow::Result<NetNs> {
        ip(&["netns", "add", name])?;
        let path = Path::new(NETNS_DIR).join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let _ = ip(&["netns", "delete", name]);
                return Err(e).with_context(|| format!("opening {}", path.display()));
            }
        };
        let ns = NetNs { name: name.into(), file };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A descriptor of it, for [`enter`].
    pub fn fd(&self) -> io::Result<OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("warning: removing network namespace {}: {err:#}", self.name);
        }
    }
}

/// Moves the calling thread into the network namespace `ns` (from [`NetNs::fd`]); sockets it
/// opens afterwards belong to that namespace. Calls only `setns`, so it may run in a forked
/// child before `exec` ([`spawn_in`]).
pub fn enter(ns: &OwnedFd) -> io::Result<()> {
    // SAFETY: `ns` is an open descriptor of a network namespace; `setns` only reads it.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a thread inside the network namespace `ns` (so its sockets, interfaces and
/// `/proc/sys/net` are the namespace's), and waits for it.
pub fn in_namespace(
    ns: &OwnedFd,
    f: impl FnOnce() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns).context("entering a network namespace")?;
            f()
        })
        .join()
        .unwrap_or_else(|_| bail!("a thread working in a network namespace panicked"))
    })
}

/// Runs `command` inside the named namespace (`ip netns exec`); fails with its stderr.
pub fn exec_in(name: &str, command: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["netns", "exec", name];
    args.extend_from_slice(command);
    ip(&args)
}

/// Fails with a clear message unless `iptables` can run (a NAT is the kernel's masquerading,
/// set up with it).
pub fn require_iptables() -> anyhow::Result<()> {
    let found =
        Command::new("iptables").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        bail!(
            "--nat-trainers needs iptables, to set up the kernel's masquerading in each NAT's              namespace (Debian: apt-get install iptables)"
        );
    }
    Ok(())
}

/// Makes `command` start its process in the network namespace `ns`.
pub fn spawn_in(command: &mut Command, ns: Arc<OwnedFd>) {
    // SAFETY: the hook runs in the forked child before `exec` and only calls `setns`, which is
    // async-signal-safe; `ns` stays open, held by the hook, until the command is dropped.
    unsafe {
        command.pre_exec(move || enter(&ns));
    }
}

/// `struct ethtool_value` of `<linux/ethtool.h>`: a command and its value.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Legacy ethtool commands that turn one offload on or off.
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;
const ETHTOOL_SGSO: u32 = 0x24;

/// Turns off transmit checksumming and segmentation offloads on interface `ifname` (in this
/// process's namespace). A veth otherwise hands its peer 64 KB TCP super-frames with checksums
/// left for a hardware that does not exist; a raw socket would receive them as they are, and the
/// switch could neither send them on (too long for the MTU) nor have them accepted (bad
/// checksums). With these off, the sending kernel cuts and checksums every frame itself.
pub fn disable_offloads(ifname: &str) -> anyhow::Result<()> {
    let name = CString::new(ifname)?;
    anyhow::ensure!(name.as_bytes().len() < libc::IFNAMSIZ, "interface name {ifname} too long");
    // SAFETY: plain system call; the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error()).context("opening a socket for ethtool");
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    for cmd in [ETHTOOL_STSO, ETHTOOL_SGSO, ETHTOOL_STXCSUM] {
        let mut value = EthtoolValue { cmd, data: 0 };
        // SAFETY: an all-zero `ifreq` is a valid value of this plain C struct.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&raw mut value).cast();
        // SAFETY: `req` names the interface (NUL-terminated: zeroed beyond the name) and points
        // at `value`, an `ethtool_value` that outlives the call, as SIOCETHTOOL expects.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("turning off offload {cmd:#x} on {ifname}"));
        }
    }
    Ok(())
}

/// The launcher process that made namespace `name`, if it is one of this module's.
pub fn owner(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// The launcher process that made veth end `name` (`cPIDsSERIALnHOST`, numbers in hex), if it
/// is one of [`super::Segment`]'s.
pub fn veth_owner(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix('c')?.split_once('s')?;
    let (serial, host) = rest.split_once('n')?;
    let hex = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit());
    (hex(serial) && hex(host)).then_some(())?;
    u32::from_str_radix(pid, 16).ok()
}

/// Removes the namespaces and root-side veth ends left by testnets whose launcher no longer
/// runs; returns their names. Another live run's are left alone.
pub fn remove_stale() -> anyhow::Result<Vec<String>> {
    let dead = |pid: u32| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
    let mut removed = Vec::new();
    for name in names_in(NETNS_DIR)? {
        if owner(&name).is_some_and(dead) {
            ip(&["netns", "delete", &name])
                .with_context(|| format!("removing {name}, left by a killed testnet"))?;
            removed.push(name);
        }
    }
    for name in names_in("/sys/class/net")? {
        if veth_owner(&name).is_some_and(dead) {
            ip(&["link", "delete", &name])
                .with_context(|| format!("removing veth {name}, left by a killed testnet"))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// The names in directory `dir` (none if it does not exist).
fn names_in(dir: &str) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {dir}")),
    };
    entries
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()
        .with_context(|| format!("listing {dir}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_names_the_run_that_made_it() {
        assert_eq!(owner("crucible-4242-validator-0"), Some(4242));
        assert_eq!(owner("crucible-4242"), Some(4242));
        assert_eq!(owner("crucible-x-validator-0"), None);
        assert_eq!(owner("other-4242-validator-0"), None);
        assert_eq!(veth_owner("c1092s0n1f"), Some(0x1092));
        assert_eq!(veth_owner("c3fffffs1an0"), Some(0x3fffff));
        for other in ["eth0", "cni0", "c12s0", "c12sxn1", "cafe", "c12s0n"] {
            assert_eq!(veth_owner(other), None, "{other}");
        }
    }
}

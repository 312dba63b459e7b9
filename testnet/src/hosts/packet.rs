//! The switch's I/O: one `AF_PACKET` raw socket per port, bound to the root-side end of a host's
//! veth pair, and the thread that moves frames between them through a [`Switch`].
//!
//! The only unsafe code here is the four system calls of a packet socket (`socket`, `bind`,
//! `recvfrom`, `send`) and `poll`, each with the buffer or address it is given checked in place.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::switch::{Stats, Switch};

/// Largest frame read: more than any veth MTU, so a frame that does not fit is a frame the
/// offloads were meant to prevent (counted as malformed, not forwarded).
const FRAME_BYTES_MAX: usize = 65_536;
/// Longest the switch thread sleeps before it checks whether to stop.
const IDLE_WAKE: Duration = Duration::from_millis(50);

/// A raw socket that receives every frame a host sends into its veth, and sends frames to it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a non-blocking packet socket bound to interface `ifname` (in this process's network
    /// namespace) for every protocol.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let name = CString::new(ifname).map_err(io::Error::other)?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system call; the returned descriptor is owned at once below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero `sockaddr_ll` is a valid value of this plain C struct.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid `sockaddr_ll` and the length passed is its size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// The next frame its host sent, into `buf`: `Ok(Some(len))` (a `len` above `buf.len()`
    /// means the frame was truncated), `Ok(None)` when none is waiting. Frames going out of the
    /// interface (the switch's own, or the root namespace's) are skipped.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: as in `open`.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf` is writable for `buf.len()` bytes and `from` for `from_len`; with
            // MSG_TRUNC the result is the frame's real length, but at most `buf.len()` is written.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(None),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(Some(n as usize));
            }
        }
    }

    /// Sends `frame` to its host.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is readable for `frame.len()` bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// Runs the switch until `stop` is raised: waits (in `poll`) until a port has a frame or the next
/// queued frame is due, feeds every waiting frame to `switch`, sends every frame due, and
/// publishes the switch's counters into `stats` after each pass.
pub fn serve(
    ports: &[PacketSocket],
    mut switch: Switch,
    stop: &AtomicBool,
    stats: &Arc<Mutex<Stats>>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut fds: Vec<libc::pollfd> = ports
        .iter()
        .map(|p| libc::pollfd { fd: p.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let mut buf = vec![0u8; FRAME_BYTES_MAX];
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        let wait =
            switch.next_due().map_or(IDLE_WAKE, |due| due.saturating_sub(now).min(IDLE_WAKE));
        // Rounded up: a frame is never released before its time.
        let wait_ms = wait.as_micros().div_ceil(1_000) as libc::c_int;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        for (port, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            while let Some(len) = ports[port].recv(&mut buf)? {
                if len > buf.len() {
                    switch.malformed();
                } else {
                    switch.ingress(port, &buf[..len], start.elapsed());
                }
            }
        }
        let now = start.elapsed();
        while let Some((port, frame)) = switch.pop_due(now) {
            if ports[port].send(&frame).is_err() {
                switch.send_failed();
            }
        }
        *stats.lock().unwrap_or_else(|e| e.into_inner()) = switch.stats();
    }
    Ok(())
}

//! How the launcher reaches each node's HTTP API: a TCP forwarder from a loopback port of the
//! root namespace to the node's loopback API inside its namespace.
//!
//! The node keeps its API on its own `127.0.0.1`, as an operator's node does: the loopback-only
//! writes (`POST /blobs`, which the launcher uses to hand validators the task's files) stay
//! loopback-only, and the API's traffic never crosses the emulated network, so it neither
//! delays the launcher's polls nor takes a share of the links' loss. Each connection is opened
//! by a thread that has entered the node's namespace ([`super::netns::enter`]).

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns;

/// Most connections forwarded at once per node; more are refused (the launcher's client keeps
/// a handful open).
pub const CONNECTIONS_MAX: usize = 64;
/// How often the accept loop checks whether to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(10);

/// Forwards connections to one node's API until dropped.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Forwards every connection `listener` accepts to `target` inside namespace `ns`.
    pub fn start(listener: TcpListener, ns: OwnedFd, target: SocketAddr) -> io::Result<Forwarder> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let ns = Arc::new(ns);
        let open = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if open.load(Ordering::Relaxed) < CONNECTIONS_MAX => {
                        let (ns, open) = (ns.clone(), open.clone());
                        open.fetch_add(1, Ordering::Relaxed);
                        std::thread::spawn(move || {
                            // A failed connection closes the client's; the node may be down.
                            let _ = forward(client, &ns, target);
                            open.fetch_sub(1, Ordering::Relaxed);
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(ACCEPT_POLL),
                }
            }
        });
        Ok(Forwarder { stop, thread: Some(thread) })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects to `target` from inside `ns` and copies both ways until either side closes.
fn forward(client: TcpStream, ns: &OwnedFd, target: SocketAddr) -> io::Result<()> {
    client.set_nonblocking(false)?;
    // This thread lives only for this connection, so it may stay in the node's namespace.
    netns::enter(ns)?;
    let node = TcpStream::connect(target)?;
    let (mut client_in, mut node_out) = (client.try_clone()?, node.try_clone()?);
    let upstream = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut node_out);
        let _ = node_out.shutdown(Shutdown::Write);
    });
    let (mut node_in, mut client_out) = (node, client);
    let _ = io::copy(&mut node_in, &mut client_out);
    // The node is done (answered and closed, or gone): so is the client's side, which also ends
    // the upstream copy if the client keeps its end open.
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}

//! Bytes on the wire: every TCP connection of the swarm counts what it reads and writes (Noise
//! and Yamux framing included, so what the OS moves), for `/metrics`.

use std::io::{IoSlice, IoSliceMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};

/// Bytes read from and written to every connection since the node started.
#[derive(Debug, Default)]
pub struct Traffic {
    inbound: AtomicU64,
    outbound: AtomicU64,
}

impl Traffic {
    /// Bytes received.
    pub fn inbound(&self) -> u64 {
        self.inbound.load(Ordering::Relaxed)
    }

    /// Bytes sent.
    pub fn outbound(&self) -> u64 {
        self.outbound.load(Ordering::Relaxed)
    }
}

/// A connection's byte stream that adds what passes through it to a [`Traffic`].
#[derive(Debug)]
pub(crate) struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> Counted<S> {
    /// Counts `inner`'s bytes into `traffic`.
    pub(crate) fn new(inner: S, traffic: Arc<Traffic>) -> Counted<S> {
        Counted { inner, traffic }
    }
}

/// Adds the byte count of a successful read or write to `counter`.
fn count(counter: &AtomicU64, poll: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
    if let Poll::Ready(Ok(n)) = poll {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    poll
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        count(&this.traffic.inbound, Pin::new(&mut this.inner).poll_read(cx, buf))
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        count(&this.traffic.inbound, Pin::new(&mut this.inner).poll_read_vectored(cx, bufs))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        count(&this.traffic.outbound, Pin::new(&mut this.inner).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        count(&this.traffic.outbound, Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::io::{AsyncReadExt, AsyncWriteExt, Cursor};

    use super::*;

    #[tokio::test]
    async fn reads_and_writes_are_counted() {
        let traffic = Arc::new(Traffic::default());
        let mut stream = Counted::new(Cursor::new(vec![7u8; 100]), traffic.clone());
        let mut buf = [0u8; 30];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!((traffic.inbound(), traffic.outbound()), (30, 0));
        stream.write_all(&[1; 12]).await.unwrap();
        assert_eq!((traffic.inbound(), traffic.outbound()), (30, 12));
    }
}

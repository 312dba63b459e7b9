//! Wire formats of the request-response protocols, with explicit limits.
//!
//! Every message is one frame: a 4-byte big-endian length, then the body. The length is checked
//! against the protocol's limit before a byte of the body is read or a buffer allocated, and
//! bodies decode with [`consensus::encoding::decode`], which rejects trailing bytes. A blob chunk
//! response is laid out by hand (tag, blob size, raw bytes) so a chunk is read straight into its
//! buffer (a reused one, see [`crate::blobs`]) without a second copy, and written with its header
//! in one write and its bytes in another.

use std::io;
use std::marker::PhantomData;

use consensus::encoding::{decode, encode};
use consensus::types::{Hash, Height};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::gossip::CommittedBlock;
use super::handshake::{Status, StatusResponse};
use crate::blobs::{chunk_buffer, recycle_chunk};

/// Largest sync or blob request frame, and largest status frame either way, in bytes (a request
/// is a few ids and numbers; a status a chain id and a hash, its refusal a line of text).
pub const REQUEST_BYTES_MAX: usize = 1 << 10;

/// Bytes of a blob chunk frame before its data: tag (1) and blob size (8).
const CHUNK_HEADER_BYTES: usize = 9;

/// Asks for blocks `from`, `from + 1`, … with their commit certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The first height wanted.
    pub from: Height,
    /// How many blocks, at most; the server may send fewer (its limits, or its tip).
    pub count: u32,
}

/// The answer to a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// Consecutive committed blocks from the requested height (empty: the server has none).
    Blocks(Vec<CommittedBlock>),
    /// The server could not read its store.
    Unavailable,
    /// The server is throttling the requester (too many bytes or requests); ask later.
    Busy,
}

/// Asks for `length` bytes of blob `hash` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    /// The blob's sha256.
    pub hash: Hash,
    /// First byte wanted.
    pub offset: u64,
    /// Bytes wanted; the server cuts at the blob's end and at its chunk limit.
    pub length: u32,
}

/// The answer to a [`BlobRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobResponse {
    /// Bytes from the requested offset, and the whole blob's size.
    Chunk {
        /// The whole blob's size, in bytes.
        size_bytes: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The server does not hold the blob.
    NotFound,
    /// The range starts past the blob's end.
    BadRange,
    /// The server is serving as many requests as it allows; retry later.
    Busy,
}

const TAG_CHUNK: u8 = 0;
const TAG_NOT_FOUND: u8 = 1;
const TAG_BAD_RANGE: u8 = 2;
const TAG_BUSY: u8 = 3;

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads a frame's length and checks it against `limit` before anything else is read.
async fn read_len<T: AsyncRead + Unpin>(io: &mut T, limit: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(invalid(format_args!("frame of {len} bytes is over the limit of {limit}")));
    }
    Ok(len)
}

async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, limit: usize) -> io::Result<Vec<u8>> {
    let len = read_len(io, limit).await?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes a frame whose body is `head` then `tail`. The length and `head` go out in one write
/// (each write becomes at least one Yamux frame), `tail` without being copied first.
async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    head: &[u8],
    tail: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(head.len() + tail.len()).map_err(|_| invalid("frame over 4 GiB"))?;
    let mut first = Vec::with_capacity(4 + head.len());
    first.extend_from_slice(&len.to_be_bytes());
    first.extend_from_slice(head);
    io.write_all(&first).await?;
    if !tail.is_empty() {
        io.write_all(tail).await?;
    }
    // The request-response handler flushes and closes the stream after this.
    Ok(())
}

/// A message of a request-response protocol framed by [`FrameCodec`].
pub trait Frame: Serialize + DeserializeOwned + Send {
    /// What it is, for errors.
    const WHAT: &'static str;
}

impl Frame for SyncRequest {
    const WHAT: &'static str = "sync request";
}

impl Frame for SyncResponse {
    const WHAT: &'static str = "sync response";
}

impl Frame for Status {
    const WHAT: &'static str = "status";
}

impl Frame for StatusResponse {
    const WHAT: &'static str = "status answer";
}

/// A codec of one postcard frame each way: a request of at most [`REQUEST_BYTES_MAX`], a
/// response of at most `response_bytes_max`, checked on reading and on writing.
#[derive(Debug)]
pub struct FrameCodec<Req, Resp> {
    /// Largest response frame read or written, in bytes.
    pub response_bytes_max: usize,
    messages: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> FrameCodec<Req, Resp> {
    /// A codec whose responses are at most `response_bytes_max` bytes.
    pub const fn new(response_bytes_max: usize) -> Self {
        FrameCodec { response_bytes_max, messages: PhantomData }
    }
}

impl<Req, Resp> Clone for FrameCodec<Req, Resp> {
    fn clone(&self) -> Self {
        FrameCodec::new(self.response_bytes_max)
    }
}

/// The `sync` protocol's codec.
pub type SyncCodec = FrameCodec<SyncRequest, SyncResponse>;

/// The `status` protocol's codec: frames of at most [`REQUEST_BYTES_MAX`] both ways.
pub type StatusCodec = FrameCodec<Status, StatusResponse>;

impl Default for StatusCodec {
    fn default() -> Self {
        FrameCodec::new(REQUEST_BYTES_MAX)
    }
}

impl<Req: Frame, Resp: Frame> Codec for FrameCodec<Req, Resp> {
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, REQUEST_BYTES_MAX).await?;
        decode(Req::WHAT, &body, REQUEST_BYTES_MAX).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, self.response_bytes_max).await?;
        decode(Resp::WHAT, &body, self.response_bytes_max).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Req,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&request), &[]).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let body = encode(&response);
        if body.len() > self.response_bytes_max {
            return Err(invalid(format_args!(
                "{} of {} bytes is over the limit of {}",
                Resp::WHAT,
                body.len(),
                self.response_bytes_max
            )));
        }
        write_frame(io, &[], &body).await
    }
}

/// The `blob` protocol's codec: a chunk response at most `chunk_bytes_max` bytes of data.
#[derive(Clone, Debug)]
pub struct BlobCodec {
    /// Largest chunk read, in bytes.
    pub chunk_bytes_max: usize,
}

impl Codec for BlobCodec {
    type Protocol = StreamProtocol;
    type Request = BlobRequest;
    type Response = BlobResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let body = read_frame(io, REQUEST_BYTES_MAX).await?;
        decode("blob request", &body, REQUEST_BYTES_MAX).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<BlobResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let len = read_len(io, self.chunk_bytes_max + CHUNK_HEADER_BYTES).await?;
        if len == 0 {
            return Err(invalid("empty blob response"));
        }
        let mut tag = [0u8; 1];
        io.read_exact(&mut tag).await?;
        let simple =
            |response| if len == 1 { Ok(response) } else { Err(invalid("trailing bytes")) };
        match tag[0] {
            TAG_CHUNK => {
                if len < CHUNK_HEADER_BYTES {
                    return Err(invalid("blob chunk header cut short"));
                }
                let mut size = [0u8; 8];
                io.read_exact(&mut size).await?;
                let mut data = chunk_buffer(len - CHUNK_HEADER_BYTES);
                io.read_exact(&mut data).await?;
                Ok(BlobResponse::Chunk { size_bytes: u64::from_be_bytes(size), data })
            }
            TAG_NOT_FOUND => simple(BlobResponse::NotFound),
            TAG_BAD_RANGE => simple(BlobResponse::BadRange),
            TAG_BUSY => simple(BlobResponse::Busy),
            other => Err(invalid(format_args!("unknown blob response tag {other}"))),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: BlobRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&request), &[]).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: BlobResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match response {
            BlobResponse::Chunk { size_bytes, data } => {
                if data.len() > self.chunk_bytes_max {
                    return Err(invalid("blob chunk over the limit"));
                }
                let mut head = [TAG_CHUNK; CHUNK_HEADER_BYTES];
                head[1..].copy_from_slice(&size_bytes.to_be_bytes());
                write_frame(io, &head, &data).await?;
                recycle_chunk(data);
                Ok(())
            }
            BlobResponse::NotFound => write_frame(io, &[TAG_NOT_FOUND], &[]).await,
            BlobResponse::BadRange => write_frame(io, &[TAG_BAD_RANGE], &[]).await,
            BlobResponse::Busy => write_frame(io, &[TAG_BUSY], &[]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;

    use super::*;

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/test/1")
    }

    #[test]
    fn blob_frames_round_trip_and_limits_hold() {
        let mut codec = BlobCodec { chunk_bytes_max: 8 };
        let response = BlobResponse::Chunk { size_bytes: 20, data: vec![1, 2, 3] };
        let mut buf = Cursor::new(Vec::new());
        block_on(codec.write_response(&protocol(), &mut buf, response.clone())).unwrap();
        let mut read = Cursor::new(buf.into_inner());
        assert_eq!(block_on(codec.read_response(&protocol(), &mut read)).unwrap(), response);

        let big = BlobResponse::Chunk { size_bytes: 20, data: vec![0; 9] };
        let mut buf = Cursor::new(Vec::new());
        assert!(block_on(codec.write_response(&protocol(), &mut buf, big)).is_err());
        // A forged length over the limit is refused before the body is read.
        let mut forged = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(block_on(codec.read_response(&protocol(), &mut forged)).is_err());

        let request = BlobRequest { hash: Hash([4; 32]), offset: 7, length: 8 };
        let mut buf = Cursor::new(Vec::new());
        block_on(codec.write_request(&protocol(), &mut buf, request)).unwrap();
        let mut read = Cursor::new(buf.into_inner());
        assert_eq!(block_on(codec.read_request(&protocol(), &mut read)).unwrap(), request);
    }

    #[test]
    fn sync_frames_round_trip() {
        let mut codec = SyncCodec::new(64);
        let mut buf = Cursor::new(Vec::new());
        block_on(codec.write_response(&protocol(), &mut buf, SyncResponse::Blocks(vec![])))
            .unwrap();
        let mut read = Cursor::new(buf.into_inner());
        assert_eq!(
            block_on(codec.read_response(&protocol(), &mut read)).unwrap(),
            SyncResponse::Blocks(vec![])
        );
        let mut garbage = Cursor::new(vec![0, 0, 0, 2, 0xff, 0xff]);
        assert!(block_on(codec.read_request(&protocol(), &mut garbage)).is_err());
    }
}

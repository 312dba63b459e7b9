//! A small blocking HTTP/1.1 client for the node's JSON API (loopback or LAN, plain HTTP), used
//! by `node status`, `node tx` and `node task create`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// Largest response read, in bytes.
const RESPONSE_BYTES_MAX: u64 = 64 << 20;

/// How long a request may wait on the socket.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The node URL is not `http://HOST:PORT`.
    #[error("node address {0:?} is not of the form http://HOST:PORT")]
    BadUrl(String),
    /// The connection failed.
    #[error("cannot reach the node at {addr}: {source} (is it running with --http {addr}?)")]
    Connect {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("talking to the node at {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The answer is not HTTP or not JSON.
    #[error("malformed answer from the node: {0}")]
    Malformed(String),
    /// The node answered with an error status.
    #[error("{method} {path}: the node answered {status}: {message}")]
    Status {
        /// The method.
        method: &'static str,
        /// The path.
        path: String,
        /// The status code.
        status: u16,
        /// The `error` field of the answer, or its body.
        message: String,
    },
}

/// A client for one node's HTTP API.
#[derive(Clone, Debug)]
pub struct ApiClient {
    addr: String,
}

impl ApiClient {
    /// A client for the node at `url` (`http://HOST:PORT`, or just `HOST:PORT`).
    pub fn new(url: &str) -> Result<ApiClient, HttpError> {
        let rest = url.strip_prefix("http://").unwrap_or(url).trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || !rest.contains(':') {
            return Err(HttpError::BadUrl(url.to_string()));
        }
        Ok(ApiClient { addr: rest.to_string() })
    }

    /// `GET path`, parsed as JSON.
    pub fn get(&self, path: &str) -> Result<Value, HttpError> {
        self.request("GET", path, None, &[])
    }

    /// `POST path` with a body of `content_type`, answer parsed as JSON.
    pub fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Value, HttpError> {
        self.request("POST", path, Some(content_type), body)
    }

    fn request(
        &self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Value, HttpError> {
        let io = |source| HttpError::Io { addr: self.addr.clone(), source };
        let mut stream = TcpStream::connect(&self.addr)
            .map_err(|source| HttpError::Connect { addr: self.addr.clone(), source })?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(content_type) = content_type {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        stream.flush().map_err(io)?;
        let mut raw = Vec::new();
        stream.take(RESPONSE_BYTES_MAX).read_to_end(&mut raw).map_err(io)?;
        let (status, body) = parse_response(&raw)?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if !(200..300).contains(&status) {
            let message = json
                .as_ref()
                .and_then(|v| v.get("error"))
                .and_then(Value::as_str)
                .map_or(text.clone(), str::to_string);
            return Err(HttpError::Status { method, path: path.to_string(), status, message });
        }
        json.ok_or_else(|| {
            HttpError::Malformed(format!(
                "not JSON: {}",
                text.chars().take(200).collect::<String>()
            ))
        })
    }
}

/// Splits an HTTP/1.1 response into its status and body (de-chunked).
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), HttpError> {
    let malformed = |what: &str| HttpError::Malformed(what.to_string());
    let end =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| malformed("no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| malformed("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| malformed("no status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed("bad status line"))?;
    let chunked = lines.any(|line| {
        let lower = line.to_ascii_lowercase();
        lower.starts_with("transfer-encoding:") && lower.contains("chunked")
    });
    let body = &raw[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end =
            rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| malformed("bad chunk"))?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| malformed("bad chunk"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| malformed("bad chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        let chunk = rest.get(..size).ok_or_else(|| malformed("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| malformed("truncated chunk"))?;
    }
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, b"{\"a\":1}".to_vec()));
        assert!(ApiClient::new("http://127.0.0.1:8081").is_ok());
        assert!(matches!(ApiClient::new("ftp://x"), Err(HttpError::BadUrl(_))));
        assert_eq!(to_hex(&[0, 255]), "00ff");
    }
}

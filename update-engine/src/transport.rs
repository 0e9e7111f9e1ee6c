//! Fetching bytes: the [`Transport`] trait, a small std-only HTTP/1.1
//! client for `http://` URLs, a directory transport for tests and local
//! mirrors, and a bandwidth-limiting reader.
//!
//! Plain HTTP is acceptable: integrity and authenticity come from the
//! signed channel document, which carries the SHA-256 and size of every
//! payload, and from the payload's own signature. (What HTTP does not
//! hide is which versions a host downloads; https comes later.)

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// 404 (or no such file).
    NotFound(String),
    /// 416: `range_start` is at or past the end of the resource.
    RangeNotSatisfiable(String),
    /// Anything else.
    Other(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound(u) => write!(f, "{u}: not found"),
            FetchError::RangeNotSatisfiable(u) => write!(f, "{u}: range not satisfiable"),
            FetchError::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Fetches resources by URL.
pub trait Transport: Send + Sync {
    /// Bytes of `url` from offset `range_start`, at most `max_len` of them
    /// (the reader ends after `max_len` bytes even if more are sent).
    fn fetch(
        &self,
        url: &str,
        range_start: u64,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError>;
}

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// A minimal HTTP/1.1 client: GET with `Range: bytes=N-`,
/// `Connection: close`, a `Content-Length` body (chunked encoding and
/// redirects are not supported).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    pub timeout: Duration,
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport {
            timeout: Duration::from_secs(30),
        }
    }
}

fn other(m: impl Into<String>) -> FetchError {
    FetchError::Other(m.into())
}

/// `http://host[:port]/path` -> (host, port, path).
fn parse_http_url(url: &str) -> Result<(String, u16, String), FetchError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| other(format!("{url}: only http:// URLs are supported")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(other(format!("{url}: bad host")));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| other(format!("{url}: bad port")))?,
        ),
        _ => (authority, 80),
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(other(format!("{url}: invalid characters in the path")));
    }
    Ok((host.to_string(), port, path.to_string()))
}

impl Transport for HttpTransport {
    fn fetch(
        &self,
        url: &str,
        range_start: u64,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        let (host, port, path) = parse_http_url(url)?;
        let io_err = |e: io::Error| other(format!("{url}: {e}"));
        let addrs: Vec<_> = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()
            .map_err(io_err)?
            .collect();
        let mut last = other(format!("{url}: host has no address"));
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = io_err(e),
            }
        }
        let mut stream = stream.ok_or(last)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err)?;
        let host_header = if port == 80 {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: cairn-update\r\nAccept-Encoding: identity\r\nConnection: close\r\n"
        );
        if range_start > 0 {
            req.push_str(&format!("Range: bytes={range_start}-\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).map_err(io_err)?;
        let mut r = BufReader::new(stream);
        let head = read_head(&mut r).map_err(io_err)?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.splitn(3, ' ');
        let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !proto.starts_with("HTTP/1.") {
            return Err(other(format!("{url}: not an HTTP/1.x response")));
        }
        let mut content_length: Option<u64> = None;
        let mut content_range_start: Option<u64> = None;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = Some(
                        value
                            .parse()
                            .map_err(|_| other(format!("{url}: bad Content-Length")))?,
                    )
                }
                "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                    return Err(other(format!(
                        "{url}: Transfer-Encoding {value} is not supported"
                    )))
                }
                "content-range" => {
                    content_range_start = value
                        .strip_prefix("bytes ")
                        .and_then(|v| v.split('-').next())
                        .and_then(|s| s.trim().parse().ok());
                }
                _ => {}
            }
        }
        let skip = match code {
            "200" => range_start,
            "206" => {
                if content_range_start != Some(range_start) {
                    return Err(other(format!("{url}: 206 response for the wrong range")));
                }
                0
            }
            "404" | "410" => return Err(FetchError::NotFound(url.to_string())),
            "416" => return Err(FetchError::RangeNotSatisfiable(url.to_string())),
            _ => return Err(other(format!("{url}: HTTP {}", status_line.trim()))),
        };
        let body: Box<dyn Read + Send> = match content_length {
            Some(n) => Box::new(r.take(n)),
            None => Box::new(r),
        };
        let mut body = body;
        if skip > 0 {
            // The server ignored the Range header: discard up to the start.
            let n = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(io_err)?;
            if n != skip {
                return Err(FetchError::RangeNotSatisfiable(url.to_string()));
            }
        }
        Ok(Box::new(body.take(max_len)))
    }
}

fn read_head(r: &mut impl BufRead) -> io::Result<String> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r
            .by_ref()
            .take((MAX_HEAD - head.len().min(MAX_HEAD)) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the response head",
            ));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            head.truncate(head.len() - if head.ends_with(b"\r\n\r\n") { 4 } else { 2 });
            break;
        }
        if head.len() >= MAX_HEAD || head.len() == before {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
    }
    String::from_utf8(head)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 response head"))
}

/// Serves URLs starting with `prefix` from files under `dir` (tests, local
/// mirrors).
#[derive(Debug, Clone)]
pub struct DirTransport {
    pub prefix: String,
    pub dir: PathBuf,
}

impl Transport for DirTransport {
    fn fetch(
        &self,
        url: &str,
        range_start: u64,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        let rel = url
            .strip_prefix(&self.prefix)
            .ok_or_else(|| other(format!("{url}: outside {}", self.prefix)))?
            .trim_start_matches('/');
        if rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(other(format!("{url}: bad path")));
        }
        let path = self.dir.join(rel);
        let mut f = std::fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FetchError::NotFound(url.to_string()),
            _ => other(format!("{}: {e}", path.display())),
        })?;
        let len = f.metadata().map_err(|e| other(e.to_string()))?.len();
        if range_start > 0 && range_start >= len {
            return Err(FetchError::RangeNotSatisfiable(url.to_string()));
        }
        io::Seek::seek(&mut f, io::SeekFrom::Start(range_start))
            .map_err(|e| other(e.to_string()))?;
        Ok(Box::new(f.take(max_len)))
    }
}

/// A reader that delivers at most `rate` bytes per second on average
/// (token bucket of one second's worth), sleeping when it runs ahead.
#[derive(Debug)]
pub struct RateLimited<R> {
    inner: R,
    rate: u64,
    tokens: f64,
    last: Instant,
}

impl<R: Read> RateLimited<R> {
    pub fn new(inner: R, bytes_per_second: u64) -> Self {
        RateLimited {
            inner,
            rate: bytes_per_second.max(1),
            tokens: 0.0,
            last: Instant::now(),
        }
    }
}

impl<R: Read> Read for RateLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let rate = self.rate as f64;
        loop {
            let now = Instant::now();
            let elapsed = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            if self.tokens >= 1.0 {
                break;
            }
            // Sleep until at least a sensible chunk is available.
            let want = (rate / 10.0).clamp(1.0, 64.0 * 1024.0);
            std::thread::sleep(Duration::from_secs_f64((want - self.tokens) / rate));
        }
        let n = (self.tokens as usize).min(buf.len());
        let got = self.inner.read(&mut buf[..n])?;
        self.tokens -= got as f64;
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/a/b.json").unwrap(),
            ("127.0.0.1".into(), 8080, "/a/b.json".into())
        );
        assert_eq!(
            parse_http_url("http://host").unwrap(),
            ("host".into(), 80, "/".into())
        );
        assert!(parse_http_url("https://host/").is_err());
        assert!(parse_http_url("http://host/a b").is_err());
    }

    #[test]
    fn rate_limit_sleeps() {
        let data = vec![7u8; 3000];
        let start = Instant::now();
        let mut out = Vec::new();
        RateLimited::new(&data[..], 10_000)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        let t = start.elapsed().as_secs_f64();
        assert!(t > 0.2 && t < 2.0, "{t}");
    }
}

//! Getting bytes from a mirror: the [`Transport`] trait (so that tests run
//! offline), [`HttpTransport`] for `http://` and `file://` mirrors, an
//! in-memory [`StaticTransport`], and retrying with backoff.
//!
//! Plain HTTP is enough: every byte is checked against the signed InRelease
//! (indexes) or against the index (`.deb`s) before it is used or cached.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not found (HTTP {status})")]
    NotFound { url: String, status: u16 },
    #[error("{url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Connection { url: String, message: String },
    #[error("{url}: larger than the expected {max} bytes")]
    TooLarge { url: String, max: u64 },
    #[error("{url}: unsupported URL scheme; use an http:// (or file://) mirror (https needs TLS, which Cairn's apt client leaves out: InRelease signatures and hashes protect the data)")]
    Unsupported { url: String },
    #[error("{url}: writing the download to {target}: {source}")]
    Write {
        url: String,
        target: String,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// Worth retrying: connection problems, timeouts, 5xx, 408 and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Connection { .. } => true,
            FetchError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }

    /// The URL the error is about.
    pub fn url(&self) -> &str {
        match self {
            FetchError::NotFound { url, .. }
            | FetchError::Status { url, .. }
            | FetchError::Connection { url, .. }
            | FetchError::TooLarge { url, .. }
            | FetchError::Unsupported { url }
            | FetchError::Write { url, .. } => url,
        }
    }
}

/// Fetches resources by URL.
pub trait Transport: Send + Sync + fmt::Debug {
    /// Streams the body of `url` into `sink` and returns its length. A body
    /// longer than `max` bytes is an error ([`FetchError::TooLarge`]);
    /// nothing past `max + 1` bytes is read.
    fn fetch(&self, url: &str, max: u64, sink: &mut dyn Write) -> Result<u64, FetchError>;
}

/// Copies at most `max` bytes from `r` to `w`; more is `TooLarge`.
/// Read errors are connection errors, write errors `Write`.
pub fn copy_bounded(
    r: &mut dyn Read,
    w: &mut dyn Write,
    max: u64,
    url: &str,
    target: &str,
) -> Result<u64, FetchError> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total: u64 = 0;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(FetchError::Connection {
                    url: url.to_string(),
                    message: format!("reading the response: {e}"),
                })
            }
        };
        total += n as u64;
        if total > max {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max,
            });
        }
        w.write_all(&buf[..n]).map_err(|source| FetchError::Write {
            url: url.to_string(),
            target: target.to_string(),
            source,
        })?;
    }
    Ok(total)
}

/// Timeouts of [`HttpTransport`].
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    /// DNS + TCP connect.
    pub connect: Duration,
    /// Longest silence while reading the response.
    pub read: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(15),
            read: Duration::from_secs(60),
        }
    }
}

/// `http://` through ureq (keep-alive, redirects, chunked encoding; no
/// TLS) and `file://` from the local filesystem.
pub struct HttpTransport {
    agent: ureq::Agent,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpTransport")
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        HttpTransport::new(HttpTimeouts::default())
    }
}

impl HttpTransport {
    pub fn new(t: HttpTimeouts) -> HttpTransport {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(Some(t.connect))
            .timeout_connect(Some(t.connect))
            .timeout_send_request(Some(t.connect))
            .timeout_recv_response(Some(t.read))
            .timeout_per_read(Some(t.read))
            .max_redirects(5)
            .user_agent(concat!("cairn-apt/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpTransport {
            agent: config.new_agent(),
        }
    }

    fn fetch_file(&self, url: &str, max: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        let path = url.trim_start_matches("file://");
        let mut f = std::fs::File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FetchError::NotFound {
                    url: url.to_string(),
                    status: 404,
                }
            } else {
                FetchError::Connection {
                    url: url.to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        copy_bounded(&mut f, sink, max, url, "the cache")
    }
}

impl Transport for HttpTransport {
    fn fetch(&self, url: &str, max: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        if url.starts_with("file:///") {
            return self.fetch_file(url, max, sink);
        }
        if !url.starts_with("http://") {
            return Err(FetchError::Unsupported {
                url: url.to_string(),
            });
        }
        let resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| FetchError::Connection {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            404 | 410 => {
                return Err(FetchError::NotFound {
                    url: url.to_string(),
                    status,
                })
            }
            _ => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status,
                })
            }
        }
        let announced = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > max) {
            return Err(FetchError::TooLarge {
                url: url.to_string(),
                max,
            });
        }
        let mut body = resp
            .into_body()
            .into_with_config()
            .limit(max.saturating_add(1))
            .reader();
        copy_bounded(&mut body, sink, max, url, "the cache")
    }
}

/// An in-memory mirror for tests and offline use: URL -> bytes. It can
/// pretend to be down, fail the next requests, and records every request.
#[derive(Debug, Default)]
pub struct StaticTransport {
    files: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<Vec<String>>,
    down: AtomicBool,
    fail_next: AtomicU32,
}

impl StaticTransport {
    pub fn new() -> StaticTransport {
        StaticTransport::default()
    }

    pub fn insert(&self, url: &str, bytes: impl Into<Vec<u8>>) {
        if let Ok(mut f) = self.files.lock() {
            f.insert(url.to_string(), bytes.into());
        }
    }

    pub fn remove(&self, url: &str) {
        if let Ok(mut f) = self.files.lock() {
            f.remove(url);
        }
    }

    /// While down, every request fails with a connection error.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The next `n` requests fail with a connection error.
    pub fn fail_next(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every URL requested so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Transport for StaticTransport {
    fn fetch(&self, url: &str, max: u64, sink: &mut dyn Write) -> Result<u64, FetchError> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(url.to_string());
        }
        let refused = FetchError::Connection {
            url: url.to_string(),
            message: "connection refused".into(),
        };
        if self.down.load(Ordering::SeqCst) {
            return Err(refused);
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(refused);
        }
        let data = self
            .files
            .lock()
            .ok()
            .and_then(|f| f.get(url).cloned())
            .ok_or_else(|| FetchError::NotFound {
                url: url.to_string(),
                status: 404,
            })?;
        copy_bounded(&mut data.as_slice(), sink, max, url, "the sink")
    }
}

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// No waiting between attempts (tests).
    pub fn immediate(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        }
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or
    /// the attempts are used up (then the last error is returned).
    pub fn run<T>(&self, mut op: impl FnMut() -> Result<T, FetchError>) -> Result<T, FetchError> {
        let mut delay = self.initial_delay;
        let mut attempt = 1;
        loop {
            match op() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < self.attempts.max(1) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Fetches `url` into memory with retries; at most `max` bytes.
pub fn fetch_bytes(
    t: &dyn Transport,
    url: &str,
    max: u64,
    retry: &RetryPolicy,
) -> Result<Vec<u8>, FetchError> {
    retry.run(|| {
        let mut v = Vec::new();
        t.fetch(url, max, &mut v)?;
        Ok(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn static_transport_and_retry() {
        let t = StaticTransport::new();
        t.insert("http://m/a", b"hello".to_vec());
        assert_eq!(
            fetch_bytes(&t, "http://m/a", 5, &RetryPolicy::immediate(1)).unwrap(),
            b"hello"
        );
        assert!(matches!(
            fetch_bytes(&t, "http://m/a", 4, &RetryPolicy::immediate(1)),
            Err(FetchError::TooLarge { .. })
        ));
        assert!(fetch_bytes(&t, "http://m/b", 5, &RetryPolicy::immediate(3))
            .unwrap_err()
            .is_not_found());
        t.fail_next(2);
        assert_eq!(
            fetch_bytes(&t, "http://m/a", 5, &RetryPolicy::immediate(3)).unwrap(),
            b"hello"
        );
        t.fail_next(3);
        let e = fetch_bytes(&t, "http://m/a", 5, &RetryPolicy::immediate(3)).unwrap_err();
        assert!(e.is_transient(), "{e}");
        t.set_down(true);
        assert!(fetch_bytes(&t, "http://m/a", 5, &RetryPolicy::immediate(2)).is_err());
        // 404s are not retried.
        t.set_down(false);
        let before = t.requests().len();
        let _ = fetch_bytes(&t, "http://m/zzz", 5, &RetryPolicy::immediate(5));
        assert_eq!(t.requests().len(), before + 1);
    }

    #[test]
    fn transient_classification() {
        let s = |status| FetchError::Status {
            url: "u".into(),
            status,
        };
        assert!(s(503).is_transient() && s(429).is_transient() && !s(403).is_transient());
        assert_eq!(s(500).url(), "u");
    }

    /// Serves canned HTTP responses on loopback, one per connection.
    fn serve(responses: Vec<Vec<u8>>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for resp in responses {
                let Ok((mut s, _)) = l.accept() else { return };
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(&resp);
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn http_statuses_limits_and_retries() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec();
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec();
        let e503 = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
        let e404 =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec();
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n".to_vec();
        let base = serve(vec![ok, chunked, e503, ok_again(), e404, big]);
        let t = HttpTransport::default();
        let r = RetryPolicy::immediate(1);
        assert_eq!(
            fetch_bytes(&t, &format!("{base}/a"), 10, &r).unwrap(),
            b"hello"
        );
        assert_eq!(
            fetch_bytes(&t, &format!("{base}/b"), 10, &r).unwrap(),
            b"abcde"
        );
        // 503 then success on the retry.
        assert_eq!(
            fetch_bytes(&t, &format!("{base}/c"), 10, &RetryPolicy::immediate(2)).unwrap(),
            b"again"
        );
        assert!(fetch_bytes(&t, &format!("{base}/d"), 10, &r)
            .unwrap_err()
            .is_not_found());
        assert!(matches!(
            fetch_bytes(&t, &format!("{base}/e"), 10, &r),
            Err(FetchError::TooLarge { .. })
        ));
        assert!(matches!(
            fetch_bytes(&t, "https://example.invalid/x", 10, &r),
            Err(FetchError::Unsupported { .. })
        ));
    }

    fn ok_again() -> Vec<u8> {
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nagain".to_vec()
    }

    #[test]
    fn connection_refused_is_transient() {
        // Bind and drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = HttpTransport::new(HttpTimeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(2),
        });
        let e = fetch_bytes(
            &t,
            &format!("http://127.0.0.1:{port}/x"),
            10,
            &RetryPolicy::immediate(1),
        )
        .unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("http://127.0.0.1:{port}/x: ")),
            "{e}"
        );
    }

    #[test]
    fn file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"data").unwrap();
        let t = HttpTransport::default();
        let url = format!("file://{}", p.display());
        assert_eq!(
            fetch_bytes(&t, &url, 4, &RetryPolicy::immediate(1)).unwrap(),
            b"data"
        );
        let missing = format!("file://{}", dir.path().join("nope").display());
        assert!(fetch_bytes(&t, &missing, 4, &RetryPolicy::immediate(1))
            .unwrap_err()
            .is_not_found());
    }
}

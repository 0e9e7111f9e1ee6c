//! A small HTTP/1.1 static file server for development and tests.
//!
//! GET and HEAD only; one request per connection (`Connection: close`);
//! single `Range: bytes=a-b`, `a-` and `-n` ranges (206 with
//! `Content-Range`, 416 with `Content-Range: bytes */len` when
//! unsatisfiable; a multi-range or malformed `Range` header is ignored and the
//! whole file is sent, as RFC 9110 allows). Paths are percent-decoded and
//! must consist of plain components (no `..`, `.`, backslashes or NUL);
//! the resolved file (after following symlinks) must lie inside the served
//! directory and be a regular file, otherwise 404 (or 400 for a malformed
//! path). Request heads are limited to [`MAX_REQUEST_HEAD`] bytes (431).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Largest accepted request line plus headers.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
const MAX_CONNECTIONS: usize = 64;
const POLL: Duration = Duration::from_millis(20);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server. Dropping it stops it (and waits for the accept loop).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stop flag: setting it to `true` (e.g. from a Ctrl-C handler)
    /// makes the server stop accepting within ~20 ms.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops the server and waits for the accept loop to end. Requests in
    /// flight finish on their own threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Blocks until the server is stopped through [`Self::stop_flag`].
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves `repo_dir` on `listen` (use port 0 for any free port) until the
/// returned handle is stopped or dropped.
pub fn serve(repo_dir: &Path, listen: SocketAddr) -> io::Result<ServerHandle> {
    serve_with_stop(repo_dir, listen, Arc::new(AtomicBool::new(false)))
}

/// Like [`serve`], with a caller-owned stop flag.
pub fn serve_with_stop(
    repo_dir: &Path,
    listen: SocketAddr,
    stop: Arc<AtomicBool>,
) -> io::Result<ServerHandle> {
    let root = repo_dir.canonicalize()?;
    if !root.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{}: not a directory", root.display()),
        ));
    }
    let listener = TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let flag = Arc::clone(&stop);
    let root = Arc::new(root);
    let thread = thread::Builder::new()
        .name("cairn-repo-serve".into())
        .spawn(move || accept_loop(&listener, &root, &flag))?;
    Ok(ServerHandle {
        addr,
        stop,
        thread: Some(thread),
    })
}

fn accept_loop(listener: &TcpListener, root: &Arc<PathBuf>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    let _ = simple(&stream, 503, "Service Unavailable", false);
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let root = Arc::clone(root);
                let active2 = Arc::clone(&active);
                let spawned =
                    thread::Builder::new()
                        .name("cairn-repo-conn".into())
                        .spawn(move || {
                            let _ = handle(&stream, &root);
                            linger_close(&stream);
                            active2.fetch_sub(1, Ordering::SeqCst);
                        });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Transient errors (EMFILE, ECONNABORTED): back off and retry.
            Err(_) => thread::sleep(POLL),
        }
    }
}

fn simple(mut stream: &TcpStream, code: u16, reason: &str, head: bool) -> io::Result<()> {
    let body = format!("{code} {reason}\n");
    let extra = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )?;
    if !head {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Reads the request head (up to the blank line). `Ok(None)`: too large.
fn read_head(mut stream: &TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(pos) = find_end(&buf) {
            buf.truncate(pos);
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before end of request head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Half-closes and drains what the client still sends (bounded), so that
/// unread request bytes do not turn the close into a reset that would
/// destroy the response before the client reads it.
fn linger_close(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    let mut s = stream;
    while total < 1 << 20 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

fn handle(stream: &TcpStream, root: &Path) -> io::Result<()> {
    let mut stream = stream;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(head) = read_head(stream)? else {
        return simple(stream, 431, "Request Header Fields Too Large", false);
    };
    let Ok(head) = String::from_utf8(head) else {
        return simple(stream, 400, "Bad Request", false);
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return simple(stream, 400, "Bad Request", false);
    };
    if !version.starts_with("HTTP/1.") {
        return simple(stream, 505, "HTTP Version Not Supported", false);
    }
    let is_head = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return simple(stream, 405, "Method Not Allowed", false),
    };
    let mut range_header = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return simple(stream, 400, "Bad Request", is_head);
        };
        if name.eq_ignore_ascii_case("range") {
            range_header = Some(value.trim().to_string());
        }
    }
    let Some(rel) = request_path(target) else {
        return simple(stream, 400, "Bad Request", is_head);
    };
    let Some((mut file, len, path)) = open_inside(root, &rel) else {
        return simple(stream, 404, "Not Found", is_head);
    };
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("pub" | "txt") => "text/plain",
        _ => "application/octet-stream",
    };
    let range = range_header.as_deref().and_then(|h| parse_range(h, len));
    let (code, reason, start, count, content_range) = match range {
        None => (200, "OK", 0, len, String::new()),
        Some(Err(())) => {
            let body = "416 Range Not Satisfiable\n";
            write!(
                stream,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if !is_head {
                stream.write_all(body.as_bytes())?;
            }
            return stream.flush();
        }
        Some(Ok((a, b))) => (
            206,
            "Partial Content",
            a,
            b - a + 1,
            format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\n{content_range}Connection: close\r\n\r\n"
    )?;
    if !is_head && count > 0 {
        file.seek(SeekFrom::Start(start))?;
        let copied = io::copy(&mut (&mut file).take(count), &mut stream)?;
        if copied != count {
            // The file shrank under us; the client sees a short body.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
    }
    stream.flush()
}

/// Decodes the request target into plain relative components, or `None`.
fn request_path(target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return None;
    }
    let decoded = percent_decode(path)?;
    let decoded = String::from_utf8(decoded).ok()?;
    if decoded.contains(['\\', '\0']) {
        return None;
    }
    let mut rel = PathBuf::new();
    for comp in decoded.split('/') {
        match comp {
            "" => {}
            "." | ".." => return None,
            c => rel.push(c),
        }
    }
    // Belt and braces: only normal components may remain.
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(rel)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Opens `root/rel` if, after resolving symlinks, it is a regular file
/// inside `root` (which is already canonical).
fn open_inside(root: &Path, rel: &Path) -> Option<(File, u64, PathBuf)> {
    let real = root.join(rel).canonicalize().ok()?;
    if !real.starts_with(root) {
        return None;
    }
    let file = File::open(&real).ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    Some((file, meta.len(), real))
}

/// Parses a `Range` header value against a representation of `len` bytes.
/// `None`: ignore the header (malformed or multiple ranges); `Some(Err)`:
/// unsatisfiable (416); `Some(Ok((first, last)))`: inclusive byte range.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        // Suffix range: the last n bytes.
        if !digits(b) {
            return None;
        }
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len - n.min(len), len - 1)));
    }
    if !digits(a) {
        return None;
    }
    let first: u64 = a.parse().ok()?;
    let last = if b.is_empty() {
        None
    } else if digits(b) {
        Some(b.parse::<u64>().ok()?)
    } else {
        return None;
    };
    if let Some(last) = last {
        if last < first {
            return None;
        }
    }
    if first >= len {
        return Some(Err(()));
    }
    let last = last.map_or(len - 1, |l| l.min(len - 1));
    Some(Ok((first, last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Some(Ok((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=a-b", 100), None);
    }

    #[test]
    fn paths() {
        assert_eq!(
            request_path("/a/b.json?x=1"),
            Some(PathBuf::from("a/b.json"))
        );
        assert_eq!(request_path("/a//b"), Some(PathBuf::from("a/b")));
        assert_eq!(request_path("/../etc/passwd"), None);
        assert_eq!(request_path("/%2e%2e/etc/passwd"), None);
        assert_eq!(request_path("/a/%2E%2E/%2E%2E/x"), None);
        assert_eq!(request_path("/a\\b"), None);
        assert_eq!(request_path("/a%00b"), None);
        assert_eq!(request_path("http://x/a"), None);
        assert_eq!(request_path("/%zz"), None);
    }
}

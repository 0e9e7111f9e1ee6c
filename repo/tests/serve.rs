//! The development server, checked with a tiny Rust client and with curl as
//! an independent HTTP client. Only ever connects to 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use cairn_repo::{serve, ServerHandle};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn body_bytes() -> Vec<u8> {
    (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn setup() -> (tempfile::TempDir, ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    fs::create_dir_all(root.join("payloads/1.0")).unwrap();
    fs::create_dir_all(root.join("channels")).unwrap();
    fs::write(root.join("payloads/1.0/abc.full.cpay"), body_bytes()).unwrap();
    fs::write(root.join("channels/stable.json"), b"{\"x\":1}\n").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    std::os::unix::fs::symlink("payloads/1.0/abc.full.cpay", root.join("inside-link")).unwrap();
    let server = serve(&root, "127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(server.local_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(server.local_addr().port(), 0);
    (dir, server)
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Minimal HTTP/1.1 client: sends `raw`, reads until close.
fn raw_request(addr: SocketAddr, raw: &[u8]) -> Response {
    assert!(addr.ip().is_loopback());
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str, range: Option<&str>) -> Response {
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    raw_request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{range}\r\n").as_bytes(),
    )
}

#[test]
fn rust_client() {
    let (_dir, server) = setup();
    let addr = server.local_addr();
    let data = body_bytes();
    let len = data.len();

    let r = get(addr, "/payloads/1.0/abc.full.cpay", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = get(addr, "/channels/stable.json", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, b"{\"x\":1}\n");

    for (range, a, b) in [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=99990-", 99_990, len - 1),
        ("bytes=-16", len - 16, len - 1),
        ("bytes=50000-999999", 50_000, len - 1),
        ("bytes=-999999", 0, len - 1),
    ] {
        let r = get(addr, "/payloads/1.0/abc.full.cpay", Some(range));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.body, &data[a..=b], "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {a}-{b}/{len}").as_str())
        );
        assert_eq!(
            r.header("content-length"),
            Some((b - a + 1).to_string().as_str())
        );
    }

    for range in ["bytes=100000-", "bytes=200000-200010", "bytes=-0"] {
        let r = get(addr, "/payloads/1.0/abc.full.cpay", Some(range));
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{len}").as_str())
        );
    }
    assert_eq!(get(addr, "/empty", Some("bytes=-5")).status, 416);
    // Malformed or multi-range headers are ignored.
    assert_eq!(
        get(addr, "/payloads/1.0/abc.full.cpay", Some("bytes=5-1")).status,
        200
    );
    assert_eq!(
        get(addr, "/payloads/1.0/abc.full.cpay", Some("bytes=0-1,4-5")).status,
        200
    );

    // HEAD: headers only.
    let r = raw_request(addr, b"HEAD /payloads/1.0/abc.full.cpay HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));

    assert_eq!(get(addr, "/empty", None).status, 200);
    assert_eq!(get(addr, "/nope", None).status, 404);
    assert_eq!(get(addr, "/payloads", None).status, 404);
    assert_eq!(get(addr, "/", None).status, 404);
    assert_eq!(get(addr, "/../secret", None).status, 400);
    assert_eq!(get(addr, "/payloads/../../secret", None).status, 400);
    assert_eq!(get(addr, "/%2e%2e/secret", None).status, 400);
    assert_eq!(get(addr, "/escape", None).status, 404);
    assert_eq!(get(addr, "/inside-link", None).body, data);
    assert_eq!(
        get(addr, "/payloads/1.0/abc.full.cpay?x=1", None).status,
        200
    );

    let r = raw_request(addr, b"POST /empty HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 405);
    let r = raw_request(addr, b"garbage\r\n\r\n");
    assert_eq!(r.status, 400);
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 64 * 1024));
    big.extend(b"\r\n\r\n");
    let r = raw_request(addr, &big);
    assert_eq!(r.status, 431);

    server.stop();
    assert!(TcpStream::connect(addr).is_err());
}

fn curl() -> &'static str {
    let ok = Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "curl is required for this test (apt-get install -y curl)"
    );
    "curl"
}

/// Runs curl against 127.0.0.1; returns (status, body).
fn curl_get(addr: SocketAddr, path: &str, extra: &[&str], out: &Path) -> (u16, Vec<u8>) {
    assert!(addr.ip().is_loopback());
    let url = format!("http://127.0.0.1:{}{path}", addr.port());
    let o = Command::new(curl())
        .args(["-sS", "--noproxy", "*", "--max-time", "20", "--path-as-is"])
        .args(["-o"])
        .arg(out)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let code: u16 = String::from_utf8(o.stdout).unwrap().trim().parse().unwrap();
    (code, fs::read(out).unwrap_or_default())
}

#[test]
fn curl_client() {
    let (dir, server) = setup();
    let addr = server.local_addr();
    let data = body_bytes();
    let out = dir.path().join("curl.out");
    let p = "/payloads/1.0/abc.full.cpay";

    assert_eq!(curl_get(addr, p, &[], &out), (200, data.clone()));
    assert_eq!(
        curl_get(addr, p, &["-r", "100-199"], &out),
        (206, data[100..200].to_vec())
    );
    assert_eq!(
        curl_get(addr, p, &["-r", "99000-"], &out),
        (206, data[99_000..].to_vec())
    );
    assert_eq!(
        curl_get(addr, p, &["-r", "-500"], &out),
        (206, data[data.len() - 500..].to_vec())
    );
    // Resume a partial download the way an engine would.
    fs::write(&out, &data[..12_345]).unwrap();
    let o = Command::new(curl())
        .args(["-sS", "--noproxy", "*", "--max-time", "20", "-C", "-", "-o"])
        .arg(&out)
        .arg(format!("http://127.0.0.1:{}{p}", addr.port()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(&out).unwrap(), data);

    assert_eq!(curl_get(addr, p, &["-r", "100000-"], &out).0, 416);
    assert_eq!(curl_get(addr, "/nope", &[], &out).0, 404);
    let (code, body) = curl_get(addr, "/../etc/passwd", &[], &out);
    assert_eq!(code, 400);
    assert!(!String::from_utf8_lossy(&body).contains("root:"));
    // Without --path-as-is curl normalizes to /etc/passwd, which is not in the repo.
    let o = Command::new(curl())
        .args([
            "-s",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/../etc/passwd", addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "404");
    assert_eq!(curl_get(addr, "/escape", &[], &out).0, 404);

    // HEAD
    let o = Command::new(curl())
        .args(["-sS", "--noproxy", "*", "--max-time", "20", "-I"])
        .arg(format!("http://127.0.0.1:{}{p}", addr.port()))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&o.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", data.len())),
        "{head}"
    );
}

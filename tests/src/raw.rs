//! Raw HTTP/1 over a socket, for tests that send bytes a client library would not: one
//! exchange with `Connection: close`, and the status and headers of the head that came back.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status of the response that starts `bytes` (`HTTP/1.1 NNN`), if it is one.
pub fn status(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Where the head that starts `bytes` ends (just past its empty line), once it has.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The value of header `name` (any case) in the head that starts `bytes`.
pub fn header(bytes: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends `request` to `addr` and reads until the peer closes (within 10 s): the status (0
/// when no response came) and the head as text.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .write_all(request)
        .await
        .unwrap_or_else(|e| panic!("write to {addr}: {e}"));
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .unwrap_or_else(|_| panic!("no answer and no close within 10 s from {addr}"));
    let text = String::from_utf8_lossy(&bytes);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string();
    (status(&bytes).unwrap_or(0), head)
}

/// `GET target` to host `web` with `Connection: close` and `headers` (each `name: value`),
/// through [`exchange`].
pub async fn get_web(addr: SocketAddr, target: &str, headers: &[&str]) -> (u16, String) {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    exchange(addr, request.as_bytes()).await
}

//! Applications as they are (issue 22): an application that writes each response in two
//! `send` calls with Nagle on (Python's `http.server` with HTTP/1.1 keep-alive,
//! `tests/interop/apps/two_sends.py`) must not wait for a delayed ACK behind the mesh. On a
//! pooled connection the proxy's kernel delayed its ACK of the head and the application held
//! the body until it came: ~43 ms a request through a full mesh hop, against under a
//! millisecond of work. `proxy/src/quickack.rs` sets `TCP_QUICKACK` when it waits with part
//! of a response in hand.
//!
//! The same holds for an application as a client: a POST whose head and body it writes in
//! two sends with Nagle on waited for the sidecar's delayed ACK of the head
//! (`framing::AckNow`).
//!
//! The bound is the median of sequential requests on one kept-alive connection: half of the
//! 40 ms delayed-ACK timer, far above what a request costs here even on a busy machine, so
//! the median tells the two cases apart and one slow request cannot fail the test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::client::H1;
use mesh_tests::mesh::Mesh;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
"#;

/// Sequential requests measured (after one that opens the pooled connections).
const REQUESTS: usize = 25;
/// Half the kernel's 40 ms delayed-ACK timer.
const MEDIAN_BOUND: Duration = Duration::from_millis(20);

/// `two_sends.py`, started on a port of its choosing; killed when dropped.
struct TwoSends {
    child: Child,
    addr: SocketAddr,
}

impl TwoSends {
    fn start() -> TwoSends {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/apps/two_sends.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (python3 is needed)", script.display()));
        let stdout = child.stdout.take().expect("the app's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("read the app's first line: {e}"));
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the app's first line is not JSON ({e}): {line:?}"));
        let addr = ready["listening"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the app's first line: {line:?}"));
        TwoSends { child, addr }
    }
}

impl Drop for TwoSends {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median time of [`REQUESTS`] sequential `GET`s on one connection to `addr`.
async fn median_latency(addr: SocketAddr, host: &str) -> (Duration, Vec<Duration>) {
    let mut client = H1::open(addr).await;
    let first = client.get(host, "/warm").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let start = Instant::now();
        let reply = client.get(host, &format!("/r{i}")).await;
        times.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "hello from two sends\n");
    }
    let mut sorted = times.clone();
    sorted.sort();
    (sorted[REQUESTS / 2], times)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_answers_in_two_sends_is_not_held_by_delayed_acks() {
    let app = TwoSends::start();
    let (mesh, _client_app) = Mesh::client_and_app(POLICY, app.addr).await;

    // Through the full mesh hop: outbound -> mTLS HTTP/2 -> inbound -> the application's
    // pooled HTTP/1.1 connection.
    let (median, times) = median_latency(mesh.outbound("client"), "web").await;
    assert!(
        median < MEDIAN_BOUND,
        "through the mesh, the median request took {median:?} (each: {times:?}): the \
         application's body waited for a delayed ACK"
    );
}

/// One request written in two sends on a socket with Nagle on; the time to its whole answer.
async fn post_in_two_sends(stream: &mut tokio::net::TcpStream, path: &str) -> (Duration, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    let head = format!("POST {path} HTTP/1.1\r\nhost: web\r\ncontent-length: 5\r\n\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    stream.write_all(b"hello").await.expect("write the body");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .expect("read");
        assert!(n > 0, "the sidecar closed the connection");
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = mesh_tests::raw::head_end(&answer) {
            let head = String::from_utf8_lossy(&answer[..end]).to_string();
            let length: usize = mesh_tests::raw::header(head.as_bytes(), "content-length")
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if answer.len() >= end + length {
                return (start.elapsed(), head);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_posts_in_two_sends_is_not_held_by_delayed_acks() {
    let (mesh, _client_app, _web) = Mesh::client_and_web(POLICY).await;
    let mut stream = tokio::net::TcpStream::connect(mesh.outbound("client"))
        .await
        .expect("connect to the outbound listener");
    stream
        .set_nodelay(false)
        .expect("Nagle on, as the client's");
    let (_, head) = post_in_two_sends(&mut stream, "/warm").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let (took, head) = post_in_two_sends(&mut stream, &format!("/p{i}")).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
        times.push(took);
    }
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted[REQUESTS / 2];
    assert!(
        median < MEDIAN_BOUND,
        "the median POST took {median:?} (each: {times:?}): the body waited for a delayed ACK"
    );
}

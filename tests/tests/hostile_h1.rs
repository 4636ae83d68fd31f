//! Hostile HTTP/1.1 over raw sockets, against a running sidecar's outbound listener and the
//! plaintext inbound listener of an `mtls permissive` service: ambiguous framing (request
//! smuggling: CL.TE, TE.CL, TE.TE), malformed lines, oversized and slow heads. Each case has
//! its expected answer (a status, and the connection closed) or a close without one; the
//! application must never receive a request no client sent (`/smuggled`); and while each
//! attack runs, a well-behaved client on another connection gets its 200.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::backend::Backend;
use mesh_tests::client::{within, H1};
use mesh_tests::mesh::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] mtls permissive }
authorize web {
  allow from anyone to path prefix "/"
  default deny
}
"#;

/// The head timeout the sidecars run with (short, so the slowloris case is quick).
const HEAD_TIMEOUT_MS: u64 = 2_000;

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status, then the connection closes; with the proxy's reason when it answered
    /// itself (`None`: hyper's parser answered, without one).
    Refused(u16, Option<&'static str>),
    /// A forwarded answer with this status (the connection may stay open).
    Answered(u16),
}

/// A request to smuggle behind another one: it must never reach the application.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n";

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let post = |headers: &str, body: &str| -> Vec<u8> {
        format!("POST /echo HTTP/1.1\r\nHost: web\r\n{headers}\r\n{body}").into_bytes()
    };
    let get = |extra: &str| -> Vec<u8> {
        format!("GET /echo HTTP/1.1\r\nHost: web\r\n{extra}\r\n").into_bytes()
    };
    let huge_header = format!("x-big: {}\r\n", "a".repeat(100 * 1024));
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nHost: web\r\n\r\n",
        "u".repeat(20 * 1024)
    );
    vec![
        ("control: a plain GET", get(""), Expect::Answered(200)),
        (
            "control: a chunked POST",
            post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"),
            Expect::Answered(200),
        ),
        (
            "two Host lines",
            b"GET /echo HTTP/1.1\r\nHost: web\r\nHost: client\r\n\r\n".to_vec(),
            Expect::Refused(400, Some("duplicate-host")),
        ),
        (
            "an absolute-form target with a disagreeing Host (the target wins)",
            b"GET http://web/echo HTTP/1.1\r\nHost: client\r\n\r\n".to_vec(),
            Expect::Answered(200),
        ),
        (
            "two Host lines, a request pipelined behind",
            format!("GET /echo HTTP/1.1\r\nHost: web\r\nHost: client\r\n\r\n{SMUGGLED}")
                .into_bytes(),
            Expect::Refused(400, Some("duplicate-host")),
        ),
        (
            "`gzip, chunked`, a request pipelined behind the chunked end",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            Expect::Refused(400, Some("bad-transfer-encoding")),
        ),
        (
            "two equal Host lines",
            b"GET /echo HTTP/1.1\r\nHost: web\r\nHost: web\r\n\r\n".to_vec(),
            Expect::Refused(400, Some("duplicate-host")),
        ),
        (
            "CL.TE: Content-Length first, a request hidden after the chunked end",
            post(
                "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            Expect::Refused(400, Some("ambiguous-length")),
        ),
        (
            "TE.CL: Transfer-Encoding first, a request hidden in a chunk",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            Expect::Refused(400, Some("ambiguous-length")),
        ),
        (
            "TE.TE: a second, bogus Transfer-Encoding",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            Expect::Refused(400, None),
        ),
        (
            "TE.TE: chunked twice on two lines",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                &format!("0\r\n\r\n{SMUGGLED}"),
            ),
            Expect::Refused(400, Some("bad-transfer-encoding")),
        ),
        (
            "TE.TE: `xchunked`",
            post(
                "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            Expect::Refused(400, None),
        ),
        (
            "TE.TE: `gzip, chunked` (a coding no hop undoes)",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            Expect::Refused(400, Some("bad-transfer-encoding")),
        ),
        (
            "TE.TE: a space before the colon",
            post(
                "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            Expect::Refused(400, None),
        ),
        (
            "TE.TE: a vertical tab in the value",
            post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
            Expect::Refused(400, None),
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            b"POST /echo HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            Expect::Refused(400, None),
        ),
        (
            "two Content-Lengths that disagree",
            post(
                "Content-Length: 3\r\nContent-Length: 41\r\n",
                &format!("abc{SMUGGLED}"),
            ),
            Expect::Refused(400, None),
        ),
        (
            "a Content-Length list that disagrees",
            post("Content-Length: 3, 41\r\n", &format!("abc{SMUGGLED}")),
            Expect::Refused(400, None),
        ),
        (
            "a signed Content-Length",
            post("Content-Length: +3\r\n", "abc"),
            Expect::Refused(400, None),
        ),
        (
            "two Content-Lengths that agree (one framing)",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            Expect::Answered(200),
        ),
        (
            "obs-fold (a continuation line)",
            get("x-folded: a\r\n b\r\n"),
            Expect::Refused(400, None),
        ),
        (
            "bare LF line ends (accepted as RFC 9112 allows; one framing)",
            b"GET /echo HTTP/1.1\nHost: web\n\n".to_vec(),
            Expect::Answered(200),
        ),
        (
            "a bare CR in a header value",
            get("x-cr: a\rb\r\n"),
            Expect::Refused(400, None),
        ),
        (
            "a NUL in a header value",
            get("x-nul: a\0b\r\n"),
            Expect::Refused(400, None),
        ),
        (
            "a NUL in a header name",
            get("x-n\0ul: a\r\n"),
            Expect::Refused(400, None),
        ),
        (
            "a space in the target",
            b"GET /a b HTTP/1.1\r\nHost: web\r\n\r\n".to_vec(),
            Expect::Refused(400, None),
        ),
        (
            "a chunk size that overflows",
            post(
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            ),
            Expect::Refused(400, Some("bad-chunk-size")),
        ),
        (
            "a 100 KiB header (limit 60 KiB)",
            get(&huge_header),
            Expect::Refused(431, None),
        ),
        (
            "a 50 KiB header (under the limit: forwarded through the hop)",
            get(&format!("x-big: {}\r\n", "a".repeat(50 * 1024))),
            Expect::Answered(200),
        ),
        (
            "150 header lines (limit 100)",
            get(&many_headers),
            Expect::Refused(431, None),
        ),
        (
            "a 20 KiB target (limit 16 KiB)",
            long_uri.into_bytes(),
            Expect::Refused(414, Some("uri-too-long")),
        ),
    ]
}

/// What came back on an attacking connection.
#[derive(Debug)]
struct Outcome {
    /// Everything read.
    bytes: Vec<u8>,
    /// Whether the sidecar closed the connection (EOF or reset) within the limit.
    closed: bool,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        mesh_tests::raw::status(&self.bytes)
    }

    fn header(&self, name: &str) -> Option<String> {
        mesh_tests::raw::header(&self.bytes, name)
    }

    /// Whether a whole response (head and `Content-Length` body) has arrived.
    fn complete(&self) -> bool {
        let Some(end) = find(&self.bytes, b"\r\n\r\n") else {
            return false;
        };
        let length = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        self.bytes.len() >= end + 4 + length
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        text.chars().take(300).collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends `bytes` on a new connection and reads until the sidecar closes it (or, when
/// `until_close` is false, until one whole response arrived), within `limit`.
async fn attack(addr: SocketAddr, bytes: &[u8], until_close: bool, limit: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut outcome = Outcome {
        bytes: Vec::new(),
        closed: false,
    };
    // A write may fail once the sidecar has answered and closed mid-request (huge heads).
    let _ = stream.write_all(bytes).await;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if !until_close && outcome.complete() {
            return outcome;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                outcome.closed = true;
                return outcome;
            }
            Ok(Ok(n)) => outcome.bytes.extend_from_slice(&buf[..n]),
            Err(_) => return outcome,
        }
    }
}

fn judge(name: &str, listener: &str, expect: Expect, outcome: &Outcome) {
    let what = format!("{listener}: {name}: got {:?}", outcome.text());
    match expect {
        Expect::Refused(status, reason) => {
            assert_eq!(outcome.status(), Some(status), "{what}");
            if let Some(reason) = reason {
                assert_eq!(
                    outcome.header("x-mesh-error").as_deref(),
                    Some(reason),
                    "{what}"
                );
            }
            assert!(outcome.closed, "{what}: the connection stayed open");
        }
        Expect::Answered(status) => {
            assert_eq!(outcome.status(), Some(status), "{what}");
        }
    }
}

/// A well-behaved client on its own connection: it gets its 200.
async fn well_behaved(addr: SocketAddr, what: &str) {
    let mut client = H1::open(addr).await;
    let reply = client.get("web", "/polite").await;
    assert_eq!(
        reply.status,
        200,
        "{what}: the polite client: {}",
        reply.text()
    );
}

async fn start() -> (Mesh, Backend, Backend) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .extra_config(&format!(
            "[limits]\nrequest_head_timeout_ms = {HEAD_TIMEOUT_MS}\n"
        ))
        .start()
        .await;
    (mesh, client_app, web)
}

fn assert_nothing_smuggled(web: &Backend, what: &str) {
    let seen = web.stats().seen.lock().expect("seen").clone();
    assert!(
        !seen.iter().any(|r| r.contains("/smuggled")),
        "{what}: the application received a smuggled request: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_nothing_is_smuggled() {
    let (mesh, _client_app, web) = start().await;
    let listeners = [
        ("outbound", mesh.outbound("client")),
        ("inbound (plaintext, permissive)", mesh.inbound("web")),
    ];
    let cases = cases();
    assert!(cases.len() >= 20);
    for (listener, addr) in listeners {
        for (name, bytes, expect) in &cases {
            let what = format!("{listener}: {name}");
            let until_close = !matches!(expect, Expect::Answered(_));
            let (outcome, ()) = within(&what, Duration::from_secs(30), async {
                tokio::join!(
                    attack(addr, bytes, until_close, Duration::from_secs(10)),
                    async {
                        // While the attack's connection is open.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        well_behaved(addr, &what).await;
                    }
                )
            })
            .await;
            judge(name, listener, *expect, &outcome);
            assert_nothing_smuggled(&web, &what);
        }
    }
    // Anything the sidecar would still deliver late (a smuggled request parsed after the
    // connection's first) has had time to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_nothing_smuggled(&web, "at the end");
    // The record is real: the polite requests and the forwarded POSTs are in it.
    let seen = web.stats().seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|r| r == "GET /polite") && seen.iter().any(|r| r == "POST /echo"),
        "{seen:?}"
    );
}

/// Slowloris: one header line a second. The head must be whole within the head timeout,
/// or the connection is closed (hyper closes without an answer); meanwhile other clients
/// are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_one_line_a_second_is_cut_at_the_head_timeout() {
    let (mesh, _client_app, web) = start().await;
    for (listener, addr) in [
        ("outbound", mesh.outbound("client")),
        ("inbound (plaintext, permissive)", mesh.inbound("web")),
    ] {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        stream
            .write_all(b"GET /slowloris HTTP/1.1\r\nHost: web\r\n")
            .await
            .expect("write");
        let mut closed_after = None;
        let polite = async {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                well_behaved(addr, &format!("{listener}: slowloris, polite client {i}")).await;
            }
        };
        let slow = async {
            let mut buf = [0u8; 1024];
            for line in 0..20 {
                let header = format!("x-slow-{line}: {line}\r\n");
                if stream.write_all(header.as_bytes()).await.is_err() {
                    closed_after = Some(started.elapsed());
                    return;
                }
                // Anything read (or EOF) within the second means the sidecar gave up on us.
                match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                    Err(_) => {}
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        closed_after = Some(started.elapsed());
                        return;
                    }
                    Ok(Ok(n)) => {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        // If the sidecar answers, it is a 408 before it closes.
                        assert!(text.starts_with("HTTP/1.1 408"), "{listener}: {text}");
                    }
                }
            }
        };
        tokio::join!(polite, slow);
        let after = closed_after.unwrap_or_else(|| {
            panic!("{listener}: a head sent a line a second was still open after 20 s")
        });
        // Cut at the timeout; generous above it for a loaded machine, never before it.
        assert!(
            after >= Duration::from_millis(HEAD_TIMEOUT_MS - 100)
                && after < Duration::from_millis(HEAD_TIMEOUT_MS + 5_000),
            "{listener}: cut after {after:?}"
        );
        assert!(
            !web.stats()
                .seen
                .lock()
                .expect("seen")
                .iter()
                .any(|r| r.contains("/slowloris")),
            "{listener}: the slow request reached the application"
        );
    }
}

/// `[limits]` set lower than the defaults: each limit holds at its value, on both listeners,
/// and a head just inside it is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_apply_to_both_listeners() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .extra_config(
            "[limits]\nmax_request_header_bytes = 16384\nmax_request_headers = 20\nmax_uri_bytes = 1024\n",
        )
        .start()
        .await;
    let headers = |n: usize| -> Vec<u8> {
        let lines: String = (0..n).map(|i| format!("x-h{i}: {i}\r\n")).collect();
        format!("GET /echo HTTP/1.1\r\nHost: web\r\n{lines}\r\n").into_bytes()
    };
    let target = |n: usize| -> Vec<u8> {
        // `/` and `n - 1` more bytes.
        format!("GET /{} HTTP/1.1\r\nHost: web\r\n\r\n", "t".repeat(n - 1)).into_bytes()
    };
    let big = |n: usize| -> Vec<u8> {
        format!(
            "GET /echo HTTP/1.1\r\nHost: web\r\nx-big: {}\r\n\r\n",
            "b".repeat(n)
        )
        .into_bytes()
    };
    let cases = [
        (
            "20 header lines (the limit)",
            headers(19),
            Expect::Answered(200),
        ),
        ("21 header lines", headers(20), Expect::Refused(431, None)),
        (
            "a 1024-byte target (the limit)",
            target(1024),
            Expect::Answered(200),
        ),
        (
            "a 1025-byte target",
            target(1025),
            Expect::Refused(414, Some("uri-too-long")),
        ),
        ("a 12 KiB head", big(12 * 1024), Expect::Answered(200)),
        ("a 20 KiB head", big(20 * 1024), Expect::Refused(431, None)),
    ];
    for (listener, addr) in [
        ("outbound", mesh.outbound("client")),
        ("inbound (plaintext, permissive)", mesh.inbound("web")),
    ] {
        for (name, bytes, expect) in &cases {
            let until_close = !matches!(expect, Expect::Answered(_));
            let outcome = attack(addr, bytes, until_close, Duration::from_secs(10)).await;
            judge(name, listener, *expect, &outcome);
        }
        well_behaved(addr, listener).await;
    }
}

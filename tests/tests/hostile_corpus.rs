//! A corpus of malformed and ambiguous HTTP/1.1 requests, sent over raw sockets through a
//! whole mesh hop (outbound → mTLS HTTP/2 → inbound → application), and to the inbound
//! listener of an `mtls permissive` service directly. The application is a raw-socket
//! recorder that keeps exactly the bytes it received. For each case: either the client got
//! its 4xx and the application received nothing, or the application received exactly one
//! well-framed request (one `Content-Length` or one `Transfer-Encoding: chunked`, never
//! both, a body that ends where its framing says, no byte left over) and the client got its
//! answer. No case may make a request no client sent (`/smuggled`) reach the application.
//!
//! The application is hostile too (`a_hostile_application_*`): a response with both
//! `Content-Length` and `Transfer-Encoding` is answered `502 upstream-bad-response`; a body
//! that ends before its `Content-Length` is cut so the client can tell (HTTP/1.1: closed
//! before the length; HTTP/2: the stream is reset), and counted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use mesh_tests::backend::Backend;
use mesh_tests::client::{h2_request, within, H2};
use mesh_tests::mesh::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] mtls permissive }
authorize web {
  allow from anyone to path prefix "/"
  default deny
}
"#;

/// What the application received as one request.
#[derive(Debug, Clone)]
struct Received {
    /// The head, as sent (lines with CRLF).
    head: String,
    /// What is wrong with its framing, if anything.
    problem: Option<String>,
}

impl Received {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }
}

/// A raw-socket application that records every request exactly as it arrived.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&record)));
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().expect("seen").clone()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buf` holds at least `n` bytes; false at EOF.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut chunk = [0u8; 8192];
    while buf.len() < n {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Reads until `buf` holds `needle` from `from` on; its position, or `None` at EOF.
async fn fill_until(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    needle: &[u8],
) -> Option<usize> {
    loop {
        if let Some(at) = find(&buf[from..], needle) {
            return Some(from + at);
        }
        let len = buf.len();
        if !fill(stream, buf, len + 1).await {
            return None;
        }
    }
}

/// One application connection: each request is read by its own framing and recorded, then
/// answered (by path: `/respond/clte` and `/respond/short` answer badly).
async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Received>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(end) = fill_until(&mut stream, &mut buf, 0, b"\r\n\r\n").await else {
            if !buf.is_empty() {
                seen.lock().expect("seen").push(Received {
                    head: String::from_utf8_lossy(&buf).into_owned(),
                    problem: Some("bytes that are not a whole head".into()),
                });
            }
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
        let mut problems = Vec::new();
        let values = |name: &str| -> Vec<String> {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
                .collect()
        };
        let lengths = values("content-length");
        let encodings = values("transfer-encoding");
        if head.contains('\0')
            || head
                .split("\r\n")
                .any(|l| l.contains('\r') || l.contains('\n'))
        {
            problems.push("a control character in the head".to_string());
        }
        if values("host").len() != 1 {
            problems.push(format!("{} Host lines", values("host").len()));
        }
        let mut at = end + 4;
        match (lengths.as_slice(), encodings.as_slice()) {
            ([], []) => {}
            ([length], []) => match length.parse::<usize>() {
                Ok(n) => {
                    if !fill(&mut stream, &mut buf, at + n).await {
                        problems.push("the body ended before its Content-Length".into());
                    }
                    at = (at + n).min(buf.len());
                }
                Err(_) => problems.push(format!("Content-Length {length:?}")),
            },
            ([], [te]) if te == "chunked" => loop {
                let Some(line_end) = fill_until(&mut stream, &mut buf, at, b"\r\n").await else {
                    problems.push("the chunked body ended early".into());
                    break;
                };
                let line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
                let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or(""), 16)
                else {
                    problems.push(format!("chunk size {line:?}"));
                    break;
                };
                at = line_end + 2;
                if size == 0 {
                    // Trailers, then the empty line.
                    match fill_until(&mut stream, &mut buf, at - 2, b"\r\n\r\n").await {
                        Some(e) => at = e + 4,
                        None => problems.push("no end after the last chunk".into()),
                    }
                    break;
                }
                if !fill(&mut stream, &mut buf, at + size + 2).await
                    || &buf[at + size..at + size + 2] != b"\r\n"
                {
                    problems.push("chunk data not as long as its size".into());
                    break;
                }
                at += size + 2;
            },
            _ => problems.push(format!(
                "framing: Content-Length {lengths:?}, Transfer-Encoding {encodings:?}"
            )),
        }
        let failed = !problems.is_empty();
        let received = Received {
            head,
            problem: (!problems.is_empty()).then(|| problems.join("; ")),
        };
        let path = received.path().to_string();
        seen.lock().expect("seen").push(received);
        if failed {
            return;
        }
        buf.drain(..at.min(buf.len()));
        let answer: &[u8] = match path.as_str() {
            "/respond/clte" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "/respond/short" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if path == "/respond/short" {
            // Give the bytes time to leave, then end the connection 95 bytes short.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
    }
}

/// What a case must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status (and this `x-mesh-error` when the proxy answered itself; `None`: hyper's
    /// parser answered, without one); the application receives nothing.
    Refused(u16, Option<&'static str>),
    /// Forwarded as exactly one well-framed request whose head contains this text (lower
    /// case; `""` for any), answered 200.
    Forwarded(&'static str),
}

/// A request to smuggle behind another one: it must never reach the application.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web\r\n\r\n";

fn corpus() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let post = |headers: &str, body: &str| -> Vec<u8> {
        format!("POST /echo HTTP/1.1\r\nHost: web\r\n{headers}\r\n{body}").into_bytes()
    };
    let get = |extra: &str| -> Vec<u8> {
        format!("GET /echo HTTP/1.1\r\nHost: web\r\n{extra}\r\n").into_bytes()
    };
    let smuggle_in_chunk = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let hidden = format!("0\r\n\r\n{SMUGGLED}");
    use Expect::{Forwarded, Refused};
    let ambiguous = Refused(400, Some("ambiguous-length"));
    let bad_te = Refused(400, Some("bad-transfer-encoding"));
    let hyper400 = Refused(400, None);
    vec![
        ("a plain GET", get(""), Forwarded("get /echo")),
        ("a POST with Content-Length", post("Content-Length: 3\r\n", "abc"), Forwarded("post /echo")),
        ("a chunked POST", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"), Forwarded("post /echo")),
        ("a chunk extension", post("Transfer-Encoding: chunked\r\n", "3;ext=\"x\"\r\nabc\r\n0\r\n\r\n"), Forwarded("post /echo")),
        ("chunked with a trailer", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nx-t: 1\r\n\r\n"), Forwarded("post /echo")),
        ("`Transfer-Encoding: CHUNKED`", post("Transfer-Encoding: CHUNKED\r\n", "0\r\n\r\n"), Forwarded("post /echo")),
        ("`Transfer-Encoding:` with a tab before chunked", post("Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n"), Forwarded("post /echo")),
        ("CL.TE: a request hidden after the chunked end", post("Content-Length: 44\r\nTransfer-Encoding: chunked\r\n", &hidden), ambiguous),
        ("TE.CL: a request hidden in a chunk", post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", &smuggle_in_chunk), ambiguous),
        ("CL.TE with `Content-Length: 0`", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", &hidden), ambiguous),
        ("CL.TE with bare LF line ends", format!("POST /echo HTTP/1.1\nHost: web\nContent-Length: 44\nTransfer-Encoding: chunked\n\n{hidden}").into_bytes(), ambiguous),
        ("CL.TE with ` chunked` (a leading space)", post("Content-Length: 44\r\nTransfer-Encoding:  chunked\r\n", &hidden), ambiguous),
        ("CL.TE with a tab before chunked", post("Content-Length: 44\r\nTransfer-Encoding:\tchunked\r\n", &hidden), ambiguous),
        ("CL.TE with `Transfer-encoding` in another case", post("Content-Length: 44\r\ntransfer-ENCODING: chunked\r\n", &hidden), ambiguous),
        ("TE.TE: `xchunked`", post("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"), hyper400),
        ("TE.TE: `chunked` and a bogus second line", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", &hidden), hyper400),
        ("TE.TE: chunked on two lines", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", &hidden), bad_te),
        ("TE.TE: `chunked, chunked`", post("Transfer-Encoding: chunked, chunked\r\n", &hidden), bad_te),
        ("TE.TE: `gzip, chunked`", post("Transfer-Encoding: gzip, chunked\r\n", &hidden), bad_te),
        ("TE.TE: `identity`", post("Transfer-Encoding: identity\r\n", "abc"), hyper400),
        ("TE.TE: a space before the colon", post("Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"), hyper400),
        ("TE.TE: a tab before the colon", post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"), hyper400),
        ("TE.TE: a vertical tab before chunked", post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"), hyper400),
        ("TE.TE: the header folded onto a second line", post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"), hyper400),
        ("Transfer-Encoding in HTTP/1.0", b"POST /echo HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), hyper400),
        ("two Content-Lengths that agree", post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"), Forwarded("content-length: 3")),
        ("two Content-Lengths that disagree", post("Content-Length: 3\r\nContent-Length: 41\r\n", &format!("abc{SMUGGLED}")), hyper400),
        ("a Content-Length list that disagrees", post("Content-Length: 3, 41\r\n", &format!("abc{SMUGGLED}")), hyper400),
        ("a Content-Length list that agrees", post("Content-Length: 3, 3\r\n", "abc"), hyper400),
        ("a signed Content-Length (+)", post("Content-Length: +3\r\n", "abc"), hyper400),
        ("a negative Content-Length", post("Content-Length: -1\r\n", "abc"), hyper400),
        ("a hexadecimal Content-Length", post("Content-Length: 0x3\r\n", "abc"), hyper400),
        ("a Content-Length beyond 64 bits", post("Content-Length: 99999999999999999999999\r\n", "abc"), hyper400),
        ("a Content-Length with a space inside", post("Content-Length: 1 2\r\n", "abc"), hyper400),
        ("a Content-Length with spaces around (trimmed)", post("Content-Length:  3 \r\n", "abc"), Forwarded("content-length: 3")),
        ("a Content-Length with leading zeros", post("Content-Length: 003\r\n", "abc"), Forwarded("content-length: 003")),
        ("a chunk size that overflows", post("Transfer-Encoding: chunked\r\n", "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"), Refused(400, Some("bad-chunk-size"))),
        ("a chunk size that is not hex", post("Transfer-Encoding: chunked\r\n", "zz\r\nabc\r\n0\r\n\r\n"), Refused(400, Some("bad-chunk-size"))),
        ("chunk data longer than its size (a request inside)", post("Transfer-Encoding: chunked\r\n", &format!("3\r\nabc{SMUGGLED}\r\n0\r\n\r\n")), Refused(400, Some("bad-chunk-size"))),
        ("bare LF line ends", b"GET /echo HTTP/1.1\nHost: web\n\n".to_vec(), Forwarded("get /echo")),
        ("a bare CR in a header value", get("x-cr: a\rb\r\n"), hyper400),
        ("a NUL in a header value", get("x-nul: a\0b\r\n"), hyper400),
        ("a NUL in a header name", get("x-n\0ul: a\r\n"), hyper400),
        ("a NUL in the target", b"GET /echo\0 HTTP/1.1\r\nHost: web\r\n\r\n".to_vec(), hyper400),
        ("a space in the target", b"GET /a b HTTP/1.1\r\nHost: web\r\n\r\n".to_vec(), hyper400),
        ("obs-fold in a header", get("x-folded: a\r\n b\r\n"), hyper400),
        ("a header line without a colon", get("x-no-colon\r\n"), hyper400),
        ("a space inside a header name", get("x y: 1\r\n"), hyper400),
        ("HTTP/1.2", b"GET /echo HTTP/1.2\r\nHost: web\r\n\r\n".to_vec(), hyper400),
        ("two Host lines", b"GET /echo HTTP/1.1\r\nHost: web\r\nHost: client\r\n\r\n".to_vec(), Refused(400, Some("duplicate-host"))),
        ("two equal Host lines", b"GET /echo HTTP/1.1\r\nHost: web\r\nHost: web\r\n\r\n".to_vec(), Refused(400, Some("duplicate-host"))),
        ("an absolute-form target with a disagreeing Host (the target wins)", b"GET http://web/echo HTTP/1.1\r\nHost: client\r\n\r\n".to_vec(), Forwarded("host: web\r\n")),
        ("an absolute-form target without Host", b"GET http://web/echo HTTP/1.1\r\n\r\n".to_vec(), Forwarded("get /echo")),
        ("Expect: 100-continue with a body", post("Content-Length: 3\r\nExpect: 100-continue\r\n", "abc"), Forwarded("post /echo")),
        ("a GET with a Content-Length body", b"GET /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc".to_vec(), Forwarded("get /echo")),
    ]
}

/// What came back on the client's connection.
#[derive(Debug, Default)]
struct Outcome {
    bytes: Vec<u8>,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        mesh_tests::raw::status(&self.bytes)
    }

    fn header(&self, name: &str) -> Option<String> {
        mesh_tests::raw::header(&self.bytes, name)
    }

    /// The body bytes after the head.
    fn body(&self) -> &[u8] {
        find(&self.bytes, b"\r\n\r\n").map_or(&[][..], |end| &self.bytes[end + 4..])
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .take(300)
            .collect()
    }
}

/// Sends `bytes` on a new connection and reads until the sidecar closes it, or a whole
/// `Content-Length` answer arrived, within `limit`.
async fn send(addr: SocketAddr, bytes: &[u8], limit: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    let mut outcome = Outcome::default();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let (Some(end), Some(length)) = (
            find(&outcome.bytes, b"\r\n\r\n"),
            outcome
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok()),
        ) {
            if outcome.bytes.len() >= end + 4 + length {
                return outcome;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return outcome,
            Ok(Ok(n)) => {
                outcome.bytes.extend_from_slice(&buf[..n]);
                // An interim `100 Continue` is not the answer.
                if outcome.bytes.starts_with(b"HTTP/1.1 100 ") {
                    if let Some(end) = find(&outcome.bytes, b"\r\n\r\n") {
                        outcome.bytes.drain(..end + 4);
                    }
                }
            }
        }
    }
}

/// Waits (bounded) until the application has recorded more than `count` requests.
async fn wait_for_more(app: &Recorder, count: usize) -> Vec<Received> {
    for _ in 0..100 {
        let seen = app.seen();
        if seen.len() > count {
            // Anything pipelined behind it has had time to arrive too.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return app.seen();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.seen()
}

async fn start(app: &Recorder) -> (Mesh, Backend) {
    Mesh::client_and_app(POLICY, app.addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_in_the_corpus_is_refused_or_forwarded_as_exactly_one_framed_request() {
    let app = Recorder::start().await;
    let (mesh, _client_app) = start(&app).await;
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} cases", corpus.len());
    let mut failures = Vec::new();
    for (listener, addr) in [
        ("outbound → inbound → app", mesh.outbound("client")),
        ("inbound (plaintext, permissive) → app", mesh.inbound("web")),
    ] {
        for (name, bytes, expect) in &corpus {
            let what = format!("{listener}: {name}");
            let before = app.seen().len();
            let outcome = within(&what, Duration::from_secs(30), async {
                send(addr, bytes, Duration::from_secs(10)).await
            })
            .await;
            let seen = match expect {
                Expect::Forwarded(_) => wait_for_more(&app, before).await,
                Expect::Refused(..) => {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    app.seen()
                }
            };
            let new = &seen[before..];
            let got = format!("got {:?}; the application received {new:?}", outcome.text());
            match expect {
                Expect::Refused(status, reason) => {
                    let ok = outcome.status() == Some(*status)
                        && reason
                            .is_none_or(|r| outcome.header("x-mesh-error").as_deref() == Some(r))
                        && new.is_empty();
                    if !ok {
                        failures.push(format!(
                            "{what}: expected {status} {reason:?}, nothing forwarded; {got}"
                        ));
                    }
                }
                Expect::Forwarded(contains) => {
                    let ok = outcome.status() == Some(200)
                        && new.len() == 1
                        && new[0].problem.is_none()
                        && new[0].head.to_ascii_lowercase().contains(contains);
                    if !ok {
                        failures.push(format!("{what}: expected one well-framed request with {contains:?}, 200; {got}"));
                    }
                }
            }
            if new.iter().any(|r| r.path().contains("smuggled")) {
                failures.push(format!(
                    "{what}: a smuggled request reached the application"
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = app.seen();
    assert!(
        !seen
            .iter()
            .any(|r| r.path().contains("smuggled") || r.problem.is_some()),
        "the application received: {seen:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_application_gets_502_before_the_head_and_a_cut_stream_after_it() {
    let app = Recorder::start().await;
    let (mesh, _client_app) = start(&app).await;
    let outbound = mesh.outbound("client");
    let request = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: web\r\n\r\n").into_bytes();

    // Content-Length beside Transfer-Encoding: nothing of it has reached the client; 502.
    let outcome = send(outbound, &request("/respond/clte"), Duration::from_secs(10)).await;
    assert_eq!(outcome.status(), Some(502), "{}", outcome.text());
    assert_eq!(
        outcome.header("x-mesh-error").as_deref(),
        Some("upstream-bad-response"),
        "{}",
        outcome.text()
    );

    // A body that ends before its Content-Length, over HTTP/1.1: the head has gone, so the
    // connection is closed before the length (the client can tell), never a whole answer.
    let outcome = send(
        outbound,
        &request("/respond/short"),
        Duration::from_secs(10),
    )
    .await;
    match outcome.status() {
        Some(200) => {
            let length: usize = outcome
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(usize::MAX);
            assert!(
                outcome.body().len() < length,
                "a whole answer arrived: {}",
                outcome.text()
            );
        }
        Some(502) => {}
        other => panic!("got {other:?}: {}", outcome.text()),
    }

    // The same over HTTP/2: the stream is reset (or the answer is 502 if nothing had gone).
    let mut h2 = H2::open(outbound).await;
    for path in ["/respond/short", "/respond/clte"] {
        let request = h2_request(Method::GET, "web", path)
            .body(mesh_tests::body::empty())
            .expect("request");
        let response = within(path, Duration::from_secs(10), h2.send(request)).await;
        match response {
            Ok(response) if response.status() == 200 => {
                let body = within(
                    path,
                    Duration::from_secs(10),
                    response.into_body().collect(),
                )
                .await;
                assert!(body.is_err(), "{path}: a whole body arrived over HTTP/2");
            }
            Ok(response) => {
                assert_eq!(response.status(), 502, "{path}");
                assert_eq!(
                    response.headers()["x-mesh-error"],
                    if path == "/respond/clte" {
                        "upstream-bad-response"
                    } else {
                        "upstream-reset"
                    },
                    "{path}"
                );
            }
            Err(error) => panic!("{path}: {error}"),
        }
    }

    // Counted: the refused responses at the service's sidecar, the cut streams at the
    // client's.
    let metrics = mesh.admin_get("web", "/metrics").await.text();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesh_upstream_bad_responses_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 2.0, "refused responses: {refused}");
    let metrics = mesh.admin_get("client", "/metrics").await.text();
    let cut = mesh_tests::metrics::sum(
        &metrics,
        "mesh_downstream_responses_cut_total",
        &[("listener", "outbound")],
    );
    assert!(cut >= 2.0, "cut responses: {cut}");
}

//! HTTP/1.1 request framing and head limits, checked on both listeners before a request is routed.
//!
//! hyper's parser refuses most ambiguous framing itself (it answers 400, 431 or 414 and
//! closes, without an `x-mesh-error`): a `Transfer-Encoding` whose last coding is not
//! `chunked`, `Transfer-Encoding` in HTTP/1.0, a `Content-Length` that is not one number
//! (lists such as `5, 6`, signs, spaces), repeated `Content-Length`s that disagree, obs-fold,
//! control characters. What it lets through is checked here: more than one `Host`, and a
//! `Transfer-Encoding` other than exactly one `chunked` (hyper accepts `gzip, chunked`, which
//! no hop after this one could decode the same way).
//!
//! What hyper resolves without telling the handler is found in the raw bytes ([`Sniffed`],
//! wrapped around each connection in the accept path): `Content-Length` together with
//! `Transfer-Encoding` (hyper drops the length and reads the body as chunked), and a
//! chunk-size line that overflows or is not hex, or chunk data longer than its size (hyper
//! fails the body once it is already streaming). The request whose head or body showed it
//! is refused with 400 before any handler sees it, so what is forwarded has exactly one
//! framing.

use std::time::Duration;

use http::{header, HeaderMap, Request, Version};

use crate::errors::ProxyError;

/// The limits on a request head, from `[limits]` (the same on every listener).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The request head (request line and headers) in bytes; beyond it hyper answers 431.
    pub header_bytes: usize,
    /// Header lines per request; beyond it hyper answers 431.
    pub headers: usize,
    /// The request target in bytes; beyond it 414 (`uri-too-long`).
    pub uri_bytes: usize,
    /// The whole request head must arrive within this, else the connection is closed.
    pub head_timeout: Duration,
    /// Open connections per listener; one more is closed at once.
    pub connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub streams: u32,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            header_bytes: 60 * 1024,
            headers: 100,
            uri_bytes: 16 * 1024,
            head_timeout: Duration::from_secs(10),
            connections: 10_000,
            streams: 1024,
        }
    }
}

/// Why a request's framing or head was refused, as an `x-mesh-error` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than one `Host` line: which one names the service is ambiguous.
    DuplicateHost,
    /// `Transfer-Encoding` other than exactly one `chunked`.
    TransferEncoding,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    AmbiguousLength,
    /// `Content-Length` values that are not one number or disagree.
    ContentLength,
    /// A chunk-size line that is not a hexadecimal size (beyond 64 bits, or not hex), or
    /// chunk data that does not end where its size says.
    ChunkSize,
}

impl Refusal {
    /// The `x-mesh-error` reason.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::DuplicateHost => "duplicate-host",
            Refusal::TransferEncoding => "bad-transfer-encoding",
            Refusal::AmbiguousLength => "ambiguous-length",
            Refusal::ContentLength => "bad-content-length",
            Refusal::ChunkSize => "bad-chunk-size",
        }
    }
}

/// Checks a request's head against `limits` and its framing; an error is the answer.
pub fn check<B>(request: &Request<B>, limits: &HeadLimits) -> Result<(), ProxyError> {
    if target_len(request) > limits.uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    framing(request.headers()).map_err(ProxyError::Framing)
}

/// A target in absolute form (or HTTP/2's `:authority`) names the host: a `Host` that
/// disagrees is replaced by it (RFC 9112 §3.2.2), so the route, the authorization and the
/// application all see one host. Call after [`check`] (which refused a repeated `Host`).
pub fn normalize_host<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let Some(host) = request.headers().get(header::HOST) else {
        return;
    };
    if host.as_bytes() == authority.as_str().as_bytes() {
        return;
    }
    if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, value);
    }
}

/// Whether the connection must close after the answer: an HTTP/1 connection whose framing
/// is in doubt cannot be trusted to tell where the next request starts.
pub fn closes_connection(version: Version) -> bool {
    matches!(version, Version::HTTP_10 | Version::HTTP_11)
}

/// The request target's length as it was on the wire: HTTP/1's origin or absolute form;
/// HTTP/2's `:path` (hyper builds an absolute URI from `:scheme` and `:authority` too, which
/// would make the same request longer behind a sidecar than in front of it).
fn target_len<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if request.version() == Version::HTTP_2 {
        return path;
    }
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    scheme + authority + path
}

fn framing(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Err(Refusal::DuplicateHost);
    }
    let mut encodings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let has_te = match (encodings.next(), encodings.next()) {
        (None, _) => false,
        (Some(only), None) if only.as_bytes().eq_ignore_ascii_case(b"chunked") => true,
        _ => return Err(Refusal::TransferEncoding),
    };
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if has_te {
            return Err(Refusal::AmbiguousLength);
        }
        // hyper keeps one line of agreeing repeats; anything else here is not one number.
        if lengths.next().is_some() || !first.as_bytes().iter().all(u8::is_ascii_digit) {
            return Err(Refusal::ContentLength);
        }
    }
    Ok(())
}

/// What the reader of one HTTP/1 connection found in the raw bytes, for its service: the
/// first request whose head (or first chunk size) hyper would resolve silently, by index.
#[derive(Debug, Default)]
pub struct Verdicts {
    bad: std::sync::Mutex<Option<(u64, Refusal)>>,
    served: std::sync::atomic::AtomicU64,
    upgraded: std::sync::atomic::AtomicBool,
}

impl Verdicts {
    /// The connection switched protocols (`101`): its bytes are no longer HTTP/1, so the
    /// reader stops following them.
    pub fn upgraded(&self) {
        self.upgraded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Called once per request the service receives, in order: the refusal of this
    /// request, if the raw bytes showed one.
    pub fn next(&self) -> Option<Refusal> {
        let index = self
            .served
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let bad = *self
            .bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match bad {
            Some((at, refusal)) if at == index => Some(refusal),
            _ => None,
        }
    }

    fn record(&self, index: u64, refusal: Refusal) {
        let mut bad = self
            .bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bad.is_none() {
            *bad = Some((index, refusal));
        }
    }
}

/// The longest chunk-size or trailer line the sniffer follows (hyper refuses long ones).
const LINE_LIMIT: usize = 16 * 1024;
/// The largest head buffer a connection keeps between requests (a head past it is
/// allocated anew each time rather than held while the connection idles).
const REUSED_LINE_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading a request head.
    Head,
    /// A body of known length: this many bytes left.
    Body(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Chunk data: this many bytes left, then its line end.
    ChunkData(u64),
    /// The line end after chunk data.
    ChunkEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailers,
    /// Not following: HTTP/2, something hyper refuses itself, or a refusal was recorded.
    Off,
}

/// Follows the HTTP/1 requests on a connection byte for byte, as hyper will read them, and
/// records what hyper would resolve without telling the service: `Content-Length` beside
/// `Transfer-Encoding` (hyper drops the length), `Content-Length` lines that do not name one
/// length, and a chunk size that overflows. Reads only; every byte goes to hyper unchanged.
#[derive(Debug)]
struct Sniffer {
    mode: Mode,
    line: Vec<u8>,
    /// Requests whose head was read (the current one is `heads - 1`).
    heads: u64,
    head_limit: usize,
    verdicts: std::sync::Arc<Verdicts>,
}

impl Sniffer {
    /// Between a request's first byte and its end (as far as it follows them).
    fn in_request(&self) -> bool {
        match self.mode {
            Mode::Head => !self.line.is_empty(),
            Mode::Off => false,
            _ => true,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.mode {
                Mode::Off => return,
                Mode::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are skipped (as httparse does).
                        let skip = data.iter().take_while(|b| matches!(b, b'\r' | b'\n'));
                        data = &data[skip.count()..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let before = self.line.len();
                    self.line.extend_from_slice(data);
                    match head_end(&self.line, before) {
                        Some(end) => {
                            let used = end - before;
                            data = &data[used..];
                            self.line.truncate(end);
                            let mut head = std::mem::take(&mut self.line);
                            self.mode = self.head(&head);
                            // The next request's head reuses the buffer (one allocation less
                            // per request), unless an unusually long head grew it.
                            if head.capacity() <= REUSED_LINE_CAPACITY {
                                head.clear();
                                self.line = head;
                            }
                        }
                        None => {
                            if self.line.len() > self.head_limit {
                                self.mode = Mode::Off;
                            }
                            return;
                        }
                    }
                }
                Mode::Body(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.mode = if n == left {
                        Mode::Head
                    } else {
                        Mode::Body(left - n)
                    };
                }
                Mode::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.mode = if n == left {
                        Mode::ChunkEnd
                    } else {
                        Mode::ChunkData(left - n)
                    };
                }
                Mode::ChunkSize | Mode::ChunkEnd | Mode::Trailers => {
                    let Some(at) = data.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > LINE_LIMIT {
                            self.mode = Mode::Off;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&data[..at]);
                    data = &data[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.mode = match self.mode {
                        Mode::ChunkSize => self.chunk_size(line),
                        Mode::ChunkEnd if line.is_empty() => Mode::ChunkSize,
                        // Chunk data longer than its size said.
                        Mode::ChunkEnd => self.refuse(Refusal::ChunkSize),
                        Mode::Trailers if line.is_empty() => Mode::Head,
                        Mode::Trailers => Mode::Trailers,
                        _ => Mode::Off,
                    };
                }
            }
        }
    }

    fn refuse(&mut self, refusal: Refusal) -> Mode {
        self.verdicts.record(self.heads.saturating_sub(1), refusal);
        Mode::Off
    }

    fn chunk_size(&mut self, line: &[u8]) -> Mode {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        // After the size: nothing, or chunk extensions (`;`), maybe after spaces.
        let rest = trim(&line[digits..]);
        if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
            return self.refuse(Refusal::ChunkSize);
        }
        let mut size: u64 = 0;
        for b in &line[..digits] {
            let digit = u64::from(char::from(*b).to_digit(16).unwrap_or(0));
            match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                Some(s) => size = s,
                None => return self.refuse(Refusal::ChunkSize),
            }
        }
        if size == 0 {
            Mode::Trailers
        } else {
            Mode::ChunkData(size)
        }
    }

    /// Reads one whole head (without its final empty line) and says what follows it.
    fn head(&mut self, head: &[u8]) -> Mode {
        self.heads += 1;
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or_default();
        if request_line.starts_with(b"PRI * HTTP/2") {
            return Mode::Off;
        }
        let mut te: Vec<&[u8]> = Vec::new();
        let mut lengths: Vec<&[u8]> = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            if matches!(line[0], b' ' | b'\t') {
                return Mode::Off; // obs-fold: hyper refuses it
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                return Mode::Off;
            };
            let name = &line[..colon];
            let value = trim(&line[colon + 1..]);
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te.push(value);
            } else if name.eq_ignore_ascii_case(b"content-length") {
                lengths.push(value);
            }
        }
        if !te.is_empty() && !lengths.is_empty() {
            return self.refuse(Refusal::AmbiguousLength);
        }
        let mut length: Option<u64> = None;
        for value in lengths {
            for item in value.split(|b| *b == b',') {
                let item = trim(item);
                let parsed = (!item.is_empty() && item.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(item).ok()?.parse::<u64>().ok())
                    .flatten();
                match (parsed, length) {
                    (None, _) => return self.refuse(Refusal::ContentLength),
                    (Some(n), Some(l)) if n != l => return self.refuse(Refusal::ContentLength),
                    (Some(n), _) => length = Some(n),
                }
            }
        }
        match (te.as_slice(), length) {
            ([], Some(0) | None) => Mode::Head,
            ([], Some(n)) => Mode::Body(n),
            ([only], _) if only.eq_ignore_ascii_case(b"chunked") => Mode::ChunkSize,
            // Refused by `framing` (or hyper) on this request: nothing follows.
            _ => Mode::Off,
        }
    }
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Where a head ends in `buf` (after its empty line, CRLF or bare LF), looking from a little
/// before `from` (where the new bytes start).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// A connection's stream with its HTTP/1 requests followed by a [`Sniffer`] as hyper reads
/// them; writes pass through.
#[derive(Debug)]
pub struct Sniffed<S> {
    inner: S,
    sniffer: Sniffer,
    /// Bytes arrived since the last wait.
    got_bytes: bool,
}

/// A transport that can send the ACK it is holding back at once (`TCP_QUICKACK`).
///
/// A client that writes a request's head and body in two sends with Nagle on (a POST)
/// waits for our ACK of the head before it sends the body, and on a kept-alive connection
/// the kernel delays that ACK up to 40 ms: every other such request took 43 ms through a
/// sidecar. So when a read finds nothing more in the middle of a request, the sniffer
/// (which follows the framing anyway) asks for the ACK; between requests nothing is done,
/// so the usual case costs no system call. `upstream/quickack.rs` does the same for the
/// application's responses.
pub trait AckNow {
    /// Sends the pending ACK now, if there is one (best effort).
    fn ack_now(&self) {}
}

impl AckNow for tokio::net::TcpStream {
    fn ack_now(&self) {
        let _ = socket2::SockRef::from(self).set_tcp_quickack(true);
    }
}

/// In-memory streams (the fuzz target, tests) have no ACKs.
impl AckNow for tokio::io::DuplexStream {}
impl AckNow for tokio::io::Empty {}

impl<S> Sniffed<S> {
    /// Wraps `inner`; heads longer than `head_limit` are left to hyper (which answers 431).
    pub fn new(inner: S, head_limit: usize) -> (Sniffed<S>, std::sync::Arc<Verdicts>) {
        let verdicts = std::sync::Arc::new(Verdicts::default());
        let sniffer = Sniffer {
            mode: Mode::Head,
            line: Vec::new(),
            heads: 0,
            head_limit,
            verdicts: std::sync::Arc::clone(&verdicts),
        };
        let sniffed = Sniffed {
            inner,
            sniffer,
            got_bytes: false,
        };
        (sniffed, verdicts)
    }
}

impl<S: tokio::io::AsyncRead + AckNow + Unpin> tokio::io::AsyncRead for Sniffed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if polled.is_pending() {
            if std::mem::take(&mut this.got_bytes) && this.sniffer.in_request() {
                this.inner.ack_now();
            }
            return polled;
        }
        if let std::task::Poll::Ready(Ok(())) = polled {
            this.got_bytes |= buf.filled().len() > before;
            if this.sniffer.mode != Mode::Off
                && this
                    .sniffer
                    .verdicts
                    .upgraded
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                this.sniffer.mode = Mode::Off;
                this.sniffer.line = Vec::new();
            }
            if this.sniffer.mode != Mode::Off {
                this.sniffer.feed(&buf.filled()[before..]);
            }
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Sniffed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{check, framing, HeadLimits, Refusal};
    use http::{HeaderMap, HeaderValue, Request};

    type Lines = &'static [(&'static str, &'static str)];

    fn headers(lines: Lines) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn one_framing_passes_and_every_ambiguity_is_named() {
        let cases: [(Lines, Result<(), Refusal>); 10] = [
            (&[("host", "a")], Ok(())),
            (&[("host", "a"), ("content-length", "5")], Ok(())),
            (&[("host", "a"), ("transfer-encoding", "Chunked")], Ok(())),
            (&[("host", "a"), ("host", "b")], Err(Refusal::DuplicateHost)),
            (&[("host", "a"), ("host", "a")], Err(Refusal::DuplicateHost)),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                Err(Refusal::AmbiguousLength),
            ),
            (
                &[("content-length", "3"), ("content-length", "4")],
                Err(Refusal::ContentLength),
            ),
            (&[("content-length", "3, 4")], Err(Refusal::ContentLength)),
        ];
        for (lines, expected) in cases {
            assert_eq!(framing(&headers(lines)), expected, "{lines:?}");
        }
    }

    #[test]
    fn an_absolute_target_overrides_a_disagreeing_host() {
        let mut request = Request::get("http://web/x")
            .header("host", "client")
            .body(())
            .expect("request");
        super::normalize_host(&mut request);
        assert_eq!(request.headers()["host"], "web");
        let mut origin = Request::get("/x")
            .header("host", "client")
            .body(())
            .expect("request");
        super::normalize_host(&mut origin);
        assert_eq!(origin.headers()["host"], "client");
    }

    #[test]
    fn a_long_target_is_refused_with_414() {
        let limits = HeadLimits {
            uri_bytes: 10,
            ..HeadLimits::default()
        };
        let ok = Request::get("/123456789").body(()).expect("request");
        assert!(check(&ok, &limits).is_ok());
        let h2 = Request::get("http://web/123456789")
            .version(http::Version::HTTP_2)
            .body(())
            .expect("request");
        assert!(check(&h2, &limits).is_ok(), "HTTP/2 counts `:path` only");
        let long = Request::get("/1234567890").body(()).expect("request");
        let error = check(&long, &limits).expect_err("too long");
        assert_eq!(error.status(), 414);
        assert_eq!(error.reason(), "uri-too-long");
    }

    fn sniff(chunks: &[&[u8]]) -> Vec<Option<Refusal>> {
        let (mut sniffed, verdicts) = super::Sniffed::new(tokio::io::empty(), 8192);
        for chunk in chunks {
            sniffed.sniffer.feed(chunk);
        }
        (0..4).map(|_| verdicts.next()).collect()
    }

    #[test]
    fn the_raw_bytes_show_what_hyper_would_resolve_silently() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nt: 1\r\n\r\n";
        let cl_te =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let te_cl = b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 5\n\n0\n\n";
        let overflow =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n";
        let lists = b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n";
        let same = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc";
        // One request at a time, pipelined, split anywhere.
        assert_eq!(
            sniff(&[ok, ok, cl_te]),
            [None, None, Some(Refusal::AmbiguousLength), None]
        );
        assert_eq!(
            sniff(&[chunked, te_cl]),
            [None, Some(Refusal::AmbiguousLength), None, None]
        );
        assert_eq!(
            sniff(&[overflow]),
            [Some(Refusal::ChunkSize), None, None, None]
        );
        let not_hex = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(
            sniff(&[not_hex]),
            [Some(Refusal::ChunkSize), None, None, None]
        );
        let long = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n";
        assert_eq!(sniff(&[long]), [Some(Refusal::ChunkSize), None, None, None]);
        assert_eq!(
            sniff(&[lists]),
            [Some(Refusal::ContentLength), None, None, None]
        );
        assert_eq!(sniff(&[same, ok]), [None, None, None, None]);
        let mut all = Vec::new();
        all.extend_from_slice(chunked);
        all.extend_from_slice(ok);
        all.extend_from_slice(cl_te);
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(
            sniff(&bytes),
            [None, None, Some(Refusal::AmbiguousLength), None]
        );
        // HTTP/2 is not followed.
        assert_eq!(
            sniff(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", cl_te]),
            [None; 4]
        );
    }
}

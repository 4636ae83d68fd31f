//! Where the application's responses end, followed from the bytes read on a pooled
//! connection: so that `quickack` knows whether a read that finds nothing more leaves the
//! proxy waiting in the middle of a response (the application may be waiting for our ACK)
//! or between responses (forcing the ACK out then would only cost a packet per request: 10%
//! of a plain hop's CPU, measured).
//!
//! It reads what hyper's client reads, no more: the head (`httparse`), then a body by
//! `Content-Length` or chunked framing. What it cannot follow (a head beyond 64 KiB, a body
//! that ends at the connection's close, malformed framing) counts as "in a response" until
//! the connection ends: at worst a packet more per wait, never a missed ACK. A `HEAD`
//! request's response has no body whatever its `Content-Length`, so requests are glanced at
//! too (their first bytes).

/// The longest head followed across reads.
const MAX_HEAD: usize = 64 * 1024;

/// Where the bytes read so far leave the connection.
#[derive(Debug, Default)]
pub(super) struct ResponseEnd {
    state: State,
    /// The request being answered is a `HEAD`: its response has no body.
    head_request: bool,
    /// The next write starts a request.
    request_starts: bool,
}

#[derive(Debug, Default)]
enum State {
    /// Between responses.
    #[default]
    Idle,
    /// In a head; the bytes of it kept when it spans reads.
    Head(Vec<u8>),
    /// In a body of known length: the bytes left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// In something not followed (see the module's doc) until the connection ends.
    Lost,
}

#[derive(Debug)]
enum Chunk {
    /// In a chunk-size line: the size so far, and whether an extension began.
    Size { size: u64, extension: bool },
    /// In a chunk's data: the bytes left.
    Data(u64),
    /// The CRLF after a chunk's data: the bytes of it left.
    DataEnd(u8),
    /// In the trailer section: the bytes of the current line so far.
    Trailer(usize),
}

impl ResponseEnd {
    pub(super) fn new() -> ResponseEnd {
        ResponseEnd {
            request_starts: true,
            ..ResponseEnd::default()
        }
    }

    /// True while bytes of a response have come and it has not ended.
    pub(super) fn in_response(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// The proxy writes `bytes` (the start of a request when none is being answered).
    pub(super) fn wrote(&mut self, bytes: &[u8]) {
        if self.request_starts && !bytes.is_empty() {
            self.request_starts = false;
            self.head_request = bytes.starts_with(b"HEAD ");
        }
    }

    /// The proxy read `bytes`.
    pub(super) fn read(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            bytes = match std::mem::take(&mut self.state) {
                State::Idle => {
                    self.state = State::Head(Vec::new());
                    bytes
                }
                State::Head(kept) => self.head(kept, bytes),
                State::Length(left) => {
                    let taken = left.min(bytes.len() as u64);
                    let rest = left - taken;
                    self.state = if rest == 0 {
                        self.ended()
                    } else {
                        State::Length(rest)
                    };
                    &bytes[usize::try_from(taken).unwrap_or(bytes.len())..]
                }
                State::Chunked(chunk) => self.chunked(chunk, bytes),
                State::Lost => {
                    self.state = State::Lost;
                    return;
                }
            };
        }
    }

    /// A response ended: the next write starts a request.
    fn ended(&mut self) -> State {
        self.request_starts = true;
        self.head_request = false;
        State::Idle
    }

    /// Reads head bytes; returns what follows the head.
    fn head<'b>(&mut self, mut kept: Vec<u8>, bytes: &'b [u8]) -> &'b [u8] {
        // Where the head ends in `kept` + `bytes`, looking back 3 bytes for a split CRLFCRLF.
        let from = kept.len().saturating_sub(3);
        let end = if kept.is_empty() {
            find_head_end(bytes, 0).map(|at| (at, at))
        } else {
            let already = kept.len();
            let take = bytes.len().min(MAX_HEAD.saturating_sub(already) + 4);
            kept.extend_from_slice(&bytes[..take]);
            find_head_end(&kept, from).map(|at| (at, at - already))
        };
        let Some((end_in_head, end_in_bytes)) = end else {
            if kept.is_empty() {
                kept.extend_from_slice(bytes);
            }
            self.state = if kept.len() > MAX_HEAD {
                State::Lost
            } else {
                State::Head(kept)
            };
            return &[];
        };
        let head = if kept.is_empty() {
            &bytes[..end_in_head]
        } else {
            &kept[..end_in_head]
        };
        self.state = self.after_head(head);
        &bytes[end_in_bytes.min(bytes.len())..]
    }

    /// What follows a whole head.
    fn after_head(&mut self, head: &[u8]) -> State {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = response.parse(head) else {
            return State::Lost;
        };
        let Some(code) = response.code else {
            return State::Lost;
        };
        match code {
            101 => return State::Lost,
            // An interim response: the final one follows (and may wait for our ACK too).
            100..=199 => return State::Head(Vec::new()),
            204 | 304 => return self.ended(),
            _ if self.head_request => return self.ended(),
            _ => {}
        }
        let mut length = None;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let chunked = header
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                return if chunked {
                    State::Chunked(Chunk::Size {
                        size: 0,
                        extension: false,
                    })
                } else {
                    State::Lost
                };
            }
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if length.is_none() {
                    return State::Lost;
                }
            }
        }
        match length {
            Some(0) => self.ended(),
            Some(n) => State::Length(n),
            // Read until the connection closes.
            None => State::Lost,
        }
    }

    /// Reads chunked-body bytes; returns what follows the body's end (or nothing).
    fn chunked<'b>(&mut self, mut chunk: Chunk, mut bytes: &'b [u8]) -> &'b [u8] {
        while let Some((&byte, rest)) = bytes.split_first() {
            chunk = match chunk {
                Chunk::Size { size, extension } => match byte {
                    b'\n' if size == 0 => Chunk::Trailer(0),
                    b'\n' => Chunk::Data(size),
                    b'\r' => Chunk::Size { size, extension },
                    _ if extension => Chunk::Size { size, extension },
                    b';' | b' ' | b'\t' => Chunk::Size {
                        size,
                        extension: true,
                    },
                    _ => match (char::from(byte).to_digit(16), size.checked_mul(16)) {
                        (Some(digit), Some(shifted)) => Chunk::Size {
                            size: shifted + u64::from(digit),
                            extension,
                        },
                        _ => {
                            self.state = State::Lost;
                            return &[];
                        }
                    },
                },
                Chunk::Data(left) => {
                    let taken = left.min(bytes.len() as u64);
                    bytes = &bytes[usize::try_from(taken).unwrap_or(bytes.len())..];
                    chunk = if left == taken {
                        Chunk::DataEnd(2)
                    } else {
                        Chunk::Data(left - taken)
                    };
                    continue;
                }
                Chunk::DataEnd(1) => Chunk::Size {
                    size: 0,
                    extension: false,
                },
                Chunk::DataEnd(n) => Chunk::DataEnd(n - 1),
                Chunk::Trailer(line) => match byte {
                    b'\n' if line == 0 => {
                        self.state = self.ended();
                        return rest;
                    }
                    b'\n' => Chunk::Trailer(0),
                    b'\r' => Chunk::Trailer(line),
                    _ => Chunk::Trailer(line + 1),
                },
            };
            bytes = rest;
        }
        self.state = State::Chunked(chunk);
        bytes
    }
}

/// Just past the first CRLFCRLF at or after `from`.
fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| from + at + 4)
}

#[cfg(test)]
mod tests {
    use super::ResponseEnd;

    /// Feeds `reads` one by one; whether each leaves the connection in a response.
    fn follow(request: &[u8], reads: &[&[u8]]) -> Vec<bool> {
        let mut end = ResponseEnd::new();
        end.wrote(request);
        reads
            .iter()
            .map(|r| {
                end.read(r);
                end.in_response()
            })
            .collect()
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

    #[test]
    fn a_head_then_its_body_in_two_reads_is_in_a_response_between_them() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(follow(GET, &[head, b"hello"]), [true, false]);
        assert_eq!(
            follow(GET, &[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]),
            [false],
            "a whole response in one read ends there"
        );
    }

    #[test]
    fn heads_split_anywhere_are_followed() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: y\r\n\r\nabc";
        for split in 1..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(follow(GET, &[a, b]), [true, false], "split at {split}");
        }
    }

    #[test]
    fn chunked_bodies_end_at_the_last_chunk_and_trailers() {
        let whole: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nt: 1\r\n\r\n";
        assert_eq!(follow(GET, &[whole]), [false]);
        for split in 1..whole.len() {
            let (a, b) = whole.split_at(split);
            assert_eq!(follow(GET, &[a, b]), [true, false], "split at {split}");
        }
        let no_trailer: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(follow(GET, &[no_trailer]), [false]);
    }

    #[test]
    fn responses_without_a_body_end_with_their_head() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(follow(b"HEAD / HTTP/1.1\r\n\r\n", &[head]), [false]);
        assert_eq!(follow(GET, &[b"HTTP/1.1 204 No Content\r\n\r\n"]), [false]);
        assert_eq!(
            follow(
                GET,
                &[b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"]
            ),
            [false]
        );
        // An interim 100 Continue, then the final response.
        assert_eq!(
            follow(
                GET,
                &[
                    b"HTTP/1.1 100 Continue\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                ]
            ),
            [true, false]
        );
    }

    #[test]
    fn what_cannot_be_followed_stays_in_a_response() {
        // Read until close, garbage, an unreadable length, a huge head.
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\n\r\nstreaming",
            b"HTP/9 x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ];
        for case in cases {
            assert_eq!(
                follow(GET, &[case]),
                [true],
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        let mut end = ResponseEnd::new();
        end.read(b"HTTP/1.1 200 OK\r\n");
        for _ in 0..70 {
            end.read(&[b'a'; 1024]);
        }
        assert!(end.in_response());
    }

    #[test]
    fn consecutive_responses_on_one_connection() {
        let mut end = ResponseEnd::new();
        for _ in 0..3 {
            end.wrote(GET);
            end.read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
            assert!(end.in_response());
            end.read(b"ok");
            assert!(!end.in_response());
        }
        // A HEAD after GETs is still known as one.
        end.wrote(b"HEAD / HTTP/1.1\r\n\r\n");
        end.read(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(!end.in_response());
    }
}

//! The TCP connections of the application pool (`h1_pool`): they acknowledge a partial
//! response at once.
//!
//! Many applications write a response's head and body in two `send` calls without
//! `TCP_NODELAY` (Python's `http.server`, small frameworks). On a kept-alive connection the
//! proxy's kernel is in its request/response ("pingpong") mode and delays the ACK of the
//! head, up to 40 ms, hoping to carry it on data; the application's Nagle holds the body
//! until that ACK comes. Every request through the mesh then took ~43 ms instead of ~1 ms
//! (a fresh connection was fast: it starts in quick-ACK mode). Envoy 1.40 does the same.
//!
//! The remedy: when a read finds nothing more while a response has begun and not ended
//! (`response_end` follows the framing), set `TCP_QUICKACK`. Linux then sends the pending
//! ACK at once and leaves pingpong mode, so the application's next segment goes out without
//! waiting. The option is not sticky, hence once per such wait. Between responses nothing
//! is done: there the delayed ACK rides on the next request, and forcing it out cost a
//! packet per request (10% of a plain hop's CPU when every wait set the option).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::response_end::ResponseEnd;
use crate::framing::AckNow;

/// A TCP connection to the application that sets `TCP_QUICKACK` before waiting for the
/// rest of what it has begun to receive.
#[derive(Debug)]
pub(super) struct QuickAck {
    tcp: TcpStream,
    /// Bytes arrived since the last wait.
    got_bytes: bool,
    end: ResponseEnd,
}

impl QuickAck {
    pub(super) fn new(tcp: TcpStream) -> QuickAck {
        QuickAck {
            tcp,
            got_bytes: false,
            end: ResponseEnd::new(),
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        match polled {
            Poll::Pending => {
                if std::mem::take(&mut this.got_bytes) && this.end.in_response() {
                    this.tcp.ack_now();
                }
            }
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                this.got_bytes |= !new.is_empty();
                this.end.read(new);
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.end.wrote(buf);
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.end.wrote(first);
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
}

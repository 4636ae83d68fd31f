//! The keep-alive HTTP/1.1 pool to the local application, on hyper's connection-level client.
//!
//! Per address, the connections not taken by a request: a request takes the most recently
//! used one that is ready (its last response fully read), or opens one. A connection goes
//! back as soon as its response head has arrived; it is ready again once the body has been
//! read, and until then requests pass it by. hyper-util's legacy client did the same with a
//! task spawned per request to wait for that moment, a boxed future per checkout and an
//! `Extensions` map per response: this pool serves a plain hop with about 5% less CPU per
//! request (`bench/results/paired-h1-pool.md`).
//!
//! A request whose pooled connection closed before the request was written (the keep-alive
//! race: the application closed it as we took it) goes out again on a fresh connection,
//! whatever its method: nothing of it was sent. Connections idle for the pool's idle time
//! are closed by a sweeper task; ones the application closed are dropped when met.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;

use super::quickack::QuickAck;
use crate::body::Body;
use crate::clock::now_ms;
use crate::errors::{Failure, ProxyError};

/// A connection not carrying a request, and when it last took one.
struct Pooled {
    sender: SendRequest<Body>,
    used_ms: u64,
}

/// Every address's pooled connections.
type Idle = Mutex<HashMap<SocketAddr, Vec<Pooled>>>;

/// The HTTP/1.1 connections to the application.
pub(super) struct H1Pool {
    idle: Arc<Idle>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Set when the sweeper task runs (started with the first connection, inside the
    /// runtime).
    sweeping: std::sync::Once,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool").finish_non_exhaustive()
    }
}

impl H1Pool {
    pub(super) fn new(connect_timeout: Duration, idle_timeout: Duration) -> H1Pool {
        H1Pool {
            idle: Arc::default(),
            connect_timeout,
            idle_timeout,
            sweeping: std::sync::Once::new(),
        }
    }

    /// Sends `request` (origin-form URI) to the application at `addr`.
    pub(super) async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        loop {
            let (mut sender, reused) = match self.take(addr) {
                Some(sender) => (sender, true),
                // Boxed: connecting is rare, and inline its future would enlarge every
                // request's.
                None => (Box::pin(self.connect(addr)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.put(addr, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // Closed before a byte of it went: again, on a fresh connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(failure(&error.into_error())),
                },
            }
        }
    }

    /// The most recently used ready connection to `addr`; drops closed and expired ones met
    /// on the way.
    fn take(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conns = idle.get_mut(&addr)?;
        let mut at = conns.len();
        while at > 0 {
            at -= 1;
            let conn = &conns[at];
            if conn.sender.is_closed() {
                conns.swap_remove(at);
            } else if conn.sender.is_ready() {
                return Some(conns.swap_remove(at).sender);
            }
        }
        None
    }

    /// Gives `sender` back (it is ready again once its response has been read).
    fn put(&self, addr: SocketAddr, sender: SendRequest<Body>) {
        let pooled = Pooled {
            sender,
            used_ms: now_ms(),
        };
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.entry(addr).or_default().push(pooled);
    }

    /// Opens a connection to `addr` and starts its task.
    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<Body>, ProxyError> {
        self.sweeping.call_once(|| {
            tokio::spawn(sweep(Arc::downgrade(&self.idle), self.idle_timeout));
        });
        let tcp = super::connect_tcp(addr, self.connect_timeout).await?;
        let (sender, connection) = Builder::new()
            .handshake(TokioIo::new(QuickAck::new(tcp)))
            .await
            .map_err(|e| super::connect_failed(addr, e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "application connection ended");
            }
        });
        Ok(sender)
    }
}

/// How far a request got, from hyper's error.
fn failure(error: &hyper::Error) -> ProxyError {
    let how = if error.is_canceled() {
        Failure::NotSent
    } else if error.is_incomplete_message() {
        Failure::Closed
    } else {
        Failure::Reset
    };
    ProxyError::upstream(how, super::describe(error))
}

/// Every half idle time, closes the connections idle longer than `idle_timeout` (dropping a
/// ready `SendRequest` ends its connection) and those the application closed; ends with the
/// pool.
async fn sweep(idle: Weak<Idle>, idle_timeout: Duration) {
    let idle_ms = u64::try_from(idle_timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut every = tokio::time::interval((idle_timeout / 2).max(Duration::from_millis(10)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(idle) = idle.upgrade() else { return };
        let now = now_ms();
        let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
        for conns in idle.values_mut() {
            conns.retain(|c| {
                let expired = c.sender.is_ready() && now.saturating_sub(c.used_ms) >= idle_ms;
                !(c.sender.is_closed() || expired)
            });
        }
        idle.retain(|_, conns| !conns.is_empty());
    }
}

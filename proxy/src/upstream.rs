//! Connections to upstreams: one multiplexed HTTP/2 connection per endpoint (remote sidecars
//! and HTTP/2 or gRPC applications), a keep-alive HTTP/1.1 pool for HTTP/1.1 applications,
//! and one-off HTTP/1.1 connections for upgrades.
//!
//! The transport between proxies is plain TCP (h2c) for now; `connect` is the seam where
//! mTLS plugs in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::errors::ProxyError;

/// The HTTP/2 connection to one endpoint, if one is open; the async lock makes concurrent
/// first requests share one connect.
type H2Slot = Arc<tokio::sync::Mutex<Option<SendRequest<Body>>>>;

/// All upstream connections of one proxy.
#[derive(Debug)]
pub struct Upstreams {
    h2: Mutex<HashMap<SocketAddr, H2Slot>>,
    h1: Client<HttpConnector, Body>,
    connect_timeout: Duration,
}

impl Upstreams {
    /// Upstreams with `connect_timeout` for every new connection.
    pub fn new(connect_timeout: Duration) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Upstreams {
            h2: Mutex::new(HashMap::new()),
            h1,
            connect_timeout,
        }
    }

    /// Sends `request` (absolute URI carrying the logical authority) over the HTTP/2
    /// connection to `addr`, connecting first if there is none.
    pub async fn send_h2(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let slot = {
            let mut map = self
                .h2
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(map.entry(addr).or_default())
        };
        let mut sender = {
            let mut guard = slot.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let s = self.connect_h2(addr).await?;
                    *guard = Some(s.clone());
                    s
                }
            }
        };
        if sender.ready().await.is_err() {
            // The pooled connection closed under us; one fresh connection is safe to try
            // because nothing of this request was sent yet.
            let s = self.connect_h2(addr).await?;
            *slot.lock().await = Some(s.clone());
            sender = s;
        }
        sender
            .send_request(request)
            .await
            .map_err(|e| ProxyError::Upstream(e.to_string()))
    }

    async fn connect_h2(&self, addr: SocketAddr) -> Result<SendRequest<Body>, ProxyError> {
        let stream = self.connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "upstream h2 connection ended");
            }
        });
        Ok(sender)
    }

    /// Sends `request` (absolute URI naming the application's address) over a pooled
    /// HTTP/1.1 connection.
    pub async fn send_h1(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.h1.request(request).await.map_err(|e| {
            if e.is_connect() {
                ProxyError::Connect {
                    addr,
                    reason: e.to_string(),
                }
            } else {
                ProxyError::Upstream(e.to_string())
            }
        })
    }

    /// Sends an upgrade request over a new HTTP/1.1 connection that stays open for the
    /// upgraded protocol.
    pub async fn send_upgrade(
        &self,
        addr: SocketAddr,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let stream = self.connect(addr).await?;
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%addr, %error, "upgraded connection ended");
            }
        });
        sender
            .send_request(request)
            .await
            .map_err(|e| ProxyError::Upstream(e.to_string()))
    }

    /// Opens a TCP connection within the connect timeout.
    async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, ProxyError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::Connect {
                addr,
                reason: "connect timeout".into(),
            })?
            .map_err(|e| ProxyError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

//! mTLS between sidecars: rustls configurations (TLS 1.3 only, the ring provider) built from
//! an [`Identity`](crate::Identity) and a [`TrustBundle`](crate::TrustBundle).
//!
//! Both sides verify the peer's chain against the bundle with webpki, then its SPIFFE ID: the
//! server requires a client certificate in its own trust domain ([`server_config`]), the
//! client requires the server to be exactly the service it meant to reach ([`client_config`]).
//! Session resumption is off on both sides, so every connection is verified against the
//! credentials current when it is made (a resumed session would skip verification, and
//! sidecar connections are long-lived anyway).

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod source;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use client::{client_config, server_name};
pub use server::{peer_identity, server_config};

/// The ALPN protocol a client offers, which tells the inbound side how to serve the
/// connection. The server accepts both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// `h2`: the shared HTTP/2 connection between two sidecars.
    H2,
    /// `http/1.1`: a dedicated connection for an HTTP/1.1 upgrade (WebSocket).
    Http1,
}

impl Alpn {
    /// The protocol id on the wire.
    pub fn id(self) -> &'static [u8] {
        match self {
            Alpn::H2 => ALPN_H2,
            Alpn::Http1 => ALPN_HTTP1,
        }
    }

    /// The protocol a connection negotiated, from `alpn_protocol()`.
    pub fn negotiated(id: Option<&[u8]>) -> Option<Alpn> {
        match id? {
            ALPN_H2 => Some(Alpn::H2),
            ALPN_HTTP1 => Some(Alpn::Http1),
            _ => None,
        }
    }
}

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider of every config: rustls' ring provider (aws-lc-rs needs cmake to
/// build), shared.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

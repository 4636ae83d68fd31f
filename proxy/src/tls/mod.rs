//! The TLS stage of the request's path: mTLS between sidecars, over the identity crate's
//! rustls configs (TLS 1.3, ALPN, SPIFFE verification, credentials that rotate).
//!
//! - **Inbound** ([`Transport::accept`]): the first byte tells TLS (a handshake record,
//!   0x16) from plaintext. TLS requires a client certificate of this mesh; the caller's
//!   SPIFFE ID goes with the connection ([`Conn`]) to authorization. Plaintext is served
//!   only when this proxy's service is `mtls permissive` in the current table; otherwise the
//!   connection is closed (`plaintext-refused`).
//! - **Outbound** ([`Transport::connect`]): the server must prove it is exactly the service
//!   the request is for, `spiffe://<table trust domain>/<service>`; an address that answers
//!   with another service's certificate is refused (502 `upstream-identity`).
//!
//! Every refusal is logged with its reason and counted ([`TlsStats`]). With
//! `[identity] insecure_plaintext = true` (development only) there is no TLS at all.

mod stats;
mod stream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::tls::{server_name, Alpn};
use mesh_identity::{Credentials, Refusal, TrustDomain};
use mesh_table::{HeaderEdit, MtlsMode};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::errors::ProxyError;
use crate::table_watch::Tables;

pub use stats::{ByReason, TlsStats, PLAINTEXT_REFUSED};
pub use stream::Stream;

/// How long an inbound connection may take to send its first byte and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Who is calling on an inbound connection, as the transport proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No TLS: a plaintext caller (the principal `anyone` only).
    Plaintext,
    /// A verified mesh identity.
    Mesh {
        /// `spiffe://<trust domain>/<path>`.
        spiffe_id: std::sync::Arc<str>,
        /// The request edit that gives the application this caller's identity
        /// (`x-forwarded-client-cert`, see `inbound`), made once per connection.
        xfcc: HeaderEdit,
        /// The certificate's serial: a revocation that arrives while the connection is
        /// open refuses its next requests.
        serial: std::sync::Arc<str>,
    },
}

/// An accepted inbound connection: where it comes from and who it is.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The caller's address.
    pub addr: SocketAddr,
    /// The caller's identity.
    pub caller: Caller,
}

/// The transport of this proxy's connections between sidecars.
#[derive(Debug)]
pub struct Transport {
    mode: Mode,
    tables: Arc<Tables>,
    service: String,
    stats: TlsStats,
}

#[derive(Debug)]
enum Mode {
    Mtls {
        credentials: Arc<Credentials>,
        /// One for the process's life: it follows credential reloads.
        server: Arc<rustls::ServerConfig>,
    },
    /// `insecure_plaintext`: h2c both ways.
    Plaintext,
}

impl Transport {
    /// mTLS with `credentials`, for the sidecar of `service`; the plaintext policy is read
    /// from the current table of `tables`.
    pub fn mtls(credentials: Arc<Credentials>, tables: Arc<Tables>, service: &str) -> Transport {
        let server = credentials.server_config();
        Transport {
            mode: Mode::Mtls {
                credentials,
                server,
            },
            tables,
            service: service.to_string(),
            stats: TlsStats::default(),
        }
    }

    /// No TLS at all (`[identity] insecure_plaintext = true`).
    pub fn insecure_plaintext(tables: Arc<Tables>, service: &str) -> Transport {
        Transport {
            mode: Mode::Plaintext,
            tables,
            service: service.to_string(),
            stats: TlsStats::default(),
        }
    }

    /// The credentials, unless mTLS is off.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        match &self.mode {
            Mode::Mtls { credentials, .. } => Some(credentials),
            Mode::Plaintext => None,
        }
    }

    /// Whether the certificate `serial` is on the control plane's revocation list now.
    pub fn is_revoked(&self, serial: &str) -> bool {
        match &self.mode {
            Mode::Mtls { credentials, .. } => {
                let revoked = credentials.revoked();
                !revoked.is_empty() && revoked.contains(serial)
            }
            Mode::Plaintext => false,
        }
    }

    /// The handshake counters.
    pub fn stats(&self) -> &TlsStats {
        &self.stats
    }

    /// Whether plaintext callers may use the inbound listener now: mTLS is off, or the
    /// current table makes this proxy's service `mtls permissive` (no table: no).
    pub fn admits_plaintext(&self) -> bool {
        match self.mode {
            Mode::Plaintext => true,
            Mode::Mtls { .. } => self.tables.current().is_some_and(|snapshot| {
                let table = snapshot.table();
                table
                    .service_id(&self.service)
                    .and_then(|id| table.services.get(id as usize))
                    .is_some_and(|s| s.mtls == MtlsMode::Permissive)
            }),
        }
    }

    /// The inbound side of a new connection: TLS with a verified client certificate, or
    /// plaintext where the policy admits it. `None` when the connection is refused (logged
    /// and counted) or ends first.
    pub async fn accept(&self, tcp: TcpStream, addr: SocketAddr) -> Option<(Stream, Arc<Conn>)> {
        let Mode::Mtls {
            credentials,
            server,
        } = &self.mode
        else {
            return Some(plaintext(tcp, addr));
        };
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
            Ok(Ok(1..)) => {}
            Ok(_) | Err(_) => {
                self.stats.inbound_failed.fetch_add(1, Relaxed);
                return None;
            }
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            if self.admits_plaintext() {
                self.stats.plaintext_admitted.fetch_add(1, Relaxed);
                return Some(plaintext(tcp, addr));
            }
            self.stats.plaintext_refused.fetch_add(1, Relaxed);
            tracing::warn!(
                peer = %addr,
                reason = PLAINTEXT_REFUSED,
                service = %self.service,
                "inbound connection refused: plaintext, and the service is `mtls strict`"
            );
            return None;
        }
        let acceptor = TlsAcceptor::from(Arc::clone(server));
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                match Refusal::from_io(&error) {
                    Some(refusal) => self.refused_inbound(addr, &refusal),
                    None => {
                        self.stats.inbound_failed.fetch_add(1, Relaxed);
                        tracing::debug!(peer = %addr, %error, "inbound TLS handshake failed");
                    }
                }
                return None;
            }
            Err(_) => {
                self.stats.inbound_failed.fetch_add(1, Relaxed);
                tracing::debug!(peer = %addr, "inbound TLS handshake timed out");
                return None;
            }
        };
        let caller = match credentials.peer_identity(tls.get_ref().1) {
            Ok(id) => id,
            Err(refusal) => {
                self.refused_inbound(addr, &refusal);
                return None;
            }
        };
        self.stats.inbound_handshakes.fetch_add(1, Relaxed);
        let spiffe_id: Arc<str> = caller.to_string().into();
        // Envoy's XFCC: who the proxy is (By) and whom the client certificate proved (URI).
        let xfcc = HeaderEdit::Set(
            crate::inbound::IDENTITY_HEADER.to_string(),
            format!("By={};URI={spiffe_id}", credentials.spiffe_id()),
        );
        let serial = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| mesh_identity::CertInfo::parse(leaf).ok())
            .map_or_else(|| Arc::from(""), |info| Arc::from(info.serial));
        let conn = Conn {
            addr,
            caller: Caller::Mesh {
                spiffe_id,
                xfcc,
                serial,
            },
        };
        Some((
            Stream::Tls(Box::new(TlsStream::Server(tls))),
            Arc::new(conn),
        ))
    }

    fn refused_inbound(&self, addr: SocketAddr, refusal: &Refusal) {
        self.stats.inbound_refused.count(refusal.reason);
        tracing::warn!(
            peer = %addr,
            reason = refusal.reason.as_str(),
            detail = %refusal.detail,
            "inbound mTLS handshake refused"
        );
    }

    /// The outbound side of a new connection to a sidecar of `service` at `addr`: a TLS
    /// handshake offering `alpn` that succeeds only if the server proves it is `service`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        service: &str,
        alpn: Alpn,
        timeout: Duration,
    ) -> Result<Stream, ProxyError> {
        let Mode::Mtls { credentials, .. } = &self.mode else {
            return Ok(Stream::Plain(tcp));
        };
        let domain = match self.tables.current() {
            Some(snapshot) => TrustDomain::new(&snapshot.table().mesh.trust_domain),
            None => Ok(credentials.trust_domain()),
        };
        let refused = |reason: &'static str, detail: String| ProxyError::UpstreamTls {
            addr,
            reason,
            detail,
        };
        let expected = domain
            .and_then(|d| d.service(service))
            .map_err(|e| refused("upstream-tls", e.to_string()))?;
        let config = credentials
            .client_config(&expected, alpn)
            .map_err(|e| refused("upstream-tls", e.to_string()))?;
        let handshake = TlsConnector::from(config).connect(server_name(&expected), tcp);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(tls)) => {
                self.stats.outbound_handshakes.fetch_add(1, Relaxed);
                Ok(Stream::Tls(Box::new(TlsStream::Client(tls))))
            }
            Ok(Err(error)) => match Refusal::from_io(&error) {
                Some(refusal) => {
                    self.stats.outbound_refused.count(refusal.reason);
                    tracing::warn!(
                        endpoint = %addr,
                        expected = %expected,
                        reason = refusal.reason.as_str(),
                        detail = %refusal.detail,
                        "outbound mTLS handshake refused"
                    );
                    // Our own verification of the server's certificate failed: it is not
                    // the service we meant to reach (or not one we can trust).
                    let ours = error
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<rustls::Error>())
                        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
                    let reason = if ours {
                        "upstream-identity"
                    } else {
                        "upstream-tls"
                    };
                    Err(refused(reason, refusal.to_string()))
                }
                None => {
                    self.stats.outbound_failed.fetch_add(1, Relaxed);
                    Err(ProxyError::Connect {
                        addr,
                        reason: format!("TLS handshake: {error}"),
                    })
                }
            },
            Err(_) => {
                self.stats.outbound_failed.fetch_add(1, Relaxed);
                Err(ProxyError::Connect {
                    addr,
                    reason: "TLS handshake timeout".into(),
                })
            }
        }
    }

    /// Whether outbound connections to sidecars use TLS.
    pub fn is_mtls(&self) -> bool {
        matches!(self.mode, Mode::Mtls { .. })
    }
}

fn plaintext(tcp: TcpStream, addr: SocketAddr) -> (Stream, Arc<Conn>) {
    let conn = Conn {
        addr,
        caller: Caller::Plaintext,
    };
    (Stream::Plain(tcp), Arc::new(conn))
}

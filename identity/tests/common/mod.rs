//! Shared helpers of the identity tests: throwaway CAs, and a TLS echo server and client on
//! 127.0.0.1 that report each side's verdict as a `Refusal` reason.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::ca::{InitOptions, Issued, LeafOptions, Validity};
use mesh_identity::tls::{self, Alpn};
use mesh_identity::{
    Ca, CertInfo, Identity, Refusal, RefusalReason, SpiffeId, TrustBundle, TrustDomain,
};
use rustls::{ClientConfig, ServerConfig};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// No test waits longer than this for a handshake or an echo.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A CA in a temporary directory.
pub struct TestCa {
    pub dir: TempDir,
    pub ca: Ca,
}

/// A CA without a recorded trust domain (it issues for any), without intermediate.
pub fn ca() -> TestCa {
    ca_with(InitOptions::default())
}

/// A CA created with `options`.
pub fn ca_with(options: InitOptions) -> TestCa {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::init(&dir.path().join("ca"), &options).expect("ca init");
    TestCa { dir, ca }
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("valid SPIFFE ID")
}

pub fn domain(s: &str) -> TrustDomain {
    TrustDomain::new(s).expect("valid trust domain")
}

impl TestCa {
    /// A day-long sidecar certificate.
    pub fn issue(&self, spiffe_id: &str) -> Issued {
        self.ca
            .issue(&id(spiffe_id), Duration::from_secs(86_400))
            .expect("issue")
    }

    pub fn issue_with(&self, spiffe_id: &str, options: &LeafOptions) -> Issued {
        self.ca.issue_with(&id(spiffe_id), options).expect("issue")
    }

    pub fn identity(&self, spiffe_id: &str) -> Identity {
        identity(&self.issue(spiffe_id))
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::from_pem(self.ca.bundle_pem().as_bytes()).expect("bundle")
    }
}

pub fn identity(issued: &Issued) -> Identity {
    Identity::from_pem(issued.cert.cert_pem.as_bytes(), issued.key_pem.as_bytes())
        .expect("identity")
}

/// Validity from `from` to `to` seconds relative to now (negative: in the past).
pub fn validity(from: i64, to: i64) -> Validity {
    let at = |secs: i64| {
        let now = SystemTime::now();
        if secs >= 0 {
            now + Duration::from_secs(secs.unsigned_abs())
        } else {
            now - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Validity {
        not_before: at(from),
        not_after: at(to),
    }
}

/// The server's verdict on each connection: the client's SPIFFE ID, or why it was refused.
pub type Verdict = Result<SpiffeId, Refusal>;

/// An echo server over mTLS on 127.0.0.1.
pub struct Server {
    pub addr: SocketAddr,
    pub verdicts: mpsc::UnboundedReceiver<Verdict>,
}

impl Server {
    /// The verdict on the next connection.
    pub async fn verdict(&mut self) -> Verdict {
        tokio::time::timeout(PATIENCE, self.verdicts.recv())
            .await
            .expect("a verdict in time")
            .expect("server running")
    }
}

/// Serves `config` until the test ends; each accepted connection reports its verdict,
/// then echoes what it reads.
pub async fn serve(config: Arc<ServerConfig>, trust_domain: TrustDomain) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, verdicts) = mpsc::unbounded_channel();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let trust_domain = trust_domain.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(err) => {
                        let _ = tx.send(Err(refusal(&err)));
                        return;
                    }
                };
                let verdict = tls::peer_identity(tls.get_ref().1, &trust_domain);
                let ok = verdict.is_ok();
                let _ = tx.send(verdict);
                if !ok {
                    return;
                }
                let mut buf = [0u8; 64];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Server { addr, verdicts }
}

/// A client connection that passed the handshake and one echo.
pub struct Client {
    pub stream: TlsStream<TcpStream>,
}

impl Client {
    /// The serial of the certificate the server presented.
    pub fn server_serial(&self) -> String {
        let leaf = self
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server certificate");
        CertInfo::parse(leaf).expect("parse").serial
    }

    /// One echo round trip.
    pub async fn ping(&mut self) -> Result<(), Refusal> {
        tokio::time::timeout(PATIENCE, async {
            self.stream
                .write_all(b"ping")
                .await
                .map_err(|e| refusal(&e))?;
            let mut buf = [0u8; 4];
            self.stream
                .read_exact(&mut buf)
                .await
                .map_err(|e| refusal(&e))?;
            assert_eq!(&buf, b"ping");
            Ok(())
        })
        .await
        .expect("echo in time")
    }
}

/// Connects to `addr` expecting `expected`, then does one echo: in TLS 1.3 the client
/// finishes its handshake before the server has checked the client's certificate, so the
/// server's refusal shows only on the first read.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    expected: &SpiffeId,
) -> Result<Client, Refusal> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let connecting = TlsConnector::from(config).connect(tls::server_name(expected), tcp);
    let stream = tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("handshake in time")
        .map_err(|e| refusal(&e))?;
    let mut client = Client { stream };
    client.ping().await?;
    Ok(client)
}

/// The client config of `identity`, trusting `bundle`, for `expected`, over h2.
pub fn client(identity: &Identity, bundle: &TrustBundle, expected: &SpiffeId) -> Arc<ClientConfig> {
    tls::client_config(identity, bundle, expected, Alpn::H2).expect("client config")
}

pub fn server(identity: &Identity, bundle: &TrustBundle) -> Arc<ServerConfig> {
    tls::server_config(identity, bundle).expect("server config")
}

fn refusal(err: &std::io::Error) -> Refusal {
    Refusal::from_io(err).unwrap_or_else(|| Refusal::new(RefusalReason::Other, err.to_string()))
}

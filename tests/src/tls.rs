//! mTLS for the tests' own clients: load a workload's credentials from the files `meshc ca
//! issue` wrote, build the rustls config a sidecar would use, connect, and read what a
//! refused handshake came to. Every wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::tls::{client_config, server_name, Alpn};
use mesh_identity::{Identity, Refusal, RefusalReason, SpiffeId, TrustBundle};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A workload's certificate, key and trust bundle.
#[derive(Debug)]
pub struct Credentials {
    /// The certificate and key.
    pub identity: Identity,
    /// The roots.
    pub bundle: TrustBundle,
}

impl Credentials {
    /// Loads `dir/cert.pem`, `dir/key.pem` and `dir/bundle.pem`.
    pub fn load(dir: &Path) -> Credentials {
        let identity = Identity::load(&dir.join("cert.pem"), &dir.join("key.pem"))
            .unwrap_or_else(|e| panic!("load the identity in {}: {e}", dir.display()));
        let bundle = TrustBundle::load(&dir.join("bundle.pem"))
            .unwrap_or_else(|e| panic!("load the bundle in {}: {e}", dir.display()));
        Credentials { identity, bundle }
    }

    /// The config of a sidecar that presents these credentials and accepts only the server
    /// `expected` (a SPIFFE ID), offering `alpn`.
    pub fn client_config(&self, expected: &str, alpn: Alpn) -> Arc<rustls::ClientConfig> {
        let expected =
            SpiffeId::parse(expected).unwrap_or_else(|e| panic!("SPIFFE ID {expected}: {e}"));
        client_config(&self.identity, &self.bundle, &expected, alpn)
            .unwrap_or_else(|e| panic!("client config: {e}"))
    }
}

/// Connects to `addr` and does the TLS handshake with `config` (no SNI; the server's SPIFFE
/// ID is what the config checks), within 10 s.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let limit = Duration::from_secs(10);
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name =
            server_name(&SpiffeId::parse("spiffe://mesh.test/x").map_err(std::io::Error::other)?);
        TlsConnector::from(config).connect(name, tcp).await
    };
    tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS connect timed out"))?
}

/// The serial (lowercase hex) of the certificate the server presented on `stream`.
pub fn peer_serial(stream: &TlsStream<TcpStream>) -> String {
    let certs: &[CertificateDer<'_>] = stream
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_else(|| panic!("the server presented no certificate"));
    mesh_identity::CertInfo::parse(&certs[0])
        .unwrap_or_else(|e| panic!("parse the server's certificate: {e}"))
        .serial
}

/// Why a connection with `config` to `addr` is refused, as this client learns it: its own
/// verdict on the server's certificate, or the alert the server sent about ours. In TLS 1.3
/// the client finishes its handshake before the server has checked the client certificate,
/// so the server's verdict arrives on the first read; this sends a request to get there.
/// `None` when the connection works.
pub async fn refusal(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Option<RefusalReason> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let classify =
        |e: &std::io::Error| Refusal::from_io(e).map_or(RefusalReason::Other, |r| r.reason);
    let mut stream = match connect(addr, config).await {
        Ok(stream) => stream,
        Err(e) => return Some(classify(&e)),
    };
    let request = b"GET /refusal-probe HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if let Err(e) = stream.write_all(request).await {
        return Some(classify(&e));
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => None,
        Ok(Ok(_)) => Some(RefusalReason::Other),
        Ok(Err(e)) => Some(classify(&e)),
        Err(_) => panic!("no answer and no alert within 10 s from {addr}"),
    }
}

/// A client config that presents no certificate and accepts any server: for tests of the
/// server's refusals only (it proves nothing about the server).
pub fn anonymous_client_config(alpn: Alpn) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("TLS 1.3: {e}"))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.id().to_vec()];
    Arc::new(config)
}

/// Accepts every server certificate (signatures still checked).
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The DER SubjectPublicKeyInfo of the private key in `key_pem` (what `curl --pinnedpubkey`
/// pins).
pub fn public_key_der(key_pem: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key_pem)
        .unwrap_or_else(|e| panic!("read {}: {e}", key_pem.display()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .unwrap_or_else(|e| panic!("key {}: {e}", key_pem.display()));
    signing
        .public_key()
        .unwrap_or_else(|| panic!("no public key for {}", key_pem.display()))
        .as_ref()
        .to_vec()
}

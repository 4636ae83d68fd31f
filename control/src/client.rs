//! A minimal proxy-side client of the control protocol: bootstrap, renewal and a
//! subscription stream. The tests and the subscriber benchmark use it; it is not the proxy's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_identity::tls::{client_config, provider, server_name, Alpn};
use mesh_identity::{Identity, SpiffeId, TrustBundle, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::body::Body;
use crate::frames;
use crate::tls::CONTROL_SERVICE;

/// A client error, as text.
pub type Error = String;

/// The control plane's expected identity in `td`.
pub fn control_id(td: &str) -> Result<SpiffeId, Error> {
    TrustDomain::new(td)
        .and_then(|td| td.service(CONTROL_SERVICE))
        .map_err(|e| e.to_string())
}

/// A client config without a certificate (bootstrap) that accepts only the control plane.
pub fn anonymous_config(bundle_pem: &str, td: &str) -> Result<Arc<ClientConfig>, Error> {
    let bundle = TrustBundle::from_pem(bundle_pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    for root in bundle.certificates() {
        roots.add(root.clone()).map_err(|e| e.to_string())?;
    }
    let verifier = Arc::new(ControlVerifier {
        roots: Arc::new(roots),
        expected: control_id(td)?,
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// An mTLS client config presenting `cert_pem`/`key_pem`, accepting only the control plane.
pub fn mtls_config(
    cert_pem: &str,
    key_pem: &str,
    bundle_pem: &str,
    td: &str,
) -> Result<Arc<ClientConfig>, Error> {
    let identity =
        Identity::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let bundle = TrustBundle::from_pem(bundle_pem.as_bytes()).map_err(|e| e.to_string())?;
    client_config(&identity, &bundle, &control_id(td)?, Alpn::H2).map_err(|e| e.to_string())
}

/// A new key and a certificate request for `spiffe_id`: `(csr_pem, key_pem)`.
pub fn csr(spiffe_id: &str) -> Result<(String, String), Error> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.subject_alt_names = vec![rcgen::SanType::URI(
        spiffe_id
            .try_into()
            .map_err(|e: rcgen::Error| e.to_string())?,
    )];
    let request = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((
        request.pem().map_err(|e| e.to_string())?,
        key.serialize_pem(),
    ))
}

/// An HTTP/2 connection to the control plane.
pub type Connection = SendRequest<Body>;

/// Connects over TLS with `config` and completes the HTTP/2 handshake.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    td: &str,
) -> Result<Connection, Error> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name(&control_id(td)?), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(256 * 1024)
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// POSTs a JSON body; the status and the JSON answer.
pub async fn post_json(
    conn: &mut Connection,
    path: &str,
    body: &Value,
) -> Result<(StatusCode, Value), Error> {
    conn.ready().await.map_err(|e| e.to_string())?;
    let req = Request::post(format!("https://mesh-control{path}"))
        .header("content-type", "application/json")
        .body(Body::Full(Some(Bytes::from(body.to_string()))))
        .map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

/// GETs `path`; the status and the body.
pub async fn get(conn: &mut Connection, path: &str) -> Result<(StatusCode, Bytes), Error> {
    conn.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(format!("https://mesh-control{path}"))
        .body(Body::Full(None))
        .map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

/// An open subscription stream.
#[derive(Debug)]
pub struct Stream {
    tx: mpsc::Sender<Bytes>,
    rx: Incoming,
    buf: BytesMut,
}

impl Stream {
    /// Opens `POST /v1/stream`; `Err` with the status and body if it is refused.
    pub async fn open(conn: &mut Connection) -> Result<Stream, Error> {
        conn.ready().await.map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(8);
        let req = Request::post("https://mesh-control/v1/stream")
            .body(Body::Channel(rx))
            .map_err(|e| e.to_string())?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(Stream {
            tx,
            rx: resp.into_body(),
            buf: BytesMut::new(),
        })
    }

    /// Sends one frame.
    pub async fn send(&self, kind: u8, payload: &[u8]) -> Result<(), Error> {
        self.tx
            .send(frames::frame(kind, payload))
            .await
            .map_err(|_| "the stream is closed".to_owned())
    }

    /// Sends a JSON frame.
    pub async fn send_json(&self, kind: u8, value: &Value) -> Result<(), Error> {
        self.send(kind, value.to_string().as_bytes()).await
    }

    /// The next frame from the control plane; `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<(u8, Bytes)>, Error> {
        loop {
            if let Some(f) = frames::next(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(Some((f.kind, f.payload)));
            }
            match self.rx.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// The next table frame (pings skipped): the table bytes.
    pub async fn next_table(&mut self) -> Result<Bytes, Error> {
        loop {
            match self.next().await? {
                Some((frames::TABLE, t)) => return Ok(t),
                Some(_) => {}
                None => return Err("the stream ended".into()),
            }
        }
    }
}

/// Verifies the control plane's chain against the bundle, then its SPIFFE ID.
#[derive(Debug)]
struct ControlVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
}

impl ServerCertVerifier for ControlVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        match mesh_identity::spiffe_id_of(end_entity) {
            Ok(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General(format!(
                "the server is not {}",
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

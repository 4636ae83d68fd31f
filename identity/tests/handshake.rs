//! mTLS handshakes over real TCP on 127.0.0.1: who is accepted, who is refused and why.

mod common;

use std::sync::Arc;

use common::*;
use mesh_identity::ca::{InitOptions, LeafOptions};
use mesh_identity::tls::{self, Alpn};
use mesh_identity::{RefusalReason, TrustBundle};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

const PAYMENTS: &str = "spiffe://d/payments";
const FRONTEND: &str = "spiffe://d/frontend";

/// The server is `payments` in domain `d`; returns it with the CA.
async fn payments() -> (TestCa, Server) {
    let ca = ca();
    let server = serve(server(&ca.identity(PAYMENTS), &ca.bundle()), domain("d")).await;
    (ca, server)
}

#[tokio::test]
async fn a_valid_mutual_handshake_proves_both_identities() {
    let (ca, mut server) = payments().await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let client = connect(server.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
    assert_eq!(
        server.verdict().await.expect("server accepts"),
        id(FRONTEND)
    );
    let conn = client.stream.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(Alpn::negotiated(conn.alpn_protocol()), Some(Alpn::H2));
    let leaf = &conn.peer_certificates().expect("server chain")[0];
    assert_eq!(mesh_identity::spiffe_id_of(leaf).expect("id"), id(PAYMENTS));
}

/// DNS and IP SANs (`ca issue --dns/--ip`, for outside clients) change nothing between
/// sidecars: the SPIFFE ID is still what each side checks, on both sides.
#[tokio::test]
async fn host_names_beside_the_spiffe_id_change_nothing_between_sidecars() {
    let ca = ca();
    let named = |spiffe_id: &str| {
        identity(&ca.issue_with(
            spiffe_id,
            &LeafOptions {
                dns_names: vec!["host.example".into()],
                ip_addresses: vec!["127.0.0.1".parse().expect("ip")],
                ..LeafOptions::ttl(std::time::Duration::from_secs(3_600))
            },
        ))
    };
    let mut server = serve(server(&named(PAYMENTS), &ca.bundle()), domain("d")).await;
    let config = client(&named(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    connect(server.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
    assert_eq!(server.verdict().await.expect("accepted"), id(FRONTEND));
    // Expecting another service at that address still fails, whatever names it carries.
    let config = client(&named(FRONTEND), &ca.bundle(), &id("spiffe://d/orders"));
    let refused = connect(server.addr, config, &id("spiffe://d/orders"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.reason, RefusalReason::WrongIdentity, "{refused}");
}

#[tokio::test]
async fn an_intermediate_chain_is_verified_both_ways() {
    let ca = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    let mut server = serve(server(&ca.identity(PAYMENTS), &ca.bundle()), domain("d")).await;
    let frontend = ca.identity(FRONTEND);
    assert_eq!(frontend.chain().len(), 2, "leaf + intermediate");
    let config = client(&frontend, &ca.bundle(), &id(PAYMENTS));
    connect(server.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
    assert_eq!(server.verdict().await.expect("accepted"), id(FRONTEND));
}

#[tokio::test]
async fn http1_is_negotiated_when_asked_for() {
    let (ca, mut server) = payments().await;
    let config = tls::client_config(
        &ca.identity(FRONTEND),
        &ca.bundle(),
        &id(PAYMENTS),
        Alpn::Http1,
    )
    .expect("config");
    let client = connect(server.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
    server.verdict().await.expect("accepted");
    assert_eq!(
        Alpn::negotiated(client.stream.get_ref().1.alpn_protocol()),
        Some(Alpn::Http1)
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_unknown_ca() {
    let (ca, mut server) = payments().await;
    let stranger = common::ca();
    let config = client(&stranger.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    let verdict = server.verdict().await.expect_err("server refuses");
    assert_eq!(verdict.reason, RefusalReason::UnknownCa, "{verdict}");
    // The client learns it from the alert.
    assert_eq!(refused.reason, RefusalReason::UnknownCa, "{refused}");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_unknown_ca() {
    let ca = ca();
    let stranger = common::ca();
    let _server = serve(
        server(&stranger.identity(PAYMENTS), &ca.bundle()),
        domain("d"),
    )
    .await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(_server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.reason, RefusalReason::UnknownCa, "{refused}");
}

#[tokio::test]
async fn an_expired_client_certificate_is_expired() {
    let (ca, mut server) = payments().await;
    let old = ca.issue_with(
        FRONTEND,
        &LeafOptions {
            validity: validity(-2 * 86_400, -86_400),
            ..LeafOptions::ttl(std::time::Duration::from_secs(1))
        },
    );
    let config = client(&identity(&old), &ca.bundle(), &id(PAYMENTS));
    assert!(connect(server.addr, config, &id(PAYMENTS)).await.is_err());
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, RefusalReason::Expired, "{verdict}");
}

#[tokio::test]
async fn a_client_certificate_from_the_future_is_not_yet_valid() {
    let (ca, mut server) = payments().await;
    let early = ca.issue_with(
        FRONTEND,
        &LeafOptions {
            validity: validity(86_400, 2 * 86_400),
            ..LeafOptions::ttl(std::time::Duration::from_secs(1))
        },
    );
    let config = client(&identity(&early), &ca.bundle(), &id(PAYMENTS));
    assert!(connect(server.addr, config, &id(PAYMENTS)).await.is_err());
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, RefusalReason::NotYetValid, "{verdict}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_expired() {
    let ca = ca();
    let old = ca.issue_with(
        PAYMENTS,
        &LeafOptions {
            validity: validity(-2 * 86_400, -86_400),
            ..LeafOptions::ttl(std::time::Duration::from_secs(1))
        },
    );
    let server = serve(server(&identity(&old), &ca.bundle()), domain("d")).await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.reason, RefusalReason::Expired, "{refused}");
}

#[tokio::test]
async fn a_client_without_certificate_is_no_certificate() {
    let (ca, mut server) = payments().await;
    let config = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let refused = connect(server.addr, Arc::new(config), &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, RefusalReason::NoCertificate, "{verdict}");
    assert_eq!(refused.reason, RefusalReason::NoCertificate, "{refused}");
    drop(ca);
}

#[tokio::test]
async fn a_client_of_another_trust_domain_is_foreign_trust_domain() {
    let (ca, mut server) = payments().await;
    let config = client(
        &ca.identity("spiffe://other.example/frontend"),
        &ca.bundle(),
        &id(PAYMENTS),
    );
    assert!(connect(server.addr, config, &id(PAYMENTS)).await.is_err());
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(
        verdict.reason,
        RefusalReason::ForeignTrustDomain,
        "{verdict}"
    );
    assert!(
        verdict.detail.contains("spiffe://other.example/frontend"),
        "{verdict}"
    );
}

#[tokio::test]
async fn a_server_of_another_trust_domain_is_foreign_trust_domain() {
    let ca = ca();
    let server = serve(
        server(
            &ca.identity("spiffe://other.example/payments"),
            &ca.bundle(),
        ),
        domain("other.example"),
    )
    .await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    assert_eq!(
        refused.reason,
        RefusalReason::ForeignTrustDomain,
        "{refused}"
    );
}

#[tokio::test]
async fn a_server_with_another_services_certificate_is_wrong_identity() {
    let ca = ca();
    // A stolen endpoint address: `orders` answers where the client meant to reach `payments`.
    let mut server = serve(
        server(&ca.identity("spiffe://d/orders"), &ca.bundle()),
        domain("d"),
    )
    .await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.reason, RefusalReason::WrongIdentity, "{refused}");
    assert!(refused.detail.contains("spiffe://d/orders"), "{refused}");
    assert!(refused.detail.contains(PAYMENTS), "{refused}");
    // The server sees the client abort.
    assert!(server.verdict().await.is_err());
}

#[tokio::test]
async fn a_server_only_certificate_used_as_a_client_is_bad_key_usage() {
    let (ca, mut server) = payments().await;
    let server_only = ca.issue_with(
        FRONTEND,
        &LeafOptions {
            client_auth: false,
            ..LeafOptions::ttl(std::time::Duration::from_secs(3_600))
        },
    );
    let config = client(&identity(&server_only), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, RefusalReason::BadKeyUsage, "{verdict}");
    assert_eq!(refused.reason, RefusalReason::BadKeyUsage, "{refused}");
}

#[tokio::test]
async fn a_client_only_certificate_used_as_a_server_is_bad_key_usage() {
    let ca = ca();
    let client_only = ca.issue_with(
        PAYMENTS,
        &LeafOptions {
            server_auth: false,
            ..LeafOptions::ttl(std::time::Duration::from_secs(3_600))
        },
    );
    let server = serve(server(&identity(&client_only), &ca.bundle()), domain("d")).await;
    let config = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.reason, RefusalReason::BadKeyUsage, "{refused}");
}

#[tokio::test]
async fn a_bundle_with_two_roots_accepts_certificates_of_both() {
    let old = ca();
    let new = common::ca();
    let both =
        TrustBundle::from_pem(format!("{}{}", old.ca.bundle_pem(), new.ca.bundle_pem()).as_bytes())
            .expect("bundle");
    assert_eq!(both.len(), 2);
    let mut server = serve(server(&old.identity(PAYMENTS), &both), domain("d")).await;
    for (ca, name) in [(&old, "spiffe://d/a"), (&new, "spiffe://d/b")] {
        let config = client(&ca.identity(name), &both, &id(PAYMENTS));
        connect(server.addr, config, &id(PAYMENTS))
            .await
            .expect("accepted");
        assert_eq!(server.verdict().await.expect("accepted"), id(name));
    }
    // A server of the new root, a client trusting both.
    let server2 = serve(common::server(&new.identity(PAYMENTS), &both), domain("d")).await;
    let config = client(&old.identity(FRONTEND), &both, &id(PAYMENTS));
    connect(server2.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
}

/// Accepts any server: only to reach the server's own client-certificate check.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! The control plane's identities end to end, with a real `mesh-control` and bootstrapped
//! sidecars. Revocation: after `meshc identity revoke` the revoked identity's stream ends and
//! stays refused, every other sidecar's inbound listener refuses its certificate (the
//! control plane pushed the serial), other identities keep working, and the list is kept
//! across a restart. Impostors: a server that presents a stolen service certificate of the
//! mesh, or a `mesh-control` certificate from another CA, never gets a proxy's join token.

use std::time::{Duration, Instant};

use mesh_identity::tls::Alpn;
use mesh_identity::RefusalReason;
use mesh_tests::backend::Backend;
use mesh_tests::control::{get_web, ControlPlane, Sidecar};
use mesh_tests::tls::{refusal, Credentials};

const POLICY: &str = r#"
mesh "rv" { trust_domain "rv.local" }
service client { port 8000 }
service web { port 8001 }
service other { port 8002 }
route main on web { match { path prefix "/" } }
"#;

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn serial_of(sidecar: &Sidecar) -> String {
    sidecar.tls().await["serial"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `check` holds, or fails with `what` and the logs.
async fn wait_for(what: &str, control: &ControlPlane, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what} within 20 s\n--- control plane ---\n{}",
            control.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_is_refused_by_the_control_plane_and_every_proxy() {
    let control = ControlPlane::start(POLICY, "rv.local", "1h").await;
    let apps = [
        Backend::start("client").await,
        Backend::start("web").await,
        Backend::start("other").await,
    ];
    let client = control.sidecar("client", apps[0].addr(), &control.create_token("client"));
    let web = control.sidecar("web", apps[1].addr(), &control.create_token("web"));
    let other = control.sidecar("other", apps[2].addr(), &control.create_token("other"));
    for sidecar in [&client, &web, &other] {
        sidecar.wait_ready().await;
    }
    let client_serial = serial_of(&client).await;
    assert!(!client_serial.is_empty());

    // The client's own certificate files: what a thief of its key would present.
    let stolen = Credentials::load(&client.state);
    let to_web = stolen.client_config("spiffe://rv.local/web", Alpn::Http1);
    assert_eq!(
        refusal(web.inbound(), std::sync::Arc::clone(&to_web)).await,
        None,
        "before the revocation the certificate is accepted"
    );

    // The client's sidecar calls web: a pooled connection between the two sidecars.
    let started = Instant::now();
    while get_web(client.outbound(), "/before")
        .await
        .map(|r| r.status)
        != Some(http::StatusCode::OK)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "client -> web never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Mistakes are refused with what is wrong, and revoke nothing.
    let out = control.meshc(&["identity", "revoke", "nosuch", "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no live certificate of service `nosuch`"),
        "{}",
        text(&out)
    );
    let out = control.meshc(&[
        "identity",
        "revoke",
        "web",
        "--serial",
        &client_serial,
        "--control",
        &control.url(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is of service `client`, not `web`"),
        "{}",
        text(&out)
    );
    let out = control.meshc(&["identity", "revoked", "--control", &control.url()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{}", text(&out));

    // Revoke every certificate of `client`.
    let out = control.meshc(&["identity", "revoke", "client", "--control", &control.url()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == client_serial),
        "the revoked serials are printed: {}",
        text(&out)
    );

    // The client's stream ends and reconnecting is refused.
    wait_for(
        "the revoked identity's stream ended and stayed refused",
        &control,
        async || {
            control
                .log()
                .contains("ending the stream: its certificate was revoked")
                && client
                    .log()
                    .contains("the control plane refused the stream (403 Forbidden)")
        },
    )
    .await;

    // Every other proxy got the list: web's inbound refuses the certificate at the
    // handshake, though it has not expired, and counts it.
    wait_for("web received the revocation list", &control, async || {
        web.tls().await["revoked_serials"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(
        refusal(web.inbound(), to_web).await,
        Some(RefusalReason::Revoked),
        "the peer is told its certificate was revoked"
    );
    assert_eq!(
        web.tls().await["inbound"]["refused"]["revoked"].as_u64(),
        Some(1),
        "web counts the refusal: {}",
        web.tls().await
    );

    // The connection the client's sidecar opened before the revocation is still up, but
    // web refuses its requests now.
    let reply = get_web(client.outbound(), "/after")
        .await
        .expect("an answer");
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.headers["x-mesh-error"], "caller-revoked");

    // Other identities keep working through web (once the control plane's warm-up after
    // its start has passed, web's endpoint is in other's slice).
    let started = Instant::now();
    loop {
        let reply = get_web(other.outbound(), "/after").await;
        if reply.as_ref().is_some_and(|r| r.status == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "other -> web not served: {:?}\n--- other ---\n{}",
            reply.as_ref().map(|r| (r.status, r.text())),
            other.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A serial issued elsewhere (`meshc ca issue`) can be revoked too; the list survives a
    // restart of the control plane, and is pushed again to the proxies that come back.
    let out = control.meshc(&[
        "identity",
        "revoke",
        "other",
        "--serial",
        "serial=0F:A1:02",
        "--control",
        &control.url(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0fa102",
        "{}",
        text(&out)
    );
    control.kill();
    control.spawn().await;
    let out = control.meshc(&["identity", "revoked", "--control", &control.url()]);
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut expected = vec![client_serial.clone(), "0fa102".to_owned()];
    expected.sort();
    assert_eq!(listed, expected, "{}", text(&out));
    wait_for(
        "web received the list again after the restart",
        &control,
        async || web.tls().await["revoked_serials"].as_u64() == Some(2),
    )
    .await;
}

/// A TLS server on 127.0.0.1 presenting the certificate in `dir` (cert.pem, key.pem) to any
/// client, that records every byte a client sends after the handshake.
async fn impostor(
    dir: &std::path::Path,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("read the impostor's certificate: {e}"));
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))
        .unwrap_or_else(|e| panic!("read the impostor's key: {e}"));
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap_or_else(|e| panic!("TLS 1.3: {e}"))
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap_or_else(|e| panic!("server config: {e}"));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, sink) = (acceptor.clone(), std::sync::Arc::clone(&sink));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n @ 1..)) =
                    tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await
                {
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_stolen_or_foreign_certificate_never_gets_a_join_token() {
    let control = ControlPlane::start(POLICY, "rv.local", "1h").await;
    let app = Backend::start("client").await;

    // A certificate of the mesh's own CA, for a service: what a compromised sidecar holds.
    let out = control.meshc(&[
        "ca",
        "issue",
        "web",
        "--ca",
        "ca",
        "--ip",
        "127.0.0.1",
        "--out",
        "stolen",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // `mesh-control` in the right trust domain, from a CA the proxies do not trust.
    let out = control.meshc(&["ca", "init", "other-ca", "--trust-domain", "rv.local"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = control.meshc(&[
        "ca",
        "issue",
        "mesh-control",
        "--ca",
        "other-ca",
        "--ip",
        "127.0.0.1",
        "--out",
        "forged",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    for (name, why) in [("stolen", "not the control plane"), ("forged", "")] {
        let (addr, received) = impostor(&control.dir().join(name)).await;
        let token = control.create_token("client");
        let sidecar = control.sidecar_of(addr, "client", app.addr(), &token);
        let started = Instant::now();
        loop {
            let log = sidecar.log();
            let refusals = log
                .lines()
                .filter(|l| l.contains("bootstrap with the join token failed"))
                .count();
            if refusals >= 2 && log.contains(why) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name}: the sidecar did not refuse the impostor twice ({why:?}):\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            !sidecar.is_ready().await,
            "{name}: no certificate, not ready"
        );
        let seen = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            seen.is_empty(),
            "{name}: the impostor received {} bytes after the handshake",
            seen.len()
        );
        assert!(!String::from_utf8_lossy(&seen).contains(&token));
    }
}

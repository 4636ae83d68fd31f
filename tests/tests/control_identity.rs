//! Revoking certificates end to end: `meshc identity revoke` against a real `mesh-control`
//! and bootstrapped sidecars. The revoked identity's stream ends and stays refused, every
//! other sidecar's inbound listener refuses its certificate (the control plane pushed the
//! serial), other identities keep working, and the list is kept across a restart.

use std::time::{Duration, Instant};

use mesh_identity::tls::Alpn;
use mesh_identity::RefusalReason;
use mesh_tests::backend::Backend;
use mesh_tests::control::{ControlPlane, Sidecar};
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

    // Other identities keep working through web.
    let reply = call(other.outbound(), "/after").await;
    assert_eq!(
        reply.as_ref().map(|r| r.status.as_u16()),
        Some(200),
        "other -> web still served"
    );

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

/// `GET path` for `web` through a sidecar's outbound listener; `None` on a transport error.
async fn call(outbound: std::net::SocketAddr, path: &str) -> Option<mesh_tests::client::Reply> {
    use mesh_tests::client::{h1_request, Reply, H1};
    let mut connection = H1::connect(outbound).await.ok()?;
    let request = h1_request(http::Method::GET, "web", path)
        .body(mesh_tests::body::empty())
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), connection.send(request))
        .await
        .ok()?
        .ok()?;
    Reply::read(response).await.ok()
}

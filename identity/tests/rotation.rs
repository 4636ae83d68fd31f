//! Rotation without restart: `Credentials` follows its files; new handshakes see the new
//! certificate, open connections keep working, bad files are refused.

mod common;

use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mesh_identity::tls::Alpn;
use mesh_identity::{Credentials, IdentityPaths, RefusalReason};

const PAYMENTS: &str = "spiffe://d/payments";
const FRONTEND: &str = "spiffe://d/frontend";

/// `payments`' credentials in a directory, served; returns the directory's paths too.
async fn payments(ca: &TestCa) -> (Arc<Credentials>, IdentityPaths, Server) {
    let paths = ca
        .issue(PAYMENTS)
        .write_to(&ca.dir.path().join("payments"))
        .expect("write");
    let credentials = Arc::new(Credentials::load(paths.clone()).expect("credentials"));
    assert_eq!(credentials.spiffe_id(), id(PAYMENTS));
    let server = serve(credentials.server_config(), credentials.trust_domain()).await;
    (credentials, paths, server)
}

#[tokio::test]
async fn a_reload_reaches_new_handshakes_and_spares_open_connections() {
    let ca = ca();
    let (credentials, paths, mut server) = payments(&ca).await;
    let frontend = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));

    let mut open = connect(server.addr, Arc::clone(&frontend), &id(PAYMENTS))
        .await
        .expect("accepted");
    server.verdict().await.expect("accepted");
    let first = open.server_serial();
    assert_eq!(first, credentials.cert_info().serial);
    assert_eq!(
        credentials.reload_if_changed().map(|r| r.is_ok()),
        None,
        "nothing changed"
    );

    let renewed = ca.issue(PAYMENTS);
    renewed
        .write_to(paths.cert.parent().expect("dir"))
        .expect("rewrite");
    assert!(
        credentials.reload().expect("reloaded"),
        "new credentials applied"
    );
    assert_eq!(credentials.loads.load(Ordering::Relaxed), 2);

    let fresh = connect(server.addr, frontend, &id(PAYMENTS))
        .await
        .expect("accepted");
    server.verdict().await.expect("accepted");
    assert_eq!(fresh.server_serial(), renewed.cert.info.serial);
    assert_ne!(fresh.server_serial(), first);
    // The connection made before the rotation keeps its session and still works.
    open.ping().await.expect("old connection alive");
    assert_eq!(open.server_serial(), first);
}

#[tokio::test]
async fn the_outbound_config_follows_reloads_too() {
    let ca = ca();
    let (_payments, _, mut server) = payments(&ca).await;
    let dir = ca.dir.path().join("frontend");
    let paths = ca.issue(FRONTEND).write_to(&dir).expect("write");
    let frontend = Credentials::load(paths).expect("credentials");
    let config = frontend
        .client_config(&id(PAYMENTS), Alpn::H2)
        .expect("config");
    assert!(
        Arc::ptr_eq(
            &config,
            &frontend
                .client_config(&id(PAYMENTS), Alpn::H2)
                .expect("config")
        ),
        "cached"
    );
    let before = frontend.cert_info().serial;

    connect(server.addr, Arc::clone(&config), &id(PAYMENTS))
        .await
        .expect("accepted");
    server.verdict().await.expect("accepted");

    ca.issue(FRONTEND).write_to(&dir).expect("rewrite");
    assert!(matches!(frontend.reload_if_changed(), Some(Ok(true))));
    let after = frontend.cert_info().serial;
    assert_ne!(before, after);
    // The same config object now presents the new certificate.
    connect(server.addr, config, &id(PAYMENTS))
        .await
        .expect("accepted");
    server.verdict().await.expect("accepted");
}

#[tokio::test]
async fn bad_new_files_are_refused_and_the_old_credentials_stay() {
    let ca = ca();
    let (credentials, paths, mut server) = payments(&ca).await;
    let serial = credentials.cert_info().serial;
    let frontend = client(&ca.identity(FRONTEND), &ca.bundle(), &id(PAYMENTS));

    // Garbage.
    fs::write(&paths.cert, "not a certificate").expect("write");
    assert!(matches!(credentials.reload_if_changed(), Some(Err(_))));
    // A certificate for another service.
    let orders = ca.issue("spiffe://d/orders");
    orders
        .write_to(paths.cert.parent().expect("dir"))
        .expect("write");
    let err = credentials.reload().expect_err("another identity");
    assert!(err.to_string().contains("spiffe://d/orders"), "{err}");
    // A bundle that does not hold our root.
    ca.issue(PAYMENTS)
        .write_to(paths.cert.parent().expect("dir"))
        .expect("write");
    fs::write(&paths.bundle, common::ca().ca.bundle_pem()).expect("write");
    let err = credentials.reload().expect_err("foreign bundle");
    assert!(
        err.to_string()
            .contains("does not verify against the trust bundle"),
        "{err}"
    );
    assert_eq!(credentials.failures.load(Ordering::Relaxed), 3);

    let client = connect(server.addr, frontend, &id(PAYMENTS))
        .await
        .expect("still serving");
    server.verdict().await.expect("accepted");
    assert_eq!(client.server_serial(), serial, "the old certificate stays");
}

#[tokio::test]
async fn a_root_rotation_goes_through_a_bundle_of_two_roots() {
    let old = ca();
    let new = common::ca();
    let both = format!("{}{}", old.ca.bundle_pem(), new.ca.bundle_pem());
    let (credentials, paths, mut server) = payments(&old).await;

    // Step 1: every workload trusts both roots.
    fs::write(&paths.bundle, &both).expect("write");
    assert!(credentials.reload().expect("reloaded"));
    assert_eq!(credentials.bundle_roots(), 2);
    let both_bundle = mesh_identity::TrustBundle::from_pem(both.as_bytes()).expect("bundle");
    let by_new = client(&new.identity(FRONTEND), &both_bundle, &id(PAYMENTS));
    connect(server.addr, Arc::clone(&by_new), &id(PAYMENTS))
        .await
        .expect("new root accepted");
    server.verdict().await.expect("accepted");

    // Step 2: payments gets a certificate of the new root (the bundle keeps both).
    let renewed = new.issue(PAYMENTS);
    renewed
        .write_to(paths.cert.parent().expect("dir"))
        .expect("write");
    fs::write(&paths.bundle, &both).expect("write");
    assert!(credentials.reload().expect("reloaded"));
    let by_old = client(&old.identity(FRONTEND), &both_bundle, &id(PAYMENTS));
    let c = connect(server.addr, by_old, &id(PAYMENTS))
        .await
        .expect("old root still accepted");
    server.verdict().await.expect("accepted");
    assert_eq!(c.server_serial(), renewed.cert.info.serial);

    // Step 3: the old root leaves the bundle; its certificates are refused.
    fs::write(&paths.bundle, new.ca.bundle_pem()).expect("write");
    assert!(credentials.reload().expect("reloaded"));
    let by_old = client(&old.identity(FRONTEND), &both_bundle, &id(PAYMENTS));
    assert!(connect(server.addr, by_old, &id(PAYMENTS)).await.is_err());
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, mesh_identity::RefusalReason::UnknownCa);
}

#[tokio::test]
async fn the_watcher_picks_up_changed_files() {
    let ca = ca();
    let (credentials, paths, _server) = payments(&ca).await;
    let watcher = tokio::spawn(Arc::clone(&credentials).watch(Duration::from_millis(20)));
    let renewed = ca.issue(PAYMENTS);
    renewed
        .write_to(paths.cert.parent().expect("dir"))
        .expect("write");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while credentials.cert_info().serial != renewed.cert.info.serial {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn revoked_serials_are_refused_both_ways_until_the_list_drops_them() {
    let ca = ca();
    let (payments, _, mut server) = payments(&ca).await;
    let frontend_issued = ca.issue(FRONTEND);
    let frontend_serial = frontend_issued.cert.info.serial.clone();
    let frontend_dir = ca.dir.path().join("frontend");
    let frontend = Credentials::load(frontend_issued.write_to(&frontend_dir).expect("write"))
        .expect("credentials");
    let config = frontend
        .client_config(&id(PAYMENTS), Alpn::H2)
        .expect("config");

    // Inbound: payments refuses the revoked client certificate...
    payments.revoked().replace([frontend_serial.clone()]);
    let refused = connect(server.addr, Arc::clone(&config), &id(PAYMENTS)).await;
    assert!(refused.is_err(), "a revoked client is refused");
    let verdict = server.verdict().await.expect_err("refused");
    assert_eq!(verdict.reason, RefusalReason::Revoked, "{verdict}");

    // ...and serves it again once the list no longer names it.
    payments.revoked().replace(Vec::new());
    connect(server.addr, Arc::clone(&config), &id(PAYMENTS))
        .await
        .expect("accepted again");
    server.verdict().await.expect("accepted");

    // Outbound: frontend refuses a server whose certificate is revoked.
    frontend
        .revoked()
        .replace([payments.cert_info().serial.to_uppercase()]);
    let refused = connect(server.addr, config, &id(PAYMENTS))
        .await
        .err()
        .expect("a revoked server is refused");
    assert_eq!(refused.reason, RefusalReason::Revoked, "{refused}");
}

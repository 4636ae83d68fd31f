//! End-to-end tests of `meshc ca init` and `meshc ca issue`: files, modes, exit statuses,
//! and that OpenSSL (Debian's `openssl`, which `.ci/run` installs) verifies what the CA
//! issued, for the names and addresses the certificate claims.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use mesh_identity::{CertInfo, Identity, SpiffeId, TrustBundle};

fn meshc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("meshc runs")
}

fn status(out: &Output) -> i32 {
    out.status.code().expect("exit status")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn pem_count(p: &Path) -> usize {
    fs::read_to_string(p)
        .expect("read")
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// `openssl` with `args`; a missing `openssl` fails the test, naming the package.
fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `openssl` ({e}): it comes with Debian's `openssl` package, which \
                 .ci/run installs (apt-get install openssl)"
            )
        })
}

/// `openssl verify` of `cert.pem` (leaf + chain) against `bundle.pem`, for a TLS client and
/// a TLS server, with `extra` options (such as `-verify_ip ADDR`).
fn openssl_verify_with(out: &Path, extra: &[&str]) -> Vec<Output> {
    let (cert, bundle) = (out.join("cert.pem"), out.join("bundle.pem"));
    ["sslclient", "sslserver"]
        .iter()
        .map(|purpose| {
            let mut args = vec!["verify", "-purpose", purpose, "-CAfile", path(&bundle)];
            args.extend_from_slice(extra);
            args.extend(["-untrusted", path(&cert), path(&cert)]);
            openssl(&args)
        })
        .collect()
}

/// `openssl verify` of `cert.pem` against `bundle.pem` as a TLS client and a TLS server.
fn openssl_verify(out: &Path) -> Vec<Output> {
    openssl_verify_with(out, &[])
}

/// Asserts that every `openssl verify` run passed.
fn assert_verified(results: &[Output]) {
    for result in results {
        assert!(
            result.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

#[test]
fn init_and_issue_write_the_files_openssl_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let out = dir.path().join("certs/payments");

    let init = meshc(&[
        "ca",
        "init",
        path(&ca),
        "--intermediate",
        "--trust-domain",
        "shop.example",
    ]);
    assert_eq!(status(&init), 0, "{}", stderr(&init));
    for file in [
        "root.pem",
        "root.key",
        "intermediate.pem",
        "intermediate.key",
    ] {
        assert!(ca.join(file).is_file(), "{file}");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca.join("root.key")), 0o600);
        assert_eq!(mode(&ca.join("intermediate.key")), 0o600);
        assert_eq!(mode(&ca), 0o700);
    }

    let before = SystemTime::now();
    let issue = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&ca),
        "--ttl",
        "2h",
        "--out",
        path(&out),
    ]);
    assert_eq!(status(&issue), 0, "{}", stderr(&issue));
    let stdout = String::from_utf8_lossy(&issue.stdout);
    assert!(
        stdout.contains("issued spiffe://shop.example/payments"),
        "{stdout}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    assert_eq!(pem_count(&out.join("cert.pem")), 2, "leaf + intermediate");
    assert_eq!(pem_count(&out.join("bundle.pem")), 1, "the root");
    assert_eq!(
        fs::read(out.join("bundle.pem")).expect("read"),
        fs::read(ca.join("root.pem")).expect("read")
    );

    let identity = Identity::load(&out.join("cert.pem"), &out.join("key.pem")).expect("loads");
    assert_eq!(
        identity.spiffe_id(),
        &SpiffeId::parse("spiffe://shop.example/payments").expect("id")
    );
    let info: &CertInfo = identity.info();
    let life = info.not_after.duration_since(before).expect("future");
    assert!(
        life > Duration::from_secs(7_190) && life < Duration::from_secs(7_210),
        "{life:?}"
    );
    assert_eq!(info.extended_key_usage, Some((true, true)));

    assert_verified(&openssl_verify(&out));
    // Without --dns/--ip the leaf names no host: the SPIFFE ID is its only name.
    assert!(info.dns_names.is_empty() && info.ip_addresses.is_empty());
}

/// `--dns` and `--ip` put host names and addresses beside the SPIFFE ID (still the one URI
/// SAN), so that clients checking the name or address they dialled accept the certificate.
#[test]
fn dns_and_ip_names_sit_beside_the_spiffe_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let out = dir.path().join("web");
    let init = meshc(&["ca", "init", path(&ca), "--trust-domain", "shop.example"]);
    assert_eq!(status(&init), 0, "{}", stderr(&init));
    let issue = meshc(&[
        "ca",
        "issue",
        "web",
        "--ca",
        path(&ca),
        "--out",
        path(&out),
        "--dns",
        "web.shop.internal",
        "--dns",
        "WEB.shop.internal",
        "--ip",
        "127.0.0.1",
        "--ip",
        "::1",
    ]);
    assert_eq!(status(&issue), 0, "{}", stderr(&issue));
    let stdout = String::from_utf8_lossy(&issue.stdout);
    assert!(
        stdout.contains("also for DNS:web.shop.internal, IP:127.0.0.1, IP:::1\n"),
        "{stdout}"
    );

    let identity = Identity::load(&out.join("cert.pem"), &out.join("key.pem")).expect("loads");
    assert_eq!(
        identity.spiffe_id(),
        &SpiffeId::parse("spiffe://shop.example/web").expect("id")
    );
    let info = identity.info();
    assert_eq!(info.uris, ["spiffe://shop.example/web"]);
    assert_eq!(info.dns_names, ["web.shop.internal"], "lowercased, once");
    let ips: Vec<String> = info.ip_addresses.iter().map(ToString::to_string).collect();
    assert_eq!(ips, ["127.0.0.1", "::1"]);
    assert_eq!(info.extended_key_usage, Some((true, true)));

    // OpenSSL checks the names as a TLS client checks the server it dialled.
    assert_verified(&openssl_verify_with(&out, &["-verify_ip", "127.0.0.1"]));
    assert_verified(&openssl_verify_with(&out, &["-verify_ip", "::1"]));
    assert_verified(&openssl_verify_with(
        &out,
        &["-verify_hostname", "web.shop.internal"],
    ));
    for wrong in [
        ["-verify_hostname", "orders.shop.internal"],
        ["-verify_ip", "127.0.0.2"],
    ] {
        for result in openssl_verify_with(&out, &wrong) {
            assert!(!result.status.success(), "{wrong:?} verified");
            assert!(
                String::from_utf8_lossy(&result.stdout).contains("mismatch")
                    || String::from_utf8_lossy(&result.stderr).contains("mismatch"),
                "{wrong:?}: {}{}",
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            );
        }
    }

    // Names that are not host names, and addresses that are not addresses: status 2.
    for (flag, value) in [
        ("--dns", "*.shop.internal"),
        ("--dns", "127.0.0.1"),
        ("--dns", "web_1.shop"),
        ("--ip", "web.shop.internal"),
        ("--ip", "300.0.0.1"),
    ] {
        let run = meshc(&[
            "ca",
            "issue",
            "web",
            "--ca",
            path(&ca),
            "--out",
            path(&dir.path().join("refused")),
            flag,
            value,
        ]);
        assert_eq!(status(&run), 2, "{flag} {value}: {}", stderr(&run));
        assert!(stderr(&run).contains(value), "{}", stderr(&run));
    }
    assert!(!dir.path().join("refused").exists(), "nothing written");
}

#[test]
fn init_refuses_an_existing_ca_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(status(&meshc(&["ca", "init", path(&ca)])), 0);
    let root = fs::read(ca.join("root.pem")).expect("read");

    let again = meshc(&["ca", "init", path(&ca)]);
    assert_eq!(status(&again), 1);
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(fs::read(ca.join("root.pem")).expect("read"), root);

    assert_eq!(status(&meshc(&["ca", "init", path(&ca), "--force"])), 0);
    assert_ne!(fs::read(ca.join("root.pem")).expect("read"), root);
}

#[test]
fn issue_without_intermediate_needs_a_trust_domain_and_honours_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let out = dir.path().join("out");
    assert_eq!(status(&meshc(&["ca", "init", path(&ca)])), 0);

    // The CA has no trust domain of its own: one must be given.
    let missing = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&ca),
        "--out",
        path(&out),
    ]);
    assert_eq!(status(&missing), 2);
    assert!(
        stderr(&missing).contains("--trust-domain"),
        "{}",
        stderr(&missing)
    );

    let ok = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&ca),
        "--trust-domain",
        "d",
        "--out",
        path(&out),
    ]);
    assert_eq!(status(&ok), 0, "{}", stderr(&ok));
    assert_eq!(pem_count(&out.join("cert.pem")), 1, "the leaf alone");
    assert_verified(&openssl_verify(&out));
}

#[test]
fn a_ca_bound_to_a_trust_domain_refuses_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(
        status(&meshc(&[
            "ca",
            "init",
            path(&ca),
            "--trust-domain",
            "shop.example"
        ])),
        0
    );
    let out = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&ca),
        "--trust-domain",
        "other.example",
        "--out",
        path(&dir.path().join("out")),
    ]);
    assert_eq!(status(&out), 1);
    assert!(
        stderr(&out).contains("outside this CA's trust domain"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn could_not_run_is_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = path(dir.path());
    let missing_ca = dir.path().join("missing");
    let ca = dir.path().join("ca");
    assert_eq!(status(&meshc(&["ca", "init", path(&ca)])), 0);
    let ca = path(&ca);
    // An output path under a regular file cannot be created.
    fs::write(dir.path().join("file"), "").expect("write");
    let unwritable = dir.path().join("file/out");
    for args in [
        vec![
            "ca",
            "issue",
            "payments",
            "--ca",
            path(&missing_ca),
            "--trust-domain",
            "d",
            "--out",
            out,
        ],
        vec![
            "ca",
            "issue",
            "payments",
            "--ca",
            out,
            "--trust-domain",
            "d",
            "--out",
            out,
        ],
        vec![
            "ca",
            "issue",
            "payments",
            "--ca",
            ca,
            "--trust-domain",
            "d",
            "--ttl",
            "1w",
            "--out",
            out,
        ],
        vec![
            "ca",
            "issue",
            "payments",
            "--ca",
            ca,
            "--trust-domain",
            "Shop.Example",
            "--out",
            out,
        ],
        vec![
            "ca",
            "issue",
            "pay/../ments",
            "--ca",
            ca,
            "--trust-domain",
            "d",
            "--out",
            out,
        ],
        vec![
            "ca",
            "issue",
            "payments",
            "--ca",
            ca,
            "--trust-domain",
            "d",
            "--out",
            path(&unwritable),
        ],
        vec!["ca", "issue", "payments", "--out", out],
        vec!["ca", "frobnicate"],
        vec!["ca"],
    ] {
        let run = meshc(&args);
        assert_eq!(status(&run), 2, "{args:?}: {}", stderr(&run));
    }
}

#[test]
fn a_ca_directory_with_broken_files_is_status_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    assert_eq!(status(&meshc(&["ca", "init", path(&ca)])), 0);
    fs::write(ca.join("root.pem"), "garbage").expect("write");
    let run = meshc(&[
        "ca",
        "issue",
        "x",
        "--ca",
        path(&ca),
        "--trust-domain",
        "d",
        "--out",
        path(&dir.path().join("o")),
    ]);
    assert_eq!(status(&run), 1, "{}", stderr(&run));
    assert!(stderr(&run).contains("root.pem"), "{}", stderr(&run));
}

#[test]
fn also_trust_puts_two_roots_in_the_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    assert_eq!(
        status(&meshc(&["ca", "init", path(&old), "--trust-domain", "d"])),
        0
    );
    assert_eq!(
        status(&meshc(&["ca", "init", path(&new), "--trust-domain", "d"])),
        0
    );
    let out = dir.path().join("out");
    let run = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&new),
        "--out",
        path(&out),
        "--also-trust",
        path(&old.join("root.pem")),
        "--also-trust",
        path(&new.join("root.pem")),
    ]);
    assert_eq!(status(&run), 0, "{}", stderr(&run));
    let bundle = TrustBundle::load(&out.join("bundle.pem")).expect("bundle");
    assert_eq!(bundle.len(), 2, "the new root once, the old root once");
    assert_verified(&openssl_verify(&out));

    // A file that holds no certificate is refused.
    fs::write(dir.path().join("empty.pem"), "").expect("write");
    let run = meshc(&[
        "ca",
        "issue",
        "payments",
        "--ca",
        path(&new),
        "--out",
        path(&out),
        "--also-trust",
        path(&dir.path().join("empty.pem")),
    ]);
    assert_eq!(status(&run), 1, "{}", stderr(&run));
}

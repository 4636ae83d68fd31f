//! End-to-end tests of `meshc ca init` and `meshc ca issue`: files, modes, exit statuses,
//! and (when `openssl` is installed) that OpenSSL verifies what the CA issued.

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

/// `openssl verify` of `cert.pem` (leaf + chain) against `bundle.pem`, for a TLS client and
/// a TLS server; `None` when openssl is not installed.
fn openssl_verify(out: &Path) -> Option<Vec<Output>> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl is not installed: skipping the OpenSSL cross-check");
        return None;
    }
    let cert = out.join("cert.pem");
    Some(
        ["sslclient", "sslserver"]
            .iter()
            .map(|purpose| {
                Command::new("openssl")
                    .args(["verify", "-purpose", purpose, "-CAfile"])
                    .arg(out.join("bundle.pem"))
                    .arg("-untrusted")
                    .arg(&cert)
                    .arg(&cert)
                    .output()
                    .expect("openssl runs")
            })
            .collect(),
    )
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

    if let Some(results) = openssl_verify(&out) {
        for result in results {
            assert!(
                result.status.success(),
                "openssl verify: {}{}",
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            );
        }
    }
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
    if let Some(results) = openssl_verify(&out) {
        assert!(results.iter().all(|r| r.status.success()));
    }
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
    if let Some(results) = openssl_verify(&out) {
        assert!(results.iter().all(|r| r.status.success()));
    }

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

//! The CA directory: init, load, issue, sign requests; what a leaf carries.

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::*;
use mesh_identity::ca::{InitOptions, INTERMEDIATE_CERT, INTERMEDIATE_KEY, ROOT_CERT, ROOT_KEY};
use mesh_identity::{
    Ca, CertInfo, Identity, IdentityError, IdentityPaths, RefusalReason, TrustBundle,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM")
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn init_then_issue_round_trips_through_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    Ca::init(&ca_dir, &InitOptions::default()).expect("init");
    assert!(ca_dir.join(ROOT_CERT).is_file());
    assert!(!ca_dir.join(INTERMEDIATE_CERT).exists());
    #[cfg(unix)]
    {
        assert_eq!(mode(&ca_dir.join(ROOT_KEY)), 0o600);
        assert_eq!(mode(&ca_dir), 0o700);
    }

    let ca = Ca::load(&ca_dir).expect("load");
    let issued = ca
        .issue(
            &id("spiffe://shop.example/payments"),
            Duration::from_secs(86_400),
        )
        .expect("issue");
    let out = dir.path().join("out/payments");
    let paths = issued.write_to(&out).expect("write");
    assert_eq!(paths, IdentityPaths::in_dir(&out));
    #[cfg(unix)]
    {
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&paths.cert), 0o644);
    }
    let identity = Identity::load(&paths.cert, &paths.key).expect("identity loads");
    assert_eq!(
        identity.spiffe_id().to_string(),
        "spiffe://shop.example/payments"
    );
    let bundle = TrustBundle::load(&paths.bundle).expect("bundle loads");
    assert_eq!(bundle.len(), 1);
    assert_eq!(
        bundle.certificates()[0],
        certs(&fs::read_to_string(ca_dir.join(ROOT_CERT)).expect("root"))[0]
    );
}

#[test]
fn the_leaf_carries_the_spiffe_id_usages_and_validity() {
    let ca = ca();
    let before = SystemTime::now();
    let issued = ca
        .ca
        .issue(
            &id("spiffe://shop.example/payments"),
            Duration::from_secs(3_600),
        )
        .expect("issue");
    let info = &issued.cert.info;
    assert_eq!(info.uris, ["spiffe://shop.example/payments"]);
    assert!(!info.is_ca);
    assert_eq!(info.digital_signature, Some(true));
    assert_eq!(info.extended_key_usage, Some((true, true)));
    // now - 5 min .. now + ttl, to the second.
    let skew = before
        .duration_since(info.not_before)
        .expect("backdated")
        .as_secs();
    assert!((299..=301).contains(&skew), "backdated {skew}s");
    let life = info
        .not_after
        .duration_since(before)
        .expect("future")
        .as_secs();
    assert!((3_599..=3_601).contains(&life), "lives {life}s");
    assert_eq!(info.serial.len(), 32, "128-bit serial: {}", info.serial);
    // The leaf has no subject (no CN to rely on).
    let der = &certs(&issued.cert.cert_pem)[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(der).expect("x509");
    assert_eq!(parsed.subject().iter_attributes().count(), 0);
    assert!(
        parsed
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .critical
    );
    // Two leaves never share a serial.
    let again = ca.issue("spiffe://shop.example/payments");
    assert_ne!(again.cert.info.serial, info.serial);
}

#[test]
fn an_intermediate_signs_the_leaves_and_travels_in_cert_pem() {
    let ca = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    assert!(ca.ca.has_intermediate());
    let dir = ca.ca.dir();
    #[cfg(unix)]
    assert_eq!(mode(&dir.join(INTERMEDIATE_KEY)), 0o600);
    let issued = ca.issue("spiffe://d/payments");
    let chain = certs(&issued.cert.cert_pem);
    assert_eq!(chain.len(), 2);
    let intermediate = certs(&fs::read_to_string(dir.join(INTERMEDIATE_CERT)).expect("read"));
    assert_eq!(chain[1], intermediate[0]);
    // The bundle is the root only.
    assert_eq!(
        certs(&issued.cert.bundle_pem),
        certs(&fs::read_to_string(dir.join(ROOT_CERT)).expect("read"))
    );
    assert!(CertInfo::parse(&intermediate[0]).expect("parse").is_ca);
}

#[test]
fn init_refuses_to_replace_a_ca_unless_forced() {
    let ca = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    let dir = ca.ca.dir().to_owned();
    let root_before = fs::read(dir.join(ROOT_CERT)).expect("read");
    let err = Ca::init(&dir, &InitOptions::default()).expect_err("refused");
    assert!(matches!(err, IdentityError::CaExists(_)), "{err}");
    assert_eq!(
        fs::read(dir.join(ROOT_CERT)).expect("read"),
        root_before,
        "untouched"
    );

    Ca::init(
        &dir,
        &InitOptions {
            force: true,
            ..InitOptions::default()
        },
    )
    .expect("forced");
    assert_ne!(fs::read(dir.join(ROOT_CERT)).expect("read"), root_before);
    assert!(
        !dir.join(INTERMEDIATE_CERT).exists(),
        "the old intermediate is gone"
    );
    assert!(!Ca::load(&dir).expect("load").has_intermediate());
}

#[test]
fn a_ca_with_a_trust_domain_issues_only_within_it() {
    let ca = ca_with(InitOptions {
        trust_domain: Some(domain("shop.example")),
        intermediate: true,
        ..InitOptions::default()
    });
    let loaded = Ca::load(ca.ca.dir()).expect("load");
    assert_eq!(loaded.trust_domain(), Some(&domain("shop.example")));
    assert_eq!(loaded.root_info().uris, ["spiffe://shop.example"]);
    loaded
        .issue(
            &id("spiffe://shop.example/payments"),
            Duration::from_secs(60),
        )
        .expect("inside");
    let err = loaded
        .issue(
            &id("spiffe://other.example/payments"),
            Duration::from_secs(60),
        )
        .expect_err("outside");
    assert!(
        err.to_string().contains("outside this CA's trust domain"),
        "{err}"
    );
}

#[test]
fn a_leaf_cannot_outlive_its_ca() {
    let ca = ca_with(InitOptions {
        validity: Duration::from_secs(3_600),
        ..InitOptions::default()
    });
    let err = ca
        .ca
        .issue(&id("spiffe://d/x"), Duration::from_secs(7_200))
        .expect_err("refused");
    assert!(err.to_string().contains("outlive"), "{err}");
}

#[test]
fn loading_checks_the_ca_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Missing directory: an I/O error (the command could not run).
    let err = Ca::load(&dir.path().join("nope")).expect_err("missing");
    assert!(err.is_io(), "{err}");

    // A key that is not the certificate's.
    let a = ca();
    let b = ca();
    fs::copy(b.ca.dir().join(ROOT_KEY), a.ca.dir().join(ROOT_KEY)).expect("copy");
    let err = Ca::load(a.ca.dir()).expect_err("mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");

    // An intermediate without its key.
    let c = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    fs::remove_file(c.ca.dir().join(INTERMEDIATE_KEY)).expect("rm");
    let err = Ca::load(c.ca.dir()).expect_err("incomplete");
    assert!(err.to_string().contains("intermediate.key"), "{err}");

    // An intermediate of another root.
    let d = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    let e = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    for name in [INTERMEDIATE_CERT, INTERMEDIATE_KEY] {
        fs::copy(e.ca.dir().join(name), d.ca.dir().join(name)).expect("copy");
    }
    let err = Ca::load(d.ca.dir()).expect_err("foreign intermediate");
    assert!(err.to_string().contains("not signed by"), "{err}");
}

#[test]
fn a_ca_certificate_is_not_a_workload_identity() {
    let ca = ca();
    let root = fs::read(ca.ca.dir().join(ROOT_CERT)).expect("read");
    let key = fs::read(ca.ca.dir().join(ROOT_KEY)).expect("read");
    let err = Identity::from_pem(&root, &key).expect_err("refused");
    // The root carries no SPIFFE ID (no trust domain recorded): refused for that first.
    assert!(matches!(err, IdentityError::Refused(_)), "{err}");

    let ca = ca_with(InitOptions {
        trust_domain: Some(domain("d")),
        ..InitOptions::default()
    });
    let root = fs::read(ca.ca.dir().join(ROOT_CERT)).expect("read");
    let key = fs::read(ca.ca.dir().join(ROOT_KEY)).expect("read");
    match Identity::from_pem(&root, &key).expect_err("refused") {
        // `spiffe://d` has no path: not a workload ID.
        IdentityError::Refused(r) => assert_eq!(r.reason, RefusalReason::Other, "{r}"),
        other => panic!("{other}"),
    }
    // Were it to carry one, the CA flag alone refuses it.
    let der = &certs(std::str::from_utf8(&root).expect("utf-8"))[0];
    let refusal = CertInfo::parse(der)
        .expect("parse")
        .check_leaf_usage()
        .expect_err("a CA");
    assert_eq!(refusal.reason, RefusalReason::BadKeyUsage);
}

#[test]
fn an_identity_needs_the_matching_key() {
    let ca = ca();
    let a = ca.issue("spiffe://d/a");
    let b = ca.issue("spiffe://d/b");
    let err =
        Identity::from_pem(a.cert.cert_pem.as_bytes(), b.key_pem.as_bytes()).expect_err("mismatch");
    assert!(matches!(err, IdentityError::KeyMismatch), "{err}");
    let err = Identity::from_pem(b"", a.key_pem.as_bytes()).expect_err("empty");
    assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    let err = Identity::from_pem(a.cert.cert_pem.as_bytes(), b"").expect_err("no key");
    assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
}

#[test]
fn a_csr_is_signed_for_exactly_the_expected_identity() {
    let ca = ca_with(InitOptions {
        intermediate: true,
        ..InitOptions::default()
    });
    let expected = id("spiffe://d/payments");
    let csr = |names: Vec<rcgen::SanType>| {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names;
        let pem = params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        (pem, key)
    };
    let uri = |s: &str| rcgen::SanType::URI(s.try_into().expect("ia5"));

    let (pem, key) = csr(vec![uri("spiffe://d/payments")]);
    let signed = ca
        .ca
        .sign_csr(&pem, &expected, Duration::from_secs(3_600))
        .expect("signed");
    assert_eq!(signed.info.uris, ["spiffe://d/payments"]);
    assert_eq!(signed.info.extended_key_usage, Some((true, true)));
    assert_eq!(certs(&signed.cert_pem).len(), 2);
    // The certificate is for the request's key.
    Identity::from_pem(signed.cert_pem.as_bytes(), key.serialize_pem().as_bytes())
        .expect("key matches");

    for names in [
        vec![uri("spiffe://d/orders")],
        vec![uri("spiffe://d/payments"), uri("spiffe://d/orders")],
        vec![rcgen::SanType::DnsName("payments".try_into().expect("ia5"))],
        vec![],
    ] {
        let (pem, _) = csr(names);
        let err = ca
            .ca
            .sign_csr(&pem, &expected, Duration::from_secs(60))
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("must ask for exactly the URI spiffe://d/payments"),
            "{err}"
        );
    }
    let err = ca
        .ca
        .sign_csr("not a csr", &expected, Duration::from_secs(60))
        .expect_err("garbage");
    assert!(matches!(err, IdentityError::Csr(_)), "{err}");
}

#[test]
fn host_names_and_addresses_sit_beside_the_spiffe_id() {
    let ca = common::ca();
    let options = mesh_identity::ca::LeafOptions {
        dns_names: vec!["Web.Shop.Internal".into(), "web.shop.internal".into()],
        ip_addresses: vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")],
        ..mesh_identity::ca::LeafOptions::ttl(Duration::from_secs(3_600))
    };
    let issued = ca.issue_with("spiffe://shop.example/web", &options);
    let info = &issued.cert.info;
    assert_eq!(
        info.uris,
        ["spiffe://shop.example/web"],
        "still one URI SAN"
    );
    assert_eq!(info.dns_names, ["web.shop.internal"], "lowercased, once");
    assert_eq!(info.ip_addresses, options.ip_addresses);
    assert_eq!(info.extended_key_usage, Some((true, true)));
    let identity = identity(&issued);
    assert_eq!(
        identity.spiffe_id().to_string(),
        "spiffe://shop.example/web"
    );

    // A name that is not a host name is refused, naming the rule.
    let bad = mesh_identity::ca::LeafOptions {
        dns_names: vec!["*.shop.internal".into()],
        ..mesh_identity::ca::LeafOptions::ttl(Duration::from_secs(3_600))
    };
    let err = ca
        .ca
        .issue_with(&id("spiffe://shop.example/web"), &bad)
        .expect_err("a wildcard is refused");
    assert!(matches!(err, IdentityError::DnsName { .. }), "{err}");
    assert!(err.to_string().contains("wildcard"), "{err}");
}

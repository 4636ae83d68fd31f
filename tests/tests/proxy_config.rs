//! A wrong `proxy.toml` stops `mesh-proxy` before it binds anything: exit status 2 and a
//! message that names the key.

use std::time::Duration;

use mesh_tests::mesh::run_proxy;

const GOOD: &str = r#"service = "web"
table = "/nonexistent/mesh.table"
[inbound]
listen = "127.0.0.1:0"
app = "127.0.0.1:9"
[outbound]
listen = "127.0.0.1:1"
[admin]
listen = "127.0.0.1:2"
[identity]
cert = "certs/web/cert.pem"
key = "certs/web/key.pem"
bundle = "certs/web/bundle.pem"
"#;

fn assert_refused(config: &str, needles: &[&str], what: &str) {
    let (status, stderr) = run_proxy(config, Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("{what}: the proxy kept running:\n{stderr}"));
    assert_eq!(status.code(), Some(2), "{what}: {status}\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: the message does not name `{needle}`:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("listening"),
        "{what}: it started:\n{stderr}"
    );
}

#[test]
fn a_wrong_config_exits_2_naming_the_key() {
    assert_refused(
        &GOOD.replace("app =", "aplication ="),
        &["aplication", "line 5"],
        "unknown key in [inbound]",
    );
    assert_refused(
        &GOOD.replace("service = \"web\"", "service = \"web\"\ntabel_poll_ms = 10"),
        &["tabel_poll_ms"],
        "unknown top-level key",
    );
    assert_refused(
        &GOOD.replace("127.0.0.1:1", "nowhere"),
        &["outbound.listen", "line 7"],
        "bad address",
    );
    assert_refused(
        &GOOD.replace("app = \"127.0.0.1:9\"", "app = \"127.0.0.1\""),
        &["inbound.app"],
        "address without a port",
    );
    assert_refused(
        &GOOD.replace("table = \"/nonexistent/mesh.table\"\n", ""),
        &["table"],
        "missing table key",
    );
    assert_refused(
        &GOOD.replace("[outbound]\nlisten = \"127.0.0.1:1\"\n", ""),
        &["outbound"],
        "missing [outbound]",
    );
    assert_refused(
        &GOOD.replace("\"web\"", "\"Web\""),
        &["service"],
        "bad service name",
    );
    assert_refused(
        &GOOD.replace("service = \"web\"", "service = \"web\"\ntable_poll_ms = 0"),
        &["table_poll_ms"],
        "zero poll interval",
    );
}

#[test]
fn no_config_or_an_unreadable_one_exits_2() {
    let (status, stderr) = run_proxy("", Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(
        stderr.contains("service"),
        "an empty config names the first missing key:\n{stderr}"
    );
}

#[test]
fn no_identity_exits_2_unless_plaintext_is_asked_for_explicitly() {
    let (without, _) = GOOD.split_once("[identity]").expect("identity section");
    assert_refused(
        without,
        &["[identity]", "insecure_plaintext", "mTLS"],
        "no [identity]",
    );
    assert_refused(
        &GOOD.replace("bundle = \"certs/web/bundle.pem\"\n", ""),
        &["identity.bundle"],
        "no bundle",
    );
    // Credential files that cannot be read stop it too (before it listens).
    let (status, stderr) = run_proxy(GOOD, Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("the proxy kept running:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("mesh identity") && stderr.contains("cert.pem"),
        "the message names the identity files:\n{stderr}"
    );
    assert!(!stderr.contains("listening"), "it started:\n{stderr}");
}

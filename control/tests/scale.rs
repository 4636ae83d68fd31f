//! Scale: 1,000 simulated subscribers against a `mesh-control` child process (so its RSS is
//! its own): time from a policy change to the last ack, and memory per connected proxy.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_control::swarm;
use mesh_identity::ca::InitOptions;
use mesh_identity::{Ca, TrustDomain};

const TOKEN: &str = "scale-operator-token-of-32-characters";

/// The addresses `mesh-control` bound (`addresses_file`): proxies, API.
async fn bound_addresses(file: &std::path::Path) -> (SocketAddr, SocketAddr) {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(file) {
            let table: toml::Table = text.parse().expect("the addresses file is TOML");
            let addr = |key: &str| -> SocketAddr {
                table[key]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .expect("an address")
            };
            return (addr("proxies"), addr("api"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mesh-control did not report its addresses");
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_subscribers_get_a_policy_change() {
    let n: usize = std::env::var("MESH_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        trust_domain: Some(TrustDomain::new("scale.test").expect("td")),
        ..InitOptions::default()
    };
    Ca::init(&dir.path().join("ca"), &options).expect("ca");
    std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
    std::fs::write(dir.path().join("policies/scale.mesh"), swarm::policy(50, 0)).expect("policy");
    let config = dir.path().join("control.toml");
    std::fs::write(&config, format!("policies = \"policies\"\nca = \"ca\"\naddresses_file = \"addresses.toml\"\n[proxies]\nlisten = \"127.0.0.1:0\"\nmax_streams_per_identity = 100000\nmax_connections_per_ip = 100000\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n")).expect("config");
    let child = Kill(
        Command::new(env!("CARGO_BIN_EXE_mesh-control"))
            .arg("--config")
            .arg(&config)
            .env("MESH_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("mesh-control starts"),
    );
    let (proxies, api) = bound_addresses(&dir.path().join("addresses.toml")).await;
    let mut up = false;
    for _ in 0..100 {
        if swarm::api(api, TOKEN, "GET", "/v1/policy", None)
            .await
            .is_ok_and(|(s, v)| s == 200 && v["version"] == 1)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "mesh-control did not come up");
    let bundle = std::fs::read_to_string(dir.path().join("ca/root.pem")).expect("root");
    let report = swarm::measure(
        proxies,
        api,
        TOKEN,
        &bundle,
        child.0.id(),
        n,
        50,
        Duration::from_secs(120),
    )
    .await
    .expect("measured");
    println!("scale: {report}");
    assert_eq!(report.connected, n, "{report}");
    assert_eq!(
        report.delivery_ms.len(),
        n,
        "every subscriber got the change: {report}"
    );
    let last_ack = report.last_ack_ms.expect("every ack recorded");
    // Generous: debug build, two shared cores.
    assert!(last_ack < 20_000.0, "{report}");
    assert!(report.kib_per_proxy < 200.0, "{report}");
}

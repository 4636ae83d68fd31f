//! `cargo bench -p mesh-control --bench subscribers [-- N]`: N simulated subscribers (default
//! 10,000) against a `mesh-control` child process: delivery p50/p99 of a policy change and
//! the control plane's memory per connected proxy. `bench/control.sh` raises the fd limit.
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_control::swarm;
use mesh_identity::ca::InitOptions;
use mesh_identity::{Ca, TrustDomain};

const TOKEN: &str = "bench-operator-token-of-32-characters";

/// The addresses `mesh-control` bound (`addresses_file`): proxies, API.
fn bound_addresses(file: &std::path::Path) -> (SocketAddr, SocketAddr) {
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
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("mesh-control did not report its addresses");
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let services = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        trust_domain: Some(TrustDomain::new("scale.test").expect("td")),
        ..InitOptions::default()
    };
    Ca::init(&dir.path().join("ca"), &options).expect("ca");
    std::fs::create_dir_all(dir.path().join("policies")).expect("dir");
    std::fs::write(
        dir.path().join("policies/scale.mesh"),
        swarm::policy(services, 0),
    )
    .expect("policy");
    let config = dir.path().join("control.toml");
    std::fs::write(
        &config,
        format!("policies = \"policies\"\nca = \"ca\"\naddresses_file = \"addresses.toml\"\n[proxies]\nlisten = \"127.0.0.1:0\"\nmax_streams_per_identity = 100000\nmax_connections_per_ip = 100000\n[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-control"))
        .arg("--config")
        .arg(&config)
        .env("MESH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("mesh-control starts");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = runtime.block_on(async {
        let (proxies, api) = bound_addresses(&dir.path().join("addresses.toml"));
        for _ in 0..100 {
            if swarm::api(api, TOKEN, "GET", "/v1/policy", None)
                .await
                .is_ok_and(|(s, v)| s == 200 && v["version"] == 1)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let bundle = std::fs::read_to_string(dir.path().join("ca/root.pem")).expect("root");
        swarm::measure(
            proxies,
            api,
            TOKEN,
            &bundle,
            child.id(),
            n,
            services,
            Duration::from_secs(300),
        )
        .await
    });
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(report) => println!("control subscribers: {report}"),
        Err(e) => {
            eprintln!("control subscribers: {e}");
            std::process::exit(1);
        }
    }
}

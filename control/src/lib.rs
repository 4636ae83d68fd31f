//! `mesh-control`: the control plane. It compiles the policy directory, ships each proxy
//! the slice of the table its service needs over an HTTP/2 stream (docs/control-protocol.md),
//! keeps the registry of connected proxies, issues their certificates and answers operators.

pub mod api;
pub mod api_tls;
pub mod body;
pub mod client;
pub mod config;
pub mod distribution;
pub mod explain;
pub mod frames;
pub mod identities;
pub mod policy;
pub mod registry;
pub mod revocations;
pub mod shared;
pub mod slices;
pub mod state;
pub mod swarm;
pub mod tls;
pub mod tokens;
pub mod traffic;
pub mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_identity::{Ca, TrustDomain};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::Config;
use shared::Shared;

/// A control plane that could not start; `main` exits 2 with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A started control plane.
#[derive(Debug)]
pub struct Running {
    /// Where proxies connect.
    pub proxies_addr: SocketAddr,
    /// Where operators connect.
    pub api_addr: SocketAddr,
    /// The shared state (tests look inside).
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Loads the CA and state, compiles the policy, binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let ca = Ca::load(&config.ca).map_err(|e| {
        StartError(format!(
            "key `ca`: cannot load `{}`: {e}",
            config.ca.display()
        ))
    })?;
    state::secure_dir(&config.state).map_err(|e| {
        StartError(format!(
            "key `state`: cannot create `{}` (mode 0700): {e}",
            config.state.display()
        ))
    })?;
    let tokens =
        state::Tokens::load(&config.state).map_err(|e| StartError(format!("key `state`: {e}")))?;
    let enrollments = state::Enrollments::load(&config.state)
        .map_err(|e| StartError(format!("key `state`: {e}")))?;
    let revoked_certificates = revocations::Revocations::load(&config.state)
        .map_err(|e| StartError(format!("key `state`: {e}")))?;

    // The policy: the directory if it compiles, else the last good table saved in the state
    // directory, so a restart serves what was served before.
    let compiled = {
        let (dir, paths) = (config.policies.clone(), config.module_paths.clone());
        tokio::task::spawn_blocking(move || policy::compile(&dir, &paths))
            .await
            .map_err(|e| StartError(format!("internal: {e}")))?
    };
    let saved = state::load_policy(&config.state);
    let trust_domain = match (ca.trust_domain(), &compiled, &saved) {
        (Some(td), _, _) => td.clone(),
        (None, Ok(c), _) => TrustDomain::new(&c.table.mesh.trust_domain).map_err(|e| StartError(e.to_string()))?,
        (None, Err(_), Some((_, t))) => TrustDomain::new(&t.mesh.trust_domain).map_err(|e| StartError(e.to_string()))?,
        (None, Err(_), None) => {
            return Err(StartError(
                "key `ca`: the CA has no trust domain and no policy compiled, so the control plane's identity is unknown".into(),
            ))
        }
    };
    let shared = Arc::new(Shared {
        ca,
        trust_domain: trust_domain.clone(),
        policy: ArcSwapOption::empty(),
        attempt: Mutex::new(None),
        compiling: tokio::sync::Mutex::new(()),
        registry: registry::Registry::default(),
        tokens,
        enrollments,
        revoked_certificates,
        revocations: tokio::sync::watch::channel(0).0,
        traffic: traffic::Traffic::default(),
        slices: slices::SliceCache::default(),
        hub: shared::Hub::default(),
        warm_until: std::time::Instant::now() + config.warm_up,
        config,
    });
    // The saved version first, so that the same checksum keeps the same version.
    if let Some((saved, table)) = saved {
        let table = Arc::new(table);
        let mut search = vec![shared.config.policies.clone()];
        search.extend(shared.config.module_paths.iter().cloned());
        let modules = policy::load_modules(&table, &search).unwrap_or_default();
        if let Ok(engine) = mesh_engine::Engine::new(Arc::clone(&table)) {
            let checksum = policy::checksum_of(&table);
            shared.install_table(
                saved.version,
                checksum,
                table,
                Arc::new(engine),
                modules,
                serde_json::Value::Null,
            );
        }
    }
    match compiled {
        Ok(c) => {
            shared.install(c, "watch");
        }
        Err(d) => {
            tracing::error!("the policy does not compile; serving the last good table, if any");
            shared.reject("watch", d);
        }
    }

    let cert = tls::ServerCert::issue(&shared.ca, &trust_domain, shared.config.cert_ttl)
        .map_err(|e| StartError(format!("key `ca`: {e}")))?;
    let tls_config = tls::server_config(&shared.ca, Arc::clone(&cert)).map_err(StartError)?;
    let ca_for_renewal =
        Arc::new(Ca::load(&shared.config.ca).map_err(|e| StartError(e.to_string()))?);
    let (api_tls, api_cert_renewal) = match api_tls::acceptor(
        &shared.config.api_tls,
        &ca_for_renewal,
        &trust_domain,
        shared.config.cert_ttl,
    )
    .map_err(StartError)?
    {
        Some((acceptor, renewal)) => (Some(acceptor), renewal),
        None => (None, None),
    };
    let proxies = TcpListener::bind(shared.config.proxies_listen)
        .await
        .map_err(|e| {
            StartError(format!(
                "key `proxies.listen`: cannot listen on {}: {e}",
                shared.config.proxies_listen
            ))
        })?;
    let api = TcpListener::bind(shared.config.api_listen)
        .await
        .map_err(|e| {
            StartError(format!(
                "key `api.listen`: cannot listen on {}: {e}",
                shared.config.api_listen
            ))
        })?;
    let proxies_addr = proxies
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    let api_addr = api.local_addr().map_err(|e| StartError(e.to_string()))?;
    tracing::info!(%proxies_addr, %api_addr, trust_domain = %trust_domain, "mesh-control listening");
    if let Some(path) = &shared.config.addresses_file {
        // Written whole (beside it, then renamed): a poller never reads half of it.
        let text = format!("proxies = \"{proxies_addr}\"\napi = \"{api_addr}\"\n");
        state::write_atomic(path, text.as_bytes(), false).map_err(|e| {
            StartError(format!(
                "key `addresses_file`: cannot write `{}`: {e}",
                path.display()
            ))
        })?;
    }

    let mut tasks = vec![
        tokio::spawn(distribution::serve(
            Arc::clone(&shared),
            proxies,
            tokio_rustls::TlsAcceptor::from(tls_config),
        )),
        tokio::spawn(api::serve(Arc::clone(&shared), api, api_tls)),
        tokio::spawn(watch::watch(Arc::clone(&shared))),
        tokio::spawn(cert.renew_forever(ca_for_renewal, trust_domain, shared.config.cert_ttl)),
    ];
    tasks.push(tokio::spawn(registry_loop(Arc::clone(&shared))));
    tasks.extend(api_cert_renewal.map(tokio::spawn));
    Ok(Running {
        proxies_addr,
        api_addr,
        shared,
        tasks,
    })
}

/// Drops expired registrations and pushes the slices that registry changes touch; changes
/// are gathered for 100 ms so a burst of hellos costs one wake-up per subscriber. When the
/// warm-up ends, every subscriber is woken so that the slices held back during it are sent.
async fn registry_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut warming = true;
    loop {
        tick.tick().await;
        if warming && !shared.warming_up() {
            warming = false;
            tracing::info!("warm-up over; sending held slices");
            shared.hub.notify_all();
        }
        shared.registry.sweep(shared.config.registry_grace);
        let dirty = shared.registry.take_dirty();
        if !dirty.is_empty() {
            shared.registry_changed(&dirty);
        }
    }
}

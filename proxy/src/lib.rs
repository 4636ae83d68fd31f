//! `mesh-proxy`: the sidecar. It routes the local application's calls (outbound) and
//! receives other sidecars' calls for it (inbound), deciding from the compiled rule table.
//!
//! A request's path through the proxy, in the order the code runs it:
//! accept (`server`) → TLS (`tls`: on the inbound listener, mTLS with the caller's identity,
//! or plaintext where the service is `mtls permissive`) → HTTP/1.1 or HTTP/2 by preface
//! (`server`) → route (`outbound`, the decision engine) or, inbound, path check and
//! authorization (`inbound`) → pick target by weight (`outbound`) → prepare headers
//! (`headers`, `forward`) → the tries, within the route's timeout (`retry`): pick an endpoint
//! (`cluster`, `balance`), connect (`upstream`; mTLS to sidecars, verifying the service's
//! identity: `tls`; to the application, a keep-alive pool that ACKs partial responses at once) and send, retry as the route says → finish the response (`forward`);
//! any failure becomes a response in `errors`.
//!
//! Beside the request path, who exists (`discovery`), who is fit (`health`, `outlier`) and
//! who gets a request (`balance`) are kept apart; `cluster` holds their shared state.

pub mod access_log;
pub mod addresses;
pub mod admin;
pub mod balance;
pub mod body;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod discovery;
pub mod errors;
pub mod explain;
pub mod filters;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod health;
pub mod inbound;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod outlier;
pub mod retry;
pub mod server;
pub mod snapshot;
pub mod stream_timeout;
pub mod table_watch;
pub mod tls;
pub mod trace;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::Credentials;
use tokio::net::TcpListener;
use tokio::sync::watch;

use cluster::Clusters;
use config::Config;
use discovery::DnsSettings;
use snapshot::Registries;
use table_watch::Tables;
use tls::Transport;
use upstream::Upstreams;

/// The environment variable naming the DNS server when the config names none.
pub const DNS_SERVER_ENV: &str = "MESH_DNS_SERVER";

/// What every request handler shares.
#[derive(Debug)]
pub struct Context {
    /// The service this sidecar fronts.
    pub service: String,
    /// The current rule table.
    pub tables: Arc<Tables>,
    /// Connections to other sidecars and the application.
    pub upstreams: Arc<Upstreams>,
    /// Clusters and retry budgets, kept across tables.
    pub registries: Arc<Registries>,
    /// The application's address, when the config names it.
    pub app: Option<SocketAddr>,
    /// Timeout for requests whose route sets none.
    pub default_timeout: Duration,
    /// The metrics (`/metrics`).
    pub metrics: Arc<metrics::Metrics>,
    /// The access log's writer (what is logged: each service's `observe` block).
    pub access_log: Option<access_log::AccessLog>,
    /// The span exporter (`[tracing] otlp_endpoint`), when spans go somewhere.
    pub tracer: Option<trace::Exporter>,
    /// Changes the log filter at run time (`/logging?level=`), when `main` set one up.
    pub log_filter: Option<LogFilter>,
    /// Set by `/drain` and `/quitquitquit`: drain, then exit 0.
    pub shutdown: Arc<tokio::sync::Notify>,
    /// Whether the proxy is draining (`/ready` answers 503).
    pub draining: std::sync::atomic::AtomicBool,
    /// The WASM filters (`None` when the WASM host could not start).
    pub filters: Option<Arc<filters::FilterStore>>,
    /// The inbound listener's address (a property filters may read).
    pub inbound_addr: Option<SocketAddr>,
}

/// Replaces the log filter (an `EnvFilter` directive such as `debug` or
/// `mesh_proxy=trace`); `Err` names what is wrong with it.
pub struct LogFilter(pub Box<SetFilter>);

/// What [`LogFilter`] holds: sets the filter from a directive.
pub type SetFilter = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for LogFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogFilter")
    }
}

/// A proxy that failed to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The bound addresses could not be written to `addresses_file` (the message names it).
    #[error("key `addresses_file`: {0}")]
    AddressesFile(String),
    /// The `[identity]` credentials could not be loaded.
    #[error("cannot load the mesh identity (`[identity]` cert, key, bundle): {0}")]
    Identity(mesh_identity::IdentityError),
}

/// The WASM host and the filter store; `None` (logged) when the host cannot start, so
/// filters count as not loaded and their `failure` modes apply.
fn start_filters(
    config: &Config,
    caller: Arc<dyn mesh_wasm::HttpCaller>,
) -> Option<Arc<filters::FilterStore>> {
    let slots = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    } else {
        config.workers
    };
    let host_config = mesh_wasm::HostConfig {
        slots,
        max_pause: Duration::from_millis(config.filters.max_pause_ms),
    };
    match mesh_wasm::Host::new(host_config, caller) {
        Ok(host) => {
            let dirs = if config.filters.modules.is_empty() {
                vec![config.default_module_dir()]
            } else {
                config.filters.modules.clone()
            };
            Some(Arc::new(filters::FilterStore::new(host, dirs)))
        }
        Err(error) => {
            tracing::error!(%error, "the WASM host did not start: filters are not loaded (their `failure` modes apply)");
            None
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then drains for the configured time.
pub async fn run(config: Config) -> Result<(), StartError> {
    run_with(config, None).await
}

/// [`run`], with a handle that changes the log filter at run time (`/logging`).
pub async fn run_with(config: Config, log_filter: Option<LogFilter>) -> Result<(), StartError> {
    // Signal handlers first: until they exist, SIGTERM or SIGHUP would kill the process
    // outright instead of draining or reloading (tokio keeps a handler installed once made).
    let shutdown = ShutdownSignal::install();
    #[cfg(unix)]
    let _hangup_installed = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let tables = Arc::new(Tables::default());
    // A join token: the credentials come from the control plane before anything starts.
    if !control::bootstrap::ensure(&config).await {
        return Ok(());
    }
    let transport = Arc::new(transport(&config, &tables)?);
    let upstreams = Arc::new(Upstreams::new(
        Duration::from_millis(config.outbound.connect_timeout_ms),
        Duration::from_millis(config.upstream.idle_timeout_ms),
        Arc::clone(&transport),
    ));
    let registries = Arc::new(Registries {
        clusters: Arc::new(Clusters::new(Arc::clone(&upstreams), resolver(&config))),
        budgets: retry::budget::Budgets::default(),
    });
    let _sweeper = cluster::sweeper(
        Arc::clone(&registries.clusters),
        Duration::from_millis(config.outbound.destination_idle_ms),
    );
    if let Some(path) = &config.table {
        match snapshot::Snapshot::load(path, &config.service, &registries) {
            Ok(first) => {
                tracing::info!(checksum = %first.checksum, path = %path.display(), "rule table loaded");
                tables.store(first);
            }
            Err(error) if error.is_missing_file() => {
                tracing::warn!(path = %path.display(), "no rule table yet; not ready until the file appears");
            }
            Err(error) => {
                tables
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%error, path = %path.display(), "no usable rule table yet; not ready until one loads");
            }
        }
    }
    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let inbound_listener = bind("inbound", config.inbound.listen).await?;
    let outbound_listener = bind("outbound", config.outbound.listen).await?;
    let admin_listener = bind("admin", config.admin.listen).await?;
    // A listener on port 0 got its port from the system: what it is bound to is the truth.
    let bound = addresses::Bound {
        inbound: bound_addr(&inbound_listener, config.inbound.listen),
        outbound: bound_addr(&outbound_listener, config.outbound.listen),
        admin: bound_addr(&admin_listener, config.admin.listen),
    };
    if let Some(path) = &config.addresses_file {
        bound.write(path).map_err(StartError::AddressesFile)?;
    }

    let mut metrics = metrics::Metrics::new(
        Arc::clone(&tables),
        Arc::clone(&registries),
        Arc::clone(&transport),
    );
    metrics.record_requests = config.admin.request_metrics;
    let access_log = access_log::AccessLog::start(config.access_log.path.clone());
    metrics.register_access_log(&access_log);
    let tracer = config.tracing.endpoint().map(|endpoint| {
        tracing::info!(%endpoint, "exporting spans over OTLP/HTTP (protobuf)");
        trace::Exporter::start(endpoint, &config.service)
    });
    if let Some(tracer) = &tracer {
        metrics.register_tracing(tracer);
    }
    let caller = Arc::new(filters::caller::MeshCaller::default());
    let filter_store = start_filters(
        &config,
        Arc::clone(&caller) as Arc<dyn mesh_wasm::HttpCaller>,
    );
    if let Some(store) = &filter_store {
        metrics.register_filters(Arc::clone(store));
    }
    let metrics = Arc::new(metrics);
    let ctx = Arc::new(Context {
        service: config.service.clone(),
        tables: Arc::clone(&tables),
        upstreams,
        registries: Arc::clone(&registries),
        app: config.inbound.app,
        default_timeout: Duration::from_millis(config.outbound.default_timeout_ms),
        metrics: Arc::clone(&metrics),
        access_log: Some(access_log),
        tracer,
        log_filter,
        shutdown: Arc::new(tokio::sync::Notify::new()),
        draining: std::sync::atomic::AtomicBool::new(false),
        filters: filter_store.clone(),
        inbound_addr: Some(bound.inbound),
    });
    caller.attach(Arc::downgrade(&ctx));
    if let Some(store) = filter_store {
        let every = Duration::from_millis(config.filters.poll_ms.unwrap_or(config.table_poll_ms));
        tokio::spawn(store.watch(Arc::clone(&tables), config.service.clone(), every));
    }

    match &config.table {
        Some(path) => {
            tokio::spawn(table_watch::watch(
                Arc::clone(&tables),
                registries,
                path.clone(),
                config.service.clone(),
                Duration::from_millis(config.table_poll_ms),
            ));
        }
        None => control::spawn(&config, Arc::clone(&ctx), transport.credentials().cloned()),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(credentials) = transport.credentials() {
        // Rotation: new files are picked up by polling and on SIGHUP; new handshakes use
        // them, open connections keep their session.
        let poll = config.identity.as_ref().map_or(1_000, |i| i.poll_ms);
        tokio::spawn(Arc::clone(credentials).watch(Duration::from_millis(poll)));
        tokio::spawn(reload_credentials_on_hangup(Arc::clone(credentials)));
    }
    let inbound = {
        let ctx = Arc::clone(&ctx);
        let transport = Arc::clone(&transport);
        tokio::spawn(server::serve_with(
            inbound_listener,
            move |tcp, peer| {
                let transport = Arc::clone(&transport);
                async move { transport.accept(tcp, peer).await }
            },
            move |conn, req| inbound::handle(Arc::clone(&ctx), conn, req),
            stop_rx.clone(),
            Duration::from_millis(config.inbound.idle_timeout_ms),
            metrics.open_connections("inbound"),
            config.limits.head_limits(),
        ))
    };
    let outbound = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(server::serve(
            outbound_listener,
            move |peer, req| outbound::handle(Arc::clone(&ctx), peer, req),
            stop_rx.clone(),
            Duration::from_millis(config.outbound.idle_timeout_ms),
            metrics.open_connections("outbound"),
            config.limits.head_limits(),
        ))
    };
    let admin = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(server::serve(
            admin_listener,
            move |peer, req| admin::handle(Arc::clone(&ctx), peer, req),
            stop_rx.clone(),
            Duration::from_millis(config.outbound.idle_timeout_ms),
            metrics.open_connections("admin"),
            config.limits.head_limits(),
        ))
    };
    tracing::info!(
        service = %config.service,
        inbound = %bound.inbound,
        outbound = %bound.outbound,
        admin = %bound.admin,
        "mesh-proxy listening"
    );

    tokio::select! {
        () = shutdown.wait() => {}
        () = ctx.shutdown.notified() => tracing::info!("shutdown asked on the admin listener"),
    }
    ctx.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        drain_ms = config.drain_ms,
        "shutting down: no new connections; draining requests in flight"
    );
    let _ = stop_tx.send(true);
    let drain = async {
        for server in [inbound, outbound, admin] {
            if let Ok(drain) = server.await {
                drain.shutdown().await;
            }
        }
    };
    if tokio::time::timeout(config.drain(), drain).await.is_err() {
        tracing::warn!("drain time passed with requests still in flight; exiting");
    }
    Ok(())
}

/// The transport between sidecars: mTLS with the `[identity]` credentials, or plaintext
/// when the config opted out (`insecure_plaintext`, which `Config` allows only explicitly).
fn transport(config: &Config, tables: &Arc<Tables>) -> Result<Transport, StartError> {
    let Some(paths) = config.identity_paths() else {
        tracing::warn!(
            "[identity] insecure_plaintext = true: mTLS is OFF; connections between sidecars \
             are plaintext and every inbound caller is a plaintext caller (development only)"
        );
        return Ok(Transport::insecure_plaintext(
            Arc::clone(tables),
            &config.service,
        ));
    };
    let credentials = Credentials::load(paths).map_err(StartError::Identity)?;
    let info = credentials.cert_info();
    tracing::info!(
        spiffe_id = %credentials.spiffe_id(),
        serial = %info.serial,
        not_after = %mesh_identity::format_utc(info.not_after),
        roots = credentials.bundle_roots(),
        "mesh identity loaded: mTLS between sidecars"
    );
    Ok(Transport::mtls(
        Arc::new(credentials),
        Arc::clone(tables),
        &config.service,
    ))
}

/// SIGHUP reloads the credentials too (the table watcher reloads the table).
async fn reload_credentials_on_hangup(credentials: Arc<Credentials>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            let credentials = Arc::clone(&credentials);
            // `reload` logs and counts its own outcome.
            let _ = tokio::task::spawn_blocking(move || credentials.reload()).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = credentials;
    }
}

/// The DNS resolver for discovery: the config's server, else `$MESH_DNS_SERVER`, else the
/// system's. Without one (no resolv.conf), names resolve to nothing, and the services that
/// have names say why.
fn resolver(config: &Config) -> Result<discovery::dns::Resolver, String> {
    let from_env = || {
        let value = std::env::var(DNS_SERVER_ENV).ok()?;
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                tracing::error!(%value, "{DNS_SERVER_ENV} is not an ip:port; using the system's resolver");
                None
            }
        }
    };
    let settings = DnsSettings {
        server: config.discovery.dns_server.or_else(from_env),
        min_refresh: Duration::from_millis(config.discovery.dns_min_refresh_ms),
        max_refresh: Duration::from_millis(config.discovery.dns_max_refresh_ms),
    };
    discovery::dns::Resolver::new(settings)
}

/// SIGTERM (or Ctrl-C), listened for from the start of `run`.
struct ShutdownSignal {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn install() -> ShutdownSignal {
        ShutdownSignal {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .ok(),
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        if let Some(mut terminate) = self.terminate {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The address `listener` is bound to (`configured` if the system cannot say).
fn bound_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

//! `mesh-proxy`: the sidecar. It routes the local application's calls (outbound) and
//! receives other sidecars' calls for it (inbound), deciding from the compiled rule table.
//!
//! A request's path through the proxy, in the order the code runs it:
//! accept (`server`) → HTTP/1.1 or HTTP/2 by preface (`server`) → route (`outbound`, the
//! decision engine) → pick target by weight and endpoint (`outbound`, `snapshot`) →
//! prepare headers (`headers`, `forward`) → connect and send (`upstream`) → finish the
//! response (`forward`); any failure becomes a response in `errors`.

pub mod admin;
pub mod body;
pub mod config;
pub mod errors;
pub mod forward;
pub mod headers;
pub mod inbound;
pub mod outbound;
pub mod server;
pub mod snapshot;
pub mod table_watch;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use config::Config;
use table_watch::Tables;
use upstream::Upstreams;

/// What every request handler shares.
#[derive(Debug)]
pub struct Context {
    /// The service this sidecar fronts.
    pub service: String,
    /// The current rule table.
    pub tables: Arc<Tables>,
    /// Connections to other sidecars and the application.
    pub upstreams: Upstreams,
    /// The application's address, when the config names it.
    pub app: Option<SocketAddr>,
    /// Timeout for requests whose route sets none.
    pub default_timeout: Duration,
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
}

/// Runs the proxy until SIGTERM or SIGINT, then drains for the configured time.
pub async fn run(config: Config) -> Result<(), StartError> {
    let tables = Arc::new(Tables::default());
    match snapshot::Snapshot::load(&config.table, &config.service) {
        Ok(first) => {
            tracing::info!(checksum = %first.checksum, path = %config.table.display(), "rule table loaded");
            tables.store(first);
        }
        Err(error) => {
            tables
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(%error, path = %config.table.display(), "no usable rule table yet; not ready until one loads");
        }
    }
    let ctx = Arc::new(Context {
        service: config.service.clone(),
        tables: Arc::clone(&tables),
        upstreams: Upstreams::new(Duration::from_millis(config.outbound.connect_timeout_ms)),
        app: config.inbound.app,
        default_timeout: Duration::from_millis(config.outbound.default_timeout_ms),
    });

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let inbound_listener = bind("inbound", config.inbound.listen).await?;
    let outbound_listener = bind("outbound", config.outbound.listen).await?;
    let admin_listener = bind("admin", config.admin.listen).await?;

    tokio::spawn(table_watch::watch(
        Arc::clone(&tables),
        config.table.clone(),
        config.service.clone(),
        Duration::from_millis(config.table_poll_ms),
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    let inbound = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(server::serve(
            inbound_listener,
            move |peer, req| inbound::handle(Arc::clone(&ctx), peer, req),
            stop_rx.clone(),
        ))
    };
    let outbound = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(server::serve(
            outbound_listener,
            move |peer, req| outbound::handle(Arc::clone(&ctx), peer, req),
            stop_rx.clone(),
        ))
    };
    let admin = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(server::serve(
            admin_listener,
            move |_, req| admin::handle(Arc::clone(&ctx), req),
            stop_rx.clone(),
        ))
    };
    tracing::info!(
        service = %config.service,
        inbound = %config.inbound.listen,
        outbound = %config.outbound.listen,
        admin = %config.admin.listen,
        "mesh-proxy listening"
    );

    shutdown_signal().await;
    tracing::info!(
        drain_ms = config.drain_ms,
        "shutting down: no new connections; draining requests in flight"
    );
    let _ = stop_tx.send(true);
    let drain = async {
        for server in [inbound, outbound, admin] {
            if let Ok(graceful) = server.await {
                graceful.shutdown().await;
            }
        }
    };
    if tokio::time::timeout(config.drain(), drain).await.is_err() {
        tracing::warn!("drain time passed with requests still in flight; exiting");
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

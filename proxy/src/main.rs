//! `mesh-proxy --config proxy.toml`: starts the sidecar. A wrong config exits 2.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_proxy::config::{Config, LogFormat};
use mesh_proxy::LogFilter;

fn main() -> ExitCode {
    let Some(path) = config_path() else {
        eprintln!("usage: mesh-proxy --config proxy.toml");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let log_filter = init_logging(&config);
    // One worker: a current-thread runtime on the main thread. It does the same work as a
    // one-worker multi-thread runtime without the hand-offs between the I/O driver and a
    // worker thread (measured: fewer context switches and less CPU per request).
    let mut runtime = if config.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if config.workers > 1 {
            builder.worker_threads(config.workers);
        }
        builder
    };
    runtime.enable_all();
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(mesh_proxy::run_with(config, Some(log_filter))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(1)
        }
    }
}

/// `--config PATH` or `--config=PATH`.
fn config_path() -> Option<PathBuf> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" || arg == "-c" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Sets up logging; returns what changes the filter at run time (`/logging?level=`).
fn init_logging(config: &Config) -> LogFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    fn setter<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> LogFilter
    where
        L: From<tracing_subscriber::EnvFilter> + 'static,
        S: 'static,
        tracing_subscriber::reload::Handle<L, S>: Send + Sync,
    {
        LogFilter(Box::new(move |level: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| format!("`{level}`: {e}"))?;
            handle
                .reload(L::from(filter))
                .map_err(|e| format!("cannot change the filter: {e}"))
        }))
    }
    match config.log_format {
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            setter(handle)
        }
        LogFormat::Human => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            setter(handle)
        }
    }
}

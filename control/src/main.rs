//! `mesh-control --config control.toml`: runs the control plane until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use mesh_control::Config;

fn usage() -> ExitCode {
    eprintln!("usage: mesh-control --config control.toml");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = match args.as_slice() {
        [flag, path] if flag == "--config" => PathBuf::from(path),
        [arg] if arg.starts_with("--config=") => PathBuf::from(&arg["--config=".len()..]),
        _ => return usage(),
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mesh-control: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-control: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        let running = match mesh_control::start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("mesh-control: {e}");
                return ExitCode::from(2);
            }
        };
        shutdown_signal().await;
        tracing::info!("shutting down");
        drop(running);
        ExitCode::SUCCESS
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

//! The policy directory watcher: polled, debounced, compiled on every change.

use std::sync::Arc;
use std::time::Instant;

use crate::policy;
use crate::shared::Shared;

/// Compiles the policy directory and installs it if it compiles. `Err` holds the
/// diagnostics of a policy that does not (the served one stays).
pub async fn compile_now(
    shared: &Arc<Shared>,
    source: &'static str,
) -> Result<(), serde_json::Value> {
    let _one_at_a_time = shared.compiling.lock().await;
    let s = Arc::clone(shared);
    let result = tokio::task::spawn_blocking(move || {
        policy::compile(&s.config.policies, &s.config.module_paths)
    })
    .await
    .unwrap_or_else(|e| Err(serde_json::json!({ "error": format!("internal: {e}") })));
    match result {
        Ok(compiled) => {
            shared.install(compiled, source);
            Ok(())
        }
        Err(diagnostics) => {
            tracing::warn!(
                errors = %diagnostics.get("errors").cloned().unwrap_or_default(),
                "the policy does not compile; the last good table keeps being served"
            );
            shared.reject(source, diagnostics.clone());
            Err(diagnostics)
        }
    }
}

/// Polls the directory; a change is compiled once it has been stable for the debounce time.
pub async fn watch(shared: Arc<Shared>) {
    let dir = shared.config.policies.clone();
    let mut seen = policy::fingerprint(&dir);
    let mut pending: Option<Instant> = None;
    let mut interval = tokio::time::interval(shared.config.poll.min(shared.config.debounce));
    loop {
        interval.tick().await;
        let now = policy::fingerprint(&dir);
        if now != seen {
            seen = now;
            pending = Some(Instant::now());
            continue;
        }
        if pending.is_some_and(|at| at.elapsed() >= shared.config.debounce) {
            pending = None;
            tracing::info!(dir = %dir.display(), "policy changed; compiling");
            let _ = compile_now(&shared, "watch").await;
        }
    }
}

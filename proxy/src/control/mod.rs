//! The control plane client (`control = "host:port"`): the workload certificate from a join
//! token and its renewal, and the subscription stream that brings tables (the protocol is
//! `docs/control-protocol.md`).

mod backoff;
pub mod bootstrap;
mod client;
pub mod frames;
mod modules;
mod renew;
mod stream;
pub mod traffic;

use std::sync::Arc;

use mesh_identity::Credentials;

pub use backoff::Backoff;

use crate::config::Config;
use crate::Context;

/// Starts the subscription (and, for bootstrapped credentials, their renewal) in the
/// background. The control plane is reached over mTLS, so without credentials (which
/// `Config` does not allow with `control`) nothing starts.
pub fn spawn(config: &Config, ctx: Arc<Context>, credentials: Option<Arc<Credentials>>) {
    let (Some(control), Some(credentials)) = (config.control.clone(), credentials) else {
        tracing::error!("the control plane needs mTLS credentials; no table will come");
        return;
    };
    if config
        .identity
        .as_ref()
        .is_some_and(|i| i.token_file.is_some())
    {
        tokio::spawn(renew::run(
            control.clone(),
            Arc::clone(&credentials),
            config.state_dir(),
        ));
    }
    let module_dirs = if config.filters.modules.is_empty() {
        vec![config.default_module_dir()]
    } else {
        config.filters.modules.clone()
    };
    tokio::spawn(stream::run(stream::Subscriber {
        control,
        ctx,
        credentials,
        module_dirs,
    }));
}

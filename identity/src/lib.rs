//! Mesh identity: who a sidecar is, and how two sidecars prove it to each other.
//!
//! Every workload has a SPIFFE ID, `spiffe://<trust domain>/<service>` ([`SpiffeId`]),
//! carried as the only URI SAN of an X.509 certificate that the mesh CA issued ([`Ca`]).
//! Sidecars talk mutual TLS 1.3 ([`tls`]): the inbound side requires a client certificate
//! from the trust bundle in its own trust domain and learns the caller's identity; the
//! outbound side accepts only the service it meant to reach. Refused handshakes are
//! classified by [`RefusalReason`]. [`Credentials`] follows the certificate, key and bundle
//! files as they rotate.
//!
//! The files are the interface (see `docs/identity.md`): `meshc ca issue` writes them today,
//! the control plane will later.

mod bundle;
pub mod ca;
mod cert;
mod error;
mod identity;
mod refusal;
mod reload;
mod revoked;
mod spiffe;
pub mod tls;
mod ttl;

pub use bundle::TrustBundle;
pub use ca::Ca;
pub use cert::{format_utc, spiffe_id_of, CertInfo};
pub use error::IdentityError;
pub use identity::Identity;
pub use refusal::{Refusal, RefusalReason};
pub use reload::{Credentials, FileStamp, IdentityPaths};
pub use revoked::RevokedSerials;
pub use spiffe::{SpiffeId, TrustDomain};
pub use ttl::parse_ttl;

//! The listeners' bound addresses, written to `addresses_file` once every listener is bound.

use std::net::SocketAddr;
use std::path::Path;

/// Where each listener is bound (a configured port 0 replaced by the system's choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The inbound listener.
    pub inbound: SocketAddr,
    /// The outbound listener.
    pub outbound: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl Bound {
    /// The TOML text: `inbound = "127.0.0.1:40001"` and so on, one line each.
    pub fn to_toml(&self) -> String {
        format!(
            "inbound = \"{}\"\noutbound = \"{}\"\nadmin = \"{}\"\n",
            self.inbound, self.outbound, self.admin
        )
    }

    /// Writes [`Bound::to_toml`] to `path` whole (beside it, then renamed), so a reader
    /// polling for the file never sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        crate::control::bootstrap::write_atomic(path, self.to_toml().as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::Bound;

    #[test]
    fn the_file_is_toml_with_one_key_per_listener() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addresses.toml");
        let bound = Bound {
            inbound: "127.0.0.1:40001".parse().expect("addr"),
            outbound: "127.0.0.1:40002".parse().expect("addr"),
            admin: "[::1]:40003".parse().expect("addr"),
        };
        bound.write(&path).expect("write");
        let read: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("toml");
        assert_eq!(read["inbound"].as_str(), Some("127.0.0.1:40001"));
        assert_eq!(read["outbound"].as_str(), Some("127.0.0.1:40002"));
        assert_eq!(read["admin"].as_str(), Some("[::1]:40003"));
        assert!(!dir.path().join("addresses.toml.tmp").exists());
    }
}

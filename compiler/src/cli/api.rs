//! The control plane's operator API (`--control URL`): a small blocking HTTP/1.1 client
//! (hyper on a current-thread runtime) that sends JSON with the operator token, over plain
//! HTTP or, with `https://` and `--cacert FILE`, over TLS (rustls).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{error, Outcome};

/// Where the operator token comes from.
pub(crate) const TOKEN_ENV: &str = "MESH_CONTROL_TOKEN";

/// One request's limit, from connecting to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `--control URL`, shared by `token`, `apply` and `status`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ControlArg {
    /// The control plane's API listener: `http://HOST:PORT` (or `HOST:PORT`), or
    /// `https://HOST:PORT` with --cacert. The operator token comes from the environment
    /// variable MESH_CONTROL_TOKEN.
    #[arg(long = "control", value_name = "URL")]
    pub(crate) url: String,
    /// With an `https://` URL: the PEM certificates the API's certificate must chain to (the
    /// mesh CA's `root.pem` when the control plane issued it, `[api] tls = true`).
    #[arg(long = "cacert", value_name = "FILE")]
    pub(crate) cacert: Option<std::path::PathBuf>,
}

/// Where the API is and how to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port`.
    authority: String,
    /// The host, for TLS's server name.
    host: String,
    /// `https://`.
    tls: bool,
}

/// A connection setting for the operator API.
pub(crate) struct Api {
    authority: String,
    token: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("authority", &self.authority)
            .field("token", &"<redacted>")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// An answer: its status and JSON body (`Null` when the body is not JSON).
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) json: Value,
}

impl Answer {
    /// The `error` of an error answer, or the status.
    pub(crate) fn error(&self) -> String {
        self.json
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| format!("status {}", self.status), str::to_string)
    }
}

impl Api {
    /// The client for `--control URL`, with the token from the environment; the error is
    /// printed, and the command cannot run (status 2).
    pub(crate) fn from_args(control: &ControlArg) -> Result<Api, Outcome> {
        let token = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Api::new(&control.url, token, control.cacert.as_deref()).map_err(|message| {
            error(message);
            Outcome::CouldNotRun
        })
    }

    fn new(
        url: &str,
        token: Option<String>,
        cacert: Option<&std::path::Path>,
    ) -> Result<Api, String> {
        let target = target(url)?;
        let tls = match (target.tls, cacert) {
            (true, Some(file)) => Some(tls_connector(file, &target.host)?),
            (true, None) => {
                return Err(format!(
                    "--control `{url}`: https:// needs --cacert FILE, the certificates the API's certificate chains to (the mesh CA's root.pem for `[api] tls = true`)"
                ))
            }
            (false, Some(_)) => {
                return Err(format!(
                    "--cacert is for an https:// control plane; `{url}` is plain http"
                ))
            }
            (false, None) => None,
        };
        let authority = target.authority;
        let token = token.ok_or_else(|| {
            format!(
                "the operator token is not set: set {TOKEN_ENV} to the control plane's API token"
            )
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the HTTP client: {e}"))?;
        Ok(Api {
            authority,
            token: token.trim().to_string(),
            tls,
            runtime,
        })
    }

    /// `METHOD path` with an optional JSON body. `Err` (printed, status 2) when the control
    /// plane cannot be reached or refuses the token.
    pub(crate) fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Outcome> {
        let answer = self
            .runtime
            .block_on(async {
                tokio::time::timeout(REQUEST_TIMEOUT, self.send(method.clone(), path, body)).await
            })
            .unwrap_or_else(|_| Err("no answer in time".to_string()))
            .map_err(|why| {
                error(format!(
                    "cannot reach the control plane at {}: {why}",
                    self.authority
                ));
                Outcome::CouldNotRun
            })?;
        if answer.status == 401 || answer.status == 403 {
            error(format!(
                "the control plane refused the operator token ({TOKEN_ENV}): {}",
                answer.error()
            ));
            return Err(Outcome::CouldNotRun);
        }
        Ok(answer)
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| e.to_string())?;
        match &self.tls {
            None => self.exchange(tcp, method, path, body).await,
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.exchange(stream, method, path, body).await
            }
        }
    }

    async fn exchange<T>(
        &self,
        io: T,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Answer { status, json })
    }
}

/// A TLS client that trusts the certificates of `cacert` only, for `host`.
fn tls_connector(
    cacert: &std::path::Path,
    host: &str,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    String,
> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cacert).map_err(|e| format!("--cacert `{}`: {e}", cacert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("--cacert `{}`: {e}", cacert.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cacert `{}`: {e}", cacert.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "--cacert `{}`: no PEM certificate in it",
            cacert.display()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(mesh_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("--control: `{host}` is not a TLS server name: {e}"))?;
    Ok((
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        name,
    ))
}

/// `http://host:port[/]` or `host:port` → `host:port`.
#[cfg(test)]
fn authority(url: &str) -> Result<String, String> {
    target(url).map(|t| t.authority)
}

/// `http://host:port[/]`, `https://host:port[/]` or `host:port`.
fn target(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("--control `{url}`: {why} (such as http://127.0.0.1:7071)");
    let (rest, tls) = match url.split_once("://") {
        Some(("http", rest)) => (rest, false),
        Some(("https", rest)) => (rest, true),
        Some((scheme, _)) => {
            return Err(bad(&format!(
                "`{scheme}://` is not supported; use http:// or https://"
            )))
        }
        None => (url, false),
    };
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') || authority.contains('@') {
        return Err(bad("give the listener's address only, without a path"));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Target {
            authority: authority.to_string(),
            host: host.to_string(),
            tls,
        }),
        _ => Err(bad("not a HOST:PORT")),
    }
}

/// A string field of `value`, trying each name in turn (`-` when none is there).
pub(crate) fn field(value: &Value, names: &[&str]) -> String {
    names
        .iter()
        .find_map(|name| match value.get(*name)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| "-".to_string())
}

/// Lays out `rows` under `header` in columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        assert_eq!(
            authority("http://127.0.0.1:7071").as_deref(),
            Ok("127.0.0.1:7071")
        );
        assert_eq!(authority("http://cp:7071/").as_deref(), Ok("cp:7071"));
        assert_eq!(authority("127.0.0.1:7071").as_deref(), Ok("127.0.0.1:7071"));
        assert_eq!(
            target("https://cp:7071"),
            Ok(Target {
                authority: "cp:7071".into(),
                host: "cp".into(),
                tls: true
            })
        );
        let e = authority("ftp://cp:7071").expect_err("ftp");
        assert!(e.contains("https://"), "{e}");
        assert!(authority("http://cp").is_err());
        assert!(authority("http://cp:7071/v1").is_err());
        assert!(authority("cp:port").is_err());
    }

    #[test]
    fn the_token_variable_is_named_when_unset() {
        let e = Api::new("http://127.0.0.1:1", None, None).expect_err("no token");
        assert!(e.contains(TOKEN_ENV), "{e}");
        assert!(Api::new("http://127.0.0.1:1", Some("t".into()), None).is_ok());
        let e = Api::new("https://127.0.0.1:1", Some("t".into()), None).expect_err("no cacert");
        assert!(e.contains("--cacert"), "{e}");
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["service", "applied"],
            &[
                vec!["web".into(), "abc".into()],
                vec!["payments".into(), "-".into()],
            ],
        );
        assert_eq!(out, "service   applied\nweb       abc\npayments  -\n");
    }

    #[test]
    fn fields_try_each_name() {
        let v = serde_json::json!({"a": null, "b": 3, "c": "x"});
        assert_eq!(field(&v, &["a", "b"]), "3");
        assert_eq!(field(&v, &["c"]), "x");
        assert_eq!(field(&v, &["z"]), "-");
    }
}

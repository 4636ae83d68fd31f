//! The control plane fixture: a real `mesh-control` (CA from `meshc ca init`, a policy
//! directory, the proxies' and operator listeners on free loopback ports) and sidecars that
//! take their tables and certificates from it (`control = ...`, a join token).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::{h1_request, Reply, H1};
use crate::{binary, meshc};

/// The operator API's bearer token in these tests.
pub const OPERATOR_TOKEN: &str = "operator-secret-token-of-32-characters";

/// A running `mesh-control`; killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    /// The proxies' listener.
    pub proxies: SocketAddr,
    /// The operator API's listener.
    pub api: SocketAddr,
    child: Mutex<Option<Child>>,
    starts: Mutex<usize>,
    sidecars: std::sync::atomic::AtomicUsize,
    cert_ttl: String,
    /// More `[api]` keys (`tls = true`, limits), written into every config.
    api_extra: String,
}

impl ControlPlane {
    /// Starts a control plane whose policy directory holds `policy.mesh` = `policy`, with a
    /// CA in `trust_domain`, issuing certificates for `cert_ttl` (such as `24h`, `30s`).
    pub async fn start(policy: &str, trust_domain: &str, cert_ttl: &str) -> ControlPlane {
        ControlPlane::start_with_api(policy, trust_domain, cert_ttl, "").await
    }

    /// [`ControlPlane::start`] with more `[api]` keys, one per line (such as `tls = true`):
    /// with `tls = true` the fixture speaks HTTPS to the API, trusting the mesh CA.
    pub async fn start_with_api(
        policy: &str,
        trust_domain: &str,
        cert_ttl: &str,
        api_extra: &str,
    ) -> ControlPlane {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let out = meshc(
            dir.path(),
            &["ca", "init", "ca", "--trust-domain", trust_domain],
        );
        assert!(
            out.status.success(),
            "meshc ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir_all(dir.path().join("policies"))
            .unwrap_or_else(|e| panic!("mkdir policies: {e}"));
        std::fs::write(dir.path().join("policies/policy.mesh"), policy)
            .unwrap_or_else(|e| panic!("write the policy: {e}"));
        // Both listeners on port 0: the process reports what it bound (`addresses_file`),
        // and a restart binds the same ports again (the proxies reconnect to them).
        let listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        let mut control = ControlPlane {
            dir,
            proxies: listen,
            api: listen,
            child: Mutex::new(None),
            starts: Mutex::new(0),
            sidecars: std::sync::atomic::AtomicUsize::new(0),
            cert_ttl: cert_ttl.to_string(),
            api_extra: api_extra.to_string(),
        };
        control.write_config();
        (control.proxies, control.api) = control.launch().await;
        control.write_config();
        control.wait_api().await;
        control
    }

    /// Writes `control.toml` with the current listen addresses.
    fn write_config(&self) {
        let config = format!(
            "policies = \"policies\"\nca = \"ca\"\ncert_ttl = \"{cert_ttl}\"\nstate = \"state\"\n\
             registry_grace_ms = 2000\naddresses_file = \"control.addresses\"\n\
             [proxies]\nlisten = \"{proxies}\"\n[api]\nlisten = \"{api}\"\ntoken = \"{OPERATOR_TOKEN}\"\n{extra}\n",
            extra = self.api_extra,
            cert_ttl = self.cert_ttl,
            proxies = self.proxies,
            api = self.api,
        );
        std::fs::write(self.dir.path().join("control.toml"), config)
            .unwrap_or_else(|e| panic!("write control.toml: {e}"));
    }

    /// The scratch directory (CA, policies, configs, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The trust bundle proxies authenticate the control plane with.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca/root.pem")
    }

    /// Whether the API speaks TLS (`tls = true` among the `[api]` keys).
    pub fn api_tls(&self) -> bool {
        self.api_extra.lines().any(|l| l.trim() == "tls = true")
    }

    /// `http://` (or `https://`) + the API listener, for `meshc --control`.
    pub fn url(&self) -> String {
        let scheme = if self.api_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.api)
    }

    /// Starts the process (again) and waits until its API answers; a restart binds the
    /// addresses of the first start.
    pub async fn spawn(&self) {
        let (proxies, api) = self.launch().await;
        assert_eq!(
            (proxies, api),
            (self.proxies, self.api),
            "mesh-control came back on other addresses"
        );
        self.wait_api().await;
    }

    /// Starts the process and returns the addresses it bound (proxies, API).
    async fn launch(&self) -> (SocketAddr, SocketAddr) {
        let n = {
            let mut starts = lock(&self.starts);
            *starts += 1;
            *starts
        };
        let addresses = self.dir.path().join("control.addresses");
        let _ = std::fs::remove_file(&addresses);
        let log = self.dir.path().join(format!("control-{n}.log"));
        let stderr =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let mut child = Command::new(binary("mesh-control"))
            .arg("--config")
            .arg(self.dir.path().join("control.toml"))
            .env("MESH_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start mesh-control: {e}"));
        let bound = crate::addresses::wait(
            &addresses,
            &["proxies", "api"],
            &mut child,
            Duration::from_secs(20),
        )
        .await;
        *lock(&self.child) = Some(child);
        let bound = bound.unwrap_or_else(|| {
            panic!("mesh-control did not report its addresses:\n{}", self.log())
        });
        (bound[0], bound[1])
    }

    /// Waits until the operator API answers.
    async fn wait_api(&self) {
        let started = Instant::now();
        loop {
            if let Some(status) = lock(&self.child)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("mesh-control exited ({status}):\n{}", self.log());
            }
            if let Ok(Ok(reply)) =
                tokio::time::timeout(Duration::from_secs(2), self.try_api_get("/v1/proxies")).await
            {
                if reply.status == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "mesh-control did not answer on {} within 20s:\n{}",
                self.api,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL: a crash, not a drain).
    pub fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the control plane logged, all runs.
    pub fn log(&self) -> String {
        let n = *lock(&self.starts);
        (1..=n)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("control-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    async fn try_api_get(&self, path: &str) -> std::io::Result<Reply> {
        let mut connection = if self.api_tls() {
            let tcp = tokio::net::TcpStream::connect(self.api).await?;
            H1::over(tls_to_api(tcp, &self.bundle(), self.api.ip()).await?).await?
        } else {
            H1::connect(self.api).await?
        };
        let request = h1_request(http::Method::GET, "control", path)
            .header("authorization", format!("Bearer {OPERATOR_TOKEN}"))
            .body(crate::body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        Ok(connection.fetch(request).await)
    }

    /// `GET path` on the operator API, as JSON.
    pub async fn api_get(&self, path: &str) -> serde_json::Value {
        let reply = self
            .try_api_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.text());
        reply.json()
    }

    /// Runs `meshc` in the scratch directory with the operator token set.
    pub fn meshc(&self, args: &[&str]) -> Output {
        self.meshc_with_token(args, Some(OPERATOR_TOKEN))
    }

    /// Runs `meshc` with `MESH_CONTROL_TOKEN` = `token` (unset when `None`).
    pub fn meshc_with_token(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut command = Command::new(binary("meshc"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        match token {
            Some(token) => command.env("MESH_CONTROL_TOKEN", token),
            None => command.env_remove("MESH_CONTROL_TOKEN"),
        };
        command
            .output()
            .unwrap_or_else(|e| panic!("cannot run meshc: {e}"))
    }

    /// `meshc token create SERVICE`: a join token.
    pub fn create_token(&self, service: &str) -> String {
        let out = self.meshc(&["token", "create", service, "--control", &self.url()]);
        assert!(
            out.status.success(),
            "meshc token create {service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `meshc token create SERVICE --format json` with `extra` arguments (`--ttl`,
    /// `--max-uses`): the secret and the token's public id.
    pub fn create_token_with(&self, service: &str, extra: &[&str]) -> (String, String) {
        let url = self.url();
        let mut args = vec![
            "token",
            "create",
            service,
            "--format",
            "json",
            "--control",
            &url,
        ];
        args.extend_from_slice(extra);
        let out = self.meshc(&args);
        assert!(
            out.status.success(),
            "meshc token create {service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("meshc token create --format json: {e}"));
        let field = |name: &str| {
            v[name]
                .as_str()
                .unwrap_or_else(|| panic!("no `{name}` in {v}"))
                .to_string()
        };
        (field("token"), field("id"))
    }

    /// Starts a sidecar for `service` (its application at `app`) that bootstraps with
    /// `token` and takes its tables from this control plane.
    pub fn sidecar(&self, service: &str, app: SocketAddr, token: &str) -> Sidecar {
        self.sidecar_of(self.proxies, service, app, token)
    }

    /// [`ControlPlane::sidecar`] told that its control plane is at `control` (another
    /// server, such as an impostor), with this control plane's bundle.
    pub fn sidecar_of(
        &self,
        control: SocketAddr,
        service: &str,
        app: SocketAddr,
        token: &str,
    ) -> Sidecar {
        let n = self
            .sidecars
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{service}-{n}");
        let token_file = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&token_file, token).unwrap_or_else(|e| panic!("write the token: {e}"));
        let config = self.dir.path().join(format!("{name}.toml"));
        let text = format!(
            "service = \"{service}\"\ncontrol = \"{control}\"\ndrain_ms = 2000\nworkers = 2\n\
             addresses_file = \"{name}.addresses\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\n\
             [outbound]\nlisten = \"127.0.0.1:0\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [identity]\ntoken_file = \"{name}.token\"\nbundle = \"ca/root.pem\"\n\
             dir = \"{name}.state\"\npoll_ms = 100\n",
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let log = self.dir.path().join(format!("{name}.log"));
        let stderr =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = Command::new(binary("mesh-proxy"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start mesh-proxy: {e}"));
        Sidecar {
            service: service.to_string(),
            addresses_file: self.dir.path().join(format!("{name}.addresses")),
            bound: std::sync::OnceLock::new(),
            log,
            state: self.dir.path().join(format!("{name}.state")),
            child: Mutex::new(child),
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        self.kill();
        if panicking {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the control plane's log ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A sidecar run against the control plane; killed on drop.
#[derive(Debug)]
pub struct Sidecar {
    /// Its service.
    pub service: String,
    /// Where it reports its listeners' addresses once bound (after the bootstrap).
    addresses_file: PathBuf,
    /// Those addresses (inbound, outbound, admin), once read.
    bound: std::sync::OnceLock<[SocketAddr; 3]>,
    /// Its stderr.
    pub log: PathBuf,
    /// Its state directory (bootstrapped credentials).
    pub state: PathBuf,
    child: Mutex<Child>,
}

impl Sidecar {
    /// Its listeners' addresses (inbound, outbound, admin), once it has bound them: a
    /// sidecar binds only after its bootstrap succeeded.
    fn bound(&self) -> Option<[SocketAddr; 3]> {
        if let Some(bound) = self.bound.get() {
            return Some(*bound);
        }
        let a = crate::addresses::read(&self.addresses_file, &["inbound", "outbound", "admin"])?;
        Some(*self.bound.get_or_init(|| [a[0], a[1], a[2]]))
    }

    fn bound_or_panic(&self) -> [SocketAddr; 3] {
        self.bound().unwrap_or_else(|| {
            panic!(
                "the sidecar of {} has not bound its listeners (wait_ready first):\n{}",
                self.service,
                self.log()
            )
        })
    }

    /// Where other sidecars reach it.
    pub fn inbound(&self) -> SocketAddr {
        self.bound_or_panic()[0]
    }

    /// Where its application sends calls.
    pub fn outbound(&self) -> SocketAddr {
        self.bound_or_panic()[1]
    }

    /// Its admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.bound_or_panic()[2]
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on its admin listener; `None` when nothing answers.
    pub async fn admin_get(&self, path: &str) -> Option<Reply> {
        let admin = self.bound()?[2];
        let mut connection = tokio::time::timeout(Duration::from_secs(1), H1::connect(admin))
            .await
            .ok()?
            .ok()?;
        let request = h1_request(http::Method::GET, "admin", path)
            .body(crate::body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::time::timeout(Duration::from_secs(2), connection.fetch(request))
            .await
            .ok()
    }

    /// Whether `/ready` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        self.admin_get("/ready")
            .await
            .is_some_and(|r| r.status == 200)
    }

    /// Waits until `/ready` answers 200; fails the test with the log if it never does.
    pub async fn wait_ready(&self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                panic!(
                    "the sidecar of {} exited ({status}):\n{}",
                    self.service,
                    self.log()
                );
            }
            if self.is_ready().await {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the sidecar of {} was not ready within 30s:\n{}",
                self.service,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The checksum of the table it runs (`/config`), if any.
    pub async fn checksum(&self) -> Option<String> {
        let reply = self.admin_get("/config").await?;
        reply.json()["checksum"].as_str().map(str::to_string)
    }

    /// Its `/tls` page: identity and certificate serial.
    pub async fn tls(&self) -> serde_json::Value {
        self.admin_get("/tls")
            .await
            .map(|r| r.json())
            .unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- last lines of the {} sidecar's log ---", self.service);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// `GET path` for the service `web` through a sidecar's outbound listener, within 5 s;
/// `None` on a transport error.
pub async fn get_web(outbound: SocketAddr, path: &str) -> Option<Reply> {
    let mut connection = H1::connect(outbound).await.ok()?;
    let request = h1_request(http::Method::GET, "web", path)
        .body(crate::body::empty())
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), connection.send(request))
        .await
        .ok()?
        .ok()?;
    Reply::read(response).await.ok()
}

/// A TLS client connection to an operator API whose certificate chains to `roots` (PEM)
/// and names `ip`.
pub async fn tls_to_api(
    tcp: tokio::net::TcpStream,
    roots: &Path,
    ip: std::net::IpAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(roots)?;
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        store
            .add(cert.map_err(std::io::Error::other)?)
            .map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(store)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp)
        .await
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! The `Mesh` fixture: renders a policy template with free loopback ports, compiles it
//! with `meshc`, writes one config per sidecar, starts the real `mesh-proxy` processes
//! (killed on drop) and waits until they are ready.
//!
//! In a policy template, `{{name}}` stands for `127.0.0.1:PORT`: the inbound address of
//! the sidecar of service `name` when the mesh has one, otherwise a free port that nothing
//! listens on (an endpoint that is down).
//!
//! Sidecars run with real certificates: the fixture makes a CA per mesh (`meshc ca init`)
//! in the policy's trust domain and issues each sidecar's (`meshc ca issue`); a test may
//! issue more ([`Mesh::issue`]) and speak mTLS to an inbound listener itself
//! ([`Mesh::mtls_client`]). Only a mesh built with [`MeshBuilder::insecure_plaintext`] runs
//! without (for test servers that stand in for sidecars and speak h2c).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::client::{get, Reply};
use crate::{binary, meshc};

/// How long a proxy may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// What a mesh is made of, before it starts.
#[derive(Debug)]
pub struct MeshBuilder {
    policy: String,
    proxies: Vec<(String, SocketAddr)>,
    table_poll_ms: u64,
    drain_ms: u64,
    with_table: bool,
    extra_config: String,
    /// Keys added to every sidecar's `[outbound]` section.
    outbound_config: String,
    insecure_plaintext: bool,
    identity_poll_ms: u64,
    files: Vec<(String, Vec<u8>)>,
}

impl MeshBuilder {
    /// Writes `bytes` as `name` in the mesh's directory before the policy compiles: where
    /// `meshc` (beside the policy) and the sidecars (beside the table) find filter modules.
    pub fn file(mut self, name: &str, bytes: Vec<u8>) -> MeshBuilder {
        self.files.push((name.to_string(), bytes));
        self
    }

    /// Adds the sidecar of `service`, whose application listens on `app`.
    pub fn proxy(mut self, service: &str, app: SocketAddr) -> MeshBuilder {
        self.proxies.push((service.to_string(), app));
        self
    }

    /// Sets every sidecar's `table_poll_ms` (default 20).
    pub fn table_poll_ms(mut self, ms: u64) -> MeshBuilder {
        self.table_poll_ms = ms;
        self
    }

    /// Sets every sidecar's `drain_ms` (default 3,000).
    pub fn drain_ms(mut self, ms: u64) -> MeshBuilder {
        self.drain_ms = ms;
        self
    }

    /// Appends `toml` (whole sections, such as `[discovery]`) to every sidecar's config.
    pub fn extra_config(mut self, toml: &str) -> MeshBuilder {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Adds `key = value` lines to every sidecar's `[outbound]` section.
    pub fn outbound_config(mut self, toml: &str) -> MeshBuilder {
        self.outbound_config.push_str(toml);
        self.outbound_config.push('\n');
        self
    }

    /// Runs every sidecar with `[identity] insecure_plaintext = true`: no mTLS, for meshes
    /// whose tables list test servers (speaking h2c) as a service's endpoints. Inbound
    /// callers are then plaintext callers (the principal `anyone`).
    pub fn insecure_plaintext(mut self) -> MeshBuilder {
        self.insecure_plaintext = true;
        self
    }

    /// Sets every sidecar's `[identity] poll_ms` (default 100).
    pub fn identity_poll_ms(mut self, ms: u64) -> MeshBuilder {
        self.identity_poll_ms = ms;
        self
    }

    /// Starts the sidecars before the table file exists (they are not ready then).
    pub fn without_table(mut self) -> MeshBuilder {
        self.with_table = false;
        self
    }

    /// Starts every sidecar on ports of its own choosing (port 0, read back from its
    /// `addresses_file`), then compiles the policy with their addresses and, unless
    /// [`MeshBuilder::without_table`], installs the table and waits until each is ready.
    /// No port is picked by the test and released for a process to take: nothing races.
    pub async fn start(self) -> Mesh {
        let proxy_binary = binary("mesh-proxy");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let table = dir.path().join("mesh.table");
        let mut mesh = Mesh {
            dir,
            table,
            addresses: BTreeMap::new(),
            proxies: Vec::new(),
            compiled: AtomicUsize::new(0),
            initial: Vec::new(),
            trust_domain: String::new(),
            down: Vec::new(),
        };
        for (name, bytes) in &self.files {
            let path = mesh.dir.path().join(name);
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        // Certificates come before the sidecars and addresses after them: the trust domain
        // is read from a compile with stand-in addresses.
        mesh.trust_domain = mesh.trust_domain_of(&self.policy);
        if !self.insecure_plaintext {
            mesh.init_ca();
        }
        let mut starting = Vec::new();
        for (service, app) in &self.proxies {
            let identity = if self.insecure_plaintext {
                "[identity]\ninsecure_plaintext = true\n".to_string()
            } else {
                mesh.issue(service);
                // Relative to the config file's directory, as operators write them.
                format!(
                    "[identity]\ncert = \"certs/{service}/cert.pem\"\nkey = \"certs/{service}/key.pem\"\n\
                     bundle = \"certs/{service}/bundle.pem\"\npoll_ms = {}\n",
                    self.identity_poll_ms
                )
            };
            let config = mesh.dir.path().join(format!("{service}.toml"));
            let addresses_file = format!("{service}.addresses");
            let text = format!(
                "service = \"{service}\"\ntable = {table:?}\ntable_poll_ms = {poll}\ndrain_ms = {drain}\nworkers = 2\n\
                 addresses_file = \"{addresses_file}\"\n\
                 [inbound]\nlisten = \"127.0.0.1:0\"\napp = \"{app}\"\n\
                 [outbound]\nlisten = \"127.0.0.1:0\"\n{outbound}\
                 [admin]\nlisten = \"127.0.0.1:0\"\n{identity}",
                table = mesh.table.display().to_string(),
                poll = self.table_poll_ms,
                drain = self.drain_ms,
                outbound = self.outbound_config,
            ) + &self.extra_config;
            std::fs::write(&config, text)
                .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
            let log = mesh.dir.path().join(format!("{service}.log"));
            let mut child = spawn_proxy(&proxy_binary, &config, &log);
            let bound =
                wait_addresses(&mut child, &mesh.dir.path().join(&addresses_file), &log).await;
            starting.push((service.clone(), bound, log, child));
        }
        for (service, bound, log, child) in starting {
            mesh.addresses.insert(service.clone(), bound.inbound);
            mesh.proxies.push(Proxy {
                service,
                inbound: bound.inbound,
                outbound: bound.outbound,
                admin: bound.admin,
                log,
                child: Mutex::new(child),
            });
        }
        // A placeholder without a sidecar is an endpoint that is down: a port bound (so no
        // one else gets it) but not listening (so connections are refused).
        for name in placeholders(&self.policy) {
            if !mesh.addresses.contains_key(&name) {
                let (socket, addr) = down_endpoint();
                mesh.down.push(socket);
                mesh.addresses.insert(name, addr);
            }
        }
        mesh.initial = mesh.compile(&self.policy);
        if self.with_table {
            mesh.install_table(&mesh.initial);
        }
        let services: Vec<String> = mesh.proxies.iter().map(|p| p.service.clone()).collect();
        for service in services {
            if self.with_table {
                mesh.wait_ready(&service).await;
            } else {
                mesh.wait_live(&service).await;
            }
        }
        mesh
    }
}

/// The addresses a starting sidecar bound, read from its `addresses_file` (the process
/// writes it whole once every listener is bound).
async fn wait_addresses(child: &mut Child, file: &Path, log: &Path) -> Bound {
    let keys = ["inbound", "outbound", "admin"];
    match crate::addresses::wait(file, &keys, child, READY_LIMIT).await {
        Some(a) => Bound {
            inbound: a[0],
            outbound: a[1],
            admin: a[2],
        },
        None => panic!(
            "mesh-proxy did not report its addresses within {READY_LIMIT:?} (exited: {:?}):\n{}",
            child.try_wait().ok().flatten(),
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

/// Where a sidecar's listeners are bound.
#[derive(Debug, Clone, Copy)]
struct Bound {
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

/// A loopback port that refuses connections and that no other process can take while the
/// returned socket lives: bound, never listening.
pub fn down_endpoint() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .unwrap_or_else(|e| panic!("socket: {e}"));
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    socket
        .bind(&any_port.into())
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or_else(|| panic!("a bound socket has an address"));
    (socket, addr)
}

fn spawn_proxy(binary: &Path, config: &Path, log: &Path) -> Child {
    let stderr =
        std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

/// The `{{name}}` placeholders of a template, in order of first appearance.
fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + 2 + len].trim().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &rest[start + 2 + len + 2..];
    }
    names
}

/// One running sidecar.
#[derive(Debug)]
struct Proxy {
    service: String,
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    child: Mutex<Child>,
}

/// Running sidecars sharing one table file; every process is killed on drop.
#[derive(Debug)]
pub struct Mesh {
    dir: tempfile::TempDir,
    table: PathBuf,
    addresses: BTreeMap<String, SocketAddr>,
    proxies: Vec<Proxy>,
    compiled: AtomicUsize,
    initial: Vec<u8>,
    trust_domain: String,
    /// The ports of placeholders without a sidecar, held so they stay refused.
    down: Vec<socket2::Socket>,
}

impl Mesh {
    /// The two-service mesh many tests use: sidecars for `client` and `web`, each in front
    /// of a test backend of that name, under `policy_template`; returns the backends too
    /// (they stop when dropped).
    pub async fn client_and_web(
        policy_template: &str,
    ) -> (Mesh, crate::backend::Backend, crate::backend::Backend) {
        let web = crate::backend::Backend::start("web").await;
        let (mesh, client_app) = Mesh::client_and_app(policy_template, web.addr()).await;
        (mesh, client_app, web)
    }

    /// The same two-service mesh with `web`'s sidecar in front of an application of the
    /// test's own at `web_app`; returns the client's test backend too.
    pub async fn client_and_app(
        policy_template: &str,
        web_app: SocketAddr,
    ) -> (Mesh, crate::backend::Backend) {
        let client_app = crate::backend::Backend::start("client").await;
        let mesh = Mesh::builder(policy_template)
            .proxy("client", client_app.addr())
            .proxy("web", web_app)
            .start()
            .await;
        (mesh, client_app)
    }

    /// A mesh whose policy is `policy_template` (see the module's doc for `{{name}}`).
    pub fn builder(policy_template: &str) -> MeshBuilder {
        MeshBuilder {
            policy: policy_template.to_string(),
            proxies: Vec::new(),
            table_poll_ms: 20,
            drain_ms: 3_000,
            with_table: true,
            extra_config: String::new(),
            outbound_config: String::new(),
            insecure_plaintext: false,
            identity_poll_ms: 100,
            files: Vec::new(),
        }
    }

    /// The mesh's CA directory (`meshc ca init`).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// The policy's trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    fn init_ca(&self) {
        let ca = self.ca_dir();
        let out = meshc(
            self.dir.path(),
            &[
                "ca",
                "init",
                &ca.display().to_string(),
                "--trust-domain",
                &self.trust_domain,
            ],
        );
        assert!(
            out.status.success(),
            "meshc ca init failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The directory of `name`'s credentials (`cert.pem`, `key.pem`, `bundle.pem`).
    pub fn certs(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    /// Issues (again) the certificate of identity `spiffe://<trust domain>/<name>` into
    /// [`Mesh::certs`]`(name)` with `meshc ca issue`, atomically replacing what was there.
    pub fn issue(&self, name: &str) -> PathBuf {
        let out_dir = self.certs(name);
        let out = meshc(
            self.dir.path(),
            &[
                "ca",
                "issue",
                name,
                "--ca",
                &self.ca_dir().display().to_string(),
                "--out",
                &out_dir.display().to_string(),
            ],
        );
        assert!(
            out.status.success(),
            "meshc ca issue {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out_dir
    }

    /// The credentials of `name` (issued first if they are not yet).
    pub fn identity(&self, name: &str) -> crate::tls::Credentials {
        let dir = self.certs(name);
        if !dir.join("cert.pem").exists() {
            self.issue(name);
        }
        crate::tls::Credentials::load(&dir)
    }

    /// A TLS client config presenting `from`'s certificate that accepts only the sidecar
    /// of `to`, offering `alpn`: what a sidecar of `from` does.
    pub fn mtls_client(
        &self,
        from: &str,
        to: &str,
        alpn: mesh_identity::tls::Alpn,
    ) -> std::sync::Arc<rustls::ClientConfig> {
        self.identity(from)
            .client_config(&format!("spiffe://{}/{to}", self.trust_domain), alpn)
    }

    fn proxy(&self, service: &str) -> &Proxy {
        self.proxies
            .iter()
            .find(|p| p.service == service)
            .unwrap_or_else(|| panic!("the mesh has no sidecar for `{service}`"))
    }

    /// Where the application of `service` sends its calls.
    pub fn outbound(&self, service: &str) -> SocketAddr {
        self.proxy(service).outbound
    }

    /// Where other sidecars reach `service`.
    pub fn inbound(&self, service: &str) -> SocketAddr {
        self.proxy(service).inbound
    }

    /// The admin listener of `service`'s sidecar.
    pub fn admin(&self, service: &str) -> SocketAddr {
        self.proxy(service).admin
    }

    /// The address a `{{name}}` placeholder stands for.
    pub fn address(&self, name: &str) -> SocketAddr {
        *self
            .addresses
            .get(name)
            .unwrap_or_else(|| panic!("no placeholder `{name}` in the policy"))
    }

    /// The process id of `service`'s sidecar.
    pub fn pid(&self, service: &str) -> u32 {
        self.proxy(service)
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .id()
    }

    /// The scratch directory holding the table, configs and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The table file every sidecar watches.
    pub fn table_path(&self) -> &Path {
        &self.table
    }

    /// The compiled form of the policy the mesh started with.
    pub fn initial_table(&self) -> &[u8] {
        &self.initial
    }

    /// `template` with its placeholders replaced by this mesh's addresses.
    pub fn render(&self, template: &str) -> String {
        let mut text = template.to_string();
        for (name, addr) in &self.addresses {
            text = text.replace(&format!("{{{{{name}}}}}"), &addr.to_string());
        }
        text
    }

    /// The trust domain `template` compiles to, with every placeholder standing for a
    /// stand-in address (the addresses are not known before the sidecars start).
    fn trust_domain_of(&self, template: &str) -> String {
        let mut text = template.to_string();
        for name in placeholders(template) {
            text = text.replace(&format!("{{{{{name}}}}}"), "127.0.0.1:9");
        }
        std::fs::write(self.dir.path().join("stand-in.mesh"), &text)
            .unwrap_or_else(|e| panic!("write stand-in.mesh: {e}"));
        let out = meshc(
            self.dir.path(),
            &["compile", "stand-in.mesh", "-o", "stand-in.table"],
        );
        assert!(
            out.status.success(),
            "meshc compile failed:\n{}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(self.dir.path().join("stand-in.table"))
            .unwrap_or_else(|e| panic!("read stand-in.table: {e}"));
        mesh_table::decode(&bytes)
            .map(|t| t.mesh.trust_domain)
            .unwrap_or_else(|e| panic!("decode the compiled table: {e}"))
    }

    /// Compiles `template` (rendered) with `meshc compile` and returns the table's bytes.
    pub fn compile(&self, template: &str) -> Vec<u8> {
        let n = self.compiled.fetch_add(1, Ordering::Relaxed);
        let policy = format!("policy-{n}.mesh");
        let table = format!("table-{n}.bin");
        std::fs::write(self.dir.path().join(&policy), self.render(template))
            .unwrap_or_else(|e| panic!("write {policy}: {e}"));
        let out = meshc(self.dir.path(), &["compile", &policy, "-o", &table]);
        assert!(
            out.status.success(),
            "meshc compile {policy} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.render(template)
        );
        std::fs::read(self.dir.path().join(&table)).unwrap_or_else(|e| panic!("read {table}: {e}"))
    }

    /// Replaces the table file atomically (write aside, then rename over it).
    pub fn install_table(&self, bytes: &[u8]) {
        let aside = self.dir.path().join("mesh.table.tmp");
        std::fs::write(&aside, bytes).unwrap_or_else(|e| panic!("write {}: {e}", aside.display()));
        std::fs::rename(&aside, &self.table)
            .unwrap_or_else(|e| panic!("rename onto {}: {e}", self.table.display()));
    }

    /// Replaces the table file atomically with one whose modification time is `modified`,
    /// as `cp -p`, `rsync -t`, `tar` and reproducible builds (fixed mtimes) leave it.
    pub fn install_table_modified(&self, bytes: &[u8], modified: std::time::SystemTime) {
        let aside = self.dir.path().join("mesh.table.tmp");
        std::fs::write(&aside, bytes).unwrap_or_else(|e| panic!("write {}: {e}", aside.display()));
        std::fs::File::options()
            .write(true)
            .open(&aside)
            .and_then(|f| f.set_modified(modified))
            .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", aside.display()));
        std::fs::rename(&aside, &self.table)
            .unwrap_or_else(|e| panic!("rename onto {}: {e}", self.table.display()));
    }

    /// Sends one request to `destination` through `caller`'s outbound listener, whatever
    /// its answer: a sidecar starts a destination's cluster (endpoints, health checks) at
    /// its first request, so a test that watches health checks starts them this way.
    pub async fn first_request(&self, caller: &str, destination: &str) -> Reply {
        get(self.outbound(caller), destination, "/").await
    }

    /// `GET path` on the admin listener of `service`'s sidecar.
    pub async fn admin_get(&self, service: &str, path: &str) -> Reply {
        get(self.admin(service), "admin", path).await
    }

    /// The sidecar's `/config` as JSON.
    pub async fn config(&self, service: &str) -> serde_json::Value {
        let reply = self.admin_get(service, "/config").await;
        assert_eq!(reply.status, 200, "/config of {service}: {}", reply.text());
        reply.json()
    }

    /// Waits until `/ready` answers 200; fails the test with the log if it never does.
    pub async fn wait_ready(&self, service: &str) {
        self.wait_admin(service, "/ready").await;
    }

    async fn wait_live(&self, service: &str) {
        self.wait_admin(service, "/live").await;
    }

    async fn wait_admin(&self, service: &str, path: &str) {
        let started = Instant::now();
        let admin = self.admin(service);
        loop {
            if let Some(status) = self.try_exit(service) {
                panic!(
                    "the sidecar of {service} exited ({status}):\n{}",
                    self.log(service)
                );
            }
            if let Ok(Ok(mut connection)) =
                tokio::time::timeout(Duration::from_secs(1), crate::client::H1::connect(admin))
                    .await
            {
                let request = crate::client::h1_request(http::Method::GET, "admin", path)
                    .body(crate::body::empty())
                    .unwrap_or_else(|e| panic!("{e}"));
                if let Ok(Ok(response)) =
                    tokio::time::timeout(Duration::from_secs(2), connection.send(request)).await
                {
                    if response.status() == 200 {
                        return;
                    }
                }
            }
            assert!(
                started.elapsed() < READY_LIMIT,
                "the sidecar of {service} did not answer 200 on {path} within {READY_LIMIT:?}:\n{}",
                self.log(service)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends signal `name` (`TERM`, `HUP`, ...) to `service`'s sidecar.
    pub fn signal(&self, service: &str, name: &str) {
        let pid = self.pid(service);
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -{name} {pid}: {e}"));
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// The exit status of `service`'s sidecar if it has exited.
    pub fn try_exit(&self, service: &str) -> Option<ExitStatus> {
        self.proxy(service)
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .try_wait()
            .ok()
            .flatten()
    }

    /// Waits at most `limit` for `service`'s sidecar to exit.
    pub async fn wait_exit(&self, service: &str, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit(service) {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The resident set size of `service`'s sidecar in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self, service: &str) -> Option<u64> {
        rss_kib(self.pid(service))
    }

    /// What `service`'s sidecar has logged so far.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(&self.proxy(service).log).unwrap_or_default()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for proxy in &self.proxies {
            let mut child = proxy
                .child
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = child.kill();
            let _ = child.wait();
            if panicking {
                let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- last lines of the {} sidecar's log ---", proxy.service);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// The resident set size of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `mesh-proxy --config FILE` with `config` as the file's text, for at most `limit`:
/// the exit status (`None` when it was still running and got killed) and what it wrote on
/// stderr.
pub fn run_proxy(config: &str, limit: Duration) -> (Option<ExitStatus>, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let log = dir.path().join("stderr");
    let mut child = spawn_proxy(&binary("mesh-proxy"), &path, &log);
    let started = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// The SHA-256 (hex) a compiled table carries in its header (bytes 16..48, after the magic,
/// format version and payload length): what a sidecar's `/config` reports as `checksum`.
pub fn table_checksum(table: &[u8]) -> String {
    table
        .get(16..48)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

//! gRPC C-core (PyPI `grpcio`) as the outside client and server: the interop
//! `grpc.testing.TestService` of `tests/interop/grpc/` ([`Server`], killed on drop, and
//! [`run_case`] for the client), with stubs generated once per test process by
//! `python3 -m grpc_tools.protoc` from Debian's `grpc-proto` protos ([`stubs`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace_root;

/// The grpcio release the scripts are written against (what `.ci/run` installs).
pub const GRPCIO: &str = "1.85.4";

/// Where Debian's `grpc-proto` package puts the protos.
const PROTO_ROOT: &str = "/usr/share/grpc-proto";

/// The protos the stubs are generated from, relative to [`PROTO_ROOT`].
const PROTOS: [&str; 4] = [
    "grpc/testing/test.proto",
    "grpc/testing/messages.proto",
    "grpc/testing/empty.proto",
    "grpc/health/v1/health.proto",
];

/// How long the server may take to say where it listens.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long one client case may run (its own calls are bounded at 20 s each).
const CASE_LIMIT: Duration = Duration::from_secs(90);

fn scripts() -> PathBuf {
    workspace_root().join("tests/interop/grpc")
}

/// The directory of the generated stubs (`grpc/testing/*_pb2*.py`, `grpc/health/v1/...`):
/// generated on first use, kept for the test process. Fails the test, naming what is
/// missing and how CI installs it, when python3, grpcio, grpcio-tools or the protos are not
/// there.
pub fn stubs() -> &'static Path {
    static STUBS: OnceLock<tempfile::TempDir> = OnceLock::new();
    STUBS.get_or_init(generate).path()
}

fn generate() -> tempfile::TempDir {
    let check = Command::new("python3")
        .args([
            "-c",
            "import grpc, grpc_tools; print(grpc.__version__)",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is required for the gRPC interop tests and cannot run ({e}); CI installs CPython 3.11 with the OS")
        });
    assert!(
        check.status.success(),
        "the gRPC interop tests need the Python packages grpcio=={GRPCIO} and grpcio-tools=={GRPCIO} \
         (`python3 -m pip install -r .ci/requirements.txt`, as .ci/run does):\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let version = String::from_utf8_lossy(&check.stdout).trim().to_string();
    assert_eq!(
        version, GRPCIO,
        "grpcio {version} is installed; the interop tests pin {GRPCIO} (.ci/requirements.txt)"
    );
    for proto in PROTOS {
        let path = Path::new(PROTO_ROOT).join(proto);
        assert!(
            path.exists(),
            "{} is missing: the gRPC interop tests need Debian's `grpc-proto` package \
             (`apt-get install grpc-proto`, as .ci/run does)",
            path.display()
        );
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let out = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", PROTO_ROOT])
        .arg(format!("--python_out={}", dir.path().display()))
        .arg(format!("--grpc_python_out={}", dir.path().display()))
        .args(PROTOS)
        .output()
        .unwrap_or_else(|e| panic!("python3 -m grpc_tools.protoc: {e}"));
    assert!(
        out.status.success(),
        "python3 -m grpc_tools.protoc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// A running interop server (`server.py`): a TestService and a Health service on a port of
/// its own choosing; every call it takes is recorded in its event file.
#[derive(Debug)]
pub struct Server {
    name: String,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts server `name` whose health service answers `health` (`SERVING` or
    /// `NOT_SERVING`), and waits until it listens.
    pub fn start(name: &str, health: &str) -> Server {
        let stubs = stubs();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let events = dir.path().join("events.jsonl");
        std::fs::write(&events, "").unwrap_or_else(|e| panic!("create the event file: {e}"));
        let stderr = std::fs::File::create(dir.path().join("stderr"))
            .unwrap_or_else(|e| panic!("create the server's log: {e}"));
        let mut child = Command::new("python3")
            .arg(scripts().join("server.py"))
            .args(["--name", name, "--health", health, "--events"])
            .arg(&events)
            .env("INTEROP_GRPC_STUBS", stubs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start server.py: {e}"));
        // The port comes on the first line of stdout; read it on a thread so a server that
        // hangs cannot hang the test.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        let port: Option<u16> = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok());
        let mut server = Server {
            name: name.to_string(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        match port {
            Some(port) => server.addr.set_port(port),
            None => panic!(
                "the gRPC interop server {name} did not start within {START_LIMIT:?} (said {line:?}):\n{}",
                server.log()
            ),
        }
        server
    }

    /// Where it listens (h2c).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its event file.
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// What it recorded so far, oldest first.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events of kind `event` for calls of `case`.
    pub fn events_of(&self, event: &str, case: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event && e["case"] == case)
            .collect()
    }

    /// Waits up to `limit` for an event of kind `event` for `case`; fails the test with
    /// what the server did record if none comes.
    pub async fn wait_event(&self, event: &str, case: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            if let Some(found) = self.events_of(event, case).pop() {
                return found;
            }
            assert!(
                started.elapsed() < limit,
                "server {} recorded no `{event}` for {case} within {limit:?}; it recorded:\n{}\n{}",
                self.name,
                std::fs::read_to_string(self.events_path()).unwrap_or_default(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `limit` for the call of `case` to be cut short (`cancelled` or
    /// `deadline`) and returns that event.
    pub async fn wait_ended(&self, case: &str, limit: Duration) -> Value {
        let started = Instant::now();
        loop {
            let ended = self.events().into_iter().find(|e| {
                e["case"] == case && (e["event"] == "cancelled" || e["event"] == "deadline")
            });
            if let Some(event) = ended {
                return event;
            }
            assert!(
                started.elapsed() < limit,
                "server {} never saw the call of {case} cut short within {limit:?}:\n{}",
                self.name,
                std::fs::read_to_string(self.events_path()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client case came to: its JSON line (`case`, `ok`, `detail`, and what the case
/// reports), or why there is none.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The client's report.
    pub report: Value,
    /// What the client wrote on stderr.
    pub stderr: String,
}

impl CaseResult {
    /// Whether the case passed.
    pub fn ok(&self) -> bool {
        self.report["ok"] == true
    }
}

/// Runs `client.py --case CASE` against `target` (an outbound listener) with `:authority`
/// `authority`, the server's event file beside it, plus `extra` arguments.
pub async fn run_case(
    target: SocketAddr,
    authority: &str,
    case: &str,
    server: &Server,
    extra: &[&str],
) -> CaseResult {
    let mut command = Command::new("python3");
    command
        .arg(scripts().join("client.py"))
        .args(["--target", &target.to_string(), "--authority", authority])
        .args(["--case", case, "--events"])
        .arg(server.events_path())
        .args(extra)
        .env("INTEROP_GRPC_STUBS", stubs())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let case = case.to_string();
    tokio::task::spawn_blocking(move || {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start client.py: {e}"));
        let id = child.id();
        // A bounded run: the client is killed if it outlives CASE_LIMIT.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let output = match rx.recv_timeout(CASE_LIMIT) {
            Ok(output) => output.unwrap_or_else(|e| panic!("client.py {case}: {e}")),
            Err(_) => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(id.to_string())
                    .status();
                panic!("the gRPC interop client did not finish case {case} within {CASE_LIMIT:?}");
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let report = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "client.py {case} printed no result ({}):\n{stdout}\n{stderr}",
                    output.status
                )
            });
        CaseResult { report, stderr }
    })
    .await
    .unwrap_or_else(|e| panic!("the client task: {e}"))
}

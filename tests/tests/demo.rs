//! The demo, `bash examples/demo.sh` (the README's first command), end to end in both modes,
//! with the test build's binaries and filter modules: it exits 0, says what it showed, and
//! leaves no process behind.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mesh_tests::{binary, filters, workspace_root};

/// A run takes well under a minute here; this leaves room for a loaded machine.
const LIMIT: Duration = Duration::from_secs(300);

/// One demo at a time: the file mode's ports are fixed (the policy names them), and two
/// demos at once would share CI's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the demo with `args`; its output (stdout and stderr) once it exited 0.
fn demo(args: &[&str]) -> String {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let proxy = binary("mesh-proxy");
    for name in ["meshc", "mesh-control", "mesh-demo-app"] {
        binary(name);
    }
    let bin_dir = proxy.parent().expect("the binaries' directory");
    let scratch = tempfile::tempdir().expect("tempdir");
    let log_path = scratch.path().join("demo.log");
    let log = std::fs::File::create(&log_path).expect("create the demo's log");
    let mut child = Command::new("bash")
        .arg("examples/demo.sh")
        .args(args)
        .current_dir(workspace_root())
        .env("MESH_BIN_DIR", bin_dir)
        .env("MESH_FILTER_DIR", filters::wasm_dir())
        .env("MESH_DEMO_DIR", scratch.path().join("run"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone the log's handle"))
        .stderr(log)
        // Its own process group: a demo that hangs is stopped with everything it started.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    let group = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the demo") {
            break status;
        }
        if started.elapsed() > LIMIT {
            signal_group(group, "TERM");
            std::thread::sleep(Duration::from_secs(3));
            signal_group(group, "KILL");
            let _ = child.wait();
            panic!(
                "`bash examples/demo.sh {}` did not finish within {LIMIT:?}:\n{}",
                args.join(" "),
                output(&log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = output(&log_path);
    let leftovers = group_alive(group);
    signal_group(group, "KILL");
    assert!(
        status.success(),
        "`bash examples/demo.sh {}` failed ({}) after {:.0?}:\n{text}",
        args.join(" "),
        describe(status),
        started.elapsed()
    );
    assert!(
        !leftovers,
        "the demo exited but left processes running:\n{text}"
    );
    eprintln!(
        "examples/demo.sh {} ran {:.1?}",
        args.join(" "),
        started.elapsed()
    );
    text
}

fn output(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read its output: {e})"))
}

fn describe(status: ExitStatus) -> String {
    status
        .code()
        .map_or_else(|| format!("{status}"), |code| format!("exit status {code}"))
}

/// Sends SIGname to every process of the group (an empty group is fine).
fn signal_group(group: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), "--".into(), format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Whether any process of the group is still alive.
fn group_alive(group: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails unless `text` contains each of `lines`.
fn assert_says(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.contains(line),
            "the demo's output lacks `{line}`:\n{text}"
        );
    }
}

#[test]
fn the_file_mode_runs_and_says_what_it_shows() {
    let text = demo(&[]);
    assert_says(
        &text,
        &[
            "the binaries: prebuilt",
            "ok: four sidecars ready",
            "\"x-mesh-route\":\"canary-pin\"",
            "x-mesh-error: no-route",
            "x-mesh-error: unauthorized",
            "x-filter-chain: stamp-v1",
            "ok: the storefront's sidecar loaded v2",
            "failed: 0",
            "ok: no request failed during the swap",
            "x-pw-header: v2",
            "ok: the previous table keeps serving",
            "== done: stopping the mesh",
        ],
    );
}

#[test]
fn the_control_mode_runs_and_says_what_it_shows() {
    let text = demo(&["--control"]);
    assert_says(
        &text,
        &[
            "the binaries: prebuilt",
            "meshc token create frontend",
            "spiffe://demo.local/frontend",
            "PROXIES (4)",
            "x-filter-chain: stamp-v1",
            "4 proxies applied the new tables (ACK)",
            "failed: 0",
            "ok: no request failed during the swap",
            "ok: refused; the mesh keeps serving version 2",
            "== done: stopping the mesh",
        ],
    );
}

#[test]
fn an_unknown_argument_is_refused() {
    let out = Command::new("bash")
        .args(["examples/demo.sh", "--bogus"])
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown argument `--bogus`"),
        "{out:?}"
    );
}

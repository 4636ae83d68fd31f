//! A local `dnsmasq` for the DNS discovery test: A and AAAA records from a hosts file it
//! re-reads on SIGHUP, on a free loopback port.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `dnsmasq` answering A/AAAA records from a hosts file, on a free loopback port; killed
/// on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    hosts: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts `dnsmasq` serving `records` (name, address). Fails the test when dnsmasq is
    /// not installed (`.ci/run` installs `dnsmasq-base`).
    pub async fn start(records: &[(&str, IpAddr)]) -> Dnsmasq {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        // dnsmasq started as root drops to `nobody`, who must still read the file on SIGHUP.
        set_mode(dir.path(), 0o755);
        let hosts = dir.path().join("hosts");
        write_hosts(&hosts, records);
        let log = dir.path().join("dnsmasq.log");
        let binary = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("dnsmasq");
        // A free UDP port may be taken for TCP (dnsmasq needs both): try a few.
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .unwrap_or_else(|e| panic!("a free UDP port: {e}"))
                .port();
            let stderr = std::fs::File::create(&log)
                .unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
            let mut child = Command::new(binary)
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--pid-file=",
                    "--log-facility=-",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--addn-hosts={}", hosts.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start dnsmasq ({e}): install it with `apt-get install -y dnsmasq-base`")
                });
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            // Ready once it accepts TCP on its port; gone if it could not bind.
            let started = Instant::now();
            let ready = loop {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break true;
                }
                if matches!(child.try_wait(), Ok(Some(_)))
                    || started.elapsed() > Duration::from_secs(5)
                {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            if ready {
                return Dnsmasq {
                    child,
                    hosts,
                    addr,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "dnsmasq did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Where it answers.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `records` from now on (rewrites the hosts file and sends SIGHUP).
    pub fn set(&self, records: &[(&str, IpAddr)]) {
        write_hosts(&self.hosts, records);
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -HUP dnsmasq: {e}"));
        assert!(status.success(), "kill -HUP dnsmasq: {status}");
    }

    /// Stops answering (kills the process).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_hosts(path: &std::path::Path, records: &[(&str, IpAddr)]) {
    let text: String = records
        .iter()
        .map(|(name, ip)| format!("{ip} {name}\n"))
        .collect();
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap_or_else(|e| panic!("write {}: {e}", aside.display()));
    set_mode(&aside, 0o644);
    std::fs::rename(&aside, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

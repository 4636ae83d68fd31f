//! Access logs: one JSON object per line, for the requests a service's `observe {
//! access_log json sample P }` samples, written by a thread of its own to stdout or to
//! `[access_log] path`. The request path only formats its line and offers it to a bounded
//! channel: when the writer falls behind, lines are dropped and counted
//! (`mesh_access_log_dropped_total`), never waited for.
//!
//! A plain thread with blocking file writes, not a tokio task: tokio's file I/O hands each
//! write to its blocking pool, a cross-thread round trip per batch on the request path's
//! workers; here the writer wakes every 10 ms and writes whatever queued in one go.

use std::io::Write;
use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Lines waiting for the writer at most.
pub const QUEUE: usize = 4096;

/// How often the writer takes what queued: lines reach the file within this.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// The sending side, shared by every request.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<String>,
    /// Lines dropped because the queue was full.
    pub dropped: Counter,
    /// Lines written.
    pub written: Counter,
}

impl AccessLog {
    /// Starts the writer thread: to `path`, appended, or stdout. It ends when every
    /// sender is dropped.
    pub fn start(path: Option<PathBuf>) -> AccessLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = AccessLog {
            tx,
            dropped: Counter::default(),
            written: Counter::default(),
        };
        let written = log.written.clone();
        if let Err(error) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write(rx, path, &written))
        {
            tracing::error!(%error, "cannot start the access-log writer; lines will be dropped");
        }
        log
    }

    /// Offers one line (without its newline); drops and counts it if the queue is full.
    pub fn offer(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// Whether a request is sampled at `ppm` parts per million.
pub fn sampled(ppm: u32) -> bool {
    ppm > 0 && (ppm >= mesh_table::Ppm::FULL.0 || fastrand::u32(..mesh_table::Ppm::FULL.0) < ppm)
}

fn write(mut rx: mpsc::Receiver<String>, path: Option<PathBuf>, written: &Counter) {
    let out: Box<dyn Write> = match &path {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Box::new(file),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot open the access log; writing it to stdout");
                Box::new(std::io::stdout())
            }
        },
        None => Box::new(std::io::stdout()),
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        // Poll on a timer rather than waiting on the channel: a waiting receiver makes every
        // request's send wake this thread (a system call per line); polled, the request
        // path's `try_send` never wakes anyone and a tick writes hundreds of lines at once.
        std::thread::sleep(FLUSH_EVERY);
        let mut n = 0;
        let closed = loop {
            match rx.try_recv() {
                Ok(line) => {
                    let ok = out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.write_all(b"\n"));
                    match ok {
                        Ok(()) => n += 1,
                        Err(error) => tracing::warn!(%error, "access log write failed"),
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        if n > 0 {
            if let Err(error) = out.flush() {
                tracing::warn!(%error, "access log flush failed");
            }
            written.inc_by(n);
        }
        if closed {
            return;
        }
    }
}

//! Access logs: one JSON object per line, for the requests a service's `observe {
//! access_log json sample P }` samples, written by a thread of its own to stdout or to
//! `[access_log] path`. The request path only formats its line and offers it to a bounded
//! channel: when the writer falls behind, lines are dropped and counted
//! (`mesh_access_log_dropped_total`), never waited for.
//!
//! A plain thread with blocking file writes, not a tokio task: tokio's file I/O hands each
//! write to its blocking pool, a cross-thread round trip per batch on the request path's
//! workers; here the writer batches whatever queued while it wrote and flushes when the
//! queue is empty.

use std::io::Write;
use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Lines waiting for the writer at most.
pub const QUEUE: usize = 4096;

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
    while let Some(line) = rx.blocking_recv() {
        let mut n = 0;
        let mut next = Some(line);
        // Write what has queued meanwhile, then flush once the queue is empty.
        while let Some(line) = next {
            let ok = out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = ok {
                tracing::warn!(%error, "access log write failed");
            } else {
                n += 1;
            }
            next = rx.try_recv().ok();
        }
        if let Err(error) = out.flush() {
            tracing::warn!(%error, "access log flush failed");
        }
        written.inc_by(n);
    }
}

//! Access logs: one JSON object per line, for the requests a service's `observe {
//! access_log json sample P }` samples, written by a background task to stdout or to
//! `[access_log] path`. The request path only formats its line and offers it to a bounded
//! channel: when the writer falls behind, lines are dropped and counted
//! (`mesh_access_log_dropped_total`), never waited for.

use std::path::PathBuf;

use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
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
    /// Starts the writer task (on the current runtime): to `path`, appended, or stdout.
    pub fn start(path: Option<PathBuf>) -> AccessLog {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = AccessLog {
            tx,
            dropped: Counter::default(),
            written: Counter::default(),
        };
        tokio::spawn(write(rx, path, log.written.clone()));
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

async fn write(mut rx: mpsc::Receiver<String>, path: Option<PathBuf>, written: Counter) {
    let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match &path {
        Some(path) => match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
        {
            Ok(file) => Box::new(file),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot open the access log; writing it to stdout");
                Box::new(tokio::io::stdout())
            }
        },
        None => Box::new(tokio::io::stdout()),
    };
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(line) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let mut n = 1;
        // Write what has queued meanwhile in one go.
        while buf.len() < 60 * 1024 {
            let Ok(more) = rx.try_recv() else { break };
            buf.extend_from_slice(more.as_bytes());
            buf.push(b'\n');
            n += 1;
        }
        if let Err(error) = out.write_all(&buf).await {
            tracing::warn!(%error, "access log write failed");
            continue;
        }
        let _ = out.flush().await;
        written.inc_by(n);
    }
}

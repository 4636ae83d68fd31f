//! The subscription: one long-lived HTTP/2 stream (`POST /v1/stream`) that brings tables
//! and takes hello, ACK/NACK, traffic and ping frames. A lost stream is opened again with
//! backoff and jitter; meanwhile the proxy serves with the table it has.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame as BodyFrame;
use mesh_identity::Credentials;
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::frames::{self, Decoder, Frame};
use super::traffic::Summaries;
use super::{client, modules};
use crate::Context;

/// How often health is compared with what the last hello said.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// How often the proxy pings.
const PING_EVERY: Duration = Duration::from_secs(10);

/// No frame from the control plane for this long (three of its pings): the peer is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// What the stream needs, kept across reconnections.
pub(crate) struct Subscriber {
    /// `host:port` of the control plane.
    pub(crate) control: String,
    /// The proxy's shared state (tables, registries, metrics, health).
    pub(crate) ctx: Arc<Context>,
    /// The workload credentials (they follow renewals).
    pub(crate) credentials: Arc<Credentials>,
    /// Where fetched filter modules go (the first) and are looked for.
    pub(crate) module_dirs: Vec<PathBuf>,
}

/// Keeps a stream open until the process ends.
pub(crate) async fn run(subscriber: Subscriber) {
    let mut backoff = Backoff::reconnect();
    let mut summaries = Summaries::new(&subscriber.ctx.metrics.requests);
    loop {
        let error = subscriber.session(&mut backoff, &mut summaries).await;
        let delay = backoff.next_delay();
        tracing::warn!(%error, control = %subscriber.control, retry_in_ms = delay.as_millis() as u64, "control plane stream lost; serving with the current table, reconnecting");
        tokio::time::sleep(delay).await;
    }
}

impl Subscriber {
    /// One stream, from connecting to its loss (the returned reason).
    async fn session(&self, backoff: &mut Backoff, summaries: &mut Summaries) -> String {
        let (tx, rx) = mpsc::channel(64);
        let (sender, response) = match self.open(&tx, rx).await {
            Ok(open) => open,
            Err(error) => return error,
        };
        backoff.reset();
        tracing::info!(control = %self.control, "control plane stream open");
        // Traffic while disconnected is not part of the next window.
        summaries.sample(&self.ctx.metrics.requests);
        match self.serve(&tx, sender, response, summaries).await {
            Err(error) => error,
            Ok(never) => match never {},
        }
    }

    /// Connects, sends the hello and waits for the answer's head.
    async fn open(
        &self,
        tx: &mpsc::Sender<Bytes>,
        rx: mpsc::Receiver<Bytes>,
    ) -> Result<(client::Sender, hyper::Response<hyper::body::Incoming>), String> {
        let expected = self
            .credentials
            .trust_domain()
            .service(client::CONTROL_SERVICE)
            .map_err(|e| e.to_string())?;
        let tls = self
            .credentials
            .client_config(&expected, mesh_identity::tls::Alpn::H2)
            .map_err(|e| e.to_string())?;
        let mut sender = client::connect(&self.control, tls).await?;
        // The hello goes first; the control plane may wait for it before answering.
        let _ = tx.send(frames::encode(frames::HELLO, &self.hello())).await;
        let request = client::request(
            &self.control,
            http::Method::POST,
            "/v1/stream",
            crate::body::boxed(ChannelBody(rx)),
        )?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
            .await
            .map_err(|_| "the control plane did not answer the stream in time".to_string())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "the control plane refused the stream ({status}): {}",
                client::error_text(&body)
            ));
        }
        Ok((sender, response))
    }

    /// Reads frames and sends ours until the stream fails.
    async fn serve(
        &self,
        tx: &mpsc::Sender<Bytes>,
        mut sender: client::Sender,
        response: hyper::Response<hyper::body::Incoming>,
        summaries: &mut Summaries,
    ) -> Result<std::convert::Infallible, String> {
        let mut body = response.into_body();
        let mut decoder = Decoder::default();
        let mut last_heard = Instant::now();
        let mut healthy = self.healthy();
        let mut health = tokio::time::interval(HEALTH_EVERY);
        let mut traffic = tokio::time::interval(Duration::from_secs(super::traffic::WINDOW_S));
        let mut ping = tokio::time::interval(PING_EVERY);
        for ticker in [&mut health, &mut traffic, &mut ping] {
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.reset();
        }
        let send = |frame: Bytes| async move {
            tx.send(frame)
                .await
                .map_err(|_| "the request stream closed".to_string())
        };
        loop {
            tokio::select! {
                next = body.frame() => {
                    let data = match next {
                        None => {
                            decoder.finish().map_err(|e| e.to_string())?;
                            return Err("the control plane ended the stream".into());
                        }
                        Some(Err(error)) => return Err(error.to_string()),
                        Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                    };
                    last_heard = Instant::now();
                    decoder.push(&data);
                    while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                        if let Some(answer) = self.handle(frame, &mut sender).await {
                            send(answer).await?;
                        }
                    }
                }
                _ = health.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return Err(format!("nothing from the control plane for {}s", SILENCE_LIMIT.as_secs()));
                    }
                    let now = self.healthy();
                    if now != healthy {
                        healthy = now;
                        send(frames::encode(frames::HELLO, &self.hello())).await?;
                    }
                }
                _ = traffic.tick() => {
                    let report = summaries.sample(&self.ctx.metrics.requests);
                    let json = serde_json::to_vec(&report).unwrap_or_default();
                    send(frames::encode(frames::TRAFFIC, &json)).await?;
                }
                _ = ping.tick() => send(frames::encode(frames::PROXY_PING, b"")).await?,
            }
        }
    }

    /// A frame from the control plane; the answer to send, if any.
    async fn handle(&self, frame: Frame, sender: &mut client::Sender) -> Option<Bytes> {
        match frame.kind {
            frames::TABLE => Some(self.apply(frame.payload.to_vec(), sender).await),
            frames::PING => None,
            frames::REVOKED => {
                self.revoked(&frame.payload);
                None
            }
            kind => {
                tracing::debug!(kind, "unknown frame from the control plane; ignored");
                None
            }
        }
    }

    /// Fetches the table's missing modules, applies it, and says ACK or NACK.
    async fn apply(&self, bytes: Vec<u8>, sender: &mut client::Sender) -> Bytes {
        let checksum = mesh_table::checksum_hex(&bytes).unwrap_or_default();
        let result = match mesh_table::decode(&bytes) {
            Err(error) => Err(format!("invalid table: {error}")),
            Ok(table) => {
                match modules::ensure(&table, &self.module_dirs, &self.control, sender).await {
                    Err(error) => Err(error),
                    Ok(_) => {
                        crate::table_watch::apply_bytes(
                            &self.ctx.tables,
                            &self.ctx.registries,
                            &self.ctx.service,
                            bytes,
                        )
                        .await
                    }
                }
            }
        };
        match result {
            Ok(applied) => {
                let json = serde_json::json!({ "checksum": applied });
                frames::encode(frames::ACK, json.to_string().as_bytes())
            }
            Err(reason) => {
                tracing::error!(%checksum, %reason, "table refused (NACK); the previous table keeps serving");
                let json = serde_json::json!({ "checksum": checksum, "reason": reason });
                frames::encode(frames::NACK, json.to_string().as_bytes())
            }
        }
    }

    /// Takes the control plane's revocation list: from now on both listeners refuse
    /// handshakes with those certificates. A list that does not parse changes nothing.
    fn revoked(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct List {
            serials: Vec<String>,
        }
        match serde_json::from_slice::<List>(payload) {
            Ok(list) => {
                let count = self.credentials.revoked().replace(list.serials);
                tracing::info!(count, "revocation list from the control plane applied");
            }
            Err(error) => {
                tracing::warn!(%error, "revocation list from the control plane unreadable; the previous one stays");
            }
        }
    }

    /// Ready to take traffic: a table, and not draining.
    fn healthy(&self) -> bool {
        self.ctx.tables.current().is_some() && !self.ctx.draining.load(Ordering::Relaxed)
    }

    fn hello(&self) -> Vec<u8> {
        let json = serde_json::json!({
            "service": self.ctx.service,
            "inbound": self.ctx.inbound_addr.map(|a| a.to_string()),
            "healthy": self.healthy(),
            "applied": self.ctx.tables.current().map(|s| s.checksum.clone()),
        });
        json.to_string().into_bytes()
    }
}

/// The request body: the frames the proxy sends, as they are queued.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(BodyFrame::data(bytes))))
    }
}

//! A 200 MiB body streams through the full hop, both ways, while each sidecar's resident
//! memory (VmRSS, sampled during the transfer) stays under 50 MiB: the proxies stream
//! bodies instead of buffering them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use mesh_tests::backend::Backend;
use mesh_tests::body::{drain, empty, RepeatBody};
use mesh_tests::client::{h1_request, within, Reply, H1};
use mesh_tests::mesh::{rss_kib, Mesh};

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 endpoints ["{{web}}"] }
route big on web { match { path prefix "/" } timeout 10m }
"#;

const SIZE: u64 = 200 * 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 50 * 1024;
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

/// Samples the RSS of `pids` every 20 ms until dropped; `peaks` holds the highest seen.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<u64>, usize)>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            let mut samples = 0;
            while !flag.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(rss_kib(*pid).unwrap_or(0));
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (peaks, samples)
        });
        Sampler { stop, task }
    }

    async fn finish(self) -> (Vec<u64>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        within("sampler", Duration::from_secs(5), self.task)
            .await
            .expect("sampler task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_streams_both_ways_in_bounded_memory() {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .start()
        .await;
    let pids = vec![mesh.pid("client"), mesh.pid("web")];
    let mut conn = H1::open(mesh.outbound("client")).await;

    // Download: the app streams 200 MiB; the client counts it as it arrives.
    let sampler = Sampler::start(pids.clone());
    let started = Instant::now();
    let request = h1_request(Method::GET, "web", &format!("/bytes/{SIZE}"))
        .body(empty())
        .expect("request");
    let (status, received) = within("200 MiB download", TRANSFER_LIMIT, async {
        let response = conn.send(request).await.expect("response");
        let status = response.status();
        let (bytes, _) = drain(response.into_body()).await.expect("body");
        (status, bytes)
    })
    .await;
    let download = started.elapsed();
    let (peaks, samples) = sampler.finish().await;
    assert_eq!(status, 200);
    assert_eq!(received, SIZE, "every byte arrives");
    assert!(
        samples >= 5,
        "only {samples} RSS samples during the download"
    );
    for (service, peak) in ["client", "web"].iter().zip(&peaks) {
        assert!(*peak > 0, "no RSS read for {service}");
        assert!(
            *peak < RSS_LIMIT_KIB,
            "the {service} sidecar reached {peak} KiB during the download"
        );
    }
    eprintln!("download: {SIZE} bytes in {download:?}, peak RSS client {} KiB, web {} KiB, {samples} samples", peaks[0], peaks[1]);

    // Upload: the client streams 200 MiB; the app counts it.
    let sampler = Sampler::start(pids);
    let started = Instant::now();
    let request = h1_request(Method::POST, "web", "/count")
        .body(RepeatBody::boxed(SIZE))
        .expect("request");
    let reply = within("200 MiB upload", TRANSFER_LIMIT, async {
        let response = conn.send(request).await.expect("response");
        Reply::read(response).await.expect("body")
    })
    .await;
    let upload = started.elapsed();
    let (peaks, samples) = sampler.finish().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["bytes"], SIZE, "every byte arrives");
    assert!(samples >= 5, "only {samples} RSS samples during the upload");
    for (service, peak) in ["client", "web"].iter().zip(&peaks) {
        assert!(
            *peak < RSS_LIMIT_KIB,
            "the {service} sidecar reached {peak} KiB during the upload"
        );
    }
    eprintln!(
        "upload: {SIZE} bytes in {upload:?}, peak RSS client {} KiB, web {} KiB, {samples} samples",
        peaks[0], peaks[1]
    );
}

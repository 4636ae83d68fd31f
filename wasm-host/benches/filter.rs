//! The cost of one filter on one request, in the host alone: start a context with its
//! request header phase, run the response header phase (the response phase lent the request, as the proxy
//! does), finish the context. With the example `header_adder.wasm` (built by `bash
//! examples/filters/build.sh`) and, as a floor, a WAT module whose callbacks do nothing.
//!
//! `cargo bench -p mesh-wasm --bench filter`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_wasm::{Direction, Host, HostConfig, PluginSpec, Stream, StreamInfo};

#[path = "../tests/support/mod.rs"]
mod support;

/// The example filter built for wasm32, if `examples/filters/build.sh` ran.
fn header_adder() -> Option<Vec<u8>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm-filters/wasm32-unknown-unknown/release/header_adder.wasm");
    std::fs::read(&path).ok()
}

fn spec(name: &str, config: &str) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        config_json: config.into(),
        memory_bytes: 16 << 20,
        time_limit: Duration::from_millis(5),
    }
}

fn info() -> StreamInfo {
    StreamInfo {
        direction: Direction::Inbound,
        service: Arc::from("backend"),
        route: None,
        upstream_service: Some(Arc::from("backend")),
        source: Some(([127, 0, 0, 1], 40000).into()),
        destination: Some(([127, 0, 0, 1], 9000).into()),
        peer_identity: Some("spiffe://bench.local/client".into()),
        mtls: true,
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let host = Host::new(
        HostConfig {
            slots: 1,
            max_pause: Duration::from_secs(1),
        },
        Arc::new(support::MockCaller::default()),
    )
    .expect("host");
    let mut plugins = vec![(
        "noop (WAT)",
        host.plugin(
            &host
                .compile(support::module("", "").as_bytes())
                .expect("compile the noop module"),
            spec("noop", "{}"),
        )
        .expect("noop plugin"),
    )];
    match header_adder() {
        Some(bytes) => plugins.push((
            "header_adder (SDK)",
            host.plugin(
                &host.compile(&bytes).expect("compile header_adder"),
                spec("adder", r#"{"name":"x-added","value":"1"}"#),
            )
            .expect("header_adder plugin"),
        )),
        None => {
            eprintln!("header_adder.wasm not built: run `bash examples/filters/build.sh` first")
        }
    }
    let mut group = c.benchmark_group("one request through one filter");
    for (name, plugin) in &plugins {
        group.bench_function(*name, |b| {
            b.iter(|| {
                // As the proxy runs a filter: started with its request phase, and the
                // response phase lent the request as sent.
                let mut request = support::request("/api/items/1");
                let (stream, verdict) =
                    Stream::begin_request(plugin, info(), &mut request, true, true, true)
                        .expect("request headers");
                let mut response = http::Response::new(()).into_parts().0;
                let _ = stream
                    .begin_response(&mut request, &mut response, true)
                    .expect("response headers");
                black_box((verdict, request));
            });
        });
    }
    group.finish();
    runaway(c, &runtime, &host);
}

/// How long a callback that loops forever runs before its `time_limit` (20 ms, 100 ms)
/// stops it (target: the limit plus under 10 ms). Each run uses a fresh plugin: repeated
/// timeouts would make the filter rest.
fn runaway(c: &mut Criterion, runtime: &tokio::runtime::Runtime, host: &Arc<Host>) {
    const SPIN: &str = r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (loop $l (br $l)) (i32.const 0))"#;
    let module = host
        .compile(support::module("", SPIN).as_bytes())
        .expect("compile the looping module");
    let mut group = c.benchmark_group("a callback that loops forever is stopped after");
    group.sample_size(10);
    for limit_ms in [20, 100] {
        let mut spec = spec("spin", "{}");
        spec.time_limit = Duration::from_millis(limit_ms);
        group.bench_function(format!("time_limit {limit_ms} ms"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let plugin = host.plugin(&module, spec.clone()).expect("plugin");
                    let stream = plugin.start(info()).expect("start");
                    let began = std::time::Instant::now();
                    let failure = runtime
                        .block_on(stream.request_headers(&mut support::request("/"), true))
                        .expect_err("stopped");
                    total += began.elapsed();
                    black_box(failure);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

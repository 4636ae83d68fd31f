//! The protocols through the full hop (client → outbound → inbound → app): an HTTP/1.1
//! client and an h2c (prior knowledge) client to an HTTP/1.1 app; gRPC-style unary,
//! failing and server-streaming calls to a `grpc` app (h2c from the inbound sidecar) with
//! their trailers intact; and a WebSocket echo through the HTTP/1.1 upgrade tunnel.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::BodyExt;
use mesh_tests::backend::Backend;
use mesh_tests::body::{empty, full};
use mesh_tests::client::{
    grpc_frame, grpc_messages, h1_request, h2_request, within, Reply, H1, H2,
};
use mesh_tests::mesh::Mesh;
use tokio_tungstenite::tungstenite::Message;

const POLICY: &str = r#"
mesh "e2e" { trust_domain "e2e.local" }
service client { port 8000 endpoints ["{{client}}"] }
service web { port 8001 protocol http1 endpoints ["{{web}}"] }
service rpc { port 8002 protocol grpc endpoints ["{{rpc}}"] }
"#;

async fn start() -> (Mesh, [Backend; 3]) {
    let client_app = Backend::start("client").await;
    let web = Backend::start("web").await;
    let rpc = Backend::start("rpc").await;
    let mesh = Mesh::builder(POLICY)
        .proxy("client", client_app.addr())
        .proxy("web", web.addr())
        .proxy("rpc", rpc.addr())
        .start()
        .await;
    (mesh, [client_app, web, rpc])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_clients_reach_an_http1_app() {
    let (mesh, [_, web, _]) = start().await;

    let mut h1 = H1::open(mesh.outbound("client")).await;
    let reply = h1.get("web", "/hello?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["service"], "web");
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"], "web");
    let upload = h1_request(Method::POST, "web", "/upload")
        .body(full(vec![7u8; 10_000]))
        .expect("request");
    let echo = h1.fetch(upload).await.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], 10_000);

    let h2 = H2::open(mesh.outbound("client")).await;
    let response = within("h2c GET", Duration::from_secs(20), async {
        h2.clone()
            .send(
                h2_request(Method::GET, "web", "/h2/hello")
                    .body(empty())
                    .expect("request"),
            )
            .await
            .expect("h2c response")
    })
    .await;
    assert_eq!(response.version(), http::Version::HTTP_2);
    let reply = within("h2c body", Duration::from_secs(20), Reply::read(response))
        .await
        .expect("body");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["service"], "web");
    assert_eq!(echo["path"], "/h2/hello");
    // The app speaks HTTP/1.1: the inbound sidecar translated, keeping the authority.
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"], "web");
    // Many streams at once on the one connection, each with a body.
    let mut calls = Vec::new();
    for i in 0..20usize {
        let mut h2 = h2.clone();
        calls.push(tokio::spawn(async move {
            let request = h2_request(Method::POST, "web", &format!("/h2/{i}"))
                .body(full(vec![1u8; 1000 * (i + 1)]))
                .expect("request");
            h2.fetch(request).await
        }));
    }
    for (i, call) in calls.into_iter().enumerate() {
        let reply = within("h2c stream", Duration::from_secs(30), call)
            .await
            .expect("task");
        assert_eq!(reply.status, 200);
        let echo = reply.json();
        assert_eq!(echo["path"], format!("/h2/{i}"));
        assert_eq!(echo["body_bytes"], 1000 * (i + 1));
    }
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        23
    );
}

fn grpc_call(path: &str, message: &str) -> Request<mesh_tests::body::Body> {
    h2_request(Method::POST, "rpc", path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(grpc_frame(message.as_bytes())))
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_server_streaming_keep_their_trailers() {
    let (mesh, [_, _, rpc]) = start().await;
    let mut h2 = H2::open(mesh.outbound("client")).await;

    let reply = h2.fetch(grpc_call("/test.Echo/Unary", "hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    // The inbound sidecar spoke HTTP/2 (h2c) to the grpc app.
    assert_eq!(reply.header("x-app-version"), Some("HTTP/2.0"));
    let messages = grpc_messages(&reply.body).expect("gRPC framing");
    assert_eq!(messages, vec![Bytes::from_static(b"rpc:hello")]);
    let trailers = reply.trailers.clone().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(trailers["x-trailer-check"], "intact");

    let reply = h2.fetch(grpc_call("/test.Echo/Fail", "nothing")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        grpc_messages(&reply.body).expect("gRPC framing"),
        Vec::<Bytes>::new()
    );
    let trailers = reply.trailers.clone().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "5");
    assert_eq!(trailers["grpc-message"], "no such item");

    // Server streaming: five messages 50 ms apart, each arriving as it is sent.
    let response = within(
        "stream call",
        Duration::from_secs(20),
        h2.send(grpc_call("/test.Echo/Stream", "5")),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let mut arrivals = Vec::new();
    let mut messages = Vec::new();
    let mut trailers = None;
    while let Some(frame) = within("stream frame", Duration::from_secs(10), body.frame()).await {
        let frame = frame.expect("frame");
        if let Some(data) = frame.data_ref() {
            buffer.extend_from_slice(data);
            // Take every complete message out of the buffer.
            while buffer.len() >= 5 {
                let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
                if buffer.len() < 5 + len {
                    break;
                }
                messages.push(String::from_utf8_lossy(&buffer[5..5 + len]).into_owned());
                arrivals.push(started.elapsed());
                buffer.drain(..5 + len);
            }
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    assert!(buffer.is_empty(), "a partial message was left: {buffer:?}");
    assert_eq!(messages, ["rpc:0", "rpc:1", "rpc:2", "rpc:3", "rpc:4"]);
    let spread = arrivals[4] - arrivals[0];
    assert!(
        spread >= Duration::from_millis(150),
        "the messages were buffered, not streamed: {arrivals:?}"
    );
    let trailers = trailers.expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "stream done");
    assert_eq!(
        rpc.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_the_upgrade_tunnel() {
    let (mesh, [_, web, _]) = start().await;
    let stream = within(
        "connect",
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(mesh.outbound("client")),
    )
    .await
    .expect("connect to the outbound listener");
    let (mut ws, response) = within(
        "websocket handshake",
        Duration::from_secs(10),
        tokio_tungstenite::client_async("ws://web/ws", stream),
    )
    .await
    .expect("the upgrade succeeds through both sidecars");
    assert_eq!(response.status(), 101);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut sent = vec![Message::text("hello"), Message::binary(big)];
    sent.extend((0..50).map(|i| Message::text(format!("message {i}"))));
    for message in &sent {
        within("ws send", Duration::from_secs(10), ws.send(message.clone()))
            .await
            .expect("send");
        let echoed = within("ws echo", Duration::from_secs(10), ws.next())
            .await
            .expect("the socket stays open")
            .expect("a message");
        assert_eq!(&echoed, message);
    }
    within("ws close", Duration::from_secs(10), ws.close(None))
        .await
        .expect("close");
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_statuses_and_bodiless_responses_pass_through_on_kept_alive_connections() {
    let (mesh, [_, web, _]) = start().await;
    let mut h1 = H1::open(mesh.outbound("client")).await;
    let mut h2 = H2::open(mesh.outbound("client")).await;
    let cases: [(Method, &str, u16, bool); 6] = [
        (Method::GET, "/status/204", 204, false),
        (Method::GET, "/status/304", 304, false),
        (Method::HEAD, "/head", 200, false),
        (Method::GET, "/status/503", 503, true),
        (Method::GET, "/status/404", 404, true),
        (Method::POST, "/status/201", 201, true),
    ];
    for round in 0..2 {
        for (method, path, status, has_body) in &cases {
            let what = format!("round {round}: {method} {path}");
            let replies = [
                h1.fetch(
                    h1_request(method.clone(), "web", path)
                        .body(empty())
                        .expect("request"),
                )
                .await,
                h2.fetch(
                    h2_request(method.clone(), "web", path)
                        .body(empty())
                        .expect("request"),
                )
                .await,
            ];
            for reply in replies {
                assert_eq!(reply.status, *status, "{what}");
                // The app's own errors are not the proxy's.
                assert_eq!(reply.mesh_error(), None, "{what}");
                if *has_body {
                    assert_eq!(reply.echoed_service(), "web", "{what}");
                } else {
                    assert!(reply.body.is_empty(), "{what}: {:?}", reply.text());
                }
            }
        }
    }
    // Both connections are still good.
    assert_eq!(h1.get("web", "/last").await.status, 200);
    let last = h2
        .fetch(
            h2_request(Method::GET, "web", "/last")
                .body(empty())
                .expect("request"),
        )
        .await;
    assert_eq!(last.status, 200);
    assert_eq!(
        web.stats()
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2 * 2 * 6 + 2
    );
}

//! `mesh-demo-app NAME LISTEN`: a stand-in application for the demo mesh. It answers every
//! request with its own name and what it received (method, path, the mesh's headers), so
//! the demo can show routing, splits and header edits.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(listen)) = (args.next(), args.next()) else {
        eprintln!("usage: mesh-demo-app NAME LISTEN_ADDR");
        std::process::exit(2);
    };
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        eprintln!("error: `{listen}` is not an address such as 127.0.0.1:9001");
        std::process::exit(2);
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(name.clone(), request));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    name: String,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let shown = [
        "x-forwarded-client-cert",
        "x-mesh-route",
        "x-canary",
        "x-forwarded-for",
        "x-request-id",
        "x-user",
        // Set by the demo's `stamp` filter: the header adder (v1) or pw-header (v2).
        "x-stamp",
        "x-pw-header",
    ];
    let headers: serde_json::Map<String, serde_json::Value> = shown
        .iter()
        .filter_map(|h| {
            let value = request.headers().get(*h)?.to_str().ok()?;
            Some(((*h).to_string(), value.into()))
        })
        .collect();
    // HTTP/2 carries the authority in the URI, HTTP/1.1 in `Host`.
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        });
    let body = serde_json::json!({
        "service": name,
        "authority": authority,
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "headers": headers,
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

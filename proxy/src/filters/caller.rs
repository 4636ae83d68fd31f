//! A filter's `http_call` goes to a mesh service through this sidecar's outbound path
//! (routing, balancing, mTLS, retries), without running route filters again, so a filter
//! that calls a service on its own route cannot recurse.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{OnceLock, Weak};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use mesh_wasm::{CallResponse, HttpCaller, OutgoingCall};

use crate::body::full;
use crate::Context;

/// Largest `http_call` response body a filter gets (a larger one fails the call).
const MAX_CALL_BODY: usize = 1 << 20;

/// Sends filters' calls through the proxy; set up once the proxy's context exists.
#[derive(Debug, Default)]
pub struct MeshCaller {
    ctx: OnceLock<Weak<Context>>,
}

impl MeshCaller {
    /// Connects the caller to the proxy (the host is made before the context).
    pub fn attach(&self, ctx: Weak<Context>) {
        let _ = self.ctx.set(ctx);
    }
}

impl HttpCaller for MeshCaller {
    fn call(
        &self,
        call: OutgoingCall,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send>> {
        let ctx = self.ctx.get().and_then(Weak::upgrade);
        Box::pin(send(ctx, call))
    }
}

async fn send(
    ctx: Option<std::sync::Arc<Context>>,
    call: OutgoingCall,
) -> Result<CallResponse, String> {
    let ctx = ctx.ok_or_else(|| "the proxy is stopping".to_string())?;
    let request = outgoing_request(&call)?;
    // The call comes from this sidecar itself.
    let from = SocketAddr::from(([127, 0, 0, 1], 0));
    // A task of its own: the whole call (response body included) is bounded by the
    // timeout and stopped when it passes.
    let mut task = tokio::spawn(async move {
        let response = crate::outbound::handle_unfiltered(ctx, from, request).await;
        let (parts, body) = response.into_parts();
        read_limited(body).await.map(|collected| (parts, collected))
    });
    let (parts, (body, trailers)) = match tokio::time::timeout(call.timeout, &mut task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => return Err(format!("the call stopped: {e}")),
        Err(_) => {
            task.abort();
            return Err(format!("timed out after {} ms", call.timeout.as_millis()));
        }
    };
    let trailers = trailers.as_ref().map(pairs).unwrap_or_default();
    let mut headers = vec![(
        ":status".to_string(),
        parts.status.as_str().as_bytes().to_vec(),
    )];
    headers.extend(pairs(&parts.headers));
    Ok(CallResponse {
        headers,
        body,
        trailers,
    })
}

/// Reads a response body of at most [`MAX_CALL_BODY`] bytes, and its trailers. (By hand:
/// `http_body_util::Limited`'s boxed error type makes the future fail rustc's `Send` proof.)
async fn read_limited(
    mut body: crate::body::Body,
) -> Result<(Bytes, Option<http::HeaderMap>), String> {
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the response: {e}"))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > MAX_CALL_BODY {
                    return Err(format!("the response is larger than {MAX_CALL_BODY} bytes"));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((data.freeze(), trailers))
}

/// The call as a request to `upstream` (the mesh service), with its pseudo-headers applied.
fn outgoing_request(call: &OutgoingCall) -> Result<Request<crate::body::Body>, String> {
    let mut method = Method::GET;
    let mut path = "/".to_string();
    let mut request = Request::new(full(Bytes::clone(&call.body)));
    for (name, value) in &call.headers {
        match name.as_str() {
            ":method" => {
                method = Method::from_bytes(value).map_err(|_| "invalid :method".to_string())?;
            }
            ":path" => {
                path = String::from_utf8(value.clone()).map_err(|_| "invalid :path".to_string())?;
            }
            // The upstream argument names the service; :authority and :scheme follow it.
            ":authority" | ":scheme" | "host" => {}
            _ => {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("invalid header name `{name}`"))?;
                let value = HeaderValue::from_bytes(value)
                    .map_err(|_| format!("invalid value of `{name}`"))?;
                request.headers_mut().append(name, value);
            }
        }
    }
    *request.method_mut() = method;
    *request.uri_mut() = format!("http://{}{}", call.upstream, path)
        .parse()
        .map_err(|_| format!("invalid upstream `{}` or path `{path}`", call.upstream))?;
    Ok(request)
}

fn pairs(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

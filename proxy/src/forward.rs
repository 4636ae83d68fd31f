//! What both directions do to forward a request once its destination is known: prepare
//! headers, send within the timeout, tunnel upgrades, and finish the response.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_table::HeaderEdit;

use crate::body::{boxed, Body};
use crate::errors::ProxyError;
use crate::headers::{append_forwarded_for, ensure_request_id, is_upgrade, strip_hop_by_hop};
use crate::upstream::Upstreams;

/// The protocol spoken to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// HTTP/2 over the endpoint's multiplexed connection (sidecars, HTTP/2 and gRPC apps).
    Http2,
    /// HTTP/1.1 from the keep-alive pool (HTTP/1.1 apps).
    Http1,
}

/// The request's authority: the URI's (HTTP/2, absolute-form) or the `Host` header's.
pub fn request_authority<B>(request: &Request<B>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// Where a request goes next and how.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// The protocol spoken to it.
    pub hop: NextHop,
    /// The logical destination (the service the caller named), kept as the authority.
    pub authority: &'a str,
    /// How long to wait for the response head.
    pub timeout: Duration,
}

/// A route's header edits, for the request and for the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct Edits<'a> {
    /// Applied to the request.
    pub request: &'a [HeaderEdit],
    /// Applied to the response.
    pub response: &'a [HeaderEdit],
}

/// Forwards `request` to `to`, and returns the upstream's response with hop-by-hop headers
/// removed and the response edits applied. Upgrades are tunnelled over a dedicated
/// HTTP/1.1 connection.
pub async fn forward(
    upstreams: &Upstreams,
    peer: SocketAddr,
    to: Destination<'_>,
    mut request: Request<Incoming>,
    edits: Edits<'_>,
) -> Result<Response<Body>, ProxyError> {
    let Destination {
        addr,
        hop,
        authority,
        timeout,
    } = to;
    let upgrade = request.version() == Version::HTTP_11 && is_upgrade(request.headers());
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, peer.ip());
    ensure_request_id(headers);
    crate::headers::apply_edits(headers, edits.request);
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();

    if upgrade {
        return tunnel(upstreams, addr, authority, &path, request, timeout).await;
    }
    let (mut parts, body) = request.into_parts();
    let send = match hop {
        NextHop::Http2 => {
            parts.uri = absolute_uri(authority, &path)?;
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
            let request = Request::from_parts(parts, boxed(body));
            tokio::time::timeout(timeout, upstreams.send_h2(addr, request)).await
        }
        NextHop::Http1 => {
            parts.uri = absolute_uri(&addr.to_string(), &path)?;
            parts.version = Version::HTTP_11;
            set_host(&mut parts.headers, authority);
            let request = Request::from_parts(parts, boxed(body));
            tokio::time::timeout(timeout, upstreams.send_h1(addr, request)).await
        }
    };
    let response = send.map_err(|_| ProxyError::Timeout(millis(timeout)))??;
    Ok(finish(response, edits.response))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn absolute_uri(authority: &str, path: &str) -> Result<Uri, ProxyError> {
    format!("http://{authority}{path}")
        .parse()
        .map_err(|_| ProxyError::NoAuthority)
}

fn set_host(headers: &mut http::HeaderMap, authority: &str) {
    if let Ok(value) = HeaderValue::from_str(authority) {
        headers.insert(HOST, value);
    }
}

/// Removes the response's hop-by-hop headers and applies the route's response edits.
fn finish(response: Response<Incoming>, edits: &[HeaderEdit]) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut parts.headers, false);
    }
    crate::headers::apply_edits(&mut parts.headers, edits);
    Response::from_parts(parts, boxed(body))
}

/// Sends an upgrade request on its own HTTP/1.1 connection and, on 101, copies bytes both
/// ways between the client's and the upstream's upgraded connections.
async fn tunnel(
    upstreams: &Upstreams,
    addr: SocketAddr,
    authority: &str,
    path: &str,
    mut request: Request<Incoming>,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    parts.uri = path.parse().map_err(|_| ProxyError::NoAuthority)?;
    set_host(&mut parts.headers, authority);
    let request = Request::from_parts(parts, boxed(body));
    let mut response = tokio::time::timeout(timeout, upstreams.send_upgrade(addr, request))
        .await
        .map_err(|_| ProxyError::Timeout(millis(timeout)))??;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, upstream) = tokio::join!(client_side, upstream_side);
            match (client, upstream) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    if let Err(error) =
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        tracing::debug!(%error, "upgraded tunnel ended");
                    }
                }
                (client, upstream) => {
                    tracing::debug!(
                        client_ok = client.is_ok(),
                        upstream_ok = upstream.is_ok(),
                        "upgrade failed"
                    );
                }
            }
        });
    }
    Ok(finish(response, &[]))
}

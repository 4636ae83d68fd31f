//! What both directions do to forward a request once its destination is known: prepare
//! headers, send it (the tries: `retry`), tunnel upgrades, and finish the response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use mesh_table::{HeaderEdit, RetryPolicy};

use crate::body::{boxed, with_guard, Body};
use crate::cluster::{Cluster, Endpoint, InFlight};
use crate::errors::ProxyError;
use crate::headers::{add_forwarding_headers, is_upgrade, strip_hop_by_hop};
use crate::observe::CountBytes;
use crate::retry::budget::Budget;
use crate::retry::replay::{Replay, MAX_REPLAY};
use crate::retry::{Tries, RETRIES_HEADER};
use crate::upstream::{Remote, Upstreams};

/// The protocol spoken to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// HTTP/2 over the endpoint's multiplexed connection (sidecars, HTTP/2 and gRPC apps).
    Http2,
    /// HTTP/1.1 from the keep-alive pool (HTTP/1.1 apps).
    Http1,
}

/// The request's authority: the URI's (HTTP/2, absolute-form) or the `Host` header's.
pub fn request_authority<B>(request: &Request<B>) -> Option<RequestAuthority> {
    match request.uri().authority() {
        Some(authority) => Some(RequestAuthority::Uri(authority.clone())),
        None => request
            .headers()
            .get(HOST)
            .filter(|h| h.to_str().is_ok())
            .cloned()
            .map(RequestAuthority::Host),
    }
}

/// A request's authority, kept in the request's own bytes: a clone of a parsed URI part or
/// header value shares them where a `String` would be a copy.
#[derive(Debug, Clone)]
pub enum RequestAuthority {
    /// The URI's authority.
    Uri(Authority),
    /// The `Host` header (visible ASCII: checked when taken).
    Host(HeaderValue),
}

impl RequestAuthority {
    /// The authority's text.
    pub fn as_str(&self) -> &str {
        match self {
            RequestAuthority::Uri(authority) => authority.as_str(),
            RequestAuthority::Host(host) => host.to_str().unwrap_or_default(),
        }
    }
}

/// Where the tries of a request may go.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An endpoint of a service, chosen for each try by the service's balancer.
    Cluster {
        /// The service's endpoints.
        cluster: &'a Cluster,
        /// The request's ring-hash key, when the service hashes a header.
        key: Option<u64>,
    },
    /// One address (the local application).
    Fixed(SocketAddr),
}

impl Target<'_> {
    /// The endpoint of the next try, another than those `tried` when one may take it.
    pub fn pick(
        &self,
        tried: &[SocketAddr],
    ) -> Result<(SocketAddr, Option<Arc<Endpoint>>), ProxyError> {
        match self {
            Target::Fixed(addr) => Ok((*addr, None)),
            Target::Cluster { cluster, key } => cluster
                .pick(*key, tried)
                .map(|e| (e.addr(), Some(e)))
                .ok_or_else(|| ProxyError::NoEndpoint(cluster.name().to_string())),
        }
    }
}

/// Where a request goes next and how.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The endpoints it may go to.
    pub target: Target<'a>,
    /// The protocol spoken to them.
    pub hop: NextHop,
    /// The logical destination (the service the caller named), kept as the authority.
    pub authority: &'a str,
    /// How long the whole exchange may take until the response head, retries included.
    pub timeout: Duration,
    /// The route's retry policy.
    pub retry: Option<&'a RetryPolicy>,
    /// The route's retry budget.
    pub budget: Option<&'a Budget>,
    /// The counters the request body's bytes go to, as they stream (`observe`).
    pub count_bytes: Option<&'a CountBytes>,
}

/// A request ready to send, of which every try sends a copy.
#[derive(Debug)]
pub struct Message {
    /// The method.
    pub method: Method,
    /// The path and query (parsed once; every try reuses it).
    pub path: PathAndQuery,
    /// The headers, prepared.
    pub headers: HeaderMap,
    /// The body, replayable while short enough.
    pub body: Replay,
}

impl Message {
    /// The request of one try.
    pub fn request(&self, hop: NextHop, authority: &str) -> Result<Request<Body>, ProxyError> {
        let mut request = Request::new(self.body.next_try());
        *request.method_mut() = self.method.clone();
        *request.headers_mut() = self.headers.clone();
        match hop {
            NextHop::Http2 => {
                *request.uri_mut() = absolute_uri(authority, &self.path)?;
                *request.version_mut() = Version::HTTP_2;
                request.headers_mut().remove(HOST);
            }
            NextHop::Http1 => {
                // Origin-form, as HTTP/1.1 sends it to an origin server; `addr` is where.
                *request.uri_mut() = Uri::from(self.path.clone());
                *request.version_mut() = Version::HTTP_11;
                set_host(request.headers_mut(), authority);
            }
        }
        Ok(request)
    }
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
/// removed and the response edits applied; what the tries came to is left in `tries`.
/// Upgrades are tunnelled over a dedicated HTTP/1.1 connection (one try, no retries).
pub async fn forward(
    upstreams: &Upstreams,
    peer: SocketAddr,
    to: Destination<'_>,
    request: Request<Body>,
    edits: Edits<'_>,
    tries: &mut Tries,
) -> Result<Response<Body>, ProxyError> {
    let (response, _) = send_request(upstreams, peer, to, request, edits, tries, false).await?;
    Ok(response)
}

/// [`forward`], and the request head as the last try sent it: the method, URI and version
/// the caller gave, and the headers with the proxy's own (filters read the request as sent
/// in their response phase, as in Envoy). Moved, not copied, except for an upgrade.
pub async fn forward_keeping(
    upstreams: &Upstreams,
    peer: SocketAddr,
    to: Destination<'_>,
    request: Request<Body>,
    edits: Edits<'_>,
    tries: &mut Tries,
) -> Result<(Response<Body>, http::request::Parts), ProxyError> {
    let (response, sent) = send_request(upstreams, peer, to, request, edits, tries, true).await?;
    // `send_request` keeps the head when asked (on every path that returns a response).
    let sent = sent.unwrap_or_else(|| Request::new(()).into_parts().0);
    Ok((response, sent))
}

/// Forwards the request; with `keep`, returns its head as sent too.
async fn send_request(
    upstreams: &Upstreams,
    peer: SocketAddr,
    to: Destination<'_>,
    mut request: Request<Body>,
    edits: Edits<'_>,
    tries: &mut Tries,
    keep: bool,
) -> Result<(Response<Body>, Option<http::request::Parts>), ProxyError> {
    let upgrade = request.version() == Version::HTTP_11 && is_upgrade(request.headers());
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    add_forwarding_headers(headers, peer.ip());
    crate::headers::apply_edits(headers, edits.request);
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));

    if upgrade {
        let sent = keep.then(|| copy_head(&request));
        let (addr, endpoint) = to.target.pick(&[])?;
        tries.endpoint = Some(addr);
        let in_flight = endpoint.as_ref().map(Endpoint::start);
        // Boxed: upgrades are rare, and inline their future would make every request's
        // future (moved whole a few times per request) 3 KB larger.
        let response = Box::pin(tunnel(
            upstreams,
            addr,
            to.target.remote(),
            to.authority,
            &path,
            request,
            to.timeout,
            in_flight,
        ))
        .await?;
        return Ok((response, sent));
    }
    let (mut parts, body) = request.into_parts();
    // Body bytes are counted as they stream through (`observe`), never buffered for it; a
    // body that has ended already (most requests: no body) has none to count.
    let body = match to.count_bytes {
        Some(count) if !hyper::body::Body::is_end_stream(&body) => count.clone().wrap(body),
        _ => body,
    };
    let message = Message {
        method: parts.method,
        path,
        headers: parts.headers,
        body: Replay::new(body, MAX_REPLAY),
    };
    let (response, in_flight) = crate::retry::send(upstreams, &to, &message, tries).await?;
    let sent = if keep {
        parts.method = message.method;
        parts.headers = message.headers;
        Some(parts)
    } else {
        None
    };
    let mut response = finish(response, edits.response, in_flight);
    if tries.retries > 0 {
        response
            .headers_mut()
            .insert(RETRIES_HEADER, HeaderValue::from(tries.retries));
    }
    Ok((response, sent))
}

/// A copy of a request's head (its extensions left behind).
fn copy_head<B>(request: &Request<B>) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = request.method().clone();
    head.uri = request.uri().clone();
    head.version = request.version();
    head.headers = request.headers().clone();
    head
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `http://{authority}{path}` from parts, without formatting and re-parsing the path.
fn absolute_uri(authority: &str, path: &PathAndQuery) -> Result<Uri, ProxyError> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(parsed_authority(authority)?);
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).map_err(|_| ProxyError::NoAuthority)
}

/// How many parsed authorities each thread keeps.
const PARSED_AUTHORITIES: usize = 8;

thread_local! {
    /// Authorities, parsed: a sidecar's requests go to a few services, and parsing one copies
    /// it to the heap each time (a clone shares it). The oldest is replaced.
    static AUTHORITIES: std::cell::RefCell<Vec<Authority>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `authority` parsed, as `Authority::try_from` would.
fn parsed_authority(authority: &str) -> Result<Authority, ProxyError> {
    AUTHORITIES.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if let Some(hit) = parsed.iter().find(|a| a.as_str() == authority) {
            return Ok(hit.clone());
        }
        let fresh = Authority::try_from(authority).map_err(|_| ProxyError::NoAuthority)?;
        if parsed.len() == PARSED_AUTHORITIES {
            parsed.remove(0);
        }
        parsed.push(fresh.clone());
        Ok(fresh)
    })
}

fn set_host(headers: &mut http::HeaderMap, authority: &str) {
    // Inbound, the authority is the one `Host` the caller sent: keep it rather than copy it.
    let mut hosts = headers.get_all(HOST).iter();
    if hosts
        .next()
        .is_some_and(|h| h.as_bytes() == authority.as_bytes())
        && hosts.next().is_none()
    {
        return;
    }
    // Parsed once per authority (HTTP/2 callers send no `Host` to keep).
    if let Some((_, value)) = crate::headers::parsed_header(HOST.as_str(), authority) {
        headers.insert(HOST, value);
    }
}

/// Removes the response's hop-by-hop headers and applies the route's response edits; the
/// request counts in flight at its endpoint until the body ends.
fn finish(
    response: Response<crate::retry::whole::Received>,
    edits: &[HeaderEdit],
    in_flight: Option<InFlight>,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(&mut parts.headers, false);
    }
    crate::headers::apply_edits(&mut parts.headers, edits);
    let body = match in_flight {
        Some(guard) => with_guard(body, guard),
        None => boxed(body),
    };
    Response::from_parts(parts, body)
}

/// Sends an upgrade request on its own HTTP/1.1 connection and, on 101, copies bytes both
/// ways between the client's and the upstream's upgraded connections.
#[allow(clippy::too_many_arguments)] // the request's parts, each needed once
async fn tunnel(
    upstreams: &Upstreams,
    addr: SocketAddr,
    remote: Remote<'_>,
    authority: &str,
    path: &PathAndQuery,
    mut request: Request<Body>,
    timeout: Duration,
    in_flight: Option<InFlight>,
) -> Result<Response<Body>, ProxyError> {
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, body) = request.into_parts();
    parts.uri = Uri::from(path.clone());
    set_host(&mut parts.headers, authority);
    let request = Request::from_parts(parts, body);
    let mut response = tokio::time::timeout(timeout, upstreams.send_upgrade(addr, remote, request))
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
    Ok(finish(
        response.map(crate::retry::whole::Received::Streaming),
        &[],
        in_flight,
    ))
}

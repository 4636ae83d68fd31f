//! Every way a proxied request can fail, and the one place where a failure becomes a
//! response: its status, and an `x-mesh-error` header naming the reason. A gRPC caller gets
//! the failure as a gRPC status instead, in trailers-only form (as Envoy answers them).

use http::{HeaderValue, Response, StatusCode};
use mesh_engine::PathError;

use crate::body::{empty, full, Body};

/// The header that carries the proxy's reason for an answer it made itself.
pub const MESH_ERROR: &str = "x-mesh-error";

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No table has loaded yet.
    #[error("no rule table loaded yet")]
    NoTable,
    /// The request names no authority (no `Host`).
    #[error("the request has no authority")]
    NoAuthority,
    /// The request's framing is ambiguous (see `framing`): refused, and the connection closed.
    #[error("ambiguous request framing: {}", .0.reason())]
    Framing(crate::framing::Refusal),
    /// The request target is longer than `[limits] max_uri_bytes`.
    #[error("the request target is too long")]
    UriTooLong,
    /// The path was refused by normalization.
    #[error("{0}")]
    BadPath(PathError),
    /// The authority is not a service of the mesh.
    #[error("`{0}` is not a service of this mesh")]
    UnknownService(String),
    /// The service has routes and none matched.
    #[error("no route matches")]
    NoRoute,
    /// The target service has no endpoint.
    #[error("service `{0}` has no endpoint")]
    NoEndpoint(String),
    /// Connecting to the endpoint failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The endpoint.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with the endpoint's sidecar was refused: it did not prove it is the
    /// service the request is for (`upstream-identity`), or the handshake failed on a
    /// certificate, ours or its (`upstream-tls`). Nothing was sent.
    #[error("mTLS with {addr} refused: {detail}")]
    UpstreamTls {
        /// The endpoint.
        addr: std::net::SocketAddr,
        /// `upstream-identity` or `upstream-tls`.
        reason: &'static str,
        /// The refusal, for logs.
        detail: String,
    },
    /// Authorization denied the caller (the deciding rule is logged, never answered).
    #[error("unauthorized")]
    Unauthorized,
    /// The caller's certificate was revoked after its connection was made (new
    /// connections with it are refused at the handshake).
    #[error("the caller's certificate was revoked")]
    CallerRevoked,
    /// A plaintext request on a connection admitted while the service was `mtls
    /// permissive`, after a table made it `strict`.
    #[error("plaintext callers are refused: the service is `mtls strict`")]
    PlaintextRefused,
    /// The upstream failed after the connection was made (reset, protocol error).
    #[error("upstream failed: {reason}")]
    Upstream {
        /// How far the try got: what decides whether it may be tried again.
        failure: Failure,
        /// The underlying error, for logs.
        reason: String,
    },
    /// The application answered with a head whose framing is ambiguous (`Content-Length`
    /// beside `Transfer-Encoding`): nothing of it is forwarded.
    #[error("the application's response is malformed: {0}")]
    UpstreamResponse(&'static str),
    /// The route's timeout passed.
    #[error("the request timed out after {0} ms")]
    Timeout(u64),
    /// A body stalled before the response head: the route's `idle_timeout`
    /// (`idle-timeout`) or `stream_timeout` (`stream-timeout`) ran out.
    #[error("the stream was cut: {0}")]
    StreamTimeout(&'static str),
    /// The destination service's circuit breaker (`limits { max_requests max_pending }`)
    /// is full: answered at once, nothing sent.
    #[error("service `{0}` is overloaded: too many requests in flight and pending")]
    Overloaded(String),
    /// A `failure closed` WASM filter failed (trap, time limit, memory cap, not loaded).
    #[error("filter `{0}` failed")]
    FilterFailed(String),
    /// A filter closed the stream (`proxy_close_stream`).
    #[error("filter `{0}` closed the stream")]
    FilterReset(String),
}

/// How far a failed try got once a connection existed, read from the transport's error
/// (pingora's errors carry the same so retry logic reads a field, not a message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The pooled connection closed before the request was written (the keep-alive race):
    /// nothing left, so any request may go again.
    NotSent,
    /// An HTTP/2 GOAWAY excluded the stream: the server promises it never processed it.
    GoAway,
    /// HTTP/2 REFUSED_STREAM: the server did not process the request.
    Refused,
    /// The connection closed after the request was written and before any response:
    /// the server may or may not have acted on it.
    Closed,
    /// A reset or protocol error once the request may have been processed.
    Reset,
}

impl ProxyError {
    /// An upstream failure of kind `failure`.
    pub fn upstream(failure: Failure, reason: impl ToString) -> ProxyError {
        ProxyError::Upstream {
            failure,
            reason: reason.to_string(),
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoAuthority | ProxyError::BadPath(_) | ProxyError::Framing(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::UnknownService(_) | ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoTable | ProxyError::NoEndpoint(_) | ProxyError::FilterFailed(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::FilterReset(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Unauthorized | ProxyError::PlaintextRefused | ProxyError::CallerRevoked => {
                StatusCode::FORBIDDEN
            }
            ProxyError::Connect { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamResponse(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) | ProxyError::StreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short reason in `x-mesh-error` (stable: dashboards and tests match on it).
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NoTable => "no-table",
            ProxyError::NoAuthority => "no-authority",
            ProxyError::BadPath(e) => e.reason(),
            ProxyError::Framing(refusal) => refusal.reason(),
            ProxyError::UriTooLong => "uri-too-long",
            ProxyError::UnknownService(_) => "unknown-service",
            ProxyError::NoRoute => "no-route",
            ProxyError::NoEndpoint(_) => "no-endpoint",
            ProxyError::Connect { .. } => "connect-failed",
            ProxyError::UpstreamTls { reason, .. } => reason,
            ProxyError::Unauthorized => "unauthorized",
            ProxyError::CallerRevoked => "caller-revoked",
            ProxyError::PlaintextRefused => crate::tls::PLAINTEXT_REFUSED,
            ProxyError::Upstream { .. } => "upstream-reset",
            ProxyError::UpstreamResponse(_) => "upstream-bad-response",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::StreamTimeout(reason) => reason,
            ProxyError::Overloaded(_) => "overloaded",
            ProxyError::FilterFailed(_) => "filter-failed",
            ProxyError::FilterReset(_) => "filter-reset",
        }
    }

    /// The gRPC status a gRPC caller gets: the HTTP status's code in gRPC's mapping
    /// (grpc/doc/http-grpc-status-mapping.md, as Envoy applies it to its own answers), except
    /// that a timeout is DEADLINE_EXCEEDED: the proxy ended the call because its deadline (the
    /// caller's `grpc-timeout` or the route's `timeout`) passed.
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::Timeout(_) | ProxyError::StreamTimeout(_) => 4, // DEADLINE_EXCEEDED
            ProxyError::Overloaded(_) => 14,                            // UNAVAILABLE
            ProxyError::Unauthorized | ProxyError::PlaintextRefused | ProxyError::CallerRevoked => {
                7
            } // PERMISSION_DENIED
            ProxyError::UnknownService(_) | ProxyError::NoRoute => 12,  // UNIMPLEMENTED
            ProxyError::NoAuthority
            | ProxyError::BadPath(_)
            | ProxyError::Framing(_)
            | ProxyError::UriTooLong => 13, // INTERNAL
            ProxyError::NoTable
            | ProxyError::NoEndpoint(_)
            | ProxyError::FilterFailed(_)
            | ProxyError::FilterReset(_)
            | ProxyError::Connect { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamResponse(_) => 14, // UNAVAILABLE
        }
    }

    /// The response for this failure to a caller that sent a gRPC call (`grpc`) or not.
    pub fn into_response_for(self, grpc: bool) -> Response<Body> {
        if grpc {
            self.into_grpc_response()
        } else {
            self.into_response()
        }
    }

    /// The failure as a trailers-only gRPC response: `200`, `content-type: application/grpc`,
    /// `grpc-status`, `grpc-message` (the reason) and `x-mesh-error` in one HEADERS frame that
    /// ends the stream; gRPC clients read it as the call's status and trailing metadata.
    pub fn into_grpc_response(self) -> Response<Body> {
        let reason = self.reason();
        let mut response = Response::new(empty());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // Reasons are short ASCII words: nothing to percent-encode.
        headers.insert("grpc-message", HeaderValue::from_static(reason));
        headers.insert(MESH_ERROR, HeaderValue::from_static(reason));
        response
    }

    /// The response for this failure. The body names the reason only: no internals.
    pub fn into_response(self) -> Response<Body> {
        let reason = self.reason();
        let mut response = Response::new(full(format!("{reason}\n")));
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(MESH_ERROR, HeaderValue::from_static(reason));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::ProxyError;

    #[test]
    fn each_failure_has_its_status_and_reason() {
        let cases = [
            (ProxyError::NoRoute, 404, "no-route"),
            (ProxyError::NoEndpoint("a".into()), 503, "no-endpoint"),
            (
                ProxyError::Connect {
                    addr: ([127, 0, 0, 1], 1).into(),
                    reason: "refused".into(),
                },
                502,
                "connect-failed",
            ),
            (ProxyError::Timeout(5), 504, "timeout"),
            (ProxyError::Unauthorized, 403, "unauthorized"),
            (ProxyError::CallerRevoked, 403, "caller-revoked"),
            (
                ProxyError::UpstreamTls {
                    addr: ([127, 0, 0, 1], 1).into(),
                    reason: "upstream-identity",
                    detail: "the server is spiffe://m/orders".into(),
                },
                502,
                "upstream-identity",
            ),
            (
                ProxyError::BadPath(mesh_engine::PathError::AboveRoot),
                400,
                "path-above-root",
            ),
        ];
        for (error, status, reason) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()[super::MESH_ERROR], reason);
        }
    }

    #[test]
    fn grpc_callers_get_trailers_only_answers_with_a_grpc_status() {
        use hyper::body::Body as _;
        let cases = [
            (ProxyError::Timeout(5), "4", "timeout"),
            (ProxyError::Unauthorized, "7", "unauthorized"),
            (ProxyError::NoRoute, "12", "no-route"),
            (ProxyError::NoEndpoint("a".into()), "14", "no-endpoint"),
            (
                ProxyError::upstream(super::Failure::Reset, "reset"),
                "14",
                "upstream-reset",
            ),
        ];
        for (error, code, reason) in cases {
            let response = error.into_response_for(true);
            assert_eq!(response.status(), 200);
            let headers = response.headers();
            assert_eq!(headers["content-type"], "application/grpc");
            assert_eq!(headers["grpc-status"], code, "{reason}");
            assert_eq!(headers["grpc-message"], reason);
            assert_eq!(headers[super::MESH_ERROR], reason);
            // Trailers-only: the head ends the stream.
            assert!(response.body().is_end_stream(), "{reason}");
        }
        let plain = ProxyError::Timeout(5).into_response_for(false);
        assert_eq!(plain.status(), 504);
    }
}

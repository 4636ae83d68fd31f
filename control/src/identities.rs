//! The operator API's identity endpoints: revoke certificates (`POST /v1/identities/revoke`,
//! `meshc identity revoke`) and list what is revoked (`GET /v1/revocations`).

use http::{Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::body::{self, Body};
use crate::shared::{RevokeError, Shared};

/// The body of `POST /v1/identities/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    service: String,
    #[serde(default)]
    serial: Option<String>,
}

/// Revokes one certificate of a service (`serial`), or all its live ones.
pub async fn revoke(shared: &Shared, body: Incoming) -> Response<Body> {
    let req: Revoke = match body::read(body, 4 * 1024)
        .await
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("bad JSON body: {e}")))
    {
        Ok(r) => r,
        Err(e) => return body::error(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = shared.trust_domain.service(&req.service) {
        return body::error(StatusCode::BAD_REQUEST, e);
    }
    match shared.revoke_identity(&req.service, req.serial.as_deref()) {
        Ok(serials) => {
            tracing::warn!(service = ?req.service, serials = ?serials, "certificates revoked");
            body::json(
                StatusCode::OK,
                &json!({ "service": req.service, "revoked": serials }),
            )
        }
        Err(e @ RevokeError::BadRequest(_)) => body::error(StatusCode::BAD_REQUEST, e),
        Err(e @ RevokeError::NotFound(_)) => body::error(StatusCode::NOT_FOUND, e),
        Err(e @ RevokeError::Internal(_)) => {
            tracing::error!(error = %e, "cannot save the revocation list");
            body::error(StatusCode::INTERNAL_SERVER_ERROR, e)
        }
    }
}

/// The serials every proxy refuses, as they are sent to the proxies.
pub fn list(shared: &Shared) -> Response<Body> {
    body::json(
        StatusCode::OK,
        &json!({ "serials": shared.revoked_serials() }),
    )
}

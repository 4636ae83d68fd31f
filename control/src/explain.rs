//! `GET /v1/explain`: the route the mesh picks for a request to `to` and whether `from` is
//! admitted there, decided by `mesh_engine` on the whole current table (the same engine the
//! proxies run; the answer has the shape of a proxy's `/explain` and `meshc why --format json`).

use mesh_engine::{AuthzDecision, Decider, Engine, Peer, RouteDecision};
use mesh_table::{Action, Table};
use serde_json::{json, Value};

/// A parsed query.
#[derive(Debug, Default)]
pub struct Query {
    /// The caller: a service, or `plaintext`.
    pub from: Option<String>,
    /// The service called (the authority).
    pub to: Option<String>,
    /// Default GET.
    pub method: Option<String>,
    /// Default `/`.
    pub path: Option<String>,
    /// `name:value` headers.
    pub headers: Vec<(String, String)>,
}

impl Query {
    /// Parses `a=b&c=d`, percent-decoded.
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match decode(key)?.as_str() {
                "from" => q.from = Some(value),
                "to" => q.to = Some(value),
                "method" => q.method = Some(value),
                "path" => q.path = Some(value),
                "header" => match value.split_once(':') {
                    Some((n, v)) if !n.trim().is_empty() => q
                        .headers
                        .push((n.trim().to_ascii_lowercase(), v.trim().to_owned())),
                    _ => return Err(format!("header `{value}`: write it `name:value`")),
                },
                other => return Err(format!("unknown parameter `{other}`")),
            }
        }
        Ok(q)
    }
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in `{text}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8"))
}

/// The decision for `query`.
pub fn explain(engine: &Engine, checksum: &str, query: &Query) -> Result<Value, String> {
    let table = engine.table();
    let to = query.to.as_deref().ok_or("`to` is required")?;
    let from = query.from.as_deref().ok_or("`from` is required")?;
    let method = query.method.as_deref().unwrap_or("GET");
    let path = query.path.as_deref().unwrap_or("/");
    let peer = if from == "plaintext" {
        Peer::Plaintext
    } else {
        Peer::Service(
            engine
                .service_id(from)
                .ok_or_else(|| format!("`{from}` is not a service of this mesh"))?,
        )
    };
    let headers = query.headers.as_slice();
    let (route, targets, status) = match engine.route(to, method, path, headers) {
        RouteDecision::Matched { index, route, .. } => (
            Some(index),
            route.targets.iter().map(|t| t.service).collect(),
            None,
        ),
        RouteDecision::ToService { service } => (None, vec![service], None),
        RouteDecision::NoRoute { .. } => (None, Vec::new(), Some(404)),
        RouteDecision::BadPath(_) => (None, Vec::new(), Some(400)),
        RouteDecision::UnknownService => {
            return Err(format!("`{to}` is not a service of this mesh"))
        }
    };
    // Authorization happens at the sidecar of each target the route may pick.
    let mut decisions: Vec<(u32, AuthzDecision)> = Vec::new();
    if let Ok(normalized) = mesh_engine::normalize_path(path) {
        for &target in &targets {
            decisions.push((
                target,
                engine.authorize_normalized(target, peer, method, &normalized, headers),
            ));
        }
    }
    // As `meshc why`: the first target that denies, else the first.
    let deciding = decisions
        .iter()
        .find(|(_, d)| d.action == Action::Deny)
        .or_else(|| decisions.first());
    let status = status.or_else(|| {
        deciding
            .filter(|(_, d)| d.action == Action::Deny)
            .map(|_| 403)
    });
    let name = |id: u32| table.services.get(id as usize).map(|s| s.name.clone());
    Ok(json!({
        "status": status,
        "route": route.and_then(|i| table.routes.get(i)).map(|r| r.name.clone()),
        "targets": targets.iter().map(|t| name(*t)).collect::<Vec<_>>(),
        "decision": deciding.map(|(_, d)| action(d.action)),
        "rule": deciding.map(|(_, d)| rule(table, d)),
        "authorizations": decisions.iter().map(|(t, d)| json!({
            "service": name(*t),
            "decision": action(d.action),
            "rule": rule(table, d),
        })).collect::<Vec<_>>(),
        "from": from,
        "to": to,
        "checksum": checksum,
    }))
}

fn action(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// `{"file", "line", "column"}` of the deciding rule, `"default"`, or `"no authorize block"`.
fn rule(table: &Table, decision: &AuthzDecision) -> Value {
    let Some(authz) = decision
        .authorization
        .and_then(|i| table.authorizations.get(i))
    else {
        return "no authorize block".into();
    };
    match decision.decider {
        Decider::Rule(i) => authz.rules.get(i).map_or(Value::Null, |rule| {
            json!({
                "file": table.files.get(rule.loc.file as usize),
                "line": rule.loc.line,
                "column": rule.loc.column,
            })
        }),
        Decider::Default => "default".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn route_and_authorization_from_the_engine() {
        let engine = Engine::new(Arc::new(mesh_table::testing::sample_table())).expect("builds");
        let q = Query::parse("from=web&to=api&method=PUT&path=%2Fcart%2F1").expect("parses");
        let v = explain(&engine, "c", &q).expect("explained");
        assert_eq!(v["route"], "cart");
        assert_eq!(v["targets"], json!(["cart"]));
        assert_eq!(v["decision"], "allow");
        let q = Query::parse("from=web&to=payments&method=POST&path=/v1/refunds&header=x-request-id:1&header=x-tenant:abc").expect("parses");
        let v = explain(&engine, "c", &q).expect("explained");
        assert_eq!(v["route"], "refund");
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["status"], 403);
        assert!(explain(
            &engine,
            "c",
            &Query::parse("from=web&to=nope").expect("parses")
        )
        .is_err());
    }
}

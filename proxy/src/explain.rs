//! `/explain` on the admin listener: the route and authorization decision the current
//! snapshot makes for a request, with the source location of what decided. The same shape
//! as `meshc why --format json` (`status`, `route`, `targets`, `decision`, `rule`), so the
//! two can be compared on one table.
//!
//! Query: `authority` (required), `method` (default GET), `path` (default `/`), `header`
//! (`name:value`, repeatable), `from` (the caller: a service, or `plaintext`; default this
//! sidecar's service, i.e. a call its application makes).

use mesh_engine::{AuthzDecision, Decider, Peer, RouteDecision};
use mesh_table::{Action, Table};

use crate::snapshot::Snapshot;

/// The query of one `/explain` request.
#[derive(Debug, Default)]
pub struct Query {
    authority: Option<String>,
    method: Option<String>,
    path: Option<String>,
    headers: Vec<(String, String)>,
    from: Option<String>,
}

impl Query {
    /// Parses `a=b&c=d` (percent-decoded, `+` is a space).
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value)?;
            match decode(key)?.as_str() {
                "authority" => q.authority = Some(value),
                "method" => q.method = Some(value),
                "path" => q.path = Some(value),
                "from" => q.from = Some(value),
                "header" => match value.split_once(':') {
                    Some((name, v)) if !name.trim().is_empty() => q
                        .headers
                        .push((name.trim().to_ascii_lowercase(), v.trim().to_string())),
                    _ => return Err(format!("header `{value}`: write it `name:value`")),
                },
                other => return Err(format!("unknown parameter `{other}`")),
            }
        }
        Ok(q)
    }
}

/// Percent-decodes a query component.
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

/// The decision for `query` under `snapshot`, for this sidecar's `own` service.
pub fn explain(snapshot: &Snapshot, own: &str, query: &Query) -> Result<serde_json::Value, String> {
    let table = snapshot.table();
    let authority = query
        .authority
        .as_deref()
        .ok_or("`authority` is required")?;
    let method = query.method.as_deref().unwrap_or("GET");
    let path = query.path.as_deref().unwrap_or("/");
    let from = query.from.as_deref().unwrap_or(own);
    let peer = if from == "plaintext" {
        Peer::Plaintext
    } else {
        Peer::Service(
            table
                .service_id(from)
                .ok_or_else(|| format!("`{from}` is not a service of this mesh"))?,
        )
    };
    let headers = query.headers.as_slice();
    let (route, targets, status) = match snapshot.engine.route(authority, method, path, headers) {
        RouteDecision::Matched { index, route, .. } => (
            Some(index),
            route.targets.iter().map(|t| t.service).collect(),
            None,
        ),
        RouteDecision::ToService { service } => (None, vec![service], None),
        RouteDecision::NoRoute { .. } => (None, Vec::new(), Some(404)),
        RouteDecision::BadPath(_) => (None, Vec::new(), Some(400)),
        RouteDecision::UnknownService => {
            return Err(format!("`{authority}` is not a service of this mesh"))
        }
    };
    let normalized = mesh_engine::normalize_path(path).map_err(|e| e.to_string());
    let mut decisions: Vec<(u32, AuthzDecision)> = Vec::new();
    if let Ok(normalized) = &normalized {
        for &target in &targets {
            let d = snapshot
                .engine
                .authorize_normalized(target, peer, method, normalized, headers);
            decisions.push((target, d));
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
    Ok(serde_json::json!({
        "status": status,
        "route": route.and_then(|i| table.routes.get(i)).map(|r| r.name.clone()),
        "targets": targets.iter().map(|t| name(*t)).collect::<Vec<_>>(),
        "decision": deciding.map(|(_, d)| action(d.action)),
        "rule": deciding.map(|(_, d)| rule(table, d)),
        "authorizations": decisions.iter().map(|(t, d)| serde_json::json!({
            "service": name(*t),
            "decision": action(d.action),
            "rule": rule(table, d),
            "at": crate::inbound::decided_by(table, d),
        })).collect::<Vec<_>>(),
        "from": from,
        "checksum": snapshot.checksum,
    }))
}

fn action(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
    }
}

/// `{"file", "line", "column"}` of the deciding rule, or `"default"`.
fn rule(table: &Table, decision: &AuthzDecision) -> serde_json::Value {
    let rule = decision
        .authorization
        .and_then(|i| table.authorizations.get(i))
        .and_then(|a| match decision.decider {
            Decider::Rule(i) => a.rules.get(i),
            Decider::Default => None,
        });
    match rule {
        Some(rule) => serde_json::json!({
            "file": table.files.get(rule.loc.file as usize),
            "line": rule.loc.line,
            "column": rule.loc.column,
        }),
        None => "default".into(),
    }
}

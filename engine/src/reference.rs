//! The reference evaluator: the language's semantics (docs/language.md) written as plainly
//! as possible, with no index and no precompilation. It is slow on purpose; it exists so
//! property tests can check that the [`Engine`](crate::Engine) decides exactly the same.

use mesh_table::{
    precedence, Action, HeaderValueMatch, Method, PathMatch, Principal, RequestMatch, Table,
};

use crate::headers::RequestHeaders;
use crate::path::normalize_path;
use crate::{AuthzDecision, Decider, Peer, RouteDecision};

/// The route decision, by scanning every route of the service.
pub fn route<'t, H: RequestHeaders + ?Sized>(
    table: &'t Table,
    authority: &str,
    method: &str,
    path: &str,
    headers: &H,
) -> RouteDecision<'t> {
    let host = authority
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let Some(service) = table.services.iter().position(|s| s.name == host) else {
        return RouteDecision::UnknownService;
    };
    let service_id = u32::try_from(service).unwrap_or(u32::MAX);
    let path = match normalize_path(path) {
        Ok(p) => p.into_owned(),
        Err(e) => return RouteDecision::BadPath(e),
    };
    let mut routes = table
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.service == service_id)
        .peekable();
    if routes.peek().is_none() {
        return RouteDecision::ToService {
            service: service_id,
        };
    }
    // The highest rank wins; between equal ranks, the earlier route.
    let best = routes
        .filter(|(_, r)| request_matches(&r.matcher, method, &path, headers))
        .max_by(|(ia, a), (ib, b)| {
            precedence::rank(&a.matcher)
                .cmp(&precedence::rank(&b.matcher))
                .then(ib.cmp(ia))
        });
    match best {
        Some((index, route)) => RouteDecision::Matched {
            service: service_id,
            index,
            route,
        },
        None => RouteDecision::NoRoute {
            service: service_id,
        },
    }
}

/// The authorization decision, by trying the rules in order: denies, then allows.
pub fn authorize<H: RequestHeaders + ?Sized>(
    table: &Table,
    service: u32,
    peer: Peer,
    method: &str,
    path: &str,
    headers: &H,
) -> Option<AuthzDecision> {
    let path = normalize_path(path).ok()?.into_owned();
    let authenticated = peer != Peer::Plaintext;
    let Some((index, block)) = table
        .authorizations
        .iter()
        .enumerate()
        .find(|(_, a)| a.service == service)
    else {
        let action = if authenticated {
            Action::Allow
        } else {
            Action::Deny
        };
        return Some(AuthzDecision {
            action,
            decider: Decider::Default,
            authorization: None,
        });
    };
    let applies = |from: &[Principal]| {
        from.iter().any(|p| match p {
            Principal::Anyone => true,
            Principal::Any => authenticated,
            Principal::Service(s) => peer == Peer::Service(*s),
        })
    };
    for action in [Action::Deny, Action::Allow] {
        for (i, rule) in block.rules.iter().enumerate() {
            if rule.action == action
                && applies(&rule.from)
                && request_matches(&rule.to, method, &path, headers)
            {
                return Some(AuthzDecision {
                    action,
                    decider: Decider::Rule(i),
                    authorization: Some(index),
                });
            }
        }
    }
    Some(AuthzDecision {
        action: block.default,
        decider: Decider::Default,
        authorization: Some(index),
    })
}

/// Whether a normalized request satisfies every clause of `m`.
pub fn request_matches<H: RequestHeaders + ?Sized>(
    m: &RequestMatch,
    method: &str,
    path: &str,
    headers: &H,
) -> bool {
    let path_ok = match &m.path {
        None => true,
        Some(PathMatch::Exact(p)) => p == path,
        Some(PathMatch::Prefix(p)) => precedence::prefix_matches(p, path),
        Some(PathMatch::Regex(r)) => whole_match(r, path),
    };
    let method_ok =
        m.methods.is_empty() || m.methods.iter().any(|x| Some(*x) == Method::parse(method));
    let headers_ok =
        m.headers
            .iter()
            .all(|h| match (&h.value, joined(headers, &h.name).as_deref()) {
                (HeaderValueMatch::Present, v) => v.is_some(),
                (_, None) => false,
                (HeaderValueMatch::Exact(e), Some(v)) => e == v,
                (HeaderValueMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
                (HeaderValueMatch::Regex(r), Some(v)) => whole_match(r, v),
            });
    path_ok && method_ok && headers_ok
}

/// A header as matchers read it, written out plainly: every value, joined in order with
/// `, ` (`; ` for `cookie`).
fn joined<H: RequestHeaders + ?Sized>(headers: &H, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .values(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    if values.is_empty() {
        return None;
    }
    Some(values.join(if name.eq_ignore_ascii_case("cookie") {
        "; "
    } else {
        ", "
    }))
}

fn whole_match(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|r| r.is_match(text))
}

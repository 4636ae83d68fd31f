//! Retries: tries that cannot fit in the route's timeout, and retries that may repeat a POST.
//!
//! `attempts` counts every try, so `per_try_timeout × attempts` is what the tries may take;
//! beyond the route's `timeout` the last tries are cut short (a warning). Retrying after a
//! `reset`, a 5xx or a gRPC status other than `unavailable` means the server may already
//! have acted on the request: for a route that admits POST, PATCH or CONNECT that can
//! apply it twice (an error, unless `non_idempotent true` says the service deduplicates).
//! `connect_failure`, `refused_stream` and gRPC `unavailable` are always safe: the request
//! was never processed.

use mesh_table::{Method, RetryOn, Route, StatusMatch, Table};

use super::{format_ms, sub_loc, Ctx, ErrorSpans, Sources};
use crate::check::RouteSources;
use crate::diag::{Code, Diagnostic};
use crate::source::Loc;

/// gRPC status names as written in `retry { on [...] }` (the checker's list).
const GRPC_NAMES: &[(u8, &str)] = &[
    (1, "cancelled"),
    (4, "deadline_exceeded"),
    (8, "resource_exhausted"),
    (13, "internal"),
    (14, "unavailable"),
];

/// gRPC UNAVAILABLE: the server did not act on the call.
const GRPC_UNAVAILABLE: u8 = 14;

/// Reports retries beyond the timeout and unsafe retries, route by route.
pub(super) fn check(ctx: &mut Ctx<'_>, table: &Table, sources: &Sources, errors: &ErrorSpans) {
    for (route, src) in table.routes.iter().zip(&sources.routes) {
        // Values with errors were defaulted or dropped in elaboration: the numbers and
        // lists in the table are then not the ones written.
        if errors.within_any([
            src.retry.as_ref(),
            src.timeout.as_ref(),
            src.matcher.as_ref(),
        ]) {
            continue;
        }
        exceeds_timeout(ctx, route, src);
        unsafe_retry(ctx, route, src);
    }
}

fn exceeds_timeout(ctx: &mut Ctx<'_>, route: &Route, src: &RouteSources) {
    let (Some(retry), Some(timeout)) = (&route.retry, route.timeout_ms) else {
        return;
    };
    let Some(per_try) = retry.per_try_timeout_ms else {
        return;
    };
    let attempts = u64::from(retry.attempts);
    let total = per_try.saturating_mul(attempts);
    if total <= timeout {
        return;
    }
    let Some(per_try_loc) = &src.per_try_timeout else {
        return;
    };
    let mut d = Diagnostic::new(
        Code::RetryExceedsTimeout,
        per_try_loc,
        format!(
            "{attempts} tries of up to {} each take up to {}, beyond the route's {} timeout: the last tries are cut short",
            format_ms(per_try),
            format_ms(total),
            format_ms(timeout)
        ),
    )
    .label("each try may take this long");
    if let Some(loc) = &src.attempts {
        d = d.with_label(loc, format!("{attempts} tries in all"));
    }
    if let Some(loc) = &src.timeout {
        d = d.with_label(loc, "bounds the whole request, retries included");
    }
    let fitting = timeout / attempts.max(1);
    let help = if fitting > 0 {
        format!(
            "set `per_try_timeout {}` (timeout / attempts) or a `timeout` of at least {}",
            format_ms(fitting),
            format_ms(total)
        )
    } else {
        format!(
            "set a `timeout` of at least {}, or fewer `attempts`",
            format_ms(total)
        )
    };
    ctx.push(d.help(help));
}

fn unsafe_retry(ctx: &mut Ctx<'_>, route: &Route, src: &RouteSources) {
    let Some(retry) = &route.retry else { return };
    if retry.non_idempotent {
        return;
    }
    let unsafe_on: Vec<&RetryOn> = retry.on.iter().filter(|c| !is_safe(**c)).collect();
    if unsafe_on.is_empty() {
        return;
    }
    let methods = &route.matcher.methods;
    let risky: Vec<Method> = if methods.is_empty() {
        Method::ALL
            .into_iter()
            .filter(|m| !m.is_idempotent())
            .collect()
    } else {
        methods
            .iter()
            .copied()
            .filter(|m| !m.is_idempotent())
            .collect()
    };
    if risky.is_empty() {
        return;
    }
    let risky_names: Vec<&str> = risky.iter().map(|m| m.as_str()).collect();
    let conditions: Vec<String> = unsafe_on
        .iter()
        .map(|c| format!("`{}`", condition_text(**c)))
        .collect();
    let primary = src
        .retry_on
        .as_ref()
        .or(src.retry.as_ref())
        .unwrap_or(&src.name);
    let mut labels: Vec<(Loc, String)> = Vec::new();
    if let Some(on) = &src.retry_on {
        for c in &unsafe_on {
            if let Some(loc) = token_loc(on, &condition_text(**c)) {
                labels.push((
                    loc,
                    "the server may already have acted on the request".into(),
                ));
            }
        }
    }
    let (first_loc, first_label) = labels.first().cloned().unwrap_or_else(|| {
        (
            primary.clone(),
            format!("retries on {}", conditions.join(", ")),
        )
    });
    let mut d = Diagnostic::new(
        Code::UnsafeRetry,
        &first_loc,
        format!(
            "the route `{}` retries on {} but admits {}: a retried request may be applied twice",
            route.name,
            conditions.join(", "),
            join_and(&risky_names)
        ),
    )
    .label(first_label);
    for (loc, label) in labels.iter().skip(1) {
        d = d.with_label(loc, label.clone());
    }
    d = match &src.methods {
        Some(loc) => d.with_label(
            loc,
            format!(
                "admits {}, which are not idempotent",
                join_and(&risky_names)
            ),
        ),
        None => d.with_label(
            &src.name,
            "has no `method` clause: admits every method, POST and PATCH included",
        ),
    };
    ctx.push(d.help(
        "restrict the route to idempotent methods, retry only on connect_failure/refused_stream/unavailable, or set `non_idempotent true` if the service deduplicates",
    ));
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Whether retrying on `c` is safe for any method: the request was certainly not processed.
fn is_safe(c: RetryOn) -> bool {
    match c {
        RetryOn::ConnectFailure | RetryOn::RefusedStream => true,
        RetryOn::Grpc(code) => code == GRPC_UNAVAILABLE,
        // Only 5xx are unsafe (docs/language.md): a 4xx is the client's fault and retrying it is
        // pointless rather than dangerous.
        RetryOn::Status(StatusMatch::Class(class)) => class != 5,
        RetryOn::Status(StatusMatch::Code(code)) => !(500..600).contains(&code),
        RetryOn::Reset => false,
    }
}

/// A retry condition as written in the policy.
fn condition_text(c: RetryOn) -> String {
    match c {
        RetryOn::ConnectFailure => "connect_failure".into(),
        RetryOn::RefusedStream => "refused_stream".into(),
        RetryOn::Reset => "reset".into(),
        RetryOn::Status(StatusMatch::Class(class)) => format!("{class}xx"),
        RetryOn::Status(StatusMatch::Code(code)) => code.to_string(),
        RetryOn::Grpc(code) => GRPC_NAMES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or_else(|| format!("grpc {code}"), |(_, name)| (*name).to_string()),
    }
}

/// The location of the whole token `token` inside `loc` (a list such as `[reset, 503]`).
fn token_loc(loc: &Loc, token: &str) -> Option<Loc> {
    let text = loc.text();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(token)
        .find(|(at, _)| {
            let before = text.get(..*at).and_then(|s| s.chars().next_back());
            let after = text.get(at + token.len()..).and_then(|s| s.chars().next());
            !before.is_some_and(is_word) && !after.is_some_and(is_word)
        })
        .map(|(at, _)| sub_loc(loc, at, at + token.len()))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_clean, diagnostics, label_positions};
    use crate::diag::Code;

    const SERVICE: &str = "service a { port 80 }\n";

    #[test]
    fn tries_beyond_the_timeout_are_a_warning() {
        let text = format!(
            "{SERVICE}route r on a {{\n  timeout 1s\n  retry {{\n    attempts 3\n    per_try_timeout 500ms\n  }}\n}}\n"
        );
        let ds = diagnostics(&text, Code::RetryExceedsTimeout);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(7, 21), (6, 14), (4, 11)]);
        assert!(
            ds[0]
                .message
                .contains("3 tries of up to 500ms each take up to 1500ms"),
            "{}",
            ds[0].message
        );
        assert_eq!(
            ds[0].help.as_deref(),
            Some("set `per_try_timeout 333ms` (timeout / attempts) or a `timeout` of at least 1500ms")
        );
    }

    #[test]
    fn tries_that_fit_are_fine() {
        assert_clean(&format!(
            "{SERVICE}route r on a {{\n  timeout 1500ms\n  retry {{\n    attempts 3\n    per_try_timeout 500ms\n  }}\n}}\n"
        ));
        // No timeout, or no per-try timeout: nothing to compare.
        assert_clean(&format!("{SERVICE}route r on a {{\n  retry {{\n    attempts 3\n    per_try_timeout 5s\n  }}\n}}\n"));
        assert_clean(&format!(
            "{SERVICE}route r on a {{\n  timeout 1s\n  retry {{\n    attempts 3\n  }}\n}}\n"
        ));
    }

    #[test]
    fn retrying_a_post_on_reset_or_5xx_is_an_error() {
        let text = format!(
            "{SERVICE}route r on a {{\n  match {{ method [GET, POST] }}\n  retry {{\n    attempts 2\n    on [connect_failure, reset, 5xx]\n  }}\n}}\n"
        );
        let ds = diagnostics(&text, Code::UnsafeRetry);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(7, 26), (7, 33), (4, 11)]);
        assert!(
            ds[0]
                .message
                .contains("retries on `reset`, `5xx` but admits POST"),
            "{}",
            ds[0].message
        );
        assert_eq!(
            ds[0].help.as_deref(),
            Some("restrict the route to idempotent methods, retry only on connect_failure/refused_stream/unavailable, or set `non_idempotent true` if the service deduplicates")
        );
    }

    #[test]
    fn a_route_without_methods_admits_post() {
        let text = format!(
            "{SERVICE}route r on a {{\n  retry {{\n    attempts 2\n    on [503]\n  }}\n}}\n"
        );
        let ds = diagnostics(&text, Code::UnsafeRetry);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(6, 9), (3, 7)]);
        assert!(
            ds[0].message.contains("admits POST, CONNECT and PATCH"),
            "{}",
            ds[0].message
        );
        let grpc = format!(
            "{SERVICE}route r on a {{\n  retry {{\n    attempts 2\n    on [internal]\n  }}\n}}\n"
        );
        assert_eq!(diagnostics(&grpc, Code::UnsafeRetry).len(), 1);
    }

    #[test]
    fn safe_retries_are_fine() {
        for (methods, on, extra) in [
            ("", "[connect_failure, refused_stream, unavailable]", ""),
            (
                "match { method [GET, HEAD, PUT, DELETE] }",
                "[reset, 5xx, 503, internal]",
                "",
            ),
            ("", "[reset, 503]", "non_idempotent true"),
            ("match { method [POST] }", "[429, 4xx]", ""),
        ] {
            assert_clean(&format!(
                "{SERVICE}route r on a {{\n  {methods}\n  retry {{\n    attempts 2\n    on {on}\n    {extra}\n  }}\n}}\n"
            ));
        }
        // The default conditions (connect_failure, refused_stream) are safe.
        assert_clean(&format!(
            "{SERVICE}route r on a {{\n  retry {{ attempts 2 }}\n}}\n"
        ));
    }
}

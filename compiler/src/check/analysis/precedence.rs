//! Route precedence: routes that tie for the same request (ambiguous) and routes never chosen.
//!
//! Routes compete per service, by [`mesh_table::precedence::rank`], the ordering the proxy
//! uses. Two routes of equal rank that can match one request are an error: which one wins
//! would depend on something the policy does not say. A route every one of whose requests
//! a higher-ranked route also matches is never chosen: a warning, with the route that takes
//! its requests. Both verdicts are reported only when certain (see `requests`).

use std::collections::{BTreeMap, HashMap};

use mesh_table::precedence::{rank, PathClass, Rank};
use mesh_table::{HeaderMatch, HeaderValueMatch, PathMatch, Route, Table};

use super::requests::{self, path_or_root, PathRef, Regexes};
use super::{Ctx, ErrorSpans, Sources};
use crate::check::RouteSources;
use crate::diag::{Code, Diagnostic};

/// One route taking part, with what the analysis needs of it.
struct Entry<'t> {
    route: &'t Route,
    src: &'t RouteSources,
    rank: Rank,
}

/// Reports ambiguous and never-chosen routes, service by service.
pub(super) fn check(
    ctx: &mut Ctx<'_>,
    table: &Table,
    sources: &Sources,
    errors: &ErrorSpans,
    regexes: &mut Regexes,
) {
    let mut by_service: BTreeMap<u32, Vec<Entry<'_>>> = BTreeMap::new();
    for (i, route) in table.routes.iter().enumerate() {
        let Some(src) = sources.routes.get(i) else {
            continue;
        };
        // A matcher with an error lost a piece in elaboration (a path, a method): its
        // table form matches more than was written, so any verdict on it would be wrong.
        if errors.within_any([src.matcher.as_ref()]) {
            continue;
        }
        by_service.entry(route.service).or_default().push(Entry {
            route,
            src,
            rank: rank(&route.matcher),
        });
    }
    for (service, mut entries) in by_service {
        let service_name = table
            .services
            .get(service as usize)
            .map_or("?", |s| s.name.as_str());
        // Source order, so the pair's primary label is always the later declaration.
        entries.sort_by_cached_key(|e| (ctx.file_id(&e.src.name), e.src.name.span.start));
        let mut live = Vec::with_capacity(entries.len());
        for entry in entries {
            if unsatisfiable(ctx, &entry, regexes) {
                continue;
            }
            live.push(entry);
        }
        ambiguous(ctx, service_name, &live, regexes);
        never_chosen(ctx, &live, regexes);
    }
}

/// A route whose own header conditions contradict each other matches no request at all.
fn unsatisfiable(ctx: &mut Ctx<'_>, entry: &Entry<'_>, regexes: &mut Regexes) -> bool {
    let Some((a, b)) = requests::contradiction(&entry.route.matcher.headers, regexes) else {
        return false;
    };
    let name = &entry.route.name;
    let mut d = Diagnostic::new(
        Code::UnreachableRoute,
        &entry.src.name,
        format!(
            "the route `{name}` can never match: the header `{}` cannot be both {} and {}",
            a.name,
            describe_header(a),
            describe_header(b)
        ),
    )
    .label("matches no request");
    if let Some(matcher) = &entry.src.matcher {
        d = d.with_label(matcher, "these header conditions contradict each other");
    }
    ctx.push(d.help(format!(
        "remove one of the `header \"{}\"` conditions, or the route",
        a.name
    )));
    true
}

/// Reports every pair of equal rank that can match one request.
fn ambiguous(ctx: &mut Ctx<'_>, service: &str, entries: &[Entry<'_>], regexes: &mut Regexes) {
    // Only equal ranks compete, and among exact and prefix paths only equal strings overlap
    // (equal prefix ranks have equal lengths): group by both so the pairwise step stays small.
    let mut groups: HashMap<(Rank, Option<&str>), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let key = match path_or_root(e.route.matcher.path.as_ref()) {
            PathRef::Exact(p) | PathRef::Prefix(p) => Some(p),
            PathRef::Regex(_) => None,
        };
        groups.entry((e.rank, key)).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for group in groups {
        for (n, &i) in group.iter().enumerate() {
            for &j in group.iter().skip(n + 1) {
                let (Some(first), Some(second)) = (entries.get(i), entries.get(j)) else {
                    continue;
                };
                if let Some(example) = overlap(first, second, regexes) {
                    report_ambiguous(ctx, service, first, second, &example);
                }
            }
        }
    }
}

/// An example request both routes match (`POST /v1/charge`), when they certainly overlap.
fn overlap(a: &Entry<'_>, b: &Entry<'_>, regexes: &mut Regexes) -> Option<String> {
    let (ma, mb) = (&a.route.matcher, &b.route.matcher);
    let method = requests::shared_method(&ma.methods, &mb.methods)?;
    if !requests::headers_compatible(&ma.headers, &mb.headers, regexes) {
        return None;
    }
    let path = requests::shared_path(
        path_or_root(ma.path.as_ref()),
        path_or_root(mb.path.as_ref()),
        regexes,
    )?;
    Some(if path.is_empty() {
        String::new()
    } else {
        format!("{} {path}", method.as_str())
    })
}

fn report_ambiguous(
    ctx: &mut Ctx<'_>,
    service: &str,
    first: &Entry<'_>,
    second: &Entry<'_>,
    example: &str,
) {
    let (a, b) = (&first.route.name, &second.route.name);
    let what = if example.is_empty() {
        "the same requests".to_string()
    } else {
        format!("`{example}`")
    };
    let headers =
        if first.route.matcher.headers.is_empty() && second.route.matcher.headers.is_empty() {
            String::new()
        } else {
            " (with the headers both require)".to_string()
        };
    ctx.push(
        Diagnostic::new(
            Code::AmbiguousRoute,
            &second.src.name,
            format!("the routes `{a}` and `{b}` on `{service}` both match {what}{headers} with the same precedence"),
        )
        .label(format!("`{b}` matches the same requests as `{a}`"))
        .with_label(&first.src.name, format!("`{a}` ranks the same"))
        .help("make one more specific (add a method or header matcher) or merge them"),
    );
}

/// Reports each route that a higher-ranked route of its service always takes over.
fn never_chosen(ctx: &mut Ctx<'_>, entries: &[Entry<'_>], regexes: &mut Regexes) {
    // Index the possible coverers by path, so each route looks only at routes whose path
    // can cover its own (the ancestors of its path) instead of at every route.
    let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_exact: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_regex: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        match path_or_root(e.route.matcher.path.as_ref()) {
            PathRef::Prefix(p) => by_prefix.entry(p).or_default().push(i),
            PathRef::Exact(p) => by_exact.entry(p).or_default().push(i),
            PathRef::Regex(p) => by_regex.entry(p).or_default().push(i),
        }
    }
    for (i, inner) in entries.iter().enumerate() {
        let mut candidates: Vec<usize> = Vec::new();
        let text = match &inner.route.matcher.path {
            None => "/".to_string(),
            Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) => p.clone(),
            Some(PathMatch::Regex(r)) => {
                candidates.extend(by_regex.get(r.as_str()).into_iter().flatten());
                let (literal, whole) = requests::literal_prefix(r);
                if whole {
                    candidates.extend(by_exact.get(literal.as_str()).into_iter().flatten());
                }
                literal
            }
        };
        candidates.extend(by_exact.get(text.as_str()).into_iter().flatten());
        candidates.extend(by_prefix.get("/").into_iter().flatten());
        for (at, _) in text.match_indices('/') {
            for ancestor in [text.get(..at), text.get(..=at)].into_iter().flatten() {
                if ancestor != "/" {
                    candidates.extend(by_prefix.get(ancestor).into_iter().flatten());
                }
            }
        }
        if text != "/" && !text.is_empty() {
            candidates.extend(by_prefix.get(text.as_str()).into_iter().flatten());
        }
        candidates.sort_unstable();
        candidates.dedup();
        // The highest-ranked coverer is the one to name: it is where the requests go.
        let coverer = candidates
            .into_iter()
            .filter(|&j| j != i)
            .filter_map(|j| entries.get(j))
            .filter(|outer| outer.rank > inner.rank && covers(outer, inner, regexes))
            .max_by_key(|outer| outer.rank);
        if let Some(outer) = coverer {
            report_never_chosen(ctx, inner, outer);
        }
    }
}

/// Whether `outer` matches every request `inner` matches.
fn covers(outer: &Entry<'_>, inner: &Entry<'_>, regexes: &mut Regexes) -> bool {
    let (o, i) = (&outer.route.matcher, &inner.route.matcher);
    requests::methods_cover(&o.methods, &i.methods)
        && requests::headers_imply(&i.headers, &o.headers, regexes)
        && requests::path_covers(
            path_or_root(o.path.as_ref()),
            path_or_root(i.path.as_ref()),
            regexes,
        )
}

fn report_never_chosen(ctx: &mut Ctx<'_>, inner: &Entry<'_>, outer: &Entry<'_>) {
    let (a, b) = (&inner.route.name, &outer.route.name);
    ctx.push(
        Diagnostic::new(
            Code::UnreachableRoute,
            &inner.src.name,
            format!("the route `{a}` is never chosen: `{b}` matches every request it matches and ranks higher"),
        )
        .label("never chosen")
        .with_label(&outer.src.name, format!("`{b}` takes its requests: {}", why_higher(outer.rank, inner.rank)))
        .help(format!(
            "`{b}` takes every request `{a}` matches: remove `{a}`, or narrow `{b}` (a longer path, a method or a header) so it leaves `{a}` some requests"
        )),
    );
}

/// Why `high` outranks `low`, in the words of the language reference (docs/language.md).
fn why_higher(high: Rank, low: Rank) -> String {
    if high.class != low.class {
        let name = |c: PathClass| match c {
            PathClass::Exact => "an exact path",
            PathClass::Prefix => "a prefix",
            PathClass::Regex => "a regex",
        };
        format!("{} beats {}", name(high.class), name(low.class))
    } else if high.path_len != low.path_len {
        "a longer prefix beats a shorter one".into()
    } else if high.names_methods != low.names_methods {
        "a route that names methods beats one that does not".into()
    } else {
        format!("{} header matchers beat {}", high.headers, low.headers)
    }
}

/// A header condition as written: `exact "1"`.
fn describe_header(h: &HeaderMatch) -> String {
    match &h.value {
        HeaderValueMatch::Exact(v) => format!("`exact {v:?}`"),
        HeaderValueMatch::Prefix(v) => format!("`prefix {v:?}`"),
        HeaderValueMatch::Regex(v) => format!("`regex {v:?}`"),
        HeaderValueMatch::Present => "`present`".into(),
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::time::Instant;

    use super::super::test_support::{
        assert_clean, check_text, diagnostics, label_positions, MESH,
    };
    use crate::diag::Code;

    const SERVICE: &str = "service a { port 80 }\n";
    const AMBIGUOUS_HELP: &str =
        "make one more specific (add a method or header matcher) or merge them";

    fn routes(matchers: &[&str]) -> String {
        let mut text = SERVICE.to_string();
        for (i, m) in matchers.iter().enumerate() {
            let _ = writeln!(text, "route r{i} on a {{ match {{ {m} }} }}");
        }
        text
    }

    #[test]
    fn equal_routes_are_ambiguous_and_both_are_labelled() {
        let ds = diagnostics(
            &routes(&["path prefix \"/v1\"", "path prefix \"/v1\""]),
            Code::AmbiguousRoute,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(4, 7), (3, 7)]);
        assert!(
            ds[0]
                .message
                .contains("`r0` and `r1` on `a` both match `GET /v1`"),
            "{}",
            ds[0].message
        );
        assert_eq!(ds[0].help.as_deref(), Some(AMBIGUOUS_HELP));
        assert!(ds[0].is_error());
    }

    #[test]
    fn overlapping_equal_ranks_are_ambiguous() {
        for pair in [
            ["method [GET, POST]", "method [POST]"],
            [
                "path exact \"/x\"  method [GET]",
                "path exact \"/x\"  method [GET, PUT]",
            ],
            ["header \"x-a\" present", "header \"x-b\" exact \"1\""],
            [
                "header \"x-a\" prefix \"ab\"",
                "header \"x-a\" exact \"abc\"",
            ],
            [
                "header \"x-a\" regex \"[0-9]+\"",
                "header \"x-a\" prefix \"4\"",
            ],
            ["path regex \"/v1/[a-z]+\"", "path regex \"/v1/.*\""],
            ["path regex \"/v1/[0-9]+\"", "path regex \"/v1/[0-9]+\""],
        ] {
            let ds = diagnostics(&routes(&pair), Code::AmbiguousRoute);
            assert_eq!(ds.len(), 1, "{pair:?}: {ds:#?}");
        }
        // A route without `match` is `prefix "/"`.
        let text = format!("{SERVICE}route r0 on a {{ to a }}\nroute r1 on a {{ match {{ path prefix \"/\" }} }}\n");
        assert_eq!(diagnostics(&text, Code::AmbiguousRoute).len(), 1);
        let ds = diagnostics(
            &routes(&["path regex \"/v1/[a-z]+\"", "path regex \"/v1/.*\""]),
            Code::AmbiguousRoute,
        );
        assert!(ds[0].message.contains("`GET /v1/a`"), "{}", ds[0].message);
        let ds = diagnostics(
            &routes(&["method [GET, POST]", "method [POST]"]),
            Code::AmbiguousRoute,
        );
        assert!(ds[0].message.contains("`POST /`"), "{}", ds[0].message);
    }

    #[test]
    fn routes_that_cannot_share_a_request_are_not_ambiguous() {
        for pair in [
            ["path prefix \"/v1\"", "path prefix \"/v2\""],
            ["path exact \"/a\"", "path exact \"/b\""],
            ["path exact \"/x\"", "path exact \"/x\"  method [GET]"],
            ["method [GET]", "method [POST]"],
            ["header \"x-a\" exact \"1\"", "header \"x-a\" exact \"2\""],
            [
                "header \"x-a\" prefix \"ab\"",
                "header \"x-a\" prefix \"cd\"",
            ],
            [
                "header \"x-a\" exact \"1\"",
                "header \"x-a\" regex \"[a-z]+\"",
            ],
            ["path regex \"/v1/[0-9]+\"", "path regex \"/v2/.*\""],
            ["path regex \"/v1/[0-9]+\"", "path regex \"/v1/[a-z]+\""],
        ] {
            let text = routes(&pair);
            assert!(
                diagnostics(&text, Code::AmbiguousRoute).is_empty(),
                "{pair:?}"
            );
            assert!(
                diagnostics(&text, Code::UnreachableRoute).is_empty(),
                "{pair:?}"
            );
        }
        // The same matchers on different services do not compete.
        assert_clean("service a { port 80 }\nservice b { port 81 }\nroute ra on a { to a }\nroute rb on b { to b }\n");
    }

    #[test]
    fn a_route_covered_by_a_higher_one_is_never_chosen() {
        let ds = diagnostics(
            &routes(&[
                "path regex \"/v1/users/[0-9]+\"",
                "path prefix \"/v1/users\"",
            ]),
            Code::UnreachableRoute,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(3, 7), (4, 7)]);
        assert!(
            ds[0].labels[1].message.contains("a prefix beats a regex"),
            "{:?}",
            ds[0].labels[1]
        );
        assert!(ds[0]
            .help
            .as_deref()
            .is_some_and(|h| h.starts_with("`r1` takes every request `r0` matches")));
        assert!(!ds[0].is_error());
        let all_methods = "method [GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH]";
        for pair in [
            [
                "path prefix \"/v1\"".to_string(),
                format!("path prefix \"/v1\"  {all_methods}"),
            ],
            [
                "path exact \"/x\"".to_string(),
                format!("path exact \"/x\"  {all_methods}"),
            ],
            [
                "path regex \"/health\"".to_string(),
                "path exact \"/health\"".to_string(),
            ],
            [
                "path regex \"/v1/x/.*\"  method [GET]".to_string(),
                "path prefix \"/v1/\"".to_string(),
            ],
            [
                "method [GET]  header \"x-a\" exact \"1\"".to_string(),
                "method [GET, POST]  header \"x-a\" present  header \"x-a\" prefix \"1\""
                    .to_string(),
            ],
        ] {
            let refs: Vec<&str> = pair.iter().map(String::as_str).collect();
            let ds = diagnostics(&routes(&refs), Code::UnreachableRoute);
            assert_eq!(ds.len(), 1, "{pair:?}: {ds:#?}");
            assert_eq!(
                ds[0].primary().map(crate::source::Loc::line_col),
                Some((3, 7)),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn partially_covered_routes_are_reachable() {
        for pair in [
            ["path regex \"/v1/users.*\"", "path prefix \"/v1/users\""],
            ["path prefix \"/v1\"", "path prefix \"/v1/x\""],
            ["path prefix \"/v1\"", "path prefix \"/v1\"  method [GET]"],
            [
                "path prefix \"/v1\"  method [GET, POST]",
                "path prefix \"/v1/\"  method [GET]",
            ],
            [
                "path prefix \"/v1\"",
                "path prefix \"/v1\"  header \"x\" present",
            ],
            [
                "header \"x\" prefix \"a\"",
                "header \"x\" exact \"a\"  method [GET]",
            ],
            ["path regex \"/(a|b)/x\"", "path prefix \"/a\""],
        ] {
            let text = routes(&pair);
            assert!(
                diagnostics(&text, Code::UnreachableRoute).is_empty(),
                "{pair:?}"
            );
        }
    }

    #[test]
    fn contradictory_headers_never_match() {
        let ds = diagnostics(
            &routes(&["header \"x-a\" exact \"1\"  header \"x-a\" exact \"2\""]),
            Code::UnreachableRoute,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(3, 7), (3, 17)]);
        assert!(
            ds[0]
                .message
                .contains("cannot be both `exact \"1\"` and `exact \"2\"`"),
            "{}",
            ds[0].message
        );
        assert_eq!(
            ds[0].help.as_deref(),
            Some("remove one of the `header \"x-a\"` conditions, or the route")
        );
    }

    #[test]
    fn the_shop_routes_are_neither_ambiguous_nor_unreachable() {
        assert_clean(
            "service payments { port 80 }\n\
             route charge on payments { match { path prefix \"/v1/charge\"  method [POST] } }\n\
             route canary-pin on payments { match { path prefix \"/v1/charge\"  method [POST]  header \"x-canary\" exact \"1\" } }\n\
             route receipts on payments { match { path prefix \"/v1/receipts\"  method [GET, HEAD] } }\n\
             route payments-rest on payments { match { path prefix \"/\" } }\n",
        );
    }

    #[test]
    fn a_route_whose_matcher_has_an_error_is_left_alone() {
        // The invalid path leaves the route without one in the table, as if `prefix "/"`.
        let text = routes(&["path prefix \"v1\"", "path prefix \"/\""]);
        let checked = check_text(&format!("{MESH}{text}"));
        let codes: Vec<Code> = checked.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::InvalidPath]);
    }

    /// A policy the size of a large mesh: `services` services, ten routes and ten rules each.
    fn large_policy(services: usize) -> String {
        let mut text = String::from(MESH);
        for s in 0..services {
            let _ = writeln!(text, "service s{s} {{ port 80 }}");
            // A catch-all of every method would take all of the regex route's requests (a
            // prefix beats a regex): this one leaves it the non-GET ones.
            let _ = writeln!(
                text,
                "route s{s}-root on s{s} {{ match {{ method [GET] }}  to s{s} }}"
            );
            let _ = writeln!(
                text,
                "route s{s}-rx on s{s} {{ match {{ path regex \"/rx/[0-9]+\" }} }}"
            );
            for r in 0..8 {
                let _ = writeln!(
                    text,
                    "route s{s}-r{r} on s{s} {{ match {{ path prefix \"/v1/r{r}\"  method [GET]  header \"x-t\" exact \"{r}\" }}  timeout 1s }}"
                );
            }
            let _ = writeln!(text, "authorize s{s} {{");
            for r in 0..5 {
                let _ = writeln!(text, "  deny from any to path prefix \"/internal/{r}\"");
                let _ = writeln!(
                    text,
                    "  allow from s{} to method [GET] path prefix \"/v1/r{r}\"",
                    (s + 1) % services
                );
            }
            let _ = writeln!(text, "}}");
        }
        text
    }

    #[test]
    fn a_generated_policy_checks_cleanly() {
        let checked = check_text(&large_policy(50));
        assert!(
            checked.diagnostics.is_empty(),
            "{:#?}",
            checked.diagnostics.first()
        );
    }

    /// 1,000 services, 10,000 routes, 10,000 rules; run with `--release -- --ignored`.
    #[test]
    #[ignore = "timing: meaningful in release builds only"]
    fn a_large_policy_checks_in_well_under_a_second() {
        let text = large_policy(1_000);
        let start = Instant::now();
        let checked = check_text(&text);
        let elapsed = start.elapsed();
        assert!(
            checked.diagnostics.is_empty(),
            "{:#?}",
            checked.diagnostics.first()
        );
        assert!(elapsed.as_millis() < 1_000, "{elapsed:?}");
        eprintln!("checked 10,000 routes and 10,000 rules in {elapsed:?}");
    }
}

//! Why each route of a service was chosen, lost, or did not match a request.

use std::cmp::Reverse;

use mesh_engine::header_value;
use mesh_engine::reference::request_matches;
use mesh_table::precedence::{rank, PathClass, Rank};
use mesh_table::{
    HeaderMatch, HeaderValueMatch, Method, PathMatch, RequestMatch, ServiceId, Table,
};

/// One route of the service, and what became of it for the request.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCheck {
    /// Index into `Table::routes`.
    pub index: usize,
    /// Chosen, lost, or missed.
    pub outcome: RouteOutcome,
}

/// What became of a route.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteOutcome {
    /// The engine chose it.
    Chosen,
    /// It matched, but the chosen route ranks higher.
    Lost(LostBecause),
    /// It did not match: these clauses failed.
    Missed(Vec<Miss>),
}

/// Why a matching route lost to the chosen one (the first precedence step that differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostBecause {
    /// An exact path beats a prefix.
    ExactBeatsPrefix,
    /// An exact path beats a regex.
    ExactBeatsRegex,
    /// A prefix beats a regex.
    PrefixBeatsRegex,
    /// The chosen route's prefix is longer.
    LongerPrefix {
        /// The chosen prefix's length in bytes.
        chosen: usize,
        /// This route's.
        this: usize,
    },
    /// The chosen route names methods; this one does not.
    NamesMethods,
    /// The chosen route has more header matchers.
    MoreHeaders {
        /// The chosen route's count.
        chosen: usize,
        /// This route's.
        this: usize,
    },
    /// Equal rank: the engine takes the route that comes first in the table (by name).
    Earlier,
    /// This route ranks higher, yet the engine chose the other (never expected).
    EngineChoseOther,
}

impl std::fmt::Display for LostBecause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LostBecause::ExactBeatsPrefix => f.write_str("exact beats prefix"),
            LostBecause::ExactBeatsRegex => f.write_str("exact beats regex"),
            LostBecause::PrefixBeatsRegex => f.write_str("prefix beats regex"),
            LostBecause::LongerPrefix { chosen, this } => {
                write!(f, "longer prefix ({chosen} bytes against {this})")
            }
            LostBecause::NamesMethods => f.write_str("names methods"),
            LostBecause::MoreHeaders { chosen, this } => {
                write!(f, "more header matchers ({chosen} against {this})")
            }
            LostBecause::Earlier => f.write_str("same rank; it comes first by name"),
            LostBecause::EngineChoseOther => {
                f.write_str("ranks higher, yet the engine chose the other")
            }
        }
    }
}

/// A clause of a route's `match` that the request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// The path condition.
    Path(PathMatch),
    /// The methods.
    Method(Vec<Method>),
    /// A header condition, and the request's value of the header.
    Header(HeaderMatch, Option<String>),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Path(p) => write!(f, "path: not {}", describe_path(p)),
            Miss::Method(methods) => {
                let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                write!(f, "method: not one of [{}]", names.join(", "))
            }
            Miss::Header(h, None) => {
                write!(f, "header: no `{}` (wants {})", h.name, describe_header(h))
            }
            Miss::Header(h, Some(value)) => {
                write!(
                    f,
                    "header: `{}: {value}` is not {}",
                    h.name,
                    describe_header(h)
                )
            }
        }
    }
}

/// A path condition as written: `prefix "/v1"`.
pub fn describe_path(p: &PathMatch) -> String {
    match p {
        PathMatch::Exact(s) => format!("exact {s:?}"),
        PathMatch::Prefix(s) => format!("prefix {s:?}"),
        PathMatch::Regex(s) => format!("regex {s:?}"),
    }
}

/// A header condition as written: `header "x-canary" exact "1"`.
pub fn describe_header(h: &HeaderMatch) -> String {
    match &h.value {
        HeaderValueMatch::Exact(v) => format!("header {:?} exact {v:?}", h.name),
        HeaderValueMatch::Prefix(v) => format!("header {:?} prefix {v:?}", h.name),
        HeaderValueMatch::Regex(v) => format!("header {:?} regex {v:?}", h.name),
        HeaderValueMatch::Present => format!("header {:?} present", h.name),
    }
}

/// Every route of `service` in the order the engine tries them (highest rank first, then
/// table order), each marked chosen (`chosen`, the engine's pick), lost or missed. `path` is
/// the normalized path.
pub fn explain_routes(
    table: &Table,
    service: ServiceId,
    chosen: Option<usize>,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Vec<RouteCheck> {
    let mut routes: Vec<(usize, Rank)> = table
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.service == service)
        .map(|(i, r)| (i, rank(&r.matcher)))
        .collect();
    routes.sort_by_key(|&(i, r)| (Reverse(r), i));
    let chosen_rank = chosen
        .and_then(|c| table.routes.get(c))
        .map(|r| rank(&r.matcher));
    routes
        .into_iter()
        .map(|(index, this)| {
            let matcher = table.routes.get(index).map(|r| &r.matcher);
            let outcome = if Some(index) == chosen {
                RouteOutcome::Chosen
            } else {
                let misses = matcher.map_or_else(Vec::new, |m| misses(m, method, path, headers));
                match chosen_rank {
                    Some(winner) if misses.is_empty() => {
                        RouteOutcome::Lost(lost_because(winner, this))
                    }
                    // Matching with no route chosen would be an engine disagreement; show
                    // the route as matched rather than invent a clause that failed.
                    None if misses.is_empty() => RouteOutcome::Lost(LostBecause::EngineChoseOther),
                    _ => RouteOutcome::Missed(misses),
                }
            };
            RouteCheck { index, outcome }
        })
        .collect()
}

/// Why `this` lost to `winner`: the first step of the precedence order where they differ.
fn lost_because(winner: Rank, this: Rank) -> LostBecause {
    if this > winner {
        return LostBecause::EngineChoseOther;
    }
    match (winner.class, this.class) {
        (PathClass::Exact, PathClass::Prefix) => return LostBecause::ExactBeatsPrefix,
        (PathClass::Exact, PathClass::Regex) => return LostBecause::ExactBeatsRegex,
        (PathClass::Prefix, PathClass::Regex) => return LostBecause::PrefixBeatsRegex,
        _ => {}
    }
    if winner.path_len != this.path_len {
        LostBecause::LongerPrefix {
            chosen: winner.path_len,
            this: this.path_len,
        }
    } else if winner.names_methods != this.names_methods {
        LostBecause::NamesMethods
    } else if winner.headers != this.headers {
        LostBecause::MoreHeaders {
            chosen: winner.headers,
            this: this.headers,
        }
    } else {
        LostBecause::Earlier
    }
}

/// The clauses of `m` that the request fails, each tested on its own with the reference
/// evaluator.
fn misses(m: &RequestMatch, method: &str, path: &str, headers: &[(String, String)]) -> Vec<Miss> {
    let only =
        |path: Option<PathMatch>, methods: Vec<Method>, headers: Vec<HeaderMatch>| RequestMatch {
            path,
            methods,
            headers,
        };
    let mut out = Vec::new();
    if let Some(p) = &m.path {
        if !request_matches(
            &only(Some(p.clone()), Vec::new(), Vec::new()),
            method,
            path,
            headers,
        ) {
            out.push(Miss::Path(p.clone()));
        }
    }
    if !request_matches(
        &only(None, m.methods.clone(), Vec::new()),
        method,
        path,
        headers,
    ) {
        out.push(Miss::Method(m.methods.clone()));
    }
    for h in &m.headers {
        if !request_matches(
            &only(None, Vec::new(), vec![h.clone()]),
            method,
            path,
            headers,
        ) {
            // As every matcher reads it: repeated values joined (`header_value`).
            let value = header_value(headers, &h.name).map(std::borrow::Cow::into_owned);
            out.push(Miss::Header(h.clone(), value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{lost_because, LostBecause};
    use mesh_table::precedence::rank;
    use mesh_table::{HeaderMatch, HeaderValueMatch, Method, PathMatch, RequestMatch};

    fn prefix(p: &str) -> RequestMatch {
        RequestMatch {
            path: Some(PathMatch::Prefix(p.into())),
            ..RequestMatch::default()
        }
    }

    #[test]
    fn the_first_differing_step_is_the_reason() {
        let exact = RequestMatch {
            path: Some(PathMatch::Exact("/v1".into())),
            ..RequestMatch::default()
        };
        let regex = RequestMatch {
            path: Some(PathMatch::Regex("/v.*".into())),
            ..RequestMatch::default()
        };
        let post = RequestMatch {
            methods: vec![Method::Post],
            ..prefix("/v1")
        };
        let header = RequestMatch {
            headers: vec![HeaderMatch {
                name: "x".into(),
                value: HeaderValueMatch::Present,
            }],
            ..post.clone()
        };
        let r = |m: &RequestMatch| rank(m);
        assert_eq!(
            lost_because(r(&exact), r(&prefix("/v1"))),
            LostBecause::ExactBeatsPrefix
        );
        assert_eq!(
            lost_because(r(&exact), r(&regex)),
            LostBecause::ExactBeatsRegex
        );
        assert_eq!(
            lost_because(r(&prefix("/")), r(&regex)),
            LostBecause::PrefixBeatsRegex
        );
        assert_eq!(
            lost_because(r(&prefix("/v1")), r(&prefix("/"))),
            LostBecause::LongerPrefix { chosen: 3, this: 1 }
        );
        assert_eq!(
            lost_because(r(&post), r(&prefix("/v1"))),
            LostBecause::NamesMethods
        );
        assert_eq!(
            lost_because(r(&header), r(&post)),
            LostBecause::MoreHeaders { chosen: 1, this: 0 }
        );
        assert_eq!(lost_because(r(&post), r(&post)), LostBecause::Earlier);
        assert_eq!(
            lost_because(r(&prefix("/")), r(&post)),
            LostBecause::EngineChoseOther
        );
    }
}

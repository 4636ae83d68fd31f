//! Request matchers shared by routes and authorization rules: paths, methods and headers.

use mesh_table::{HeaderMatch, HeaderValueMatch, Method, PathMatch, RequestMatch};

use super::Ctx;
use crate::diag::{Code, Diagnostic};
use crate::source::{Loc, Spanned};
use crate::syntax::ast::{Clause, Value};

use mesh_table::{MAX_REGEX_COMPILED, MAX_REGEX_LEN};

/// A request matcher and where its pieces were written.
#[derive(Debug, Default)]
pub(super) struct MatchSources {
    pub(super) methods: Option<Loc>,
}

impl Ctx<'_> {
    /// Builds a matcher from `path`, `method` and `header` clauses (ANDed); `what` names
    /// the context for messages ("route", "rule").
    pub(super) fn request_match<'c>(
        &mut self,
        clauses: impl IntoIterator<Item = &'c Clause>,
        what: &str,
    ) -> (RequestMatch, MatchSources) {
        let mut matcher = RequestMatch::default();
        let mut sources = MatchSources::default();
        let mut path_loc: Option<Loc> = None;
        for clause in clauses {
            match clause.keyword.node.as_str() {
                "path" => {
                    if let Some(first) = &path_loc {
                        self.duplicate(clause, first, what, "a request has one path: use one `path` (a `regex` can express alternatives)");
                        continue;
                    }
                    path_loc = Some(clause.keyword.loc.clone());
                    matcher.path = self.path_match(clause);
                }
                "method" => {
                    if let Some(first) = sources.methods.clone() {
                        self.duplicate(
                            clause,
                            &first,
                            what,
                            "list every method in one clause: `method [GET, HEAD]`",
                        );
                        continue;
                    }
                    sources.methods = Some(clause.loc.clone());
                    matcher.methods = self.methods(clause);
                }
                "header" => {
                    if let Some(h) = self.header_match(clause) {
                        matcher.headers.push(h);
                    }
                }
                _ => {}
            }
        }
        (matcher, sources)
    }

    fn duplicate(&mut self, clause: &Clause, first: &Loc, what: &str, help: &str) {
        let keyword = &clause.keyword.node;
        self.push(
            Diagnostic::new(
                Code::DuplicateField,
                &clause.keyword.loc,
                format!("`{keyword}` is given twice in this {what}"),
            )
            .label("given again here")
            .with_label(first, "first given here")
            .help(help),
        );
    }

    fn methods(&mut self, clause: &Clause) -> Vec<Method> {
        let Some(value) = self.arg(clause, 0) else {
            return Vec::new();
        };
        let mut methods = Vec::new();
        let items = self.list(value).to_vec();
        if items.is_empty() {
            self.out_of_range(
                value,
                "at least one method",
                Some("remove the `method` clause to match every method".into()),
            );
        }
        for item in &items {
            if let Some(m) = self.method(item) {
                if !methods.contains(&m) {
                    methods.push(m);
                }
            }
        }
        methods.sort();
        methods
    }

    fn path_match(&mut self, clause: &Clause) -> Option<PathMatch> {
        let (op, value) = match clause.args.as_slice() {
            [Spanned {
                node: Value::Word(op),
                ..
            }, value] => (op.as_str(), value),
            [value] => {
                let text = value.loc.text().to_string();
                self.push(
                    Diagnostic::new(
                        Code::Syntax,
                        &value.loc,
                        "a path matcher needs `exact`, `prefix` or `regex`",
                    )
                    .label("how should the path match?")
                    .help(format!("write `path prefix {text}` or `path exact {text}`")),
                );
                return None;
            }
            _ => return None,
        };
        let path = self.string(value)?.to_string();
        match op {
            "regex" => self.regex(value, &path).then_some(PathMatch::Regex(path)),
            "exact" => self
                .normalized_path(value, &path)
                .then_some(PathMatch::Exact(path)),
            _ => self
                .normalized_path(value, &path)
                .then_some(PathMatch::Prefix(path)),
        }
    }

    /// Paths in matchers must already be in the normal form requests are compared in.
    fn normalized_path(&mut self, value: &Spanned<Value>, path: &str) -> bool {
        if !path.starts_with('/') {
            self.push(
                Diagnostic::new(
                    Code::InvalidPath,
                    &value.loc,
                    format!("the path `{path}` does not start with `/`"),
                )
                .label("paths are absolute")
                .help(format!("write `\"/{path}\"`")),
            );
            return false;
        }
        let problem = if path.contains(['?', '#']) {
            Some(
                "contains `?` or `#`: the query and fragment never take part in matching"
                    .to_string(),
            )
        } else if path.contains("//") {
            Some("has an empty segment (`//`): requests are matched after repeated slashes are merged".to_string())
        } else if path.split('/').any(|s| s == "." || s == "..") {
            Some(
                "has a `.` or `..` segment: requests are matched after dot segments are removed"
                    .to_string(),
            )
        } else if path.chars().any(|c| c.is_control() || c == ' ') {
            Some("has a space or control character".to_string())
        } else {
            // The rest as the proxies read requests (docs/language.md, "Paths"): a path they
            // refuse (`;`, `\`, encoded separators...) or rewrite (`%41` is `A`) cannot be
            // matched as written.
            match mesh_engine::normalize_path(path) {
                Err(refused) => Some(format!(
                    "is refused in requests ({refused}; 400 `{}`)",
                    refused.reason()
                )),
                Ok(normal) if normal != path => Some(format!(
                    "is matched in requests as `{normal}`: percent-encoded letters, digits and `-._~` are decoded, other encodings upper-cased"
                )),
                Ok(_) => None,
            }
        };
        if let Some(problem) = problem {
            self.push(
                Diagnostic::new(
                    Code::InvalidPath,
                    &value.loc,
                    format!("the path `{path}` {problem}"),
                )
                .label("this path can never match a normalized request")
                .help(
                    "write the path in normalized form, as a request would be after normalization",
                ),
            );
            return false;
        }
        true
    }

    /// Checks a regex's size and syntax; true when valid.
    pub(super) fn regex(&mut self, value: &Spanned<Value>, pattern: &str) -> bool {
        let length = pattern.chars().count();
        if length > MAX_REGEX_LEN {
            self.push(
                Diagnostic::new(
                    Code::RegexTooLarge,
                    &value.loc,
                    format!("this regex is {length} characters long; the limit is {MAX_REGEX_LEN}"),
                )
                .label("too long")
                .help("split the route, or match with `prefix` and a shorter regex"),
            );
            return false;
        }
        // The bare pattern must compile too: `a)|(b` compiles once wrapped in `^(?:...)$`
        // but means something else than it says.
        let built = regex::RegexBuilder::new(pattern)
            .size_limit(MAX_REGEX_COMPILED)
            .build()
            .and_then(|_| {
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(MAX_REGEX_COMPILED)
                    .build()
            });
        match built {
            Ok(_) => true,
            Err(regex::Error::CompiledTooBig(limit)) => {
                self.push(
                    Diagnostic::new(Code::RegexTooLarge, &value.loc, format!("this regex compiles to more than {limit} bytes"))
                        .label("too large once compiled")
                        .help("bounded repetitions such as `{1000}` multiply the size: use `+` or `*`, or a simpler pattern"),
                );
                false
            }
            Err(e) => {
                let detail = e.to_string();
                let last = detail
                    .lines()
                    .rfind(|l| l.starts_with("error:"))
                    .unwrap_or("invalid syntax")
                    .trim_start_matches("error: ");
                self.push(
                    Diagnostic::new(Code::InvalidRegex, &value.loc, format!("invalid regex: {last}"))
                        .label("does not compile")
                        .help("regexes use RE2 syntax (no look-around or backreferences) and must match the whole value"),
                );
                false
            }
        }
    }

    fn header_match(&mut self, clause: &Clause) -> Option<HeaderMatch> {
        let name_value = self.arg(clause, 0)?;
        let name = self.header_name(name_value)?;
        let value = match clause.args.get(1..) {
            Some(
                [Spanned {
                    node: Value::Word(w),
                    ..
                }],
            ) if w == "present" => HeaderValueMatch::Present,
            Some(
                [Spanned {
                    node: Value::Word(op),
                    ..
                }, v],
            ) => {
                let text = self.string(v)?.to_string();
                self.header_value(v, &text)?;
                match op.as_str() {
                    "exact" => HeaderValueMatch::Exact(text),
                    "prefix" => HeaderValueMatch::Prefix(text),
                    _ => {
                        if !self.regex(v, &text) {
                            return None;
                        }
                        HeaderValueMatch::Regex(text)
                    }
                }
            }
            _ => return None,
        };
        Some(HeaderMatch { name, value })
    }

    /// A header name: an RFC 9110 token, compared case-insensitively (stored lower case).
    pub(super) fn header_name(&mut self, value: &Spanned<Value>) -> Option<String> {
        let name = self.string(value)?;
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(is_tchar) {
            let help = if name.starts_with(':') {
                "pseudo-headers (`:path`, `:method`, `:authority`) are matched with `path`, `method` and the route's service".to_string()
            } else {
                "header names are tokens: letters, digits and !#$%&'*+-.^_`|~".to_string()
            };
            self.push(
                Diagnostic::new(
                    Code::InvalidHeaderName,
                    &value.loc,
                    format!("`{name}` is not a valid header name"),
                )
                .label("not an HTTP header name")
                .help(help),
            );
            return None;
        }
        Some(name.to_ascii_lowercase())
    }

    /// A header value may not hold CR, LF or NUL (they would split or truncate the header).
    pub(super) fn header_value(&mut self, value: &Spanned<Value>, text: &str) -> Option<()> {
        if text.contains(['\r', '\n', '\0']) {
            self.push(
                Diagnostic::new(
                    Code::OutOfRange,
                    &value.loc,
                    "a header value cannot hold CR, LF or NUL",
                )
                .label("control character in a header value")
                .help("remove the `\\r`, `\\n` or `\\u0000`"),
            );
            return None;
        }
        Some(())
    }
}

//! Authorization: `allow` rules a `deny` always overrides, and `allow` rules `default allow` voids.
//!
//! Every `deny` is tried before any `allow`, so an `allow` whose every request some single
//! `deny` also matches (same or wider principals, path, methods and headers) never admits
//! anything. And with `default allow`, an `allow` decides what the default would have
//! decided anyway. Coverage is reported only when certain (see `requests`).

use mesh_table::{Action, Authorization, AuthzRule, MtlsMode, Principal, Table};

use super::requests::{self, path_or_root, Regexes};
use super::{Ctx, ErrorSpans, Sources};
use crate::diag::{Code, Diagnostic};
use crate::source::Loc;

/// Reports dead and pointless `allow` rules, block by block.
pub(super) fn check(
    ctx: &mut Ctx<'_>,
    table: &Table,
    sources: &Sources,
    errors: &ErrorSpans,
    regexes: &mut Regexes,
) {
    for (i, authz) in table.authorizations.iter().enumerate() {
        let Some(src) = sources.authorizations.get(i) else {
            continue;
        };
        // Plaintext callers (`anyone` beyond `any`) never reach a strict service.
        let strict = table
            .services
            .get(authz.service as usize)
            .is_some_and(|s| s.mtls == MtlsMode::Strict);
        let service = table
            .services
            .get(authz.service as usize)
            .map_or("?", |s| s.name.as_str());
        // A rule with an error lost a condition in elaboration: its table form matches
        // more than was written, so it can neither be called dead nor cover another.
        let rules: Vec<(&AuthzRule, &Loc)> = authz
            .rules
            .iter()
            .zip(&src.rules)
            .filter(|(_, loc)| !errors.within(loc))
            .collect();
        dead_allows(ctx, &rules, strict, regexes);
        pointless_allows(
            ctx,
            authz,
            &rules,
            src.default.as_ref().unwrap_or(&src.decl),
            service,
        );
    }
}

fn dead_allows(
    ctx: &mut Ctx<'_>,
    rules: &[(&AuthzRule, &Loc)],
    strict: bool,
    regexes: &mut Regexes,
) {
    let denies: Vec<&(&AuthzRule, &Loc)> = rules
        .iter()
        .filter(|(r, _)| r.action == Action::Deny)
        .collect();
    if denies.is_empty() {
        return;
    }
    for (allow, allow_loc) in rules.iter().filter(|(r, _)| r.action == Action::Allow) {
        let Some((_, deny_loc)) = denies
            .iter()
            .find(|(deny, _)| covers(deny, allow, strict, regexes))
        else {
            continue;
        };
        ctx.push(
            Diagnostic::new(Code::DeadAllow, allow_loc, "this `allow` never admits anything: a `deny` matches every request it matches")
                .label("dead rule")
                .with_label(deny_loc, "this `deny` is tried first and matches all of them")
                .help("every `deny` is tried before any `allow`: remove the `allow`, or narrow the `deny` (a path, method or header condition) so it leaves these requests alone"),
        );
    }
}

/// Whether `deny` matches every request (and caller) `allow` matches.
fn covers(deny: &AuthzRule, allow: &AuthzRule, strict: bool, regexes: &mut Regexes) -> bool {
    allow
        .from
        .iter()
        .all(|p| principal_covered(*p, &deny.from, strict))
        && requests::methods_cover(&deny.to.methods, &allow.to.methods)
        && requests::headers_imply(&allow.to.headers, &deny.to.headers, regexes)
        && requests::path_covers(
            path_or_root(deny.to.path.as_ref()),
            path_or_root(allow.to.path.as_ref()),
            regexes,
        )
}

/// Whether one of `by` includes every caller `p` stands for.
fn principal_covered(p: Principal, by: &[Principal], strict: bool) -> bool {
    by.iter().any(|d| match (*d, p) {
        (Principal::Anyone, _) | (Principal::Any, Principal::Service(_) | Principal::Any) => true,
        // `anyone` is `any` plus plaintext callers, who reach a service only when permissive.
        (Principal::Any, Principal::Anyone) => strict,
        (Principal::Service(a), Principal::Service(b)) => a == b,
        _ => false,
    })
}

/// `default allow` with `allow` rules: they decide what the default would anyway.
///
/// `default allow` with no `allow` rule is deliberately not reported, whether or not the
/// block has `deny` rules: "admit everyone except ..." (or an explicit "admit everyone") is
/// a legitimate policy, and a warning on it would be a false positive.
fn pointless_allows(
    ctx: &mut Ctx<'_>,
    authz: &Authorization,
    rules: &[(&AuthzRule, &Loc)],
    default: &Loc,
    service: &str,
) {
    if authz.default != Action::Allow {
        return;
    }
    let allows: Vec<&Loc> = rules
        .iter()
        .filter(|(r, _)| r.action == Action::Allow)
        .map(|(_, loc)| *loc)
        .collect();
    if allows.is_empty() {
        return;
    }
    let rules_word = if allows.len() == 1 { "rule" } else { "rules" };
    let mut d = Diagnostic::new(
        Code::PointlessAllow,
        default,
        format!("`default allow` makes the `allow` {rules_word} of `{service}` pointless: what they admit is admitted anyway"),
    )
    .label("admits every request no `deny` matches");
    for loc in allows {
        d = d.with_label(loc, "changes nothing");
    }
    ctx.push(d.help(
        "with `default allow` these rules change nothing: remove them, or make the default `deny`",
    ));
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_clean, diagnostics, label_positions};
    use crate::diag::Code;

    const SERVICES: &str = "service a { port 80 }\nservice b { port 81 }\n";

    #[test]
    fn an_allow_under_a_wider_deny_is_dead() {
        let ds = diagnostics(
            &format!(
                "{SERVICES}authorize a {{\n  deny from any to path prefix \"/admin\"\n  allow from b to method [GET] path prefix \"/admin/users\" when header \"x-k\" exact \"1\"\n}}\n"
            ),
            Code::DeadAllow,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(6, 3), (5, 3)]);
        assert!(ds[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("remove the `allow`")));
    }

    #[test]
    fn anyone_covers_any_and_any_covers_anyone_only_when_strict() {
        let rules = "  deny from any\n  allow from anyone to path exact \"/x\"\n";
        let strict = diagnostics(
            &format!("{SERVICES}authorize a {{\n{rules}}}\n"),
            Code::DeadAllow,
        );
        assert_eq!(strict.len(), 1);
        let permissive = format!("service a {{ port 80  mtls permissive }}\nservice b {{ port 81 }}\nauthorize a {{\n{rules}}}\n");
        assert!(diagnostics(&permissive, Code::DeadAllow).is_empty());
        let wider = diagnostics(&format!("{SERVICES}authorize a {{\n  deny from anyone to method [POST]\n  allow from [b, any] to method [POST] path exact \"/x\"\n}}\n"), Code::DeadAllow);
        assert_eq!(wider.len(), 1);
    }

    #[test]
    fn partial_overlap_is_not_dead() {
        for (deny, allow) in [
            (
                "deny from any to path prefix \"/internal\"",
                "allow from b to path prefix \"/internalx\"",
            ),
            ("deny from any to path prefix \"/v1\"", "allow from b"),
            ("deny from b to method [POST]", "allow from b"),
            (
                "deny from b to method [POST]",
                "allow from b to method [POST, GET]",
            ),
            ("deny from b when header \"x-a\" present", "allow from b"),
            (
                "deny from b when header \"x-a\" exact \"1\"",
                "allow from b when header \"x-a\" prefix \"1\"",
            ),
            ("deny from b", "allow from [b, a]"),
            (
                "deny from b to path exact \"/x\"",
                "allow from b to path prefix \"/x\"",
            ),
            (
                "deny from b to path prefix \"/x\"",
                "allow from b to path regex \"/x.*\"",
            ),
        ] {
            let text = format!("{SERVICES}authorize a {{\n  {deny}\n  {allow}\n}}\n");
            assert!(
                diagnostics(&text, Code::DeadAllow).is_empty(),
                "{deny} / {allow}"
            );
        }
    }

    #[test]
    fn covering_conditions_are_dead() {
        for (deny, allow) in [
            ("deny from b", "allow from b to path prefix \"/x\""),
            (
                "deny from b when header \"x-a\" present",
                "allow from b when header \"x-a\" exact \"1\"",
            ),
            (
                "deny from b when header \"x-a\" prefix \"ab\"",
                "allow from b when header \"x-a\" exact \"abc\"",
            ),
            (
                "deny from b to path regex \"/x/[0-9]+\"",
                "allow from b to path regex \"/x/[0-9]+\"",
            ),
            (
                "deny from b to path prefix \"/x\"",
                "allow from b to path regex \"/x/[0-9]+\"",
            ),
            (
                "deny from b to path regex \"/x/[0-9]+\"",
                "allow from b to path exact \"/x/42\"",
            ),
            (
                "deny from b to method [GET, POST]",
                "allow from b to method [GET]",
            ),
        ] {
            let text = format!("{SERVICES}authorize a {{\n  {deny}\n  {allow}\n}}\n");
            assert_eq!(
                diagnostics(&text, Code::DeadAllow).len(),
                1,
                "{deny} / {allow}"
            );
        }
    }

    #[test]
    fn default_allow_makes_allow_rules_pointless() {
        let ds = diagnostics(
            &format!("{SERVICES}authorize a {{\n  allow from b\n  deny from a to path prefix \"/x\"\n  allow from a to method [GET]\n  default allow\n}}\n"),
            Code::PointlessAllow,
        );
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(label_positions(&ds[0]), [(8, 3), (5, 3), (7, 3)]);
        assert_eq!(
            ds[0].help.as_deref(),
            Some("with `default allow` these rules change nothing: remove them, or make the default `deny`")
        );
    }

    #[test]
    fn default_allow_alone_or_with_denies_is_fine() {
        assert_clean(&format!("{SERVICES}authorize a {{\n  default allow\n}}\n"));
        assert_clean(&format!("{SERVICES}authorize a {{\n  deny from b to path prefix \"/admin\"\n  default allow\n}}\n"));
    }

    #[test]
    fn a_rule_with_an_error_is_left_alone() {
        // The deny's path is invalid, so its table form has no path: it must not be taken
        // to cover the allow.
        let text = format!("{SERVICES}authorize a {{\n  deny from b to path prefix \"admin\"\n  allow from b to path prefix \"/v1\"\n}}\n");
        assert!(diagnostics(&text, Code::DeadAllow).is_empty());
    }
}

//! `authorize` blocks: `allow`/`deny` rules on principals and request conditions, and `default`.

use mesh_table::{Action, Authorization, AuthzRule, Principal};

use super::{AuthzSources, Ctx, Sources};
use crate::diag::{Code, Diagnostic};
use crate::source::Spanned;
use crate::syntax::ast::{Clause, Decl, DeclKind, Value};

impl Ctx<'_> {
    /// Every authorization block, ordered by service.
    pub(super) fn authorizations(
        &mut self,
        decls: &[&Decl],
        sources: &mut Sources,
    ) -> Vec<Authorization> {
        let mut seen = std::collections::BTreeSet::new();
        let mut blocks: Vec<(Authorization, AuthzSources)> = Vec::new();
        for decl in decls.iter().filter(|d| d.kind == DeclKind::Authorize) {
            let Some(service) = self.resolve_service(&decl.name) else {
                continue;
            };
            if !seen.insert(service) {
                continue; // a second block for the service: reported with the names
            }
            blocks.push(self.authorization(decl, service));
        }
        blocks.sort_by_key(|(a, _)| a.service);
        blocks
            .into_iter()
            .map(|(authz, src)| {
                sources.authorizations.push(src);
                authz
            })
            .collect()
    }

    fn authorization(&mut self, decl: &Decl, service: u32) -> (Authorization, AuthzSources) {
        let fields = self.fields(&decl.body, "authorize", &["allow", "deny"]);
        let mut rules = Vec::new();
        let mut rule_locs = Vec::new();
        for clause in fields.all().filter(|c| c.keyword.node != "default") {
            if let Some(rule) = self.rule(clause) {
                rules.push(rule);
                rule_locs.push(clause.loc.clone());
            }
        }
        let default_clause = fields.get("default");
        let default = default_clause
            .and_then(|c| self.arg(c, 0))
            .and_then(|v| self.choice(v, &["allow", "deny"], "a default decision"))
            .map_or(Action::Deny, |d| {
                if d == "allow" {
                    Action::Allow
                } else {
                    Action::Deny
                }
            });
        let default_at = default_clause.map_or(&decl.name.loc, |c| &c.loc);
        let authorization = Authorization {
            service,
            rules,
            default,
            default_loc: self.table_loc(default_at),
            loc: self.table_loc(&decl.name.loc),
        };
        let sources = AuthzSources {
            decl: decl.loc.clone(),
            rules: rule_locs,
            default: default_clause.map(|c| c.loc.clone()),
        };
        (authorization, sources)
    }

    fn rule(&mut self, clause: &Clause) -> Option<AuthzRule> {
        let action = if clause.keyword.node == "allow" {
            Action::Allow
        } else {
            Action::Deny
        };
        let from_value = clause.args.get(1)?;
        let mut from = Vec::new();
        for item in self.list(from_value).to_vec() {
            if let Some(p) = self.principal(&item) {
                if !from.contains(&p) {
                    from.push(p);
                }
            }
        }
        if from.is_empty() {
            return None;
        }
        let conditions = clause.groups.iter().flat_map(|g| g.clauses.iter());
        let (to, _) = self.request_match(conditions, "rule");
        Some(AuthzRule {
            action,
            from,
            to,
            loc: self.table_loc(&clause.loc),
        })
    }

    fn principal(&mut self, value: &Spanned<Value>) -> Option<Principal> {
        match &value.node {
            Value::Word(w) if w == "any" => Some(Principal::Any),
            Value::Word(w) if w == "anyone" => Some(Principal::Anyone),
            Value::Word(w) => {
                let ident = Spanned {
                    node: w.clone(),
                    loc: value.loc.clone(),
                };
                self.resolve_service(&ident).map(Principal::Service)
            }
            other => {
                self.push(
                    Diagnostic::new(Code::TypeMismatch, &value.loc, format!("expected a principal, found {}", other.describe()))
                        .label("expected a principal")
                        .help("a principal is a service name, `any` (any mesh identity) or `anyone` (plaintext callers too)"),
                );
                None
            }
        }
    }
}

//! The `mesh` declaration: the mesh's name and SPIFFE trust domain.

use mesh_table::{MeshInfo, SourceLoc};

use super::Ctx;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Decl, DeclKind};

impl Ctx<'_> {
    pub(super) fn mesh(&mut self, decls: &[&Decl]) -> MeshInfo {
        let Some(decl) = decls.iter().find(|d| d.kind == DeclKind::Mesh) else {
            return MeshInfo {
                name: String::new(),
                trust_domain: String::new(),
                loc: SourceLoc {
                    file: 0,
                    line: 1,
                    column: 1,
                },
            };
        };
        let fields = self.fields(&decl.body, "mesh", &[]);
        let trust_domain = match fields.get("trust_domain") {
            Some(clause) => self
                .arg(clause, 0)
                .and_then(|v| {
                    let domain = self.string(v)?.to_string();
                    self.trust_domain(v, &domain).then_some(domain)
                })
                .unwrap_or_default(),
            None => {
                self.missing(
                    &decl.name.loc,
                    "mesh",
                    "trust_domain",
                    "trust_domain \"example.org\"",
                );
                String::new()
            }
        };
        if decl.name.node.is_empty() || decl.name.node.chars().any(char::is_control) {
            self.push(
                Diagnostic::new(
                    Code::InvalidName,
                    &decl.name.loc,
                    "the mesh needs a non-empty name",
                )
                .label("empty name")
                .help("write `mesh \"shop\" { ... }`"),
            );
        }
        MeshInfo {
            name: decl.name.node.clone(),
            trust_domain,
            loc: self.table_loc(&decl.keyword),
        }
    }

    /// A SPIFFE trust domain: lower-case letters, digits, `.`, `-` and `_` (SPIFFE ID spec).
    fn trust_domain(
        &mut self,
        value: &crate::source::Spanned<crate::syntax::ast::Value>,
        domain: &str,
    ) -> bool {
        let valid = !domain.is_empty()
            && domain.len() <= 255
            && domain.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
            });
        if !valid {
            let help = if domain.starts_with("spiffe://") {
                format!(
                    "write only the domain: `\"{}\"`",
                    domain.trim_start_matches("spiffe://").trim_end_matches('/')
                )
            } else {
                "a trust domain holds lower-case letters, digits, `.`, `-` and `_`, such as `\"shop.example\"`".to_string()
            };
            self.push(
                Diagnostic::new(
                    Code::OutOfRange,
                    &value.loc,
                    format!("`{domain}` is not a valid SPIFFE trust domain"),
                )
                .label("invalid trust domain")
                .help(help),
            );
        }
        valid
    }
}

//! Declared names: DNS-label validity, duplicates across files, and resolving references.

use std::collections::BTreeMap;

use mesh_table::{FilterId, ServiceId};

use super::Ctx;
use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::source::{Ident, Loc};
use crate::syntax::ast::{Decl, DeclKind};

/// The control plane's own name under the trust domain (`spiffe://<td>/mesh-control`):
/// mesh-control refuses tokens and certificates for it, and a policy cannot declare it.
const CONTROL_SERVICE: &str = "mesh-control";

/// The services and filters of the policy, with the ids they get in the table (name order).
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) services: BTreeMap<String, (ServiceId, Loc)>,
    pub(super) filters: BTreeMap<String, (FilterId, Loc)>,
}

impl Ctx<'_> {
    /// Registers every declared name, reporting invalid and duplicate ones.
    pub(super) fn collect_names(&mut self, decls: &[&Decl]) {
        let mut services: BTreeMap<String, Loc> = BTreeMap::new();
        let mut filters: BTreeMap<String, Loc> = BTreeMap::new();
        let mut routes: BTreeMap<String, Loc> = BTreeMap::new();
        let mut authorizes: BTreeMap<String, Loc> = BTreeMap::new();
        let mut observes: BTreeMap<String, Loc> = BTreeMap::new();
        let mut meshes: Vec<&Decl> = Vec::new();
        for decl in decls {
            let seen = match decl.kind {
                DeclKind::Mesh => {
                    meshes.push(decl);
                    continue;
                }
                DeclKind::Service => &mut services,
                DeclKind::Filter => &mut filters,
                DeclKind::Route => &mut routes,
                DeclKind::Authorize => &mut authorizes,
                DeclKind::Observe => &mut observes,
            };
            let name = &decl.name;
            if matches!(
                decl.kind,
                DeclKind::Service | DeclKind::Filter | DeclKind::Route
            ) {
                check_dns_label(&mut self.diagnostics, name, decl.kind.keyword());
            }
            if decl.kind == DeclKind::Service && name.node == CONTROL_SERVICE {
                let d = Diagnostic::new(
                    Code::ReservedName,
                    &name.loc,
                    format!("the service name `{CONTROL_SERVICE}` is reserved for the control plane"),
                )
                .label("reserved")
                .help("proxies trust `spiffe://<trust domain>/mesh-control` to issue certificates and tables, so no workload may hold that identity: choose another name");
                self.push(d);
            }
            if let Some(first) = seen.get(&name.node) {
                let what = match decl.kind {
                    DeclKind::Authorize | DeclKind::Observe => {
                        format!(
                            "`{}` has a second `{}` block",
                            name.node,
                            decl.kind.keyword()
                        )
                    }
                    kind => format!("the {} `{}` is declared twice", kind.keyword(), name.node),
                };
                let d = Diagnostic::new(Code::DuplicateName, &name.loc, what)
                    .label("declared again here")
                    .with_label(first, "first declared here")
                    .help("names are unique across all files of a policy: rename or merge one of them");
                self.push(d);
            } else {
                seen.insert(name.node.clone(), name.loc.clone());
            }
        }
        self.check_mesh_count(&meshes);
        self.names.services = number(services);
        self.names.filters = number(filters);
    }

    fn check_mesh_count(&mut self, meshes: &[&Decl]) {
        match meshes {
            [] => {
                if let Some(file) = self.files.first() {
                    let loc = Loc::new(
                        file,
                        0..file.text.find('\n').unwrap_or(file.text.len()).min(1),
                    );
                    self.push(
                        Diagnostic::new(
                            Code::MeshDeclaration,
                            &loc,
                            "the policy has no `mesh` declaration",
                        )
                        .label("expected a `mesh` declaration in one of the policy's files")
                        .help("add `mesh \"name\" { trust_domain \"example.org\" }` to one file"),
                    );
                }
            }
            [_] => {}
            [first, rest @ ..] => {
                for extra in rest {
                    self.push(
                        Diagnostic::new(
                            Code::MeshDeclaration,
                            &extra.keyword,
                            "a policy has exactly one `mesh` declaration",
                        )
                        .label("a second `mesh`")
                        .with_label(&first.keyword, "the first one")
                        .help("remove one of them"),
                    );
                }
            }
        }
    }

    /// The id of the service `name` refers to, or an unknown-service diagnostic.
    pub(super) fn resolve_service(&mut self, name: &Ident) -> Option<ServiceId> {
        if let Some((id, _)) = self.names.services.get(&name.node) {
            return Some(*id);
        }
        let near = did_you_mean(&name.node, self.names.services.keys().map(String::as_str));
        let help = near.map_or_else(
            || format!("declare it with `service {} {{ port ... }}`", name.node),
            |n| format!("did you mean `{n}`?"),
        );
        self.push(
            Diagnostic::new(
                Code::UnknownService,
                &name.loc,
                format!("unknown service `{}`", name.node),
            )
            .label("no service has this name")
            .help(help),
        );
        None
    }

    /// The id of the filter `name` refers to, or an unknown-filter diagnostic.
    pub(super) fn resolve_filter(&mut self, name: &Ident) -> Option<FilterId> {
        if let Some((id, _)) = self.names.filters.get(&name.node) {
            return Some(*id);
        }
        let near = did_you_mean(&name.node, self.names.filters.keys().map(String::as_str));
        let help = near.map_or_else(
            || {
                format!(
                    "declare it with `filter {} {{ module \"...\" }}`",
                    name.node
                )
            },
            |n| format!("did you mean `{n}`?"),
        );
        self.push(
            Diagnostic::new(
                Code::UnknownFilter,
                &name.loc,
                format!("unknown filter `{}`", name.node),
            )
            .label("no filter has this name")
            .help(help),
        );
        None
    }
}

fn number(names: BTreeMap<String, Loc>) -> BTreeMap<String, (u32, Loc)> {
    names
        .into_iter()
        .enumerate()
        .map(|(i, (name, loc))| (name, (u32::try_from(i).unwrap_or(u32::MAX), loc)))
        .collect()
}

/// Names are DNS labels: `[a-z][a-z0-9-]*`, at most 63 characters, not ending in `-`.
fn check_dns_label(diagnostics: &mut Vec<Diagnostic>, name: &Ident, kind: &str) {
    let n = &name.node;
    let valid_chars = n
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let problem = if !n.is_ascii() {
        // Non-ASCII names are reported by the unicode analysis (confusables), with more detail.
        return;
    } else if n.len() > 63 {
        Some(format!("is {} characters long; the limit is 63", n.len()))
    } else if !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        Some("must start with a lower-case letter".to_string())
    } else if !valid_chars {
        Some("may hold only lower-case letters, digits and `-`".to_string())
    } else if n.ends_with('-') {
        Some("must not end with `-`".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        let fixed: String = n
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .chars()
            .take(63)
            .collect();
        let help = if fixed.is_empty() || fixed == *n {
            "a name is a DNS label: `[a-z][a-z0-9-]*`, at most 63 characters".to_string()
        } else {
            format!("a name is a DNS label, such as `{fixed}`")
        };
        diagnostics.push(
            Diagnostic::new(
                Code::InvalidName,
                &name.loc,
                format!("the {kind} name `{n}` {problem}"),
            )
            .label("not a valid name")
            .help(help),
        );
    }
}

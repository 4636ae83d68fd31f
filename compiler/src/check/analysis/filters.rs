//! Unused filters: a `filter` that no service and no route lists in its `filters`.
//!
//! Uses are collected from the table and also from the syntax tree: when elaboration had
//! errors the table may have lost the routes or lists that use a filter (a route on an
//! unknown service is dropped), and "unused" would then be a false report.

use std::collections::HashSet;

use mesh_table::Table;

use super::{Ctx, Sources};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{DeclKind, ParsedFile, Value};

/// Reports each filter nothing refers to.
pub(super) fn check(ctx: &mut Ctx<'_>, table: &Table, sources: &Sources, parsed: &[ParsedFile]) {
    let mut used: HashSet<&str> = HashSet::new();
    let ids = table
        .services
        .iter()
        .flat_map(|s| &s.filters)
        .chain(table.routes.iter().flat_map(|r| &r.filters));
    for &id in ids {
        if let Some(filter) = table.filters.get(id as usize) {
            used.insert(filter.name.as_str());
        }
    }
    let decls = parsed.iter().flat_map(|p| &p.decls);
    for decl in decls.filter(|d| matches!(d.kind, DeclKind::Service | DeclKind::Route)) {
        for clause in decl
            .body
            .clauses
            .iter()
            .filter(|c| c.keyword.node == "filters")
        {
            for arg in &clause.args {
                let items = match &arg.node {
                    Value::List(items) => items.iter().collect(),
                    _ => vec![arg],
                };
                for item in items {
                    if let Value::Word(name) = &item.node {
                        used.insert(name.as_str());
                    }
                }
            }
        }
    }
    for (filter, name_loc) in table.filters.iter().zip(&sources.filters) {
        if used.contains(filter.name.as_str()) {
            continue;
        }
        let name = &filter.name;
        ctx.push(
            Diagnostic::new(Code::UnusedFilter, name_loc, format!("the filter `{name}` is not used by any service or route"))
                .label("never used")
                .help(format!(
                    "list it in a service (`filters [{name}]`, run by its inbound sidecar) or a route (run by the caller's sidecar), or remove the declaration"
                )),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::{label_positions, MESH};
    use crate::check::tests::EMPTY_WASM;
    use crate::check::{check, CheckOptions, Checked};
    use crate::diag::Code;
    use crate::source::SourceFile;

    fn check_with_modules(text: &str) -> Checked {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a.wasm", "b.wasm", "c.wasm"] {
            std::fs::write(dir.path().join(name), EMPTY_WASM).expect("write module");
        }
        let file: Arc<SourceFile> = SourceFile::new("t.mesh", format!("{MESH}{text}"));
        check(
            &[file],
            &CheckOptions {
                module_paths: vec![dir.path().to_path_buf()],
            },
        )
    }

    #[test]
    fn a_filter_nothing_lists_is_unused() {
        let checked = check_with_modules(
            "service s { port 80  filters [fa] }\nroute r on s { filters [fb] }\nfilter fa { module \"a.wasm\" }\nfilter fb { module \"b.wasm\" }\nfilter fc { module \"c.wasm\" }\n",
        );
        let ds: Vec<_> = checked.diagnostics.iter().collect();
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].code, Code::UnusedFilter);
        assert_eq!(label_positions(ds[0]), [(6, 8)]);
        assert!(ds[0]
            .help
            .as_deref()
            .is_some_and(|h| h.contains("`filters [fc]`") && h.contains("remove the declaration")));
        assert!(
            checked.table.is_some(),
            "a warning does not stop compilation"
        );
    }

    #[test]
    fn a_filter_used_by_a_dropped_route_is_not_reported() {
        // The route is on an unknown service, so elaboration drops it from the table.
        let checked = check_with_modules(
            "route r on nowhere { filters [fa] }\nfilter fa { module \"a.wasm\" }\n",
        );
        let codes: Vec<Code> = checked.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::UnknownService]);
    }
}

//! The checker: names, types, units, ranges and the policy-wide analyses; builds the table.
//!
//! Checking goes in passes: parse every file; collect the declarations and their names
//! (so references resolve across files in any order); elaborate each declaration into its
//! table form, reporting what is wrong with its values; then run the analyses that need
//! the whole policy (route precedence, dead rules, retry safety, unicode). Every problem
//! is collected; the table is returned only when there is no error.

mod analysis;
mod authorize;
mod fields;
mod filter;
mod matchers;
mod mesh;
mod names;
mod observe;
mod route;
pub mod schema;
mod service;
mod sources;
mod values;

use std::path::PathBuf;
use std::sync::Arc;

use mesh_table::{FileId, SourceLoc, Table};

use crate::diag::Diagnostic;
use crate::source::{Loc, SourceFile};
use crate::syntax::ast::{Decl, ParsedFile};
use names::Names;
pub(crate) use sources::{AuthzSources, RouteSources, Sources};

/// Settings of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Extra directories searched for filter modules, after the policy file's own.
    pub module_paths: Vec<PathBuf>,
}

/// What a check produced.
#[derive(Debug)]
pub struct Checked {
    /// The compiled table, when the policy has no errors.
    pub table: Option<Table>,
    /// Every diagnostic, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

/// The state shared by the passes: diagnostics so far, the files and the name tables.
pub(crate) struct Ctx<'a> {
    diagnostics: Vec<Diagnostic>,
    files: &'a [Arc<SourceFile>],
    options: &'a CheckOptions,
    names: Names,
}

impl Ctx<'_> {
    fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    /// The table's form of a location.
    fn table_loc(&self, loc: &Loc) -> SourceLoc {
        loc.to_table(self.file_id(loc))
    }

    fn file_id(&self, loc: &Loc) -> FileId {
        let index = self
            .files
            .iter()
            .position(|f| Arc::ptr_eq(f, &loc.file))
            .unwrap_or(0);
        u32::try_from(index).unwrap_or(0)
    }
}

/// Checks a policy made of `files`.
pub fn check(files: &[Arc<SourceFile>], options: &CheckOptions) -> Checked {
    let (checked, _) = check_with_sources(files, options);
    checked
}

/// Checks a policy and also returns where each table entry came from (for tools such as
/// `meshc test` and `meshc why` that point back at the source).
pub(crate) fn check_with_sources(
    files: &[Arc<SourceFile>],
    options: &CheckOptions,
) -> (Checked, Option<Sources>) {
    let mut diagnostics = Vec::new();
    let mut parsed: Vec<ParsedFile> = Vec::new();
    for file in files {
        let (p, d) = crate::syntax::parse_file(file);
        parsed.push(p);
        diagnostics.extend(d);
    }
    let decls: Vec<&Decl> = parsed.iter().flat_map(|p| p.decls.iter()).collect();
    let mut ctx = Ctx {
        diagnostics,
        files,
        options,
        names: Names::default(),
    };
    ctx.collect_names(&decls);
    let (table, sources) = ctx.elaborate(&decls);
    analysis::run(&mut ctx, &table, &sources, &parsed);

    let mut diagnostics = ctx.diagnostics;
    sort_diagnostics(files, &mut diagnostics);
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    let checked = Checked {
        table: (!has_errors).then_some(table),
        diagnostics,
    };
    (checked, (!has_errors).then_some(sources))
}

fn sort_diagnostics(files: &[Arc<SourceFile>], diagnostics: &mut [Diagnostic]) {
    let key = |d: &Diagnostic| {
        d.primary().map_or((usize::MAX, 0), |loc| {
            let file = files
                .iter()
                .position(|f| Arc::ptr_eq(f, &loc.file))
                .unwrap_or(usize::MAX);
            (file, loc.span.start)
        })
    };
    diagnostics.sort_by_key(|d| (key(d), d.code));
}

impl Ctx<'_> {
    /// Builds the table from the declarations whose names were collected.
    fn elaborate(&mut self, decls: &[&Decl]) -> (Table, Sources) {
        let mut sources = Sources::default();
        let mesh = self.mesh(decls);
        let filters = self.filters(decls, &mut sources);
        let services = self.services(decls, &mut sources);
        let routes = self.routes(decls, &mut sources);
        let authorizations = self.authorizations(decls, &mut sources);
        let observes = self.observes(decls);
        let table = Table {
            mesh,
            files: self.files.iter().map(|f| f.name.clone()).collect(),
            services,
            routes,
            authorizations,
            observes,
            filters,
        };
        (table, sources)
    }
}

#[cfg(test)]
mod tests;

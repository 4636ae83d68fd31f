//! `meshc`: parse, check, format and compile `.mesh` policies into rule tables.
//!
//! The pipeline is `load` (files) → [`syntax::parse_file`] (syntax tree) → [`check`]
//! (types, names, analyses; builds the [`mesh_table::Table`]) → [`mesh_table::encode`].

pub mod check;
pub mod diag;
pub mod explain;
pub mod fmt;
pub mod load;
pub mod source;
pub mod syntax;

pub use check::{check, CheckOptions, Checked};
pub use diag::{Code, Diagnostic, Severity};
pub use source::{Loc, SourceFile};

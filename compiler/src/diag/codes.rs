//! The stable diagnostic codes; `docs/diagnostics.md` has an entry for each.

use super::Severity;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $severity:ident; )*) => {
        /// A stable diagnostic code. Codes are never renamed or reused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// Every code, in documentation order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as printed: `mesh::unknown-service`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => concat!("mesh::", $name),)* }
            }

            /// The severity a diagnostic of this code has.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }
        }
    };
}

codes! {
    /// The text does not follow the grammar.
    Syntax = "syntax", Error;
    /// A string has an invalid escape sequence.
    InvalidEscape = "invalid-escape", Error;
    /// A clause keyword that this block does not have.
    UnknownField = "unknown-field", Error;
    /// The same clause twice in one block.
    DuplicateField = "duplicate-field", Error;
    /// A required clause is missing.
    MissingField = "missing-field", Error;
    /// Two clauses that exclude each other.
    ConflictingFields = "conflicting-fields", Error;
    /// A name that is not a DNS label.
    InvalidName = "invalid-name", Error;
    /// A service named like the control plane's own identity (`mesh-control`).
    ReservedName = "reserved-name", Error;
    /// Two declarations with the same name.
    DuplicateName = "duplicate-name", Error;
    /// No `mesh` declaration, or more than one.
    MeshDeclaration = "mesh-declaration", Error;
    /// A service name that no `service` declares.
    UnknownService = "unknown-service", Error;
    /// A filter name that no `filter` declares.
    UnknownFilter = "unknown-filter", Error;
    /// A value of the wrong type.
    TypeMismatch = "type-mismatch", Error;
    /// A quantity with a unit this field does not take.
    UnknownUnit = "unknown-unit", Error;
    /// A value outside its allowed range.
    OutOfRange = "out-of-range", Error;
    /// A word that is not one of the field's choices.
    InvalidChoice = "invalid-choice", Error;
    /// An address that is not `host:port`.
    InvalidAddress = "invalid-address", Error;
    /// A path that does not start with `/` or is not normalized.
    InvalidPath = "invalid-path", Error;
    /// A header name that is not an HTTP token.
    InvalidHeaderName = "invalid-header-name", Error;
    /// A regex that does not compile.
    InvalidRegex = "invalid-regex", Error;
    /// A regex longer than 1,024 characters or too large once compiled.
    RegexTooLarge = "regex-too-large", Error;
    /// Split weights that do not sum to 100%.
    SplitSum = "split-sum", Error;
    /// Two routes that match the same request with the same rank.
    AmbiguousRoute = "ambiguous-route", Error;
    /// A route that can never be chosen.
    UnreachableRoute = "unreachable-route", Warning;
    /// An `allow` that a `deny` always covers.
    DeadAllow = "dead-allow", Warning;
    /// `default allow` with `allow` rules, which then change nothing.
    PointlessAllow = "pointless-allow", Warning;
    /// `per_try_timeout` × `attempts` exceeds the route's `timeout`.
    RetryExceedsTimeout = "retry-exceeds-timeout", Warning;
    /// Retrying on `reset` or 5xx on a route that admits non-idempotent methods.
    UnsafeRetry = "unsafe-retry", Error;
    /// A character that looks like another, or a mixed-script name.
    Confusable = "confusable", Error;
    /// A bidirectional control character.
    Bidi = "bidi", Error;
    /// A filter that no service or route uses.
    UnusedFilter = "unused-filter", Warning;
    /// A filter module that cannot be found.
    ModuleNotFound = "module-not-found", Error;
    /// A filter module that is not valid WebAssembly.
    InvalidModule = "invalid-module", Error;
    /// A filter's `config` that does not match the schema its module declares.
    FilterConfig = "filter-config", Error;
}

//! `filter` declarations: the module (found, validated as WebAssembly, pinned by SHA-256),
//! its JSON config, failure mode and sandbox limits.

use std::path::{Path, PathBuf};

use mesh_table::{FailureMode, Filter};
use sha2::{Digest, Sha256};

use super::schema::ConfigSite;
use super::{Ctx, Sources};
use crate::diag::{Code, Diagnostic};
use crate::source::{Loc, Spanned};
use crate::syntax::ast::{Decl, DeclKind, Value};

/// Linear memory is allocated in 64 KiB WebAssembly pages.
const WASM_PAGE: u64 = 64 * 1024;

impl Ctx<'_> {
    /// Every filter in id (name) order.
    pub(super) fn filters(&mut self, decls: &[&Decl], sources: &mut Sources) -> Vec<Filter> {
        let mut filters: Vec<Option<(Filter, Loc)>> = vec![None; self.names.filters.len()];
        for decl in decls.iter().filter(|d| d.kind == DeclKind::Filter) {
            let Some((id, first)) = self.names.filters.get(&decl.name.node).cloned() else {
                continue;
            };
            if first == decl.name.loc {
                let filter = self.filter(decl);
                filters[id as usize] = Some((filter, decl.name.loc.clone()));
            }
        }
        filters
            .into_iter()
            .flatten()
            .map(|(filter, loc)| {
                sources.filters.push(loc);
                filter
            })
            .collect()
    }

    fn filter(&mut self, decl: &Decl) -> Filter {
        let fields = self.fields(&decl.body, "filter", &[]);
        let module_value = fields.get("module").and_then(|c| self.arg(c, 0)).cloned();
        let (module, sha256, bytes) = match &module_value {
            Some(v) => match self.string(v).map(str::to_string) {
                Some(module) => match self.module_bytes(v, &module) {
                    Some((digest, bytes)) => (module, digest, Some(bytes)),
                    None => (module, [0; 32], None),
                },
                None => (String::new(), [0; 32], None),
            },
            None => {
                self.missing(&decl.name.loc, "filter", "module", "module \"filter.wasm\"");
                (String::new(), [0; 32], None)
            }
        };
        let config_value = fields.get("config").and_then(|c| self.arg(c, 0)).cloned();
        let config = match &config_value {
            Some(v) => self.config_json(v),
            None => Some(serde_json::Value::Object(serde_json::Map::new())),
        };
        // Only a config that is valid JSON is worth checking against the module's schema.
        if let (Some(bytes), Some(config), Some(module_value)) = (&bytes, &config, &module_value) {
            let site = ConfigSite {
                config: config_value.as_ref(),
                module: module_value,
                module_name: &module,
                filter: &decl.name.node,
            };
            self.check_config_schema(&site, bytes, config);
        }
        let config_json = config.map_or_else(|| "{}".to_string(), |j| j.to_string());
        let failure = fields
            .get("failure")
            .and_then(|c| self.arg(c, 0))
            .and_then(|v| self.choice(v, &["open", "closed"], "a failure mode"))
            .map_or(FailureMode::Closed, |m| {
                if m == "open" {
                    FailureMode::Open
                } else {
                    FailureMode::Closed
                }
            });
        let memory_bytes = match fields.get("memory").and_then(|c| self.arg(c, 0)).cloned() {
            Some(v) => self
                .size_bytes(&v)
                .and_then(|b| self.memory_in_range(&v, b))
                .unwrap_or(16 << 20),
            None => 16 << 20,
        };
        let time_limit_ms = match fields
            .get("time_limit")
            .and_then(|c| self.arg(c, 0))
            .cloned()
        {
            Some(v) => {
                match self.positive_duration(&v) {
                    Some(ms) if ms <= 10_000 => ms,
                    Some(_) => {
                        self.out_of_range(&v, "at most 10s", Some("a callback runs on the request path: keep its budget in milliseconds".into()));
                        5
                    }
                    None => 5,
                }
            }
            None => 5,
        };
        Filter {
            name: decl.name.node.clone(),
            module,
            sha256,
            config_json,
            failure,
            memory_bytes,
            time_limit_ms,
            loc: self.table_loc(&decl.name.loc),
        }
    }

    fn memory_in_range(&mut self, value: &Spanned<Value>, bytes: u64) -> Option<u64> {
        if (WASM_PAGE..=4 << 30).contains(&bytes) {
            return Some(bytes);
        }
        self.out_of_range(value, "from 64KiB (one WebAssembly page) to 4GiB", None);
        None
    }

    /// Finds the module beside the policy file, then in each `--module-path` directory;
    /// checks it is WebAssembly and returns its SHA-256 and bytes.
    fn module_bytes(
        &mut self,
        value: &Spanned<Value>,
        module: &str,
    ) -> Option<([u8; 32], Vec<u8>)> {
        let mut searched: Vec<PathBuf> = Vec::new();
        // Beside the policy file; a bare file name's parent is "", which means ".".
        match value.loc.file.path.as_deref().and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => searched.push(dir.to_path_buf()),
            _ => searched.push(PathBuf::from(".")),
        }
        searched.extend(self.options.module_paths.iter().cloned());
        let Some(path) = searched
            .iter()
            .map(|d| d.join(module))
            .find(|p| p.is_file())
        else {
            let places = searched
                .iter()
                .map(|d| format!("`{}`", d.display()))
                .collect::<Vec<_>>()
                .join(", ");
            self.push(
                Diagnostic::new(Code::ModuleNotFound, &value.loc, format!("filter module `{module}` not found"))
                    .label(format!("looked in {places}"))
                    .help("build the module, or pass the directory that holds it with `--module-path DIR`"),
            );
            return None;
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                self.push(
                    Diagnostic::new(
                        Code::ModuleNotFound,
                        &value.loc,
                        format!("cannot read `{}`: {e}", path.display()),
                    )
                    .label("unreadable module")
                    .help("check the file's permissions"),
                );
                return None;
            }
        };
        if let Err(e) = wasmparser::Validator::new().validate_all(&bytes) {
            let why = if bytes.get(..4) != Some(b"\0asm") {
                "it is not a WebAssembly binary (no `\\0asm` header)".to_string()
            } else {
                format!("{e}")
            };
            self.push(
                Diagnostic::new(Code::InvalidModule, &value.loc, format!("`{}` is not a valid WebAssembly module: {why}", path.display()))
                    .label("invalid module")
                    .help("build the filter for `wasm32-unknown-unknown` or `wasm32-wasip1` and point `module` at the `.wasm` file"),
            );
            return None;
        }
        Some((Sha256::digest(&bytes).into(), bytes))
    }

    /// The `config` object as JSON. Quantities with units (`2s`, `10%`) become strings as written.
    fn config_json(&mut self, value: &Spanned<Value>) -> Option<serde_json::Value> {
        if !matches!(value.node, Value::Object(_)) {
            self.push(
                Diagnostic::new(
                    Code::TypeMismatch,
                    &value.loc,
                    format!("expected an object, found {}", value.node.describe()),
                )
                .label("expected `{ key: value, ... }`")
                .help("write the filter's settings as `config { key: value }`"),
            );
            return None;
        }
        self.json(value)
    }

    fn json(&mut self, value: &Spanned<Value>) -> Option<serde_json::Value> {
        Some(match &value.node {
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Word(w) => match w.as_str() {
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                "null" => serde_json::Value::Null,
                other => {
                    self.push(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            &value.loc,
                            format!("`{other}` is a bare word in a config value"),
                        )
                        .label("expected a string, number, bool, list or object")
                        .help(format!("quote it: `\"{other}\"`")),
                    );
                    return None;
                }
            },
            Value::Quantity { number, unit } if unit.is_empty() => {
                let parsed: Option<serde_json::Number> = if number.contains('.') {
                    number
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                } else {
                    number.parse::<u64>().ok().map(serde_json::Number::from)
                };
                match parsed {
                    Some(n) => serde_json::Value::Number(n),
                    None => {
                        self.out_of_range(value, "a number that fits in 64 bits", None);
                        return None;
                    }
                }
            }
            Value::Quantity { .. } => serde_json::Value::String(value.loc.text().to_string()),
            Value::List(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.push(self.json(item)?);
                }
                serde_json::Value::Array(out)
            }
            Value::Object(entries) => {
                let mut map = serde_json::Map::new();
                for (key, item) in entries {
                    if map.contains_key(&key.node) {
                        self.push(
                            Diagnostic::new(
                                Code::DuplicateField,
                                &key.loc,
                                format!("`{}` is given twice in this object", key.node),
                            )
                            .label("given again")
                            .help("keep one of them"),
                        );
                        continue;
                    }
                    let v = self.json(item)?;
                    map.insert(key.node.clone(), v);
                }
                serde_json::Value::Object(map)
            }
        })
    }
}

//! `meshc inspect`: decode a rule table and print it as JSON.

use std::path::PathBuf;

use super::{error, write_stdout, Outcome};

/// `meshc inspect FILE`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The rule table, as written by `meshc compile`.
    #[arg(value_name = "FILE")]
    table: PathBuf,
}

/// Runs `meshc inspect`: status 1 for a table that is read but does not decode (the proxies
/// would refuse it too), 2 for one that cannot be read.
pub(crate) fn run(args: &Args) -> Outcome {
    let bytes = match std::fs::read(&args.table) {
        Ok(bytes) => bytes,
        Err(err) => {
            error(format_args!(
                "cannot read `{}`: {err}",
                args.table.display()
            ));
            return Outcome::CouldNotRun;
        }
    };
    let table = match mesh_table::decode(&bytes) {
        Ok(table) => table,
        Err(err) => {
            error(format_args!("{}: {err}", args.table.display()));
            return Outcome::Failure;
        }
    };
    match table_json(&table) {
        Ok(json) => match write_stdout(&json) {
            Ok(()) => Outcome::Success,
            Err(outcome) => outcome,
        },
        Err(err) => {
            error(format_args!(
                "internal: cannot print the table as JSON: {err}"
            ));
            Outcome::CouldNotRun
        }
    }
}

/// The table as pretty JSON in the model's field order, with digests in hex rather than as
/// arrays of 32 numbers.
fn table_json(table: &mesh_table::Table) -> serde_json::Result<String> {
    // Serializing the struct directly keeps the model's field order (a `serde_json::Value`
    // would sort the keys); the digests are then rewritten in the text.
    let text = serde_json::to_string_pretty(table)?;
    Ok(hex_digests(&text))
}

/// Rewrites every `"sha256": [n, ...]` array of the pretty-printed JSON as a hex string.
/// Pretty printing puts each key at the start of its own line and escapes newlines inside
/// strings, so a line that starts with the key is always a key, never string content.
fn hex_digests(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut lines = json.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed != "\"sha256\": [" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let mut hex = String::with_capacity(64);
        let mut close = "";
        for item in lines.by_ref() {
            let item = item.trim();
            if let Some(rest) = item.strip_prefix(']') {
                close = rest;
                break;
            }
            match item.trim_end_matches(',').parse::<u8>() {
                Ok(byte) => hex.push_str(&format!("{byte:02x}")),
                // Not an array of bytes after all: keep the number as written.
                Err(_) => hex.push_str(item),
            }
        }
        out.push_str(&format!("{indent}\"sha256\": \"{hex}\"{close}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hex_digests;

    #[test]
    fn digests_print_as_hex_and_the_rest_is_untouched() {
        let value = serde_json::json!({
            "name": "ratelimit",
            "sha256": [0, 1, 171, 255],
            "config_json": "{\"sha256\": [1, 2]}",
        });
        let pretty =
            serde_json::to_string_pretty(&serde_json::json!({ "filters": [value] })).expect("json");
        let out = hex_digests(&pretty);
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(parsed["filters"][0]["sha256"], "0001abff");
        assert_eq!(parsed["filters"][0]["config_json"], "{\"sha256\": [1, 2]}");
        assert_eq!(parsed["filters"][0]["name"], "ratelimit");
    }

    #[test]
    fn a_digest_followed_by_more_fields_keeps_its_comma() {
        let text = "{\n  \"sha256\": [\n    16,\n    32\n  ],\n  \"x\": 1\n}";
        assert_eq!(
            hex_digests(text),
            "{\n  \"sha256\": \"1020\",\n  \"x\": 1\n}\n"
        );
    }
}

//! The examples of `docs/diagnostics.md` are executable. For each `## mesh::<code>` entry,
//! the failing example is written to a fresh directory and checked with the real `meshc`
//! binary, run from that directory:
//!
//! - it must produce diagnostics of that code only, at the severity the entry states, and
//!   exit with status 1 for an error, 0 for a warning;
//! - the entry's **Output** block must be exactly what `meshc check` prints (human format, no
//!   colour), `$ meshc check PATH` line included;
//! - the fix must check clean: no diagnostic at all, status 0.
//!
//! The JSON document and the GitHub annotation in the page's introduction must also be what
//! `--format json` and `--format github` print for the `mesh::unknown-service` example.
//!
//! Conventions (stated at the top of the page too):
//!
//! - `**Example** (`PATH`)`: one file at `PATH`, checked as `meshc check PATH`.
//!   `**Example**, a directory `DIR/` of ...`: each ` ```mesh ` block is preceded by a line
//!   `` `NAME`: `` and is the file `DIR/NAME`, checked as `meshc check DIR/`.
//! - The fix's blocks replace the example's files: an unnamed block replaces the single file,
//!   a named block (`` `NAME`: ``) the file of that name; other files stay as they were.
//! - Filter modules: every module that the fix names exists (relative to the file naming it)
//!   as a valid WebAssembly module, so a module that only the failing example names is
//!   missing; every `.wat` module named anywhere exists as WebAssembly text.
//! - `⟨U+XXXX⟩` in an example stands for that (invisible) character; the output shows the
//!   same placeholder where the character is printed.
//!
//! Regenerate the output blocks after changing a diagnostic, then review the diff:
//!
//! ```text
//! UPDATE_DIAGNOSTICS_DOC=1 cargo test -p meshc --test diagnostics_doc
//! ```
//!
//! In that mode the test rewrites the blocks instead of comparing them (the other checks
//! still apply).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The page, read at run time (not `include_str!`) since update mode rewrites it.
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/diagnostics.md");

/// Set to `1` to rewrite the output blocks from what `meshc` prints.
const UPDATE_VAR: &str = "UPDATE_DIAGNOSTICS_DOC";

/// The smallest valid WebAssembly module: magic and version, no sections.
const VALID_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// What a `.wat` module holds: WebAssembly text, which is not a binary module.
const WAT_MODULE: &str = "(module)\n";

/// The code whose example the page's introduction uses for `--format json` and `github`.
const INTRO_CODE: &str = "mesh::unknown-service";

/// A fenced block of the page.
#[derive(Debug)]
struct Block {
    /// The info string (`mesh`, `text`, `json`).
    lang: String,
    /// The 1-based line of the opening fence.
    line: usize,
    /// The indentation of the fence, which every line of the body carries too.
    indent: String,
    /// The byte range of the body: from the line after the opening fence to the start of
    /// the closing fence's line.
    body: Range<usize>,
    /// `NAME` when the last non-blank line before the block is `` `NAME`: ``.
    name: Option<String>,
}

impl Block {
    /// The body without the fence's indentation.
    fn text(&self, doc: &str) -> String {
        doc[self.body.clone()]
            .split_inclusive('\n')
            .map(|line| line.strip_prefix(self.indent.as_str()).unwrap_or(line))
            .collect()
    }
}

/// Which part of an entry a line is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Prose,
    Example,
    Output,
    Fix,
}

/// One `## mesh::<code>` entry.
#[derive(Debug)]
struct Section {
    code: String,
    /// The 1-based line of the heading.
    line: usize,
    /// The `**Severity:** ...` value.
    severity: Option<String>,
    /// The `**Example** ...` line.
    example_intro: String,
    example: Vec<Block>,
    output: Vec<Block>,
    fix: Vec<Block>,
}

/// The page's introduction (before the first entry) and its entries.
#[derive(Debug)]
struct Page {
    intro: Vec<Block>,
    sections: Vec<Section>,
}

/// Splits the page into entries and their parts. An entry runs from its `## ` heading to
/// the next; within it, `**Example**`, `**Output:**` and `**Fix:**` at the start of a line
/// open the parts.
fn parse(doc: &str) -> Page {
    let mut page = Page {
        intro: Vec::new(),
        sections: Vec::new(),
    };
    let mut part = Part::Prose;
    let mut open: Option<Block> = None;
    let mut last_prose_line = "";
    let mut offset = 0;
    for (index, line) in doc.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let start = offset;
        offset += line.len();
        let content = line.trim_end_matches(['\n', '\r']);
        let trimmed = content.trim_start();
        if let Some(mut block) = open.take() {
            if trimmed == "```" && content.len() - trimmed.len() == block.indent.len() {
                block.body.end = start;
                match (page.sections.last_mut(), part) {
                    (None, _) => page.intro.push(block),
                    (Some(section), Part::Example) => section.example.push(block),
                    (Some(section), Part::Output) => section.output.push(block),
                    (Some(section), Part::Fix) => section.fix.push(block),
                    (Some(section), Part::Prose) => panic!(
                        "docs/diagnostics.md:{}: a code block in `{}` outside Example, Output \
                         and Fix",
                        block.line, section.code
                    ),
                }
            } else {
                open = Some(block);
            }
            continue;
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            let name = last_prose_line
                .trim()
                .strip_prefix('`')
                .and_then(|rest| rest.strip_suffix("`:"))
                .map(str::to_owned);
            open = Some(Block {
                lang: lang.trim().to_owned(),
                line: number,
                indent: content[..content.len() - trimmed.len()].to_owned(),
                body: offset..offset,
                name,
            });
            continue;
        }
        if !trimmed.is_empty() {
            last_prose_line = content;
        }
        if let Some(code) = content.strip_prefix("## ") {
            page.sections.push(Section {
                code: code.trim().to_owned(),
                line: number,
                severity: None,
                example_intro: String::new(),
                example: Vec::new(),
                output: Vec::new(),
                fix: Vec::new(),
            });
            part = Part::Prose;
        } else if let Some(section) = page.sections.last_mut() {
            if let Some(severity) = content.strip_prefix("**Severity:**") {
                section.severity = Some(severity.trim().to_owned());
            } else if content.starts_with("**Example**") {
                section.example_intro = content.to_owned();
                part = Part::Example;
            } else if content.starts_with("**Output:**") {
                part = Part::Output;
            } else if content.starts_with("**Fix:**") {
                part = Part::Fix;
            }
        }
    }
    assert!(
        open.is_none(),
        "docs/diagnostics.md: a code block is never closed"
    );
    page
}

/// `⟨U+202E⟩` → the character itself; also returns the characters substituted.
fn substitute_placeholders(text: &str) -> (String, Vec<char>) {
    let mut out = String::with_capacity(text.len());
    let mut chars = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("⟨U+") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "⟨U+".len()..];
        let character = after
            .find('⟩')
            .and_then(|end| {
                u32::from_str_radix(&after[..end], 16)
                    .ok()
                    .map(|n| (n, end))
            })
            .and_then(|(n, end)| char::from_u32(n).map(|c| (c, end)));
        match character {
            Some((c, end)) => {
                out.push(c);
                if !chars.contains(&c) {
                    chars.push(c);
                }
                rest = &after[end + '⟩'.len_utf8()..];
            }
            None => {
                out.push_str("⟨U+");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out, chars)
}

/// The characters substituted back into their placeholders, for the page.
fn restore_placeholders(text: &str, chars: &[char]) -> String {
    let mut out = text.to_owned();
    for &c in chars {
        out = out.replace(c, &format!("⟨U+{:04X}⟩", u32::from(c)));
    }
    out
}

/// What an example checks: files by path (relative to the working directory) and the path
/// given to `meshc check`.
#[derive(Debug, Clone)]
struct Policy {
    files: BTreeMap<PathBuf, String>,
    target: String,
}

/// Where an entry's files go: one file, or a directory of named files.
enum Layout {
    File(PathBuf),
    Directory(PathBuf),
}

fn layout(section: &Section) -> Result<Layout, String> {
    let intro = &section.example_intro;
    if let Some(rest) = intro.split_once("a directory `").map(|(_, rest)| rest) {
        let dir = rest
            .split_once('`')
            .map(|(dir, _)| dir.trim_end_matches('/'))
            .ok_or_else(|| format!("unterminated directory name in {intro:?}"))?;
        return Ok(Layout::Directory(PathBuf::from(dir)));
    }
    let file = intro
        .split_once("(`")
        .and_then(|(_, rest)| rest.split_once("`)"))
        .map(|(file, _)| file)
        .ok_or_else(|| {
            format!(
                "the example line should read \"**Example** (`FILE`):\" or \"**Example**, a \
                 directory `DIR/` of ...\", not {intro:?}"
            )
        })?;
    Ok(Layout::File(PathBuf::from(file)))
}

/// The example's policy, and the characters its placeholders stand for.
fn example_policy(doc: &str, section: &Section) -> Result<(Policy, Vec<char>), String> {
    let mut chars = Vec::new();
    let mut files = BTreeMap::new();
    let mesh: Vec<&Block> = section
        .example
        .iter()
        .filter(|b| b.lang == "mesh")
        .collect();
    let target = match layout(section)? {
        Layout::File(path) => {
            let [block] = mesh.as_slice() else {
                return Err(format!(
                    "a single-file example has one ```mesh block, not {}",
                    mesh.len()
                ));
            };
            let (text, used) = substitute_placeholders(&block.text(doc));
            chars.extend(used);
            files.insert(path.clone(), text);
            path.display().to_string()
        }
        Layout::Directory(dir) => {
            if mesh.is_empty() {
                return Err("the example has no ```mesh block".into());
            }
            for block in mesh {
                let name = block.name.as_ref().ok_or_else(|| {
                    format!(
                        "line {}: a directory example's block needs a `NAME`: line before it",
                        block.line
                    )
                })?;
                let (text, used) = substitute_placeholders(&block.text(doc));
                chars.extend(used);
                files.insert(dir.join(name), text);
            }
            format!("{}/", dir.display())
        }
    };
    Ok((Policy { files, target }, chars))
}

/// The example's policy with the fix's blocks in place of the files they name.
fn fixed_policy(doc: &str, section: &Section, example: &Policy) -> Result<Policy, String> {
    let mut fixed = example.clone();
    let mesh: Vec<&Block> = section.fix.iter().filter(|b| b.lang == "mesh").collect();
    if mesh.is_empty() {
        return Err("the fix has no ```mesh block".into());
    }
    for block in mesh {
        let path = match (&block.name, layout(section)?) {
            (None, Layout::File(path)) => path,
            (Some(name), Layout::Directory(dir)) => dir.join(name),
            (Some(name), Layout::File(path)) if path.file_name() == Some(name.as_ref()) => path,
            (None, Layout::Directory(_)) => {
                return Err(format!(
                    "line {}: in a directory example, each fix block needs a `NAME`: line",
                    block.line
                ))
            }
            (Some(name), Layout::File(path)) => {
                return Err(format!(
                    "line {}: the fix names `{name}` but the example is `{}`",
                    block.line,
                    path.display()
                ))
            }
        };
        if !fixed.files.contains_key(&path) {
            return Err(format!(
                "line {}: the fix replaces `{}`, which the example does not have",
                block.line,
                path.display()
            ));
        }
        fixed
            .files
            .insert(path, substitute_placeholders(&block.text(doc)).0);
    }
    Ok(fixed)
}

/// The `module "..."` paths of a file, relative to the working directory.
fn modules(path: &Path, text: &str) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new(""));
    text.split("module \"")
        .skip(1)
        .filter_map(|rest| rest.split_once('"').map(|(module, _)| dir.join(module)))
        .collect()
}

/// A fresh directory holding the policy's files and the entry's filter modules (see the
/// conventions above).
fn workspace(example: &Policy, fixed: &Policy) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let write = |path: &Path, bytes: &[u8]| {
        let path = dir.path().join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create a directory");
        }
        fs::write(&path, bytes).expect("write a file");
    };
    for (path, text) in &fixed.files {
        for module in modules(path, text) {
            // `ratelimit.wasm` declares the ratelimit example's config schema, so entries
            // can show a config the module refuses.
            if module.file_name().is_some_and(|n| n == "ratelimit.wasm") {
                write(
                    &module,
                    &support::module_with_schema(support::RATELIMIT_SCHEMA),
                );
            } else {
                write(&module, VALID_MODULE);
            }
        }
    }
    for policy in [example, fixed] {
        for (path, text) in &policy.files {
            for module in modules(path, text) {
                if module.extension().is_some_and(|e| e == "wat") {
                    write(&module, WAT_MODULE.as_bytes());
                }
            }
        }
    }
    dir
}

/// Writes the policy's files (replacing any of the same name) and runs `meshc check`.
fn check(dir: &Path, policy: &Policy, extra: &[&str]) -> Output {
    for (path, text) in &policy.files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create a directory");
        }
        fs::write(&path, text).expect("write a policy file");
    }
    Command::new(env!("CARGO_BIN_EXE_meshc"))
        .current_dir(dir)
        .arg("check")
        .args(extra)
        .arg(&policy.target)
        .env("NO_COLOR", "1")
        .output()
        .expect("run meshc")
}

fn utf8(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("meshc prints UTF-8")
}

/// The `(code, severity)` of each diagnostic of a `--format json` document.
fn json_diagnostics(output: &Output) -> Result<Vec<(String, String)>, String> {
    let document: Value = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "--format json printed no JSON document ({e}); stderr: {}",
            utf8(&output.stderr)
        )
    })?;
    let diagnostics = document["diagnostics"]
        .as_array()
        .ok_or("the JSON document has no `diagnostics` array")?;
    Ok(diagnostics
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default().to_owned(),
                d["severity"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}

/// One block's new text, for update mode.
struct Edit {
    range: Range<usize>,
    text: String,
}

/// What checking the page found.
#[derive(Default)]
struct Findings {
    /// Problems that update mode does not fix.
    failures: Vec<String>,
    /// Output blocks that differ from what `meshc` prints.
    stale: Vec<String>,
    edits: Vec<Edit>,
}

impl Findings {
    fn fail(&mut self, section: &Section, message: impl AsRef<str>) {
        self.failures.push(format!(
            "docs/diagnostics.md:{} `{}`: {}",
            section.line,
            section.code,
            message.as_ref()
        ));
    }

    /// Compares a block with what it should hold, indented as the block is.
    fn compare(&mut self, doc: &str, block: &Block, what: &str, expected: &str) {
        let indented: String = expected
            .split_inclusive('\n')
            .map(|line| {
                if line.trim().is_empty() && !block.indent.is_empty() {
                    line.to_owned()
                } else {
                    format!("{}{line}", block.indent)
                }
            })
            .collect();
        let actual = &doc[block.body.clone()];
        if actual != indented {
            self.stale.push(format!(
                "docs/diagnostics.md:{}: {what} is stale.\n--- the page has:\n{actual}--- \
                 meshc prints:\n{indented}---",
                block.line
            ));
            self.edits.push(Edit {
                range: block.body.clone(),
                text: indented,
            });
        }
    }
}

/// Checks one entry: the example's diagnostics, its output block, and the fix.
fn check_section(doc: &str, section: &Section, findings: &mut Findings) {
    let (example, chars) = match example_policy(doc, section) {
        Ok(parsed) => parsed,
        Err(message) => return findings.fail(section, message),
    };
    let fixed = match fixed_policy(doc, section, &example) {
        Ok(fixed) => fixed,
        Err(message) => return findings.fail(section, message),
    };
    let dir = workspace(&example, &fixed);

    // The example: this code only, at the stated severity.
    let json = check(dir.path(), &example, &["--format", "json"]);
    match json_diagnostics(&json) {
        Ok(diagnostics) => {
            let codes: Vec<&str> = diagnostics.iter().map(|(c, _)| c.as_str()).collect();
            if !codes.contains(&section.code.as_str()) {
                findings.fail(
                    section,
                    format!("the example does not produce its code; it produces {codes:?}"),
                );
            } else if codes.iter().any(|c| *c != section.code) {
                findings.fail(
                    section,
                    format!("the example produces other codes too: {codes:?}"),
                );
            }
            let stated = section.severity.as_deref().unwrap_or("(none)");
            for (code, severity) in &diagnostics {
                if *code == section.code && severity != stated {
                    findings.fail(
                        section,
                        format!("the entry says {stated}, but meshc reports a {severity}"),
                    );
                }
            }
        }
        Err(message) => findings.fail(section, format!("the example: {message}")),
    }

    // The output block: exactly what `meshc check` prints.
    let human = check(dir.path(), &example, &["--color", "never"]);
    let expected_status = i32::from(section.severity.as_deref() == Some("error"));
    if human.status.code() != Some(expected_status) {
        findings.fail(
            section,
            format!(
                "the example should exit with status {expected_status}, not {:?}",
                human.status.code()
            ),
        );
    }
    if !human.stdout.is_empty() {
        findings.fail(section, "human diagnostics belong on stderr, not stdout");
    }
    let printed = format!(
        "$ meshc check {}\n{}",
        example.target,
        restore_placeholders(&utf8(&human.stderr), &chars)
    );
    match section.output.as_slice() {
        [block] if block.lang == "text" => {
            findings.compare(
                doc,
                block,
                &format!("the output of `{}`", section.code),
                &printed,
            );
        }
        _ => findings.fail(section, "the Output part should be one ```text block"),
    }

    // The fix: checks clean.
    let fixed_run = check(dir.path(), &fixed, &["--format", "json"]);
    match json_diagnostics(&fixed_run) {
        Ok(diagnostics) if diagnostics.is_empty() && fixed_run.status.success() => {}
        Ok(diagnostics) => {
            let human = check(dir.path(), &fixed, &["--color", "never"]);
            findings.fail(
                section,
                format!(
                    "the fix should check clean, but gives {diagnostics:?} (status {:?}):\n{}",
                    fixed_run.status.code(),
                    utf8(&human.stderr)
                ),
            );
        }
        Err(message) => findings.fail(section, format!("the fix: {message}")),
    }
}

/// Checks the introduction's `--format json` block and `--format github` line, which show
/// the `mesh::unknown-service` example.
fn check_intro(doc: &str, page: &Page, findings: &mut Findings) {
    let Some(section) = page.sections.iter().find(|s| s.code == INTRO_CODE) else {
        findings
            .failures
            .push(format!("docs/diagnostics.md: no `{INTRO_CODE}` entry"));
        return;
    };
    let Ok((example, _)) = example_policy(doc, section) else {
        return; // reported by check_section
    };
    let dir = workspace(&example, &example);
    let json = check(dir.path(), &example, &["--format", "json"]);
    match page.intro.iter().find(|b| b.lang == "json") {
        Some(block) => {
            findings.compare(
                doc,
                block,
                "the `--format json` example",
                &utf8(&json.stdout),
            );
        }
        None => findings
            .failures
            .push("docs/diagnostics.md: the introduction has no ```json block".into()),
    }

    // The annotation is quoted inline, as `` ::error ... ``.
    let github = utf8(&check(dir.path(), &example, &["--format", "github"]).stdout);
    let github = github.trim_end();
    let quoted = doc
        .find("`` ::")
        .map(|start| start + "`` ".len())
        .and_then(|start| doc[start..].find(" ``").map(|len| start..start + len));
    match quoted {
        Some(range) if doc[range.clone()] == *github => {}
        Some(range) => {
            findings.stale.push(format!(
                "docs/diagnostics.md: the `--format github` example is stale.\n--- the page \
                 has:\n{}\n--- meshc prints:\n{github}\n---",
                &doc[range.clone()]
            ));
            findings.edits.push(Edit {
                range,
                text: github.to_owned(),
            });
        }
        None => findings.failures.push(
            "docs/diagnostics.md: the introduction quotes no `` ::error ... `` annotation".into(),
        ),
    }
}

#[test]
fn the_diagnostics_reference_examples_are_what_meshc_prints() {
    let doc = fs::read_to_string(DOC).expect("read docs/diagnostics.md");
    let page = parse(&doc);
    let mut findings = Findings::default();

    let documented: Vec<&str> = page.sections.iter().map(|s| s.code.as_str()).collect();
    let codes: Vec<&str> = meshc::Code::ALL.iter().map(|c| c.as_str()).collect();
    if documented != codes {
        findings.failures.push(format!(
            "docs/diagnostics.md has entries {documented:?}, but the codes are {codes:?}"
        ));
    }
    for section in &page.sections {
        check_section(&doc, section, &mut findings);
    }
    check_intro(&doc, &page, &mut findings);

    let update = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1");
    if update && !findings.edits.is_empty() {
        let mut updated = doc.clone();
        findings.edits.sort_by_key(|edit| edit.range.start);
        for edit in findings.edits.iter().rev() {
            updated.replace_range(edit.range.clone(), &edit.text);
        }
        fs::write(DOC, updated).expect("write docs/diagnostics.md");
        eprintln!(
            "{UPDATE_VAR}=1: rewrote {} block(s) of docs/diagnostics.md; review the diff",
            findings.edits.len()
        );
    }
    let mut problems = findings.failures;
    if !update && !findings.stale.is_empty() {
        problems.extend(findings.stale);
        problems.push(format!(
            "to rewrite the stale blocks: {UPDATE_VAR}=1 cargo test -p meshc --test \
             diagnostics_doc (then review the diff)"
        ));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

/// The parser behind the test, on a page small enough to read.
#[test]
fn the_page_parser_finds_the_parts_of_each_entry() {
    let doc = "# Title\n\n- json:\n\n  ```json\n  {}\n  ```\n\n## mesh::a\n\n**Severity:** \
               warning\n\n**Example**, a directory `p/` of two files:\n\n`x.mesh`:\n\n```mesh\n\
               x\n```\n\n**Output:**\n\n```text\nout\n```\n\n**Fix:** Do.\n\n`x.mesh`:\n\n\
               ```mesh\ny ⟨U+202E⟩\n```\n";
    let page = parse(doc);
    assert_eq!(page.intro.len(), 1);
    assert_eq!(page.intro[0].indent, "  ");
    assert_eq!(page.intro[0].text(doc), "{}\n");
    let [section] = page.sections.as_slice() else {
        panic!("one section expected: {page:?}");
    };
    assert_eq!(section.code, "mesh::a");
    assert_eq!(section.severity.as_deref(), Some("warning"));
    assert_eq!(section.example[0].name.as_deref(), Some("x.mesh"));
    assert_eq!(section.output[0].text(doc), "out\n");
    let (example, _) = example_policy(doc, section).expect("example");
    assert_eq!(example.target, "p/");
    let fixed = fixed_policy(doc, section, &example).expect("fix");
    assert_eq!(fixed.files[Path::new("p/x.mesh")], "y \u{202E}\n");
}

#[test]
fn placeholders_round_trip() {
    let (text, chars) = substitute_placeholders("a⟨U+202E⟩b ⟨U+zz⟩ ⟨U+2066⟩");
    assert_eq!(text, "a\u{202E}b ⟨U+zz⟩ \u{2066}");
    assert_eq!(chars, ['\u{202E}', '\u{2066}']);
    assert_eq!(
        restore_placeholders(&text, &chars),
        "a⟨U+202E⟩b ⟨U+zz⟩ ⟨U+2066⟩"
    );
}

//! `meshc explain`: print a diagnostic code's entry from the diagnostics reference.

use meshc::diag::{did_you_mean, Code};

use super::{error, write_stderr, write_stdout, Outcome};

/// The diagnostics reference, built into the binary so `explain` works anywhere.
const REFERENCE: &str = include_str!("../../../docs/diagnostics.md");

/// `meshc explain CODE`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The code, as printed (`mesh::unknown-service`) or without its prefix (`unknown-service`).
    #[arg(value_name = "CODE")]
    code: String,
}

/// Runs `meshc explain`; an unknown code is a usage error (status 2).
pub(crate) fn run(args: &Args) -> Outcome {
    let asked = args.code.trim().to_ascii_lowercase();
    let bare = asked.strip_prefix("mesh::").unwrap_or(&asked);
    let Some(code) = Code::ALL
        .iter()
        .find(|code| code.as_str().strip_prefix("mesh::") == Some(bare))
    else {
        error(format_args!("unknown diagnostic code `{}`", args.code));
        let names = Code::ALL
            .iter()
            .filter_map(|code| code.as_str().strip_prefix("mesh::"));
        match did_you_mean(bare, names) {
            Some(near) => write_stderr(&format!("help: did you mean `mesh::{near}`?\n")),
            None => write_stderr(&format!(
                "help: the codes are {}\n",
                Code::ALL
                    .iter()
                    .map(|code| code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        return Outcome::CouldNotRun;
    };
    match section(REFERENCE, code.as_str()) {
        Some(text) => match write_stdout(&format!("{text}\n")) {
            Ok(()) => Outcome::Success,
            Err(outcome) => outcome,
        },
        None => {
            // The unit tests below make this unreachable in a tested build.
            error(format_args!(
                "internal: `{}` has no entry in the diagnostics reference",
                code.as_str()
            ));
            Outcome::CouldNotRun
        }
    }
}

/// The `## <code>` sections of the reference: the code and the whole section, heading
/// included, up to the next `## ` heading.
fn sections(reference: &str) -> Vec<(&str, &str)> {
    let mut starts: Vec<(usize, &str)> = Vec::new();
    let mut offset = 0;
    for line in reference.split_inclusive('\n') {
        if let Some(code) = line.strip_prefix("## ") {
            starts.push((offset, code.trim()));
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &(start, code))| {
            let end = starts.get(i + 1).map_or(reference.len(), |&(next, _)| next);
            (code, reference[start..end].trim_end())
        })
        .collect()
}

/// The section of `code`.
fn section<'a>(reference: &'a str, code: &str) -> Option<&'a str> {
    sections(reference)
        .into_iter()
        .find(|(name, _)| *name == code)
        .map(|(_, text)| text)
}

#[cfg(test)]
mod tests {
    use super::{section, sections, Code, REFERENCE};

    #[test]
    fn every_code_has_a_section_in_order_and_every_section_a_code() {
        let documented: Vec<&str> = sections(REFERENCE).into_iter().map(|(c, _)| c).collect();
        let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        for code in &codes {
            assert!(
                documented.contains(code),
                "`{code}` has no `## {code}` section in docs/diagnostics.md"
            );
        }
        for name in &documented {
            assert!(
                codes.contains(name),
                "docs/diagnostics.md has a section `## {name}` but there is no such code"
            );
        }
        assert_eq!(
            documented, codes,
            "sections must follow the order of `Code::ALL`"
        );
    }

    #[test]
    fn every_section_states_its_severity_and_shows_an_example_and_a_fix() {
        for &code in Code::ALL {
            let text = section(REFERENCE, code.as_str()).unwrap_or_default();
            let severity = match code.severity() {
                meshc::Severity::Error => "**Severity:** error",
                meshc::Severity::Warning => "**Severity:** warning",
            };
            assert!(
                text.contains(severity),
                "{}: wrong or missing severity",
                code.as_str()
            );
            assert!(
                text.matches("```mesh").count() >= 2,
                "{}: needs a failing and a fixed example",
                code.as_str()
            );
            assert!(
                text.contains(code.as_str()),
                "{}: the output should show the code",
                code.as_str()
            );
        }
    }

    #[test]
    fn sections_split_on_level_two_headings() {
        let doc = "# Title\n\nintro\n\n## mesh::a\n\ntext a\n\n## mesh::b\ntext b\n";
        assert_eq!(
            sections(doc),
            [
                ("mesh::a", "## mesh::a\n\ntext a"),
                ("mesh::b", "## mesh::b\ntext b")
            ]
        );
        assert_eq!(section(doc, "mesh::b"), Some("## mesh::b\ntext b"));
        assert_eq!(section(doc, "mesh::c"), None);
    }
}

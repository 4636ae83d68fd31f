//! Typed reading of untyped values: durations, percentages, sizes, integers, strings, and
//! the rest, each failure a diagnostic that names the expected type and, where it can, the fix.

use mesh_table::{Method, Ppm, StatusMatch};

use super::Ctx;
use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::source::Spanned;
use crate::syntax::ast::Value;

type V = Spanned<Value>;

impl Ctx<'_> {
    fn type_error(&mut self, value: &V, expected: &str, help: Option<String>) {
        let mut d = Diagnostic::new(
            Code::TypeMismatch,
            &value.loc,
            format!("expected {expected}, found {}", value.node.describe()),
        )
        .label(format!("expected {expected}"));
        if let Some(help) = help {
            d = d.help(help);
        }
        self.push(d);
    }

    /// A duration in milliseconds: `250ms`, `2s`, `1.5m`, `1h`.
    pub(super) fn duration_ms(&mut self, value: &V) -> Option<u64> {
        let (number, unit) = match &value.node {
            Value::Quantity { number, unit } => (number, unit.as_str()),
            Value::Str(s) if parse_duration_text(s).is_some() => {
                self.type_error(
                    value,
                    "a duration",
                    Some(format!("remove the quotes: `{s}`")),
                );
                return None;
            }
            _ => {
                self.type_error(
                    value,
                    "a duration",
                    Some("write a number with a unit: `250ms`, `2s`, `1m`, `1h`".into()),
                );
                return None;
            }
        };
        if unit.is_empty() {
            let help = format!("did you mean `{number}s`? durations take a unit: ms, s, m or h");
            self.type_error(value, "a duration", Some(help));
            return None;
        }
        let Some(factor) = duration_factor(unit) else {
            let suggestion = match unit {
                "sec" | "secs" | "second" | "seconds" | "S" => Some("s"),
                "min" | "mins" | "minute" | "minutes" | "M" => Some("m"),
                "msec" | "msecs" | "millis" | "milliseconds" | "MS" => Some("ms"),
                "hr" | "hrs" | "hour" | "hours" | "H" => Some("h"),
                _ => None,
            };
            let help = match (suggestion, unit) {
                (Some(s), _) => format!("did you mean `{number}{s}`?"),
                (None, "us" | "µs" | "ns") => {
                    "durations have millisecond precision: write `1ms` or more".into()
                }
                (None, "%") => "this field takes a duration, not a percentage".into(),
                _ => "duration units are ms, s, m and h".into(),
            };
            self.push(
                Diagnostic::new(
                    Code::UnknownUnit,
                    &value.loc,
                    format!("`{unit}` is not a duration unit"),
                )
                .label("expected ms, s, m or h")
                .help(help),
            );
            return None;
        };
        match scaled(number, factor) {
            Some(ms) => Some(ms),
            None => {
                self.out_of_range(value, "a whole number of milliseconds, at most 2^53", None);
                None
            }
        }
    }

    /// A percentage in parts per million: `10%`, `0.5%`, at most `100%`.
    pub(super) fn percent(&mut self, value: &V) -> Option<Ppm> {
        match &value.node {
            Value::Quantity { number, unit } if unit == "%" => {
                match scaled(number, 10_000).and_then(|ppm| u32::try_from(ppm).ok()) {
                    Some(ppm) if ppm <= Ppm::FULL.0 => Some(Ppm(ppm)),
                    Some(_) => {
                        self.out_of_range(value, "a percentage from 0% to 100%", None);
                        None
                    }
                    None => {
                        self.out_of_range(
                            value,
                            "a percentage with at most 4 decimals, from 0% to 100%",
                            None,
                        );
                        None
                    }
                }
            }
            Value::Quantity { number, unit } if unit.is_empty() => {
                self.type_error(
                    value,
                    "a percentage",
                    Some(format!("did you mean `{number}%`?")),
                );
                None
            }
            _ => {
                self.type_error(
                    value,
                    "a percentage",
                    Some("write it as `10%` or `0.5%`".into()),
                );
                None
            }
        }
    }

    /// A size in bytes: `512KiB`, `16MiB`.
    pub(super) fn size_bytes(&mut self, value: &V) -> Option<u64> {
        let Value::Quantity { number, unit } = &value.node else {
            self.type_error(
                value,
                "a size",
                Some("write it as `512KiB` or `16MiB`".into()),
            );
            return None;
        };
        let factor = match unit.as_str() {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "" => {
                self.type_error(
                    value,
                    "a size",
                    Some(format!(
                        "did you mean `{number}MiB`? sizes take a unit: B, KiB, MiB or GiB"
                    )),
                );
                return None;
            }
            other => {
                let binary = match other.to_ascii_lowercase().as_str() {
                    "kb" | "k" | "kib" => Some("KiB"),
                    "mb" | "m" | "mib" => Some("MiB"),
                    "gb" | "g" | "gib" => Some("GiB"),
                    "b" => Some("B"),
                    _ => None,
                };
                let help = binary.map_or_else(
                    || "size units are B, KiB, MiB and GiB".to_string(),
                    |u| format!("did you mean `{number}{u}`? sizes are binary: B, KiB, MiB, GiB"),
                );
                self.push(
                    Diagnostic::new(
                        Code::UnknownUnit,
                        &value.loc,
                        format!("`{other}` is not a size unit"),
                    )
                    .label("expected B, KiB, MiB or GiB")
                    .help(help),
                );
                return None;
            }
        };
        let bytes = scaled(number, factor);
        if bytes.is_none() {
            self.out_of_range(value, "a whole number of bytes", None);
        }
        bytes
    }

    /// An integer within `min..=max`.
    pub(super) fn integer(&mut self, value: &V, min: u64, max: u64) -> Option<u64> {
        match &value.node {
            Value::Quantity { number, unit } if unit.is_empty() && !number.contains('.') => {
                match number.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Some(n),
                    _ => {
                        self.out_of_range(value, &format!("an integer from {min} to {max}"), None);
                        None
                    }
                }
            }
            Value::Quantity { number, unit } if unit.is_empty() => {
                let help = format!(
                    "use a whole number, such as `{}`",
                    number.split('.').next().unwrap_or("1")
                );
                self.type_error(value, "an integer", Some(help));
                None
            }
            Value::Str(text) if text.parse::<u64>().is_ok() => {
                self.type_error(
                    value,
                    "an integer",
                    Some(format!("remove the quotes: `{text}`")),
                );
                None
            }
            _ => {
                self.type_error(
                    value,
                    "an integer",
                    Some(format!("write a whole number from {min} to {max}")),
                );
                None
            }
        }
    }

    /// A string literal.
    pub(super) fn string<'v>(&mut self, value: &'v V) -> Option<&'v str> {
        match &value.node {
            Value::Str(s) => Some(s),
            Value::Word(w) => {
                self.type_error(value, "a string", Some(format!("quote it: `\"{w}\"`")));
                None
            }
            _ => {
                let text = value.loc.text();
                self.type_error(
                    value,
                    "a string",
                    Some(format!("write it in double quotes: `\"{text}\"`")),
                );
                None
            }
        }
    }

    /// `true` or `false`.
    pub(super) fn boolean(&mut self, value: &V) -> Option<bool> {
        match &value.node {
            Value::Word(w) if w == "true" => Some(true),
            Value::Word(w) if w == "false" => Some(false),
            _ => {
                self.type_error(value, "a bool", Some("write `true` or `false`".into()));
                None
            }
        }
    }

    /// One of `choices` (a bare word).
    pub(super) fn choice<'c>(
        &mut self,
        value: &V,
        choices: &[&'c str],
        what: &str,
    ) -> Option<&'c str> {
        let word = match &value.node {
            Value::Word(w) => w.as_str(),
            Value::Str(s) if choices.contains(&s.as_str()) => {
                self.type_error(value, what, Some(format!("remove the quotes: `{s}`")));
                return None;
            }
            _ => {
                self.type_error(value, what, Some(format!("one of: {}", choices.join(", "))));
                return None;
            }
        };
        if let Some(found) = choices.iter().find(|c| **c == word) {
            return Some(found);
        }
        let help = did_you_mean(word, choices.iter().copied()).map_or_else(
            || format!("expected one of: {}", choices.join(", ")),
            |near| {
                format!(
                    "did you mean `{near}`? expected one of: {}",
                    choices.join(", ")
                )
            },
        );
        self.push(
            Diagnostic::new(
                Code::InvalidChoice,
                &value.loc,
                format!("`{word}` is not {what}"),
            )
            .label(format!("not {what}"))
            .help(help),
        );
        None
    }

    /// An HTTP method: one of the nine standard ones, upper case.
    pub(super) fn method(&mut self, value: &V) -> Option<Method> {
        if let Value::Word(w) = &value.node {
            if let Some(m) = Method::parse(w) {
                return Some(m);
            }
            if let Some(m) = Method::parse(&w.to_ascii_uppercase()) {
                self.push(
                    Diagnostic::new(
                        Code::InvalidChoice,
                        &value.loc,
                        format!("`{w}` is not a method"),
                    )
                    .label("methods are upper case")
                    .help(format!("write `{}`", m.as_str())),
                );
                return None;
            }
        }
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
        self.choice(value, &names, "an HTTP method")
            .and_then(Method::parse)
    }

    /// A status code (100–599) or class (`5xx`).
    pub(super) fn status(&mut self, value: &V) -> Option<StatusMatch> {
        match &value.node {
            Value::Quantity { number, unit } if unit == "xx" && number.len() == 1 => {
                match number.parse::<u8>() {
                    Ok(class @ 1..=5) => Some(StatusMatch::Class(class)),
                    _ => {
                        self.out_of_range(value, "a status class from `1xx` to `5xx`", None);
                        None
                    }
                }
            }
            Value::Quantity { unit, .. } if unit.is_empty() => self
                .integer(value, 100, 599)
                .and_then(|n| u16::try_from(n).ok())
                .map(StatusMatch::Code),
            _ => {
                self.type_error(
                    value,
                    "a status",
                    Some("write a code such as `503` or a class such as `5xx`".into()),
                );
                None
            }
        }
    }

    /// The items of a list; a single value stands for a list of one.
    pub(super) fn list<'v>(&mut self, value: &'v V) -> &'v [V] {
        match &value.node {
            Value::List(items) => items,
            Value::Object(_) => {
                self.type_error(value, "a list", Some("write a list as `[a, b]`".into()));
                &[]
            }
            _ => std::slice::from_ref(value),
        }
    }

    pub(super) fn out_of_range(&mut self, value: &V, expected: &str, help: Option<String>) {
        let d = Diagnostic::new(
            Code::OutOfRange,
            &value.loc,
            format!(
                "`{}` is out of range: expected {expected}",
                value.loc.text()
            ),
        )
        .label(format!("expected {expected}"))
        .help(help.unwrap_or_else(|| format!("change it to {expected}")));
        self.push(d);
    }
}

fn duration_factor(unit: &str) -> Option<u64> {
    match unit {
        "ms" => Some(1),
        "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    }
}

fn parse_duration_text(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let factor = duration_factor(&s[split..])?;
    scaled(&s[..split], factor)
}

/// `number × factor` computed exactly from the decimal text; `None` when the result is not
/// a whole number or exceeds 2^53 (so it survives a trip through JSON).
pub(super) fn scaled(number: &str, factor: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let mut value: u128 = whole.parse().ok()?;
    value *= u128::from(factor);
    let mut denominator: u128 = 1;
    let mut numerator: u128 = 0;
    for digit in fraction.chars() {
        denominator = denominator.checked_mul(10)?;
        numerator = numerator * 10 + u128::from(digit.to_digit(10)?);
    }
    let fractional = numerator.checked_mul(u128::from(factor))?;
    if fractional % denominator != 0 {
        return None;
    }
    value += fractional / denominator;
    (value <= 1 << 53)
        .then(|| u64::try_from(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::scaled;

    #[test]
    fn scaling_is_exact() {
        assert_eq!(scaled("1.5", 1000), Some(1500));
        assert_eq!(scaled("0.5", 10_000), Some(5_000));
        assert_eq!(scaled("0.0001", 10_000), Some(1));
        assert_eq!(scaled("0.00001", 10_000), None);
        assert_eq!(scaled("250", 1), Some(250));
        assert_eq!(scaled("99999999999999999999999", 1), None);
    }
}

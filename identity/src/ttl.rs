//! Certificate lifetimes as people write them: `90s`, `30m`, `24h`, `7d`.

use std::time::Duration;

use crate::error::IdentityError;

/// The longest lifetime a TTL may ask for (about 100 years), so that adding it to the
/// current time cannot overflow.
const MAX_SECS: u64 = 100 * 365 * 86_400;

/// Parses a whole number followed by one unit: `s`, `m`, `h` or `d`. Zero is refused.
pub fn parse_ttl(input: &str) -> Result<Duration, IdentityError> {
    let bad = |problem: &'static str| IdentityError::Ttl {
        input: input.to_owned(),
        problem,
    };
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("add a unit: s, m, h or d (e.g. `24h`)"))?;
    let (number, unit) = input.split_at(split);
    if number.is_empty() {
        return Err(bad("expected a whole number then a unit (e.g. `24h`)"));
    }
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(bad("the unit is one of s, m, h, d (e.g. `24h`)")),
    };
    let secs = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&s| s <= MAX_SECS)
        .ok_or_else(|| bad("longer than 100 years"))?;
    if secs == 0 {
        return Err(bad("a certificate must live longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        let secs = |s: &str| parse_ttl(s).expect(s).as_secs();
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("30m"), 1_800);
        assert_eq!(secs("24h"), 86_400);
        assert_eq!(secs("7d"), 604_800);
    }

    #[test]
    fn mistakes_are_refused() {
        for bad in [
            "",
            "24",
            "h",
            "1.5h",
            "24 h",
            "24H",
            "1w",
            "0s",
            "-1h",
            "99999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}

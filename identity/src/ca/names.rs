//! The host names and addresses a workload certificate may carry beside its SPIFFE ID, for
//! clients that check the name or address they dialled (curl, OpenSSL, browsers) instead of
//! a SPIFFE ID. The X509-SVID standard allows other SANs beside the one URI SAN.

use crate::error::IdentityError;

/// The longest DNS name, in bytes (RFC 1035, without the root's trailing dot).
const MAX_NAME: usize = 253;
/// The longest label, in bytes.
const MAX_LABEL: usize = 63;

/// Validates a DNS name for a certificate (`payments.shop.internal`) and returns it in
/// lowercase. Host names only (RFC 1123 labels of `a-z 0-9 -`): no wildcard, which would let
/// one workload's certificate answer for names it does not own, no trailing dot, and no IP
/// address (those go in the IP address SANs, where clients look for them).
pub fn dns_name(input: &str) -> Result<String, IdentityError> {
    let bad = |problem: &'static str| IdentityError::DnsName {
        input: input.to_owned(),
        problem,
    };
    if input.is_empty() {
        return Err(bad("it is empty"));
    }
    if input.len() > MAX_NAME {
        return Err(bad("it is longer than 253 bytes"));
    }
    if input.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad("an IP address goes in --ip"));
    }
    if input.starts_with("*.") {
        return Err(bad("wildcards are not issued: name each host"));
    }
    if input.ends_with('.') {
        return Err(bad("leave out the trailing dot"));
    }
    for label in input.split('.') {
        if label.is_empty() {
            return Err(bad("it has an empty label"));
        }
        if label.len() > MAX_LABEL {
            return Err(bad("a label is longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("only letters, digits, `-` and `.` are allowed"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label neither starts nor ends with `-`"));
        }
    }
    // A last label of digits alone would be read as an address by some clients.
    if input
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(
            "the last label is all digits (an IP address goes in --ip)",
        ));
    }
    Ok(input.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::dns_name;

    #[test]
    fn host_names_pass_in_lowercase() {
        assert_eq!(
            dns_name("Payments.shop-1.internal").ok().as_deref(),
            Some("payments.shop-1.internal")
        );
        assert_eq!(dns_name("localhost").ok().as_deref(), Some("localhost"));
    }

    #[test]
    fn everything_else_is_refused_with_the_rule() {
        for (input, rule) in [
            ("", "empty"),
            ("*.shop.internal", "wildcard"),
            ("shop.internal.", "trailing dot"),
            ("127.0.0.1", "--ip"),
            ("::1", "--ip"),
            ("1.2.3.400", "all digits"),
            ("a..b", "empty label"),
            ("a_b.example", "only letters"),
            ("-a.example", "starts nor ends"),
            ("a-.example", "starts nor ends"),
            ("pay ments", "only letters"),
        ] {
            let err = dns_name(input).expect_err(input).to_string();
            assert!(err.contains(rule), "{input}: {err}");
        }
        assert!(dns_name(&"a".repeat(64)).is_err());
        assert!(dns_name(&["a"; 128].join(".")).is_err());
    }
}

//! Checks of self-contained parts of services and routes: endpoints, request matchers,
//! header edits, retry policies and latency buckets.

use super::{positive, ppm, strings, within, Check};
use crate::model::{
    Endpoints, HeaderEdit, HeaderMatch, HeaderValueMatch, PathMatch, RequestMatch, RetryOn,
    RetryPolicy, StatusMatch,
};

/// A service's endpoint source: static addresses or a DNS name, each with a non-zero port.
pub(super) fn endpoints(endpoints: &Endpoints) -> Check {
    match endpoints {
        Endpoints::Static(addrs) => {
            for (i, addr) in addrs.iter().enumerate() {
                within(format_args!("address #{i}"), strings::host_port(addr))?;
            }
            Ok(())
        }
        Endpoints::Dns { host, port } => {
            within("dns host", strings::host(host))?;
            if *port == 0 {
                return Err("dns port is 0".to_owned());
            }
            Ok(())
        }
        Endpoints::Registry => Ok(()),
    }
}

/// A route's or rule's request conditions: path, header names, values and regexes.
pub(super) fn request_match(matcher: &RequestMatch) -> Check {
    match &matcher.path {
        Some(PathMatch::Exact(path) | PathMatch::Prefix(path)) => {
            within("path", strings::absolute_path(path))?;
        }
        Some(PathMatch::Regex(re)) => within("path", strings::regex(re))?,
        None => {}
    }
    for (i, header) in matcher.headers.iter().enumerate() {
        within(format_args!("header #{i}"), header_match(header))?;
    }
    Ok(())
}

/// One header condition.
fn header_match(header: &HeaderMatch) -> Check {
    strings::header_name(&header.name)?;
    match &header.value {
        HeaderValueMatch::Exact(value) | HeaderValueMatch::Prefix(value) => {
            strings::header_value(value)
        }
        HeaderValueMatch::Regex(re) => strings::regex(re),
        HeaderValueMatch::Present => Ok(()),
    }
}

/// Request or response header edits: valid names, values without CR, LF or NUL.
pub(super) fn header_edits(edits: &[HeaderEdit]) -> Check {
    for (i, edit) in edits.iter().enumerate() {
        let check = match edit {
            HeaderEdit::Set(name, value) | HeaderEdit::Add(name, value) => {
                strings::header_name(name).and_then(|()| strings::header_value(value))
            }
            HeaderEdit::Remove(name) => strings::header_name(name),
        };
        within(format_args!("edit #{i}"), check)?;
    }
    Ok(())
}

/// A retry policy: at least one attempt, ordered backoff bounds, a budget of at most 100%.
pub(super) fn retry_policy(retry: &RetryPolicy) -> Check {
    positive("attempts", retry.attempts.into())?;
    if let Some(per_try) = retry.per_try_timeout_ms {
        positive("per-try timeout", per_try)?;
    }
    if retry.backoff_base_ms > retry.backoff_max_ms {
        return Err(format!(
            "backoff base {} ms is above backoff max {} ms",
            retry.backoff_base_ms, retry.backoff_max_ms
        ));
    }
    ppm("budget", retry.budget)?;
    for (i, on) in retry.on.iter().enumerate() {
        within(format_args!("condition #{i}"), retry_on(*on))?;
    }
    Ok(())
}

/// A retry condition: real status codes and classes, gRPC codes 0 to 16.
fn retry_on(on: RetryOn) -> Check {
    match on {
        RetryOn::Status(StatusMatch::Code(code)) if !(100..=599).contains(&code) => {
            Err(format!("status code {code} is not in 100..=599"))
        }
        RetryOn::Status(StatusMatch::Class(class)) if !(1..=5).contains(&class) => {
            Err(format!("status class {class} is not in 1..=5"))
        }
        RetryOn::Grpc(code) if code > 16 => Err(format!("gRPC status {code} is not in 0..=16")),
        _ => Ok(()),
    }
}

/// Latency histogram bounds: strictly ascending.
pub(super) fn ascending_buckets(buckets: &[u64]) -> Check {
    for (i, pair) in buckets.windows(2).enumerate() {
        if let [lo, hi] = pair {
            if lo >= hi {
                return Err(format!(
                    "latency buckets not strictly ascending: bucket #{} is {hi} ms after {lo} ms",
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

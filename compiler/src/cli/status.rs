//! `meshc status --control URL`: the connected proxies (service, address, applied version,
//! last ACK or NACK, connected since), then the traffic summary, as tables.

use serde_json::Value;

use super::api::{field, table, Api, ControlArg};
use super::apply::proxy_list;
use super::{write_stdout, Outcome};

/// `meshc status --control URL`
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    control: ControlArg,
}

/// Runs `meshc status`.
pub(crate) fn run(args: &Args) -> Outcome {
    status(args).unwrap_or_else(|outcome| outcome)
}

fn status(args: &Args) -> Result<Outcome, Outcome> {
    let api = Api::from_args(&args.control)?;
    let proxies = api.call(http::Method::GET, "/v1/proxies", None)?;
    let traffic = api.call(http::Method::GET, "/v1/traffic", None)?;
    let mut out = proxies_table(&proxy_list(&proxies.json));
    out.push('\n');
    out.push_str(&traffic_table(&traffic.json));
    write_stdout(&out)?;
    Ok(Outcome::Success)
}

fn short(checksum: &str) -> String {
    checksum.chars().take(12).collect()
}

fn proxies_table(proxies: &[Value]) -> String {
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            let applied = field(p, &["applied"]);
            let current = field(p, &["current"]);
            let nack = p.get("last_nack").filter(|n| !n.is_null());
            let last = match nack {
                Some(nack) if field(nack, &["checksum"]) == current && applied != current => {
                    format!("NACK {}: {}", short(&current), field(nack, &["reason"]))
                }
                _ if applied == current && applied != "-" => "ACK".to_string(),
                _ if p.get("connected").and_then(Value::as_bool) == Some(false) => {
                    "disconnected".to_string()
                }
                _ => "pending".to_string(),
            };
            let since = p
                .get("connected_since")
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_string(), utc);
            vec![
                field(p, &["service"]),
                field(p, &["inbound", "address"]),
                short(&applied),
                last,
                since,
            ]
        })
        .collect();
    let mut out = format!("PROXIES ({})\n", rows.len());
    out.push_str(&table(
        &["SERVICE", "ADDRESS", "APPLIED", "LAST", "CONNECTED SINCE"],
        &rows,
    ));
    out
}

/// Seconds since the epoch as `2026-11-25T22:00:00Z`.
fn utc(secs: u64) -> String {
    mesh_identity::format_utc(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

fn traffic_table(json: &Value) -> String {
    let routes = json
        .get("routes")
        .and_then(Value::as_array)
        .or_else(|| json.as_array())
        .cloned()
        .unwrap_or_default();
    let number = |v: &Value, key: &str| match v.get(key).and_then(Value::as_f64) {
        Some(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Some(n) => format!("{n:.1}"),
        None => "-".to_string(),
    };
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                field(r, &["service"]),
                field(r, &["route"]),
                number(r, "requests"),
                number(r, "errors"),
                number(r, "p50_ms"),
                number(r, "p99_ms"),
            ]
        })
        .collect();
    let window = json
        .get("window_s")
        .and_then(Value::as_u64)
        .map_or_else(String::new, |w| format!(", last {w}s"));
    let mut out = format!("TRAFFIC ({} routes{window})\n", rows.len());
    out.push_str(&table(
        &["SERVICE", "ROUTE", "REQUESTS", "ERRORS", "P50 MS", "P99 MS"],
        &rows,
    ));
    out
}

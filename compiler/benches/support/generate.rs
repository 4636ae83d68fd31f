//! Generates a large, valid policy for benchmarks: `services` services, each with
//! `routes_per_service` routes and as many authorization rules.

use std::fmt::Write as _;

/// A policy of `services` services with `per_service` routes and rules each.
pub(crate) fn policy(services: usize, per_service: usize) -> String {
    let mut out = String::with_capacity(services * per_service * 200);
    out.push_str("mesh \"bench\" { trust_domain \"bench.local\" }\n\n");
    for s in 0..services {
        let _ = writeln!(
            out,
            "service s{s:04} {{\n  port {}\n  protocol http2\n  endpoints [\"127.0.0.1:{}\"]\n  balance least_request\n}}\n",
            8000 + s % 1000,
            20000 + s
        );
        for r in 0..per_service {
            let method = ["GET", "POST", "PUT", "DELETE"][r % 4];
            let _ = writeln!(
                out,
                "route s{s:04}-r{r} on s{s:04} {{\n  match {{\n    path prefix \"/api/v{r}\"\n    method [{method}]\n    header \"x-tenant\" exact \"t{r}\"\n  }}\n  to s{s:04}\n  timeout 2s\n  retry {{\n    attempts 2\n    per_try_timeout 500ms\n    on [connect_failure]\n  }}\n}}\n"
            );
        }
        out.push_str(&format!("authorize s{s:04} {{\n"));
        for r in 0..per_service {
            let caller = (s + r + 1) % services;
            if r % 5 == 0 {
                let _ = writeln!(out, "  deny from any to path prefix \"/internal/{r}\"");
            } else {
                let _ = writeln!(
                    out,
                    "  allow from s{caller:04} to method [GET, POST] path prefix \"/api/v{r}\" when header \"x-tenant\" present"
                );
            }
        }
        out.push_str("  default deny\n}\n\n");
    }
    out
}

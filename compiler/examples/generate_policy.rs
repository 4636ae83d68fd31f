//! Writes the benchmark's generated policy to stdout: `generate_policy [SERVICES] [PER_SERVICE]`.

#[path = "../benches/support/generate.rs"]
mod generate;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let services = args.next().and_then(Result::ok).unwrap_or(1_000);
    let per_service = args.next().and_then(Result::ok).unwrap_or(10);
    print!("{}", generate::policy(services, per_service));
}

//! Compile-time benchmark: a generated policy of 1,000 services, 10,000 routes and 10,000
//! authorization rules, parsed, checked and encoded.

use criterion::{criterion_group, criterion_main, Criterion};
use meshc::{check, CheckOptions, SourceFile};

#[path = "support/generate.rs"]
mod generate;

fn compile_large_policy(c: &mut Criterion) {
    let text = generate::policy(1_000, 10);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    group.bench_function("1000 services, 10000 routes, 10000 rules", |b| {
        b.iter(|| {
            let file = SourceFile::new("bench.mesh", text.clone());
            let checked = check(&[file], &CheckOptions::default());
            let table = checked.table.expect("the generated policy is valid");
            mesh_table::encode(&table)
        });
    });
    group.finish();
}

criterion_group!(benches, compile_large_policy);
criterion_main!(benches);

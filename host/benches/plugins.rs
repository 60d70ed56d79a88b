//! Per-record cost of plugin calls inside the runtime: a warm instance from the
//! pool, the component call, and copying the record in and the outputs out.
//! No bus. Run with `just bench`, which records the numbers in `bench/RESULTS.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plexus_host::config::{Kind, Limits};
use plexus_host::engine::Runtime;
use plexus_host::plugin::local::LocalPlugin;

mod fixtures;

fn plugin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../plugins/target/wasm32-wasip2/release/{name}.wasm"
    ));
    assert!(
        path.is_file(),
        "{} is missing: run `just build-plugins`",
        path.display()
    );
    path
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new().unwrap();
    let limits = Limits {
        memory: 64 << 20,
        timeout: Duration::from_secs(5),
        concurrency: 1,
        outputs: 10_000,
        output_bytes: 64 << 20,
    };
    let load = |name: &str, config: &[(&str, &str)]| {
        let config: BTreeMap<String, String> = config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LocalPlugin::load(
            &runtime,
            &plugin(name),
            Kind::Transform,
            config,
            limits.clone(),
        )
        .unwrap()
    };

    let mut group = c.benchmark_group("plugin_call");
    let x12 = load("x12", &[]);
    let po = fixtures::purchase_order_850("PO-900001", 50);
    assert_eq!(rt.block_on(x12.call("po", po.as_bytes())).unwrap().len(), 1);
    group.throughput(Throughput::Elements(1));
    group.bench_function("x12_850_50_lines", |b| {
        b.iter(|| rt.block_on(x12.call("po", po.as_bytes())).unwrap())
    });

    let filter = load(
        "json_filter",
        &[
            ("keep", "status == approved"),
            ("route.large", "total.amount >= 10000"),
        ],
    );
    let record = fixtures::json_order(25_000, 1024);
    assert_eq!(
        rt.block_on(filter.call("po", record.as_bytes()))
            .unwrap()
            .len(),
        1
    );
    group.bench_function("json_filter_1kb", |b| {
        b.iter(|| rt.block_on(filter.call("po", record.as_bytes())).unwrap())
    });

    let echo = load("testkit", &[]);
    let payload = vec![b'x'; 1024];
    group.bench_function("echo_1kb", |b| {
        b.iter(|| rt.block_on(echo.call("k", &payload)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

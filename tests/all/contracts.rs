//! Output contracts: a connector that declares `emits` publishes only records
//! that satisfy their schema; a violating record sends its input to the DLQ
//! with the first violation named, and nothing of it goes onward.

use crate::support::*;

const WORKER: &str = r#"{"worker_id":"W-1","name":"Ada Byron","status":"active","job_code":"RN2","home_cost_center":"CC-4410","provenance":{"source_system":"workday","source_record_id":"W-1","received_at":"2026-05-22T08:00:00Z"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_violate_their_schema_go_to_the_dlq() {
    let bus = TestBus::start().await;
    bus.stream("HR", "raw.hr").await;
    let records = [
        WORKER.to_owned(),
        WORKER.replace("\"active\"", "\"on-a-boat\""),
        WORKER.replace("\"W-1\",\"name\"", "\"W-1\",\"hours\":7.5,\"name\""),
        "not json".to_owned(),
    ];
    bus.publish_range("raw.hr", 0..records.len(), |i| records[i].clone())
        .await;
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &testkit(
            "workers",
            "raw.hr",
            "canon.worker",
            "emits = [\"worker/1\"]",
        ),
    );
    let host = start_host(&file).await;
    bus.wait_drained("raw.hr", "workers").await;

    let out = bus.messages("canon.worker").await;
    assert_eq!(out.len(), 1);
    assert_eq!(
        header(&out[0], "Plexus-Schema").as_deref(),
        Some("worker/1"),
        "the declared schema is stamped on"
    );
    let mut errors: Vec<(String, String)> = bus
        .messages("dlq.workers")
        .await
        .iter()
        .map(|m| {
            (
                header(m, "Plexus-Key").unwrap(),
                header(m, "Plexus-Error").unwrap(),
            )
        })
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 3);
    assert!(
        errors[0]
            .1
            .starts_with("output 0 violates worker/1 at /status: "),
        "{errors:?}"
    );
    assert!(
        errors[1].1.starts_with(
            "output 0 violates worker/1 at /: Additional properties are not allowed ('hours'"
        ),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .1
            .starts_with("output 0 worker/1: the payload is not JSON"),
        "{errors:?}"
    );
    host.shutdown().await;
}

#[test]
fn an_unknown_schema_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        None,
        &testkit(
            "workers",
            "raw.hr",
            "canon.worker",
            "emits = [\"worker/9\"]",
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains(
            "connector \"workers\": emits \"worker/9\": no such schema (known: accrual/1, goods-receipt/1,"
        ),
        "{stderr}"
    );
}

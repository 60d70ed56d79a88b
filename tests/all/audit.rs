//! The audit log records refusals, ingests, replays and reloads as a hash
//! chain; `plexus audit verify` passes on the log as written and names the
//! record that was removed or altered when someone edits the stream.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_did_what_and_shows_any_edit() {
    let bus = TestBus::start().await;
    let ingest = connector(
        "lab",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.lab\"",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &ingest);
    let out = plexus_with_config(
        &[
            "token",
            "create",
            "--role",
            "ingest:lab",
            "--name",
            "lab-feed",
        ],
        &file,
    )
    .await;
    let token = cli_stdout(&out).trim().to_owned();
    let mut host = start_host(&file).await;
    let addr = host.http_addr();

    let (status, _) = http_post(addr, "/ingest/lab", HL7).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {token}");
    let (status, _) = http_request(
        addr,
        "POST",
        "/ingest/lab",
        &[("Authorization", &bearer)],
        HL7,
    )
    .await;
    assert_eq!(status, 202);
    host.reload(plexus_host::config::Config::load(&file).unwrap())
        .await
        .unwrap();
    host.shutdown().await;

    let listed = cli_stdout(&plexus_with_config(&["audit", "ls"], &file).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[0].contains("auth_failure") && lines[0].contains("POST /ingest/lab"),
        "{listed}"
    );
    assert!(
        lines[1].contains("ingest") && lines[1].contains("lab-feed"),
        "{listed}"
    );
    assert!(
        lines[2].contains("reload") && lines[2].contains("applied"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token),
        "tokens are never written to the log"
    );
    let verified = cli_stdout(&plexus_with_config(&["audit", "verify"], &file).await);
    assert_eq!(verified, "plexus-audit: ok, 3 record(s) in 1 chain(s)\n");

    // Someone rewrites record 2 and puts the rest back after it.
    let stream = bus.js.get_stream("plexus-audit").await.unwrap();
    let mut raw = Vec::new();
    for seq in 1..=3 {
        raw.push(stream.get_raw_message(seq).await.unwrap());
    }
    for seq in 2..=3 {
        stream.delete_message(seq).await.unwrap();
    }
    let forged = String::from_utf8(raw[1].payload.to_vec())
        .unwrap()
        .replace("lab-feed", "someone-else");
    for payload in [forged.into_bytes(), raw[2].payload.to_vec()] {
        bus.js
            .publish(raw[1].subject.to_string(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let out = plexus_with_config(&["audit", "verify"], &file).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "record 3 (stream sequence 5) does not follow record 2: record 2 was altered"
        ),
        "{stderr}"
    );

    // And removes one outright.
    stream.delete_message(4).await.unwrap();
    let out = plexus_with_config(&["audit", "verify"], &file).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("record 3 (stream sequence 5) follows record 1: record 2 was removed"),
        "{stderr}"
    );
}

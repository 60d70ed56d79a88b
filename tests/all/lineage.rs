//! Lineage: `plexus trace` prints every hop of a record from the headers
//! already on the bus — an X12 file dropped in a directory, mapped to
//! canonical records, matched into exceptions; and a record dead-lettered,
//! then replayed.

use crate::support::*;

/// The lines of `plexus trace <id>` that describe hops.
async fn trace(file: &std::path::Path, id: &str) -> Vec<String> {
    let out = plexus_with_config(&["trace", id], file).await;
    cli_stdout(&out)
        .lines()
        .skip(1)
        .map(|l| l.trim().to_owned())
        .collect()
}

fn position(lines: &[String], what: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no hop with {what:?} in\n{}", lines.join("\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_x12_file_is_traced_to_the_exceptions_it_raised() {
    let bus = TestBus::start().await;
    let inbox = bus.dir.path().join("edi");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(
        repo_root().join("demo/edi/orders-004010.x12"),
        inbox.join("orders.x12"),
    )
    .unwrap();
    let connectors = format!(
        "{}{}{}",
        connector(
            "edi-inbox",
            "source",
            "file-drop",
            &format!(
                "schedule = \"1s\"\nto = \"raw.x12\"\nconfig = {{ dir = \"{}\", suffix = \".x12\", settle = \"0\" }}\n[connector.grants]\nfiles = [\"{}:ro\"]",
                inbox.display(),
                inbox.display()
            ),
        ),
        connector(
            "edi-canonical",
            "transform",
            "x12",
            "from = \"raw.x12\"\nto = \"canon\""
        ),
        connector(
            "matcher",
            "transform",
            "three-way-match",
            "from = \"canon.>\"\nto = \"exceptions\"",
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    bus.wait_for_count("raw.x12", 1).await;
    bus.wait_drained("raw.x12", "edi-canonical").await;
    bus.wait_drained("canon.>", "matcher").await;
    let raised = bus.messages("exceptions.>").await;
    let exception = raised
        .iter()
        .find(|m| header(m, "Plexus-Schema").as_deref() == Some("match-exception/2"))
        .expect("the file raises an exception");
    let code = exception.subject.as_str().to_owned();
    let id = header(exception, "Nats-Msg-Id").unwrap();

    let hops = trace(&file, &id).await;
    let received = position(&hops, "raw.x12");
    let order = position(&hops, "canon.purchase_order");
    let raised_at = position(&hops, &code);
    assert!(
        received < order && order < raised_at,
        "in order:\n{}",
        hops.join("\n")
    );
    assert!(
        hops[received].contains("received") && hops[received].contains("edi-inbox@"),
        "{}",
        hops[received]
    );
    assert!(
        hops[order].contains("published") && hops[order].contains("edi-canonical@"),
        "{}",
        hops[order]
    );
    assert!(
        hops[raised_at].contains("published") && hops[raised_at].contains("matcher@"),
        "{}",
        hops[raised_at]
    );
    assert!(hops[raised_at].contains(&id));
    // The exception's own key finds the same lineage.
    let key = header(exception, "Plexus-Key").unwrap();
    assert_eq!(trace(&file, &key).await, hops);

    let out = plexus_with_config(&["trace", "no-such-record"], &file).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record on the bus has"));
    // An empty or tiny id would name half the bus.
    for id in ["", "ab"] {
        let out = plexus_with_config(&["trace", id], &file).await;
        assert_eq!(out.status.code(), Some(2), "{id:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("must be 3 to 512 characters"));
    }
    let (status, _) = http_request(host.http_addr(), "GET", "/trace?id=", &[], "").await;
    assert_eq!(status, 400);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_and_replayed_record_shows_both() {
    let bus = TestBus::start().await;
    let connectors = format!(
        "{}{}",
        connector(
            "lab",
            "source",
            "mllp",
            "listen = \"http\"\nto = \"raw.lab\""
        ),
        testkit(
            "picky",
            "raw.lab",
            "out.lab",
            "config = { mode = \"fail\" }\n[connector.delivery]\nmax_deliver = 1\nbackoff = []"
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &connectors);
    let host = start_host(&file).await;
    let (status, _) = http_post(host.http_addr(), "/ingest/lab", HL7).await;
    assert_eq!(status, 202);
    bus.wait_for_count("dlq.picky", 1).await;
    let raw = &bus.messages("raw.lab").await[0];
    let id = header(raw, "Nats-Msg-Id").unwrap();
    let out = plexus_with_config(&["dlq", "replay", "picky"], &file).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bus.wait_for_count("dlq.picky", 1).await;
    wait_until("dead-lettered again after the replay", || {
        futures::executor::block_on(async { bus.messages("dlq.picky").await.len() }) >= 1
    })
    .await;

    let hops = trace(&file, &id).await;
    let received = position(&hops, "received");
    let replayed = position(&hops, "replayed");
    let dead = position(&hops, "dead-lettered");
    assert!(
        received < replayed && replayed < dead,
        "in order:\n{}",
        hops.join("\n")
    );
    assert!(
        hops[dead].contains("picky") && hops[dead].contains("testkit refuses record"),
        "{}",
        hops[dead]
    );
    assert!(
        hops[replayed].contains("sent back to picky"),
        "{}",
        hops[replayed]
    );
    host.shutdown().await;
}

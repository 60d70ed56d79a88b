//! `plexus ls` and `plexus status`: an operator sees what a running host runs
//! — plugin version, records in and out, errors by kind, dead letters and
//! lag, including records waiting for a retry — without knowing its admin
//! port (the host records it under its `data_dir`). A connector the host does
//! not run, or a host that is not running, is a clear error. The dashboard
//! at `GET /` shows the same, with what needs a look marked.

use crate::support::*;

/// The cells of `plexus ls`'s line for `name`.
fn row(listing: &str, name: &str) -> Vec<String> {
    listing
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{listing}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_and_status_show_counts_errors_dead_letters_and_lag() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.status").await;
    bus.stream("STUCK", "in.stuck").await;
    bus.publish_range("in.status", 1..21, |i| format!("record {i}"))
        .await;
    bus.publish_range("in.stuck", 0..5, |i| format!("r{i}"))
        .await;
    let picky = testkit(
        "picky",
        "in.status",
        "out.status",
        "config = { mode = \"fail-every-nth\", n = \"10\" }",
    );
    let stuck = testkit(
        "stuck",
        "in.stuck",
        "out.stuck",
        "config = { mode = \"fail\", retryable = \"true\" }\n[connector.delivery]\nmax_deliver = 3\nbackoff = [\"90s\"]",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &(picky + &stuck));
    let host = start_host(&file).await;
    bus.wait_drained("in.status", "picky").await;
    let addr = host.http_addr();
    wait_until("every stuck record has failed once", || {
        metric(
            &scrape(addr),
            "plexus_errors_total{connector=\"stuck\",kind=\"retryable\"}",
        ) >= 5.0
    })
    .await;

    let listing = cli_stdout(&plexus_with_config(&["ls"], &file).await);
    assert_eq!(
        row(&listing, "CONNECTOR"),
        [
            "CONNECTOR",
            "KIND",
            "VERSION",
            "IN",
            "OUT",
            "ERRORS",
            "DLQ",
            "LAG"
        ]
    );
    let picky = row(&listing, "picky");
    assert_eq!(picky[1], "transform");
    assert!(
        picky[2].len() == 12 && picky[2].bytes().all(|b| b.is_ascii_hexdigit()),
        "{listing}"
    );
    assert_eq!(picky[3..], ["20", "18", "2", "2", "0"], "{listing}");
    let stuck = row(&listing, "stuck");
    assert_eq!(
        stuck[3..],
        ["5", "0", "5", "0", "5"],
        "records waiting for their retry are lag: {listing}"
    );

    let status = cli_stdout(&plexus_with_config(&["status", "picky"], &file).await);
    for line in [
        "picky (transform)\n",
        "  route         in.status -> out.status\n",
        "  records       20 in, 18 out; now 0/s in, 0/s out\n",
        "  errors        2 (permanent 2)\n",
        "  dead letters  2 on dlq.picky (plexus dlq ls picky)\n",
        "  lag           0 record(s) waiting or in flight\n",
    ] {
        assert!(status.contains(line), "{line:?} not in:\n{status}");
    }
    let every = cli_stdout(&plexus_with_config(&["status"], &file).await);
    assert!(every.starts_with("picky (transform)\n"), "{every}");
    assert!(every.contains("\n\nstuck (transform)\n"), "{every}");
    assert!(
        every.contains("  errors        5 (retryable 5)\n"),
        "{every}"
    );

    let page = admin_get(addr, "/");
    assert!(page.contains("<meta http-equiv=refresh"), "{page}");
    assert!(page.contains("<td>picky</td><td>transform</td>"), "{page}");
    assert!(
        page.contains("<td class=\"n look\" title=\"retryable 5\">5</td>"),
        "the stuck connector's errors are marked: {page}"
    );

    let unknown = plexus_with_config(&["status", "nobody"], &file).await;
    assert_eq!(unknown.status.code(), Some(2));
    let error = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        error.contains("runs no connector named \"nobody\""),
        "{error}"
    );

    host.shutdown().await;
    let gone = plexus_with_config(&["ls"], &file).await;
    assert_eq!(gone.status.code(), Some(1));
    let error = String::from_utf8_lossy(&gone.stderr);
    assert!(error.contains("no host answers at"), "{error}");
}

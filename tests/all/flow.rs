//! Flow control: one huge batch neither stalls the other connectors nor
//! grows the host's memory, and a stop at any moment of it loses and
//! duplicates nothing.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use crate::support::*;

/// Lines in the file dropped in one piece.
const LINES: usize = 1_000_000;

/// The most resident memory a host may take while the file flows: README,
/// "Securing a host" (limits). Nearly all of it is the wasm engine and the
/// compiled plugins; the file itself passes through a page at a time.
pub const MAX_RSS_MIB: u64 = 200;

/// The longest a stop may take.
const STOP_WITHIN: Duration = Duration::from_secs(20);

/// How long an ingest or an MLLP message may take while the file flows.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_line_file_flows_in_bounded_memory_while_other_connectors_answer() {
    let bus = TestBus::start().await;
    let dir = bus.dir.path();
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let text: String = (0..LINES).map(|n| format!("{n}\n")).collect();
    std::fs::write(outbox.join("big.csv.part"), text).unwrap();
    std::fs::rename(outbox.join("big.csv.part"), outbox.join("big.csv")).unwrap();

    let mllp = free_port();
    let http = free_port();
    let connectors = [
        connector(
            "bulk-drop",
            "source",
            "file-drop",
            &format!(
                "schedule = \"1s\"\nto = \"raw.lines\"\nconfig = {{ dir = \"{}\", mode = \"lines\", settle = \"0\" }}\ngrants = {{ files = [\"{}:ro\"] }}",
                outbox.display(),
                outbox.display()
            ),
        ),
        connector("lab-http", "source", "mllp", "listen = \"http\"\nto = \"raw.http\""),
        connector(
            "lab-mllp",
            "source",
            "mllp",
            &format!("listen = \"mllp://127.0.0.1:{mllp}\"\nto = \"raw.mllp\""),
        ),
    ]
    .concat();
    let file = write_config(dir, Some(bus.url()), &connectors);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{http}\""),
    );
    std::fs::write(&file, text).unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();

    let up = ["up", "-c", file.to_str().unwrap()];
    let mut host = HostProcess::spawn(&up, dir);
    host.wait_line("plexus: up");
    let mut stopped_once = false;
    let mut peak_mib = 0;
    let mut probes = 0;
    loop {
        let stored = bus.count("raw.lines").await;
        if stored >= LINES as u64 {
            break;
        }
        // The other connectors answer while the file flows.
        probes += 1;
        let body = HL7.replace("REQ-1", &format!("HTTP-{probes}"));
        let started = Instant::now();
        let (status, answer) = tokio::time::timeout(
            ANSWER_WITHIN,
            http_post(admin, "/ingest/lab-http", &body),
        )
        .await
        .unwrap_or_else(|_| {
            panic!("HTTP ingest did not answer within {ANSWER_WITHIN:?} with {stored} lines stored")
        });
        assert_eq!(status, 202, "{answer}");
        let mut sender = tokio::net::TcpStream::connect(("127.0.0.1", mllp))
            .await
            .unwrap();
        let message = HL7.replace("REQ-1", &format!("MLLP-{probes}"));
        sender.write_all(&framed(&message)).await.unwrap();
        let ack = tokio::time::timeout(ANSWER_WITHIN, read_ack(&mut sender))
            .await
            .unwrap_or_else(|_| {
                panic!("no MLLP ACK within {ANSWER_WITHIN:?} with {stored} lines stored")
            });
        assert_eq!(ack, format!("MSA|AA|MLLP-{probes}|"));
        assert!(started.elapsed() < 2 * ANSWER_WITHIN);

        peak_mib = peak_mib.max(peak_resident_mib(host.child.id()));
        if !stopped_once && stored >= LINES as u64 / 3 {
            // A stop in the middle of the flow: quick, and it loses nothing.
            stopped_once = true;
            let asked = Instant::now();
            host.signal("TERM");
            let status = wait_exit(&mut host.child, STOP_WITHIN).unwrap_or_else(|| {
                panic!(
                    "the host did not stop within {STOP_WITHIN:?}; its log:\n{}",
                    std::fs::read_to_string(&host.stderr_file).unwrap_or_default()
                )
            });
            assert!(status.success(), "stopped cleanly: {status}");
            eprintln!(
                "stopped in {:?} with {stored} lines stored",
                asked.elapsed()
            );
            assert!(
                bus.count("raw.lines").await < LINES as u64,
                "the stop came mid-flow"
            );
            host = HostProcess::spawn(&up, dir);
            host.wait_line("plexus: up");
        }
        // Paces the probes; the loop ends on the count, not on time.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stopped_once);
    assert!(probes > 1, "probes ran while the file flowed");
    assert!(
        peak_mib <= MAX_RSS_MIB,
        "the host peaked at {peak_mib} MiB resident, over {MAX_RSS_MIB} MiB"
    );
    eprintln!("peak resident {peak_mib} MiB over {probes} probes");

    // Every line once: nothing lost across the stop, nothing stored twice.
    let mut seen = vec![0u8; LINES];
    let total = bus
        .for_each_payload("raw.lines", |payload| {
            let n: usize = std::str::from_utf8(payload).unwrap().parse().unwrap();
            seen[n] += 1;
        })
        .await;
    assert_eq!(total, LINES as u64);
    let wrong: Vec<usize> = (0..LINES).filter(|n| seen[*n] != 1).take(5).collect();
    assert!(wrong.is_empty(), "lines not stored exactly once: {wrong:?}");
}

/// The peak resident set of process `pid` so far, in MiB.
pub fn peak_resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Wait up to `limit` for `child` to exit.
pub fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // std offers no wait with a deadline on a child.
        std::thread::sleep(Duration::from_millis(20));
    }
}

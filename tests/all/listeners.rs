//! MLLP listeners as they face a network: a message is known by its sender
//! and content, not its control id alone, so two labs numbering alike both
//! get through; TLS with client certificates and an address allow-list keep
//! strangers out; idle and half-sent connections cannot exhaust the host,
//! and a normal sender still gets its AA.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::flow::peak_resident_mib;
use crate::support::*;

fn mllp(name: &str, port: u16, extra: &str) -> String {
    connector(
        name,
        "source",
        "mllp",
        &format!("listen = \"mllp://127.0.0.1:{port}\"\nto = \"raw.hl7\"\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_reusing_a_control_id_are_both_kept() {
    let bus = TestBus::start().await;
    let port = free_port();
    let file = write_config(bus.dir.path(), Some(bus.url()), &mllp("labs", port, ""));
    let host = start_host(&file).await;
    let send = |message: String| async move {
        let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        client.write_all(&framed(&message)).await.unwrap();
        read_ack(&mut client).await
    };

    let lab_a = HL7.replace("REQ-1", "1001");
    let lab_b = HL7
        .replace("MMS|STMARYS", "LIS|MERCY")
        .replace("REQ-1", "1001")
        .replace("4471^Gauze", "9001^Saline");
    assert_eq!(send(lab_a.clone()).await, "MSA|AA|1001|");
    assert_eq!(send(lab_b.clone()).await, "MSA|AA|1001|");
    assert_eq!(
        bus.count("raw.hl7").await,
        2,
        "both labs' orders are stored"
    );
    // An identical retransmission (no AA seen by the sender, say) is stored once.
    assert_eq!(send(lab_a.clone()).await, "MSA|AA|1001|");
    assert_eq!(
        bus.count("raw.hl7").await,
        2,
        "the retransmission is a duplicate"
    );

    let stored = bus.messages("raw.hl7").await;
    let ids: Vec<String> = stored
        .iter()
        .map(|m| header(m, "Nats-Msg-Id").unwrap())
        .collect();
    assert_ne!(ids[0], ids[1]);
    let sources: Vec<String> = stored
        .iter()
        .map(|m| header(m, "Plexus-Source").unwrap())
        .collect();
    assert!(
        sources[0].starts_with("labs:MMS^STMARYS|1001#"),
        "{sources:?}"
    );
    assert!(
        sources[1].starts_with("labs:LIS^MERCY|1001#"),
        "{sources:?}"
    );
    assert_eq!(
        metric(
            &scrape(host.http_addr()),
            "plexus_key_collisions_total{connector=\"labs\"}"
        ),
        1.0,
        "the reused control id is counted once"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_over_tls_takes_only_clients_with_a_certificate_from_its_ca() {
    let bus = TestBus::start().await;
    let pki = TestPki::generate(&bus.dir.path().join("pki"));
    let port = free_port();
    let source = connector(
        "secure-lab",
        "source",
        "mllp",
        &format!(
            "listen = \"mllp+tls://127.0.0.1:{port}\"\nto = \"raw.hl7\"\n[connector.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let host = start_host(&file).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = pki
        .client(Some((&pki.client_cert, &pki.client_key)))
        .connect(name.clone(), tcp)
        .await
        .expect("a client with a certificate from the CA gets in");
    tls.write_all(&framed(HL7)).await.unwrap();
    assert_eq!(read_ack(&mut tls).await, "MSA|AA|REQ-1|");
    assert_eq!(bus.count("raw.hl7").await, 1);

    for identity in [None, Some((&pki.stranger_cert, &pki.stranger_key))] {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let identity = identity.map(|(c, k)| (c.as_path(), k.as_path()));
        // TLS 1.3 finishes the client's side before the server checks its
        // certificate: the refusal shows on the first read.
        if let Ok(mut tls) = pki.client(identity).connect(name.clone(), tcp).await {
            let _ = tls.write_all(&framed(&HL7.replace("REQ-1", "REQ-X"))).await;
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(PATIENCE, tls.read(&mut buf))
                .await
                .unwrap();
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "no ACK for a client without a good certificate"
            );
        }
    }
    // Plain TCP to a TLS listener gets nothing either.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(&framed(&HL7.replace("REQ-1", "REQ-P")))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&buf).contains("MSA|AA"));
    assert_eq!(
        bus.count("raw.hl7").await,
        1,
        "only the trusted client's message"
    );
    assert!(
        metric(
            &scrape(host.http_addr()),
            "plexus_auth_failures_total{endpoint=\"mllp\"}"
        ) >= 3.0
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_outside_the_allow_list_are_refused() {
    let bus = TestBus::start().await;
    let port = free_port();
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &mllp(
            "lab",
            port,
            "[connector.listener]\nallow = [\"10.20.0.0/16\"]",
        ),
    );
    let host = start_host(&file).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _ = client.write_all(&framed(HL7)).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(buf.is_empty(), "closed without an answer");
    assert_eq!(bus.count("raw.hl7").await, 0);
    assert_eq!(
        metric(
            &scrape(host.http_addr()),
            "plexus_auth_failures_total{endpoint=\"mllp\"}"
        ),
        1.0
    );
    host.shutdown().await;
}

/// The most a host may grow by while holding a thousand idle connections
/// and a hundred half-sent messages: bounded by `max_connections` × the frame limit.
const MAX_GROWTH_MIB: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_cannot_exhaust_the_listener() {
    let bus = TestBus::start().await;
    let port = free_port();
    let file = write_config(
        bus.dir.path(),
        Some(bus.url()),
        &mllp(
            "lab",
            port,
            "[connector.listener]\nframe_timeout = \"5m\"\nidle_timeout = \"5m\"",
        ),
    );
    let mut host = HostProcess::spawn(&["up", "-c", file.to_str().unwrap()], bus.dir.path());
    host.wait_line("plexus: up");
    let before = peak_resident_mib(host.child.id());

    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    // A hundred senders each stop 100 bytes short of a 1 MB message.
    let mut half = HL7.replace("REQ-1", "REQ-HALF").into_bytes();
    half.resize(1_000_000, b'x');
    let mut start = vec![0x0b];
    start.extend_from_slice(&half);
    for _ in 0..100 {
        let mut sender = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        // The host may already have closed this one to make room: that is the point.
        let _ = sender.write_all(&start[..start.len() - 100]).await;
        held.push(sender);
    }

    // A normal sender gets through. Like any MLLP sender it reconnects and
    // resends when its connection is closed before the ACK: while the host
    // is still shedding the flood, a new connection may be one of those shed.
    let mut attempts = 0;
    let ack = loop {
        attempts += 1;
        assert!(attempts <= 20, "no ACK after 20 connections");
        let Ok(mut client) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if client.write_all(&framed(HL7)).await.is_err() {
            continue;
        }
        if let Some(ack) = try_read_ack(&mut client).await {
            break ack;
        }
    };
    assert_eq!(ack, "MSA|AA|REQ-1|", "a normal sender still gets through");
    assert_eq!(bus.count("raw.hl7").await, 1);

    let grown = peak_resident_mib(host.child.id()).saturating_sub(before);
    assert!(grown <= MAX_GROWTH_MIB, "the host grew by {grown} MiB");
    let log = std::fs::metadata(&host.stderr_file).unwrap().len();
    assert!(log < 64 << 10, "the log stayed short: {log} bytes");
    drop(held);
    host.signal("TERM");
    assert!(crate::flow::wait_exit(&mut host.child, Duration::from_secs(20)).is_some());
}

//! DNS rebinding cannot walk past the HTTP grant check: a granted name whose
//! DNS answers a public address to the check and 127.0.0.1 after it still
//! reaches only the public address; asked again, the name resolves to
//! loopback and the request is refused and counted. An internal service on
//! loopback never sees a request.
//!
//! The test runs itself again inside network and mount namespaces of its
//! own: there the "public" address lives on the namespace's loopback
//! device, and the system resolver is pointed at a DNS server the test
//! runs, so no packet leaves this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;

/// The "public" address, on the namespace's own loopback device.
const PUBLIC: [u8; 4] = [11, 22, 33, 44];
const NAME: &str = "erp.rebind.test";
const INSIDE: &str = "PLEXUS_TEST_IN_NAMESPACE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_rebinds_to_loopback_after_the_check_is_refused() {
    if std::env::var_os(INSIDE).is_none() {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n",
        )
        .unwrap();
        let script = format!(
            "mount --bind {} /etc/resolv.conf && ip link set lo up && ip addr add {}/32 dev lo && exec \"$0\" --exact rebinding::a_name_that_rebinds_to_loopback_after_the_check_is_refused --nocapture",
            resolv.display(),
            std::net::Ipv4Addr::from(PUBLIC)
        );
        let out = std::process::Command::new("unshare")
            // A user namespace too, so this needs no root where unprivileged
            // user namespaces are allowed.
            .args([
                "--user",
                "--map-root-user",
                "--net",
                "--mount",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .arg(std::env::current_exe().unwrap())
            .env(INSIDE, "1")
            .output()
            .expect("unshare runs (util-linux; `ip` comes from iproute2)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "inside the namespaces:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }

    // Inside: a DNS server that rebinds after its first answer.
    let asked = Arc::new(AtomicUsize::new(0));
    let dns = tokio::net::UdpSocket::bind("127.0.0.1:53")
        .await
        .expect("port 53 in our namespace");
    tokio::spawn(serve_dns(dns, asked.clone()));

    // The real ERP on the public address, an internal service on loopback, same port.
    let (public_hits, port) = counting_server("11.22.33.44:0".parse().unwrap(), None).await;
    let (internal_hits, _) = counting_server("127.0.0.1:0".parse().unwrap(), Some(port)).await;

    let bus = TestBus::start().await;
    bus.stream("ORDERS", "erp.orders").await;
    bus.publish_range("erp.orders", 0..2, |i| format!("{{\"order\":{i}}}"))
        .await;
    let sink = connector(
        "erp",
        "sink",
        "http-post",
        &format!(
            "from = \"erp.orders\"\nconfig = {{ url = \"http://{NAME}:{port}/orders\" }}\n[connector.grants]\nhttp = [\"http://{NAME}:{port}\"]\n[connector.limits]\nconcurrency = 1\n[connector.delivery]\nmax_deliver = 1\nbackoff = []\nordered = true"
        ),
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &sink);
    let host = start_host(&file).await;
    bus.wait_drained("erp.orders", "erp").await;

    assert_eq!(
        public_hits.load(Ordering::SeqCst),
        1,
        "the first record went where the check approved"
    );
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "nothing reached the internal service"
    );
    assert_eq!(
        metric(
            &scrape(host.http_addr()),
            "plexus_capability_denied_total{connector=\"erp\",capability=\"http\"}"
        ),
        1.0,
        "the second, resolving to loopback, was refused and counted"
    );
    assert_eq!(bus.count("dlq.erp").await, 1);
    host.shutdown().await;
}

/// Answer A queries for [`NAME`]: the public address the first time,
/// 127.0.0.1 after; nothing for other types.
async fn serve_dns(socket: tokio::net::UdpSocket, asked: Arc<AtomicUsize>) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let query = &buf[..n];
        if n < 12 {
            continue;
        }
        // The question: labels, then type and class.
        let mut at = 12;
        let mut labels = Vec::new();
        while at < n && query[at] != 0 {
            let len = usize::from(query[at]);
            labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + len]).to_lowercase());
            at += 1 + len;
        }
        let question_end = at + 5;
        let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
        let mut reply = Vec::with_capacity(64);
        reply.extend_from_slice(&query[..2]);
        reply.extend_from_slice(&[0x81, 0x80, 0, 1]);
        let answer = qtype == 1 && labels.join(".") == NAME;
        reply.extend_from_slice(&[0, u8::from(answer), 0, 0, 0, 0]);
        reply.extend_from_slice(&query[12..question_end]);
        if answer {
            let ip = if asked.fetch_add(1, Ordering::SeqCst) == 0 {
                PUBLIC
            } else {
                [127, 0, 0, 1]
            };
            // Name by pointer, type A, class IN, TTL 0, four bytes.
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            reply.extend_from_slice(&ip);
        }
        let _ = socket.send_to(&reply, peer).await;
    }
}

/// An HTTP server on `addr` (on `port`, if given) counting the requests it gets.
async fn counting_server(addr: SocketAddr, port: Option<u16>) -> (Arc<AtomicUsize>, u16) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/orders",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let addr = SocketAddr::new(addr.ip(), port.unwrap_or(addr.port()));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hits, port)
}

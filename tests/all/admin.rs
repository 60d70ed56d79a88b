//! The admin endpoint lets in only who was let in: every route answers 401
//! without a token, 403 for a role that does not cover it and 2xx for one
//! that does; tokens are stored hashed; a host without tokens answers only
//! on loopback and never a browser acting for another site.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// One request; the status and the body of the answer.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    http_request(addr, method, path, headers, body).await
}

async fn token(file: &std::path::Path, role: &str, name: &str) -> String {
    let out = plexus_with_config(&["token", "create", "--role", role, "--name", name], file).await;
    let token = cli_stdout(&out).trim().to_owned();
    assert!(token.starts_with("plx_") && token.len() > 60, "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_wants_a_token_with_the_right_role() {
    let bus = TestBus::start().await;
    let ingest = connector(
        "lab",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.lab\"",
    );
    let other = connector(
        "other",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.other\"",
    );
    let relay = testkit(
        "relay",
        "raw.lab",
        "out.lab",
        "config = { mode = \"fail\" }",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &(ingest + &other + &relay));
    let reader = token(&file, "read", "grafana").await;
    let operator = token(&file, "operate", "oncall").await;
    let sender = token(&file, "ingest:lab", "lab-feed").await;
    let stranger = token(&file, "ingest:other", "other-feed").await;

    let stored = std::fs::read_to_string(bus.dir.path().join("data/tokens.toml")).unwrap();
    for t in [&reader, &operator, &sender, &stranger] {
        assert!(
            !stored.contains(t.as_str()),
            "tokens are stored hashed only"
        );
        assert!(!stored.contains(&t[4..20]), "not even in part");
    }

    let host = start_host(&file).await;
    let addr = host.http_addr();
    let bearer = |t: &str| format!("Bearer {t}");

    for path in ["/", "/metrics", "/connectors"] {
        let (status, _) = request(addr, "GET", path, &[], "").await;
        assert_eq!(status, 401, "GET {path} without a token");
        let (status, _) = request(
            addr,
            "GET",
            path,
            &[("Authorization", "Bearer plx_forged")],
            "",
        )
        .await;
        assert_eq!(status, 401, "GET {path} with an unknown token");
        let (status, _) = request(
            addr,
            "GET",
            path,
            &[("Authorization", &bearer(&sender))],
            "",
        )
        .await;
        assert_eq!(status, 403, "GET {path} with an ingest token");
        for t in [&reader, &operator] {
            let (status, _) =
                request(addr, "GET", path, &[("Authorization", &bearer(t))], "").await;
            assert_eq!(status, 200, "GET {path} with a read or operate token");
        }
    }

    let path = "/ingest/lab";
    let (status, _) = request(addr, "POST", path, &[], HL7).await;
    assert_eq!(status, 401);
    for wrong in [&reader, &operator, &stranger] {
        let (status, _) = request(
            addr,
            "POST",
            path,
            &[("Authorization", &bearer(wrong))],
            HL7,
        )
        .await;
        assert_eq!(status, 403, "ingest with a token for something else");
    }
    // A page on another site posting plain text, as a browser would: no token, no entry.
    let (status, _) = request(
        addr,
        "POST",
        path,
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        HL7,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        bus.count("raw.lab").await,
        0,
        "nothing refused was published"
    );
    let (status, body) = request(
        addr,
        "POST",
        path,
        &[("Authorization", &bearer(&sender))],
        HL7,
    )
    .await;
    assert_eq!((status, body.as_str()), (202, "{\"published\":1}\n"));
    assert_eq!(bus.count("raw.lab").await, 1);

    // State-changing calls want `operate`: replaying relay's dead letter.
    bus.wait_for_count("dlq.relay", 1).await;
    let path = "/connectors/relay/dead-letters/replay";
    let (status, _) = request(addr, "POST", path, &[], "").await;
    assert_eq!(status, 401);
    for wrong in [&reader, &sender] {
        let (status, _) =
            request(addr, "POST", path, &[("Authorization", &bearer(wrong))], "").await;
        assert_eq!(status, 403, "replay with a read or ingest token");
    }
    // Another site's page cannot make a browser (or a proxy adding the
    // token) replay: the change must come from this origin.
    for (name, value) in [
        ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (status, body) = request(
            addr,
            "POST",
            path,
            &[("Authorization", &bearer(&operator)), (name, value)],
            "",
        )
        .await;
        assert_eq!(status, 403, "{name}: {body}");
    }
    let (status, body) = request(
        addr,
        "POST",
        path,
        &[("Authorization", &bearer(&operator))],
        "",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "{\"replayed\":1}\n"));
    // Still failing, it is dead-lettered a second time.
    let dead_lettered = || {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {reader}\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        metric(&response, "plexus_dlq_total{connector=\"relay\"}") == 2.0
    };
    wait_until("the replayed record is dead-lettered again", dead_lettered).await;
    // `plexus dlq replay` with an operate token asks the host to do it.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["dlq", "replay", "relay", "-c", file.to_str().unwrap()])
        .env("PLEXUS_TOKEN", &operator)
        .output()
        .await
        .unwrap();
    assert!(
        cli_stdout(&out).starts_with("relay: replayed 1 dead letter (by the host at"),
        "{out:?}"
    );

    let (status, _) = request(addr, "GET", "/healthz", &[], "").await;
    assert_eq!(status, 200, "health stays open");

    let metrics = admin_get_with(addr, "/metrics", &reader).await;
    assert!(
        metric(&metrics, "plexus_auth_failures_total{endpoint=\"admin\"}") >= 17.0,
        "refusals are counted"
    );

    // The CLI sends its token from PLEXUS_TOKEN; a revoked one stops working at once.
    std::fs::write(bus.dir.path().join("data/admin.addr"), addr.to_string()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["ls", "-c", file.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PLEXUS_TOKEN"),
        "{out:?}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["ls", "-c", file.to_str().unwrap()])
        .env("PLEXUS_TOKEN", &reader)
        .output()
        .await
        .unwrap();
    assert!(cli_stdout(&out).contains("lab"));
    cli_stdout(&plexus_with_config(&["token", "revoke", "grafana"], &file).await);
    let (status, _) = request(
        addr,
        "GET",
        "/connectors",
        &[("Authorization", &bearer(&reader))],
        "",
    )
    .await;
    assert_eq!(status, 401, "a revoked token is refused");
    host.shutdown().await;
}

async fn admin_get_with(addr: SocketAddr, path: &str, token: &str) -> String {
    let (status, body) = request(
        addr,
        "GET",
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_endpoint_is_for_this_machine_only() {
    let bus = TestBus::start().await;
    let ingest = connector(
        "lab",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.lab\"",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &ingest);
    let host = start_host(&file).await;
    let addr = host.http_addr();

    let (status, _) = request(addr, "GET", "/connectors", &[], "").await;
    assert_eq!(
        status, 200,
        "a local caller needs no token while none exist"
    );
    // A cross-site text/plain POST, which a browser sends without asking.
    let (status, body) = request(
        addr,
        "POST",
        "/ingest/lab",
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "https://evil.example"),
        ],
        HL7,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // A name rebound to this address by someone else's DNS.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /connectors HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(bus.count("raw.lab").await, 0);
    host.shutdown().await;

    // Reachable from other machines without a token: refused before starting.
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("http = \"127.0.0.1:0\"", "http = \"0.0.0.0:0\"");
    std::fs::write(&file, text).unwrap();
    for command in ["check", "up"] {
        let out = plexus_with_config(&[command], &file).await;
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("0.0.0.0:0") && stderr.contains("plexus token create"),
            "{command}: {stderr}"
        );
    }
    // With a token, it may.
    token(&file, "read", "monitor").await;
    let out = plexus_with_config(&["check"], &file).await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_are_cut_off() {
    let bus = TestBus::start().await;
    let ingest = connector(
        "lab",
        "source",
        "mllp",
        "listen = \"http\"\nto = \"raw.lab\"",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &ingest);
    let host = start_host(&file).await;
    let addr = host.http_addr();

    // A body over the ingest limit is refused unread.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let huge = plexus_host::admin::MAX_INGEST + 1;
    stream
        .write_all(
            format!("POST /ingest/lab HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {huge}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // A client that never finishes its request head is dropped.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /connectors HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        plexus_host::admin::HEADER_TIMEOUT * 3,
        slow.read_to_end(&mut rest),
    )
    .await;
    assert!(
        closed.is_ok(),
        "the connection was closed after the header timeout"
    );
    assert_eq!(bus.count("raw.lab").await, 0);
    host.shutdown().await;
}

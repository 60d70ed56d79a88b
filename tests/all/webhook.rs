//! A SaaS platform pushes JSON to a webhook source: a request signed with
//! the granted secret, recently, is stored; one with a bad or missing
//! signature, or a stale timestamp, is answered 401 and nothing is published.

use std::net::SocketAddr;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::support::*;

const KEY: &str = "whsec_9f2c7a";

fn sign(timestamp: &str, body: &str, key: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

async fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request(addr, "POST", "/ingest/saas-invoices", &all, body).await
}

fn now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_are_taken_only_when_signed_recently_with_the_secret() {
    let bus = TestBus::start().await;
    let source = connector(
        "saas-invoices",
        "source",
        "webhook",
        "listen = \"http\"\nto = \"raw.saas.invoices\"\nconfig = { secret = \"SAAS_KEY\", timestamp_header = \"x-timestamp\", key = \"/id\", split = \"true\" }\ngrants = { secrets = [\"SAAS_KEY\"] }",
    );
    let file = write_config(bus.dir.path(), Some(bus.url()), &source);
    let secrets = bus.dir.path().join("secrets.toml");
    std::fs::write(&secrets, format!("SAAS_KEY = \"{KEY}\"\n")).unwrap();
    let text = std::fs::read_to_string(&file).unwrap().replacen(
        "[host]\n",
        &format!("[host]\nsecrets_file = \"{}\"\n", secrets.display()),
        1,
    );
    std::fs::write(&file, text).unwrap();
    let host = start_host(&file).await;
    let addr = host.http_addr();
    let body = r#"[{"id":"inv-1","amount":"120.00"},{"id":"inv-2","amount":"80.50"}]"#;

    let stamp = now();
    let good = sign(&stamp, body, KEY);
    let (status, answer) = post(
        addr,
        &[("X-Signature", &good), ("X-Timestamp", &stamp)],
        body,
    )
    .await;
    assert_eq!((status, answer.as_str()), (202, "{\"published\":2}\n"));
    let stored = bus.messages("raw.saas.invoices").await;
    let keys: Vec<String> = stored
        .iter()
        .map(|m| header(m, "Plexus-Key").unwrap())
        .collect();
    assert_eq!(keys, ["inv-1", "inv-2"]);

    let forged = sign(&stamp, body, "whsec_guess");
    let tampered = body.replace("120.00", "12000.00");
    let stale = (stamp.parse::<u64>().unwrap() - 3600).to_string();
    let stale_signed = sign(&stale, body, KEY);
    type Attempt<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let refused: [Attempt; 4] = [
        (
            "a forged signature",
            vec![("X-Signature", &forged), ("X-Timestamp", &stamp)],
            body,
        ),
        (
            "a tampered body",
            vec![("X-Signature", &good), ("X-Timestamp", &stamp)],
            &tampered,
        ),
        ("no signature", vec![("X-Timestamp", &stamp)], body),
        (
            "an hour-old request",
            vec![("X-Signature", &stale_signed), ("X-Timestamp", &stale)],
            body,
        ),
    ];
    for (what, headers, body) in &refused {
        let (status, answer) = post(addr, headers, body).await;
        assert_eq!(status, 401, "{what}: {answer}");
    }
    assert_eq!(
        bus.count("raw.saas.invoices").await,
        2,
        "nothing refused was published"
    );
    assert_eq!(
        metric(
            &scrape(addr),
            "plexus_auth_failures_total{endpoint=\"webhook\"}"
        ),
        4.0
    );

    // Signed but not JSON: the sender's mistake, 400.
    let (status, _) = post(
        addr,
        &[
            ("X-Signature", &sign(&stamp, "nope", KEY)),
            ("X-Timestamp", &stamp),
        ],
        "nope",
    )
    .await;
    assert_eq!(status, 400);
    host.shutdown().await;
}

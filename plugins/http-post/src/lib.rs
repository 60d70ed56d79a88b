//! `http-post`: delivers each record as an HTTP POST, e.g. to an ERP endpoint.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `url` | where to POST; its origin must be granted in `grants.http` | required |
//! | `auth_secret` | secret holding the token for `Authorization` | none |
//! | `auth_scheme` | `Authorization` scheme | `Bearer` |
//!
//! Each request carries the host's idempotency key as `Idempotency-Key`, so a
//! receiver that honours it applies a redelivered record once. 2xx is
//! delivered; 408, 429 and 5xx are retried after `Retry-After` (seconds, or 1s
//! when absent); other statuses are permanent failures with the status and the
//! start of the response body; a request the host's grants refuse is permanent.

use plexus_sdk::{Delivery, Outcome, Sink, config, secrets};

struct HttpPost;

impl Sink for HttpPost {
    fn deliver(deliveries: Vec<Delivery>) -> Vec<Outcome> {
        let Some(url) = config::get("url") else {
            return deliveries
                .iter()
                .map(|_| Outcome::Permanent("config `url` is required".into()))
                .collect();
        };
        let auth = match config::get("auth_secret") {
            None => None,
            Some(name) => match secrets::get(&name) {
                Ok(token) => Some(format!(
                    "{} {token}",
                    config::get("auth_scheme").unwrap_or_else(|| "Bearer".into())
                )),
                Err(e) => {
                    return deliveries
                        .iter()
                        .map(|_| Outcome::Permanent(format!("secret {name}: {e:?}")))
                        .collect();
                }
            },
        };
        deliveries
            .into_iter()
            .map(|d| post(&url, auth.as_deref(), d))
            .collect()
    }
}

fn post(url: &str, auth: Option<&str>, delivery: Delivery) -> Outcome {
    let content_type = delivery
        .record
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".into());
    let mut request = waki::Client::new()
        .post(url)
        .header("Idempotency-Key", delivery.idempotency_key.as_str())
        .header("Content-Type", content_type.as_str());
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    let response = match request.body(delivery.record.payload).send() {
        Ok(response) => response,
        Err(e) if format!("{e:?}").contains("HttpRequestDenied") => {
            return Outcome::Permanent(format!("POST {url}: refused by the host's grants"));
        }
        Err(e) => {
            return Outcome::RetryAfter(1000)
                .tap(|| plexus_sdk::log::warn(&format!("POST {url}: {e}")));
        }
    };
    let status = response.status_code();
    let retry_after = response
        .header("Retry-After")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(1000, |secs| secs * 1000);
    match status {
        200..=299 => Outcome::Ok,
        408 | 429 | 500..=599 => Outcome::RetryAfter(retry_after),
        _ => {
            let body = response.body().unwrap_or_default();
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(200).collect();
            Outcome::Permanent(format!("POST {url}: HTTP {status}: {snippet}"))
        }
    }
}

trait Tap: Sized {
    fn tap(self, f: impl FnOnce()) -> Self {
        f();
        self
    }
}

impl Tap for Outcome {}

plexus_sdk::export_sink!(HttpPost);

//! `webhook`: a source for SaaS platforms that push JSON (`listen = "http"`).
//! It takes a request only if its HMAC-SHA256 signature, made with a granted
//! secret, checks out — and, with a timestamp header, only if it was signed
//! recently, so a captured request cannot be replayed later.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `secret` | the granted secret holding the signing key | required |
//! | `signature_header` | the header carrying the signature | `x-signature` |
//! | `scheme` | what comes before the hex digest in it | `sha256=` |
//! | `timestamp_header` | a header with the sending time in Unix seconds; the signature then covers `<timestamp>.<body>` | none |
//! | `tolerance` | seconds a timestamp may be off from now | `300` |
//! | `split` | `true`: a top-level JSON array becomes a record per element | `false` |
//! | `key` | JSON pointer to each record's key, e.g. `/id` | none |
//! | `schema` | schema id stamped on each record | none |
//!
//! A missing or wrong signature or a stale timestamp is `unauthenticated`
//! (the host answers 401 and publishes nothing); a body that is not JSON is
//! `invalid` (400).

use hmac::{Hmac, Mac as _};
use plexus_sdk::{Record, Refusal, Request, Webhook, config, secrets};
use sha2::Sha256;

struct Signed;

/// How requests are checked, from the connector's config.
struct Check {
    key: String,
    signature_header: String,
    scheme: String,
    timestamp_header: Option<String>,
    tolerance: i64,
}

impl Webhook for Signed {
    fn receive(request: Request) -> Result<Vec<Record>, Refusal> {
        let check = Check::from_config()?;
        let now = now_unix();
        check.verify(&request, now)?;
        to_records(&request.body)
    }
}

impl Check {
    fn from_config() -> Result<Check, Refusal> {
        let name = config::get("secret")
            .ok_or_else(|| Refusal::Unavailable("config `secret` is required".into()))?;
        let key = secrets::get(&name).map_err(|e| {
            Refusal::Unavailable(format!(
                "the signing secret {name:?} is not available: {e:?}"
            ))
        })?;
        let tolerance = match config::get("tolerance") {
            None => 300,
            Some(text) => text.trim().parse().map_err(|_| {
                Refusal::Unavailable(format!(
                    "config `tolerance` {text:?} is not a number of seconds"
                ))
            })?,
        };
        Ok(Check {
            key,
            signature_header: config::get("signature_header")
                .unwrap_or_else(|| "x-signature".into())
                .to_ascii_lowercase(),
            scheme: config::get("scheme").unwrap_or_else(|| "sha256=".into()),
            timestamp_header: config::get("timestamp_header").map(|h| h.to_ascii_lowercase()),
            tolerance,
        })
    }

    /// Whether `request` was signed with the key, recently enough.
    fn verify(&self, request: &Request, now: i64) -> Result<(), Refusal> {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        let signature = header(&self.signature_header).ok_or_else(|| {
            Refusal::Unauthenticated(format!("no {} header", self.signature_header))
        })?;
        let hex = signature
            .strip_prefix(self.scheme.as_str())
            .ok_or_else(|| {
                Refusal::Unauthenticated(format!(
                    "the {} header does not start with {:?}",
                    self.signature_header, self.scheme
                ))
            })?;
        let expected = decode_hex(hex).ok_or_else(|| {
            Refusal::Unauthenticated(format!("the {} header is not hex", self.signature_header))
        })?;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_bytes())
            .map_err(|_| Refusal::Unavailable("the signing secret cannot key HMAC".into()))?;
        if let Some(name) = &self.timestamp_header {
            let stamp = header(name)
                .ok_or_else(|| Refusal::Unauthenticated(format!("no {name} header")))?;
            let sent: i64 = stamp.parse().map_err(|_| {
                Refusal::Unauthenticated(format!("the {name} header is not Unix seconds"))
            })?;
            if (now - sent).abs() > self.tolerance {
                return Err(Refusal::Unauthenticated(format!(
                    "signed {}s from now, more than the {}s tolerance: a stale or replayed request",
                    now - sent,
                    self.tolerance
                )));
            }
            mac.update(stamp.as_bytes());
            mac.update(b".");
        }
        mac.update(&request.body);
        // Constant time, whatever the signature.
        mac.verify_slice(&expected)
            .map_err(|_| Refusal::Unauthenticated("the signature does not match".into()))
    }
}

/// The body as records: one, or one per element of a top-level array.
fn to_records(body: &[u8]) -> Result<Vec<Record>, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::Invalid(format!("the body is not JSON: {e}")))?;
    let split = config::get("split").as_deref() == Some("true");
    let items = match value {
        serde_json::Value::Array(items) if split => items,
        other => vec![other],
    };
    let key = config::get("key");
    let schema = config::get("schema");
    items
        .into_iter()
        .enumerate()
        .map(|(n, item)| {
            let id = match &key {
                None => String::new(),
                Some(pointer) => match item.pointer(pointer) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v @ serde_json::Value::Number(_)) => v.to_string(),
                    _ => {
                        return Err(Refusal::Invalid(format!(
                            "record {n} has no key at {pointer}"
                        )));
                    }
                },
            };
            let mut record =
                Record::new(id, item.to_string()).with_content_type("application/json");
            if let Some(schema) = &schema {
                record = record.with_schema(schema);
            }
            Ok(record)
        })
        .collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

plexus_sdk::export_webhook!(Signed);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(timestamp: bool) -> Check {
        Check {
            key: "whsec_test".into(),
            signature_header: "x-signature".into(),
            scheme: "sha256=".into(),
            timestamp_header: timestamp.then(|| "x-timestamp".into()),
            tolerance: 300,
        }
    }

    fn sign(key: &str, message: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(message);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    fn request(headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_good_signature_passes_and_a_forged_one_does_not() {
        let body = r#"{"id":"inv-1"}"#;
        let good = sign("whsec_test", body.as_bytes());
        assert!(
            check(false)
                .verify(&request(&[("X-Signature", &good)], body), 0)
                .is_ok()
        );
        let forged = sign("guess", body.as_bytes());
        assert!(matches!(
            check(false).verify(&request(&[("x-signature", &forged)], body), 0),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            check(false).verify(&request(&[("x-signature", &good)], r#"{"id":"inv-2"}"#), 0),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            check(false).verify(&request(&[], body), 0),
            Err(Refusal::Unauthenticated(reason)) if reason.contains("no x-signature header")
        ));
    }

    #[test]
    fn a_stale_timestamp_is_a_replay() {
        let body = "{}";
        let signed = sign("whsec_test", format!("1000.{body}").as_bytes());
        let headers = [("x-signature", signed.as_str()), ("x-timestamp", "1000")];
        assert!(check(true).verify(&request(&headers, body), 1100).is_ok());
        assert!(matches!(
            check(true).verify(&request(&headers, body), 1000 + 301),
            Err(Refusal::Unauthenticated(reason)) if reason.contains("stale")
        ));
    }
}

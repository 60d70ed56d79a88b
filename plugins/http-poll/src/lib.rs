//! `http-poll`: polls a REST or FHIR endpoint, with the cursor as a watermark.
//!
//! | config key | meaning | default |
//! |---|---|---|
//! | `url` | the search URL, e.g. `https://fhir.example.org/SupplyDelivery?_count=50` | required |
//! | `since_param` | query parameter that takes the watermark as `gt<cursor>` | `_lastUpdated` |
//! | `max_pages` | pages followed per poll | `100` |
//! | `auth_secret` | secret holding a bearer token | none |
//!
//! Each poll asks for what changed after the cursor, follows the Bundle's
//! `next` links, and returns one record per entry's resource, keyed
//! `<resourceType>/<id>[/_history/<versionId>]`. The new cursor is the largest
//! `meta.lastUpdated` seen. A JSON array of objects with `id` works too.
//! 5xx and 429 responses are retryable; other failures are permanent.

use plexus_sdk::{Error, PollResult, Record, Source, config, secrets};
use serde_json::Value;

struct HttpPoll;

impl Source for HttpPoll {
    fn poll(cursor: Option<String>) -> Result<PollResult, Error> {
        let url = config::get("url")
            .ok_or_else(|| Error::Permanent("config `url` is required".into()))?;
        let since = config::get("since_param").unwrap_or_else(|| "_lastUpdated".into());
        let max_pages: usize = config::get("max_pages")
            .and_then(|n| n.parse().ok())
            .unwrap_or(100);
        let token = match config::get("auth_secret") {
            Some(name) => Some(
                secrets::get(&name)
                    .map_err(|e| Error::Permanent(format!("secret {name}: {e:?}")))?,
            ),
            None => None,
        };

        let mut next = Some(match &cursor {
            Some(mark) if !mark.is_empty() => {
                let joiner = if url.contains('?') { '&' } else { '?' };
                format!("{url}{joiner}{since}=gt{}", encode(mark))
            }
            _ => url.clone(),
        });
        let mut records = Vec::new();
        let mut watermark = cursor.clone().unwrap_or_default();
        let mut pages = 0;
        while let Some(page_url) = next.take() {
            pages += 1;
            if pages > max_pages {
                break;
            }
            let page = fetch(&page_url, token.as_deref())?;
            let entries = match &page {
                Value::Object(bundle)
                    if bundle.get("resourceType").and_then(Value::as_str) == Some("Bundle") =>
                {
                    next = bundle
                        .get("link")
                        .and_then(Value::as_array)
                        .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
                        .and_then(|l| l["url"].as_str())
                        .map(|u| absolute(&url, u));
                    bundle
                        .get("entry")
                        .and_then(Value::as_array)
                        .map(|e| {
                            e.iter()
                                .filter_map(|e| e.get("resource").cloned())
                                .collect()
                        })
                        .unwrap_or_default()
                }
                Value::Array(items) => items.clone(),
                _ => {
                    return Err(Error::Permanent(format!(
                        "{page_url}: expected a FHIR Bundle or a JSON array"
                    )));
                }
            };
            for resource in entries {
                let id = resource["id"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| resource["id"].as_i64().map(|n| n.to_string()));
                let Some(id) = id else {
                    return Err(Error::Permanent(format!("{page_url}: an entry has no id")));
                };
                let mut key = match resource["resourceType"].as_str() {
                    Some(kind) => format!("{kind}/{id}"),
                    None => id,
                };
                if let Some(version) = resource["meta"]["versionId"].as_str() {
                    key = format!("{key}/_history/{version}");
                }
                if let Some(updated) = resource["meta"]["lastUpdated"].as_str()
                    && updated > watermark.as_str()
                {
                    watermark = updated.to_owned();
                }
                let payload =
                    serde_json::to_vec(&resource).map_err(|e| Error::Permanent(e.to_string()))?;
                records.push(Record::new(key, payload).with_content_type("application/fhir+json"));
            }
        }
        let cursor = if watermark.is_empty() {
            cursor
        } else {
            Some(watermark)
        };
        Ok(PollResult { records, cursor })
    }
}

fn fetch(url: &str, token: Option<&str>) -> Result<Value, Error> {
    let mut request = waki::Client::new()
        .get(url)
        .header("Accept", "application/fhir+json, application/json");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let response = request
        .send()
        .map_err(|e| Error::Retryable(format!("GET {url}: {e}")))?;
    let status = response.status_code();
    let body = response
        .body()
        .map_err(|e| Error::Retryable(format!("GET {url}: reading the body: {e}")))?;
    match status {
        200..=299 => serde_json::from_slice(&body)
            .map_err(|e| Error::Permanent(format!("GET {url}: the body is not JSON: {e}"))),
        429 | 500..=599 => Err(Error::Retryable(format!("GET {url}: HTTP {status}"))),
        _ => Err(Error::Permanent(format!("GET {url}: HTTP {status}"))),
    }
}

/// Resolve a `next` link against the base URL's origin when it is relative.
fn absolute(base: &str, link: &str) -> String {
    if link.contains("://") {
        return link.to_owned();
    }
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| base[i..].find('/').map(|j| i + j))
        .unwrap_or(base.len());
    format!("{}/{}", &base[..origin_end], link.trim_start_matches('/'))
}

/// Percent-encode a watermark for a query string.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

plexus_sdk::export_source!(HttpPoll);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_watermarks() {
        assert_eq!(
            absolute("http://h:8/fhir/X?a=1", "/fhir/X?page=2"),
            "http://h:8/fhir/X?page=2"
        );
        assert_eq!(
            absolute("http://h:8/fhir/X", "http://other/y"),
            "http://other/y"
        );
        assert_eq!(
            encode("2026-05-22T08:30:00+00:00"),
            "2026-05-22T08:30:00%2B00:00"
        );
    }
}

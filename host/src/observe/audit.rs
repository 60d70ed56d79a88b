//! The audit log: what was refused, taken in and changed, appended to the
//! JetStream stream `plexus-audit` as a hash chain no one can quietly edit.
//!
//! Each writer (a host, or a CLI command) appends to its own subject
//! `plexus.audit.<writer>`; each record is one JSON line carrying its
//! number in that chain and the SHA-256 of the record before it, and is
//! published only if the subject's last sequence is the one the writer
//! chained to (`Nats-Expected-Last-Subject-Sequence`), so two writers can
//! never fork a chain. `plexus audit verify` walks every chain and names the
//! first record that does not follow its predecessor: one altered or
//! removed breaks the link after it.
//!
//! | event | actor | when |
//! |---|---|---|
//! | `auth_failure` | the endpoint (`admin`, `mllp`) and peer | a request or connection refused for who sent it |
//! | `ingest` | the token's name | `POST /ingest/<connector>` stored |
//! | `replay` | the OS user | `plexus dlq replay` sent a dead letter back |
//! | `reload` | `host` | a config reload applied or refused |
//! | `capability_denied` | the connector | a plugin asked for what it was not granted |
//!
//! Appending never holds up the work it records: records queue (up to
//! [`QUEUE`]) for one writer task; past that they are counted in
//! `plexus_audit_dropped_total` and logged.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// The stream holding every chain.
pub const STREAM: &str = "plexus-audit";
/// Chains live under `plexus.audit.<writer>`.
pub const SUBJECTS: &str = "plexus.audit.>";
/// Records waiting to be written.
pub const QUEUE: usize = 10_000;

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its number in its writer's chain, from 1.
    pub seq: u64,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// Who wrote the chain.
    pub writer: String,
    /// What happened.
    pub event: String,
    /// Who did it.
    pub actor: String,
    /// The particulars.
    pub detail: String,
    /// Hex SHA-256 of the previous record's bytes; empty for the first.
    pub prev: String,
}

/// What a component hands the audit log.
#[derive(Debug)]
struct Event {
    event: &'static str,
    actor: String,
    detail: String,
}

/// A handle to append to the audit log; cheap to clone. A disabled one
/// (no bus) drops everything.
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<Event>>,
    metrics: Option<Arc<super::Metrics>>,
    refusals: Arc<std::sync::Mutex<Refusals>>,
}

/// Refusals are recorded at most once per [`REFUSALS_EVERY`] per endpoint,
/// with how many there were: a flood of bad requests must not crowd out
/// what operators did.
#[derive(Default)]
struct Refusals {
    last: std::collections::HashMap<String, std::time::Instant>,
    since: std::collections::HashMap<String, u64>,
}

/// The least time between two `auth_failure` records of one endpoint.
pub const REFUSALS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tx.is_some() {
            "Audit"
        } else {
            "Audit(off)"
        })
    }
}

impl Audit {
    /// An audit log that records nothing (`plexus test`, `plexus check`).
    pub fn disabled() -> Audit {
        Audit::default()
    }

    /// Start writing `writer`'s chain on the bus.
    /// `replicas`: copies a cluster keeps of the stream, when this creates it.
    pub async fn start(
        js: jetstream::Context,
        writer: &str,
        metrics: Option<Arc<super::Metrics>>,
        replicas: usize,
    ) -> anyhow::Result<(Audit, Writer)> {
        ensure_stream(&js, replicas).await?;
        let mut chain = Chain::resume(js, writer).await?;
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = rx.recv() => event,
                    _ = stopped.changed() => {
                        // What was queued before the stop is still written.
                        rx.close();
                        rx.recv().await
                    }
                };
                let Some(event) = event else { break };
                if let Err(error) = chain.append(event).await {
                    tracing::error!(
                        error = format!("{error:#}"),
                        "Cannot append to the audit log."
                    );
                }
            }
        });
        Ok((
            Audit {
                tx: Some(tx),
                metrics,
                refusals: Arc::default(),
            },
            Writer { task, stop },
        ))
    }

    /// Record `event` by `actor`.
    pub fn record(&self, event: &'static str, actor: &str, detail: &str) {
        let Some(tx) = &self.tx else { return };
        let mut detail: String = detail.chars().take(1024).collect();
        if event == "auth_failure" {
            // Throttled, and never into the half of the queue kept for the rest.
            let Ok(mut refusals) = self.refusals.lock() else {
                return;
            };
            let now = std::time::Instant::now();
            let due = refusals
                .last
                .get(actor)
                .is_none_or(|at| now.duration_since(*at) >= REFUSALS_EVERY);
            if !due || tx.capacity() < QUEUE / 2 {
                *refusals.since.entry(actor.to_owned()).or_default() += 1;
                return;
            }
            refusals.last.insert(actor.to_owned(), now);
            if let Some(more) = refusals.since.remove(actor).filter(|n| *n > 0) {
                detail.push_str(&format!(
                    " (and {more} more refused before it, not recorded one by one)"
                ));
            }
        }
        let event = Event {
            event,
            actor: actor.to_owned(),
            detail,
        };
        if tx.try_send(event).is_err() {
            if let Some(metrics) = &self.metrics {
                metrics.audit_dropped();
            }
            tracing::warn!(
                "The audit log's queue is full; a record was dropped (counted in plexus_audit_dropped_total)."
            );
        }
    }
}

/// The task writing a chain.
pub struct Writer {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Writer {
    /// Write what is queued, then stop.
    pub async fn finish(self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            tracing::warn!("The audit log did not finish writing within 10s.");
        }
    }
}

/// The stream every chain lives in, created on first use.
async fn ensure_stream(js: &jetstream::Context, replicas: usize) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        max_age: std::time::Duration::from_secs(400 * 86_400),
        max_bytes: 1 << 30,
        // Nothing is ever removed but by age or size, oldest first.
        deny_delete: false,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .context("cannot create the audit stream")?;
    Ok(())
}

/// One writer's chain: where it ends.
struct Chain {
    js: jetstream::Context,
    writer: String,
    subject: String,
    /// The subject's last stream sequence (0 before the first record).
    last_sequence: u64,
    /// The last record's number in the chain.
    seq: u64,
    /// Hex SHA-256 of the last record's bytes.
    prev: String,
}

impl Chain {
    async fn resume(js: jetstream::Context, writer: &str) -> anyhow::Result<Chain> {
        let mut chain = Chain {
            subject: format!("plexus.audit.{writer}"),
            writer: writer.to_owned(),
            js,
            last_sequence: 0,
            seq: 0,
            prev: String::new(),
        };
        chain.reload().await?;
        Ok(chain)
    }

    /// Read where the chain ends from the stream.
    async fn reload(&mut self) -> anyhow::Result<()> {
        let stream = self.js.get_stream_no_info(STREAM).await?;
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(last) => {
                let record: Record = serde_json::from_slice(&last.payload)
                    .context("the audit chain's last record is not readable")?;
                self.last_sequence = last.sequence;
                self.seq = record.seq;
                self.prev = digest(&last.payload);
            }
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                self.last_sequence = 0;
                self.seq = 0;
                self.prev.clear();
            }
            Err(e) => bail!("cannot read the audit chain: {e}"),
        }
        Ok(())
    }

    async fn append(&mut self, event: Event) -> anyhow::Result<()> {
        for _ in 0..3 {
            let record = Record {
                seq: self.seq + 1,
                time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                writer: self.writer.clone(),
                event: event.event.to_owned(),
                actor: event.actor.clone(),
                detail: event.detail.clone(),
                prev: self.prev.clone(),
            };
            let bytes = serde_json::to_vec(&record)?;
            let mut headers = HeaderMap::new();
            headers.insert(
                "Nats-Expected-Last-Subject-Sequence",
                self.last_sequence.to_string().as_str(),
            );
            let stored = self
                .js
                .publish_with_headers(self.subject.clone(), headers, bytes.clone().into())
                .await?
                .await;
            match stored {
                Ok(ack) => {
                    self.last_sequence = ack.sequence;
                    self.seq = record.seq;
                    self.prev = digest(&bytes);
                    return Ok(());
                }
                // Another writer of the same name got there first: chain to it.
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    self.reload().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        bail!(
            "the audit chain {} keeps moving under this writer",
            self.subject
        )
    }
}

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One record as read back, with where it is in the stream.
pub struct Stored {
    /// The stream sequence.
    pub sequence: u64,
    /// The subject it was stored on.
    pub subject: String,
    /// The record, if it parses.
    pub record: Result<Record, String>,
    raw: bytes::Bytes,
}

/// Every record in the audit stream, oldest first (since `since`, if
/// given), and whether the oldest have aged out of the stream.
pub async fn read(
    js: &jetstream::Context,
    since: Option<SystemTime>,
) -> anyhow::Result<(Vec<Stored>, bool)> {
    let mut stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(_) => return Ok((Vec::new(), false)),
    };
    let aged_out = stream
        .info()
        .await
        .map(|info| info.state.first_sequence > 1)
        .unwrap_or(false);
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let found = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(SUBJECTS.to_owned())
            .send()
            .await;
        let message = match found {
            Ok(message) => message,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => bail!("cannot read the audit log: {e}"),
        };
        next = message.sequence + 1;
        if since.is_some_and(|since| SystemTime::from(message.time) < since) {
            continue;
        }
        out.push(Stored {
            subject: message.subject.to_string(),
            sequence: message.sequence,
            record: serde_json::from_slice(&message.payload).map_err(|e| e.to_string()),
            raw: message.payload,
        });
    }
    Ok((out, aged_out))
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Chains checked.
    pub chains: usize,
    /// Records checked.
    pub records: usize,
}

/// Walk every chain; the first record that does not follow its predecessor
/// is the error, named by chain, number and stream sequence. When the
/// stream's oldest records have aged out (`aged_out`), a chain may begin
/// after its first record.
pub fn verify(stored: &[Stored], aged_out: bool) -> Result<Verified, String> {
    let mut chains: std::collections::HashMap<String, (u64, String)> = Default::default();
    for item in stored {
        let record = item.record.as_ref().map_err(|e| {
            format!(
                "stream sequence {}: not an audit record ({e}): it was altered",
                item.sequence
            )
        })?;
        if item.subject != format!("plexus.audit.{}", record.writer) {
            return Err(format!(
                "stream sequence {}: a record of chain {} stored on {}: it was put there by hand",
                item.sequence, record.writer, item.subject
            ));
        }
        let expected = match chains.get(&record.writer) {
            Some((seq, hash)) => (seq + 1, hash.clone()),
            // The oldest records aged out: the chain goes on from here.
            None if aged_out && record.seq > 1 => (record.seq, record.prev.clone()),
            None => (1, String::new()),
        };
        if record.seq != expected.0 {
            let missing = if record.seq == expected.0 + 1 {
                format!("record {} was removed", expected.0)
            } else if record.seq > expected.0 {
                format!("records {}..{} were removed", expected.0, record.seq - 1)
            } else {
                format!("record {} appears twice", record.seq)
            };
            return Err(format!(
                "chain {}: record {} (stream sequence {}) follows record {}: {missing}",
                record.writer,
                record.seq,
                item.sequence,
                expected.0 - 1,
            ));
        }
        if record.prev != expected.1 {
            return Err(format!(
                "chain {}: record {} (stream sequence {}) does not follow record {}: record {} was altered",
                record.writer,
                record.seq,
                item.sequence,
                expected.0 - 1,
                expected.0 - 1
            ));
        }
        chains.insert(record.writer.clone(), (record.seq, digest(&item.raw)));
    }
    Ok(Verified {
        chains: chains.len(),
        records: stored.len(),
    })
}

/// A writer name for a host: its machine name and its data_dir, so each
/// host of a fleet has a chain of its own.
pub fn writer_name(data_dir: &std::path::Path) -> String {
    let machine = std::fs::read_to_string("/etc/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let place = digest(data_dir.to_string_lossy().as_bytes());
    let name: String = machine
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{name}-{}", &place[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Stored> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let record = Record {
                    seq,
                    time: "2026-12-02T00:00:00Z".into(),
                    writer: "w".into(),
                    event: "reload".into(),
                    actor: "host".into(),
                    detail: format!("#{seq}"),
                    prev: prev.clone(),
                };
                let raw = bytes::Bytes::from(serde_json::to_vec(&record).unwrap());
                prev = digest(&raw);
                Stored {
                    sequence: seq,
                    subject: "plexus.audit.w".into(),
                    record: Ok(record),
                    raw,
                }
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(
            verify(&chain(5), false),
            Ok(Verified {
                chains: 1,
                records: 5
            })
        );
    }

    #[test]
    fn a_removed_record_is_named() {
        let mut c = chain(5);
        c.remove(2);
        let e = verify(&c, false).unwrap_err();
        assert!(
            e.contains("record 4 (stream sequence 4) follows record 2: record 3 was removed"),
            "{e}"
        );
    }

    #[test]
    fn a_chain_whose_oldest_records_aged_out_still_verifies() {
        let mut c = chain(5);
        c.drain(..2);
        assert!(
            verify(&c, false).is_err(),
            "without retention, a missing start is a removal"
        );
        assert_eq!(
            verify(&c, true),
            Ok(Verified {
                chains: 1,
                records: 3
            })
        );
    }

    #[test]
    fn an_altered_record_is_named() {
        let mut c = chain(5);
        let mut altered = c[1].record.clone().unwrap();
        altered.detail = "nothing to see".into();
        c[1].raw = serde_json::to_vec(&altered).unwrap().into();
        c[1].record = Ok(altered);
        let e = verify(&c, false).unwrap_err();
        assert!(
            e.contains(
                "record 3 (stream sequence 3) does not follow record 2: record 2 was altered"
            ),
            "{e}"
        );
    }
}

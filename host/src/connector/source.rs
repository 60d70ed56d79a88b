//! Sources: scheduled polls and inbound messages become records on the bus.
//!
//! A record's id comes from the connector and its identity (where it came
//! from, its key and its content: `identity.rs`), and a poll's new cursor is
//! committed to the `plexus-cursors` bucket only after every record is
//! stored. A crash in between re-polls from the old cursor, and JetStream
//! drops the duplicates. A poll that brought records and moved its cursor is
//! followed at once by the next, so a source that pages through a large
//! backlog drains it at the bus's pace, a page at a time.
//!
//! One bad record (it breaks the connector's `emits` contract, or is larger
//! than the bus takes) does not hold back the rest of a poll: it is
//! dead-lettered with its reason and the poll goes on. An inbound message is
//! taken whole or not at all: the sender is told why and can correct it.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::kv;
use tokio::sync::watch;

use super::identity::{self, Collisions};
use super::publish::{Outgoing, PublishFailure, Publisher, subject, within_output_limits};
use super::record::{Lineage, header_value};
use crate::bindings::{PluginError, PluginRecord};
use crate::bus::{dead_letters, headers};
use crate::capability::redact;
use crate::config::Schedule;
use crate::config::{Delivery, Limits};
use crate::contract::Contracts;
use crate::observe::Metrics;
use crate::plugin::{FaultKind, Pool};

/// Why an inbound message was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// It can never be taken (undecodable): tell the sender, do not retry.
    #[error("{0}")]
    Rejected(String),
    /// Not now (the bus or the plugin is unavailable): the sender should retry.
    #[error("{0}")]
    Unavailable(String),
    /// A webhook source could not verify who sent it.
    #[error("{0}")]
    Unauthenticated(String),
}

pub(crate) struct Source {
    pub(super) name: String,
    pub(super) hop: String,
    pub(super) to: crate::config::Subject,
    pub(super) pool: Pool,
    pub(super) publisher: Publisher,
    pub(super) metrics: Arc<Metrics>,
    pub(super) delivery: Delivery,
    pub(super) limits: Limits,
    pub(super) cursors: kv::Store,
    pub(super) contracts: Arc<Contracts>,
    pub(super) collisions: Collisions,
    pub(super) audit: crate::observe::Audit,
    /// At an edge: the facility, part of every identity and stamped on every record.
    pub(super) facility: Option<Arc<str>>,
    /// Where hop spans go, when `[observe] otlp` is set.
    pub(super) spans: Option<Arc<crate::observe::otel::Spans>>,
}

/// What one poll did.
struct Polled {
    /// Records published.
    published: u64,
    /// Whether it brought records and moved the cursor: there may be more.
    more: bool,
}

/// A record that will not be published, and why.
struct Refused {
    index: usize,
    identity: String,
    reason: String,
    record: PluginRecord,
}

impl Source {
    /// Poll on `schedule` until `stop`; a poll still running when the next is
    /// due is never started twice, and failing polls back off.
    pub(super) async fn run_schedule(
        self: Arc<Self>,
        schedule: Schedule,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut first = true;
        let mut failures = 0u32;
        'schedule: loop {
            // After a failure, try again after the backoff rather than the
            // schedule: a poll published but not committed must be retried
            // while JetStream still remembers its ids.
            let wait = if failures > 0 {
                self.delivery.backoff_after(failures)
            } else {
                schedule.delay(first)
            };
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            loop {
                let polled = tokio::select! {
                    polled = self.poll_once() => polled,
                    // A poll stopped here publishes nothing more and commits
                    // no cursor: the next start polls again from the last one.
                    _ = stop.changed() => break 'schedule,
                };
                match polled {
                    Ok(Polled { published, more }) => {
                        failures = 0;
                        tracing::debug!(connector = %self.name, records = published, more, "Poll done.");
                        if !more || *stop.borrow() {
                            break;
                        }
                    }
                    Err(reason) => {
                        failures += 1;
                        let reason = redact(&self.pool.context().secrets, &reason);
                        tracing::warn!(connector = %self.name, %reason, failures, "Poll failed; backing off.");
                        break;
                    }
                }
            }
        }
    }

    /// One poll: call the plugin with the committed cursor, publish what it
    /// returns (dead-lettering what cannot be), then commit its new cursor.
    async fn poll_once(&self) -> Result<Polled, String> {
        let cursor = match self.cursors.get(&self.name).await {
            Ok(value) => value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            Err(e) => return Err(format!("cannot read the cursor: {e}")),
        };
        let result = self.pool.poll(cursor.clone()).await;
        let polled = match result {
            Ok(Ok(polled)) => polled,
            Ok(Err(PluginError::Retryable(reason))) => {
                self.metrics.error(&self.name, "retryable");
                return Err(reason);
            }
            Ok(Err(PluginError::Permanent(reason))) => {
                self.metrics.error(&self.name, "permanent");
                return Err(reason);
            }
            Err(fault) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                return Err(fault.to_string());
            }
        };
        if let Err(reason) = within_output_limits(&self.limits, &polled.records) {
            self.metrics.error(&self.name, "permanent");
            return Err(format!("poll {reason}"));
        }
        let brought = !polled.records.is_empty();
        let mut refused = Vec::new();
        let published = self
            .publish(polled.records, "", None, &mut refused)
            .await
            .map_err(|e| e.to_string())?;
        for refused in refused {
            self.dead_letter(refused).await?;
        }
        let mut more = false;
        if let Some(next) = polled.cursor.filter(|next| Some(next) != cursor.as_ref()) {
            self.cursors
                .put(&self.name, next.into_bytes().into())
                .await
                .map_err(|e| format!("records published, cursor not committed (they will be re-polled and de-duplicated): {e}"))?;
            more = brought;
        }
        Ok(Polled { published, more })
    }

    /// Decode one inbound message from `origin` (an MLLP sender's MSH-3^MSH-4,
    /// an HTTP sender's token name) and publish its records; returns once
    /// every record is stored.
    /// A webhook source gets the request's `headers` too.
    pub(crate) async fn ingest(
        &self,
        body: bytes::Bytes,
        headers: Vec<(String, String)>,
        origin: &str,
    ) -> Result<u64, IngestError> {
        let secrets = &self.pool.context().secrets;
        self.decode_and_publish(body, headers, origin)
            .await
            .map_err(|e| match e {
                IngestError::Rejected(reason) => IngestError::Rejected(redact(secrets, &reason)),
                IngestError::Unavailable(reason) => {
                    IngestError::Unavailable(redact(secrets, &reason))
                }
                IngestError::Unauthenticated(reason) => {
                    IngestError::Unauthenticated(redact(secrets, &reason))
                }
            })
    }

    async fn decode_and_publish(
        &self,
        body: bytes::Bytes,
        headers: Vec<(String, String)>,
        origin: &str,
    ) -> Result<u64, IngestError> {
        let result = if self.pool.is_webhook() {
            use crate::bindings::{WebhookRefusal, WebhookRequest};
            let request = WebhookRequest {
                headers,
                body: body.to_vec(),
            };
            match self.pool.receive(request).await {
                Ok(Ok(records)) => Ok(Ok(records)),
                Ok(Err(WebhookRefusal::Unauthenticated(reason))) => {
                    self.metrics.auth_failure("webhook");
                    self.audit.record(
                        "auth_failure",
                        "webhook",
                        &format!("connector {}: {reason}", self.name),
                    );
                    return Err(IngestError::Unauthenticated(reason));
                }
                Ok(Err(WebhookRefusal::Invalid(reason))) => Ok(Err(PluginError::Permanent(reason))),
                Ok(Err(WebhookRefusal::Unavailable(reason))) => {
                    Ok(Err(PluginError::Retryable(reason)))
                }
                Err(fault) => Err(fault),
            }
        } else {
            self.pool.decode(body.clone()).await
        };
        let records = match result {
            Ok(Ok(records)) => records,
            Ok(Err(PluginError::Permanent(reason))) => {
                self.metrics.error(&self.name, "permanent");
                return Err(IngestError::Rejected(reason));
            }
            Ok(Err(PluginError::Retryable(reason))) => {
                self.metrics.error(&self.name, "retryable");
                return Err(IngestError::Unavailable(reason));
            }
            // Not the message's fault: the sender should try again.
            Err(fault) if matches!(fault.kind, FaultKind::Instantiate | FaultKind::Released) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                return Err(IngestError::Unavailable(fault.to_string()));
            }
            Err(fault) => {
                self.metrics.error(&self.name, fault.kind.as_str());
                return Err(IngestError::Rejected(fault.to_string()));
            }
        };
        within_output_limits(&self.limits, &records).map_err(|reason| {
            self.metrics.error(&self.name, "permanent");
            IngestError::Rejected(format!("the message {reason}"))
        })?;
        // Taken whole or not at all: every record is checked before any is sent.
        let mut refused = Vec::new();
        let message = crate::bus::headers::trace_id(&String::from_utf8_lossy(&body));
        let outgoing: Vec<Outgoing> = records
            .into_iter()
            .enumerate()
            .filter_map(|(index, record)| {
                self.prepare(index, record, origin, Some(&message))
                    .map_err(|r| refused.push(*r))
                    .ok()
            })
            .collect();
        if let Some(first) = refused.first() {
            self.metrics.error(&self.name, "permanent");
            return Err(IngestError::Rejected(format!(
                "record {} {}",
                first.index, first.reason
            )));
        }
        let n = outgoing.len() as u64;
        self.metrics.records_in(&self.name, n);
        let taken = self.taken(&outgoing);
        match self
            .publisher
            .publish_all(outgoing.into_iter().map(Ok))
            .await
        {
            Ok(n) => {
                self.metrics.records_out(&self.name, n);
                self.traced(&taken);
                Ok(n)
            }
            Err(PublishFailure::Unpublishable(reason)) => {
                self.metrics.error(&self.name, "permanent");
                Err(IngestError::Rejected(reason))
            }
            Err(PublishFailure::Bus(reason)) => {
                self.metrics.error(&self.name, "publish");
                Err(IngestError::Unavailable(format!(
                    "the bus did not store the records: {reason}"
                )))
            }
        }
    }

    /// Publish a poll's records as the window allows; the ones that cannot
    /// be published go to `refused`.
    async fn publish(
        &self,
        records: Vec<PluginRecord>,
        origin: &str,
        message: Option<&str>,
        refused: &mut Vec<Refused>,
    ) -> Result<u64, PublishFailure> {
        self.metrics.records_in(&self.name, records.len() as u64);
        let outgoing: Vec<Outgoing> = records
            .into_iter()
            .enumerate()
            .filter_map(
                |(index, record)| match self.prepare(index, record, origin, message) {
                    Ok(outgoing) => Some(outgoing),
                    Err(r) => {
                        refused.push(*r);
                        None
                    }
                },
            )
            .collect();
        let taken = self.taken(&outgoing);
        match self
            .publisher
            .publish_all(outgoing.into_iter().map(Ok))
            .await
        {
            Ok(n) => {
                self.metrics.records_out(&self.name, n);
                self.traced(&taken);
                Ok(n)
            }
            Err(failure) => {
                let kind = match failure {
                    PublishFailure::Unpublishable(_) => "permanent",
                    PublishFailure::Bus(_) => "publish",
                };
                self.metrics.error(&self.name, kind);
                Err(failure)
            }
        }
    }

    /// The trace and message id of each record about to be published, when
    /// spans are exported.
    fn taken(&self, outgoing: &[Outgoing]) -> Vec<(String, String, std::time::SystemTime)> {
        if self.spans.is_none() {
            return Vec::new();
        }
        let now = std::time::SystemTime::now();
        outgoing
            .iter()
            .map(|o| {
                let get = |name| {
                    o.headers
                        .get(name)
                        .map_or_else(String::new, |v| v.as_str().to_owned())
                };
                (get(headers::TRACE), get(headers::MSG_ID), now)
            })
            .collect()
    }

    /// Record the published records' first hop as spans.
    fn traced(&self, taken: &[(String, String, std::time::SystemTime)]) {
        let Some(spans) = &self.spans else { return };
        let plugin = self.hop.split_once('@').map_or("", |(_, v)| v);
        for (trace, record, start) in taken {
            spans.hop(&crate::observe::otel::HopSpan {
                trace,
                connector: &self.name,
                kind: "source",
                plugin,
                record,
                outcome: "received",
                start: *start,
            });
        }
    }

    /// A record as it goes on the bus, with its identity and lineage, or why
    /// it cannot go.
    fn prepare(
        &self,
        index: usize,
        mut record: PluginRecord,
        origin: &str,
        message: Option<&str>,
    ) -> Result<Outgoing, Box<Refused>> {
        let key = if record.key.is_empty() {
            // Without a key, a record is known by the message it came in and
            // its place there.
            format!("{}@{index}", message.unwrap_or_default())
        } else {
            record.key.clone()
        };
        // Two facilities' senders may share names and numbering: at an edge
        // the facility is part of where a record came from.
        let origin = match &self.facility {
            Some(facility) => std::borrow::Cow::Owned(format!("{facility}/{origin}")),
            None => std::borrow::Cow::Borrowed(origin),
        };
        let origin = origin.as_ref();
        let id = identity::of(origin, &key, &record.payload);
        if !record.key.is_empty() && self.collisions.reused(&key, &id) {
            self.metrics.key_collision(&self.name);
            tracing::warn!(connector = %self.name, key = %key, origin, "A source key came back with different content; both are kept.");
        }
        let refuse = |reason: String, record: PluginRecord| {
            Box::new(Refused {
                index,
                identity: id.clone(),
                reason,
                record,
            })
        };
        if let Err(violation) = self.contracts.check(&mut record) {
            return Err(refuse(violation.to_string(), record));
        }
        let subject = match subject(&self.to, record.topic.as_deref()) {
            Ok(subject) => subject,
            Err(reason) => return Err(refuse(reason, record)),
        };
        let lineage = Lineage::origin(&self.name, &id, self.facility.as_deref());
        let headers = lineage.output_headers(&self.name, &self.hop, 0, &record);
        let max = self.publisher.max_payload();
        let size = record.payload.len() + header_bytes(&headers);
        if size > max {
            return Err(refuse(
                format!(
                    "is {size} bytes with its headers, more than the bus's maximum message size ({max})"
                ),
                record,
            ));
        }
        Ok(Outgoing {
            subject,
            headers,
            payload: record.payload.into(),
        })
    }

    /// Store a record that could not be published on the connector's
    /// dead-letter subject, with why.
    async fn dead_letter(&self, refused: Refused) -> Result<(), String> {
        let reason = redact(
            &self.pool.context().secrets,
            &format!("record {} {}", refused.index, refused.reason),
        );
        let mut h = HeaderMap::new();
        let id = headers::output_id(&self.name, &format!("dlq:{}", refused.identity), 0);
        h.insert(headers::MSG_ID, id.as_str());
        h.insert(headers::IDENTITY, refused.identity.as_str());
        h.insert(headers::ERROR, header_value(&reason).as_str());
        h.insert(headers::DELIVERIES, "1");
        h.insert(headers::ORIGINAL_SUBJECT, &*self.to);
        h.insert(headers::CONNECTOR, self.name.as_str());
        if !refused.record.key.is_empty() {
            h.insert(headers::KEY, header_value(&refused.record.key).as_str());
        }
        dead_letters::write(
            &self.publisher.js,
            &self.delivery.dlq,
            h,
            refused.record.payload.into(),
        )
        .await
        .map_err(|e| format!("cannot dead-letter {reason}: {e}"))?;
        self.metrics.dead_lettered(&self.name);
        tracing::warn!(connector = %self.name, record = %refused.identity, %reason, "Record dead-lettered; the rest of the poll goes on.");
        Ok(())
    }
}

/// Bytes the headers take on the wire, near enough to check a size limit.
pub(super) fn header_bytes(headers: &HeaderMap) -> usize {
    12 + headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|v| name.len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum::<usize>()
}

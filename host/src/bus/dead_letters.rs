//! Dead letters as an operator handles them: read a connector's, and replay
//! them to the connector that dead-lettered them once the cause is fixed.
//!
//! A replayed record goes back to the subject it was consumed from with its
//! original identity (`Plexus-Identity`), so its outputs get the ids they would
//! have had and a sink sees the same idempotency key: replaying a record whose
//! effect did land after all (a sink that timed out but applied it) changes
//! nothing downstream. `Plexus-Replay-For` keeps every other consumer of that
//! subject from processing it a second time. The dead letter is deleted only
//! once the replayed record is stored.
//!
//! A record too large to carry its dead-letter headers within the bus's
//! message size keeps its body in the object store
//! [`BODIES`] and the dead letter names it in `Plexus-Body`; replaying
//! reads it back, so nothing is lost for being near the limit.

use anyhow::{Context as _, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::context::GetStreamByNameErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self, message::PublishMessage};

use super::headers;

/// The object store holding the bodies of dead letters too large to carry them.
pub const BODIES: &str = "plexus-dead-letter-bodies";
/// Its size limit.
pub const BODIES_MAX_BYTES: i64 = 1 << 30;
/// How long it keeps a body.
pub const BODIES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Store a dead letter on `subject` and wait until it is stored. A body that
/// does not fit beside the headers goes to [`BODIES`] under the dead
/// letter's id, and the dead letter carries its name instead.
pub async fn write(
    js: &jetstream::Context,
    subject: &str,
    mut headers: HeaderMap,
    payload: bytes::Bytes,
) -> anyhow::Result<()> {
    use async_nats::jetstream::context::PublishErrorKind;
    let publish = PublishMessage::build()
        .payload(payload.clone())
        .headers(headers.clone());
    match js.send_publish(subject.to_owned(), publish).await {
        Ok(ack) => {
            ack.await
                .with_context(|| format!("{subject} did not store the dead letter"))?;
            return Ok(());
        }
        Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {}
        Err(e) => return Err(anyhow::anyhow!("cannot publish to {subject}: {e}")),
    }
    let name = headers.get(headers::MSG_ID).map_or_else(
        || format!("body-{}", headers::trace_id(subject)),
        |id| id.as_str().to_owned(),
    );
    let store = bodies(js).await?;
    store
        .put(name.as_str(), &mut payload.as_ref())
        .await
        .with_context(|| format!("cannot keep the dead letter's body in {BODIES}"))?;
    headers.insert(headers::BODY, name.as_str());
    let publish = PublishMessage::build()
        .payload(bytes::Bytes::new())
        .headers(headers);
    js.send_publish(subject.to_owned(), publish)
        .await
        .with_context(|| format!("cannot publish to {subject}"))?
        .await
        .with_context(|| format!("{subject} did not store the dead letter"))?;
    Ok(())
}

async fn bodies(js: &jetstream::Context) -> anyhow::Result<jetstream::object_store::ObjectStore> {
    match js.get_object_store(BODIES).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: BODIES.to_owned(),
                description: Some("Bodies of dead letters too large to carry them".into()),
                // Like the streams the host creates: bounded, and kept a while.
                max_bytes: BODIES_MAX_BYTES,
                max_age: BODIES_MAX_AGE,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the object store {BODIES}")),
    }
}

/// One dead-lettered record.
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: String,
    /// The connector that dead-lettered it.
    pub connector: String,
    /// The record's identity (empty for dead letters written before it was kept).
    pub identity: String,
    /// Why.
    pub error: String,
    /// How many times it had been delivered.
    pub deliveries: String,
    /// Where it was consumed from, and where a replay sends it.
    pub original_subject: String,
    message: StreamMessage,
}

impl DeadLetter {
    fn of(message: StreamMessage) -> DeadLetter {
        let get = |name| {
            message
                .headers
                .get(name)
                .map_or_else(String::new, |v| v.as_str().to_owned())
        };
        DeadLetter {
            sequence: message.sequence,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::from(message.time))
                .to_string(),
            connector: get(headers::CONNECTOR),
            identity: get(headers::IDENTITY),
            error: get(headers::ERROR),
            deliveries: get(headers::DELIVERIES),
            original_subject: get(headers::ORIGINAL_SUBJECT),
            message,
        }
    }
}

/// The dead letters on one subject.
pub struct DeadLetters {
    js: jetstream::Context,
    /// The stream capturing the subject, with its name.
    stream: Option<(Stream<()>, String)>,
    subject: String,
}

impl DeadLetters {
    /// The dead letters published to `subject`; none if no stream captures it.
    pub async fn open(js: &jetstream::Context, subject: &str) -> anyhow::Result<DeadLetters> {
        let stream = match js.stream_by_subject(subject).await {
            Ok(name) => Some((
                js.get_stream_no_info(&name)
                    .await
                    .with_context(|| format!("cannot open stream {name}"))?,
                name,
            )),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => None,
            Err(e) => bail!("cannot look up the stream for {subject}: {e}"),
        };
        Ok(DeadLetters {
            js: js.clone(),
            stream,
            subject: subject.to_owned(),
        })
    }

    /// Every dead letter `connector` wrote here, oldest first.
    pub async fn list(&self, connector: &str) -> anyhow::Result<Vec<DeadLetter>> {
        let Some((stream, _)) = &self.stream else {
            return Ok(Vec::new());
        };
        let mut letters = Vec::new();
        let mut next = 1;
        loop {
            let found = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(self.subject.clone())
                .send()
                .await;
            let message = match found {
                Ok(message) => message,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
                Err(e) => bail!("cannot read the dead letters on {}: {e}", self.subject),
            };
            next = message.sequence + 1;
            let letter = DeadLetter::of(message);
            if letter.connector == connector {
                letters.push(letter);
            }
        }
        Ok(letters)
    }

    /// Send `letter` back to its original subject for its connector alone, and
    /// delete it once the record is stored.
    pub async fn replay(&self, letter: &DeadLetter) -> anyhow::Result<()> {
        let Some((stream, stream_name)) = &self.stream else {
            bail!("no stream holds {}", self.subject);
        };
        if letter.original_subject.is_empty() {
            bail!(
                "dead letter {} has no {} header; cannot tell where it came from",
                letter.sequence,
                headers::ORIGINAL_SUBJECT
            );
        }
        let payload = match letter.message.headers.get(headers::BODY) {
            None => letter.message.payload.clone(),
            Some(name) => {
                use tokio::io::AsyncReadExt as _;
                let mut object = bodies(&self.js)
                    .await?
                    .get(name.as_str())
                    .await
                    .with_context(|| {
                        format!(
                            "cannot read the body {name} of dead letter {}",
                            letter.sequence
                        )
                    })?;
                let mut body = Vec::new();
                object.read_to_end(&mut body).await?;
                body.into()
            }
        };
        let publish = PublishMessage::build()
            .payload(payload)
            .headers(replay_headers(letter, stream_name));
        let stored = self
            .js
            .send_publish(letter.original_subject.clone(), publish)
            .await
            .with_context(|| format!("cannot publish to {}", letter.original_subject))?;
        stored.await.with_context(|| {
            format!(
                "{} did not store the replayed record; is a stream still capturing it?",
                letter.original_subject
            )
        })?;
        stream
            .delete_message(letter.sequence)
            .await
            .with_context(|| {
                format!(
                    "replayed dead letter {} but could not delete it; replaying it again is harmless",
                    letter.sequence
                )
            })?;
        Ok(())
    }
}

/// The original record's headers, without the dead-letter ones, with an id of
/// its own (stable per dead letter, so a replay retried after a crash is
/// deduplicated) and the identity and target connector of the replay.
fn replay_headers(letter: &DeadLetter, stream: &str) -> HeaderMap {
    let mut h = headers::kept(Some(&letter.message.headers), |name| {
        let dead_letter_only = [
            headers::MSG_ID,
            headers::ERROR,
            headers::DELIVERIES,
            headers::ORIGINAL_SUBJECT,
            headers::CONNECTOR,
            headers::REPLAY_FOR,
            headers::BODY,
        ]
        .iter()
        .any(|own| own.eq_ignore_ascii_case(name));
        let expectation = name.to_ascii_lowercase().starts_with("nats-expected-");
        !dead_letter_only && !expectation
    });
    let id = headers::output_id(
        &letter.connector,
        &format!("replay:{stream}:{}", letter.sequence),
        0,
    );
    h.insert(headers::MSG_ID, id.as_str());
    h.insert(headers::REPLAY_FOR, letter.connector.as_str());
    h
}

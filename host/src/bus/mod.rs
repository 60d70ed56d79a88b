//! The NATS JetStream side of the host: connecting, streams, consumers,
//! publishing with idempotency ids, and dead letters (`dead_letters.rs`:
//! listing and replaying them).

pub mod dead_letters;
pub mod embedded;
pub mod headers;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::ConnectorSpec;

/// How long JetStream remembers a `Nats-Msg-Id`. A record re-published within
/// this window after a crash is dropped as a duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The durable consumer of connector `name`.
pub fn consumer_name(name: &str) -> String {
    format!("plexus-{name}")
}

/// A connection to the bus.
#[derive(Clone)]
pub struct Bus {
    /// Core NATS client.
    pub client: async_nats::Client,
    /// JetStream context on it.
    pub js: jetstream::Context,
}

impl Bus {
    /// Connect to `url`; the client reconnects by itself after losing the server.
    pub async fn connect(url: &str) -> anyhow::Result<Bus> {
        let client = async_nats::ConnectOptions::new()
            .name("plexus")
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to the bus at {url}"))?;
        let js = jetstream::new(client.clone());
        Ok(Bus { client, js })
    }

    /// Make sure some stream captures `subject`, creating one if none does.
    /// With `children`, the new stream also captures `<subject>.>` (where
    /// transforms publish routed records). Returns the stream's name.
    pub async fn ensure_stream(&self, subject: &str, children: bool) -> anyhow::Result<String> {
        match self.js.stream_by_subject(subject).await {
            Ok(name) => return Ok(name),
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot look up the stream for {subject}: {e}"
                ));
            }
        }
        let mut subjects = vec![subject.to_owned()];
        if children && !subject.ends_with('>') {
            subjects.push(format!("{subject}.>"));
        }
        let name = stream_name(subject);
        self.js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create stream {name} for {subject}"))?;
        Ok(name)
    }

    /// The durable pull consumer of a transform or sink, created or updated to
    /// match its spec. Redelivery limits are enforced by the host (so the last
    /// attempt can be dead-lettered), not by the server.
    pub async fn durable_consumer(
        &self,
        spec: &ConnectorSpec,
        from: &str,
    ) -> anyhow::Result<consumer::PullConsumer> {
        let stream = self.ensure_stream(from, false).await?;
        let durable = consumer_name(&spec.name);
        self.js
            .create_consumer_on_stream(
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    description: Some(format!("Plexus connector {}", spec.name)),
                    filter_subject: from.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: spec.delivery.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 4096,
                    ..Default::default()
                },
                &stream,
            )
            .await
            .with_context(|| format!("cannot create consumer {durable} on stream {stream}"))
    }

    /// The host's bucket of source cursors, one key per connector.
    pub async fn cursor_bucket(&self) -> anyhow::Result<kv::Store> {
        self.bucket("plexus-cursors").await
    }

    /// The connector's own kv bucket, created on first use.
    pub async fn kv_bucket(&self, connector: &str) -> anyhow::Result<kv::Store> {
        self.bucket(&crate::capability::kv_bucket_name(connector))
            .await
    }

    async fn bucket(&self, bucket: &str) -> anyhow::Result<kv::Store> {
        match self.js.get_key_value(bucket).await {
            Ok(store) => Ok(store),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create kv bucket {bucket}")),
        }
    }
}

/// A stream name for a subject: names cannot hold `.`, `*`, `>` or spaces.
fn stream_name(subject: &str) -> String {
    let body: String = subject
        .split('.')
        .map(|t| match t {
            "*" => "any".to_owned(),
            ">" => "all".to_owned(),
            t => t.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("_");
    format!("PLEXUS_{body}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_names_avoid_reserved_characters() {
        assert_eq!(
            super::stream_name("raw.st-marys.>"),
            "PLEXUS_raw_st-marys_all"
        );
        assert_eq!(super::stream_name("a.*.b"), "PLEXUS_a_any_b");
    }
}

//! The NATS JetStream side of the host: connecting (with credentials and
//! TLS), streams and kv buckets with limits, consumers, and dead letters
//! (`dead_letters.rs`: writing, listing and replaying them).

pub mod dead_letters;
pub mod embedded;
pub mod headers;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, kv, stream};

use crate::config::{BusConfig, ConnectorSpec};

/// The durable consumer of connector `name`.
pub fn consumer_name(name: &str) -> String {
    format!("plexus-{name}")
}

/// How the host proves who it is to the bus.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A NATS credentials file (JWT and nkey seed).
    Creds(std::path::PathBuf),
    /// An nkey seed.
    Nkey(String),
    /// User and password.
    UserPassword(String, String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Creds(_) => "creds file",
            Auth::Nkey(_) => "nkey",
            Auth::UserPassword(..) => "user and password",
        })
    }
}

impl Auth {
    /// The credentials `[bus]` names, with secrets resolved from the
    /// environment or `secrets_file`.
    pub fn from_config(bus: &BusConfig, secrets_file: Option<&Path>) -> anyhow::Result<Auth> {
        let secret = |name: &str, key: &str| -> anyhow::Result<String> {
            crate::capability::resolve_secrets(&[name.to_owned()], secrets_file)?
                .remove(name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "[bus].{key} names the secret {name:?}, which has no value (set PLEXUS_SECRET_{} or put it in [host].secrets_file)",
                        name.to_ascii_uppercase().replace('-', "_")
                    )
                })
        };
        Ok(match (&bus.creds, &bus.nkey, &bus.user, &bus.password) {
            (Some(creds), ..) => Auth::Creds(creds.clone()),
            (None, Some(nkey), ..) => Auth::Nkey(secret(nkey, "nkey")?),
            (None, None, Some(user), Some(password)) => {
                Auth::UserPassword(user.clone(), secret(password, "password")?)
            }
            _ => Auth::None,
        })
    }
}

/// What the host creates on the bus, and their limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// JetStream's duplicate window on created streams, and the least an
    /// existing stream the host publishes to must have.
    pub duplicate_window: Duration,
    /// Size limit of a created stream.
    pub stream_max_bytes: i64,
    /// Age limit of a created stream.
    pub stream_max_age: Duration,
    /// Size limit of a created kv bucket.
    pub bucket_max_bytes: i64,
    /// Copies a cluster keeps of what the host creates.
    pub replicas: usize,
}

impl Limits {
    /// The limits `[bus]` sets.
    pub fn of(bus: &BusConfig) -> Limits {
        Limits {
            duplicate_window: bus.duplicate_window,
            stream_max_bytes: i64::try_from(bus.stream_max_bytes).unwrap_or(i64::MAX),
            stream_max_age: bus.stream_max_age,
            bucket_max_bytes: i64::try_from(bus.bucket_max_bytes).unwrap_or(i64::MAX),
            replicas: bus.replicas,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::of(&BusConfig::default())
    }
}

/// A connection to the bus.
#[derive(Clone)]
pub struct Bus {
    /// Core NATS client.
    pub client: async_nats::Client,
    /// JetStream context on it.
    pub js: jetstream::Context,
    /// Limits of what the host creates.
    pub limits: Limits,
}

/// Run `attempt` until it succeeds or `patience` has passed, then return its
/// last error: for the first requests to a cluster that is still electing
/// its leaders, which time out rather than fail.
pub async fn patiently<T, F, Fut>(
    what: &str,
    patience: Duration,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut said = false;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
            Err(error) => {
                if !said {
                    tracing::info!(
                        error = format!("{error:#}"),
                        "Waiting for the bus to {what}."
                    );
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// `url` with any user name and password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://[redacted]@{}", &one[..scheme], &one[at + 1..])
            }
            (None, Some(at)) => format!("[redacted]@{}", &one[at + 1..]),
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `url` without `user:password@` in each of its servers, and the first
/// user and password found.
fn split_user_password(url: &str) -> (String, Option<(String, String)>) {
    let mut found = None;
    let servers: Vec<String> = url
        .split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &one[scheme + 3..at];
                if found.is_none() {
                    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    found = Some((user.to_owned(), password.to_owned()));
                }
                format!("{}{}", &one[..scheme + 3], &one[at + 1..])
            }
            _ => one.to_owned(),
        })
        .collect();
    (servers.join(","), found)
}

impl Bus {
    /// Connect to `url` with no credentials (but any in the URL) and default limits.
    pub async fn connect(url: &str) -> anyhow::Result<Bus> {
        Bus::connect_with(url, &Auth::None, None, Limits::default()).await
    }

    /// Connect to `url` as `auth`, over TLS when `tls` is set or the URL is
    /// `tls://`; the client reconnects by itself after losing the server.
    /// Errors never show a password, in the URL or elsewhere.
    pub async fn connect_with(
        url: &str,
        auth: &Auth,
        tls: Option<&crate::config::BusTls>,
        limits: Limits,
    ) -> anyhow::Result<Bus> {
        Bus::connect_patiently(url, auth, tls, limits, Duration::ZERO).await
    }

    /// [`Bus::connect_with`], trying again for up to `patience` while no
    /// server answers (a bus started alongside the host); refused
    /// credentials and TLS failures are reported at once.
    pub async fn connect_patiently(
        url: &str,
        auth: &Auth,
        tls: Option<&crate::config::BusTls>,
        limits: Limits,
        patience: Duration,
    ) -> anyhow::Result<Bus> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut said = false;
        let client = loop {
            match Bus::client(url, auth, tls).await {
                Ok(client) => break client,
                Err((kind, error))
                    if matches!(
                        kind,
                        Some(
                            async_nats::ConnectErrorKind::Io
                                | async_nats::ConnectErrorKind::TimedOut
                        )
                    ) && tokio::time::Instant::now() < deadline =>
                {
                    if !said {
                        tracing::warn!(error = format!("{error:#}"), "Waiting for the bus.");
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err((_, error)) => return Err(error),
            }
        };
        let js = jetstream::context::ContextBuilder::new()
            .max_ack_inflight(crate::connector::CLIENT_ACK_BUDGET)
            .build(client.clone());
        Ok(Bus { client, js, limits })
    }

    /// One attempt at a client; the failure's kind, if the client said one.
    async fn client(
        url: &str,
        auth: &Auth,
        tls: Option<&crate::config::BusTls>,
    ) -> Result<async_nats::Client, (Option<async_nats::ConnectErrorKind>, anyhow::Error)> {
        let shown = redact_url(url);
        // The client ignores a user and password in the URL; take them out
        // and hand them over the way it listens.
        let (url, from_url) = split_user_password(url);
        let url = url.as_str();
        let auth = match (auth, from_url) {
            (Auth::None, Some((user, password))) => &Auth::UserPassword(user, password),
            (auth, _) => auth,
        };
        let mut options = async_nats::ConnectOptions::new()
            .name("plexus")
            .connection_timeout(Duration::from_secs(10))
            // A request the server refuses (a permission the credentials do
            // not carry) otherwise shows only as a missing ack: say why.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(error) = event {
                    tracing::warn!(%error, "The bus refused a request.");
                }
            });
        options = match auth {
            Auth::None => options,
            Auth::Creds(file) => options
                .credentials_file(file)
                .await
                .with_context(|| format!("cannot read the bus credentials file {}", file.display()))
                .map_err(|e| (None, e))?,
            Auth::Nkey(seed) => options.nkey(seed.clone()),
            Auth::UserPassword(user, password) => {
                options.user_and_password(user.clone(), password.clone())
            }
        };
        if let Some(tls) = tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
        }
        // A cluster is given as its servers, comma-separated.
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        options.connect(servers).await.map_err(|e| {
            let kind = e.kind();
            let reason = match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation => format!(
                    "the server refused the host's credentials ({auth:?}): check [bus] and the secrets it names"
                ),
                async_nats::ConnectErrorKind::Tls => format!("TLS failed: {e}"),
                _ => e.to_string(),
            };
            // A password given in the URL must not come back in the reason.
            (
                Some(kind),
                anyhow::anyhow!(
                    "cannot connect to the bus at {shown}: {}",
                    redact_url(&reason).replace(url, &shown)
                ),
            )
        })
    }

    /// The same connection speaking to the JetStream of `domain`: an edge
    /// host reaches the hub's buckets and streams over its leaf node this way.
    pub fn in_domain(&self, domain: &str) -> Bus {
        let js = jetstream::context::ContextBuilder::new()
            .max_ack_inflight(crate::connector::CLIENT_ACK_BUDGET)
            .domain(domain)
            .build(self.client.clone());
        Bus {
            client: self.client.clone(),
            js,
            limits: self.limits.clone(),
        }
    }

    /// Wait until JetStream answers (a cluster elects its leader in the
    /// first seconds); an error naming the last failure after `patience`.
    pub async fn wait_for_jetstream(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut said = false;
        loop {
            match self.js.query_account().await {
                Ok(_) => return Ok(()),
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    bail!("JetStream did not answer within {patience:?}: {error}")
                }
                Err(error) => {
                    if !said {
                        tracing::info!(%error, "Waiting for JetStream to answer.");
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Make sure some stream captures `subject`, creating one if none does.
    /// With `children`, the new stream also captures `<subject>.>` (where
    /// transforms publish routed records). An existing stream the host
    /// publishes to must remember message ids at least as long as
    /// `[bus].duplicate_window`: the host's own streams are raised to it,
    /// others refused. Returns the stream's name.
    pub async fn ensure_stream(&self, subject: &str, children: bool) -> anyhow::Result<String> {
        match self.js.stream_by_subject(subject).await {
            Ok(name) => {
                self.check_window(&name).await?;
                return Ok(name);
            }
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => {}
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot look up the stream for {subject}: {e}"
                ));
            }
        }
        // At the hub, an edge's records arrive in a stream that captures
        // them under subjects of their own and stores them under theirs.
        if let Some(name) = self.forwarded_stream(subject).await? {
            return Ok(name);
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
                duplicate_window: self.limits.duplicate_window,
                max_bytes: self.limits.stream_max_bytes,
                max_age: self.limits.stream_max_age,
                // A full stream refuses new records (their senders retry)
                // rather than dropping old ones nobody has consumed.
                discard: stream::DiscardPolicy::New,
                num_replicas: self.limits.replicas,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create stream {name} for {subject}"))?;
        Ok(name)
    }

    /// The stream an edge forwards `subject` into, at the hub (see
    /// [`crate::edge`]): it does not capture the subject itself, so it is
    /// found by the name an edge gives it (that of its own stream for the
    /// subject), and taken only if it captures forwarded subjects alone and
    /// says it holds the subject. Anyone able to create streams could write
    /// metadata; the name an edge derives from the subject is the only one
    /// looked at.
    async fn forwarded_stream(&self, subject: &str) -> anyhow::Result<Option<String>> {
        let name = stream_name(subject);
        let Ok(mut stream) = self.js.get_stream(&name).await else {
            return Ok(None);
        };
        let info = stream
            .info()
            .await
            .with_context(|| format!("cannot read stream {name}"))?;
        let forwarded = info
            .config
            .metadata
            .get(FORWARDED_FROM)
            .is_some_and(|domain| {
                let prefix = format!("{}.{domain}.", crate::edge::forward::SUBJECT_PREFIX);
                !info.config.subjects.is_empty()
                    && info.config.subjects.iter().all(|s| s.starts_with(&prefix))
                    && info.config.subject_transform.is_some()
            });
        let holds = info
            .config
            .metadata
            .get(FORWARDED_SUBJECTS)
            .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
            .unwrap_or_default()
            .iter()
            .any(|pattern| covers(pattern, subject));
        Ok((forwarded && holds).then_some(name))
    }

    async fn check_window(&self, name: &str) -> anyhow::Result<()> {
        let mut stream = self
            .js
            .get_stream(name)
            .await
            .with_context(|| format!("cannot read stream {name}"))?;
        let mut config = stream
            .info()
            .await
            .with_context(|| format!("cannot read stream {name}"))?
            .config
            .clone();
        let wanted = self.limits.duplicate_window;
        if config.duplicate_window >= wanted {
            return Ok(());
        }
        if !name.starts_with("PLEXUS_") {
            bail!(
                "stream {name} remembers message ids for {}, less than [bus].duplicate_window ({}): a record redelivered after that could be stored twice. Raise the stream's duplicate window or lower the setting",
                humantime::format_duration(config.duplicate_window),
                humantime::format_duration(wanted)
            );
        }
        config.duplicate_window = wanted;
        self.js
            .update_stream(config)
            .await
            .with_context(|| format!("cannot raise the duplicate window of stream {name}"))?;
        Ok(())
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
                    max_bytes: self.limits.bucket_max_bytes,
                    num_replicas: self.limits.replicas,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create kv bucket {bucket}")),
        }
    }
}

/// Stream metadata at the hub: the subjects (JSON list) of the edge stream
/// whose records a stream takes (see [`crate::edge`]).
pub const FORWARDED_SUBJECTS: &str = "plexus-forwarded-subjects";
/// Stream metadata at the hub: the JetStream domain of the edge whose
/// records a stream takes.
pub const FORWARDED_FROM: &str = "plexus-forwarded-from";

/// Whether a consumer filtering `filter` reads only what `pattern` captures.
fn covers(pattern: &str, filter: &str) -> bool {
    pattern == filter
        || (!filter.split('.').any(|t| t == "*" || t == ">")
            && crate::config::subject_matches(pattern, filter))
}

/// A stream name for a subject: names cannot hold `.`, `*`, `>` or spaces,
/// so those become `_`, `any` and `all`; a digest of the subject keeps two
/// subjects that read alike (`feed.x`, `feed_x`) on streams of their own.
fn stream_name(subject: &str) -> String {
    use sha2::Digest as _;
    let body: String = subject
        .split('.')
        .map(|t| match t {
            "*" => "any".to_owned(),
            ">" => "all".to_owned(),
            t => t.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("_");
    let digest = sha2::Sha256::digest(subject.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("PLEXUS_{body}_{tag}")
}

/// Hand the most recent `most` records of stream `name` (those under
/// `filter`, or all), oldest first, to `each`; only their headers when
/// `headers_only`. For the views that read the bus back (lineage, the
/// dashboard's exceptions): an ephemeral consumer that acks nothing.
pub async fn read_recent(
    js: &jetstream::Context,
    name: &str,
    filter: Option<String>,
    most: u64,
    headers_only: bool,
    mut each: impl FnMut(jetstream::Message),
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    /// How long to wait for the next batch before giving up on the stream.
    const PATIENCE: Duration = Duration::from_secs(5);
    let mut stream = js.get_stream(name).await?;
    let last = stream.info().await?.state.last_sequence;
    if last == 0 {
        return Ok(());
    }
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: filter.unwrap_or_default(),
            ack_policy: consumer::AckPolicy::None,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last.saturating_sub(most).max(1),
            },
            headers_only,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await?;
    let mut pending = reader.cached_info().num_pending;
    while pending > 0 {
        let mut batch = reader
            .fetch()
            .max_messages(usize::try_from(pending.min(1000)).unwrap_or(1000))
            .expires(PATIENCE)
            .messages()
            .await?;
        let mut got = 0;
        while let Some(msg) = batch.next().await {
            each(msg.map_err(|e| anyhow::anyhow!("{e}"))?);
            got += 1;
        }
        if got == 0 {
            break; // the rest aged out or was purged meanwhile
        }
        pending = pending.saturating_sub(got);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_avoid_reserved_characters_and_each_other() {
        let name = stream_name("raw.st-marys.>");
        assert!(name.starts_with("PLEXUS_raw_st-marys_all_"), "{name}");
        assert!(stream_name("a.*.b").starts_with("PLEXUS_a_any_b_"));
        assert_ne!(stream_name("feed.x"), stream_name("feed_x"));
        assert!(
            stream_name("feed.x")
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }

    #[test]
    fn credentials_in_a_url_are_taken_out() {
        assert_eq!(
            split_user_password("nats://plexus:pw@127.0.0.1:4222"),
            (
                "nats://127.0.0.1:4222".to_owned(),
                Some(("plexus".to_owned(), "pw".to_owned()))
            )
        );
        assert_eq!(split_user_password("nats://h:1").1, None);
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("nats://plexus:s3cret@10.0.0.1:4222"),
            "nats://[redacted]@10.0.0.1:4222"
        );
        assert_eq!(
            redact_url("nats://a:b@h1:4222,tls://h2:4222"),
            "nats://[redacted]@h1:4222,tls://h2:4222"
        );
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }
}

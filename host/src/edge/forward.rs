//! Store-and-forward from an edge to the hub, done by nats-server itself.
//!
//! For each local stream the edge's connectors publish to, the edge keeps
//! a durable consumer here (`plexus_forward`: push, flow control, acked by
//! the hub's flow-control replies, never given up) and, at the hub, a
//! stream of the same name with no subjects of its own that sources through
//! that consumer. Why the hub sources rather than the edge pushing: the
//! sourcing server stores each record before it acknowledges it, resumes
//! from the consumer's ack floor after any outage or restart on either
//! side, and keeps order; the consumer's pending count here is exactly what
//! the hub has not stored yet, readable while the link is down. A record is
//! never deleted here by forwarding; the stream's own limits apply.
//!
//! A task of its own checks the link every couple of seconds, sets up what
//! is missing (the hub's side once the link is up) and reports the state
//! for the heartbeat, `/metrics` and `plexus status`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{consumer, stream};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::{Bus, FORWARDED_SUBJECTS};
use crate::config::EdgeConfig;
use crate::observe::Metrics;

/// The consumer the hub sources through. The `_` keeps it apart from the
/// connectors' consumers (`plexus-<name>`, names being `[a-z0-9-]`).
pub const CONSUMER: &str = "plexus_forward";
/// How often the link is checked and the count refreshed.
const EVERY: Duration = Duration::from_secs(2);
/// The longest one call to the hub may take.
const CALL: Duration = Duration::from_secs(3);
/// The longest one call to this site's own server may take: it is never
/// cut off, only busy, and a count given up on would go stale.
const LOCAL_CALL: Duration = Duration::from_secs(15);
/// How often the hub's side of a stream is checked again.
const RECHECK: Duration = Duration::from_secs(30);
/// Messages in flight to the hub before it must acknowledge some.
const IN_FLIGHT: i64 = 1_000;

/// What the edge reports about forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardState {
    /// The facility stamped on records (`Plexus-Facility`).
    pub facility: String,
    /// This site's JetStream domain.
    pub domain: String,
    /// Whether the hub answered the last check.
    pub link_up: bool,
    /// When the link was last seen to change (RFC 3339).
    pub since: String,
    /// Records stored here that the hub has not stored yet.
    pub waiting: u64,
    /// Per forwarded stream.
    pub streams: BTreeMap<String, StreamState>,
    /// The subjects the last pass set up.
    #[serde(skip)]
    handled: BTreeSet<String>,
}

/// One forwarded stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Its subjects.
    pub subjects: Vec<String>,
    /// Records not yet stored at the hub.
    pub waiting: u64,
    /// Why it is not forwarded, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The forwarding task of an edge host.
pub struct Forwarder {
    subjects: watch::Sender<BTreeSet<String>>,
    state: watch::Receiver<ForwardState>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Start forwarding what `local` stores to the hub reached through `hub`.
    pub fn start(local: Bus, hub: Bus, edge: &EdgeConfig, metrics: Arc<Metrics>) -> Forwarder {
        let initial = ForwardState {
            facility: edge.facility.clone(),
            domain: edge.domain.clone(),
            since: now(),
            ..ForwardState::default()
        };
        let (subjects, asked) = watch::channel(BTreeSet::new());
        let (state_tx, state) = watch::channel(initial);
        let (stop, stopped) = watch::channel(false);
        let worker = Worker {
            local,
            hub,
            api: format!("$JS.{}.API", edge.domain),
            deliver_prefix: format!("plexus.forward.{}", edge.domain),
            metrics,
            checked: HashMap::new(),
            problems: HashMap::new(),
        };
        let task = tokio::spawn(worker.run(asked, state_tx, stopped));
        Forwarder {
            subjects,
            state,
            stop,
            task,
        }
    }

    /// Forward the streams that capture these subjects (what the running
    /// connectors publish to).
    pub fn forward(&self, subjects: BTreeSet<String>) {
        self.subjects.send_if_modified(|current| {
            let changed = *current != subjects;
            *current = subjects;
            changed
        });
    }

    /// Forward these subjects and wait (a while) until their streams are
    /// set up here and, if the hub answers, there: called before the
    /// connectors that publish to them start, so that no record published
    /// here can reach a stream at the hub another way first.
    pub async fn settle(&self, subjects: BTreeSet<String>) {
        let mut state = self.state.clone();
        self.forward(subjects.clone());
        let settled = state.wait_for(|s| s.handled.is_superset(&subjects));
        if tokio::time::timeout(CALL * 4, settled).await.is_err() {
            tracing::warn!(
                "Forwarding is not set up yet; the connectors start anyway and it follows."
            );
        }
    }

    /// The state now.
    pub fn state(&self) -> ForwardState {
        self.state.borrow().clone()
    }

    /// A receiver that wakes when the state changes.
    pub fn watch(&self) -> watch::Receiver<ForwardState> {
        self.state.clone()
    }

    /// Stop the task (forwarding itself goes on in the servers).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(CALL, self.task).await;
    }
}

struct Worker {
    local: Bus,
    hub: Bus,
    /// The hub reaches this site's JetStream under this prefix.
    api: String,
    deliver_prefix: String,
    metrics: Arc<Metrics>,
    /// Streams whose hub side was last found right, and when.
    checked: HashMap<String, tokio::time::Instant>,
    /// Streams the hub's side of which cannot be set up, and why.
    problems: HashMap<String, String>,
}

impl Worker {
    async fn run(
        mut self,
        mut asked: watch::Receiver<BTreeSet<String>>,
        state: watch::Sender<ForwardState>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = tick.tick() => {}
                changed = asked.changed() => if changed.is_err() { break },
            }
            let subjects = asked.borrow_and_update().clone();
            let before = state.borrow().clone();
            let after = self.pass(&subjects, before.clone()).await;
            self.metrics.set_forwarding(after.waiting, after.link_up);
            if after.link_up != before.link_up {
                if after.link_up {
                    tracing::info!("The hub answers again; forwarding resumes.");
                } else {
                    tracing::warn!(
                        waiting = after.waiting,
                        "The hub does not answer; records are kept here until it does."
                    );
                }
            }
            state.send_replace(after);
        }
    }

    async fn pass(&mut self, subjects: &BTreeSet<String>, mut state: ForwardState) -> ForwardState {
        let link_up = matches!(
            tokio::time::timeout(CALL, self.hub.js.query_account()).await,
            Ok(Ok(_))
        );
        if link_up != state.link_up {
            state.link_up = link_up;
            state.since = now();
            // What the hub had may have changed while it was away.
            self.checked.clear();
        }
        let mut streams = BTreeMap::new();
        let mut handled = BTreeSet::new();
        for subject in subjects {
            // Made here, as its connector would, so that forwarding is set
            // up before the first record is published.
            let Ok(Ok(name)) =
                tokio::time::timeout(LOCAL_CALL, self.local.ensure_stream(subject, true)).await
            else {
                // The local bus is busy: the next pass tries again.
                continue;
            };
            handled.insert(subject.clone());
            if streams.contains_key(&name) {
                continue;
            }
            let stream = match self.local_side(&name).await {
                Ok(stream) => stream,
                Err(error) => StreamState {
                    problem: Some(format!("{error:#}")),
                    ..state.streams.get(&name).cloned().unwrap_or_default()
                },
            };
            streams.insert(name, stream);
        }
        if link_up {
            let now = tokio::time::Instant::now();
            for (name, stream) in &mut streams {
                if stream.problem.is_some()
                    || self
                        .checked
                        .get(name)
                        .is_some_and(|at| now.duration_since(*at) < RECHECK)
                {
                    continue;
                }
                match self.hub_side(name, &stream.subjects).await {
                    Ok(()) => {
                        self.checked.insert(name.clone(), now);
                        if self.problems.remove(name).is_some() {
                            tracing::info!(stream = %name, "Forwarding to the hub set up.");
                        }
                    }
                    Err(error) => {
                        let reason = format!("{error:#}");
                        if self.problems.get(name) != Some(&reason) {
                            tracing::error!(stream = %name, %reason, "Cannot forward this stream to the hub.");
                        }
                        self.problems.insert(name.clone(), reason);
                    }
                }
            }
        }
        for (name, stream) in &mut streams {
            if stream.problem.is_none() {
                stream.problem = self.problems.get(name).cloned();
            }
        }
        state.waiting = streams.values().map(|s| s.waiting).sum();
        state.streams = streams;
        state.handled = handled;
        state
    }

    /// The local stream's subjects and the forwarding consumer's backlog,
    /// creating the consumer if it is missing.
    async fn local_side(&self, name: &str) -> anyhow::Result<StreamState> {
        let mut stream = bounded_local(self.local.js.get_stream(name))
            .await?
            .with_context(|| format!("cannot read stream {name}"))?;
        let subjects = bounded_local(stream.info())
            .await?
            .with_context(|| format!("cannot read stream {name}"))?
            .config
            .subjects
            .clone();
        let info = match bounded_local(stream.consumer_info(CONSUMER)).await? {
            Ok(info) => info,
            Err(_) => {
                let created: consumer::Consumer<consumer::push::Config> = bounded_local(
                    stream.get_or_create_consumer(
                        CONSUMER,
                        consumer::push::Config {
                            durable_name: Some(CONSUMER.to_owned()),
                            description: Some("Plexus: forwards to the hub".into()),
                            deliver_subject: self.deliver_subject(name),
                            deliver_policy: consumer::DeliverPolicy::All,
                            ack_policy: consumer::AckPolicy::FlowControl,
                            max_deliver: -1,
                            max_ack_pending: IN_FLIGHT,
                            flow_control: true,
                            idle_heartbeat: Duration::from_secs(1),
                            ..Default::default()
                        },
                    ),
                )
                .await?
                .with_context(|| format!("cannot create consumer {CONSUMER} on stream {name}"))?;
                tracing::info!(stream = %name, "Forwarding consumer created.");
                created.cached_info().clone()
            }
        };
        Ok(StreamState {
            subjects,
            waiting: info.num_pending + info.num_ack_pending as u64,
            problem: None,
        })
    }

    fn deliver_subject(&self, name: &str) -> String {
        format!("{}.{name}", self.deliver_prefix)
    }

    /// At the hub: a stream named `name` that captures nothing itself and
    /// sources this site's stream through [`CONSUMER`].
    async fn hub_side(&self, name: &str, subjects: &[String]) -> anyhow::Result<()> {
        let ours = stream::Source {
            name: name.to_owned(),
            external: Some(stream::External {
                api_prefix: self.api.clone(),
                delivery_prefix: None,
            }),
            consumer: Some(stream::StreamConsumerSource::new(
                CONSUMER,
                self.deliver_subject(name),
            )),
            ..Default::default()
        };
        let is_ours = |s: &stream::Source| {
            s.name == name && s.external.as_ref().map(|e| e.api_prefix.as_str()) == Some(&self.api)
        };
        let existing = match bounded(self.hub.js.get_stream(name)).await? {
            Ok(mut stream) => Some(
                bounded(stream.info())
                    .await?
                    .with_context(|| format!("cannot read the hub's stream {name}"))?
                    .clone(),
            ),
            Err(e)
                if matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                None
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot look up the hub's stream {name}: {e}"
                ));
            }
        };
        match existing {
            None => {
                // A hub stream capturing these subjects would store what is
                // published here twice: once over the leaf link, once sourced.
                for subject in subjects {
                    if let Ok(Ok(other)) =
                        tokio::time::timeout(CALL, self.hub.js.stream_by_subject(subject)).await
                    {
                        anyhow::bail!(
                            "the hub's stream {other} captures {subject} itself, so records published here would reach it twice; publish under a subject of this facility's own (e.g. raw.<facility>.…)"
                        );
                    }
                }
                let replicas = self.hub_replicas().await;
                let limits = &self.local.limits;
                let config = stream::Config {
                    name: name.to_owned(),
                    description: Some("Plexus: records forwarded from edge hosts".into()),
                    subjects: Vec::new(),
                    sources: Some(vec![ours]),
                    storage: stream::StorageType::File,
                    duplicate_window: limits.duplicate_window,
                    max_bytes: limits.stream_max_bytes,
                    max_age: limits.stream_max_age,
                    discard: stream::DiscardPolicy::New,
                    num_replicas: replicas,
                    metadata: HashMap::from([(
                        FORWARDED_SUBJECTS.to_owned(),
                        serde_json::to_string(subjects).unwrap_or_default(),
                    )]),
                    ..Default::default()
                };
                bounded(self.hub.js.create_stream(config))
                    .await?
                    .with_context(|| format!("cannot create the hub's stream {name}"))?;
                tracing::info!(stream = %name, "Hub stream created; it sources this site's stream.");
                Ok(())
            }
            Some(info) => {
                let mut config = info.config.clone();
                let sourced = config.sources.as_ref().is_some_and(|s| !s.is_empty());
                if !config.subjects.is_empty() {
                    // A stream a hub connector made for these subjects before
                    // any record arrived: taken over. One with records is
                    // another publisher's and left alone.
                    if sourced || info.state.last_sequence > 0 || !name.starts_with("PLEXUS_") {
                        anyhow::bail!(
                            "the hub's stream {name} stores {} itself ({} records); it cannot also take this facility's records. Publish here under a subject of this facility's own",
                            config.subjects.join(", "),
                            info.state.messages
                        );
                    }
                    config.subjects = Vec::new();
                }
                let mut known: Vec<String> = config
                    .metadata
                    .get(FORWARDED_SUBJECTS)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_default();
                let mut changed = info.config.subjects != config.subjects;
                for subject in subjects {
                    if !known.contains(subject) {
                        known.push(subject.clone());
                        changed = true;
                    }
                }
                let sources = config.sources.get_or_insert_with(Vec::new);
                if !sources.iter().any(is_ours) {
                    sources.push(ours);
                    changed = true;
                }
                if !changed {
                    return Ok(());
                }
                config.metadata.insert(
                    FORWARDED_SUBJECTS.to_owned(),
                    serde_json::to_string(&known).unwrap_or_default(),
                );
                bounded(self.hub.js.update_stream(config))
                    .await?
                    .with_context(|| format!("cannot update the hub's stream {name}"))?;
                tracing::info!(stream = %name, "Hub stream now sources this site's stream.");
                Ok(())
            }
        }
    }

    /// Copies the hub keeps of its control buckets: its streams for
    /// forwarded records get as many.
    async fn hub_replicas(&self) -> usize {
        let bucket = format!("KV_{}", crate::fleet::CONNECTORS);
        match bounded(self.hub.js.get_stream(&bucket)).await {
            Ok(Ok(mut stream)) => match bounded(stream.info()).await {
                Ok(Ok(info)) => info.config.num_replicas.max(1),
                _ => 1,
            },
            _ => 1,
        }
    }
}

/// One call, bounded by [`CALL`].
async fn bounded<T>(call: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(CALL, call)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {CALL:?}"))
}

/// One call to this site's server, bounded by [`LOCAL_CALL`].
async fn bounded_local<T>(call: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(LOCAL_CALL, call)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from this site's bus within {LOCAL_CALL:?}"))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

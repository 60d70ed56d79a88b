//! Store-and-forward from an edge to the hub: in order, exactly once.
//!
//! For each local stream the edge's connectors publish to, a pump here reads
//! it through a durable pull consumer (`plexus_forward`) and publishes every
//! record to the hub under `plexus.forward.<domain>.<subject>`. The hub's
//! stream of the same name captures those subjects and stores each record
//! back under `<subject>` (a subject transform), so hub connectors read it
//! as if it had been published there, while the edge's own publishes, on
//! `<subject>`, never reach the hub over the leaf link.
//!
//! - **Gap-free and in order.** Each publish expects the hub stream's last
//!   sequence (`Nats-Expected-Last-Sequence`), so the hub holds a prefix of
//!   what the pump sent, never a record after a missing one; the stream is
//!   this edge's alone.
//! - **Resumes exactly.** Each record carries its sequence here
//!   (`Plexus-Edge-Seq`). A pump starts every session (after an outage, a
//!   failed publish, a restart of either side) right after the record the
//!   hub holds last, or the consumer's ack floor if that is further on.
//! - **Counted here.** The consumer is acked only for what the hub stored,
//!   so its pending count is exactly the backlog, readable while the link is
//!   down. A record is never deleted here by forwarding; the stream's own
//!   limits apply.
//!
//! Why not nats-server's sourcing: ARCHITECTURE.md, "Edge hosts". A task of
//! its own checks the link every couple of seconds, sets up the local side,
//! starts a pump per stream and reports the state for the heartbeat,
//! `/metrics` and `plexus status`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bus::{Bus, FORWARDED_FROM, FORWARDED_SUBJECTS, headers};
use crate::config::EdgeConfig;
use crate::observe::Metrics;

/// The consumer the pumps read through. The `_` keeps it apart from the
/// connectors' consumers (`plexus-<name>`, names being `[a-z0-9-]`).
pub const CONSUMER: &str = "plexus_forward";
/// What forwarded subjects start with at the hub: `plexus.forward.<domain>.<subject>`.
pub const SUBJECT_PREFIX: &str = "plexus.forward";
/// How often the link is checked and the count refreshed.
const EVERY: Duration = Duration::from_secs(2);
/// The longest one call to the hub may take.
const CALL: Duration = Duration::from_secs(3);
/// The longest the hub may take to confirm a batch it was sent.
const CONFIRM: Duration = Duration::from_secs(10);
/// The longest one call to this site's own server may take: it is never
/// cut off, only busy, and a count given up on would go stale.
const LOCAL_CALL: Duration = Duration::from_secs(15);
/// Records, and bytes, read and sent per round trip.
const BATCH: usize = 1_000;
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Pause between sessions after a failure.
const RETRY: Duration = Duration::from_secs(1);
/// Pause after the hub refused records (a full stream, one too large).
const REJECTED: Duration = Duration::from_secs(5);
/// How long a refused stream waits before it is tried again.
const RECHECK: Duration = Duration::from_secs(30);

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
            domain: edge.domain.clone(),
            metrics,
            pumps: HashMap::new(),
            problems: Arc::default(),
            tried: Arc::default(),
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
    /// set up here: called before the connectors that publish to them
    /// start, so that their first records are counted as waiting.
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

    /// Stop the task and its pumps; what they have sent and the hub has not
    /// confirmed is sent again by the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(CONFIRM, self.task).await;
    }
}

/// Why a stream is not forwarded, by stream name.
type Problems = Arc<Mutex<HashMap<String, String>>>;
/// The streams whose pump has tried a session (set up the hub's side or
/// found why it cannot).
type Tried = Arc<Mutex<BTreeSet<String>>>;

struct Worker {
    local: Bus,
    hub: Bus,
    domain: String,
    metrics: Arc<Metrics>,
    /// A pump per stream, told its stream's subjects.
    pumps: HashMap<String, (watch::Sender<Vec<String>>, tokio::task::JoinHandle<()>)>,
    problems: Problems,
    /// Streams whose pump has tried a session.
    tried: Tried,
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
            let after = self.pass(&subjects, before.clone(), &stopped).await;
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
        // The pumps see the same stop; each finishes its batch in hand.
        for (_, (_, pump)) in self.pumps.drain() {
            let _ = tokio::time::timeout(CONFIRM, pump).await;
        }
    }

    async fn pass(
        &mut self,
        subjects: &BTreeSet<String>,
        mut state: ForwardState,
        stopped: &watch::Receiver<bool>,
    ) -> ForwardState {
        let link_up = matches!(
            tokio::time::timeout(CALL, self.hub.js.query_account()).await,
            Ok(Ok(_))
        );
        if link_up != state.link_up {
            state.link_up = link_up;
            state.since = now();
        }
        let mut streams = BTreeMap::new();
        let mut handled = BTreeSet::new();
        let mut settled = BTreeSet::new();
        for subject in subjects {
            // Made here, as its connector would, so that the consumer counts
            // from the first record published.
            let Ok(Ok(name)) =
                tokio::time::timeout(LOCAL_CALL, self.local.ensure_stream(subject, true)).await
            else {
                // The local bus is busy: the next pass tries again.
                continue;
            };
            if streams.contains_key(&name) {
                if settled.contains(&name) {
                    handled.insert(subject.clone());
                }
                continue;
            }
            let mut stream = match self.local_side(&name).await {
                Ok(stream) => stream,
                Err(error) => StreamState {
                    problem: Some(format!("{error:#}")),
                    ..state.streams.get(&name).cloned().unwrap_or_default()
                },
            };
            if stream.problem.is_none() {
                self.pump(&name, &stream.subjects, stopped);
                stream.problem = lock(&self.problems).get(&name).cloned();
            }
            // Set up for its connector once the hub's side is too, or the
            // hub cannot be asked (then the pump sets it up on its return).
            let tried = lock(&self.tried).contains(&name);
            if tried || !link_up || stream.problem.is_some() {
                handled.insert(subject.clone());
                settled.insert(name.clone());
            }
            streams.insert(name, stream);
        }
        // A stream no connector publishes to any more is still forwarded
        // until its pump has sent what it holds, and counted until then.
        let pumped: Vec<String> = self.pumps.keys().cloned().collect();
        for name in pumped {
            if !streams.contains_key(&name)
                && let Ok(stream) = self.local_side(&name).await
                && stream.waiting > 0
            {
                streams.insert(name, stream);
            }
        }
        state.waiting = streams.values().map(|s| s.waiting).sum();
        state.streams = streams;
        state.handled = handled;
        state
    }

    /// Start the stream's pump, or tell it the stream's subjects.
    fn pump(&mut self, name: &str, subjects: &[String], stopped: &watch::Receiver<bool>) {
        if let Some((told, task)) = self.pumps.get(name)
            && !task.is_finished()
        {
            told.send_if_modified(|current| {
                let changed = current.as_slice() != subjects;
                if changed {
                    *current = subjects.to_vec();
                }
                changed
            });
            return;
        }
        let (told, subjects) = watch::channel(subjects.to_vec());
        let pump = Pump {
            local: self.local.clone(),
            hub: self.hub.clone(),
            name: name.to_owned(),
            domain: self.domain.clone(),
            prefix: format!("{SUBJECT_PREFIX}.{}", self.domain),
            subjects,
            stopped: stopped.clone(),
            problems: self.problems.clone(),
            tried: self.tried.clone(),
            interrupted: None,
        };
        self.pumps
            .insert(name.to_owned(), (told, tokio::spawn(pump.run())));
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
                let created: consumer::PullConsumer = bounded_local(stream.get_or_create_consumer(
                    CONSUMER,
                    consumer::pull::Config {
                        durable_name: Some(CONSUMER.to_owned()),
                        description: Some("Plexus: forwards to the hub".into()),
                        deliver_policy: consumer::DeliverPolicy::All,
                        // Acked up to what the hub confirmed; every session
                        // starts from there again, so nothing is redelivered
                        // behind its back.
                        ack_policy: consumer::AckPolicy::All,
                        ack_wait: Duration::from_secs(600),
                        max_deliver: -1,
                        max_ack_pending: BATCH as i64 * 2,
                        ..Default::default()
                    },
                ))
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
}

/// Why a session ended.
enum Failure {
    /// The hub's side cannot be set up as things are (a stream in the way):
    /// said once, tried again now and then.
    Refused(String),
    /// The hub refuses what it is sent (full, too large): shown as the
    /// stream's problem and tried again every few seconds.
    Rejected(String),
    /// The link, a timeout, a sequence out of step: tried again at once.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Broken(error)
    }
}

/// Forwards one local stream.
struct Pump {
    local: Bus,
    hub: Bus,
    name: String,
    domain: String,
    /// `plexus.forward.<domain>`.
    prefix: String,
    subjects: watch::Receiver<Vec<String>>,
    stopped: watch::Receiver<bool>,
    problems: Problems,
    tried: Tried,
    /// Why the last session broke off, once said.
    interrupted: Option<String>,
}

impl Pump {
    async fn run(mut self) {
        let mut broken = 0;
        while !self.stopping() {
            let outcome = self.session().await;
            // Found why not, or tried a few times: `settle` waits no longer.
            // (Not after one try: a stream a hub connector is making just
            // now is taken over by the next, before the connectors here
            // publish anything it would capture.)
            broken = if matches!(outcome, Err(Failure::Broken(_))) {
                broken + 1
            } else {
                0
            };
            if broken == 0 || broken >= 3 {
                lock(&self.tried).insert(self.name.clone());
            }
            let pause = match outcome {
                Ok(()) => continue,
                Err(Failure::Refused(reason)) => {
                    self.problem(reason);
                    RECHECK
                }
                Err(Failure::Rejected(reason)) => {
                    self.problem(reason);
                    REJECTED
                }
                Err(Failure::Broken(error)) => {
                    // Said once per reason: an outage is one line, not one a second.
                    let reason = format!("{error:#}");
                    if self.interrupted.as_ref() != Some(&reason) {
                        tracing::info!(stream = %self.name, %reason, "Forwarding interrupted; trying again every second.");
                        self.interrupted = Some(reason);
                    }
                    RETRY
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stopped.changed() => {}
                _ = self.subjects.changed() => {}
            }
        }
    }

    /// Whether the host is stopping, or the forwarder that started this
    /// pump is gone.
    fn stopping(&self) -> bool {
        *self.stopped.borrow()
            || self.stopped.has_changed().is_err()
            || self.subjects.has_changed().is_err()
    }

    /// Why the stream is not forwarded, for the heartbeat; said once.
    fn problem(&self, reason: String) {
        let mut problems = lock(&self.problems);
        if problems.get(&self.name) != Some(&reason) {
            tracing::error!(stream = %self.name, %reason, "Cannot forward this stream to the hub.");
        }
        problems.insert(self.name.clone(), reason);
    }

    /// The hub took a batch: whatever stood in the way is gone.
    fn flowing(&mut self) {
        if lock(&self.problems).remove(&self.name).is_some() {
            tracing::info!(stream = %self.name, "Forwarding to the hub resumed.");
        }
        self.interrupted = None;
    }

    /// Set up the hub's side, find where to resume, then send until
    /// something breaks, the subjects change or the host stops.
    async fn session(&mut self) -> Result<(), Failure> {
        let subjects = self.subjects.borrow_and_update().clone();
        let mut last = self.hub_side(&subjects).await?;
        // Set up at the hub: `settle` may start the connectors.
        lock(&self.tried).insert(self.name.clone());
        let (held, held_id) = self.held_at_hub(last).await?;
        let stream = bounded_local(self.local.js.get_stream(&self.name))
            .await?
            .with_context(|| format!("cannot read stream {}", self.name))?;
        let consumer: consumer::PullConsumer = bounded_local(stream.get_consumer(CONSUMER))
            .await?
            .map_err(|e| {
                anyhow::anyhow!("cannot read consumer {CONSUMER} on {}: {e}", self.name)
            })?;
        // A pull of an earlier session still open would be served from the
        // reset point into an inbox nobody reads: wait it out (each lasts a
        // second).
        let floor = bounded_local(async {
            loop {
                let info = stream
                    .consumer_info(CONSUMER)
                    .await
                    .with_context(|| format!("cannot read consumer {CONSUMER} on {}", self.name))?;
                if info.num_waiting == 0 {
                    return anyhow::Ok(info.ack_floor.stream_sequence);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await??;
        let resume = match held {
            Some(held) if self.held_here(&stream, held, &held_id).await? => floor.max(held),
            _ => floor,
        };
        self.reset(resume + 1).await?;
        // Stopping or new subjects are seen between batches only: a pull is
        // never abandoned half-served.
        while !self.stopping() && !self.subjects.has_changed().unwrap_or(true) {
            let batch = fetch(&consumer).await?;
            if batch.is_empty() {
                continue;
            }
            last = self.send(&batch, last).await?;
            self.flowing();
        }
        Ok(())
    }

    /// Whether the record the hub holds last, sent from sequence `held`
    /// here, is this stream's record `held`: not if the stream was made
    /// anew here (a wiped data directory, a replaced machine) since.
    async fn held_here(
        &self,
        stream: &stream::Stream,
        held: u64,
        id: &Option<String>,
    ) -> anyhow::Result<bool> {
        let here = match bounded_local(stream.get_raw_message(held)).await? {
            Ok(msg) => msg
                .headers
                .get(headers::MSG_ID)
                .map(|v| v.as_str().to_owned()),
            // Gone here by the stream's limits: forwarded or not, it cannot
            // be sent again, and those after it are numbered after it.
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                let last_here = bounded_local(stream.get_info())
                    .await?
                    .map(|info| info.state.last_sequence)
                    .unwrap_or(0);
                if held <= last_here {
                    return Ok(true);
                }
                None
            }
            Err(e) => anyhow::bail!("cannot read stream {}: {e}", self.name),
        };
        if here.is_some() && here == *id {
            return Ok(true);
        }
        tracing::error!(
            stream = %self.name,
            held,
            "The hub's last record from this site is not this stream's record of that number: the stream was made anew here. Forwarding it from its start."
        );
        Ok(false)
    }

    /// Publish a batch in order, each expecting the hub's last sequence to
    /// be the one before it; ack here what the hub stored. The hub's last
    /// sequence after it, or why the session ends.
    async fn send(&self, batch: &[jetstream::Message], last: u64) -> Result<u64, Failure> {
        // Any record of the batch not confirmed ends the session, so that the
        // next one re-reads it (the consumer has handed it out already).
        let mut sent = Vec::with_capacity(batch.len());
        for (i, msg) in batch.iter().enumerate() {
            let seq = msg
                .info()
                .map_err(|e| anyhow::anyhow!("a record without its stream sequence: {e}"))?
                .stream_sequence;
            let headers = forwarded_headers(msg.headers.as_ref(), seq, last + i as u64);
            let subject = format!("{}.{}", self.prefix, msg.subject);
            match bounded(
                self.hub
                    .js
                    .publish_with_headers(subject, headers, msg.payload.clone()),
            )
            .await
            {
                Ok(Ok(ack)) => sent.push(ack),
                // What was sent so far is still confirmed below.
                _ => break,
            }
        }
        let whole = sent.len() == batch.len();
        let mut last = last;
        let mut confirmed = None;
        let mut ended = None;
        for (msg, ack) in batch.iter().zip(sent) {
            match tokio::time::timeout(CONFIRM, ack).await {
                Ok(Ok(ack)) if ack.duplicate => {
                    // The hub already has a record with this Nats-Msg-Id and
                    // kept no second copy: done with, but the sequences the
                    // rest of the batch expected are now off by one.
                    confirmed = Some(msg);
                    ended = Some(Failure::Broken(anyhow::anyhow!(
                        "a duplicate; resuming after it"
                    )));
                    break;
                }
                Ok(Ok(ack)) => {
                    last = ack.sequence;
                    confirmed = Some(msg);
                }
                Ok(Err(error))
                    if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    // Out of step (an earlier session's late copy landed):
                    // the next session reads where the hub stands.
                    ended = Some(Failure::Broken(anyhow::anyhow!(
                        "the hub's stream moved on: {error}"
                    )));
                    break;
                }
                Ok(Err(error)) => {
                    ended = Some(Failure::Rejected(format!(
                        "the hub refuses records of this stream: {error}"
                    )));
                    break;
                }
                Err(_) => {
                    ended = Some(Failure::Broken(anyhow::anyhow!(
                        "the hub did not confirm within {CONFIRM:?}"
                    )));
                    break;
                }
            }
        }
        if let Some(msg) = confirmed {
            bounded_local(msg.double_ack())
                .await?
                .map_err(|e| anyhow::anyhow!("cannot record what the hub stored: {e}"))?;
        }
        match ended {
            Some(failure) => Err(failure),
            None if whole => Ok(last),
            None => Err(anyhow::anyhow!("the hub did not take the whole batch").into()),
        }
    }

    /// Point the consumer at `seq`, dropping what it had handed out: a
    /// session reads on from exactly where the hub stands.
    async fn reset(&self, seq: u64) -> anyhow::Result<()> {
        #[derive(Deserialize)]
        struct Reset {
            #[allow(dead_code)]
            reset_seq: u64,
        }
        let subject = format!("CONSUMER.RESET.{}.{CONSUMER}", self.name);
        let body = serde_json::json!({ "seq": seq });
        match bounded_local(self.local.js.request(subject, &body)).await? {
            Ok(jetstream::response::Response::Ok(Reset { .. })) => Ok(()),
            Ok(jetstream::response::Response::Err { error }) => Err(anyhow::anyhow!(
                "cannot reset consumer {CONSUMER} on {}: {error}",
                self.name
            )),
            Err(error) => Err(anyhow::anyhow!(
                "cannot reset consumer {CONSUMER} on {}: {error}",
                self.name
            )),
        }
    }

    /// The sequence here of the record the hub stored last (sequence `last`
    /// there), and its `Nats-Msg-Id`, if the hub still has it.
    async fn held_at_hub(&self, last: u64) -> Result<(Option<u64>, Option<String>), Failure> {
        if last == 0 {
            return Ok((None, None));
        }
        let stream = bounded(self.hub.js.get_stream(&self.name))
            .await?
            .with_context(|| format!("cannot read the hub's stream {}", self.name))?;
        match bounded(stream.get_raw_message(last)).await? {
            Ok(msg) => Ok((
                msg.headers
                    .get(headers::EDGE_SEQ)
                    .and_then(|v| v.as_str().parse().ok()),
                msg.headers
                    .get(headers::MSG_ID)
                    .map(|v| v.as_str().to_owned()),
            )),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok((None, None)),
            Err(e) => {
                Err(anyhow::anyhow!("cannot read the hub's stream {}: {e}", self.name).into())
            }
        }
    }

    /// At the hub: a stream named as this one that captures
    /// `plexus.forward.<domain>.<subject>` for its subjects and stores each
    /// record under `<subject>`. Its last sequence.
    async fn hub_side(&self, subjects: &[String]) -> Result<u64, Failure> {
        let name = &self.name;
        let forward: Vec<String> = subjects
            .iter()
            .map(|s| format!("{}.{s}", self.prefix))
            .collect();
        let transform = stream::SubjectTransform {
            source: format!("{}.>", self.prefix),
            destination: ">".into(),
        };
        let metadata = |config: &mut stream::Config| {
            config.metadata.insert(
                FORWARDED_SUBJECTS.to_owned(),
                serde_json::to_string(subjects).unwrap_or_default(),
            );
            config
                .metadata
                .insert(FORWARDED_FROM.to_owned(), self.domain.clone());
        };
        let existing = match bounded(self.hub.js.get_stream(name)).await? {
            Ok(mut stream) => Some(
                bounded(stream.info())
                    .await?
                    .with_context(|| format!("cannot read the hub's stream {name}"))?
                    .clone(),
            ),
            Err(e)
                if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                None
            }
            Err(e) => {
                return Err(anyhow::anyhow!("cannot look up the hub's stream {name}: {e}").into());
            }
        };
        let Some(info) = existing else {
            // A hub stream capturing these subjects would also take what is
            // published here, straight over the leaf link.
            for subject in subjects {
                if let Ok(Ok(other)) =
                    tokio::time::timeout(CALL, self.hub.js.stream_by_subject(subject)).await
                {
                    if other == *name {
                        // A hub connector made it a moment ago: looked at
                        // again (and taken over if never written) at once.
                        return Err(
                            anyhow::anyhow!("the hub's stream {name} appeared meanwhile").into(),
                        );
                    }
                    return Err(Failure::Refused(format!(
                        "the hub's stream {other} captures {subject} itself, so records published here would reach it twice; publish under a subject of this facility's own (e.g. raw.<facility>.…)"
                    )));
                }
            }
            let limits = &self.local.limits;
            let mut config = stream::Config {
                name: name.to_owned(),
                description: Some(format!(
                    "Plexus: records forwarded from edge {}",
                    self.domain
                )),
                subjects: forward,
                subject_transform: Some(transform),
                storage: stream::StorageType::File,
                duplicate_window: limits.duplicate_window,
                max_bytes: limits.stream_max_bytes,
                max_age: limits.stream_max_age,
                discard: stream::DiscardPolicy::New,
                num_replicas: self.hub_replicas().await,
                ..Default::default()
            };
            metadata(&mut config);
            bounded(self.hub.js.create_stream(config))
                .await?
                .with_context(|| format!("cannot create the hub's stream {name}"))?;
            tracing::info!(stream = %name, "Hub stream created for this site's records.");
            return Ok(0);
        };
        let mut config = info.config.clone();
        match config.metadata.get(FORWARDED_FROM) {
            Some(domain) if *domain == self.domain => {}
            Some(other) => {
                return Err(Failure::Refused(format!(
                    "the hub's stream {name} already takes the records of domain {other}; each forwarded subject belongs to one facility, so publish here under a subject of this facility's own (e.g. raw.<facility>.…)"
                )));
            }
            None => {
                // A stream a hub connector made for these subjects before any
                // record arrived is taken over; one with records is another
                // publisher's and left alone.
                let sourced = config.sources.as_ref().is_some_and(|s| !s.is_empty());
                if sourced || info.state.last_sequence > 0 || !name.starts_with("PLEXUS_") {
                    return Err(Failure::Refused(format!(
                        "the hub's stream {name} stores {} itself ({} records); it cannot also take this facility's records. Publish here under a subject of this facility's own",
                        config.subjects.join(", "),
                        info.state.messages
                    )));
                }
                config.subjects.clear();
            }
        }
        let mut changed = false;
        for subject in forward {
            if !config.subjects.contains(&subject) {
                config.subjects.push(subject);
                changed = true;
            }
        }
        if config.subject_transform.as_ref() != Some(&transform) {
            config.subject_transform = Some(transform);
            changed = true;
        }
        metadata(&mut config);
        if changed || config.metadata != info.config.metadata {
            bounded(self.hub.js.update_stream(config))
                .await?
                .with_context(|| format!("cannot update the hub's stream {name}"))?;
            tracing::info!(stream = %name, "Hub stream now takes this site's records.");
        }
        Ok(info.state.last_sequence)
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

/// Up to a batch of records, waiting a second for the first.
async fn fetch(consumer: &consumer::PullConsumer) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut messages = bounded_local(
        consumer
            .fetch()
            .max_messages(BATCH)
            .max_bytes(BATCH_BYTES)
            .expires(Duration::from_secs(1))
            .messages(),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("cannot read the records to forward: {e}"))?;
    let mut batch = Vec::new();
    while let Some(msg) = bounded_local(messages.next()).await? {
        batch.push(msg.map_err(|e| anyhow::anyhow!("cannot read the records to forward: {e}"))?);
    }
    Ok(batch)
}

/// A record's headers as the hub stores them: its own, of JetStream's only
/// its `Nats-Msg-Id` (no expectation, TTL or rollup made here may act
/// there), plus its sequence here and the hub's last sequence it must
/// follow.
fn forwarded_headers(own: Option<&HeaderMap>, seq: u64, expected_last: u64) -> HeaderMap {
    let mut h = headers::kept(own, |name| {
        !name.to_ascii_lowercase().starts_with("nats-")
            || name.eq_ignore_ascii_case(headers::MSG_ID)
    });
    h.insert(headers::EDGE_SEQ, seq.to_string().as_str());
    h.insert(
        headers::EXPECTED_LAST_SEQUENCE,
        expected_last.to_string().as_str(),
    );
    h
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_records_keep_their_headers_but_jetstream_s_own() {
        let mut own = HeaderMap::new();
        own.insert(headers::MSG_ID, "adt-in:st-marys/1");
        own.insert(headers::FACILITY, "st-marys");
        own.insert("Nats-TTL", "1s");
        own.insert("Nats-Rollup", "all");
        own.insert(headers::EXPECTED_LAST_SEQUENCE, "7");
        let h = forwarded_headers(Some(&own), 42, 41);
        let get = |name: &str| h.get(name).map(|v| v.as_str().to_owned());
        assert_eq!(get(headers::MSG_ID).as_deref(), Some("adt-in:st-marys/1"));
        assert_eq!(get(headers::FACILITY).as_deref(), Some("st-marys"));
        assert_eq!(get(headers::EDGE_SEQ).as_deref(), Some("42"));
        assert_eq!(get(headers::EXPECTED_LAST_SEQUENCE).as_deref(), Some("41"));
        assert_eq!(get("Nats-TTL"), None);
        assert_eq!(get("Nats-Rollup"), None);
    }
}

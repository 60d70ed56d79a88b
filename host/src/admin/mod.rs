//! The admin endpoint on `[host].http`: who may call it, and what it serves.
//!
//! | route | role |
//! |---|---|
//! | `GET /healthz` | open |
//! | `GET /` (dashboard), `GET /metrics`, `GET /connectors` | `read` (or `operate`) |
//! | `POST /ingest/<connector>` | `ingest:<connector>` |
//! | `POST /connectors/<connector>/dead-letters/replay[?seq=N]` | `operate` |
//!
//! Callers send `Authorization: Bearer <token>`; tokens live hashed in
//! `[host].tokens` (`tokens.rs`). Without a token → 401, with one whose role
//! does not cover the route → 403. A host with no token file serves without
//! tokens, but only on a loopback address (a non-loopback `[host].http`
//! without tokens refuses to start), and even then it refuses requests a
//! browser sends on another site's behalf (an `Origin` that is not this
//! endpoint) and requests for a `Host` that is not a loopback name (DNS
//! rebinding). Once a token file exists, a token is always needed: revoking
//! the last one locks everyone out rather than opening the door.
//!
//! Limits: a header must arrive within [`HEADER_TIMEOUT`], a whole request
//! within [`REQUEST_TIMEOUT`]; bodies are capped per route (ingest at
//! [`MAX_INGEST`], others at [`MAX_BODY`]); at most [`MAX_CONNECTIONS`]
//! connections are served at once, and more wait in the kernel's backlog.
//!
//! Ingest answers 202 only once the records are stored on the bus, 400 with
//! the plugin's reason for input it cannot decode, 401 when a webhook
//! source's plugin could not verify the sender's signature, 503 when it
//! should be retried, 404 for a connector that does not take HTTP ingest.
//! A webhook source gets the request's headers, less `Authorization`.

pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, watch};

use crate::connector::{Inbound, IngestError};
use crate::observe::Metrics;
use crate::observe::status::Roster;
pub use tokens::{Caller, Role, Tokens};

/// The largest body `POST /ingest` takes.
pub const MAX_INGEST: usize = 16 << 20;
/// The largest body any other route takes.
pub const MAX_BODY: usize = 64 << 10;
/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body and answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// What the endpoint serves from.
#[derive(Clone)]
pub struct Admin {
    /// The host's metrics.
    pub metrics: Arc<Metrics>,
    /// Sources taking HTTP ingest.
    pub inbound: Arc<Inbound>,
    /// The running connectors.
    pub roster: Arc<Roster>,
    /// For the connectors' lag.
    pub js: async_nats::jetstream::Context,
    /// Who may call.
    pub tokens: Arc<Tokens>,
    /// Where refusals and ingests are recorded.
    pub audit: crate::observe::Audit,
    /// SLA breaches seen by this host.
    pub sla: Arc<crate::observe::sla::Board>,
}

/// Why the endpoint may not start as configured.
#[derive(Debug, thiserror::Error)]
#[error(
    "[host].http {addr} is reachable from other machines, but {tokens} holds no admin tokens: create one with `plexus token create --role read --name <who>` (and `--role ingest:<connector>` for senders), or bind [host].http to 127.0.0.1"
)]
pub struct Unprotected {
    /// The configured address.
    pub addr: String,
    /// The token file.
    pub tokens: String,
}

/// Refuse a non-loopback address without tokens.
pub fn check_exposure(
    addr: &str,
    tokens: &Tokens,
    file: &std::path::Path,
) -> Result<(), Unprotected> {
    let loopback = addr
        .parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if loopback || tokens.any() {
        return Ok(());
    }
    Err(Unprotected {
        addr: addr.to_owned(),
        tokens: file.display().to_string(),
    })
}

/// Bind `addr` and serve until `stop` turns true. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    addr: &str,
    admin: Admin,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on [host].http {addr}"))?;
    let bound = listener.local_addr()?;
    if !admin.tokens.configured() {
        tracing::warn!(address = %bound, "The admin endpoint has no token file: it answers anyone on this machine. Create tokens with `plexus token create`.");
    }
    let guard = Guard {
        tokens: admin.tokens.clone(),
        metrics: admin.metrics.clone(),
        audit: admin.audit.clone(),
        open_without_tokens: bound.ip().is_loopback(),
    };
    let read = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/connectors", get(connectors))
        .route("/", get(dashboard))
        .route("/exceptions", get(exceptions_page))
        .route("/dead-letters", get(dead_letters_page))
        .route("/trace", get(trace_page))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let ingest = Router::new()
        .route("/ingest/{connector}", post(ingest))
        .layer(DefaultBodyLimit::max(MAX_INGEST));
    let operate = Router::new()
        .route("/connectors/{connector}/dead-letters/replay", post(replay))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let app = Router::new()
        .merge(read)
        .merge(ingest)
        .merge(operate)
        .layer(middleware::from_fn_with_state(guard, authorize))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn(declared_size))
        .layer(middleware::from_fn(within_time))
        .with_state(admin);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Past the cap, connections wait in the listen backlog.
            let slot = tokio::select! {
                slot = slots.clone().acquire_owned() => slot,
                _ = stop.wait_for(|s| *s) => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "Admin endpoint accept failed; backing off.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(
                app.clone().layer(axum::Extension(Peer(peer))),
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 << 10)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "Admin connection ended.");
                }
                drop(slot);
            });
        }
        // In-flight requests finish; idle keep-alive connections close.
        if tokio::time::timeout(REQUEST_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("Admin connections still open at shutdown were dropped.");
        }
    });
    Ok((bound, task))
}

/// Who is at the other end of a connection.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// What `authorize` needs.
#[derive(Clone)]
struct Guard {
    tokens: Arc<Tokens>,
    metrics: Arc<Metrics>,
    audit: crate::observe::Audit,
    /// A loopback endpoint with no tokens serves without them.
    open_without_tokens: bool,
}

/// The role a route needs: reading for `GET`, `ingest:<connector>` to
/// post records, `operate` for every other call that changes something.
fn required(method: &axum::http::Method, path: &str) -> Role {
    match path.strip_prefix("/ingest/") {
        Some(connector) => Role::Ingest(connector.trim_end_matches('/').to_owned()),
        None if method == axum::http::Method::GET || method == axum::http::Method::HEAD => {
            Role::Read
        }
        None => Role::Operate,
    }
}

async fn authorize(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let wanted = required(request.method(), request.uri().path());
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or_else(|| "unknown".to_owned(), |p| p.0.to_string());
    let what = format!("{peer} {} {}", request.method(), request.uri().path());
    let refuse = |status, reason: &str| refuse(&guard, status, &what, reason);
    let headers = request.headers();
    if !guard.tokens.configured() {
        if !guard.open_without_tokens {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs a token, and none exists",
            );
        }
        if let Some(reason) = foreign(headers) {
            return refuse(StatusCode::FORBIDDEN, &reason);
        }
        request.extensions_mut().insert(Caller {
            name: "local".into(),
            role: wanted,
        });
        return next.run(request).await;
    }
    // A browser's cross-site request carries a token the page never saw
    // (a proxy adding it, for one): a change is taken only from this origin.
    if wanted != Role::Read
        && !matches!(wanted, Role::Ingest(_))
        && let Some(reason) = cross_site(headers)
    {
        return refuse(StatusCode::FORBIDDEN, &reason);
    }
    let Some(token) = bearer(headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <token>",
        );
    };
    let Some(caller) = guard.tokens.verify(token) else {
        return refuse(StatusCode::UNAUTHORIZED, "unknown or revoked token");
    };
    if !caller.role.grants(&wanted) {
        let reason = format!(
            "token {:?} has role {}, and this needs {wanted}",
            caller.name, caller.role
        );
        return refuse(StatusCode::FORBIDDEN, &reason);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Why a tokenless request looks like it came from elsewhere: a browser
/// page of another site, or a name rebound to this address.
fn foreign(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
        .trim_matches(['[', ']']);
    let loopback_name = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback_name {
        return Some(format!(
            "Host {host:?} is not this machine's loopback address"
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !same {
            return Some(format!(
                "a request from the page of {origin:?} is not taken without a token"
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return Some("a cross-site request is not taken without a token".into());
    }
    None
}

/// Why a request came from another site's page: its `Origin` is not this
/// host, or the browser says it is cross-site. API clients send neither.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let same = ["http://", "https://"].iter().any(|scheme| {
            origin
                .strip_prefix(scheme)
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        if !same {
            return Some(format!(
                "a change requested from the page of {origin:?} is not taken"
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"cross-site")
    {
        return Some("a cross-site change is not taken".into());
    }
    None
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

fn refuse(guard: &Guard, status: StatusCode, what: &str, reason: &str) -> Response {
    guard.metrics.auth_failure("admin");
    guard.audit.record(
        "auth_failure",
        "admin",
        &format!("{what}: {} {reason}", status.as_u16()),
    );
    tracing::info!(
        status = status.as_u16(),
        request = what,
        reason,
        "Admin request refused."
    );
    let mut response = (status, format!("{reason}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"plexus\""),
        );
    }
    response
}

/// Refuse a body declared larger than its route takes before reading it.
async fn declared_size(request: Request, next: Next) -> Response {
    let limit = if request.uri().path().starts_with("/ingest/") {
        MAX_INGEST
    } else {
        MAX_BODY
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than the {limit} bytes this route takes\n"),
        )
            .into_response();
    }
    next.run(request).await
}

async fn within_time(request: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no answer within {REQUEST_TIMEOUT:?}; retry\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn connectors(State(state): State<Admin>) -> impl IntoResponse {
    let report = state.roster.report(&state.metrics, &state.js).await;
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&report).unwrap_or_else(|_| "[]".into()),
    )
}

/// A page of the dashboard.
fn html(page: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Never framed by another site's page.
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        page,
    )
        .into_response()
}

async fn dashboard(State(state): State<Admin>) -> Response {
    let report = state.roster.report(&state.metrics, &state.js).await;
    html(crate::observe::dashboard::render(&report, &state.sla.all()))
}

/// Open exceptions of the matchers running here (connectors emitting
/// `match-exception/2`).
async fn exceptions_page(State(state): State<Admin>) -> Response {
    let report = state.roster.report(&state.metrics, &state.js).await;
    let subjects: Vec<String> = report
        .iter()
        .filter(|c| {
            c.emits
                .iter()
                .any(|e| e == crate::observe::exceptions::SCHEMA)
        })
        .filter_map(|c| c.to.clone())
        .collect();
    match crate::observe::exceptions::read(&state.js, &subjects).await {
        Ok(standing) => {
            let all: Vec<_> = standing.values().collect();
            html(crate::observe::dashboard::exceptions(
                &all,
                chrono::Utc::now(),
            ))
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the exceptions: {error:#}\n"),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct NoteQuery {
    replayed: Option<String>,
}

/// Every running connector's dead letters, with replay buttons.
async fn dead_letters_page(
    State(state): State<Admin>,
    axum::extract::Query(query): axum::extract::Query<NoteQuery>,
) -> Response {
    let report = state.roster.report(&state.metrics, &state.js).await;
    let mut rows = Vec::new();
    for c in report {
        let letters = match crate::bus::dead_letters::DeadLetters::open(&state.js, &c.dlq).await {
            Ok(dead) => dead.list(&c.name).await,
            Err(e) => Err(e),
        };
        match letters {
            Ok(letters) => rows.push((c, letters)),
            Err(error) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the dead letters of {}: {error:#}\n", c.name),
                )
                    .into_response();
            }
        }
    }
    let note = query
        .replayed
        .map(|what| format!("Replayed {what}; it is back on its subject."));
    html(crate::observe::dashboard::dead_letters(
        &rows,
        note.as_deref(),
    ))
}

#[derive(serde::Deserialize)]
struct TraceQuery {
    id: String,
}

/// A record's lineage.
async fn trace_page(
    State(state): State<Admin>,
    axum::extract::Query(query): axum::extract::Query<TraceQuery>,
) -> Response {
    if let Some(reason) = crate::observe::lineage::refuse(&query.id) {
        return (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response();
    }
    match crate::observe::lineage::trace(&state.js, &query.id).await {
        Ok(hops) => html(crate::observe::dashboard::trace(&query.id, &hops)),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the bus: {error:#}\n"),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ReplayQuery {
    seq: Option<u64>,
}

/// Send a connector's dead letters (or the one numbered `seq`) back to it,
/// as `plexus dlq replay` does, recorded in the audit log under the token's name.
async fn replay(
    State(state): State<Admin>,
    Path(connector): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ReplayQuery>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Response {
    let from_page = headers.get(header::CONTENT_TYPE).is_some_and(|t| {
        t.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let (status, body) = replay_letters(&state, &connector, query.seq, &caller).await;
    if from_page && status == StatusCode::OK {
        // The dashboard's button: back to the page, which says what happened.
        let what = match query.seq {
            Some(seq) => format!("{connector}%20%23{seq}"),
            None => connector.clone(),
        };
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/dead-letters?replayed={what}"))],
        )
            .into_response();
    }
    (status, body).into_response()
}

/// Replay `connector`'s dead letters (or the one numbered `seq`).
async fn replay_letters(
    state: &Admin,
    connector: &str,
    seq: Option<u64>,
    caller: &Caller,
) -> (StatusCode, String) {
    let query = ReplayQuery { seq };
    let connector = connector.to_owned();
    let Some(status) = state.roster.get(&connector) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} runs here\n"),
        );
    };
    if status.kind == "source" {
        return (
            StatusCode::CONFLICT,
            format!(
                "{connector:?} is a source: its dead letters are kept for inspection, not replayed\n"
            ),
        );
    }
    let result = async {
        let dead = crate::bus::dead_letters::DeadLetters::open(&state.js, &status.dlq).await?;
        let letters = dead.list(&connector).await?;
        let mut replayed = 0u64;
        for letter in letters
            .iter()
            .filter(|l| query.seq.is_none_or(|seq| seq == l.sequence))
        {
            dead.replay(letter).await?;
            state.audit.record(
                "replay",
                &caller.name,
                &format!(
                    "connector {connector}: dead letter #{} ({}) sent back to {}",
                    letter.sequence, letter.identity, letter.original_subject
                ),
            );
            replayed += 1;
        }
        anyhow::Ok(replayed)
    }
    .await;
    match result {
        Ok(0) if query.seq.is_some() => (
            StatusCode::NOT_FOUND,
            format!("connector {connector:?} has no such dead letter\n"),
        ),
        Ok(n) => (StatusCode::OK, format!("{{\"replayed\":{n}}}\n")),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error:#}\n")),
    }
}

async fn ingest(
    State(state): State<Admin>,
    Path(connector): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> impl IntoResponse {
    // A webhook source checks signatures itself; the bearer token is ours.
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    // Records are known by key and content, not by which token sent them:
    // a retry after a token is rotated is still the same record.
    match state.inbound.ingest(&connector, body, headers, "").await {
        None => (
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} takes HTTP ingest\n"),
        ),
        Some(Ok(n)) => {
            state.audit.record(
                "ingest",
                &caller.name,
                &format!("connector {connector}: {n} record(s) stored"),
            );
            (StatusCode::ACCEPTED, format!("{{\"published\":{n}}}\n"))
        }
        Some(Err(IngestError::Rejected(reason))) => {
            (StatusCode::BAD_REQUEST, format!("{reason}\n"))
        }
        Some(Err(IngestError::Unavailable(reason))) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
        }
        Some(Err(IngestError::Unauthenticated(reason))) => {
            (StatusCode::UNAUTHORIZED, format!("{reason}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn tokenless_requests_must_be_local_and_same_origin() {
        assert_eq!(foreign(&headers(&[("host", "127.0.0.1:7700")])), None);
        assert_eq!(
            foreign(&headers(&[
                ("host", "localhost:7700"),
                ("origin", "http://localhost:7700")
            ])),
            None
        );
        assert!(
            foreign(&headers(&[
                ("host", "127.0.0.1:7700"),
                ("origin", "https://evil.example")
            ]))
            .is_some()
        );
        assert!(
            foreign(&headers(&[("host", "evil.example:7700")])).is_some(),
            "rebound name"
        );
        assert!(
            foreign(&headers(&[
                ("host", "[::1]:7700"),
                ("sec-fetch-site", "cross-site")
            ]))
            .is_some()
        );
        assert_eq!(foreign(&headers(&[("host", "[::1]:7700")])), None);
    }

    #[test]
    fn routes_need_their_roles() {
        use axum::http::Method;
        assert_eq!(required(&Method::GET, "/metrics"), Role::Read);
        assert_eq!(
            required(&Method::POST, "/ingest/lab-a"),
            Role::Ingest("lab-a".into())
        );
        assert_eq!(
            required(&Method::POST, "/connectors/x/dead-letters/replay"),
            Role::Operate
        );
        assert_eq!(required(&Method::DELETE, "/connectors"), Role::Operate);
    }
}

//! The admin endpoint on `[host].http`: `GET /` (a dashboard of the running
//! connectors, refreshing itself), `GET /metrics`, `GET /healthz`,
//! `GET /connectors` (JSON, what `plexus ls` shows) and
//! `POST /ingest/<connector>` for sources with `listen = "http"`.
//!
//! Ingest answers 202 only once the records are stored on the bus, 400 with
//! the plugin's reason for input it cannot decode, 503 when it should be
//! retried, 404 for a connector that does not take HTTP ingest.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::connector::{Inbound, IngestError};
use crate::observe::Metrics;
use crate::observe::status::Roster;

/// The largest body `POST /ingest` takes.
const MAX_INGEST: usize = 16 << 20;

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
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/connectors", get(connectors))
        .route("/", get(dashboard))
        .route("/ingest/{connector}", post(ingest))
        .layer(DefaultBodyLimit::max(MAX_INGEST))
        .with_state(admin);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(%error, "Admin HTTP server failed.");
        }
    });
    Ok((bound, task))
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

async fn dashboard(State(state): State<Admin>) -> impl IntoResponse {
    let report = state.roster.report(&state.metrics, &state.js).await;
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::dashboard::render(&report),
    )
}

async fn ingest(
    State(state): State<Admin>,
    Path(connector): Path<String>,
    body: bytes::Bytes,
) -> impl IntoResponse {
    match state.inbound.ingest(&connector, body).await {
        None => (
            StatusCode::NOT_FOUND,
            format!("no connector {connector:?} takes HTTP ingest\n"),
        ),
        Some(Ok(n)) => (StatusCode::ACCEPTED, format!("{{\"published\":{n}}}\n")),
        Some(Err(IngestError::Rejected(reason))) => {
            (StatusCode::BAD_REQUEST, format!("{reason}\n"))
        }
        Some(Err(IngestError::Unavailable(reason))) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
        }
    }
}

//! The MLLP listener: HL7 v2 over TCP (`mllp://`) or TLS (`mllp+tls://`).
//!
//! Each message goes to the source plugin's `decode`, with its sender
//! (MSH-3^MSH-4) as the origin of its records' identities; the sender gets
//! `MSA|AA|<MSH-10>` only once the records are stored on the bus, `AR` with
//! the reason for a message that can never be taken, and `AE` when it should
//! retry. A dropped connection loses only its unacknowledged message, which
//! the sender resends.
//!
//! What faces the network is bounded:
//! - peers outside `listener.allow` are closed at once, and with
//!   `tls.client_ca` a client without a certificate from that CA fails the
//!   handshake (each counted in `plexus_auth_failures_total{endpoint="mllp"}`);
//! - at most `listener.max_connections` are open; a new connection beyond
//!   that closes the one that has been silent longest (senders reconnect when
//!   they have something to send), so stale connections cannot lock senders
//!   out; with TLS, a connection counts only once its handshake succeeded,
//!   and no more than twice `max_connections` sockets are held at all;
//! - a connection silent for `listener.idle_timeout`, or whose message is not
//!   complete within `listener.frame_timeout` of its start (or that does not
//!   take its ACK within that time), is closed;
//! - a message holds at most [`MAX_FRAME`] bytes, so memory is bounded by
//!   `max_connections × MAX_FRAME`;
//! - accept errors (out of file descriptors) back off, and refusals and
//!   errors are logged at most once per [`LOG_EVERY`], with how many there were.

mod frame;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use frame::MAX_FRAME;
use frame::{Frame, Framer, ack, sender};

use super::source::{IngestError, Source};
use crate::config::Listener;

/// The least time between two log lines about the same kind of trouble.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// An MLLP listener's settings and state.
pub(crate) struct Mllp {
    pub(super) source: Arc<Source>,
    pub(super) settings: Listener,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
    open: Mutex<Open>,
    /// Every socket held, handshakes included: a hard cap of twice
    /// `max_connections`, past which new connections are closed at once.
    sockets: Arc<tokio::sync::Semaphore>,
    started: Instant,
    refused: Throttle,
    failed: Throttle,
}

#[derive(Default)]
struct Open {
    next: u64,
    connections: HashMap<u64, Arc<Connection>>,
}

/// One open connection, as the listener sees it.
struct Connection {
    /// Milliseconds since the listener started, at its last byte.
    last_active: AtomicU64,
    /// Closes it.
    close: Notify,
}

impl Mllp {
    pub(super) fn new(
        source: Arc<Source>,
        settings: Listener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Mllp {
        Mllp {
            source,
            settings: settings.clone(),
            tls,
            open: Mutex::new(Open::default()),
            sockets: Arc::new(tokio::sync::Semaphore::new(settings.max_connections * 2)),
            started: Instant::now(),
            refused: Throttle::default(),
            failed: Throttle::default(),
        }
    }

    fn name(&self) -> &str {
        &self.source.name
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Accept connections on `listener` until `stop`.
    pub(super) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut accept_failures = 0u32;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.changed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    accept_failures = 0;
                    accepted
                }
                Err(error) => {
                    // Out of descriptors or memory: retrying at once would spin.
                    accept_failures = accept_failures.saturating_add(1);
                    let pause = Duration::from_millis(10 << accept_failures.min(7));
                    self.failed.warn(|suppressed| {
                        tracing::warn!(connector = %self.name(), %error, suppressed, "MLLP accept failed; backing off.");
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = stop.changed() => break,
                    }
                }
            };
            if !self.allowed(peer) {
                self.source.metrics.auth_failure("mllp");
                self.source.audit.record(
                    "auth_failure",
                    "mllp",
                    &format!("connector {}: {peer} is not in listener.allow", self.name()),
                );
                self.refused.warn(|suppressed| {
                    tracing::warn!(connector = %self.name(), %peer, suppressed, "MLLP connection refused: the address is not in listener.allow.");
                });
                drop(stream);
                continue;
            }
            let Ok(socket) = self.sockets.clone().try_acquire_owned() else {
                self.refused.warn(|suppressed| {
                    tracing::warn!(connector = %self.name(), %peer, suppressed, "MLLP connection closed: too many sockets open (twice listener.max_connections).");
                });
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let _socket = socket;
                let result = match &this.tls {
                    Some(acceptor) => {
                        // A connection counts against the cap only once it
                        // has shown a good certificate.
                        let handshake = tokio::select! {
                            handshake = tokio::time::timeout(
                                this.settings.frame_timeout,
                                acceptor.accept(stream),
                            ) => handshake,
                            _ = stop.changed() => return,
                        };
                        match handshake {
                            Ok(Ok(tls)) => {
                                let (id, connection) = this.admit();
                                let result = this.converse(tls, &connection, stop).await;
                                this.release(id);
                                result
                            }
                            Ok(Err(error)) => {
                                this.source.metrics.auth_failure("mllp");
                                this.source.audit.record(
                                    "auth_failure",
                                    "mllp",
                                    &format!(
                                        "connector {}: {peer}: TLS handshake failed: {error}",
                                        this.name()
                                    ),
                                );
                                this.refused.warn(|suppressed| {
                                    tracing::warn!(connector = %this.name(), %peer, %error, suppressed, "MLLP TLS handshake failed.");
                                });
                                Ok(())
                            }
                            Err(_) => Ok(()),
                        }
                    }
                    None => {
                        let (id, connection) = this.admit();
                        let result = this.converse(stream, &connection, stop).await;
                        this.release(id);
                        result
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(connector = %this.name(), %peer, %error, "MLLP connection closed.");
                }
            });
        }
    }

    fn allowed(&self, peer: SocketAddr) -> bool {
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            ip => ip,
        };
        self.settings.allow.is_empty() || self.settings.allow.iter().any(|net| net.contains(&ip))
    }

    /// Register a new connection, closing the longest-silent one if the
    /// listener is full.
    fn admit(&self) -> (u64, Arc<Connection>) {
        let connection = Arc::new(Connection {
            last_active: AtomicU64::new(self.now()),
            close: Notify::new(),
        });
        let Ok(mut open) = self.open.lock() else {
            return (u64::MAX, connection);
        };
        if open.connections.len() >= self.settings.max_connections
            && let Some((&oldest, _)) = open
                .connections
                .iter()
                .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
            && let Some(evicted) = open.connections.remove(&oldest)
        {
            evicted.close.notify_one();
            self.refused.warn(|suppressed| {
                tracing::warn!(connector = %self.name(), max_connections = self.settings.max_connections, suppressed, "MLLP listener full; closed the connection silent longest.");
            });
        }
        let id = open.next;
        open.next += 1;
        open.connections.insert(id, connection.clone());
        (id, connection)
    }

    fn release(&self, id: u64) {
        if let Ok(mut open) = self.open.lock() {
            open.connections.remove(&id);
        }
    }

    /// Read messages and answer each until the peer leaves, a timeout, an
    /// eviction or `stop`.
    async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        connection: &Connection,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let mut framer = Framer::default();
        let mut read = [0u8; 8 << 10];
        let mut frames = Vec::new();
        let mut frame_deadline: Option<tokio::time::Instant> = None;
        loop {
            let wait = match frame_deadline {
                Some(deadline) => deadline.saturating_duration_since(tokio::time::Instant::now()),
                None => self.settings.idle_timeout,
            };
            let n = tokio::select! {
                n = tokio::time::timeout(wait, stream.read(&mut read)) => match n {
                    Ok(n) => n?,
                    Err(_) => {
                        tracing::debug!(connector = %self.name(), in_frame = framer.in_frame(), "MLLP connection timed out.");
                        return Ok(());
                    }
                },
                _ = connection.close.notified() => return Ok(()),
                _ = stop.changed() => return Ok(()),
            };
            if n == 0 {
                return Ok(());
            }
            connection.last_active.store(self.now(), Ordering::Relaxed);
            let was_in_frame = framer.in_frame();
            framer.push(&read[..n], &mut frames);
            frame_deadline = match (framer.in_frame(), was_in_frame && frames.is_empty()) {
                (false, _) => None,
                // The same message goes on: its deadline stands.
                (true, true) => frame_deadline,
                (true, false) => Some(tokio::time::Instant::now() + self.settings.frame_timeout),
            };
            for frame in frames.drain(..) {
                let reply = match frame {
                    Frame::Message(message) => {
                        let origin = sender(&message);
                        let message = bytes::Bytes::from(message);
                        let taken = self
                            .source
                            .ingest(message.clone(), Vec::new(), &origin)
                            .await;
                        let (code, reason) = match taken {
                            Ok(_) => ("AA", String::new()),
                            Err(
                                IngestError::Rejected(reason)
                                | IngestError::Unauthenticated(reason),
                            ) => ("AR", reason),
                            Err(IngestError::Unavailable(reason)) => ("AE", reason),
                        };
                        ack(&message, code, &reason)
                    }
                    Frame::Oversized(head) => {
                        ack(&head, "AR", &format!("message exceeds {MAX_FRAME} bytes"))
                    }
                };
                // A peer that does not read its ACKs is not waited on forever.
                let write = async {
                    stream.write_all(&reply).await?;
                    stream.flush().await
                };
                tokio::select! {
                    written = tokio::time::timeout(self.settings.frame_timeout, write) => match written {
                        Ok(written) => written?,
                        Err(_) => return Ok(()),
                    },
                    _ = connection.close.notified() => return Ok(()),
                    _ = stop.changed() => return Ok(()),
                }
            }
        }
    }
}

/// Logs one kind of trouble at most once per [`LOG_EVERY`], saying how many
/// were not logged in between.
#[derive(Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    fn warn(&self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        let due = self.last.lock().is_ok_and(|mut last| {
            let due = last.is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
            if due {
                *last = Some(now);
            }
            due
        });
        if due {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

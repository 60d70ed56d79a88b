//! Test support: a real `nats-server` per test, real plugins built for
//! wasm32-wasip2, hosts in-process or as the `plexus` binary.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use plexus_host::bus::embedded::EmbeddedNats;
use plexus_host::config::Config;
use plexus_host::host::Host;

/// Generous bound for things that should take a second or two; only a hang hits it.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The `nats-server` the project's set-up installed (`just setup`), or one on PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PLEXUS_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let local = repo_root().join(".tools/bin/nats-server");
    if local.is_file() {
        return local;
    }
    plexus_host::bus::embedded::find_binary(None).unwrap_or_else(|_| {
        panic!("nats-server not found: run `just setup` (installs it into .tools/bin)")
    })
}

/// Build the plugins workspace once per test run and return the path of `name`'s component.
/// A fixture of the three-way matcher (`plugins/three-way-match/fixtures`).
pub fn matcher_fixture(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("plugins/three-way-match/fixtures")
            .join(name),
    )
    .unwrap()
}

pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .current_dir(repo_root().join("plugins"))
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the plugins failed (is the wasm32-wasip2 target installed? `just setup`)"
        );
    });
    let path = repo_root().join(format!(
        "plugins/target/wasm32-wasip2/release/{}.wasm",
        name.replace('-', "_")
    ));
    assert!(
        path.is_file(),
        "plugin {name} was not built at {}",
        path.display()
    );
    path
}

/// A test's own bus: a fresh `nats-server` on a free port with its own store.
pub struct TestBus {
    pub server: EmbeddedNats,
    pub dir: tempfile::TempDir,
    probe: Probe,
    /// The server's URL with its credentials, as a config's `[bus].url`.
    url: String,
}

/// A client of a test's bus (one server or a cluster), for publishing
/// inputs and checking outputs.
pub struct Probe {
    pub js: jetstream::Context,
}

impl std::ops::Deref for TestBus {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl TestBus {
    pub async fn start() -> TestBus {
        let dir = tempfile::tempdir().expect("tempdir");
        let server =
            EmbeddedNats::start(&nats_server_binary(), &dir.path().join("nats"), None, None)
                .expect("nats-server starts");
        let url = server.client_url();
        let js = plexus_host::bus::Bus::connect(&url)
            .await
            .expect("connect")
            .js;
        TestBus {
            server,
            dir,
            probe: Probe { js },
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Probe {
    /// The stream holding `subject`: the one capturing it, or at a hub, the
    /// one an edge forwards it into (which captures nothing itself).
    pub async fn stream_of(&self, subject: &str) -> Option<String> {
        if let Ok(name) = self.js.stream_by_subject(subject).await {
            return Some(name);
        }
        let mut streams = self.js.streams();
        while let Some(Ok(info)) = streams.next().await {
            let forwarded: Vec<String> = info
                .config
                .metadata
                .get(plexus_host::bus::FORWARDED_SUBJECTS)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            if forwarded.iter().any(|s| s == subject) {
                return Some(info.config.name.clone());
            }
        }
        None
    }

    /// Create a stream capturing `subject` (as an upstream system would).
    pub async fn stream(&self, name: &str, subject: &str) {
        self.js
            .get_or_create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await
            .expect("stream");
    }

    /// Publish records `range` to `subject`, each with `Nats-Msg-Id: in-<i>` and
    /// key `<i>`, waiting for every ack.
    pub async fn publish_range(
        &self,
        subject: &str,
        range: std::ops::Range<usize>,
        payload: impl Fn(usize) -> String,
    ) {
        let mut acks = Vec::new();
        for i in range {
            let mut h = HeaderMap::new();
            h.insert("Nats-Msg-Id", format!("in-{i}").as_str());
            h.insert("Plexus-Key", i.to_string().as_str());
            acks.push(
                self.js
                    .publish_with_headers(subject.to_owned(), h, payload(i).into())
                    .await
                    .expect("publish"),
            );
            if acks.len() >= 512 {
                for ack in acks.drain(..) {
                    ack.await.expect("ack");
                }
            }
        }
        for ack in acks {
            ack.await.expect("ack");
        }
    }

    /// Number of messages stored for `subject` (0 if no stream captures it yet).
    /// A request that times out (a cluster electing a new leader) is asked again.
    pub async fn count(&self, subject: &str) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Some(name) = self.stream_of(subject).await else {
                return 0;
            };
            let counted = async {
                let stream = self.js.get_stream(name).await?;
                let mut per_subject = stream.info_with_subjects(subject).await?;
                let mut n = 0;
                while let Some(entry) = per_subject.next().await {
                    n += entry?.1 as u64;
                }
                anyhow::Ok(n)
            };
            match counted.await {
                Ok(n) => return n,
                Err(error) => {
                    assert!(Instant::now() < deadline, "cannot count {subject}: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Wait until `subject` holds at least `n` messages.
    pub async fn wait_for_count(&self, subject: &str, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let have = self.count(subject).await;
            if have >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{subject} has {have} of {n} messages after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until connector `name` has nothing pending and nothing unacknowledged.
    pub async fn wait_drained(&self, from: &str, name: &str) {
        let stream = self.stream_of(from).await.expect("input stream");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let consumer: Result<consumer::PullConsumer, _> = self
                .js
                .get_consumer_from_stream(format!("plexus-{name}"), stream.clone())
                .await;
            if let Ok(mut consumer) = consumer {
                let info = consumer.info().await.expect("consumer info");
                if info.num_pending == 0 && info.num_ack_pending == 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "connector {name} did not drain within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `subject` holds exactly `n` records, each from a different source record.
    pub async fn assert_exactly_once(&self, subject: &str, n: u64) {
        assert_eq!(
            self.count(subject).await,
            n,
            "nothing lost, nothing duplicated"
        );
        let sources: std::collections::HashSet<String> = self
            .messages(subject)
            .await
            .iter()
            .map(|m| header(m, "Plexus-Source").unwrap())
            .collect();
        assert_eq!(sources.len() as u64, n, "every source record once");
    }

    /// Call `f` with the payload of every message stored under `subject`, in
    /// stream order, without holding them all; returns how many there were.
    pub async fn for_each_payload(&self, subject: &str, mut f: impl FnMut(&[u8])) -> u64 {
        let expected = self.count(subject).await;
        let name = self.stream_of(subject).await.expect("stream");
        let stream = self.js.get_stream(name).await.expect("stream");
        let reader = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject.to_owned(),
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("reader");
        let mut seen = 0;
        while seen < expected {
            let mut batch = reader
                .fetch()
                .max_messages(((expected - seen) as usize).min(10_000))
                .messages()
                .await
                .expect("fetch");
            while let Some(msg) = batch.next().await {
                f(&msg.expect("message").payload);
                seen += 1;
            }
        }
        seen
    }

    /// Every message stored under `subject`, in stream order.
    pub async fn messages(&self, subject: &str) -> Vec<async_nats::jetstream::Message> {
        let expected = self.count(subject).await as usize;
        let name = self.stream_of(subject).await.expect("stream");
        let stream = self.js.get_stream(name).await.expect("stream");
        let reader = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject.to_owned(),
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .expect("reader");
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            let mut batch = reader
                .fetch()
                .max_messages(expected - out.len())
                .messages()
                .await
                .expect("fetch");
            while let Some(msg) = batch.next().await {
                out.push(msg.expect("message"));
            }
        }
        out
    }
}

pub fn header(msg: &async_nats::Message, name: &str) -> Option<String> {
    msg.headers
        .as_ref()?
        .get(name)
        .map(|v| v.as_str().to_owned())
}

/// A config file in `dir` for a host on `bus`, with `connectors` appended.
pub fn write_config(dir: &Path, bus_url: Option<&str>, connectors: &str) -> PathBuf {
    let bus = bus_url
        .map(|u| format!("[bus]\nurl = \"{u}\"\n\n"))
        .unwrap_or_default();
    let text = format!(
        "{bus}[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n\n{connectors}",
        dir.join("data").display()
    );
    let file = dir.join("plexus.toml");
    std::fs::write(&file, text).expect("write config");
    file
}

/// A transform connector block using the testkit plugin.
pub fn testkit(name: &str, from: &str, to: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"{from}\"\nto = \"{to}\"\n{extra}\n",
        plugin("testkit").display()
    )
}

pub async fn start_host(file: &Path) -> Host {
    Host::start(Config::load(file).expect("valid config"))
        .await
        .expect("host starts")
}

/// Run the `plexus` binary with `args` and `-c <file>`.
pub async fn plexus_with_config(args: &[&str], file: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .arg("-c")
        .arg(file)
        .output()
        .await
        .expect("plexus runs")
}

/// The stdout of a `plexus` run that must have succeeded.
pub fn cli_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "plexus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until `condition` holds, polling it.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Fetch `/metrics` from a host's admin endpoint.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    admin_get(addr, "/metrics")
}

/// GET `path` from a host's admin endpoint; the whole response, which must be a 200.
pub fn admin_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to admin endpoint");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The value of one sample, e.g. `plexus_dlq_total{connector="x"}`.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The `plexus` binary as a child process, stdout read line by line.
pub struct HostProcess {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub stderr_file: PathBuf,
}

impl HostProcess {
    pub fn spawn(args: &[&str], dir: &Path) -> HostProcess {
        HostProcess::spawn_with_env(args, dir, &[])
    }

    pub fn spawn_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> HostProcess {
        let stderr_file = dir.join(format!(
            "plexus-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(args)
            .env("PLEXUS_NATS_SERVER", nats_server_binary())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_file).expect("log file"))
            .spawn()
            .expect("plexus starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        HostProcess {
            child,
            lines,
            stderr_file,
        }
    }

    /// Wait for a stdout line starting with `prefix` and return it.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line starting with {prefix:?} from plexus; its log:\n{}",
                    std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
                ),
            }
        }
    }

    /// The stdout lines printed so far and not yet read, without waiting.
    pub fn lines_so_far(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve `app` on a free local port.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

// ---------------------------------------------------------------- connectors and listeners

/// A `[[connector]]` block running the reference plugin `plugin_name`.
pub fn connector(name: &str, kind: &str, plugin_name: &str, body: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"{kind}\"\nplugin = \"{}\"\n{body}\n",
        plugin(plugin_name).display()
    )
}

/// An HL7 v2 order from MMS at STMARYS, control id REQ-1.
pub const HL7: &str = "MSH|^~\\&|MMS|STMARYS|ERP|HQ|20260522083000||OMS^O05^OMS_O05|REQ-1|P|2.5\rORC|NW|REQ-1\rRQD|1|4471^Gauze||10|BX\r";

/// `message` in MLLP framing.
pub fn framed(message: &str) -> Vec<u8> {
    let mut out = vec![0x0b];
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&[0x1c, 0x0d]);
    out
}

/// Read one framed ACK and return its MSA segment.
pub async fn read_ack<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    try_read_ack(stream)
        .await
        .expect("an ACK arrives before the connection closes")
}

/// The MSA segment of the next ACK, or `None` if the connection closes first.
pub async fn try_read_ack<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    let read = async {
        loop {
            stream.read_exact(&mut byte).await?;
            buf.push(byte[0]);
            if buf.ends_with(&[0x1c, 0x0d]) {
                break;
            }
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("an ACK or a close within PATIENCE")
        .ok()?;
    let text = String::from_utf8(buf).unwrap();
    Some(
        text.split('\r')
            .find(|s| s.starts_with("MSA"))
            .unwrap()
            .to_owned(),
    )
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// POST `body` to `path`; the status and body of the answer.
pub async fn http_post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_request(addr, "POST", path, &[], body).await
}

/// One HTTP/1.1 request with `headers`; the status and body of the answer.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------- certificates

/// A test CA with a server certificate (localhost, 127.0.0.1) and a client
/// certificate, as PEM files in `dir`; a second CA's client certificate
/// stands for a stranger.
pub struct TestPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TestPki {
    pub fn generate(dir: &Path) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let authority = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, Issuer::new(params, key))
        };
        let (ca_cert, ca) = authority("Plexus test CA");
        let (_, other_ca) = authority("Someone else's CA");
        let leaf = |names: Vec<String>, issuer: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], &ca);
        let (client_cert, client_key) = leaf(vec!["lab-a.example".into()], &ca);
        let (stranger_cert, stranger_key) = leaf(vec!["stranger.example".into()], &other_ca);
        TestPki {
            ca: write("ca.pem", ca_cert.pem()),
            server_cert: write("server.pem", server_cert),
            server_key: write("server.key", server_key),
            client_cert: write("client.pem", client_cert),
            client_key: write("client.key", client_key),
            stranger_cert: write("stranger.pem", stranger_cert),
            stranger_key: write("stranger.key", stranger_key),
        }
    }

    /// A TLS client trusting the test CA, presenting `identity` (cert, key) if given.
    pub fn client(&self, identity: Option<(&Path, &Path)>) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&self.ca).unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(cert).unwrap()],
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}

// ---------------------------------------------------------------- a NATS cluster

/// A JetStream cluster of `nats-server` processes on loopback ports, each
/// with its own store; every node is killed on drop.
pub struct TestCluster {
    pub nodes: Vec<Option<Child>>,
    /// `nats://…` of every node, comma-separated: what a host is given.
    pub urls: String,
    probe: Probe,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestCluster {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl TestCluster {
    pub async fn start(size: usize) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nhost: 127.0.0.1\nport: {client}\njetstream {{ store_dir: \"{}\" }}\ncluster {{\n  name: plexus-test\n  host: 127.0.0.1\n  port: {route}\n  routes: [{}]\n}}\n",
                    store.display(),
                    routes.join(", ")
                ),
            )
            .expect("node config");
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
            nodes.push(Some(
                Command::new(nats_server_binary())
                    .arg("-c")
                    .arg(&config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("nats-server starts"),
            ));
        }
        let urls = ports
            .iter()
            .map(|(client, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",");
        // Ready when the cluster can place a stream on every node.
        let deadline = Instant::now() + PATIENCE;
        let js = loop {
            if let Ok(bus) = plexus_host::bus::Bus::connect(&urls).await {
                let made = bus
                    .js
                    .create_stream(stream::Config {
                        name: "READY".into(),
                        subjects: vec!["ready.check".into()],
                        num_replicas: size,
                        ..Default::default()
                    })
                    .await;
                if made.is_ok() {
                    bus.js.delete_stream("READY").await.expect("delete");
                    break bus.js;
                }
            }
            assert!(Instant::now() < deadline, "the NATS cluster did not form");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        TestCluster {
            nodes,
            urls,
            probe: Probe { js },
            _dir: dir,
        }
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill().expect("SIGKILL");
            node.wait().expect("reaped");
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

// ---------------------------------------------------------------- a hub and its edges

/// A hub: one `nats-server` with JetStream in domain `hub`, a client port,
/// and a leaf node port edges join with user `leaf`, password [`LEAF_PASSWORD`].
pub struct TestHub {
    pub node: Option<Child>,
    /// `nats://…` of its client port.
    pub url: String,
    pub leaf_port: u16,
    probe: Probe,
    _dir: tempfile::TempDir,
}

/// The password edges join the test hub's leaf port with.
pub const LEAF_PASSWORD: &str = "leaf-secret-1";

impl std::ops::Deref for TestHub {
    type Target = Probe;
    fn deref(&self) -> &Probe {
        &self.probe
    }
}

impl TestHub {
    pub async fn start() -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let (client, leaf_port) = (free_port(), free_port());
        let config = dir.path().join("hub.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: hub\nhost: 127.0.0.1\nport: {client}\njetstream {{ domain: hub, store_dir: \"{}\" }}\nleafnodes {{\n  host: 127.0.0.1\n  port: {leaf_port}\n  no_advertise: true\n  authorization {{ user: leaf, password: \"{LEAF_PASSWORD}\" }}\n}}\n",
                dir.path().join("store").display()
            ),
        )
        .expect("hub config");
        let url = format!("nats://127.0.0.1:{client}");
        let node = Some(TestHub::spawn(&config, dir.path()));
        let js = loop_connect(&url).await;
        TestHub {
            node,
            url,
            leaf_port,
            probe: Probe { js },
            _dir: dir,
        }
    }

    fn spawn(config: &Path, dir: &Path) -> Child {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("hub.log"))
            .expect("log");
        Command::new(nats_server_binary())
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts")
    }
}

/// A client of `url` once JetStream answers there.
pub async fn loop_connect(url: &str) -> jetstream::Context {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(bus) = plexus_host::bus::Bus::connect(url).await
            && bus.js.query_account().await.is_ok()
        {
            return bus.js;
        }
        assert!(Instant::now() < deadline, "the hub did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(node) = &mut self.node {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A WAN link that can be cut: a TCP relay on a loopback port to
/// `upstream`. Cut, it closes every connection and refuses new ones.
pub struct Link {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn start(upstream: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (cut, watching) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *watching.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut watching = watching.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watching.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Link { port, cut, task }
    }

    /// Drop every connection and refuse new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Let connections through again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `wasm` with a custom section appended: the same plugin, other bytes.
pub fn rebuilt(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"plexus-test-build";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section
    let mut size = body.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        out.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

/// Run `plexus` with `args` (not taking `$PLEXUS_BUS` from the test's
/// environment); its output.
pub async fn plexus(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .env_remove("PLEXUS_BUS")
        .output()
        .await
        .expect("plexus runs")
}

/// Run `plexus` with `args` until its output satisfies `done`; that output.
pub async fn until_output(args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = cli_stdout(&plexus(args).await);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "plexus {args:?} never showed it:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! The bus asks who the host is: a host connects with a creds file, an nkey,
//! or a user and password, over TLS, to a `nats-server` configured here; a
//! wrong password names the problem without printing it. The embedded bus
//! has credentials of its own, one host per store, and no orphan outlives
//! a killed host's successor.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::*;

/// A `nats-server` with JetStream and the config `extra`, on a free port.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(dir: &Path, extra: &str) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "host: \"127.0.0.1\"\nport: -1\njetstream {{ store_dir: \"{}\" }}\n{extra}\n",
                dir.join("js").display()
            ),
        )
        .unwrap();
        let ports = dir.join("ports");
        std::fs::create_dir_all(&ports).unwrap();
        let child = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&conf)
            .arg("--ports_file_dir")
            .arg(&ports)
            .arg("-l")
            .arg(dir.join("server.log"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = child;
        let file = ports.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + PATIENCE;
        let url = loop {
            if let Some(url) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_owned))
            {
                break url;
            }
            assert!(
                Instant::now() < deadline && child.try_wait().unwrap().is_none(),
                "nats-server did not start: {}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            // The ports file appears once the server listens.
            std::thread::sleep(Duration::from_millis(20));
        };
        Server { child, url }
    }

    fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config on `url` with `bus` settings and one source that publishes what
/// it is sent over HTTP.
fn config(dir: &Path, url: &str, bus: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("plexus.toml");
    std::fs::write(
        &file,
        format!(
            "[bus]\nurl = \"{url}\"\n{bus}\n\n[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n\n{}",
            dir.join("data").display(),
            connector("lab", "source", "mllp", "listen = \"http\"\nto = \"raw.lab\"")
        ),
    )
    .unwrap();
    file
}

/// Start a host on `file` and see a record through it.
async fn works(file: &Path) {
    let host = start_host(file).await;
    let (status, body) = http_post(host.http_addr(), "/ingest/lab", HL7).await;
    assert_eq!(status, 202, "{body}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_connects_with_a_password_over_tls_and_hides_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&dir.path().join("pki"));
    let server = Server::start(
        &dir.path().join("server"),
        &format!(
            "authorization {{ user: \"plexus\", password: \"correct-horse\" }}\ntls {{ cert_file: \"{}\", key_file: \"{}\" }}",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    );
    let url = format!("tls://127.0.0.1:{}", server.port());
    let tls = format!("tls = {{ ca = \"{}\" }}", pki.ca.display());
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(&secrets, "BUS_PASSWORD = \"correct-horse\"\n").unwrap();
    let host_dir = dir.path().join("ok");
    let file = config(
        &host_dir,
        &url,
        &format!("user = \"plexus\"\npassword = \"BUS_PASSWORD\"\n{tls}"),
    );
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "[host]\n",
        &format!("[host]\nsecrets_file = \"{}\"\n", secrets.display()),
    );
    std::fs::write(&file, text).unwrap();
    works(&file).await;

    // A wrong password: named as the problem, never printed.
    std::fs::write(&secrets, "BUS_PASSWORD = \"battery-staple\"\n").unwrap();
    let out = plexus_with_config(&["up"], &file).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the host's credentials"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("battery-staple") && !stderr.contains("correct-horse"),
        "{stderr}"
    );

    // A password in the URL is redacted from every message too.
    let leaky = format!("tls://plexus:battery-staple@127.0.0.1:{}", server.port());
    let file = config(&dir.path().join("leaky"), &leaky, &tls);
    let out = plexus_with_config(&["up"], &file).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[redacted]@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("battery-staple"), "{stderr}");

    // Without the CA, the server's certificate is not trusted.
    let file = config(&dir.path().join("untrusting"), &url, "");
    let out = plexus_with_config(&["up"], &file).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// A JWT signed by `issuer`, as nats-server reads them.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{}{}", name.to_uppercase(), subject),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = b64(claims.to_string().as_bytes());
    let signature = issuer
        .sign(format!("{header}.{claims}").as_bytes())
        .unwrap();
    format!("{header}.{claims}.{}", b64(&signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_connects_with_a_creds_file_or_an_nkey() {
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "test-operator",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "plexus-account",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        "plexus",
        serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}),
    );
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let server = Server::start(
        &dir.path().join("server"),
        &format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{account_jwt}\"\n  {}: \"{system_jwt}\"\n}}",
            system.public_key(),
            account.public_key(),
            system.public_key()
        ),
    );
    let creds = dir.path().join("plexus.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n-----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let file = config(
        &dir.path().join("creds"),
        &server.url,
        &format!("creds = \"{}\"", creds.display()),
    );
    works(&file).await;
    let anonymous = config(&dir.path().join("anonymous"), &server.url, "");
    let out = plexus_with_config(&["up"], &anonymous).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "no credentials, no bus: {out:?}"
    );

    // An nkey, its seed a secret.
    let nkey_user = nkeys::KeyPair::new_user();
    let nkey_server = Server::start(
        &dir.path().join("nkey-server"),
        &format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            nkey_user.public_key()
        ),
    );
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("BUS_NKEY = \"{}\"\n", nkey_user.seed().unwrap()),
    )
    .unwrap();
    let file = config(
        &dir.path().join("nkey"),
        &nkey_server.url,
        "nkey = \"BUS_NKEY\"",
    );
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "[host]\n",
        &format!("[host]\nsecrets_file = \"{}\"\n", secrets.display()),
    );
    std::fs::write(&file, text).unwrap();
    works(&file).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_bus_is_locked_guarded_and_never_orphaned() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        None,
        &connector(
            "lab",
            "source",
            "mllp",
            "listen = \"http\"\nto = \"raw.lab\"",
        ),
    );
    let up = ["up", "-c", file.to_str().unwrap()];
    let secret = ("PLEXUS_SECRET_ERP_TOKEN", "never-in-the-child");
    let mut first = HostProcess::spawn_with_env(&up, dir.path(), &[secret]);
    first.wait_line("plexus: up");
    let store = dir.path().join("data/nats");
    let credentials = store.join("credentials.toml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "the embedded bus's credentials are the host user's alone"
    );
    let nats_pid: u32 = std::fs::read_to_string(store.join("nats-server.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{nats_pid}/environ")).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains("PLEXUS_SECRET"),
        "secrets are not handed to nats-server"
    );

    // A second host on the same data_dir refuses to start.
    let out = plexus_with_config(&["up"], &file).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another plexus host"));

    // Killed hard, the host leaves its nats-server behind; the next start stops it.
    first.kill9();
    assert!(
        Path::new(&format!("/proc/{nats_pid}")).exists(),
        "the orphan is there"
    );
    let mut second = HostProcess::spawn(&up, dir.path());
    second.wait_line("plexus: up");
    let gone = Instant::now() + PATIENCE;
    while Path::new(&format!("/proc/{nats_pid}")).exists() {
        // A zombie until its parent (gone) is reaped by init; /proc/<pid>/stat says so.
        let state = std::fs::read_to_string(format!("/proc/{nats_pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(Instant::now() < gone, "the orphaned nats-server still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    second.signal("TERM");
    assert!(second.child.wait().unwrap().success());
}

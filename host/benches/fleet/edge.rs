//! An edge host after a WAN outage: a hub `nats-server` (domain `hub`,
//! a leaf port), a real `plexus up` edge whose bus is its leaf node, a
//! backlog built at the edge while the hub is down, and how fast the hub
//! takes it once it is back.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;

/// The hub's leaf password (test value).
const LEAF_PASSWORD: &str = "bench-leaf";

/// A hub `nats-server`, restartable on the same ports and store.
struct Hub {
    child: Option<Child>,
    config: std::path::PathBuf,
    url: String,
}

impl Hub {
    fn start(dir: &Path, binary: &Path) -> (Hub, u16) {
        let (client, leaf) = (free_port(), free_port());
        let config = dir.join("hub.conf");
        std::fs::write(
            &config,
            format!(
                "server_name: hub\nhost: 127.0.0.1\nport: {client}\njetstream {{ domain: hub, store_dir: \"{}\" }}\n\
                 leafnodes {{\n  host: 127.0.0.1\n  port: {leaf}\n  no_advertise: true\n  authorization {{ user: leaf, password: \"{LEAF_PASSWORD}\" }}\n}}\n",
                dir.join("hub-store").display()
            ),
        )
        .unwrap();
        let mut hub = Hub {
            child: None,
            config,
            url: format!("nats://127.0.0.1:{client}"),
        };
        hub.spawn(binary);
        (hub, leaf)
    }

    fn spawn(&mut self, binary: &Path) {
        self.child = Some(
            Command::new(binary)
                .arg("-c")
                .arg(&self.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn connect(url: &str) -> jetstream::Context {
    let deadline = Instant::now() + Duration::from_secs(60);
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

/// Messages in the hub's stream `name` (0 while it cannot be read).
async fn stored(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map_or(0, |i| i.state.messages),
        Err(_) => 0,
    }
}

/// (link back → first record at the hub, records/s draining `backlog`,
/// records at the hub when it stopped growing).
pub async fn forward_after_outage(
    dir: &Path,
    binary: &Path,
    mllp: &Path,
    backlog: usize,
) -> (Duration, f64, u64) {
    let (mut hub, leaf) = Hub::start(dir, binary);
    let hub_js = connect(&hub.url).await;
    let home = dir.join("edge");
    std::fs::create_dir_all(&home).unwrap();
    let config = home.join("plexus.toml");
    let data = home.join("data");
    std::fs::write(
        &config,
        format!(
            "[bus]\nleaf = \"nats-leaf://127.0.0.1:{leaf}\"\nleaf_user = \"leaf\"\nleaf_password = \"leaf\"\n\
             [host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\nlabels = {{ facility = \"bench\" }}\n",
            data.display()
        ),
    )
    .unwrap();
    let mut edge = super::FleetHost::spawn(
        &[
            "up",
            "-c",
            &config.display().to_string(),
            "--id",
            "bench-edge",
        ],
        &home,
        &[
            ("PLEXUS_SECRET_LEAF", LEAF_PASSWORD),
            ("PLEXUS_NATS_SERVER", &binary.display().to_string()),
        ],
    );
    super::plexus(&[
        "deploy",
        &mllp.display().to_string(),
        "--name",
        "mllp",
        "--version",
        "1.0.0",
        "--bus",
        &hub.url,
    ]);
    let definitions = dir.join("edge.toml");
    std::fs::write(
        &definitions,
        format!(
            "[[connector]]\nname = \"adt-in\"\nkind = \"source\"\nplugin = \"mllp@1.0.0\"\nlisten = \"mllp://127.0.0.1:{}\"\nto = \"raw.bench.hl7\"\nplacement = {{ facility = \"bench\" }}\n",
            free_port()
        ),
    )
    .unwrap();
    super::plexus(&[
        "apply",
        "-c",
        &definitions.display().to_string(),
        "--approve",
        "--bus",
        &hub.url,
    ]);
    edge.wait_for("added [\"adt-in\"]");
    let edge_js = plexus_host::bus::Bus::connect_with(
        &plexus_host::bus::embedded::running_url(&data.join("nats")).unwrap(),
        &plexus_host::bus::embedded::stored_auth(&data.join("nats")).unwrap(),
        None,
        plexus_host::bus::Limits::default(),
    )
    .await
    .unwrap()
    .js;
    let name = edge_js.stream_by_subject("raw.bench.hl7").await.unwrap();
    // Forwarding is set up before the connector starts.
    assert!(hub_js.get_stream(&name).await.is_ok(), "hub stream {name}");

    // The outage: the hub is down while the edge stores the backlog.
    hub.kill();
    let record = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/hl7v2/fixtures/requisition.hl7"),
    )
    .unwrap();
    let mut acks = Vec::new();
    for i in 0..backlog {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("bench-{i}").as_str());
        let payload = record.replace("REQ-1001", &format!("REQ-{i}"));
        acks.push(
            edge_js
                .publish_with_headers("raw.bench.hl7", headers, payload.into())
                .await
                .unwrap(),
        );
        if acks.len() >= 1024 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }

    hub.spawn(binary);
    let back = Instant::now();
    let hub_js = connect(&hub.url).await;
    let total = backlog as u64;
    let mut first = None;
    let (mut last, mut changed) = (0, Instant::now());
    let have = loop {
        let have = stored(&hub_js, &name).await;
        if have > 0 && first.is_none() {
            first = Some((Instant::now(), have));
        }
        if have != last {
            (last, changed) = (have, Instant::now());
        }
        // Done, or stalled: what arrived is reported, not assumed.
        if have >= total || (have > 0 && changed.elapsed() > Duration::from_secs(15)) {
            break have;
        }
        assert!(
            back.elapsed() < Duration::from_secs(600),
            "the hub has {have} of {total} after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let done = changed;
    // Stopped gracefully: the edge stops its own nats-server.
    let _ = Command::new("kill")
        .args(["-TERM", &edge.child.id().to_string()])
        .status();
    let _ = edge.child.wait();
    let (first_at, first_count) = first.unwrap();
    let took = done.duration_since(first_at).max(Duration::from_millis(1));
    let drained = (have - first_count) as f64 / took.as_secs_f64();
    (first_at.duration_since(back), drained, have)
}

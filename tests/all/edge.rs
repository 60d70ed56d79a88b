//! Edge hosts: a hospital's host whose bus is a leaf node of the hub
//! (`[bus].leaf`), taking HL7 over MLLP through WAN outages and a crash,
//! forwarding to the hub exactly once, and controlled from the hub.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use crate::support::*;

/// Wait until `condition` holds (checked every 200 ms, for at most PATIENCE).
async fn wait_until_async<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An edge host process; its embedded nats-server is stopped with it.
struct Edge {
    process: HostProcess,
    data: PathBuf,
    config: PathBuf,
    dir: PathBuf,
    /// The admin endpoint, from its "up" line.
    admin: std::net::SocketAddr,
}

/// The short config an acquired hospital's host needs.
fn edge_config(dir: &Path, id: &str, leaf_port: u16) -> (PathBuf, PathBuf) {
    let home = dir.join(id);
    std::fs::create_dir_all(&home).unwrap();
    let data = home.join("data");
    let file = home.join("plexus.toml");
    std::fs::write(
        &file,
        format!(
            "[bus]\nleaf = \"nats-leaf://127.0.0.1:{leaf_port}\"\nleaf_user = \"leaf\"\nleaf_password = \"leaf\"\n\n\
             [host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\nlabels = {{ facility = \"st-marys\" }}\nlease_ttl = \"3s\"\n",
            data.display()
        ),
    )
    .unwrap();
    (file, data)
}

impl Edge {
    fn start(dir: &Path, id: &str, leaf_port: u16) -> Edge {
        let (config, data) = edge_config(dir, id, leaf_port);
        Edge::spawn(dir, id, config, data)
    }

    fn spawn(dir: &Path, id: &str, config: PathBuf, data: PathBuf) -> Edge {
        let (process, admin) = Edge::process(dir, id, &config);
        Edge {
            process,
            data,
            config,
            dir: dir.to_owned(),
            admin,
        }
    }

    fn process(dir: &Path, id: &str, config: &Path) -> (HostProcess, std::net::SocketAddr) {
        let file = config.display().to_string();
        let mut process = HostProcess::spawn_with_env(
            &["up", "-c", &file, "--id", id],
            dir,
            &[("PLEXUS_SECRET_LEAF", LEAF_PASSWORD)],
        );
        let up = process.wait_line("plexus: up in the fleet");
        assert!(up.contains("edge of the hub"), "{up}");
        let admin = up
            .split("metrics at http://")
            .nth(1)
            .and_then(|a| a.split("/metrics").next())
            .unwrap()
            .parse()
            .unwrap();
        (process, admin)
    }

    /// kill -9 the host (its nats-server is left running, as after a
    /// crash) and start it again on the same config and store.
    fn crash_and_restart(&mut self, id: &str) {
        self.process.kill9();
        let (process, admin) = Edge::process(&self.dir, id, &self.config);
        self.process = process;
        self.admin = admin;
    }

    fn waiting(&self) -> f64 {
        metric(&scrape(self.admin), "plexus_forward_waiting")
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        if let Some(pid) = std::fs::read_to_string(self.data.join("nats/nats-server.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

async fn deploy(hub: &str, file: &Path, name: &str, version: &str) {
    let file = file.display().to_string();
    cli_stdout(
        &plexus(&[
            "deploy",
            &file,
            "--name",
            name,
            "--version",
            version,
            "--bus",
            hub,
        ])
        .await,
    );
}

async fn apply(hub: &str, file: &Path) -> String {
    let file = file.display().to_string();
    cli_stdout(&plexus(&["apply", "-c", &file, "--approve", "--bus", hub]).await)
}

/// The site's MLLP source, placed on the st-marys edge.
fn adt_in(port: u16, version: &str) -> String {
    format!(
        "[[connector]]\nname = \"adt-in\"\nkind = \"source\"\nplugin = \"mllp@{version}\"\n\
         listen = \"mllp://127.0.0.1:{port}\"\nto = \"raw.st-marys.hl7\"\nplacement = {{ facility = \"st-marys\" }}\n"
    )
}

/// Message `i`: a supply requisition whose control id is `REQ-<i>`.
fn message(i: usize) -> String {
    static REQUISITION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REQUISITION
        .get_or_init(|| {
            std::fs::read_to_string(repo_root().join("plugins/hl7v2/fixtures/requisition.hl7"))
                .unwrap()
        })
        .replace("REQ-1001", &format!("REQ-{i}"))
}

/// Send messages `range` over MLLP to `port` on `lanes` connections, each
/// message until it is answered `AA` (a connection that drops, as when the
/// host is killed, is opened again and the message sent again, as senders
/// do). Any other answer fails the test.
async fn send_all(port: u16, range: std::ops::Range<usize>, lanes: usize) {
    let range = Arc::new(range);
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let range = range.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection: Option<tokio::net::TcpStream> = None;
            for i in (range.start..range.end).filter(|i| i % lanes == lane) {
                let deadline = Instant::now() + PATIENCE;
                loop {
                    assert!(Instant::now() < deadline, "message {i} never got AA");
                    let stream = match &mut connection {
                        Some(stream) => stream,
                        None => match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            Ok(stream) => connection.insert(stream),
                            Err(_) => {
                                // The host is restarting.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    if stream.write_all(&framed(&message(i))).await.is_err() {
                        connection = None;
                        continue;
                    }
                    match try_read_ack(stream).await {
                        Some(ack) => {
                            assert_eq!(ack, format!("MSA|AA|REQ-{i}|"), "message {i}");
                            break;
                        }
                        None => connection = None,
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Canonical records at the hub: the hub's HL7 transform, placed on hub hosts.
const HL7_IN: &str = "[[connector]]\nname = \"hl7-in\"\nkind = \"transform\"\nplugin = \"hl7v2@1.0.0\"\n\
    from = \"raw.st-marys.hl7\"\nto = \"canon\"\nplacement = { role = \"hub\" }\n\
    emits = [\"purchase-order/1\", \"item/1\", \"inventory-txn/1\", \"worker/1\"]\n";

/// A hub host: `plexus up --bus` labelled role=hub.
fn hub_host(hub: &TestHub, dir: &Path) -> HostProcess {
    let home = dir.join("hub-1");
    std::fs::create_dir_all(&home).unwrap();
    let file = write(
        &home,
        "plexus.toml",
        &format!(
            "[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n",
            home.join("data").display()
        ),
    );
    let file = file.display().to_string();
    let mut host = HostProcess::spawn(
        &[
            "up", "--bus", &hub.url, "--id", "hub-1", "--label", "role=hub", "-c", &file,
        ],
        dir,
    );
    host.wait_line("plexus: up in the fleet");
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_acks_hl7_through_a_wan_outage_and_a_crash_and_the_hub_gets_each_record_once() {
    const TOTAL: usize = 10_000;
    let hub = TestHub::start().await;
    let link = Link::start(hub.leaf_port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut hub_1 = hub_host(&hub, dir.path());
    let mut edge = Edge::start(dir.path(), "st-marys-1", link.port);

    // The hospital's adapter is deployed and placed from the hub.
    deploy(&hub.url, &plugin("mllp"), "mllp", "1.0.0").await;
    deploy(&hub.url, &plugin("hl7v2"), "hl7v2", "1.0.0").await;
    let port = free_port();
    let definitions = write(
        dir.path(),
        "connectors.toml",
        &format!("{}\n{HL7_IN}", adt_in(port, "1.0.0")),
    );
    apply(&hub.url, &definitions).await;
    edge.process
        .wait_line("plexus: fleet applied; added [\"adt-in\"]");
    hub_1.wait_line("plexus: fleet applied; added [\"hl7-in\"]");

    send_all(port, 0..3_000, 4).await;
    let raw = "raw.st-marys.hl7";
    // With the link up, everything is forwarded.
    hub.wait_for_count(raw, 3_000).await;

    // The WAN link goes down for 30 s; the edge keeps answering AA.
    link.cut();
    let cut_at = Instant::now();
    edge.process
        .wait_line("plexus: fleet: cannot read the definitions");
    send_all(port, 3_000..5_000, 4).await;

    // The edge host crashes during the outage and comes back on what it
    // last read from the hub.
    edge.crash_and_restart("st-marys-1");
    edge.process
        .wait_line("plexus: fleet: cannot read the definitions");
    edge.process
        .wait_line("plexus: fleet applied; added [\"adt-in\"]");
    send_all(port, 5_000..7_000, 4).await;

    // What was taken during the outage waits at the edge (with any the hub
    // stored but had not yet confirmed when the link went).
    wait_until_async(
        "the edge counts the 4000 taken in the outage as waiting",
        || async { edge.waiting() >= 4_000.0 },
    )
    .await;
    assert!(edge.waiting() <= 7_000.0, "{}", edge.waiting());
    assert_eq!(hub.count(raw).await, 3_000, "nothing crossed the cut link");
    let hosts = until_output(&["hosts", "--bus", &hub.url], |out| {
        out.lines()
            .any(|l| l.starts_with("st-marys-1") && l.contains(" down "))
    })
    .await;
    assert!(hosts.contains("st-marys"), "{hosts}");

    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed())).await;
    link.restore();
    send_all(port, 7_000..TOTAL, 4).await;

    // Everything reaches the hub once, with its lineage and facility.
    hub.wait_for_count(raw, TOTAL as u64).await;
    hub.wait_for_count("canon.purchase_order", TOTAL as u64)
        .await;
    hub.wait_drained(raw, "hl7-in").await;
    hub.assert_exactly_once("canon.purchase_order", TOTAL as u64)
        .await;
    let forwarded = hub.messages(raw).await;
    assert_eq!(forwarded.len(), TOTAL);
    let mut ids = std::collections::HashSet::new();
    for msg in &forwarded {
        assert_eq!(header(msg, "Plexus-Facility").as_deref(), Some("st-marys"));
        assert!(header(msg, "Plexus-Trace").is_some());
        assert!(
            header(msg, "Plexus-Source")
                .unwrap()
                .starts_with("adt-in:st-marys/")
        );
        assert!(ids.insert(header(msg, "Nats-Msg-Id").unwrap()));
    }
    let canonical = hub.messages("canon.purchase_order").await;
    assert!(
        canonical
            .iter()
            .all(|m| header(m, "Plexus-Facility").as_deref() == Some("st-marys")),
        "the facility is carried onto canonical records"
    );
    until_output(&["status", "--bus", &hub.url], |out| {
        out.lines()
            .any(|l| l.starts_with("st-marys-1") && l.contains(" up "))
    })
    .await;
}

/// A hub, a cuttable link to it, and the St Mary's edge running its MLLP
/// source `adt-in` (placed from the hub) on the returned port.
async fn hospital_feed() -> (TestHub, Link, tempfile::TempDir, Edge, u16) {
    let hub = TestHub::start().await;
    let link = Link::start(hub.leaf_port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), "st-marys-1", link.port);
    deploy(&hub.url, &plugin("mllp"), "mllp", "1.0.0").await;
    let port = free_port();
    let definitions = write(dir.path(), "connectors.toml", &adt_in(port, "1.0.0"));
    apply(&hub.url, &definitions).await;
    edge.process
        .wait_line("plexus: fleet applied; added [\"adt-in\"]");
    (hub, link, dir, edge, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_link_forwards_every_record_once_and_in_order() {
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 600;
    let (hub, link, _dir, edge, port) = hospital_feed().await;

    // Each round the link drops while records are being taken and
    // forwarded, and comes back a moment later: batches are cut short in
    // flight, before or after the hub stored them.
    let raw = "raw.st-marys.hl7";
    for round in 0..ROUNDS {
        let range = round * PER_ROUND..(round + 1) * PER_ROUND;
        let flap = async {
            tokio::time::sleep(Duration::from_millis(150 + 100 * round as u64)).await;
            link.cut();
            tokio::time::sleep(Duration::from_millis(700 + 200 * (round % 3) as u64)).await;
            link.restore();
        };
        tokio::join!(send_all(port, range, 4), flap);
    }
    let total = (ROUNDS * PER_ROUND) as u64;
    hub.wait_for_count(raw, total).await;

    // The hub holds the edge's stream as it is: every record once, in the
    // edge's order, none skipped.
    let forwarded = hub.messages(raw).await;
    assert_eq!(forwarded.len() as u64, total);
    let mut ids = std::collections::HashSet::new();
    for (i, msg) in forwarded.iter().enumerate() {
        assert_eq!(
            header(msg, "Plexus-Edge-Seq").as_deref(),
            Some((i + 1).to_string().as_str()),
            "record {i} at the hub"
        );
        assert!(ids.insert(header(msg, "Nats-Msg-Id").unwrap()));
    }
    wait_until_async("the edge counts nothing waiting", || async {
        edge.waiting() == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_whose_store_is_lost_forwards_its_new_records_from_their_start() {
    let (hub, link, dir, edge, port) = hospital_feed().await;
    let raw = "raw.st-marys.hl7";
    send_all(port, 0..300, 4).await;
    hub.wait_for_count(raw, 300).await;

    // The machine's bus store is lost (a replaced disk): the edge comes back,
    // during an outage, with streams numbered from 1 again, and takes more
    // records than the hub has from it before the link returns.
    let (config, data) = (edge.config.clone(), edge.data.clone());
    drop(edge);
    std::fs::remove_dir_all(data.join("nats")).unwrap();
    link.cut();
    let mut edge = Edge::spawn(dir.path(), "st-marys-1", config, data);
    edge.process
        .wait_line("plexus: fleet applied; added [\"adt-in\"]");
    send_all(port, 1_000..1_400, 4).await;
    link.restore();

    // The hub's last record says 300, but it is not this store's 300th:
    // all 400 new records are forwarded, none skipped.
    hub.wait_for_count(raw, 700).await;
    let ids: std::collections::HashSet<String> = hub
        .messages(raw)
        .await
        .iter()
        .map(|m| header(m, "Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(ids.len(), 700);
    wait_until_async("the edge counts nothing waiting", || async {
        edge.waiting() == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_applied_at_the_hub_reaches_the_edge_once_the_link_is_back() {
    let hub = TestHub::start().await;
    let link = Link::start(hub.leaf_port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start(dir.path(), "st-marys-1", link.port);
    let v1 = std::fs::read(plugin("mllp")).unwrap();
    let v2 = rebuilt(&v1, "1.1.0");
    let v2_file = write(dir.path(), "mllp-1.1.0.wasm", "");
    std::fs::write(&v2_file, &v2).unwrap();
    deploy(&hub.url, &plugin("mllp"), "mllp", "1.0.0").await;
    deploy(&hub.url, &v2_file, "mllp", "1.1.0").await;
    let hop = |wasm: &[u8]| format!("adt-in@{}", &plexus_host::plugin::cache::digest(wasm)[..12]);
    let port = free_port();
    apply(
        &hub.url,
        &write(dir.path(), "v1.toml", &adt_in(port, "1.0.0")),
    )
    .await;
    edge.process
        .wait_line("plexus: fleet applied; added [\"adt-in\"]");
    send_all(port, 0..1, 1).await;

    link.cut();
    edge.process
        .wait_line("plexus: fleet: cannot read the definitions");
    let plan = apply(
        &hub.url,
        &write(dir.path(), "v2.toml", &adt_in(port, "1.1.0")),
    )
    .await;
    assert!(
        plan.contains("adt-in") && plan.contains("changed"),
        "{plan}"
    );
    // The hub has the upgrade; the edge, cut off, runs 1.0.0 and takes records.
    send_all(port, 1..2, 1).await;
    assert!(
        !edge
            .process
            .lines_so_far()
            .iter()
            .any(|l| l.contains("swapped")),
        "nothing reached the edge while the link was down"
    );

    link.restore();
    edge.process
        .wait_line("plexus: fleet applied; added [], swapped [\"adt-in\"]");
    send_all(port, 2..3, 1).await;
    hub.wait_for_count("raw.st-marys.hl7", 3).await;
    let hops: Vec<String> = hub
        .messages("raw.st-marys.hl7")
        .await
        .iter()
        .map(|m| header(m, "Plexus-Hops").unwrap())
        .collect();
    assert_eq!(
        hops,
        [hop(&v1), hop(&v1), hop(&v2)],
        "the old version ran until the link was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_configs_that_cannot_work_are_refused_with_the_key_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let file = write(dir.path(), "edge.toml", text);
        let file = file.display().to_string();
        async move { plexus(&["up", "-c", &file]).await }
    };
    for (text, expected) in [
        (
            "[bus]\nleaf = \"nats-leaf://127.0.0.1:7422\"\n",
            "[host].labels.facility",
        ),
        (
            "[bus]\nleaf = \"nats-leaf://leaf:pw@127.0.0.1:7422\"\n[host]\nlabels = { facility = \"a\" }\n",
            "leaf_creds",
        ),
        (
            "[bus]\nurl = \"nats://127.0.0.1:4222\"\nleaf = \"nats-leaf://127.0.0.1:7422\"\n[host]\nlabels = { facility = \"a\" }\n",
            "exclude each other",
        ),
        (
            "[bus]\nleaf = \"nats-leaf://127.0.0.1:7422\"\n[host]\nlabels = { facility = \"a\" }\n\n[[connector]]\nname = \"x\"\nkind = \"source\"\nplugin = \"x.wasm\"\nschedule = \"1s\"\nto = \"x\"\n",
            "takes its connectors from the hub",
        ),
    ] {
        let out = check(text).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!stderr.contains("pw@"), "{stderr}");
    }
}

/// A process killed with the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_onboarding_brings_st_marys_records_to_the_hub_as_canonical_records() {
    // demo/edge as the README runs it, on this test's ports and directories.
    let demo = repo_root().join("demo/edge");
    let read = |file: &str| std::fs::read_to_string(demo.join(file)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (client, leaf, mllp) = (free_port(), free_port(), free_port());
    let hub_conf = write(
        dir.path(),
        "hub.conf",
        &read("hub.conf")
            .replace("14231", &client.to_string())
            .replace("17422", &leaf.to_string())
            .replace(
                ".plexus/edge-demo/hub",
                &dir.path().join("hub").display().to_string(),
            ),
    );
    let _hub_server = KillOnDrop(
        std::process::Command::new(nats_server_binary())
            .arg("-c")
            .arg(&hub_conf)
            .env("PLEXUS_SECRET_LEAF", LEAF_PASSWORD)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("nats://127.0.0.1:{client}");
    let hub = Probe {
        js: loop_connect(&url).await,
    };
    let local = |text: String, name: &str| {
        text.replace(
            &format!("../../.plexus/edge-demo/{name}"),
            &dir.path().join(name).display().to_string(),
        )
    };
    let hub_host = write(
        dir.path(),
        "hub-host.toml",
        &local(read("hub-host.toml"), "hub-1"),
    );
    let hub_host = hub_host.display().to_string();
    let mut hub_1 = HostProcess::spawn(
        &[
            "up", "--bus", &url, "-c", &hub_host, "--id", "hub-1", "--label", "role=hub",
        ],
        dir.path(),
    );
    hub_1.wait_line("plexus: up in the fleet");
    let edge_config = write(
        dir.path(),
        "st-marys.toml",
        &local(read("st-marys.toml"), "st-marys").replace("17422", &leaf.to_string()),
    );
    let mut edge = Edge::spawn(
        dir.path(),
        "st-marys-1",
        edge_config,
        dir.path().join("st-marys"),
    );

    deploy(&url, &plugin("mllp"), "mllp", "1.0.0").await;
    deploy(&url, &plugin("hl7v2"), "hl7v2", "1.0.0").await;
    let connectors = write(
        dir.path(),
        "connectors.toml",
        &read("connectors.toml").replace("12575", &mllp.to_string()),
    );
    apply(&url, &connectors).await;
    edge.process
        .wait_line("plexus: fleet applied; added [\"st-marys-adt\"]");
    hub_1.wait_line("plexus: fleet applied; added [\"hl7-in\"]");

    send_all(mllp, 0..20, 1).await;
    hub.wait_for_count("canon.purchase_order", 20).await;
    hub.wait_drained("raw.st-marys.hl7", "hl7-in").await;
    hub.assert_exactly_once("canon.purchase_order", 20).await;
    let hosts = until_output(&["hosts", "--bus", &url], |out| {
        out.lines()
            .any(|l| l.starts_with("st-marys-1") && l.contains(" up "))
    })
    .await;
    assert!(hosts.contains("facility=st-marys"), "{hosts}");
}

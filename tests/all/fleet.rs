//! A fleet of hosts (`plexus up --bus`) changed live through the bus:
//! `plexus deploy`, `apply`, `rm`, placement, leases, signatures, and the
//! refusals that leave the buckets untouched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use futures::StreamExt as _;

use crate::support::*;

/// `plexus apply -c <file> --bus <url>` with `flags`; its output.
async fn apply(url: &str, file: &Path, flags: &[&str]) -> std::process::Output {
    let file = file.display().to_string();
    let mut args = vec!["apply", "-c", &file];
    args.extend(flags);
    args.extend(["--bus", url]);
    plexus(&args).await
}

/// A `plexus` run that must fail with exit 2; its stderr.
fn refused(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2; stdout: {} stderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A fleet host's own config: [host] (with `extra`) and `bus`.
fn host_config(dir: &Path, name: &str, extra: &str, bus: &str) -> PathBuf {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let file = home.join("plexus.toml");
    std::fs::write(
        &file,
        format!(
            "{bus}[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\nlease_ttl = \"3s\"\n{extra}",
            home.join("data").display()
        ),
    )
    .unwrap();
    file
}

/// `plexus up --bus` as host `id`, ready when it says so.
fn fleet_host(bus: &str, dir: &Path, id: &str, labels: &[&str], extra: &str) -> HostProcess {
    fleet_host_with(bus, dir, id, labels, extra, "")
}

/// [`fleet_host`] with a `[bus]` section in its config.
fn fleet_host_with(
    bus: &str,
    dir: &Path,
    id: &str,
    labels: &[&str],
    extra: &str,
    bus_section: &str,
) -> HostProcess {
    let config = host_config(dir, id, extra, bus_section);
    let mut args = vec!["up", "--bus", bus, "--id", id, "-c"];
    let config = config.display().to_string();
    args.push(&config);
    for label in labels {
        args.extend(["--label", label]);
    }
    let mut host = HostProcess::spawn(&args, dir);
    host.wait_line("plexus: up in the fleet");
    host
}

async fn deploy(bus: &str, name: &str, version: &str, extra: &[&str]) -> String {
    let file = plugin(name).display().to_string();
    let mut args = vec![
        "deploy",
        &file,
        "--name",
        name,
        "--version",
        version,
        "--bus",
        bus,
    ];
    args.extend(extra);
    cli_stdout(&plexus(&args).await)
}

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// What an ERP endpoint received: idempotency keys, and how many requests.
#[derive(Default)]
struct Received {
    keys: Mutex<HashSet<String>>,
    requests: Mutex<u64>,
}

async fn receive(State(r): State<Arc<Received>>, headers: HeaderMap) -> &'static str {
    *r.requests.lock().unwrap() += 1;
    if let Some(key) = headers.get("idempotency-key") {
        r.keys
            .lock()
            .unwrap()
            .insert(key.to_str().unwrap().to_owned());
    }
    "ok"
}

fn definitions(erp: std::net::SocketAddr) -> String {
    format!(
        r#"[[connector]]
name = "orders"
kind = "transform"
plugin = "testkit@1.0.0"
from = "fleet.in"
to = "fleet.out"
config = {{ tag = "v1" }}
delivery = {{ ack_wait = "5s" }}

[[connector]]
name = "erp"
kind = "sink"
plugin = "http-post@1.0.0"
from = "fleet.out"
config = {{ url = "http://{erp}/orders" }}
grants = {{ http = ["http://{erp}"] }}
delivery = {{ max_deliver = 50, backoff = ["20ms"], ack_wait = "5s" }}
"#
    )
}

/// Publish records `range` to `subject` (`Nats-Msg-Id: in-<i>`), retrying
/// any whose ack does not come (a cluster node may die meanwhile).
async fn publish_all(
    js: &async_nats::jetstream::Context,
    subject: &str,
    range: std::ops::Range<usize>,
) {
    let mut pending: Vec<usize> = range.collect();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !pending.is_empty() {
        let mut failed = Vec::new();
        for chunk in pending.chunks(500) {
            let mut acks = Vec::new();
            for &i in chunk {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", format!("in-{i}").as_str());
                h.insert("Plexus-Key", i.to_string().as_str());
                match js
                    .publish_with_headers(subject.to_owned(), h, format!("{{\"n\":{i}}}").into())
                    .await
                {
                    Ok(ack) => acks.push((i, ack)),
                    Err(_) => failed.push(i),
                }
            }
            for (i, ack) in acks {
                if ack.await.is_err() {
                    failed.push(i);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} records not stored",
            failed.len()
        );
        pending = failed;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_runs_an_applied_pipeline_exactly_once_through_a_host_and_a_node_dying()
 {
    let mut cluster = TestCluster::start(3).await;
    let url = cluster.urls.clone();
    let dir = tempfile::tempdir().unwrap();
    let received = Arc::new(Received::default());
    let erp = serve(
        Router::new()
            .route("/orders", post(receive))
            .with_state(received.clone()),
    )
    .await;
    let r3 = "[bus]\nreplicas = 3\n";
    let mut hosts: Vec<HostProcess> = ["a", "b", "c"]
        .iter()
        .map(|id| fleet_host_with(&url, dir.path(), id, &[], "", r3))
        .collect();

    let out = deploy(&url, "testkit", "1.0.0", &["--replicas", "3"]).await;
    assert!(out.starts_with("deployed testkit@1.0.0: sha256 "), "{out}");
    assert!(out.contains("transform world"), "{out}");
    deploy(&url, "http-post", "1.0.0", &[]).await;

    let file = write(dir.path(), "connectors.toml", &definitions(erp));
    let file = file.display().to_string();
    // The sink is granted an origin: a widening that needs --approve.
    let dry = cli_stdout(&plexus(&["apply", "-c", &file, "--dry-run", "--bus", &url]).await);
    assert!(dry.contains("erp") && dry.contains("added"), "{dry}");
    assert!(
        dry.contains(&format!("+ grants.http + http://{erp}")),
        "{dry}"
    );
    let stderr = refused(&plexus(&["apply", "-c", &file, "--bus", &url]).await);
    assert!(stderr.contains("widens capabilities"), "{stderr}");
    let applied = cli_stdout(&plexus(&["apply", "-c", &file, "--approve", "--bus", &url]).await);
    assert!(applied.contains("applied: 2 added"), "{applied}");

    // Every host picks both up, without a restart.
    for host in &mut hosts {
        let mut added = HashSet::new();
        while added.len() < 2 {
            added.extend(listed(&host.wait_line("plexus: fleet applied"), "added"));
        }
    }
    let streams = ["fleet.in", "fleet.out"];
    for subject in streams {
        let name = cluster.js.stream_by_subject(subject).await.unwrap();
        let info = cluster
            .js
            .get_stream(&name)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
        assert_eq!(info.config.num_replicas, 3, "{subject} is replicated");
    }

    // 20,000 records; a host is killed after a fifth, a bus node after half.
    let js = cluster.js.clone();
    let publisher = tokio::spawn(async move { publish_all(&js, "fleet.in", 0..20_000).await });
    cluster.wait_for_count("fleet.out", 4_000).await;
    hosts.pop().unwrap().kill9();
    cluster.wait_for_count("fleet.out", 10_000).await;
    let probe_node = cluster.js.client().server_info().server_name;
    let victim = (0..3).find(|i| format!("n{i}") != probe_node).unwrap();
    cluster.kill(victim);
    publisher.await.unwrap();

    cluster.wait_for_count("fleet.out", 20_000).await;
    cluster.wait_drained("fleet.in", "orders").await;
    cluster.assert_exactly_once("fleet.out", 20_000).await;
    wait_until("the ERP has every record", || {
        received.keys.lock().unwrap().len() >= 20_000
    })
    .await;
    cluster.wait_drained("fleet.out", "erp").await;
    assert_eq!(received.keys.lock().unwrap().len(), 20_000);

    // The fleet view converges on the survivors (heartbeats every 2 s; a
    // replica that lost its node may answer a beat late).
    // The dead host's last heartbeat expires after its TTL.
    until_output(&["ls", "--bus", &url], |out| {
        out.lines()
            .any(|l| l.starts_with("orders") && l.ends_with(" a,b"))
    })
    .await;
    until_output(&["hosts", "--bus", &url], |out| {
        ["a", "b"].iter().all(|id| {
            out.lines()
                .any(|l| l.starts_with(id) && l.contains("erp,orders"))
        })
    })
    .await;

    let removed = cli_stdout(&plexus(&["rm", "orders", "--bus", &url]).await);
    assert!(removed.starts_with("removed orders"), "{removed}");
    for host in &mut hosts {
        // (A host may have restarted a connector the dead node's failover
        // broke before this; the removal is what is waited for.)
        while !listed(&host.wait_line("plexus: fleet applied"), "removed")
            .contains(&"orders".to_owned())
        {}
    }
    let stderr = refused(&plexus(&["rm", "orders", "--bus", &url]).await);
    assert!(stderr.contains("no connector named \"orders\""), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_problem_exit_2_and_change_nothing() {
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    deploy(&url, "testkit", "1.0.0", &[]).await;

    // The same bytes again change nothing; other bytes under the same version are refused.
    let again = deploy(&url, "testkit", "1.0.0", &[]).await;
    assert!(
        again.contains("already deployed with these bytes"),
        "{again}"
    );
    let other = plugin("json-filter").display().to_string();
    let stderr = refused(
        &plexus(&[
            "deploy",
            &other,
            "--name",
            "testkit",
            "--version",
            "1.0.0",
            "--bus",
            &url,
        ])
        .await,
    );
    assert!(
        stderr.contains("testkit@1.0.0 is already deployed with digest"),
        "{stderr}"
    );

    let transform = |plugin: &str, extra: &str| {
        format!(
            "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"{plugin}\"\nfrom = \"fleet.in\"\nto = \"fleet.out\"\n{extra}"
        )
    };
    let cases = [
        (transform("testkit@9.9.9", ""), "plugin testkit@9.9.9 is not deployed"),
        (
            transform("testkit@1.0.0", "schedule = \"1s\""),
            "a transform does not take `schedule`",
        ),
        (
            transform("testkit@1.0.0", "grants = { files = [\"relative/dir:ro\"] }"),
            "must be an absolute path on the hosts",
        ),
        (
            transform("./testkit.wasm", ""),
            "names a deployed plugin as name@version",
        ),
        (
            "[[connector]]\nname = \"erp\"\nkind = \"sink\"\nplugin = \"testkit@1.0.0\"\nfrom = \"fleet.out\"\n".into(),
            "is a transform plugin, not a sink",
        ),
    ];
    for (text, reason) in cases {
        let file = write(dir.path(), "bad.toml", &text);
        let stderr = refused(&apply(&url, &file, &["--approve"]).await);
        assert!(stderr.contains(reason), "{reason}: {stderr}");
    }

    // An apply that widens a grant needs --approve.
    let file = write(
        dir.path(),
        "wide.toml",
        &transform(
            "testkit@1.0.0",
            "grants = { http = [\"https://erp.example.org\"] }",
        ),
    );
    let stderr = refused(&apply(&url, &file, &[]).await);
    assert!(stderr.contains("widens capabilities"), "{stderr}");

    // Bytes altered in the object store after deploy are caught before any host is told.
    let store = bus.js.get_object_store("plexus-plugins").await.unwrap();
    let digest = plexus_host::plugin::cache::digest(&std::fs::read(plugin("testkit")).unwrap());
    store
        .put(digest.as_str(), &mut &b"not the plugin"[..])
        .await
        .unwrap();
    let file = write(dir.path(), "ok.toml", &transform("testkit@1.0.0", ""));
    let stderr = refused(&apply(&url, &file, &[]).await);
    assert!(stderr.contains("it was altered"), "{stderr}");

    // Nothing was written by any refused apply.
    if let Ok(definitions) = bus.js.get_key_value("plexus-connectors").await {
        let keys: Vec<String> = definitions
            .keys()
            .await
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
            .await;
        assert!(keys.is_empty(), "{keys:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_applies_planned_together_the_second_is_told_to_rerun() {
    use plexus_host::fleet::definitions::{self, ApplyError};
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    deploy(&url, "testkit", "1.0.0", &[]).await;
    let one = |tag: &str| {
        let text = format!(
            "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"testkit@1.0.0\"\nfrom = \"fleet.in\"\nto = \"fleet.out\"\nconfig = {{ tag = \"{tag}\" }}\n"
        );
        let file = write(dir.path(), &format!("{tag}.toml"), &text);
        plexus_host::config::Config::load_definitions(&file).unwrap()
    };
    let client = plexus_host::bus::Bus::connect(&url).await.unwrap();
    let alice = definitions::plan(&client, &one("alice")).await.unwrap();
    let bob = definitions::plan(&client, &one("bob")).await.unwrap();
    definitions::commit(&client, &bob).await.unwrap();
    assert!(matches!(
        definitions::commit(&client, &alice).await,
        Err(ApplyError::Stale)
    ));
    let store = definitions::bucket(&client).await.unwrap();
    let all = definitions::read_all(&store).await.unwrap();
    assert!(all["orders"].1.contains("bob"), "bob's apply stands");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_runs_a_connector_only_on_hosts_with_its_labels() {
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut st_marys = fleet_host(&url, dir.path(), "st-marys-1", &["facility=st-marys"], "");
    let mut mercy = fleet_host(&url, dir.path(), "mercy-1", &["facility=mercy"], "");
    deploy(&url, "testkit", "1.0.0", &[]).await;
    let placed = |name: &str, facility: &str| {
        format!(
            "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"testkit@1.0.0\"\nfrom = \"{name}.in\"\nto = \"{name}.out\"\nplacement = {{ facility = \"{facility}\" }}\n"
        )
    };
    let file = write(
        dir.path(),
        "placed.toml",
        &format!(
            "{}\n{}",
            placed("st-marys-po", "st-marys"),
            placed("mercy-po", "mercy")
        ),
    );
    cli_stdout(&apply(&url, &file, &[]).await);
    let line = st_marys.wait_line("plexus: fleet applied");
    assert!(line.contains("added [\"st-marys-po\"]"), "{line}");
    let line = mercy.wait_line("plexus: fleet applied");
    assert!(line.contains("added [\"mercy-po\"]"), "{line}");

    bus.publish_range("st-marys-po.in", 0..10, |i| format!("{{\"n\":{i}}}"))
        .await;
    bus.wait_for_count("st-marys-po.out", 10).await;
    let listing = cli_stdout(&plexus(&["ls", "--bus", &url]).await);
    let row = |name: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{listing}"))
            .to_owned()
    };
    assert!(row("st-marys-po").ends_with("st-marys-1"), "{listing}");
    assert!(row("mercy-po").ends_with("mercy-1"), "{listing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_plugin_is_refused_where_signatures_are_required_and_others_run() {
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let made = cli_stdout(&plexus(&["keygen", "--out", &key.display().to_string()]).await);
    let public = made
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = key.display().to_string();
    let signed = deploy(&url, "testkit", "1.0.0", &["--sign", &key]).await;
    assert!(signed.contains(&format!("signed by {public}")), "{signed}");
    deploy(&url, "json-filter", "1.0.0", &[]).await;
    let mut host = fleet_host(
        &url,
        dir.path(),
        "strict",
        &[],
        &format!("trusted_keys = [\"{public}\"]\nrequire_signed = true\n"),
    );
    let file = write(
        dir.path(),
        "two.toml",
        "[[connector]]\nname = \"signed\"\nkind = \"transform\"\nplugin = \"testkit@1.0.0\"\nfrom = \"s.in\"\nto = \"s.out\"\n\n[[connector]]\nname = \"unsigned\"\nkind = \"transform\"\nplugin = \"json-filter@1.0.0\"\nfrom = \"u.in\"\nto = \"u.out\"\n",
    );
    cli_stdout(&apply(&url, &file, &[]).await);
    let refusal = host.wait_line("plexus: fleet: connector \"unsigned\" cannot run here");
    assert!(refusal.contains("is not signed"), "{refusal}");
    let status = cli_stdout(&plexus(&["status", "--bus", &url]).await);
    assert!(status.contains("signed (transform)"), "{status}");
    assert!(
        status.contains("unsigned: failed on strict: plugin json-filter@1.0.0 is not signed"),
        "{status}"
    );
    bus.publish_range("s.in", 0..5, |i| format!("{{\"n\":{i}}}"))
        .await;
    bus.wait_for_count("s.out", 5).await;
}

/// Items an HTTP endpoint serves for `http-poll`, and the polls it got.
#[derive(Default)]
struct Items {
    polls: Mutex<u64>,
    visible: Mutex<usize>,
}

async fn items(State(items): State<Arc<Items>>) -> String {
    *items.polls.lock().unwrap() += 1;
    let n = *items.visible.lock().unwrap();
    let list: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":\"item-{i}\",\"meta\":{{\"lastUpdated\":\"2026-01-01T00:00:{i:02}Z\"}}}}"
            )
        })
        .collect();
    format!("[{}]", list.join(","))
}

/// The number of poll calls a host made for `connector`, from its metrics.
fn polls(host: &str) -> f64 {
    let addr = host
        .split("metrics at http://")
        .nth(1)
        .and_then(|a| a.strip_suffix("/metrics"))
        .unwrap()
        .parse()
        .unwrap();
    metric(
        &scrape(addr),
        "plexus_plugin_call_seconds_count{connector=\"poller\"}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_source_runs_on_one_host_at_a_time_and_moves_when_it_dies() {
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let served = Arc::new(Items::default());
    *served.visible.lock().unwrap() = 20;
    let endpoint = serve(
        Router::new()
            .route("/items", get(items))
            .with_state(served.clone()),
    )
    .await;
    let mut hosts: Vec<(String, HostProcess, String)> = ["p1", "p2", "p3"]
        .iter()
        .map(|id| {
            let config = host_config(dir.path(), id, "", "");
            let config = config.display().to_string();
            let mut host = HostProcess::spawn(
                &["up", "--bus", &url, "--id", id, "-c", &config],
                dir.path(),
            );
            let ready = host.wait_line("plexus: up in the fleet");
            ((*id).to_owned(), host, ready)
        })
        .collect();
    deploy(&url, "http-poll", "1.0.0", &[]).await;
    let file = write(
        dir.path(),
        "poller.toml",
        &format!(
            "[[connector]]\nname = \"poller\"\nkind = \"source\"\nplugin = \"http-poll@1.0.0\"\nschedule = \"100ms\"\nto = \"items.out\"\nconfig = {{ url = \"http://{endpoint}/items\" }}\ngrants = {{ http = [\"http://{endpoint}\"] }}\n"
        ),
    );
    cli_stdout(&apply(&url, &file, &["--approve"]).await);
    bus.wait_for_count("items.out", 20).await;
    wait_until("a few polls", || *served.polls.lock().unwrap() >= 10).await;

    // One host holds the lease, and only it has polled.
    let holder = {
        let listing = cli_stdout(&plexus(&["hosts", "--bus", &url]).await);
        let holders: Vec<&str> = listing
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().nth(3) == Some("poller"))
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(holders.len(), 1, "{listing}");
        holders[0].to_owned()
    };
    for (id, _, ready) in &hosts {
        let n = polls(ready);
        if *id == holder {
            assert!(n >= 1.0, "the holder polls");
        } else {
            assert_eq!(n, 0.0, "{id} must not poll while {holder} holds the lease");
        }
    }

    // Its host dies: another takes over, resuming from the committed cursor.
    let at = hosts.iter().position(|(id, ..)| *id == holder).unwrap();
    let (_, mut dead, _) = hosts.remove(at);
    dead.kill9();
    *served.visible.lock().unwrap() = 30;
    bus.wait_for_count("items.out", 30).await;
    let pollers: Vec<&String> = hosts
        .iter()
        .filter(|(_, _, ready)| polls(ready) > 0.0)
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(pollers.len(), 1, "one survivor took over: {pollers:?}");
    bus.assert_exactly_once("items.out", 30).await;
}

/// The names in one list of a host's "fleet applied" line, e.g. `added [...]`.
fn listed(line: &str, list: &str) -> Vec<String> {
    let Some(rest) = line.split(&format!("{list} [")).nth(1) else {
        return Vec::new();
    };
    rest.split(']')
        .next()
        .unwrap_or_default()
        .split(", ")
        .filter(|n| !n.is_empty())
        .map(|n| n.trim_matches('"').to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_loses_and_doubles_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let mut hosts: Vec<HostProcess> = ["u1", "u2", "u3"]
        .iter()
        .map(|id| fleet_host(&url, dir.path(), id, &[], ""))
        .collect();
    deploy(&url, "testkit", "1.0.0", &[]).await;
    let v2 = write(dir.path(), "testkit-1.1.0.wasm", "");
    std::fs::write(
        &v2,
        rebuilt(&std::fs::read(plugin("testkit")).unwrap(), "1.1.0"),
    )
    .unwrap();
    let v2_version =
        plexus_host::plugin::cache::digest(&std::fs::read(&v2).unwrap())[..12].to_owned();
    let v2 = v2.display().to_string();
    cli_stdout(
        &plexus(&[
            "deploy",
            &v2,
            "--name",
            "testkit",
            "--version",
            "1.1.0",
            "--bus",
            &url,
        ])
        .await,
    );
    let pipeline = |version: &str| {
        format!(
            "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"testkit@{version}\"\nfrom = \"up.in\"\nto = \"up.out\"\ndelivery = {{ ack_wait = \"5s\" }}\n"
        )
    };
    let file = write(dir.path(), "v1.toml", &pipeline("1.0.0"));
    cli_stdout(&apply(&url, &file, &[]).await);
    for host in &mut hosts {
        host.wait_line("plexus: fleet applied; added [\"orders\"]");
    }

    // 2,000 records/s for 8 s; the upgrade is applied once 2,000 are through.
    const TOTAL: usize = 16_000;
    let published = Arc::new(AtomicUsize::new(0));
    let js = bus.js.clone();
    let counter = published.clone();
    let publisher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        for start in (0..TOTAL).step_by(20) {
            tick.tick().await;
            let mut acks = Vec::new();
            for i in start..start + 20 {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", format!("in-{i}").as_str());
                h.insert("Plexus-Key", i.to_string().as_str());
                acks.push(
                    js.publish_with_headers("up.in", h, format!("{{\"n\":{i}}}").into())
                        .await
                        .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap();
            }
            counter.store(start + 20, Ordering::SeqCst);
        }
    });
    bus.wait_for_count("up.out", 2_000).await;
    let file = write(dir.path(), "v2.toml", &pipeline("1.1.0"));
    let plan = cli_stdout(&apply(&url, &file, &[]).await);
    assert!(
        plan.contains("orders") && plan.contains("changed"),
        "{plan}"
    );
    for host in &mut hosts {
        host.wait_line("plexus: fleet applied; added [], swapped [\"orders\"]");
    }
    // Every record published from here on is processed by the new version.
    let switched = published.load(Ordering::SeqCst);
    assert!(switched < TOTAL, "the upgrade happened under load");
    publisher.await.unwrap();

    bus.wait_for_count("up.out", TOTAL as u64).await;
    bus.wait_drained("up.in", "orders").await;
    bus.assert_exactly_once("up.out", TOTAL as u64).await;
    let mut old = 0;
    for msg in bus.messages("up.out").await {
        let source = header(&msg, "Plexus-Source").unwrap();
        let i: usize = source.trim_start_matches("in-").parse().unwrap();
        let hops = header(&msg, "Plexus-Hops").unwrap();
        if i >= switched {
            assert_eq!(hops, format!("orders@{v2_version}"), "record {i}");
        } else if hops != format!("orders@{v2_version}") {
            old += 1;
        }
    }
    assert!(old > 0, "records before the switch ran on 1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_takes_from_the_bus_only_what_was_applied_and_what_it_allows() {
    let bus = TestBus::start().await;
    let url = bus.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    deploy(&url, "testkit", "1.0.0", &[]).await;
    deploy(&url, "json-filter", "1.0.0", &[]).await;
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let roots = format!("grant_roots = [\"{}\"]\n", allowed.display());
    let mut host = fleet_host(&url, dir.path(), "careful", &[], &roots);
    let reading = |name: &str, dir: &Path| {
        format!(
            "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"testkit@1.0.0\"\nfrom = \"{name}.in\"\nto = \"{name}.out\"\ngrants = {{ files = [\"{}:ro\"] }}\n",
            dir.display()
        )
    };
    let both = write(
        dir.path(),
        "both.toml",
        &format!(
            "{}\n{}",
            reading("inside", &allowed),
            reading("outside", &outside)
        ),
    );
    cli_stdout(
        &plexus(&[
            "apply",
            "-c",
            &both.display().to_string(),
            "--approve",
            "--bus",
            &url,
        ])
        .await,
    );
    // The two lines come in either order (the keys are written one by one).
    let (mut refusal, mut added) = (None, Vec::new());
    while refusal.is_none() || !added.contains(&"inside".to_owned()) {
        let line = host.wait_line("plexus: fleet");
        if line.starts_with("plexus: fleet: connector \"outside\" cannot run here") {
            refusal = Some(line);
        } else {
            added.extend(listed(&line, "added"));
        }
    }
    let refusal = refusal.unwrap();
    assert!(
        refusal.contains("may grant only directories under this host's [host].grant_roots"),
        "{refusal}"
    );
    assert!(!added.contains(&"outside".to_owned()));

    // The file applied is the whole fleet: dropping a connector from it is
    // a removal, which needs --approve.
    let one = write(dir.path(), "one.toml", &reading("inside", &allowed));
    let one = one.display().to_string();
    let stderr = refused(&plexus(&["apply", "-c", &one, "--bus", &url]).await);
    assert!(stderr.contains("removes connectors"), "{stderr}");
    let applied = cli_stdout(&plexus(&["apply", "-c", &one, "--approve", "--bus", &url]).await);
    assert!(
        applied.contains("applied: 0 added, 0 changed, 1 removed"),
        "{applied}"
    );

    // The registry's entry for testkit@1.0.0 rewritten to other bytes after
    // the apply: a host refuses to run what was not applied.
    let registry = bus.js.get_key_value("plexus-registry").await.unwrap();
    let mut entry: serde_json::Value =
        serde_json::from_slice(&registry.get("testkit.1.0.0").await.unwrap().unwrap()).unwrap();
    let other: serde_json::Value =
        serde_json::from_slice(&registry.get("json-filter.1.0.0").await.unwrap().unwrap()).unwrap();
    entry["digest"] = other["digest"].clone();
    registry
        .put("testkit.1.0.0", serde_json::to_vec(&entry).unwrap().into())
        .await
        .unwrap();
    let mut late = fleet_host(&url, dir.path(), "late", &[], &roots);
    let refusal = late.wait_line("plexus: fleet: connector \"inside\" cannot run here");
    assert!(
        refusal.contains("its index entry was rewritten"),
        "{refusal}"
    );

    // Dead letters of the fleet's connectors, as defined in its bus.
    let letters = cli_stdout(&plexus(&["dlq", "ls", "--bus", &url]).await);
    assert!(
        letters.contains("inside: 0 dead letters on dlq.inside"),
        "{letters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_run_what_operators_apply_but_cannot_change_it() {
    // A server with the project's least-privilege layout (demo/fleet/permissions.conf).
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("nats.conf");
    // nats-server takes includes relative to the including file.
    std::fs::copy(
        repo_root().join("demo/fleet/permissions.conf"),
        dir.path().join("permissions.conf"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: \"{}\" }}\ninclude permissions.conf\n",
            dir.path().join("store").display(),
        ),
    )
    .unwrap();
    let mut server = std::process::Command::new(nats_server_binary())
        .arg("-c")
        .arg(&config)
        .env("PLEXUS_OPERATOR_PASSWORD", "op-9d1c")
        .env("PLEXUS_HOST_PASSWORD", "host-4b7e")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("nats.log")).unwrap())
        .spawn()
        .unwrap();
    let operator = format!("nats://operator:op-9d1c@127.0.0.1:{port}");
    let host_url = format!("nats://host:host-4b7e@127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + PATIENCE;
    let probe = loop {
        if let Ok(bus) = plexus_host::bus::Bus::connect(&operator).await
            && bus.js.query_account().await.is_ok()
        {
            break bus;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start: {}",
            std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    deploy(&operator, "testkit", "1.0.0", &[]).await;
    let file = write(
        dir.path(),
        "orders.toml",
        "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"testkit@1.0.0\"\nfrom = \"perm.in\"\nto = \"perm.out\"\n",
    );
    let file = file.display().to_string();
    cli_stdout(&plexus(&["apply", "-c", &file, "--bus", &operator]).await);
    let mut host = fleet_host(&host_url, dir.path(), "limited", &[], "");
    host.wait_line("plexus: fleet applied; added [\"orders\"]");
    let bus = Probe {
        js: probe.js.clone(),
    };
    bus.publish_range("perm.in", 0..10, |i| format!("{{\"n\":{i}}}"))
        .await;
    bus.wait_for_count("perm.out", 10).await;

    // With a host's credentials nothing in the registry or the definitions changes.
    let other = plugin("json-filter").display().to_string();
    let deployed = plexus(&[
        "deploy",
        &other,
        "--name",
        "evil",
        "--version",
        "1",
        "--bus",
        &host_url,
    ])
    .await;
    assert!(!deployed.status.success());
    let stderr = String::from_utf8_lossy(&deployed.stderr);
    assert!(stderr.contains("Permissions Violation"), "{stderr}");
    let removed = plexus(&["rm", "orders", "--bus", &host_url]).await;
    assert!(!removed.status.success());
    let registry = probe.js.get_key_value("plexus-registry").await.unwrap();
    assert!(registry.get("evil.1").await.unwrap().is_none());
    let definitions = probe.js.get_key_value("plexus-connectors").await.unwrap();
    assert!(definitions.get("orders").await.unwrap().is_some());
    drop(host);
    let _ = server.kill();
    let _ = server.wait();
}

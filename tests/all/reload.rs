//! Hot reload: a changed connector is swapped to a new instance pool under
//! load with nothing lost or duplicated, untouched connectors are left alone,
//! and the binary reloads on file change and SIGHUP and refuses bad configs.

use std::collections::HashSet;

use plexus_host::config::Config;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_swap_under_load_loses_and_duplicates_nothing() {
    let bus = TestBus::start().await;
    bus.stream("IN", "in.swap").await;
    bus.stream("SIDE", "in.side").await;
    let side = testkit("side", "in.side", "out.side", "");
    let version = |tag: &str| {
        testkit(
            "swap",
            "in.swap",
            "out.swap",
            &format!("config = {{ tag = \"{tag}\" }}"),
        ) + &side
    };
    let file = write_config(bus.dir.path(), Some(bus.url()), &version("v1"));
    let mut host = start_host(&file).await;

    let publisher = {
        let js = bus.js.clone();
        tokio::spawn(async move {
            for chunk in 0..30 {
                let mut acks = Vec::new();
                for i in chunk * 200..(chunk + 1) * 200 {
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Nats-Msg-Id", format!("in-{i}").as_str());
                    acks.push(
                        js.publish_with_headers("in.swap", h, format!("{i}").into())
                            .await
                            .unwrap(),
                    );
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    bus.publish_range("in.side", 0..100, |i| format!("side {i}"))
        .await;
    bus.wait_for_count("out.swap", 1000).await;

    write_config(bus.dir.path(), Some(bus.url()), &version("v2"));
    let changes = host.reload(Config::load(&file).unwrap()).await.unwrap();
    assert_eq!(changes.swapped, vec!["swap".to_string()]);
    assert!(
        changes.added.is_empty() && changes.removed.is_empty(),
        "the side connector is untouched: {changes:?}"
    );

    publisher.await.unwrap();
    bus.wait_drained("in.swap", "swap").await;
    let out = bus.messages("out.swap").await;
    assert_eq!(
        out.len(),
        6000,
        "nothing lost or duplicated across the swap"
    );
    let sources: HashSet<_> = out
        .iter()
        .map(|m| header(m, "Plexus-Source").unwrap())
        .collect();
    assert_eq!(sources.len(), 6000);
    let tags: Vec<String> = out
        .iter()
        .map(|m| header(m, "Testkit-Tag").unwrap())
        .collect();
    assert!(
        tags.contains(&"v1".to_string()),
        "the old version ran before the swap"
    );
    assert_eq!(
        tags.last().map(String::as_str),
        Some("v2"),
        "the new version runs after it"
    );

    bus.wait_drained("in.side", "side").await;
    assert_eq!(bus.count("out.side").await, 100);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_change_and_sighup_and_refuses_bad_configs() {
    let bus = TestBus::start().await;
    let a = testkit("a", "in.a", "out.a", "");
    let b = testkit("b", "in.b", "out.b", "");
    let file = write_config(bus.dir.path(), Some(bus.url()), &a);
    let mut host = HostProcess::spawn(&["up", "-c", file.to_str().unwrap()], bus.dir.path());
    host.wait_line("plexus: up with 1 connector(s)");

    write_config(
        bus.dir.path(),
        Some(bus.url()),
        &[a.clone(), b.clone()].concat(),
    );
    let line = host.wait_line("plexus: reload");
    assert_eq!(
        line,
        "plexus: reloaded; added [\"b\"], swapped [], removed []"
    );
    bus.publish_range("in.b", 0..10, |i| format!("b{i}")).await;
    bus.wait_for_count("out.b", 10).await;

    write_config(
        bus.dir.path(),
        Some(bus.url()),
        &[a.clone(), b.replace("in.b", "in..b")].concat(),
    );
    let line = host.wait_line("plexus: reload");
    assert!(
        line.starts_with("plexus: reload refused: ")
            && line.contains("connector \"b\": from \"in..b\""),
        "{line}"
    );
    bus.publish_range("in.b", 10..20, |i| format!("b{i}")).await;
    bus.wait_for_count("out.b", 20).await;

    host.signal("HUP");
    let line = host.wait_line("plexus: reload");
    assert!(
        line.starts_with("plexus: reload refused: "),
        "SIGHUP re-reads the same bad file: {line}"
    );

    write_config(
        bus.dir.path(),
        Some(bus.url()),
        &a.replace("\nto = \"out.a\"", "\nto = \"out.a2\""),
    );
    let line = host.wait_line("plexus: reload");
    assert_eq!(
        line,
        "plexus: reloaded; added [], swapped [\"a\"], removed [\"b\"]"
    );

    host.signal("TERM");
    assert!(host.child.wait().unwrap().success());
}

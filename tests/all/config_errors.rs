//! Bad configs are refused before anything starts: exit code 2, and a message
//! naming the file, the connector and the reason — never a panic.

use std::process::Command;

use crate::support::*;

/// Run `plexus <command> -c <file>` on a config whose only connector is `connector`.
fn refuse(command: &str, connector: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), Some("nats://127.0.0.1:1"), connector);
    refuse_file(command, &file, connector)
}

/// Run `plexus <command> -c <file>`, which must be refused (exit 2) naming `file`.
fn refuse_file(command: &str, file: &std::path::Path, connector: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args([command, "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for:\n{connector}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert!(
        stderr.starts_with(&format!("error: {}: ", file.display())),
        "names the file: {stderr}"
    );
    stderr
}

fn echo_with(extra: &str) -> String {
    testkit("orders", "in.orders", "out.orders", extra)
}

#[test]
fn unknown_keys_are_refused() {
    let err = refuse("check", &echo_with("colour = \"red\""));
    assert!(
        err.contains("connector \"orders\": unknown field `colour`"),
        "{err}"
    );
    let err = refuse("check", &echo_with("[connector.limits]\nmemroy = \"1GiB\""));
    assert!(
        err.contains("connector \"orders\": unknown field `memroy`"),
        "{err}"
    );
}

#[test]
fn bad_subjects_are_refused() {
    let err = refuse("check", &testkit("orders", "in..orders", "out.orders", ""));
    assert!(
        err.contains("connector \"orders\": from \"in..orders\": empty token"),
        "{err}"
    );
    let err = refuse("check", &testkit("orders", "in.orders", "out.*", ""));
    assert!(
        err.contains("connector \"orders\": to \"out.*\": wildcards are only allowed in `from`"),
        "{err}"
    );
    let err = refuse("check", &testkit("orders", "orders.>", "orders.clean", ""));
    assert!(err.contains("would consume its own output"), "{err}");
}

#[test]
fn missing_plugins_are_refused() {
    let connector = "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"nowhere/orders.wasm\"\nfrom = \"a\"\nto = \"b\"\n";
    let err = refuse("check", connector);
    assert!(
        err.contains("connector \"orders\": plugin ")
            && err.contains("nowhere/orders.wasm cannot be read"),
        "{err}"
    );
}

#[test]
fn a_plugin_of_the_wrong_world_is_refused() {
    let connector = format!(
        "[[connector]]\nname = \"orders\"\nkind = \"source\"\nplugin = \"{}\"\nschedule = \"30s\"\nto = \"raw.orders\"\n",
        plugin("testkit").display()
    );
    let err = refuse("check", &connector);
    assert!(
        err.contains("connector \"orders\": plugin") && err.contains("is not a source plugin"),
        "{err}"
    );
    assert!(
        err.contains("it exports: ") && err.contains("transform"),
        "says what it does export: {err}"
    );
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.wasm");
    std::fs::write(&fake, "not wasm").unwrap();
    let connector = format!(
        "[[connector]]\nname = \"orders\"\nkind = \"transform\"\nplugin = \"{}\"\nfrom = \"a\"\nto = \"b\"\n",
        fake.display()
    );
    let err = refuse("check", &connector);
    assert!(
        err.contains("not a loadable WebAssembly component"),
        "{err}"
    );
}

#[test]
fn more_backoff_steps_than_deliveries_is_refused() {
    let err = refuse(
        "check",
        &echo_with("[connector.delivery]\nmax_deliver = 2\nbackoff = [\"1s\", \"5s\", \"30s\"]"),
    );
    assert!(
        err.contains(
            "connector \"orders\": delivery.max_deliver (2) is less than the 3 backoff steps"
        ),
        "{err}"
    );
}

#[test]
fn bad_limits_are_refused() {
    let err = refuse(
        "check",
        &echo_with("[connector.limits]\nmemory = \"64 parsecs\""),
    );
    assert!(
        err.contains("limits.memory \"64 parsecs\": unknown unit"),
        "{err}"
    );
    let err = refuse(
        "check",
        &echo_with("[connector.limits]\ntimeout = \"soon\""),
    );
    assert!(
        err.contains("limits.timeout \"soon\" is not a duration"),
        "{err}"
    );
}

#[test]
fn duplicate_names_are_refused() {
    let twice = [
        echo_with(""),
        testkit("orders", "in.other", "out.other", ""),
    ]
    .concat();
    let err = refuse("check", &twice);
    assert!(
        err.contains("connector \"orders\": the name is used by another connector"),
        "{err}"
    );
}

#[test]
fn up_refuses_a_bad_config_before_starting_anything() {
    let err = refuse("up", &echo_with("[connector.delivery]\nmax_deliver = 0"));
    assert!(
        err.contains("delivery.max_deliver must be at least 1"),
        "{err}"
    );
}

#[test]
fn check_accepts_a_good_config_and_lists_connectors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), None, &echo_with(""));
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["check", "-c", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ok, 1 connector(s)") && stdout.contains("orders (transform, plugin"),
        "{stdout}"
    );
    assert!(stdout.contains("in.orders -> out.orders"), "{stdout}");
}

#[test]
fn up_without_a_bus_or_nats_server_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), None, &echo_with(""));
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(["up", "-c", file.to_str().unwrap()])
        .env("PLEXUS_NATS_SERVER", dir.path().join("no-such-nats-server"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no nats-server binary found") && stderr.contains("just setup"),
        "{stderr}"
    );
}

#[test]
fn bad_sources_and_grants_are_refused() {
    let source = |body: &str| {
        format!(
            "[[connector]]\nname = \"feed\"\nkind = \"source\"\nplugin = \"{}\"\nto = \"raw.feed\"\n{body}\n",
            plugin("mllp").display()
        )
    };
    let err = refuse("check", &source("schedule = \"every tuesday\""));
    assert!(
        err.contains("connector \"feed\": schedule \"every tuesday\": not an interval"),
        "{err}"
    );
    let err = refuse("check", &source("listen = \"tcp://0.0.0.0:1\""));
    assert!(
        err.contains("listen \"tcp://0.0.0.0:1\" must be \"http\", \"mllp://<address>:<port>\" or \"mllp+tls://"),
        "{err}"
    );
    let err = refuse(
        "check",
        &source("listen = \"http\"\n[connector.grants]\nfiles = [\"/no/such/dir:ro\"]"),
    );
    assert!(
        err.contains("grants.files \"/no/such/dir:ro\": /no/such/dir is not a directory"),
        "{err}"
    );
    let err = refuse(
        "check",
        &source("listen = \"http\"\n[connector.grants]\nhttp = [\"ftp://erp\"]"),
    );
    assert!(
        err.contains("grants.http \"ftp://erp\": scheme \"ftp\" is not http or https"),
        "{err}"
    );
    let err = refuse("check", &source("listen = \"http\"\nschedule = \"5m\""));
    assert!(
        err.contains("a source needs exactly one of `schedule` or `listen`"),
        "{err}"
    );
}

#[test]
fn durations_and_sizes_out_of_range_are_refused() {
    // Once accepted by `check`, this panicked `up` (an Instant overflow).
    for command in ["check", "up"] {
        let err = refuse(
            command,
            &echo_with("[connector.limits]\ntimeout = \"300000000000years\""),
        );
        assert!(
            err.contains(
                "limits.timeout \"300000000000years\" is longer than the most it may be, 1h"
            ),
            "{err}"
        );
    }
    let err = refuse(
        "check",
        &echo_with("[connector.limits]\nmemory = \"64TiB\""),
    );
    assert!(
        err.contains("limits.memory \"64TiB\" must be between 1MiB and 4GiB"),
        "{err}"
    );
    let err = refuse(
        "check",
        &echo_with("[connector.delivery]\nbackoff = [\"1s\", \"400days\"]\nmax_deliver = 3"),
    );
    assert!(
        err.contains("delivery.backoff \"400days\" is longer than the most"),
        "{err}"
    );
    let err = refuse("check", &echo_with("[connector.limits]\noutputs = 0"));
    assert!(
        err.contains("limits.outputs 0 must be between 1 and 1000000"),
        "{err}"
    );
}

#[test]
fn retries_outside_the_duplicate_window_are_refused() {
    // A redelivery after the window would store the outputs a second time.
    let err = refuse(
        "check",
        &echo_with("[connector.delivery]\nack_wait = \"10m\""),
    );
    assert!(
        err.contains("delivery.ack_wait (10m) must be shorter than [bus].duplicate_window (2m)"),
        "{err}"
    );
    let err = refuse(
        "check",
        &echo_with("[connector.delivery]\nbackoff = [\"5m\"]"),
    );
    assert!(
        err.contains("delivery.backoff step 5m must be shorter than [bus].duplicate_window"),
        "{err}"
    );
}

#[test]
fn grants_may_not_reach_the_hosts_own_state() {
    let dir = tempfile::tempdir().unwrap();
    for grant in [dir.path().to_path_buf(), dir.path().join("data")] {
        std::fs::create_dir_all(&grant).unwrap();
        let file = write_config(
            dir.path(),
            Some("nats://127.0.0.1:1"),
            &echo_with(&format!(
                "grants = {{ files = [\"{}:ro\"] }}",
                grant.display()
            )),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(["check", "-c", file.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("reaches data_dir"), "{stderr}");
    }
}

#[test]
fn listeners_are_checked_before_they_bind() {
    let mllp = |listen: &str, extra: &str| {
        connector(
            "lab",
            "source",
            "mllp",
            &format!("listen = \"{listen}\"\nto = \"raw.lab\"\n{extra}"),
        )
    };
    let err = refuse("check", &mllp("mllp+tls://127.0.0.1:2575", ""));
    assert!(
        err.contains("needs [connector.tls] with `cert` and `key`"),
        "{err}"
    );
    let err = refuse(
        "check",
        &mllp(
            "mllp://127.0.0.1:2575",
            "[connector.listener]\nallow = [\"not-a-network\"]",
        ),
    );
    assert!(
        err.contains("listener.allow \"not-a-network\" is not an address or a CIDR block"),
        "{err}"
    );
    let err = refuse(
        "check",
        &mllp(
            "mllp://127.0.0.1:2575",
            "[connector.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"",
        ),
    );
    assert!(err.contains("is not mllp+tls://"), "{err}");
}

#[test]
fn grants_may_not_reach_the_system_or_the_bus_credentials() {
    let err = refuse("check", &echo_with("grants = { files = [\"/proc:ro\"] }"));
    assert!(
        err.contains("grants.files \"/proc:ro\" reaches a system directory /proc"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        None,
        &echo_with("grants = { secrets = [\"BUS_PASSWORD\"] }"),
    );
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replacen(
            "[host]\n",
            "[bus]\nurl = \"nats://127.0.0.1:1\"\nuser = \"plexus\"\npassword = \"BUS_PASSWORD\"\n\n[host]\n",
            1,
        );
    std::fs::write(&file, text).unwrap();
    let stderr = refuse_file("check", &file, "a grant of the bus password");
    assert!(
        stderr.contains("grants.secrets \"BUS_PASSWORD\" is the host's own bus credential"),
        "{stderr}"
    );
}

//! `plexus new`: what a connector developer's first minutes depend on. Each
//! kind's scaffold builds for wasm32-wasip2 as written, passes its own unit
//! tests natively, runs under `plexus test`, and the connector block its
//! README shows is a valid config that `plexus check` accepts for that kind.
//! Bad names and existing directories are refused without writing anything.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn plexus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .expect("plexus runs")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Cargo in a scaffolded project; one target directory for every run, so the
/// SDK is compiled once rather than per test run.
fn cargo(project: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", repo_root().join("target/scaffold"))
        .output()
        .expect("cargo runs")
}

fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The ```toml block of a scaffold's README.
fn connector_block(readme: &str) -> String {
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = readme[start..].find("```").expect("closed");
    readme[start..start + len].to_owned()
}

#[test]
fn each_kind_of_scaffold_builds_tests_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_str().unwrap();
    let wasm_dir = repo_root().join("target/scaffold/wasm32-wasip2/release");
    let mut config = String::new();
    for kind in ["transform", "source", "sink"] {
        let name = format!("first-{kind}");
        let created = ok(plexus(&["new", kind, &name, "--dir", base]), "plexus new");
        assert!(
            created.starts_with(&format!("created {kind} plugin {name}")),
            "{created}"
        );
        let project = dir.path().join(&name);
        ok(cargo(&project, &["build", "--release"]), "cargo build");
        if kind != "sink" {
            let tests = ok(
                cargo(&project, &["test", "--target", &host_triple()]),
                "cargo test",
            );
            assert!(tests.contains("test result: ok. 1 passed"), "{tests}");
        }
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        let wasm = wasm_dir.join(format!("first_{kind}.wasm"));
        config += &connector_block(&readme).replace(
            &format!("target/wasm32-wasip2/release/first_{kind}.wasm"),
            wasm.to_str().unwrap(),
        );
        config += "\n";
    }

    let sample = dir.path().join("sample.txt");
    std::fs::write(&sample, "hello\n").unwrap();
    let sample = sample.to_str().unwrap();
    let transform = wasm_dir.join("first_transform.wasm");
    let mapped = ok(
        plexus(&[
            "test",
            transform.to_str().unwrap(),
            "-i",
            sample,
            "-c",
            "prefix=> ",
        ]),
        "plexus test (transform)",
    );
    assert!(
        mapped.contains("1 record(s)\n-- key \"sample.txt\"\n> hello\n"),
        "{mapped}"
    );
    let source = wasm_dir.join("first_source.wasm");
    let decoded = ok(
        plexus(&[
            "test",
            "--kind",
            "source",
            source.to_str().unwrap(),
            "-i",
            sample,
        ]),
        "plexus test (source)",
    );
    assert!(
        decoded.contains("1 record(s)\n-- key \"\"\nhello\n"),
        "{decoded}"
    );

    let file = dir.path().join("plexus.toml");
    std::fs::write(&file, &config).unwrap();
    let checked = ok(
        plexus(&["check", "-c", file.to_str().unwrap()]),
        "plexus check",
    );
    assert!(checked.contains("ok, 3 connector(s)"), "{checked}");
    for kind in ["transform", "source", "sink"] {
        assert!(
            checked.contains(&format!("first-{kind} ({kind},")),
            "{checked}"
        );
    }

    let again = plexus(&["new", "sink", "first-sink", "--dir", base]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists; nothing written"));
    let bad = plexus(&["new", "transform", "Bad_Name", "--dir", base]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("plugin name \"Bad_Name\""));
    assert!(!dir.path().join("Bad_Name").exists());
}

//! `plexus new`: scaffold a plugin project that builds as it is — a crate on
//! `plexus-sdk` targeting wasm32-wasip2, a working example of its kind with a
//! native unit test, and a README with the connector block to run it.
//! Templates live in `host/templates/plugin/`.

use std::path::{Path, PathBuf};

use crate::config::Kind;
use crate::host::HostError;

const CARGO_TOML: &str = include_str!("../../templates/plugin/Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("../../templates/plugin/cargo-config.toml.in");
const GITIGNORE: &str = include_str!("../../templates/plugin/gitignore.in");
const README: &str = include_str!("../../templates/plugin/README.md.in");
const TRANSFORM: &str = include_str!("../../templates/plugin/transform.rs.in");
const SOURCE: &str = include_str!("../../templates/plugin/source.rs.in");
const SINK: &str = include_str!("../../templates/plugin/sink.rs.in");

/// Where this binary was built from, for the default SDK path.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// Create `<dir>/<name>` (`dir` defaults to the current directory).
pub(super) fn run(
    kind: Kind,
    name: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<(), HostError> {
    let usage = HostError::Usage;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        return Err(usage(format!(
            "plugin name {name:?}: use lowercase letters, digits and '-', starting with a letter"
        )));
    }
    let sdk = find_sdk(sdk)?;
    let root = dir.unwrap_or(Path::new(".")).join(name);
    if root.exists() {
        return Err(usage(format!(
            "{} already exists; nothing written",
            root.display()
        )));
    }

    let krate = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{Type}}", &type_name(name))
            .replace("{{kind}}", &kind.to_string())
            .replace("{{sdk}}", &sdk.display().to_string().replace('\\', "/"))
            .replace("{{try}}", &try_it(kind, &krate))
            .replace("{{connector}}", &connector(kind, name, &krate))
    };
    let code = match kind {
        Kind::Transform => TRANSFORM,
        Kind::Source => SOURCE,
        Kind::Sink => SINK,
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", CARGO_CONFIG.to_owned()),
        (".gitignore", GITIGNORE.to_owned()),
        ("README.md", fill(README)),
        ("src/lib.rs", fill(code)),
    ];
    for (path, text) in &files {
        let path = root.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(error) = written {
            return Err(usage(format!("cannot write {}: {error}", path.display())));
        }
    }
    println!("created {kind} plugin {name} in {}", root.display());
    println!(
        "  cd {} && cargo build --release   # → target/wasm32-wasip2/release/{krate}.wasm",
        root.display()
    );
    println!("  README.md has the [[connector]] block to run it");
    Ok(())
}

/// The SDK the project depends on by path: `--sdk`, else the checkout this
/// binary was built from.
fn find_sdk(given: Option<&Path>) -> Result<PathBuf, HostError> {
    let candidate = given.unwrap_or(Path::new(BUILT_SDK));
    let is_sdk = std::fs::read_to_string(candidate.join("Cargo.toml"))
        .is_ok_and(|text| text.contains("name = \"plexus-sdk\""));
    match (is_sdk, given) {
        (true, _) => candidate
            .canonicalize()
            .map_err(|e| HostError::Usage(format!("SDK at {}: {e}", candidate.display()))),
        (false, Some(path)) => Err(HostError::Usage(format!(
            "--sdk {}: no plexus-sdk crate there (expected its Cargo.toml)",
            path.display()
        ))),
        (false, None) => Err(HostError::Usage(format!(
            "the Plexus SDK is not at {BUILT_SDK}, where this binary was built; pass --sdk <path to the sdk directory of a Plexus checkout>"
        ))),
    }
}

/// `po-router` → `PoRouter`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn try_it(kind: Kind, krate: &str) -> String {
    let wasm = format!("target/wasm32-wasip2/release/{krate}.wasm");
    match kind {
        Kind::Transform => {
            format!("plexus test {wasm} -i sample.txt -c 'prefix=> '   # each file is one record")
        }
        Kind::Source => {
            format!("plexus test --kind source {wasm} -i message.txt  # runs decode on each file")
        }
        Kind::Sink => {
            "# sinks deliver to outside systems: run one in a host (plexus up)".to_owned()
        }
    }
}

fn connector(kind: Kind, name: &str, krate: &str) -> String {
    let head = format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"{kind}\"\nplugin = \"target/wasm32-wasip2/release/{krate}.wasm\""
    );
    match kind {
        Kind::Transform => {
            format!(
                "{head}\nfrom = \"raw.example\"\nto = \"example\"\nconfig = {{ prefix = \"> \" }}"
            )
        }
        Kind::Source => {
            format!(
                "{head}\nschedule = \"30s\"\nto = \"raw.example\"\nconfig = {{ batch = \"10\" }}"
            )
        }
        Kind::Sink => format!(
            "{head}\nfrom = \"example\"\n\n[connector.grants]\nhttp = [\"https://erp.example.org\"]   # what it may call"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_camel_case() {
        assert_eq!(type_name("po-router"), "PoRouter");
        assert_eq!(type_name("x12"), "X12");
        assert_eq!(type_name("a--b"), "AB");
    }
}

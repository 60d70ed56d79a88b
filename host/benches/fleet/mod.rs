//! The fleet, measured with real `plexus up --bus` processes: how long an
//! apply takes to be running on every host, and what a transform's
//! throughput does when three hosts share its consumer instead of one.

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream;

pub mod edge;

/// A `plexus up --bus` process; stdout lines arrive on `lines`.
pub struct FleetHost {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Its admin endpoint.
    admin: String,
}

impl FleetHost {
    pub fn start(dir: &Path, url: &str, id: &str, labels: &[&str]) -> FleetHost {
        let home = dir.join(id);
        std::fs::create_dir_all(&home).unwrap();
        let config = home.join("plexus.toml");
        std::fs::write(
            &config,
            format!(
                "[host]\ndata_dir = \"{}\"\nhttp = \"127.0.0.1:0\"\n",
                home.join("data").display()
            ),
        )
        .unwrap();
        let mut args = vec!["up", "--bus", url, "--id", id];
        let config = config.display().to_string();
        args.extend(["-c", &config]);
        for label in labels {
            args.extend(["--label", label]);
        }
        FleetHost::spawn(&args, &home, &[])
    }

    /// `plexus <args>` with `env`, logging to `home/log`; once it is up.
    pub fn spawn(args: &[&str], home: &Path, env: &[(&str, &str)]) -> FleetHost {
        let mut child = Command::new(env!("CARGO_BIN_EXE_plexus"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(home.join("log")).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut host = FleetHost {
            child,
            lines,
            admin: String::new(),
        };
        let ready = host.wait_for("plexus: up in the fleet");
        host.admin = ready
            .split("metrics at http://")
            .nth(1)
            .and_then(|a| a.split("/metrics").next())
            .unwrap()
            .to_owned();
        host
    }

    /// Records `connector` took in on this host, from its `/metrics`.
    pub fn records_in(&self, connector: &str) -> u64 {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(&self.admin).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.admin
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let sample = format!("plexus_records_in_total{{connector=\"{connector}\"}}");
        text.lines()
            .find_map(|l| l.strip_prefix(&sample)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Block until a stdout line contains `text`; the line.
    pub fn wait_for(&mut self, text: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line with {text:?} from a fleet host"));
            if line.contains(text) {
                return line;
            }
        }
    }
}

impl Drop for FleetHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the `plexus` CLI; panics unless it succeeds.
pub fn plexus(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plexus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn transform(name: &str, plugin: &str, extra: &str) -> String {
    format!(
        "[[connector]]\nname = \"{name}\"\nkind = \"transform\"\nplugin = \"{plugin}\"\nfrom = \"{name}.in\"\nto = \"{name}.out\"\nlimits = {{ concurrency = 4 }}\n{extra}\n"
    )
}

/// Apply `text` and wait until every host reports `name` added; the time taken.
fn apply_and_wait(
    dir: &Path,
    url: &str,
    hosts: &mut [FleetHost],
    name: &str,
    text: &str,
) -> Duration {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let started = Instant::now();
    plexus(&["apply", "-c", &file.display().to_string(), "--bus", url]);
    for host in hosts.iter_mut() {
        host.wait_for(&format!("added [\"{name}\"]"));
    }
    started.elapsed()
}

/// Apply-to-running on `hosts`: the first apply (each host fetches and
/// compiles the plugin) and the median of `rounds` more (cached by digest).
pub fn apply_latency(
    dir: &Path,
    url: &str,
    hosts: &mut [FleetHost],
    rounds: usize,
) -> (Duration, Duration) {
    // Each round adds one connector to those of the rounds before.
    let mut text = transform("lat0", "testkit@1.0.0", "");
    let cold = apply_and_wait(dir, url, hosts, "lat0", &text);
    let mut warm: Vec<Duration> = (1..=rounds)
        .map(|k| {
            let name = format!("lat{k}");
            text.push_str(&transform(&name, "testkit@1.0.0", ""));
            apply_and_wait(dir, url, hosts, &name, &text)
        })
        .collect();
    warm.sort();
    (cold, warm[warm.len() / 2])
}

/// Records/s of the X12 transform `name` placed by `placement`, on inputs
/// already in its stream, counted between its first and last output.
pub async fn shared_throughput(
    dir: &Path,
    url: &str,
    js: &jetstream::Context,
    name: &str,
    placement: &str,
    payload: impl Fn(usize) -> String,
) -> f64 {
    let input = format!("{name}.in");
    super::stream(
        js,
        &format!("BENCH_{}", name.to_ascii_uppercase()),
        &[&input],
    )
    .await;
    super::publish_all(js, &input, payload).await;
    let arrivals =
        super::Arrivals::watch(&js.client(), &format!("{name}.out"), super::RECORDS).await;
    let text = transform(name, "x12@1.0.0", placement);
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    plexus(&[
        "apply",
        "-c",
        &file.display().to_string(),
        "--approve",
        "--bus",
        url,
    ]);
    arrivals.rate(super::RECORDS).await
}

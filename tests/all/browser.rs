//! Real headless Chromium for the dashboard tests, driven over the Chrome
//! DevTools Protocol: navigate, read the page's text, click, screenshot.
//! Chromium comes from Debian's `chromium` package (`just test` installs it
//! when it can); `$PLEXUS_CHROMIUM` names another binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one page load or command may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// The Chromium binary, if this machine has one.
pub fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PLEXUS_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file())
}

/// One headless Chromium with one page; killed on drop.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
}

impl Browser {
    /// Start Chromium (`binary`) with a fresh profile and open a blank page.
    pub async fn start(binary: &std::path::Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium starts");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let url = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium exited without its DevTools address");
        })
        .await
        .expect("chromium says where DevTools listens");
        // Keep reading its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools connection");
        let mut browser = Browser {
            _child: child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({})).await;
        browser
    }

    /// Send a command (to the page once attached) and wait for its result,
    /// passing over events.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            command["sessionId"] = self.session.clone().into();
        }
        self.socket
            .send(Message::text(command.to_string()))
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let reply = self.next().await;
                if reply["id"] == id {
                    assert!(reply.get("error").is_none(), "{method}: {reply}");
                    return reply["result"].clone();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} answered within {PATIENCE:?}"))
    }

    async fn next(&mut self) -> Value {
        loop {
            match self.socket.next().await.expect("DevTools open").unwrap() {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Close(_) => panic!("DevTools closed"),
                _ => {}
            }
        }
    }

    /// Wait for the page's next load event.
    async fn loaded(&mut self) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if self.next().await["method"] == "Page.loadEventFired" {
                    return;
                }
            }
        })
        .await
        .expect("the page loads");
    }

    /// Open `url` and wait until it has loaded.
    pub async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.loaded().await;
    }

    /// The value of a JavaScript expression on the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// The page's visible text.
    pub async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Click the element `selector` names, as a person would, and wait for
    /// the page it leads to.
    pub async fn click(&mut self, selector: &str) {
        let found = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
                serde_json::to_string(selector).unwrap()
            ))
            .await;
        assert_eq!(found, true, "no {selector} on the page");
        self.loaded().await;
    }

    /// A PNG of the page, written to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

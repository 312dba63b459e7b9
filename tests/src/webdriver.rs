//! A small W3C WebDriver client for headless Chromium through ChromeDriver: what the explorer test
//! needs and no more (open a page, run a script, read the page source and the browser's console
//! log, take a screenshot).
//!
//! WebDriver is JSON over HTTP, so this is a few `ureq` calls: [`ChromeDriver::start`] runs
//! `chromedriver` on a free loopback port and waits until it is ready, [`ChromeDriver::session`]
//! starts a headless browser whose console messages ChromeDriver records (`goog:loggingPrefs`),
//! and dropping a [`Session`] or the [`ChromeDriver`] ends the browser and the driver.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};

/// Longest ChromeDriver may take to answer its status once started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one WebDriver command may take (a page load included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest WebDriver answer read (a screenshot of a long page is a few MiB of base64).
const ANSWER_BYTES_MAX: u64 = 64 << 20;

/// A running `chromedriver`; killed when dropped.
pub struct ChromeDriver {
    process: Child,
    base: String,
    agent: ureq::Agent,
    chromium: PathBuf,
}

impl ChromeDriver {
    /// Starts `chromedriver` (its log in `log`) for the browser at `chromium`.
    pub fn start(chromedriver: &Path, chromium: &Path, log: &Path) -> anyhow::Result<ChromeDriver> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for ChromeDriver")?
            .port();
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let process = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(log_file.try_clone().with_context(|| format!("opening {}", log.display()))?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(COMMAND_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let driver = ChromeDriver {
            process,
            base: format!("http://127.0.0.1:{port}"),
            agent,
            chromium: chromium.to_path_buf(),
        };
        let started = Instant::now();
        loop {
            let ready = driver.call("GET", "/status", None).ok();
            if ready.is_some_and(|v| v["ready"] == true) {
                return Ok(driver);
            }
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "ChromeDriver did not get ready within {} s; its log is {}",
                START_TIMEOUT.as_secs(),
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a headless browser with a `width` × `height` window.
    pub fn session(&self, width: u32, height: u32) -> anyhow::Result<Session<'_>> {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": self.chromium,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--hide-scrollbars",
                        format!("--window-size={width},{height}"),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let answer =
            self.call("POST", "/session", Some(capabilities)).context("starting Chromium")?;
        let id = answer["sessionId"].as_str().context("no session id in the answer")?.to_owned();
        Ok(Session { driver: self, id })
    }

    /// One WebDriver command; its `value`, or the WebDriver error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, body) => self
                .agent
                .post(&url)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string().as_bytes()),
        };
        let mut response = response.with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(ANSWER_BYTES_MAX)
            .read_to_string()
            .with_context(|| format!("reading the answer to {method} {path}"))?;
        let answer: Value =
            serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON"))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: HTTP {status}: {} {}",
                value["error"].as_str().unwrap_or_default(),
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Best effort: a driver that already exited makes `kill` fail harmlessly.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A browser session; ends (the browser quits) when dropped.
pub struct Session<'a> {
    driver: &'a ChromeDriver,
    id: String,
}

impl Session<'_> {
    fn call(&self, method: &str, command: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.driver.call(method, &format!("/session/{}/{command}", self.id), body)
    }

    /// Opens `url` and waits for the page to load.
    pub fn open(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "url", Some(json!({ "url": url }))).map(|_| ())
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    pub fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.call("POST", "execute/sync", Some(json!({ "script": script, "args": [] })))
    }

    /// The page's current DOM, serialized.
    pub fn source(&self) -> anyhow::Result<String> {
        let value = self.call("GET", "source", None)?;
        value.as_str().map(str::to_owned).context("the page source is not a string")
    }

    /// The browser's console messages since the last call, as ChromeDriver recorded them: each
    /// with its `level` (`SEVERE` for errors) and `message`.
    pub fn console(&self) -> anyhow::Result<Vec<Value>> {
        let value = self.call("POST", "se/log", Some(json!({ "type": "browser" })))?;
        value.as_array().cloned().context("the browser log is not a list")
    }

    /// A PNG screenshot of the window.
    pub fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let value = self.call("GET", "screenshot", None)?;
        let encoded = value.as_str().context("the screenshot is not a string")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("the screenshot is not base64")
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Best effort: the driver is killed after its sessions in any case.
        let _ = self.driver.call("DELETE", &format!("/session/{}", self.id), None);
    }
}

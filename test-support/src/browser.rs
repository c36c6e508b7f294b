//! A real Chromium, headless, driven over WebDriver by its own `chromedriver` (Debian's
//! `chromium` and `chromium-driver`), for the portal's browser tests. Behind the `browser`
//! feature, so only the tests that drive a browser build a WebDriver client.
//!
//! ```ignore
//! let b = Browser::start().await?;          // chromedriver on a free port, a new session
//! b.client.goto("http://127.0.0.1:7070/").await?;
//! b.screenshot(Path::new("docs/portal/overview.png")).await?;
//! b.close().await;                          // ends the session; chromedriver dies on drop
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder};
// chromedriver is spoken to over plain HTTP on loopback: no TLS stack to build.
use hyper_util::client::legacy::connect::HttpConnector;

use crate::proc::Proc;

/// Why a browser test cannot run here, or none when it can.
pub fn unavailable() -> Option<String> {
    ["chromium", "chromedriver"]
        .into_iter()
        .find(|c| !crate::on_path(c))
        .map(|c| format!("{c} is not installed (Debian: chromium, chromium-driver)"))
}

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: Proc,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session with a 1280x900
    /// window (so screenshots have one size).
    pub async fn start() -> Result<Browser> {
        let port = crate::free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let driver = Proc::start(cmd).context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        // Root has no sandbox to drop into, and CI has a small /dev/shm.
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=en-GB", "--no-first-run",
            ]}),
        );
        // The control planes under test (the lab's too) serve HTTPS under self-signed
        // certificates.
        caps.insert("acceptInsecureCerts".into(), true.into());
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("no WebDriver session within 20 s: {e}\n{}", driver.log()),
            }
        };
        Ok(Browser { client, driver })
    }

    /// Saves a PNG of the window to `path`, creating its folder.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self.client.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Ends the session (the browser exits); chromedriver is killed when this is dropped.
    pub async fn close(self) {
        let _ = self.client.close().await;
        drop(self.driver);
    }
}

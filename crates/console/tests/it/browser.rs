//! Headless Chromium driven over WebDriver: a chromedriver of our own on a
//! free port, a fresh profile per test, and the few waits the tests need.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::ADMIN_TOKEN;

const INSTALL: &str = "install Debian's Chromium and its driver: \
     `apt-get update && apt-get install -y chromium chromium-driver` (as root)";

/// How long a wait for the page may take before the test fails. Generous:
/// it bounds a hang on a loaded CI machine, it measures nothing.
const PATIENCE: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    port: u16,
    /// The WebDriver session, until `close` ends it.
    session: Option<String>,
    profile: PathBuf,
}

impl Drop for Browser {
    /// Ends the WebDriver session (so that chromedriver shuts Chromium down
    /// cleanly, also when the test failed before `close`), then chromedriver.
    /// Killing chromedriver alone would leave Chromium running.
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            delete_session(self.port, &session);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}` over a plain blocking socket: Drop cannot await,
/// and the async client's task lives on the runtime that Drop is blocking.
fn delete_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_end(&mut Vec::new());
    }
}

fn program(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is missing, so the console's browser tests cannot run: {INSTALL} (or point {variable} at it)",
        path.display()
    );
    path
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose window is `width`
    /// by `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", chromedriver.display()));
        let profile = std::env::temp_dir().join(format!(
            "sluice-console-chromium-{}-{port}",
            std::process::id()
        ));
        let client = connect(port, &chromium, &profile, width, height).await;
        let session = client.session_id().await.expect("a session id");
        let mut browser = Browser {
            client,
            driver,
            port,
            session,
            profile,
        };
        browser.resize(width, height).await;
        browser
    }

    /// Makes the page's viewport `width` by `height` CSS pixels: the window
    /// is grown by whatever its frame takes.
    pub async fn resize(&mut self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("resize");
        let inner = self
            .client
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .expect("measure");
        let dw = width as i64 - inner[0].as_i64().unwrap_or(width as i64);
        let dh = height as i64 - inner[1].as_i64().unwrap_or(height as i64);
        if dw != 0 || dh != 0 {
            self.client
                .set_window_size((width as i64 + dw) as u32, (height as i64 + dh) as u32)
                .await
                .expect("resize");
        }
    }

    /// Ends the WebDriver session, so that Chromium shuts down cleanly.
    pub async fn close(mut self) {
        self.session = None;
        self.client.clone().close().await.expect("the session ends");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css:?} appeared: {e}"))
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
    }

    /// Runs `script` (a function body) with `args` and returns its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.expect("script")
    }

    /// Waits until `script` returns something truthy, and returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let value = self.eval(script, vec![]).await;
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}; the page shows:\n{}",
                self.main_text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of the element matching `css` contains `needle`.
    pub async fn until_text(&self, css: &str, needle: &str) -> String {
        let script = format!(
            "const el = document.querySelector({css}); return el && el.innerText.includes({needle}) ? el.innerText : null;",
            css = json!(css),
            needle = json!(needle)
        );
        self.until(&format!("{css:?} to show {needle:?}"), &script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn main_text(&self) -> String {
        self.eval("return document.querySelector('main').innerText;", vec![])
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// What has the keyboard focus: `tag#id.class` and its data-testid.
    pub async fn focused(&self) -> Value {
        self.eval(
            "const el = document.activeElement; return {tag: el.tagName.toLowerCase(), class: el.className, testid: el.dataset.testid || null, label: el.labels && el.labels[0] ? el.labels[0].innerText : null};",
            vec![],
        )
        .await
    }

    /// Opens the console at `address` (the server's base URL) signed in:
    /// with the operator token where the sign-in form keeps it.
    pub async fn sign_in(&self, address: &str) {
        self.goto(&format!("{address}/")).await;
        self.find("input[type=password]").await;
        self.eval(
            "sessionStorage.setItem('sluice.operator_token', arguments[0]);",
            vec![json!(ADMIN_TOKEN)],
        )
        .await;
    }

    /// Presses Enter on the element matching `css`, the keyboard's click.
    pub async fn press(&self, css: &str) {
        self.find(css)
            .await
            .send_keys(&Key::Enter.to_string())
            .await
            .expect("press");
    }

    /// Types `text` into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect("type");
    }

    /// Fills the name, type and nullable box of the new-connector form's
    /// field row `n` (1-based).
    pub async fn fill_field(&self, n: usize, name: &str, ty: &str, nullable: bool) {
        let row = format!(".field-row:nth-child({n})");
        let input = self.find(&format!("{row} .field-name")).await;
        input.clear().await.expect("clear");
        input.send_keys(name).await.expect("type");
        self.find(&format!("{row} .field-type"))
            .await
            .select_by_value(ty)
            .await
            .expect("select");
        let checkbox = self.find(&format!("{row} .field-nullable")).await;
        if checkbox.is_selected().await.expect("checked or not") != nullable {
            // Space toggles a focused checkbox, as it would for a person.
            checkbox.send_keys(" ").await.expect("toggle");
        }
    }

    /// Types into what has the focus, as a keyboard would.
    pub async fn keys(&self, text: &str) {
        let focused = self
            .client
            .active_element()
            .await
            .expect("an element has the focus");
        focused.send_keys(text).await.expect("type");
    }

    /// Presses and releases `key` on the keyboard, wherever the focus is.
    pub async fn press_key(&self, key: Key) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let value: char = key.into();
        let actions = KeyActions::new("keyboard".to_owned())
            .then(KeyAction::Down { value })
            .then(KeyAction::Up { value });
        self.client
            .perform_actions(actions)
            .await
            .expect("a key press");
    }

    pub async fn value(&self, css: &str) -> String {
        self.find(css)
            .await
            .prop("value")
            .await
            .expect("value")
            .unwrap_or_default()
    }

    /// A PNG of the whole page: the viewport is stretched to the page's
    /// height for the shot, then put back.
    pub async fn full_page_png(&mut self, width: u32, height: u32) -> Vec<u8> {
        let full = self
            .eval(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(height as u64) as u32;
        self.resize(width, full.max(height)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        self.resize(width, height).await;
        png
    }
}

async fn connect(
    port: u16,
    chromium: &std::path::Path,
    profile: &std::path::Path,
    width: u32,
    height: u32,
) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-crash-reporter",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // chromedriver takes a moment to listen; a session request before that
    // is refused, so retry until it answers.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no WebDriver session with chromedriver on {url}: {error}"),
        }
    }
}

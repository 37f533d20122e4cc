//! A real browser: headless Chromium driven through ChromeDriver (WebDriver,
//! `fantoccini`) against `postern demo` — the real binary, with its service,
//! connector, agent and sample app on loopback behind real TLS (the demo's
//! self-signed certificate, accepted as a user would accept it).
//!
//! The scenario: the administrator approves `postern admin login` in the
//! browser (username, password, TOTP) and assigns the demo's wiki to
//! themselves through the admin API; in a second browser context they open
//! the wiki, are sent to the sign-in pages, type username, password and a
//! TOTP code, and land on the wiki's identity page showing their name; in a
//! third context a demo user the wiki is not assigned to is refused; the
//! wiki's connector (one the test registers with a registration token in a
//! group of its own: `postern demo` stops once its own connector ends) is
//! revoked through the admin API and the wiki, reloaded, shows the "no
//! connector" page within a few seconds, the demo still running.
//!
//! And the admin console: the administrator signs in to `/admin` (password
//! and TOTP), publishes an app through the form and assigns a user to it;
//! that user, in another browser context, reaches the app; the connector is
//! revoked from the console and the app shows the "no connector" page.
//!
//! With `POSTERN_SCREENSHOTS=DIR` the test writes PNG screenshots of the
//! pages it passes into DIR (`scripts/screenshots` regenerates
//! `docs/screenshots/`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs
//! them); under `CI=true` their absence fails the test.

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::precondition_missing;

/// Debian's Chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver.
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Longest wait for a page to show what a step expects.
const PAGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for `postern demo` to come up (a debug build, fresh keys).
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);
/// "The app shows the 503 page within a few seconds" of the revocation.
const REVOKED_WITHIN: Duration = Duration::from_secs(5);
/// The browser window (and so the screenshots).
const WINDOW: (u32, u32) = (1200, 800);

/// ChromeDriver on a free loopback port, killed on drop, with the browser
/// profiles of its sessions in a temporary directory.
struct Driver {
    child: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
    sessions: usize,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A session left open (a failed test) leaves its Chromium behind once
        // ChromeDriver is gone: end the processes that use this driver's
        // profiles, found by their command lines.
        let profiles = self.dir.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&profiles) {
                let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
            }
        }
    }
}

impl Driver {
    /// Whether Chromium and ChromeDriver are installed: `None` when they are
    /// (`Some(why not)` otherwise).
    fn missing() -> Option<String> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
            .into_iter()
            .filter(|p| !Path::new(p).exists())
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "{} not installed (Debian's chromium and chromium-driver; scripts/test --setup-only installs them)",
                missing.join(" and ")
            )
        })
    }

    /// Starts ChromeDriver and waits until it answers.
    async fn start() -> Driver {
        let dir = tempfile::tempdir().unwrap();
        // A free port: the kernel's choice, released just before ChromeDriver
        // takes it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.path().join("chromedriver.log");
        let child = std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            sessions: 0,
        };
        let status = format!("{}/status", driver.url);
        let http = reqwest::Client::new();
        poll("ChromeDriver to answer", Duration::from_secs(20), || async {
            let r = http.get(&status).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            body["value"]["ready"].as_bool().filter(|ready| *ready)
        })
        .await
        .unwrap_or_else(|why| {
            panic!(
                "{why}\n--- chromedriver.log ---\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        driver
    }

    /// A new browser session: its own Chromium with a fresh profile, so its
    /// own cookie jar. `*.localhost` names lead to loopback.
    async fn session(&mut self, name: &'static str) -> Session {
        self.sessions += 1;
        let profile = self.dir.path().join(format!("profile-{}-{name}", self.sessions));
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.display()),
            // Chromium resolves *.localhost to loopback on its own; the rule
            // keeps it off IPv6 (the demo listens on 127.0.0.1).
            "--host-resolver-rules=MAP localhost 127.0.0.1, MAP *.localhost 127.0.0.1".to_owned(),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session ({name}): {e}"));
        Session { client, name }
    }
}

/// Polls `check` until it gives a value or `timeout` passes (then says what
/// it waited for).
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("waited {timeout:?} for {what}"));
        }
        postern_testkit::poll_pause(Duration::from_millis(100)).await;
    }
}

/// What a page shows, read from the browser.
#[derive(Debug, Clone)]
struct Shown {
    url: String,
    title: String,
    text: String,
}

/// One browser context.
struct Session {
    client: Client,
    name: &'static str,
}

impl Session {
    /// Opens `url` and waits for the page (and any redirects) to load.
    async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: opening {url}: {e}", self.name));
    }

    /// The page as it is now.
    async fn shown(&self) -> Option<Shown> {
        let url = self.client.current_url().await.ok()?.to_string();
        let title = self.client.title().await.ok()?;
        let text = self.client.find(Locator::Css("body")).await.ok()?.text().await.ok()?;
        Some(Shown { url, title, text })
    }

    /// Waits until the page satisfies `ok`; panics with what it shows after
    /// [`PAGE_TIMEOUT`].
    async fn wait_for(&self, what: &str, ok: impl Fn(&Shown) -> bool) -> Shown {
        let last = Mutex::new(None);
        let found = poll(what, PAGE_TIMEOUT, || async {
            let shown = self.shown().await?;
            let good = ok(&shown);
            *last.lock().unwrap() = Some(shown.clone());
            good.then_some(shown)
        })
        .await;
        found.unwrap_or_else(|why| {
            panic!(
                "{}: {why}; the page shows:\n{:#?}",
                self.name,
                last.lock().unwrap().take()
            )
        })
    }

    /// Reloads the page until it satisfies `ok`; panics with what it shows
    /// after `timeout`.
    async fn reload_until(&self, what: &str, timeout: Duration, ok: impl Fn(&Shown) -> bool) -> Shown {
        let last = Mutex::new(None);
        let found = poll(what, timeout, || async {
            self.client.refresh().await.ok()?;
            let shown = self.shown().await?;
            let good = ok(&shown);
            *last.lock().unwrap() = Some(shown.clone());
            good.then_some(shown)
        })
        .await;
        found.unwrap_or_else(|why| {
            panic!(
                "{}: {why}; the page shows:\n{:#?}",
                self.name,
                last.lock().unwrap().take()
            )
        })
    }

    /// Whether the page has a form field named `name`.
    async fn has_field(&self, name: &str) -> bool {
        self.client
            .find(Locator::Css(&format!("input[name=\"{name}\"]")))
            .await
            .is_ok()
    }

    /// Types `fields` into the form and presses its main button; returns once
    /// the browser has left the page.
    async fn submit(&self, fields: &[(&str, &str)]) {
        self.submit_with(fields, "button[name=\"action\"][value=\"submit\"]")
            .await;
    }

    /// Types `fields` into the form and presses `button` (CSS); returns once
    /// the browser has left the page.
    async fn submit_with(&self, fields: &[(&str, &str)], button: &str) {
        self.fill(fields).await;
        self.press(button).await;
    }

    /// Types `fields` into the form.
    async fn fill(&self, fields: &[(&str, &str)]) {
        for (name, value) in fields {
            let input = self
                .client
                .find(Locator::Css(&format!("input[name=\"{name}\"]")))
                .await
                .unwrap_or_else(|e| panic!("{}: no field {name}: {e}", self.name));
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
    }

    /// Clicks `target` (CSS: a button or a link); returns once the browser
    /// has left the page.
    async fn press(&self, target: &str) {
        // A mark on this document: gone once the next page has loaded.
        self.client
            .execute("window.__posternLeft = false;", vec![])
            .await
            .unwrap();
        self.client
            .find(Locator::Css(target))
            .await
            .unwrap_or_else(|e| panic!("{}: nothing to click at {target}: {e}", self.name))
            .click()
            .await
            .unwrap();
        let client = &self.client;
        poll("the next page", PAGE_TIMEOUT, || async {
            let left = client
                .execute(
                    "return window.__posternLeft === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()?;
            left.as_bool().filter(|l| *l)
        })
        .await
        .unwrap_or_else(|why| panic!("{}: {why} after clicking {target}", self.name));
    }

    /// Answers the sign-in pages (and the device approval) as `who` until
    /// `done` holds or a page asks for nothing this knows; returns that page.
    /// `shots` names the screenshots of the pages that ask for a username
    /// and for a code.
    async fn answer_sign_in(
        &self,
        who: &Account,
        totp: &mut Totp,
        shots: Option<&Screenshots>,
        done: impl Fn(&Shown) -> bool,
    ) -> Shown {
        for _ in 0..10 {
            let page = self
                .wait_for("a page", |s| s.text.len() > 1 || !s.title.is_empty())
                .await;
            if done(&page) {
                return page;
            }
            if self.has_field("username").await {
                if let Some(s) = shots {
                    s.take(self, "sign-in-username").await;
                }
                self.submit(&[("username", &who.username)]).await;
            } else if self.has_field("password").await {
                if let Some(s) = shots {
                    s.take(self, "sign-in-password").await;
                }
                self.submit(&[("password", &who.password)]).await;
            } else if self.has_field("code").await {
                let code = totp.next().await;
                if let Some(s) = shots {
                    self.client
                        .find(Locator::Css("input[name=\"code\"]"))
                        .await
                        .unwrap()
                        .send_keys(&code)
                        .await
                        .unwrap();
                    s.take(self, "sign-in-totp").await;
                }
                self.submit(&[("code", &code)]).await;
            } else if self
                .client
                .find(Locator::Css("button[name=\"action\"][value=\"submit\"]"))
                .await
                .is_ok()
            {
                // A page that only asks to go on (the device code, the approval).
                self.submit(&[]).await;
            } else {
                return page;
            }
        }
        panic!("{}: the sign-in did not finish: {:#?}", self.name, self.shown().await)
    }

    /// Ends the session (and its Chromium).
    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Where screenshots go, when asked for (`POSTERN_SCREENSHOTS=DIR`).
struct Screenshots {
    dir: PathBuf,
}

impl Screenshots {
    fn from_env() -> Option<Screenshots> {
        let dir = PathBuf::from(std::env::var_os("POSTERN_SCREENSHOTS")?);
        std::fs::create_dir_all(&dir).unwrap();
        Some(Screenshots { dir })
    }

    /// A PNG of what `session` shows, as `name.png`.
    async fn take(&self, session: &Session, name: &str) {
        let png = session.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.dir.join(format!("{name}.png")), png).unwrap();
    }
}

/// A user's username and password.
#[derive(Debug, Clone)]
struct Account {
    username: String,
    password: String,
}

/// The administrator's authenticator: each code typed is of a later time
/// step than the last (the STS accepts a step once, and one step of skew).
struct Totp {
    secret: String,
    last_step: Option<i64>,
}

impl Totp {
    fn now() -> i64 {
        use postern_time::Clock as _;
        postern_time::SystemClock.now().secs()
    }

    /// A code not typed before, waiting for the clock when the next unused
    /// step is beyond the accepted skew.
    async fn next(&mut self) -> String {
        loop {
            let now_step = Self::now() / 30;
            let step = self.last_step.map_or(now_step, |l| (l + 1).max(now_step));
            if step <= now_step + 1 {
                self.last_step = Some(step);
                return postern_testkit::totp_code(&self.secret, postern_time::UnixTime::from_secs(step * 30)).unwrap();
            }
            // The clock is what is waited for here: the next time step.
            let into = Self::now() % 30;
            postern_testkit::hold_for(Duration::from_secs((30 - into) as u64)).await;
        }
    }
}

/// A running `postern demo` (killed on drop; stopped with SIGINT by [`Demo::stop`]).
struct Demo {
    child: Child,
    output: Arc<Mutex<String>>,
    dir: PathBuf,
    record: Value,
    port: u16,
}

impl Demo {
    /// Starts `postern demo` in `dir` on free ports and waits for its summary.
    async fn start(dir: &Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["demo", "--port", "0", "--control-port", "0", "--dir"])
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let out = output.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let is_ready = line.starts_with("Press Ctrl-C to stop the demo");
                out.lock().unwrap().push_str(&(line + "\n"));
                if is_ready && let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        });
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let out = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                out.lock().unwrap().push_str(&format!("stderr: {line}\n"));
            }
        });
        if tokio::time::timeout(DEMO_TIMEOUT, ready_rx).await.is_err() {
            panic!("postern demo did not come up:\n{}", output.lock().unwrap());
        }
        let record: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap();
        let printed = output.lock().unwrap().clone();
        let port = regex_lite::Regex::new(r"https://wiki\.demo\.localhost:(\d+)/")
            .unwrap()
            .captures(&printed)
            .unwrap_or_else(|| panic!("no wiki URL printed:\n{printed}"))[1]
            .parse()
            .unwrap();
        Demo {
            child,
            output,
            dir: dir.to_owned(),
            record,
            port,
        }
    }

    fn service_url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn wiki_url(&self) -> String {
        format!("https://wiki.demo.localhost:{}/", self.port)
    }

    fn admin_account(&self) -> (Account, Totp) {
        let admin = &self.record["admin"];
        (
            Account {
                username: admin["username"].as_str().unwrap().to_owned(),
                password: admin["password"].as_str().unwrap().to_owned(),
            },
            Totp {
                secret: admin["totp_secret"].as_str().unwrap().to_owned(),
                last_step: None,
            },
        )
    }

    /// A demo user not in the wiki's group.
    fn unassigned_user(&self) -> Account {
        let user = self.record["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| !u["groups"].as_array().unwrap().iter().any(|g| g == "staff"))
            .expect("a demo user outside the staff group");
        Account {
            username: user["username"].as_str().unwrap().to_owned(),
            password: user["password"].as_str().unwrap().to_owned(),
        }
    }

    fn certificate(&self) -> PathBuf {
        self.dir.join("data/tls/self-signed.crt")
    }

    /// `postern admin ARGS` against the demo, signed in as `cli_dir` holds.
    fn admin_cli(&self, cli_dir: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
        c.arg("admin")
            .env("POSTERN_CONFIG_DIR", cli_dir)
            .env("SSL_CERT_FILE", self.certificate())
            .env_remove("POSTERN_SERVER")
            .env_remove("POSTERN_TENANT")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `postern admin ARGS`; its standard output, or a panic with why not.
    async fn admin_run(&self, cli_dir: &Path, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(60), self.admin_cli(cli_dir).args(args).output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "postern admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Stops it as Ctrl-C does, so its children stop too.
    async fn stop(mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "postern demo stopped before it was told to:\n{}",
            self.output.lock().unwrap()
        );
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            panic!("postern demo did not stop at SIGINT:\n{}", self.output.lock().unwrap());
        }
    }
}

/// The administrator signs `postern admin` in through the browser (device
/// flow: username, password, TOTP, approval); returns the CLI's directory.
async fn admin_cli_login(demo: &Demo, session: &Session, admin: &Account, totp: &mut Totp, cli_dir: &Path) {
    let mut login = demo
        .admin_cli(cli_dir)
        .args(["login", "--server", &demo.service_url(), "--tenant", "demo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap_or_default();
    let url = first
        .strip_prefix("To sign in, open ")
        .unwrap_or_else(|| panic!("postern admin login printed {first:?}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    // The rest of what it prints is drained, like a terminal.
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    session.open(&url).await;
    let page = session
        .answer_sign_in(admin, totp, None, |s| s.title == "Device approved")
        .await;
    assert_eq!(page.title, "Device approved", "{page:#?}");
    let out = tokio::time::timeout(Duration::from_secs(60), login.wait_with_output())
        .await
        .expect("postern admin login ends once approved")
        .unwrap();
    assert!(out.status.success(), "postern admin login failed");
}

/// A connector of the test's own in a new connector group `lab`, registered
/// with a registration token and running until dropped.
async fn lab_connector(demo: &Demo, cli_dir: &Path, state: &Path) -> Child {
    demo.admin_run(cli_dir, &["connector-groups", "create", "lab"]).await;
    let token = demo
        .admin_run(
            cli_dir,
            &["registration-tokens", "create", "--kind", "connector", "--group", "lab"],
        )
        .await;
    let postern = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    };
    let service = demo.service_url();
    let certificate = demo.certificate();
    let registered = tokio::time::timeout(
        Duration::from_secs(60),
        postern()
            .args(["connector", "register", "--allow-root", "--server", &service])
            .args(["--tenant", "demo", "--token", token.trim(), "--name", "lab-1"])
            .args(["--group", "lab", "--server-ca"])
            .arg(&certificate)
            .arg("--state-dir")
            .arg(state)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        registered.status.success(),
        "postern connector register: {}",
        String::from_utf8_lossy(&registered.stderr)
    );
    postern()
        .args(["connector", "run", "--allow-root", "--state-dir"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn browser_sign_in_with_totp_refusal_and_revoked_connector() {
    let test = "browser_sign_in_with_totp_refusal_and_revoked_connector";
    if let Some(why) = Driver::missing() {
        precondition_missing(test, &why);
        return;
    }
    let started = Instant::now();
    let shots = Screenshots::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let demo = Demo::start(&tmp.path().join("demo")).await;
    let (admin, mut totp) = demo.admin_account();
    let mut driver = Driver::start().await;

    // The administrator signs the CLI in through the browser and lets
    // themselves use the wiki (the admin API, through the CLI).
    let console = driver.session("administrator").await;
    let cli_dir = tmp.path().join("cli");
    admin_cli_login(&demo, &console, &admin, &mut totp, &cli_dir).await;
    demo.admin_run(&cli_dir, &["apps", "assign", "Wiki", "--user", &admin.username])
        .await;
    // The wiki moves to a connector of the test's own (postern demo stops
    // once its own connector ends, so that one is not the one revoked).
    let _lab = lab_connector(&demo, &cli_dir, &tmp.path().join("lab-connector")).await;
    demo.admin_run(&cli_dir, &["apps", "update", "Wiki", "--connector-group", "lab"])
        .await;

    // (a) In a browser context of its own, the wiki sends them to the
    // sign-in pages; after username, password and code they are on the
    // wiki's page, which verified who they are.
    let user = driver.session("wiki user").await;
    let wiki = demo.wiki_url();
    user.open(&wiki).await;
    let sts = user
        .wait_for("the sign-in pages", |s| s.url.starts_with(&demo.service_url()))
        .await;
    assert!(sts.url.contains("/t/demo/"), "the demo organisation's STS: {sts:#?}");
    let page = user
        .answer_sign_in(&admin, &mut totp, shots.as_ref(), |s| s.url.starts_with(&wiki))
        .await;
    assert!(page.url.starts_with(&wiki), "back on the wiki: {page:#?}");
    // The first request may come before the new connector's tunnel is up.
    let identity = user
        .reload_until("the identity page", PAGE_TIMEOUT, |s| {
            s.text.contains("Assertion verified")
        })
        .await;
    assert!(
        identity
            .text
            .contains(&format!("Assertion verified: you are {}", admin.username)),
        "{identity:#?}"
    );
    if let Some(s) = &shots {
        s.take(&user, "app-identity").await;
    }

    // (b) Another user, in another context, whom the wiki is not assigned to:
    // the right password, and still refused.
    let other = demo.unassigned_user();
    let refused_session = driver.session("unassigned user").await;
    refused_session.open(&wiki).await;
    let refused = refused_session
        .answer_sign_in(&other, &mut totp, None, |s| s.url.starts_with(&wiki))
        .await;
    assert!(
        refused.text.contains("not assigned to this application"),
        "{} is refused: {refused:#?}",
        other.username
    );
    assert!(
        !refused.text.contains("Assertion verified"),
        "no identity page: {refused:#?}"
    );
    if let Some(s) = &shots {
        s.take(&refused_session, "refused-not-assigned").await;
    }
    refused_session.close().await;

    // (c) The connector is revoked (admin API): the wiki, reloaded, says no
    // connector is online, within a few seconds.
    demo.admin_run(&cli_dir, &["connectors", "delete", "lab-1"]).await;
    let revoked = Instant::now();
    let gone = user
        .reload_until("the no-connector page", REVOKED_WITHIN, |s| {
            s.text.contains("No connector serving this application is online")
        })
        .await;
    assert_eq!(gone.title, "Application unavailable", "{gone:#?}");
    let took = revoked.elapsed();
    if let Some(s) = &shots {
        s.take(&user, "app-no-connector-503").await;
    }
    eprintln!("the no-connector page {took:?} after the revocation");

    user.close().await;
    console.close().await;
    drop(driver);
    demo.stop().await;
    eprintln!("browser test took {:?}", started.elapsed());
}

/// (d) The admin console in the browser: the administrator signs in to
/// `/admin` with password and TOTP, publishes an app through the form and
/// assigns a user to it; that user, in another browser context, opens the app
/// and reaches the demo's sample app as themselves; the administrator revokes
/// the connector from the console and the app, reloaded, shows the "no
/// connector" page.
#[tokio::test]
async fn browser_admin_console_publish_assign_and_revoke() {
    let test = "browser_admin_console_publish_assign_and_revoke";
    if let Some(why) = Driver::missing() {
        precondition_missing(test, &why);
        return;
    }
    let shots = Screenshots::from_env();
    let tmp = tempfile::tempdir().unwrap();
    let demo = Demo::start(&tmp.path().join("demo")).await;
    let (admin, mut totp) = demo.admin_account();
    let mut driver = Driver::start().await;
    let service = demo.service_url();

    // A connector of the test's own to revoke at the end (postern demo stops
    // once its own connector ends), registered with the CLI, which the
    // administrator signs in through this browser.
    let console = driver.session("administrator").await;
    let cli_dir = tmp.path().join("cli");
    admin_cli_login(&demo, &console, &admin, &mut totp, &cli_dir).await;
    let _lab = lab_connector(&demo, &cli_dir, &tmp.path().join("lab-connector")).await;

    // Sign in to the console of the demo organisation.
    console.open(&format!("{service}/admin/login?tenant=demo")).await;
    let overview_url = format!("{service}/admin");
    let overview = console
        .answer_sign_in(&admin, &mut totp, None, |s| {
            s.url.trim_end_matches('/') == overview_url && s.title.contains("Overview")
        })
        .await;
    assert!(overview.text.contains(&admin.username), "{overview:#?}");
    if let Some(s) = &shots {
        s.take(&console, "console-overview").await;
    }

    // Publish an app through the form: the demo's sample backend at a new name.
    let backend = demo.record["ports"]["wiki_backend"]
        .as_u64()
        .expect("the wiki backend's port");
    let handbook = format!("https://handbook.demo.localhost:{}/", demo.port);
    console.open(&format!("{service}/admin/apps/new")).await;
    console
        .wait_for("the publish form", |s| s.text.contains("Publish"))
        .await;
    let internal = format!("http://127.0.0.1:{backend}/");
    let publish = [
        ("name", "Handbook"),
        ("external_url", handbook.as_str()),
        ("internal_url", internal.as_str()),
    ];
    if let Some(s) = &shots {
        console.fill(&publish).await;
        s.take(&console, "console-publish").await;
    }
    console.submit_with(&publish, "#publish-submit").await;
    console
        .wait_for("the published app", |s| s.text.contains("The app is published."))
        .await;

    // Assign the demo user the wiki is not assigned to.
    let user = demo.unassigned_user();
    console
        .submit_with(&[("principal", &user.username)], "#assign-submit")
        .await;
    console
        .wait_for("the assignment", |s| {
            s.text.contains("Assignments") && s.text.contains(&user.username)
        })
        .await;
    if let Some(s) = &shots {
        s.take(&console, "console-app").await;
    }

    // The user, in a browser context of their own, signs in and reaches the
    // app. (The sample backend checks assertions for the wiki's audience, so
    // it names the user from the identity headers it received.)
    let visitor = driver.session("assigned user").await;
    visitor.open(&handbook).await;
    let page = visitor
        .answer_sign_in(&user, &mut totp, None, |s| s.url.starts_with(&handbook))
        .await;
    assert!(page.url.starts_with(&handbook), "{page:#?}");
    let page = visitor
        .wait_for("the sample app", |s| s.title.starts_with("Postern demo app"))
        .await;
    assert!(
        page.text.contains(&user.username),
        "the user's name on the page: {page:#?}"
    );

    // The app moves to the test's connector, and still answers through it.
    demo.admin_run(&cli_dir, &["apps", "update", "Handbook", "--connector-group", "lab"])
        .await;
    visitor
        .reload_until("the sample app through the lab connector", PAGE_TIMEOUT, |s| {
            s.title.starts_with("Postern demo app")
        })
        .await;
    let connectors: serde_json::Value =
        serde_json::from_str(&demo.admin_run(&cli_dir, &["connectors", "list"]).await).unwrap();
    let lab_id = connectors
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "lab-1"))
        .and_then(|c| c["id"].as_str())
        .unwrap_or_else(|| panic!("lab-1 among the connectors: {connectors}"))
        .to_owned();

    // Revoke that connector from the console.
    console.open(&format!("{service}/admin/connectors")).await;
    console
        .wait_for("the connectors page", |s| s.text.contains("Revoke"))
        .await;
    if let Some(s) = &shots {
        s.take(&console, "console-connectors").await;
    }
    console.press(&format!("[id=\"revoke-{lab_id}\"]")).await;
    console.press("form[action$=\"/revoke\"] button[type=\"submit\"]").await;
    console
        .wait_for("the revocation's notice", |s| s.url.contains("done=revoked"))
        .await;
    let revoked = Instant::now();
    let gone = visitor
        .reload_until("the no-connector page", REVOKED_WITHIN, |s| {
            s.text.contains("No connector serving this application is online")
        })
        .await;
    assert_eq!(gone.title, "Application unavailable", "{gone:#?}");
    eprintln!(
        "console: the no-connector page {:?} after the revocation",
        revoked.elapsed()
    );

    visitor.close().await;
    console.close().await;
    drop(driver);
    demo.stop().await;
}

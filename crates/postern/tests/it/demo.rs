//! `postern demo` as a new user meets it: the real binary with a temporary
//! `--dir` and free ports, waited on until it prints its summary; then real
//! HTTPS clients that trust the demo's self-signed certificate and resolve
//! its `*.localhost` names to loopback, as browsers do: a demo user signs in
//! to the pre-authenticated app through the sign-in pages (the password
//! checked by the agent) and sees the identity page with the assertion
//! verified; the passthrough app answers without a sign-in; an event stream
//! and a WebSocket echo come through the tunnel; SIGINT stops it within
//! seconds; a second run on the same directory reuses everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use postern_testkit::{Form, Page};
use reqwest::cookie::Jar;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::precondition_missing;

/// The line the demo's summary ends with.
const READY_LINE: &str = "Press Ctrl-C to stop the demo";
/// Longest wait for the demo to come up (a debug build, fresh keys).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// "Stops everything on Ctrl-C within a few seconds."
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `postern demo` and what it printed.
struct RunningDemo {
    child: Child,
    output: Arc<Mutex<String>>,
    /// The tasks reading standard output and error; they end at end of file.
    readers: Vec<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
}

impl RunningDemo {
    /// Starts `postern demo --dir dir` with `args` and waits for its summary.
    async fn start(dir: &Path, args: &[&str]) -> RunningDemo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
            .arg("demo")
            .arg("--dir")
            .arg(dir)
            .args(args)
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
        // Standard output keeps being read, like a terminal.
        let stdout_reader = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                let is_ready = line.starts_with(READY_LINE);
                out.lock().unwrap().push_str(&(line + "\n"));
                if is_ready && let Some(tx) = ready.take() {
                    let _ = tx.send(());
                }
            }
        });
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let out = output.clone();
        let stderr_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                out.lock().unwrap().push_str(&format!("stderr: {line}\n"));
            }
        });
        let mut demo = RunningDemo {
            child,
            output,
            readers: vec![stdout_reader, stderr_reader],
            dir: dir.to_owned(),
        };
        let exited = async {
            loop {
                if let Ok(Some(status)) = demo.child.try_wait() {
                    return status;
                }
                postern_testkit::poll_pause(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            _ = ready_rx => {}
            status = exited => panic!("postern demo exited ({status}) before it was up:\n{}", demo.diagnostics()),
            () = tokio::time::sleep(START_TIMEOUT) /* the deadline */ => panic!("postern demo did not come up:\n{}", demo.diagnostics()),
        }
        demo
    }

    /// Everything it printed.
    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Its output and its log, for a failing assertion.
    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("demo.log")).unwrap_or_default();
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}\n--- demo.log (end) ---\n{}", self.output(), tail.join("\n"))
    }

    /// The first capture of `pattern` in the output.
    fn printed(&self, pattern: &str) -> String {
        let output = self.output();
        regex_lite::Regex::new(pattern)
            .unwrap()
            .captures(&output)
            .and_then(|c| c.get(1))
            .unwrap_or_else(|| panic!("{pattern:?} not in the output:\n{output}"))
            .as_str()
            .to_owned()
    }

    /// The HTTPS port of the service and the apps.
    fn port(&self) -> u16 {
        self.printed(r"https://wiki\.demo\.localhost:(\d+)/").parse().unwrap()
    }

    /// The password printed for `username`.
    fn password(&self, username: &str) -> String {
        self.printed(&format!(r"{}\s+password (\S+)", regex_lite::escape(username)))
    }

    /// The demo's certificate (PEM).
    fn certificate(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/tls/self-signed.crt")).unwrap()
    }

    /// Sends `signal` and returns how long it took to exit, and whether it
    /// exited with success.
    async fn stop_with(mut self, signal: &str) -> (Duration, bool, String) {
        let pid = self.child.id().unwrap().to_string();
        let started = Instant::now();
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(STOP_TIMEOUT * 3, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("postern demo did not stop at {signal}:\n{}", self.diagnostics()))
            .unwrap();
        let elapsed = started.elapsed();
        // The readers have taken the last lines when they reach end of file.
        for reader in std::mem::take(&mut self.readers) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, reader).await;
        }
        (elapsed, status.success(), self.output())
    }
}

/// A browser stand-in for the demo: cookies, no automatic redirects, the
/// demo's certificate as the only trust anchor, `*.demo.localhost` and
/// `localhost` resolved to the demo's port on loopback.
fn browser(port: u16, certificate: &str) -> reqwest::Client {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    reqwest::Client::builder()
        .cookie_provider(Arc::new(Jar::default()))
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(certificate.as_bytes()).unwrap()])
        .resolve("localhost", addr)
        .resolve("wiki.demo.localhost", addr)
        .resolve("public.demo.localhost", addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> Page {
    let r = client.get(url).send().await.unwrap();
    Page {
        url: url.to_owned(),
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn submit(client: &reqwest::Client, form: &Form, fields: &[(&str, &str)]) -> Page {
    let mut all: Vec<(String, String)> = form.hidden.clone();
    all.extend(fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    all.push(("action".into(), "submit".into()));
    let r = client.post(&form.action).form(&all).send().await.unwrap();
    Page {
        url: form.action.clone(),
        status: r.status(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

/// Follows redirects from `page` (across hosts, as a browser does).
async fn follow(client: &reqwest::Client, mut page: Page) -> Page {
    for _ in 0..10 {
        match page.location() {
            Some(next) if page.status.is_redirection() => page = get(client, &next).await,
            _ => return page,
        }
    }
    panic!("too many redirects from {}", page.url)
}

/// Opens `url` and answers the sign-in pages with `username` and `password`
/// as a user would; returns the first page that asks for nothing more (or
/// shows an error).
async fn sign_in(client: &reqwest::Client, url: &str, username: &str, password: &str) -> Page {
    let mut page = follow(client, get(client, url).await).await;
    for _ in 0..6 {
        let Ok(form) = page.form() else { return page };
        if page.error().is_some() {
            return page;
        }
        let next = if form.fields.iter().any(|f| f == "username") {
            submit(client, &form, &[("username", username)]).await
        } else if form.fields.iter().any(|f| f == "password") {
            submit(client, &form, &[("password", password)]).await
        } else {
            return page;
        };
        page = follow(client, next).await;
    }
    panic!("the sign-in did not finish: {}\n{}", page.url, page.body)
}

/// The first server-sent event of `url`, read as it streams.
async fn first_event(client: &reqwest::Client, url: &str) -> String {
    let mut response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("\n\n") {
        assert!(Instant::now() < deadline, "no whole event within 10 s: {text:?}");
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text
}

/// A WebSocket round trip to `wss://{host}:{port}/ws/echo`, over real TLS
/// (HTTP/1.1, as browsers open WebSockets).
async fn websocket_echo(host: &str, port: u16, certificate: &str, message: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(certificate.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(format!("wss://{host}:{port}/ws/echo"), tls)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(message))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    echoed.into_text().unwrap().to_string()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn record(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("demo.json")).unwrap()).unwrap()
}

/// The `sub` (user ID) shown on the identity page.
fn shown_user_id(page: &Page) -> String {
    let re = regex_lite::Regex::new(r"<th>user ID \(sub\)</th><td>([^<]+)</td>").unwrap();
    re.captures(&page.body)
        .unwrap_or_else(|| panic!("no user ID on the page:\n{}", page.body))[1]
        .to_owned()
}

/// Alice signs in to the wiki and sees the identity page; returns it.
async fn alice_sees_the_wiki(demo: &RunningDemo) -> (reqwest::Client, Page) {
    let port = demo.port();
    let alice = browser(port, &demo.certificate());
    let wiki = format!("https://wiki.demo.localhost:{port}/");
    let page = sign_in(
        &alice,
        &wiki,
        "alice@demo.localhost",
        &demo.password("alice@demo.localhost"),
    )
    .await;
    assert_eq!(page.status, 200, "{}\n{}", page.url, page.body);
    assert_eq!(page.url, wiki, "back on the app after signing in");
    assert!(
        page.body
            .contains("id=\"identity\" class=\"ok\">Assertion verified: you are <b>alice@demo.localhost</b>"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("staff") && page.body.contains("engineering"),
        "groups from the directory"
    );
    (alice, page)
}

/// The first ten minutes: one command brings everything up, and everything
/// it prints works; Ctrl-C stops it; a second run reuses the state.
#[tokio::test]
async fn postern_demo_brings_everything_up_and_a_second_run_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo state");
    let demo = RunningDemo::start(&dir, &["--port", "0", "--control-port", "0"]).await;
    let port = demo.port();
    let output = demo.output();
    for shown in [
        "new demo",
        "service at https://localhost:",
        "connector registered",
        "agent registered",
        "agent connected",
        "connector tunnel up",
        &format!("https://public.demo.localhost:{port}/"),
        "admin@demo.localhost",
        "otpauth://totp/",
    ] {
        assert!(output.contains(shown), "{shown:?} not printed:\n{output}");
    }

    // A demo user signs in (the password checked by the agent against the
    // directory: alice has no password in the service) and the app verifies
    // the assertion against the organisation's JWKS.
    let (alice, page) = alice_sees_the_wiki(&demo).await;
    let alice_id = shown_user_id(&page);
    let event = first_event(&alice, &format!("https://wiki.demo.localhost:{port}/events/stream")).await;
    assert!(
        event.contains("event: tick") && event.contains("data: tick 0"),
        "{event:?}"
    );

    // The passthrough app needs no sign-in and vouches for no one.
    let anyone = browser(port, &demo.certificate());
    let public = get(&anyone, &format!("https://public.demo.localhost:{port}/")).await;
    assert_eq!(public.status, 200, "{}", public.body);
    assert!(
        public.body.contains("published without pre-authentication"),
        "{}",
        public.body
    );
    let echoed = websocket_echo(
        "public.demo.localhost",
        port,
        &demo.certificate(),
        "hello through postern",
    )
    .await;
    assert_eq!(echoed, "hello through postern");

    // Failure paths: a wrong password is refused by the directory; a user the
    // wiki is not assigned to signs in and is still refused.
    let wiki = format!("https://wiki.demo.localhost:{port}/");
    let wrong = sign_in(
        &browser(port, &demo.certificate()),
        &wiki,
        "alice@demo.localhost",
        "not-her-password",
    )
    .await;
    assert!(
        wrong.error().is_some(),
        "a wrong password shows an error: {}",
        wrong.body
    );
    let carol = sign_in(
        &browser(port, &demo.certificate()),
        &wiki,
        "carol@demo.localhost",
        &demo.password("carol@demo.localhost"),
    )
    .await;
    assert_eq!(
        carol.status, 403,
        "carol is not assigned: {}\n{}",
        carol.url, carol.body
    );

    // State: owner-only.
    assert_eq!(mode(&dir), 0o700);
    for file in [
        "demo.json",
        "users",
        "agent.toml",
        "data/kek",
        "data/tls/self-signed.key",
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    for sub in ["data", "connector", "agent"] {
        assert_eq!(mode(&dir.join(sub)), 0o700, "{sub}");
    }
    let first = record(&dir);

    // A second demo on the same directory would share its database and keys.
    let twice = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["demo", "--port", "0", "--control-port", "0", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!twice.status.success());
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("another postern demo is running on"), "{err}");

    // Ctrl-C stops everything within seconds.
    let (took, ok, output) = demo.stop_with("-INT").await;
    assert!(ok, "exit status after SIGINT:\n{output}");
    assert!(took < STOP_TIMEOUT, "SIGINT took {took:?}");
    assert!(output.contains("Stopped."), "{output}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "nothing listens any more"
    );

    // A second run on the same directory, without port flags: the same
    // organisation, users, apps and components, on the same ports if free.
    let again = RunningDemo::start(&dir, &[]).await;
    let output = again.output();
    assert!(output.contains("state of the last run found"), "{output}");
    assert!(output.contains("connector registration reused"), "{output}");
    assert!(output.contains("agent registration reused"), "{output}");
    assert!(!output.contains("new demo"), "{output}");
    let second = record(&dir);
    assert_eq!(
        second["created"], first["created"],
        "the same tenant, apps and components"
    );
    assert_eq!(second["admin"], first["admin"]);
    assert_eq!(second["users"], first["users"]);
    if !output.contains("is in use") {
        assert_eq!(second["ports"], first["ports"], "the same ports when they are free");
    }
    let (_, page) = alice_sees_the_wiki(&again).await;
    assert_eq!(shown_user_id(&page), alice_id, "the same user as before");

    // The administrator's code, as an authenticator app would show it.
    let secret = again.printed(r"TOTP secret\s+(\S+)");
    let code = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["demo", "--admin-code", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(code.status.success(), "{}", String::from_utf8_lossy(&code.stderr));
    let printed = String::from_utf8_lossy(&code.stdout);
    let now = postern_time::Clock::now(&postern_time::SystemClock);
    let step = Duration::from_secs(30);
    let around: Vec<String> = [now - step, now, now + step]
        .into_iter()
        .map(|t| postern_testkit::totp_code(&secret, t).unwrap())
        .collect();
    assert!(
        around.iter().any(|c| printed.starts_with(c.as_str())),
        "{printed} not in {around:?}"
    );

    let (took, ok, output) = again.stop_with("-TERM").await;
    assert!(ok && took < STOP_TIMEOUT, "SIGTERM: {took:?}\n{output}");
}

/// `--ldap`: the agent checks passwords against an OpenLDAP server the demo
/// starts, finding users by mail (the name they sign in with).
#[tokio::test]
async fn postern_demo_with_ldap_signs_users_in_against_openldap() {
    let slapd_installed = ["/usr/sbin/slapd", "/usr/bin/slapd"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !slapd_installed {
        precondition_missing(
            "postern_demo_with_ldap_signs_users_in_against_openldap",
            "slapd is not installed",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = RunningDemo::start(&dir, &["--ldap", "--port", "0", "--control-port", "0"]).await;
    assert!(
        demo.output().contains("directory: OpenLDAP at ldap://127.0.0.1:"),
        "{}",
        demo.output()
    );
    let config = std::fs::read_to_string(dir.join("agent.toml")).unwrap();
    assert!(config.contains("(mail={username})"), "{config}");
    let ldap_port = record(&dir)["ports"]["ldap"].as_u64().unwrap() as u16;

    let port = demo.port();
    let wiki = format!("https://wiki.demo.localhost:{port}/");
    let bob = browser(port, &demo.certificate());
    let page = sign_in(&bob, &wiki, "bob@demo.localhost", &demo.password("bob@demo.localhost")).await;
    assert_eq!(page.status, 200, "{}\n{}", page.url, page.body);
    assert!(page.body.contains("you are <b>bob@demo.localhost</b>"), "{}", page.body);
    let wrong = sign_in(
        &browser(port, &demo.certificate()),
        &wiki,
        "bob@demo.localhost",
        "Wrong-Pass-1",
    )
    .await;
    assert!(wrong.error().is_some(), "{}", wrong.body);

    let (took, ok, output) = demo.stop_with("-INT").await;
    assert!(ok && took < STOP_TIMEOUT, "{took:?}\n{output}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", ldap_port)).await.is_err(),
        "slapd stopped with the demo"
    );
}

/// What cannot work is said plainly: a file as the state directory, a
/// directory with a database but no record, `--admin-code` without a demo.
#[tokio::test]
async fn postern_demo_refuses_unusable_state_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], dir: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .arg("demo")
            .args(args)
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} {} succeeded", dir.display());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    assert!(run(&[], &file).contains("is not a directory"));

    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(foreign.join("data")).unwrap();
    std::fs::write(foreign.join("data/postern.db"), "").unwrap();
    let err = run(&["--port", "0", "--control-port", "0"], &foreign);
    assert!(err.contains("holds a database but no demo.json"), "{err}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = run(&["--admin-code"], &empty);
    assert!(err.contains("holds no demo"), "{err}");
}

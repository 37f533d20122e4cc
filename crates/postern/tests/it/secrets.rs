//! SEC-7 and the log rule: after setup, a failed and a successful sign-in and a
//! device-flow token issuance, no password, TOTP secret, recovery code, setup
//! code or token appears in the service's logs (at `trace` level) or anywhere in
//! its database files. Runs the real `postern` binary as a separate process.

use postern_testkit::{ADMIN_PASSWORD, Browser, setup_through_web};
use postern_time::{Clock, SystemClock};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const WRONG_PASSWORD: &str = "Wr0ng-but-close-password";

#[tokio::test]
async fn no_secret_in_logs_or_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("service.log");
    let mut _dump = DumpLogOnPanic(log_path.clone(), None);
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "trace")
        .env_remove("POSTERN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    _dump.1 = Some(child.id());

    // Readiness: the banner on standard output names the setup link and address.
    let stdout = child.stdout.take().unwrap();
    let (setup_url, base) = tokio::task::spawn_blocking(move || {
        let mut setup = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.contains("/setup?code=") {
                setup = Some(line.trim().to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("Postern is listening on ") {
                let addr = rest.split(' ').next().unwrap().to_owned();
                return (
                    setup.expect("setup link printed before the address"),
                    format!("http://{addr}"),
                );
            }
        }
        panic!("the service exited before it was ready");
    })
    .await
    .unwrap();
    let setup_code = setup_url.rsplit("code=").next().unwrap().to_owned();

    let done = setup_through_web(&setup_url, SystemClock.now()).await.unwrap();

    // Device flow for the CLI: the admin fails once, then signs in with a recovery
    // code (the TOTP step used at setup cannot be used again this soon).
    let http = reqwest::Client::new();
    let issuer = format!("{base}/t/acme");
    let start: serde_json::Value = http
        .post(format!("{issuer}/device_authorization"))
        .form(&[
            ("client_id", "postern-cli"),
            ("scope", "openid offline_access postern:admin"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    let browser = Browser::new();
    let entry = browser
        .get(start["verification_uri_complete"].as_str().unwrap())
        .await
        .unwrap();
    let r = browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let page = browser.follow(&r.location().unwrap(), &base).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("username", "admin@acme.test")])
        .await
        .unwrap();
    let page = browser.follow(&r.location().unwrap(), &base).await.unwrap();
    let failed = browser
        .submit(&page.form().unwrap(), &[("password", WRONG_PASSWORD)])
        .await
        .unwrap();
    assert!(failed.error().is_some());
    let r = browser
        .submit(&failed.form().unwrap(), &[("password", ADMIN_PASSWORD)])
        .await
        .unwrap();
    let totp = browser.follow(&r.location().unwrap(), &base).await.unwrap();
    let r = browser
        .submit(&totp.form().unwrap(), &[("action", "recovery")])
        .await
        .unwrap();
    let rec = browser.follow(&r.location().unwrap(), &base).await.unwrap();
    let recovery_code = done.recovery_codes[3].clone();
    let r = browser
        .submit(&rec.form().unwrap(), &[("code", &recovery_code)])
        .await
        .unwrap();
    let approve = browser.follow(&r.location().unwrap(), &base).await.unwrap();
    assert_eq!(approve.title(), "Approve sign-in on a device");
    let approved = browser.submit(&approve.form().unwrap(), &[]).await.unwrap();
    assert_eq!(approved.title(), "Device approved");
    let tokens: serde_json::Value = http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", &device_code),
            ("client_id", "postern-cli"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().expect("tokens issued").to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Graceful stop on SIGTERM.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "the service exits cleanly on SIGTERM: {exit:?}");

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("token-signing key rotated"), "logs were captured");
    assert!(logs.lines().count() > 50, "trace logging was on");
    let secret_compact: String = done.totp_secret.split_whitespace().collect();
    let secrets: Vec<(&str, String)> = vec![
        ("admin password", ADMIN_PASSWORD.to_owned()),
        ("wrong password", WRONG_PASSWORD.to_owned()),
        ("TOTP secret", secret_compact.clone()),
        ("recovery code", recovery_code.clone()),
        ("recovery code (compact)", recovery_code.replace('-', "")),
        ("setup code", setup_code.clone()),
        ("device code", device_code.clone()),
        ("access token", access.clone()),
        ("refresh token", refresh.clone()),
    ];
    for (what, value) in &secrets {
        assert!(!logs.contains(value.as_str()), "{what} appears in the logs");
    }

    // The database files: no secret in clear, nor the raw TOTP seed.
    let seed = totp_rs::Secret::try_from_base32(&secret_compact)
        .unwrap()
        .as_ref()
        .to_vec();
    let mut scanned = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kek" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for (what, value) in &secrets {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "{what} appears in {}",
                path.display()
            );
        }
        assert!(
            !contains(&bytes, &seed),
            "the raw TOTP seed appears in {}",
            path.display()
        );
    }
    assert!(scanned > 10_000, "the database files were scanned");
}

/// Prints the child's log (and whether it is still alive) if the test fails, so a
/// failure in CI can be diagnosed.
struct DumpLogOnPanic(std::path::PathBuf, Option<u32>);

impl Drop for DumpLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(pid) = self.1 {
                let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
                eprintln!("--- service process {pid} alive: {alive}");
            }
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- service log (last lines) ---\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.len() <= haystack.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

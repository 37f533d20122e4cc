//! SEC-7 and the log rule: after setup, a failed and a successful sign-in and a
//! device-flow token issuance, no password, TOTP secret, recovery code, setup
//! code or token appears in the service's logs (at `trace` level) or anywhere in
//! its database files. Runs the real `postern` binary as a separate process.

use postern_testkit::{ADMIN_PASSWORD, Browser, setup_through_web};
use postern_time::{Clock, SystemClock};
use std::process::{Command, Stdio};

const WRONG_PASSWORD: &str = "Wr0ng-but-close-password";

#[tokio::test]
async fn no_secret_in_logs_or_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("service.log");
    let mut _dump = DumpLogOnPanic(log_path.clone(), None);
    let (mut child, setup_url, base) = start_service(&data, &log_path).await;
    _dump.1 = Some(child.id());
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
    let page = browser.arrive(r, &base).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("username", "admin@acme.test")])
        .await
        .unwrap();
    let page = browser.arrive(r, &base).await.unwrap();
    let failed = browser
        .submit(&page.form().unwrap(), &[("password", WRONG_PASSWORD)])
        .await
        .unwrap();
    assert!(failed.error().is_some());
    let r = browser
        .submit(&failed.form().unwrap(), &[("password", ADMIN_PASSWORD)])
        .await
        .unwrap();
    let totp = browser.arrive(r, &base).await.unwrap();
    let r = browser
        .submit(&totp.form().unwrap(), &[("action", "recovery")])
        .await
        .unwrap();
    let rec = browser.arrive(r, &base).await.unwrap();
    let recovery_code = done.recovery_codes[3].clone();
    let r = browser
        .submit(&rec.form().unwrap(), &[("code", &recovery_code)])
        .await
        .unwrap();
    let approve = browser.arrive(r, &base).await.unwrap();
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

/// Starts `postern serve` on free ports with `data` as its data dir and its log
/// (at trace level) in `log`; returns the process, the setup link and the base
/// URL once it is ready. Standard output keeps being drained, like a terminal.
async fn start_service(data: &std::path::Path, log: &std::path::Path) -> (std::process::Child, String, String) {
    let serve = crate::common::spawn_serve(
        |c| {
            c.args([
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data)
            .env("RUST_LOG", "trace");
        },
        log,
    )
    .await;
    (
        serve.child,
        serve.setup_url.expect("setup link printed before the address"),
        format!("http://{}", serve.addr),
    )
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

/// SEC-7 for pass-through authentication: the real `postern serve` and `postern
/// agent run` processes at trace level, a pass-through sign-in (wrong, then right)
/// through the pages; neither password appears in either log or in the database.
#[tokio::test]
async fn pass_through_passwords_leave_no_trace() {
    const PTA_PASSWORD: &str = "Directory-Password-Zoe-77";
    const PTA_WRONG: &str = "Directory-Wrong-Guess-66";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let service_log = dir.path().join("service.log");
    let agent_log = dir.path().join("agent.log");
    let mut _dump = DumpLogOnPanic(service_log.clone(), None);
    let (mut service, setup_url, base) = start_service(&data, &service_log).await;
    _dump.1 = Some(service.id());
    setup_through_web(&setup_url, SystemClock.now()).await.unwrap();

    // Configure through the store (the same database file the service uses).
    let store = postern_store::Store::connect(&postern_store::StoreOptions::new(format!(
        "sqlite://{}",
        data.join("postern.db").display()
    )))
    .await
    .unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap();
    let admin = store.user_by_username(&tenant.id, "admin@acme.test").await.unwrap();
    let now = SystemClock.now();
    store.add_domain(&tenant.id, "corp.test", "t", now).await.unwrap();
    store.verify_domain(&tenant.id, "corp.test").await.unwrap();
    store
        .set_domain_auth_mode(&tenant.id, "corp.test", postern_store::DomainAuthMode::Passthrough)
        .await
        .unwrap();
    let token = "ptr_sec7-test-token-0123456789abcdefghijklmnop";
    store
        .create_registration_token(
            &postern_keyring::digest(token),
            &tenant.id,
            postern_proto::ComponentKind::Agent,
            None,
            &format!("user:{}", admin.id),
            1,
            now,
            now + std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
    store
        .create_client(
            &tenant.id,
            &postern_store::NewOAuthClient {
                client_id: "app".into(),
                name: "App".into(),
                secret_digest: Some(postern_keyring::digest("x")),
                redirect_uris: vec!["https://app.acme.test/cb".into()],
                post_logout_redirect_uris: vec![],
                grant_types: vec!["authorization_code".into()],
                scopes: vec![],
                builtin: false,
            },
            now,
        )
        .await
        .unwrap();

    // The agent: a local account file, registered with the token, run as a process.
    let accounts = dir.path().join("accounts");
    let hash = postern_directory::hash_password(&PTA_PASSWORD.into()).unwrap();
    postern_keyring::write_private_file(&accounts, format!("zoe@corp.test:{hash}:Zoe\n").as_bytes()).unwrap();
    let config = dir.path().join("agent.toml");
    postern_keyring::write_private_file(
        &config,
        format!(
            "[directory]\nkind = \"local_file\"\npath = \"{}\"\n",
            accounts.display()
        )
        .as_bytes(),
    )
    .unwrap();
    let agent_state = dir.path().join("agent-state");
    let registered = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args([
            "agent",
            "register",
            "--allow-root",
            "--rsa-bits",
            "2048",
            "--server",
            &base,
            "--state-dir",
        ])
        .arg(&agent_state)
        .env("POSTERN_REGISTRATION_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    let mut agent = Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["agent", "run", "--allow-root", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&agent_state)
        .env("RUST_LOG", "trace")
        .stderr(Stdio::from(std::fs::File::create(&agent_log).unwrap()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Readiness: the service logs the agent attaching to its queue.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&service_log)
        .unwrap_or_default()
        .contains("agent attached to its tenant's queue")
    {
        assert!(std::time::Instant::now() < deadline, "the agent never attached");
        postern_testkit::poll_pause(std::time::Duration::from_millis(50)).await;
    }

    // A wrong, then the right directory password through the sign-in pages.
    let start = format!(
        "{base}/t/acme/authorize?response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp.acme.test%2Fcb\
         &scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    );
    let browser = Browser::new();
    let mut login = postern_testkit::Login {
        username: "zoe@corp.test".into(),
        password: PTA_WRONG.into(),
        totp_secret: None,
        now: SystemClock.now(),
        recovery_code: None,
    };
    let wrong = browser.sign_in(&start, &login).await.unwrap_err();
    assert!(wrong.to_string().contains("incorrect"), "{wrong}");
    login.password = PTA_PASSWORD.into();
    let ok = Browser::new().sign_in(&start, &login).await.unwrap();
    assert!(
        ok.location().unwrap().starts_with("https://app.acme.test/cb?code="),
        "{:?}",
        ok.error()
    );
    let zoe = store.user_by_username(&tenant.id, "zoe@corp.test").await.unwrap();
    assert_eq!(zoe.source, postern_store::UserSource::Directory);
    store.close().await;

    for child in [&mut agent, &mut service] {
        assert!(
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
    let agent_exit = tokio::task::spawn_blocking(move || agent.wait())
        .await
        .unwrap()
        .unwrap();
    let service_exit = tokio::task::spawn_blocking(move || service.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        agent_exit.success() && service_exit.success(),
        "{agent_exit:?} {service_exit:?}"
    );

    let logs = [
        std::fs::read_to_string(&service_log).unwrap(),
        std::fs::read_to_string(&agent_log).unwrap(),
    ];
    assert!(logs[1].lines().count() > 10, "the agent logged at trace level");
    for (log, name) in logs.iter().zip(["service", "agent"]) {
        for secret in [PTA_PASSWORD, PTA_WRONG] {
            assert!(!log.contains(secret), "a directory password appears in the {name} log");
        }
    }
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for secret in [PTA_PASSWORD, PTA_WRONG] {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a directory password appears in {}",
                path.display()
            );
        }
    }
}

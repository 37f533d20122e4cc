//! `postern admin`: the real binary against the real service, signed in with
//! the device flow approved through the sign-in pages.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use postern_testkit::{Browser, Login, TestService};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::admin_login;

/// `postern admin` with its configuration in `dir`.
fn cli(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.arg("admin")
        .env("POSTERN_CONFIG_DIR", dir)
        .env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .kill_on_drop(true);
    c
}

/// Runs `postern admin args...` with `stdin`; returns success, stdout, stderr.
async fn run(dir: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = cli(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Like [`run`], expecting success and JSON on stdout.
async fn json(dir: &Path, args: &[&str], stdin: &str) -> serde_json::Value {
    let (ok, out, err) = run(dir, args, stdin).await;
    assert!(ok, "postern admin {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Signs in through the pages at `url` and approves the device.
async fn approve(svc: &TestService, url: &str, login: &Login) {
    let browser = Browser::new();
    let entry = browser.get(url).await.unwrap();
    let next = browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let mut page = browser.arrive(next, &svc.url()).await.unwrap();
    loop {
        let form = page.form().unwrap();
        if page.title() == "Approve sign-in on a device" {
            assert_eq!(browser.submit(&form, &[]).await.unwrap().title(), "Device approved");
            return;
        }
        let value = if form.fields.contains(&"username".into()) {
            ("username", login.username.clone())
        } else if form.fields.contains(&"password".into()) {
            ("password", login.password.clone())
        } else {
            // Setup used this time step's code: take the next one.
            let secret = login.totp_secret.as_ref().unwrap();
            (
                "code",
                postern_testkit::totp_code(secret, svc.now() + Duration::from_secs(30)).unwrap(),
            )
        };
        let r = browser.submit(&form, &[(value.0, value.1.as_str())]).await.unwrap();
        page = browser.arrive(r, &svc.url()).await.unwrap();
    }
}

#[tokio::test]
async fn admin_cli_signs_in_with_the_device_flow_and_manages_the_tenant() {
    // The real clock: the CLI polls every few seconds of real time.
    let svc = TestService::builder().system_clock().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let (ok, _, err) = run(dir.path(), &["whoami"], "").await;
    assert!(!ok);
    assert!(err.contains("postern admin login"), "{err}");

    let mut login = cli(dir.path())
        .args(["login", "--server", &svc.url(), "--tenant", "acme"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(login.stderr.take().unwrap()).lines();
    let first = stderr.next_line().await.unwrap().unwrap();
    let url = first.strip_prefix("To sign in, open ").unwrap().trim().to_owned();
    assert!(url.contains("/t/acme/device?user_code="), "{first}");
    approve(&svc, &url, &admin_login(&svc, &t)).await;
    let out = tokio::time::timeout(Duration::from_secs(60), login.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["user"]["username"], "admin@acme.test");
    assert_eq!(me["operator"], true);
    let creds = dir.path().join("credentials.json");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Users: the password comes from stdin, never argv.
    let jo = json(
        dir.path(),
        &[
            "users",
            "create",
            "jo@acme.test",
            "--display-name",
            "Jo",
            "--password-stdin",
        ],
        "a fine long passphrase\n",
    )
    .await;
    assert_eq!(jo["has_password"], true);
    let (ok, _, _) = run(
        dir.path(),
        &["users", "set-password", "jo@acme.test"],
        "another fine passphrase\n",
    )
    .await;
    assert!(ok);
    let (ok, _, err) = run(dir.path(), &["users", "set-password", "jo@acme.test"], "short\n").await;
    assert!(!ok);
    assert_eq!(err.trim(), "error: The password must be at least 12 characters long.");
    let roles = json(
        dir.path(),
        &["roles", "assign", "jo@acme.test", "application-administrator"],
        "",
    )
    .await;
    assert_eq!(roles["roles"], serde_json::json!(["application_administrator"]));

    // Groups by name, members by username.
    json(dir.path(), &["groups", "create", "staff"], "").await;
    assert!(
        run(dir.path(), &["groups", "add-member", "staff", "jo@acme.test"], "")
            .await
            .0
    );
    let members = json(dir.path(), &["groups", "members", "staff"], "").await;
    assert_eq!(members[0]["username"], "jo@acme.test");

    // A confidential client's secret is printed once.
    let client = json(
        dir.path(),
        &[
            "clients",
            "create",
            "wiki",
            "--redirect-uri",
            "https://wiki.acme.test/cb",
            "--grant-type",
            "authorization_code",
        ],
        "",
    )
    .await;
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    assert!(client["client_secret"].as_str().unwrap().len() >= 43);
    assert!(
        json(dir.path(), &["clients", "show", &client_id], "")
            .await
            .get("client_secret")
            .is_none()
    );

    // Refusals keep the service's message.
    let (ok, _, err) = run(dir.path(), &["users", "delete", "admin@acme.test"], "").await;
    assert!(!ok);
    assert!(err.contains("without an enabled global administrator"), "{err}");

    // Conditional access: a location, a policy from a file, what-if, user risk.
    let office = json(
        dir.path(),
        &["locations", "create", "office", "--range", "192.0.2.0/24", "--trusted"],
        "",
    )
    .await;
    assert_eq!(office["ranges"], serde_json::json!(["192.0.2.0/24"]));
    let policy_file = dir.path().join("mfa-outside.json");
    std::fs::write(
        &policy_file,
        r#"{"name": "MFA outside the office", "conditions": {"users": {"include": ["user:jo@acme.test"]},
            "apps": {"include": ["all"]}, "locations": {"include": ["any"], "exclude": ["location:office"]}},
            "grants": ["require_mfa"]}"#,
    )
    .unwrap();
    let policy = json(
        dir.path(),
        &["policies", "create", "--file", policy_file.to_str().unwrap()],
        "",
    )
    .await;
    assert_eq!(policy["state"], "enabled");
    let what_if = |ip: &'static str| {
        let dir = dir.path().to_owned();
        async move { json(&dir, &["policies", "what-if", "--user", "jo@acme.test", "--ip", ip], "").await["effect"].clone() }
    };
    assert_eq!(what_if("192.0.2.7").await, "allow");
    assert_eq!(what_if("203.0.113.7").await, "require_mfa");
    let (ok, _, err) = run(dir.path(), &["locations", "delete", "office"], "").await;
    assert!(!ok && err.contains("MFA outside the office"), "{err}");
    assert!(
        run(dir.path(), &["policies", "delete", "MFA outside the office"], "")
            .await
            .0
    );
    assert_eq!(json(dir.path(), &["policies", "list"], "").await, serde_json::json!([]));
    let risk = json(
        dir.path(),
        &[
            "users",
            "risk",
            "set",
            "jo@acme.test",
            "--level",
            "high",
            "--reason",
            "phished",
        ],
        "",
    )
    .await;
    assert_eq!(risk["level"], "high");
    assert!(
        run(dir.path(), &["users", "risk", "dismiss", "jo@acme.test"], "")
            .await
            .0
    );
    let (ok, _, err) = run(
        dir.path(),
        &[
            "users",
            "risk",
            "set",
            "jo@acme.test",
            "--level",
            "severe",
            "--reason",
            "x",
        ],
        "",
    )
    .await;
    assert!(!ok && err.contains("not a risk level"), "{err}");

    // Logs.
    let audit = json(dir.path(), &["audit", "list"], "").await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["action"] == "client.create"));
    assert_eq!(json(dir.path(), &["audit", "verify"], "").await["intact"], true);

    // An expired access token is refreshed transparently.
    let mut stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    let old_access = stored["access_token"].clone();
    stored["expires_at"] = serde_json::json!(0);
    std::fs::write(&creds, serde_json::to_vec(&stored).unwrap()).unwrap();
    assert_eq!(
        json(dir.path(), &["whoami"], "").await["user"]["username"],
        "admin@acme.test"
    );
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&creds).unwrap()).unwrap();
    assert_ne!(stored["access_token"], old_access);

    // Sign out: the refresh token is revoked and the file removed.
    let refresh_token = stored["refresh_token"].as_str().unwrap().to_owned();
    assert!(run(dir.path(), &["logout"], "").await.0);
    assert!(!creds.exists());
    let revoked = reqwest::Client::new()
        .post(format!("{}/token", svc.issuer("acme")))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh_token),
            ("client_id", "postern-cli"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 400);
    let (ok, _, err) = run(dir.path(), &["whoami"], "").await;
    assert!(!ok && err.contains("postern admin login"));
}

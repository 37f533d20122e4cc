//! `postern connector|agent register|status|run`: the real binary against the
//! real service (system clock, since the components run in separate processes).
//! Registration through an administrator's approval (the host never holds an
//! admin token), a registration token refused for another tenant, and trust
//! anchor files with a broken certificate named in the error.

use std::process::Stdio;
use std::time::Duration;

use postern_proto::ComponentKind;
use postern_testkit::{Browser, TestService};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{admin_login, precondition_missing, running_as_root};

fn postern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .env_remove("POSTERN_REGISTRATION_TOKEN")
        .env_remove("POSTERN_STATE_DIR")
        .kill_on_drop(true);
    c
}

/// PEM armour around bytes that are no certificate ("not a certificate").
const BROKEN_PEM: &str = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

async fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("finishes")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn connector_and_agent_commands() {
    let svc = TestService::builder().system_clock().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let connector_state = dir.path().join("connector");

    // Connector: an administrator approves the registration with the device flow;
    // the prompt and the page name the component.
    let mut register = postern()
        .args([
            "connector",
            "register",
            "--allow-root",
            "--server",
            &svc.url(),
            "--tenant",
            "acme",
            "--name",
            "gw-1",
            "--state-dir",
        ])
        .arg(&connector_state)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(register.stderr.take().unwrap()).lines();
    let mut prompt = String::new();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("prompt");
        prompt.push_str(&line);
        if let Some(u) = line.trim().strip_prefix("open ") {
            break u.to_owned();
        }
    };
    assert!(
        prompt.contains("administrator of acme must approve registering this connector as gw-1"),
        "{prompt}"
    );
    let browser = Browser::new();
    let entry = browser.get(&url).await.unwrap();
    let start = browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let login = postern_testkit::Login {
        recovery_code: Some(t.recovery_codes[0].clone()),
        ..admin_login(&svc, &t)
    };
    let done = browser.sign_in(&start.location().unwrap(), &login).await.unwrap();
    assert_eq!(done.title(), "Registration approved", "{}", done.body);
    assert!(
        done.body.contains("The connector gw-1 may now register"),
        "{}",
        done.body
    );
    let mut rest = String::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = tokio::time::timeout(Duration::from_secs(30), register.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("Registered connector"), "{rest}");
    let connectors = svc
        .store()
        .components(&t.tenant.id, ComponentKind::Connector)
        .await
        .unwrap();
    assert_eq!(connectors.len(), 1);
    assert_eq!(connectors[0].name, "gw-1");

    // Status reports what the service thinks.
    let (ok, out, err) = output(
        postern()
            .args(["connector", "status", "--state-dir"])
            .arg(&connector_state),
    )
    .await;
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["component_id"], connectors[0].id.as_str());
    assert!(report["service"].as_str().unwrap().starts_with("accepted"), "{report}");

    // Trusting the system store for the control endpoint (no anchors of its
    // own): a broken certificate in SSL_CERT_FILE is named, not skipped.
    let public_trust = dir.path().join("public-trust");
    std::fs::create_dir(&public_trust).unwrap();
    for file in ["key.pem", "cert.pem"] {
        std::fs::copy(connector_state.join(file), public_trust.join(file)).unwrap();
    }
    let mut enrolment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(connector_state.join("state.json")).unwrap()).unwrap();
    enrolment["control_ca_pem"] = "".into();
    std::fs::write(public_trust.join("state.json"), enrolment.to_string()).unwrap();
    #[cfg(unix)]
    for file in ["key.pem", "cert.pem", "state.json"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(public_trust.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let broken = dir.path().join("system-roots.pem");
    std::fs::write(&broken, BROKEN_PEM).unwrap();
    let (ok, _, err) = output(
        postern()
            .args(["connector", "status", "--state-dir"])
            .arg(&public_trust)
            .env("SSL_CERT_FILE", &broken)
            .env_remove("SSL_CERT_DIR"),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!("SSL_CERT_FILE {}: certificate #1", broken.display())),
        "{err}"
    );

    // Run: refuses root without --allow-root (SEC-11); with it, loads its
    // configuration and stops cleanly on SIGTERM.
    if running_as_root() {
        let (ok, _, err) = output(
            postern()
                .args(["connector", "run", "--state-dir"])
                .arg(&connector_state),
        )
        .await;
        assert!(!ok, "the connector ran as root without --allow-root");
        assert!(err.contains("refusing to run the connector as root"), "{err}");
    } else {
        precondition_missing("connector_and_agent_commands (refusing root)", "not running as root");
    }
    let mut run = postern()
        .args(["connector", "run", "--allow-root", "--state-dir"])
        .arg(&connector_state)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(run.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), log.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("log");
        if line.contains("configuration loaded") {
            break;
        }
    }
    let pid = run.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), run.wait())
        .await
        .expect("stops promptly")
        .unwrap();
    assert!(exit.success());

    // Agent: a registration token for an unattended install; the token works once.
    let token = "ptr_cli-test-token-0123456789abcdefghijklmnopq";
    svc.store()
        .create_registration_token(
            &postern_keyring::digest(token),
            &t.tenant.id,
            ComponentKind::Agent,
            None,
            &format!("user:{}", t.admin.id),
            1,
            svc.now(),
            svc.now() + Duration::from_secs(600),
        )
        .await
        .unwrap();
    // A token of acme with --tenant beta: refused, naming both, and left intact.
    svc.sts()
        .create_tenant(
            postern_sts::NewTenantRequest {
                name: "beta".into(),
                display_name: "Beta".into(),
                domain: "beta.test".into(),
                admin_username: "admin@beta.test".into(),
                admin_password: "correct horse for beta".into(),
                is_system: false,
                admin_totp: None,
            },
            "test",
        )
        .await
        .unwrap();
    let (ok, _, err) = output(
        postern()
            .args([
                "agent",
                "register",
                "--allow-root",
                "--rsa-bits",
                "2048",
                "--server",
                &svc.url(),
                "--tenant",
                "beta",
                "--state-dir",
            ])
            .arg(dir.path().join("agent-beta"))
            .env("POSTERN_REGISTRATION_TOKEN", token),
    )
    .await;
    assert!(!ok, "a token of acme enrolled into beta");
    assert!(err.contains(r#"belongs to organisation "acme", not "beta""#), "{err}");
    let agent_state = dir.path().join("agent");
    let (ok, _, err) = output(
        postern()
            .args([
                "agent",
                "register",
                "--allow-root",
                "--rsa-bits",
                "2048",
                "--server",
                &svc.url(),
                "--tenant",
                "acme",
                "--state-dir",
            ])
            .arg(&agent_state)
            .env("POSTERN_REGISTRATION_TOKEN", token),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        svc.store()
            .components(&t.tenant.id, ComponentKind::Agent)
            .await
            .unwrap()
            .len(),
        1
    );
    let (ok, _, err) = output(
        postern()
            .args([
                "agent",
                "register",
                "--allow-root",
                "--server",
                &svc.url(),
                "--state-dir",
            ])
            .arg(dir.path().join("agent2"))
            .env("POSTERN_REGISTRATION_TOKEN", token),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("used up or expired"), "{err}");
    // Key files are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(agent_state.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}

/// A trust anchor file with a certificate that cannot be used fails naming the
/// file and the certificate, for `--server-ca` and for the agent's directory
/// (system store via SSL_CERT_FILE); neither is skipped silently.
#[tokio::test]
async fn broken_trust_anchor_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = dir.path().join("corp-ca.pem");
    std::fs::write(&server_ca, BROKEN_PEM).unwrap();
    let (ok, _, err) = output(
        postern()
            .args([
                "connector",
                "register",
                "--allow-root",
                "--server",
                "https://127.0.0.1:9",
                "--server-ca",
            ])
            .arg(&server_ca)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("POSTERN_REGISTRATION_TOKEN", "ptr_unused"),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}: certificate #1 cannot be a trust anchor",
            server_ca.display()
        )),
        "{err}"
    );

    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "[directory]\nkind = \"ldap\"\nflavor = \"open_ldap\"\nurls = [\"ldaps://ldap.example.test\"]\n\
         base_dn = \"dc=example,dc=test\"\n",
    )
    .unwrap();
    let system = dir.path().join("system-roots.pem");
    std::fs::write(&system, BROKEN_PEM).unwrap();
    let (ok, _, err) = output(
        postern()
            .args(["agent", "run", "--allow-root", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("agent-state"))
            .env("SSL_CERT_FILE", &system)
            .env_remove("SSL_CERT_DIR"),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!("SSL_CERT_FILE {}: certificate #1", system.display())),
        "{err}"
    );
}

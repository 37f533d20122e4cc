//! `postern connector|agent register|status|run`: the real binary against the
//! real service (system clock, since the components run in separate processes).

use std::process::Stdio;
use std::time::Duration;

use postern_proto::ComponentKind;
use postern_testkit::{Browser, TestService};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::admin_login;

fn postern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postern"));
    c.env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .env_remove("POSTERN_REGISTRATION_TOKEN")
        .env_remove("POSTERN_STATE_DIR")
        .kill_on_drop(true);
    c
}

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

    // Connector: an administrator approves the registration with the device flow.
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
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("prompt");
        if let Some(u) = line.trim().strip_prefix("open ") {
            break u.to_owned();
        }
    };
    let browser = Browser::new();
    let entry = browser.get(&url).await.unwrap();
    let start = browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let login = postern_testkit::Login {
        recovery_code: Some(t.recovery_codes[0].clone()),
        ..admin_login(&svc, &t)
    };
    let done = browser.sign_in(&start.location().unwrap(), &login).await.unwrap();
    assert_eq!(done.title(), "Device approved");
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

    // Run: refuses root without --allow-root (SEC-11); with it, loads its
    // configuration and stops cleanly on SIGTERM.
    let (ok, _, err) = output(
        postern()
            .args(["connector", "run", "--state-dir"])
            .arg(&connector_state),
    )
    .await;
    if !ok {
        assert!(err.contains("refusing to run the connector as root"), "{err}");
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

//! Issue 11 item 7: directory users and groups named before their first
//! sign-in. An administrator names a directory user of a pass-through domain,
//! or a directory group by the name the agent reports, and assigns it to an
//! app; the user's FIRST sign-in through a real agent (in-process, over mTLS on
//! loopback, with a local account file) reaches the app, through a real
//! connector process, instead of meeting a 403.

use std::sync::Arc;
use std::time::Duration;

use postern_agent::{Agent, AgentOptions, Phase};
use postern_client::{CredentialFile, Credentials};
use postern_directory::{Directory, LocalFileDirectory, hash_password};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{DomainAuthMode, PrincipalKind, UserSource};
use postern_testkit::{Browser, Page, TestService};
use postern_time::{Clock, SystemClock};
use postern_uplink::{Credential, RegisterOptions, StateDir, register};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::login;
use crate::proxy_harness::{AppOptions, ConnectorProcess, ProxyBench};

/// The pass-through domain.
const DOMAIN: &str = "example.com";
/// In the directory, group `staff`.
const CAROL: &str = "carol@example.com";
/// In the directory, group `contractors`.
const DAVE: &str = "dave@example.com";
/// Both accounts' password in the agent's account file.
const PASSWORD: &str = "Directory-Secret-1";

/// Makes `DOMAIN` a verified pass-through domain of the bench's tenant.
async fn passthrough_domain(svc: &TestService, tenant_id: &str) {
    let store = svc.store();
    store.add_domain(tenant_id, DOMAIN, "tok", svc.now()).await.unwrap();
    store.verify_domain(tenant_id, DOMAIN).await.unwrap();
    store
        .set_domain_auth_mode(tenant_id, DOMAIN, DomainAuthMode::Passthrough)
        .await
        .unwrap();
}

/// The agent's account file: carol in `staff`, dave in `contractors`.
fn accounts(dir: &std::path::Path) -> Arc<dyn Directory> {
    use std::os::unix::fs::PermissionsExt;
    let hash = hash_password(&SecretString::from(PASSWORD)).unwrap();
    let path = dir.join("accounts");
    std::fs::write(
        &path,
        format!("{CAROL}:{hash}:Carol:staff\n{DAVE}:{hash}:Dave:contractors\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Arc::new(LocalFileDirectory::load(&path).unwrap())
}

/// An agent running in this process; stopped when dropped.
struct RunningAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<Result<(), postern_agent::AgentError>>,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The service with a pass-through domain, an agent reading the account
/// file, a connector and an app published with sign-in (`hr.acme.test`).
struct Setup {
    bench: ProxyBench,
    app: Value,
    _agent: RunningAgent,
    _connector: ConnectorProcess,
}

impl Setup {
    async fn start() -> Setup {
        let bench = ProxyBench::start().await;
        passthrough_domain(&bench.svc, &bench.t.tenant.id).await;
        let agent = Self::agent(&bench).await;
        let connector = bench.start_connector("c1", None).await;
        let app = bench
            .publish(
                "HR",
                "hr.acme.test",
                AppOptions {
                    preauth: "sts",
                    ..AppOptions::default()
                },
            )
            .await;
        Setup {
            bench,
            app,
            _agent: agent,
            _connector: connector,
        }
    }

    /// Registers an agent of the bench's tenant and runs it until it is
    /// attached to the queue.
    async fn agent(bench: &ProxyBench) -> RunningAgent {
        let svc = &bench.svc;
        let token = svc
            .registration_token(&bench.t.tenant, &bench.t.admin, ComponentKind::Agent, "agent-1")
            .await
            .unwrap();
        let state = StateDir::new(bench.dir.path().join("agent-1"));
        let options = RegisterOptions {
            server_url: svc.url(),
            kind: ComponentKind::Agent,
            credential: Credential::AccessToken(SecretString::from(token.as_str())),
            name: "agent-1".into(),
            version: "test".into(),
            group: None,
            tenant: None,
            key_alg: KeyAlg::Rsa(2048),
            server_ca_pem: None,
        };
        register(&options, &state).await.unwrap();
        let agent = Agent::new(state, svc.shared_clock(), accounts(bench.dir.path()))
            .unwrap()
            .with_options(AgentOptions {
                drain_grace: Duration::from_secs(1),
                ..AgentOptions::default()
            });
        let mut status = agent.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s| s.phase == Phase::Connected),
        )
        .await
        .expect("the agent attaches")
        .unwrap();
        RunningAgent {
            stop: Some(stop),
            _task: task,
        }
    }

    /// Assigns the app to a user or group.
    async fn assign(&self, kind: &str, id: &str) {
        let (status, body) = self
            .bench
            .api(
                Method::POST,
                &format!("/apps/{}/assignments", self.app["id"].as_str().unwrap()),
                Some(json!({"kind": kind, "id": id})),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }

    /// A fresh browser opens the app, signs in as `username` through the agent,
    /// and follows the way back: the app's page, or the app's refusal.
    async fn first_visit(&self, username: &str) -> Page {
        let browser: Browser = self.bench.browser(&["hr.acme.test"]);
        let start = self.bench.url("hr.acme.test", "/echo/first");
        let first = browser.get(&start).await.unwrap();
        assert_eq!(first.status, 302, "{}", first.body);
        let back = browser
            .sign_in(&first.location().unwrap(), &login(&self.bench.svc, username, PASSWORD))
            .await
            .unwrap();
        assert!(back.status.is_redirection(), "{}", back.body);
        let callback = browser.get(&back.location().unwrap()).await.unwrap();
        if callback.status != 302 {
            return callback;
        }
        browser.get(&callback.location().unwrap()).await.unwrap()
    }
}

/// Signs the command line in as the bench's administrator (the device flow
/// has its own test) and answers its configuration directory.
fn cli_signed_in(bench: &ProxyBench) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    CredentialFile::in_dir(dir.path())
        .save(&Credentials {
            server: bench.svc.url(),
            tenant: "acme".into(),
            client_id: "postern-cli".into(),
            access_token: bench.token.clone().into(),
            refresh_token: None,
            // The command line checks the expiry by the real clock.
            expires_at: SystemClock.now() + Duration::from_secs(300),
        })
        .unwrap();
    dir
}

/// Runs `postern admin args...`; answers success, stdout and stderr.
async fn cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("admin")
        .args(args)
        .env("POSTERN_CONFIG_DIR", dir)
        .env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Like [`cli`], expecting success and JSON on stdout.
async fn cli_json(dir: &std::path::Path, args: &[&str]) -> Value {
    let (ok, out, err) = cli(dir, args).await;
    assert!(ok, "postern admin {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// A directory user named ahead and assigned reaches the app at their first
/// sign-in; the sign-in adopts the named account (same ID, the directory's
/// stable ID recorded, its groups brought in). The name cannot be taken twice.
#[tokio::test]
async fn a_directory_user_named_ahead_reaches_the_app_at_the_first_sign_in() {
    let s = Setup::start().await;
    let (status, named) = s
        .bench
        .api(
            Method::POST,
            "/users/directory",
            Some(json!({"username": "Carol@Example.com", "display_name": "Carol (named ahead)"})),
        )
        .await;
    assert_eq!(status, 201, "{named}");
    assert_eq!(named["username"], CAROL);
    assert_eq!(named["source"], "directory");
    assert_eq!(named["has_password"], false);
    let id = named["id"].as_str().unwrap().to_owned();

    // Named already (by an administrator or a sign-in): a conflict.
    let (status, again) = s
        .bench
        .api(Method::POST, "/users/directory", Some(json!({"username": CAROL})))
        .await;
    assert_eq!(status, 409, "{again}");

    // Assigned by name, before carol ever signed in.
    s.assign("user", CAROL).await;
    let page = s.first_visit(CAROL).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["path"], "/app/echo/first", "{echo}");

    // The same account, now carrying what the directory reported.
    let store = s.bench.svc.store();
    let carol = store.user_by_username(&s.bench.t.tenant.id, CAROL).await.unwrap();
    assert_eq!(carol.id, id);
    assert_eq!(carol.source, UserSource::Directory);
    assert_eq!(carol.display_name, "Carol");
    let external = carol.external_id.clone().unwrap();
    assert!(!external.starts_with("pending:"), "{external}");
    let assignments = store
        .app_assignments(&s.bench.t.tenant.id, s.app["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(assignments, vec![(PrincipalKind::User, id.clone())]);
    let (status, groups) = s.bench.api(Method::GET, "/groups", None).await;
    assert_eq!(status, 200);
    let staff = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "staff")
        .unwrap_or_else(|| panic!("the directory group came with the sign-in: {groups}"));
    assert_eq!(staff["source"], "directory");
    let (_, members) = s
        .bench
        .api(
            Method::GET,
            &format!("/groups/{}/members", staff["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members[0]["id"], id.as_str(), "{members}");
}

/// A directory group named ahead and assigned admits a member at their first
/// sign-in and refuses a user the agent reports in another group. Naming it
/// again answers the same group; a cloud group never stands in for one.
#[tokio::test]
async fn a_directory_group_named_ahead_admits_its_members_at_their_first_sign_in() {
    let s = Setup::start().await;
    let dir = cli_signed_in(&s.bench);
    let staff = cli_json(dir.path(), &["groups", "create", "staff", "--directory"]).await;
    assert_eq!(staff["source"], "directory");
    assert_eq!(staff["description"], "From the on-prem directory");
    let (status, same) = s
        .bench
        .api(Method::POST, "/groups/directory", Some(json!({"name": "staff"})))
        .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same["id"], staff["id"]);

    // A cloud group's name cannot be a directory group's, nor the reverse.
    let (status, cloud) = s
        .bench
        .api(Method::POST, "/groups", Some(json!({"name": "contractors"})))
        .await;
    assert_eq!(status, 201, "{cloud}");
    let (status, clash) = s
        .bench
        .api(Method::POST, "/groups/directory", Some(json!({"name": "contractors"})))
        .await;
    assert_eq!(status, 409, "{clash}");
    assert!(clash["message"].as_str().unwrap().contains("cloud group"), "{clash}");
    let (status, clash) = s
        .bench
        .api(Method::POST, "/groups", Some(json!({"name": "staff"})))
        .await;
    assert_eq!(status, 409, "{clash}");

    let assigned = cli_json(dir.path(), &["apps", "assign", "HR", "--group", "staff"]).await;
    assert!(
        assigned.to_string().contains(staff["id"].as_str().unwrap()),
        "{assigned}"
    );
    let page = s.first_visit(CAROL).await;
    assert_eq!(page.status, 200, "{}", page.body);

    // dave's agent reports `contractors`: the cloud group of that name does not
    // make him a member, and the app refuses him.
    let page = s.first_visit(DAVE).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("not assigned"), "{}", page.body);
    let (_, members) = s
        .bench
        .api(
            Method::GET,
            &format!("/groups/{}/members", cloud["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members, json!([]));
    let (_, members) = s
        .bench
        .api(
            Method::GET,
            &format!("/groups/{}/members", staff["id"].as_str().unwrap()),
            None,
        )
        .await;
    let names: Vec<&str> = members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![CAROL]);
}

/// Only names in a verified pass-through domain of the caller's tenant can be
/// named ahead, and another tenant cannot see or assign them.
#[tokio::test]
async fn named_users_stay_in_their_tenants_pass_through_domains() {
    let bench = ProxyBench::start().await;
    passthrough_domain(&bench.svc, &bench.t.tenant.id).await;
    bench
        .svc
        .store()
        .add_domain(&bench.t.tenant.id, "unverified.test", "tok", bench.svc.now())
        .await
        .unwrap();

    for (username, says) in [
        // The tenant's own domain, whose passwords are kept here.
        ("someone@acme.test", "not a pass-through domain"),
        ("someone@unverified.test", "not verified"),
        ("someone@elsewhere.test", "not a domain of this tenant"),
        ("no-domain", "name@domain"),
    ] {
        let (status, body) = bench
            .api(Method::POST, "/users/directory", Some(json!({"username": username})))
            .await;
        assert_eq!(status, 400, "{username}: {body}");
        assert!(body.to_string().contains(says), "{username}: {body}");
    }
    // The command line names one; the refusal reaches its user.
    let dir = cli_signed_in(&bench);
    let (ok, _, err) = cli(dir.path(), &["users", "create", "someone@acme.test", "--directory"]).await;
    assert!(!ok);
    assert!(err.contains("not a pass-through domain"), "{err}");
    let named = cli_json(dir.path(), &["users", "create", CAROL, "--directory"]).await;
    assert_eq!(named["source"], "directory");
    let carol = named["id"].as_str().unwrap();
    let (status, group) = bench
        .api(Method::POST, "/groups/directory", Some(json!({"name": "staff"})))
        .await;
    assert_eq!(status, 201, "{group}");
    let staff = group["id"].as_str().unwrap();

    // Tenant beta, with an app of its own.
    let (status, body) = bench
        .api(
            Method::POST,
            "/tenants",
            Some(json!({
                "name": "beta",
                "display_name": "Beta",
                "domain": "beta.test",
                "admin_username": "admin@beta.test",
                "admin_password": "correct horse for beta",
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let store = bench.svc.store();
    let beta = store.tenant_by_name("beta").await.unwrap();
    let beta_admin = store.user_by_username(&beta.id, "admin@beta.test").await.unwrap();
    let token = bench.svc.admin_token(&beta, &beta_admin).await.unwrap();
    let http = reqwest::Client::new();
    let as_beta = |method: Method, path: String, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{}/api/v1{path}", bench.svc.url()))
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, app) = as_beta(
        Method::POST,
        "/apps".into(),
        Some(json!({
            "name": "Beta HR",
            "external_url": bench.url("hr.beta.test", "/"),
            "internal_url": bench.backend.internal_url(),
            "preauth": "sts",
        })),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap();

    let (status, _) = as_beta(Method::GET, format!("/users/{carol}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = as_beta(Method::GET, format!("/groups/{staff}"), None).await;
    assert_eq!(status, 404);
    // The assignment route names an unknown principal as a problem of the
    // request (400), the same for another tenant's as for one that never was.
    for (kind, id) in [("user", carol), ("user", CAROL), ("group", staff), ("group", "staff")] {
        let (status, body) = as_beta(
            Method::POST,
            format!("/apps/{app_id}/assignments"),
            Some(json!({"kind": kind, "id": id})),
        )
        .await;
        assert_eq!(status, 400, "{kind} {id}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("in this tenant"),
            "{kind} {id}: {body}"
        );
    }
    let (_, assignments) = as_beta(Method::GET, format!("/apps/{app_id}/assignments"), None).await;
    assert_eq!(assignments, json!([]));
    // Beta has no pass-through domain: it cannot name acme's users either.
    let (status, body) = as_beta(
        Method::POST,
        "/users/directory".into(),
        Some(json!({"username": "eve@example.com"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, users) = as_beta(Method::GET, "/users".into(), None).await;
    assert!(!users.to_string().contains(CAROL), "{users}");
}

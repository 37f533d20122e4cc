//! Issue 4: pass-through authentication end to end. The real service, real agents
//! (in-process, over mTLS on loopback) and real directories: OpenLDAP with the
//! ppolicy overlay and a Samba Active Directory domain controller, both started
//! by the `postern-directory` harness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_agent::{Agent, AgentOptions, Phase};
use postern_directory::testing::{SAMBA_PASSWORD, SLAPD_PASSWORD, SambaAd, Slapd};
use postern_directory::{Directory, LdapDirectory};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_proto::relay::{ValidationOutcome, ValidationRequest, ValidationResult};
use postern_store::{DomainAuthMode, Tenant, UserSource};
use postern_sts::{ClientIp, DirectoryProblem, PasswordVerdict};
use postern_testkit::{Browser, Pkce, TenantFixture, TestService};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};

use crate::common::{authorize_url, login, query_param, sign_in_for_code};

const REDIRECT: &str = "https://app.acme.test/cb";

pub(crate) struct Pta {
    pub(crate) svc: TestService,
    pub(crate) t: TenantFixture,
    pub(crate) dir: tempfile::TempDir,
}

/// An agent running in this process.
pub(crate) struct RunningAgent {
    pub(crate) stats: Arc<postern_agent::AgentStats>,
    state: StateDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), postern_agent::AgentError>>,
}

impl RunningAgent {
    /// Kills the agent at once (as if its process died).
    fn kill(self) {
        self.task.abort();
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn ip() -> ClientIp {
    ClientIp("192.0.2.10".parse().unwrap())
}

impl Pta {
    pub(crate) async fn new(domain: &str) -> Pta {
        let svc = TestService::builder()
            .tune(|c| {
                c.pta.attempt = Duration::from_millis(1500);
                c.pta.overall = Duration::from_secs(8);
            })
            .start()
            .await
            .unwrap();
        let t = svc.bootstrap().await.unwrap();
        let store = svc.store();
        store.add_domain(&t.tenant.id, domain, "tok", svc.now()).await.unwrap();
        store.verify_domain(&t.tenant.id, domain).await.unwrap();
        store
            .set_domain_auth_mode(&t.tenant.id, domain, DomainAuthMode::Passthrough)
            .await
            .unwrap();
        svc.create_client(
            &t.tenant,
            "app",
            Some("app-secret"),
            &[REDIRECT],
            &["authorization_code"],
        )
        .await
        .unwrap();
        Pta {
            svc,
            t,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn agent_for(&self, tenant: &Tenant, name: &str, directory: Arc<dyn Directory>) -> RunningAgent {
        let options = AgentOptions {
            drain_grace: Duration::from_secs(1),
            ..AgentOptions::default()
        };
        self.agent_with(tenant, name, directory, options).await
    }

    /// Registers an agent of `tenant` and runs it with `options` until it is
    /// attached to the queue.
    async fn agent_with(
        &self,
        tenant: &Tenant,
        name: &str,
        directory: Arc<dyn Directory>,
        agent_options: AgentOptions,
    ) -> RunningAgent {
        let admin = self
            .svc
            .store()
            .users(&tenant.id)
            .await
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        let state = self.register_agent(tenant, &admin, name).await;
        let agent = Agent::new(state.clone(), self.svc.shared_clock(), directory)
            .unwrap()
            .with_options(agent_options);
        let mut status = agent.status();
        let stats = agent.stats();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s| s.phase == Phase::Connected),
        )
        .await
        .expect("agent connects")
        .unwrap();
        RunningAgent {
            stats,
            state,
            stop: Some(stop),
            task,
        }
    }

    pub(crate) async fn agent(&self, name: &str, directory: Arc<dyn Directory>) -> RunningAgent {
        self.agent_for(&self.t.tenant, name, directory).await
    }

    /// Registers an agent named `name` for `tenant`; returns its state.
    async fn register_agent(&self, tenant: &Tenant, admin: &postern_store::User, name: &str) -> StateDir {
        let token = self
            .svc
            .registration_token(tenant, admin, ComponentKind::Agent, name)
            .await
            .unwrap();
        let state = StateDir::new(self.dir.path().join(name));
        let options = RegisterOptions {
            server_url: self.svc.url(),
            kind: ComponentKind::Agent,
            credential: Credential::AccessToken(SecretString::from(token.as_str())),
            name: name.into(),
            version: "test".into(),
            group: None,
            tenant: None,
            key_alg: KeyAlg::Rsa(2048),
            server_ca_pem: None,
        };
        register(&options, &state).await.unwrap();
        state
    }

    /// An agent registered for the test to play by hand: its client and the
    /// key its passwords are encrypted to.
    async fn raw_agent(&self, name: &str) -> (ControlClient, postern_agent::decrypt::AgentKey) {
        let state = self.register_agent(&self.t.tenant, &self.t.admin, name).await;
        let client = ControlClient::load(state.clone(), self.svc.shared_clock()).unwrap();
        let key_pem = std::fs::read_to_string(state.path().join("key.pem")).unwrap();
        let key = postern_pki::ComponentKey::from_pkcs8_pem(&key_pem).unwrap();
        let agent_key = postern_agent::decrypt::AgentKey::from_component_key(&key).unwrap();
        (client, agent_key)
    }

    async fn check(&self, username: &str, password: &str) -> PasswordVerdict {
        self.svc
            .sts()
            .check_password(&self.t.tenant, username, &SecretString::from(password), ip())
            .await
            .unwrap()
    }
}

pub(crate) fn slapd_directory(slapd: &Slapd) -> Arc<dyn Directory> {
    let mut config = slapd.config();
    // Users sign in with their mail address; report it as the sign-in name.
    config.user_filter = Some("(&(objectClass=inetOrgPerson)(mail={username}))".into());
    config.attributes.upn = Some("mail".into());
    Arc::new(LdapDirectory::new(&config).unwrap())
}

fn assert_directory(verdict: PasswordVerdict, expected: DirectoryProblem) {
    match verdict {
        PasswordVerdict::Directory(p) => assert_eq!(p, expected),
        other => panic!("expected {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn openldap_sign_ins_through_an_agent() {
    let slapd = Slapd::start().await.unwrap();
    let p = Pta::new("example.com").await;
    let agent = p.agent("agent-1", slapd_directory(&slapd)).await;

    // Through the sign-in pages: the directory account is created just in time.
    let url = authorize_url(&p.svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    let back = sign_in_for_code(
        &Browser::new(),
        &url,
        &login(&p.svc, "alice@example.com", SLAPD_PASSWORD),
    )
    .await;
    assert!(query_param(&back.location().unwrap(), "code").is_some());
    let alice = p
        .svc
        .store()
        .user_by_username(&p.t.tenant.id, "alice@example.com")
        .await
        .unwrap();
    assert_eq!(alice.source, UserSource::Directory);
    assert_eq!(alice.display_name, "Alice Liddell");
    assert!(
        alice.password_hash.is_none(),
        "no password of a directory account is stored"
    );
    let groups: Vec<String> = p
        .svc
        .store()
        .user_groups(&p.t.tenant.id, &alice.id)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert!(
        groups.contains(&"staff".to_string()) && groups.contains(&"admins".to_string()),
        "{groups:?}"
    );
    let wrong = Browser::new()
        .sign_in(&url, &login(&p.svc, "alice@example.com", "not her password"))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("incorrect"), "{wrong}");

    // Every outcome the directory can give.
    assert!(matches!(
        p.check("bob@example.com", SLAPD_PASSWORD).await,
        PasswordVerdict::Valid(_)
    ));
    assert!(matches!(
        p.check("nobody@example.com", SLAPD_PASSWORD).await,
        PasswordVerdict::WrongCredentials { .. }
    ));
    assert_directory(
        p.check("expired@example.com", SLAPD_PASSWORD).await,
        DirectoryProblem::PasswordExpired,
    );
    assert_directory(
        p.check("reset@example.com", SLAPD_PASSWORD).await,
        DirectoryProblem::MustChangePassword,
    );
    for _ in 0..3 {
        let bad = p.check("lockme@example.com", "a wrong guess").await;
        assert!(
            matches!(bad, PasswordVerdict::WrongCredentials { locked_now: false }),
            "{bad:?}"
        );
    }
    assert_directory(
        p.check("lockme@example.com", SLAPD_PASSWORD).await,
        DirectoryProblem::AccountLocked,
    );
    // An empty password never reaches the directory as a bind.
    assert!(matches!(
        p.check("alice@example.com", "").await,
        PasswordVerdict::WrongCredentials { .. }
    ));
    let snapshot = agent.stats.snapshot();
    assert!(
        snapshot
            .validated
            .get(&ValidationOutcome::Success)
            .copied()
            .unwrap_or(0)
            >= 2,
        "{snapshot:?}"
    );
    assert_eq!(snapshot.decrypt_failed, 0);
    // Every answer went back on the two-way queue, none by a request of its own.
    assert!(snapshot.results_streamed >= 2, "{snapshot:?}");
    assert_eq!(snapshot.results_posted, 0, "{snapshot:?}");
}

#[tokio::test]
async fn active_directory_outcomes() {
    let samba = SambaAd::start().await.unwrap();
    let p = Pta::new("example.test").await;
    let _agent = p
        .agent("dc-agent", Arc::new(LdapDirectory::new(&samba.config()).unwrap()))
        .await;
    match p.check("alice@example.test", SAMBA_PASSWORD).await {
        PasswordVerdict::Valid(u) => {
            assert_eq!(u.username, "alice@example.test");
            assert_eq!(u.source, UserSource::Directory);
            assert!(u.external_id.is_some(), "objectGUID kept as the stable ID");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        p.check("alice@example.test", "Wrong!Pass1").await,
        PasswordVerdict::WrongCredentials { .. }
    )); // 52e
    assert_directory(
        p.check("disabled@example.test", SAMBA_PASSWORD).await,
        DirectoryProblem::AccountDisabled,
    ); // 533
    assert_directory(
        p.check("acctexpired@example.test", SAMBA_PASSWORD).await,
        DirectoryProblem::AccountExpired,
    ); // 701
    assert_directory(
        p.check("mustchange@example.test", SAMBA_PASSWORD).await,
        DirectoryProblem::MustChangePassword,
    ); // 773
    for _ in 0..3 {
        let _ = p.check("lockme@example.test", "Wrong!Pass1").await;
    }
    assert_directory(
        p.check("lockme@example.test", SAMBA_PASSWORD).await,
        DirectoryProblem::AccountLocked,
    ); // 775
    // AD would take an empty-password bind as anonymous success: the agent refuses it.
    assert!(matches!(
        p.check("alice@example.test", "").await,
        PasswordVerdict::WrongCredentials { .. }
    ));
}

#[tokio::test]
async fn directory_down_is_reported_quickly() {
    let p = Pta::new("example.com").await;
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = postern_directory::LdapConfig::new(
        postern_directory::Flavor::OpenLdap,
        vec![format!("ldap://{dead}")],
        "dc=example,dc=com",
    );
    config.allow_plaintext = true;
    config.connect_timeout_ms = Some(500);
    let _agent = p.agent("agent-1", Arc::new(LdapDirectory::new(&config).unwrap())).await;
    let started = Instant::now();
    let verdict = p.check("alice@example.com", "whatever password").await;
    assert!(
        matches!(verdict, PasswordVerdict::Unavailable(ref why) if why.contains("unreachable")),
        "{verdict:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Not counted by smart lockout: the password was never judged.
    let state = p
        .svc
        .store()
        .lockout_state(
            &p.t.tenant.id,
            "alice@example.com",
            postern_store::LocationClass::Unfamiliar,
        )
        .await
        .unwrap();
    assert_eq!(state.failures, 0);
}

#[tokio::test]
async fn a_second_agent_completes_the_sign_in_when_the_first_dies_mid_request() {
    let slapd = Slapd::start().await.unwrap();
    let p = Pta::new("example.com").await;
    // The first agent's directory accepts connections and never answers, so the
    // agent is mid-request when it is killed.
    let blackhole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole = blackhole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = blackhole.accept().await {
            held.push(s);
        }
    });
    let mut config = slapd.config();
    config.urls = vec![format!("ldap://{hole}")];
    config.operation_timeout_ms = Some(60_000);
    config.sign_in_timeout_ms = Some(60_000);
    let first = p.agent("first", Arc::new(LdapDirectory::new(&config).unwrap())).await;
    let second = p.agent("second", slapd_directory(&slapd)).await;

    let sts = p.svc.sts().clone();
    let tenant = p.t.tenant.clone();
    let sign_in = tokio::spawn(async move {
        sts.check_password(&tenant, "alice@example.com", &SecretString::from(SLAPD_PASSWORD), ip())
            .await
    });
    // Wait until the first agent holds the request, then kill it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.stats.snapshot().in_flight == 0 {
        assert!(Instant::now() < deadline, "the first agent never got the request");
        postern_testkit::poll_pause(Duration::from_millis(10)).await;
    }
    first.kill();
    let verdict = sign_in.await.unwrap().unwrap();
    assert!(matches!(verdict, PasswordVerdict::Valid(_)), "{verdict:?}");
    assert_eq!(
        second
            .stats
            .snapshot()
            .validated
            .get(&ValidationOutcome::Success)
            .copied(),
        Some(1)
    );
}

#[tokio::test]
async fn tenants_never_see_each_others_requests_and_forged_results_are_refused() {
    let slapd = Slapd::start().await.unwrap();
    let p = Pta::new("example.com").await;
    let (beta, _, _) = p
        .svc
        .sts()
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
    let beta_agent = p.agent_for(&beta, "beta-agent", slapd_directory(&slapd)).await;
    let acme_agent = p.agent("acme-agent", slapd_directory(&slapd)).await;
    for _ in 0..5 {
        assert!(matches!(
            p.check("alice@example.com", SLAPD_PASSWORD).await,
            PasswordVerdict::Valid(_)
        ));
    }
    let beta_stats = beta_agent.stats.snapshot();
    assert!(
        beta_stats.validated.is_empty(),
        "tenant B's agent got tenant A's requests: {beta_stats:?}"
    );
    assert_eq!(beta_stats.skipped_other_tenant, 0, "not even offered");
    assert_eq!(
        acme_agent
            .stats
            .snapshot()
            .validated
            .get(&ValidationOutcome::Success)
            .copied(),
        Some(5)
    );

    // Forged results, posted over mTLS by real agent certificates.
    let acme = ControlClient::load(acme_agent.state.clone(), p.svc.shared_clock()).unwrap();
    let beta_client = ControlClient::load(beta_agent.state.clone(), p.svc.shared_clock()).unwrap();
    let result = ValidationResult {
        protocol: postern_proto::PROTOCOL_VERSION,
        outcome: ValidationOutcome::Success,
        account: None,
    };
    let post = |client: &ControlClient, tenant_id: &str, request_id: &str| {
        client
            .request(
                reqwest::Method::POST,
                &postern_proto::relay::agent_result_path(tenant_id, request_id),
            )
            .json(&result)
            .send()
    };
    // An unknown request.
    assert_eq!(
        post(&acme, &p.t.tenant.id, "no-such-request").await.unwrap().status(),
        404
    );
    // Tenant B's agent addressing tenant A's results path.
    assert_eq!(
        post(&beta_client, &p.t.tenant.id, "no-such-request")
            .await
            .unwrap()
            .status(),
        403
    );
    drop(acme_agent);
}

/// The test plays an agent over the real protocol: it sees only ciphertexts (no
/// clear password in the queued payload, SEC-7), decrypts its own, and its second
/// answer to the same request is refused.
#[tokio::test]
async fn a_raw_agent_sees_only_ciphertexts_and_answers_once() {
    let p = Pta::new("example.com").await;
    let (client, agent_key) = p.raw_agent("raw").await;
    let boot = client.agent_bootstrap().await.unwrap();
    let credential = SecretString::from(boot.queue_credential.as_str());
    let mut response = client.agent_queue(&boot.queue_path, &credential).await.unwrap();

    const PASSWORD: &str = "Unique-Password-For-Sec7-Check";
    let sts = p.svc.sts().clone();
    let tenant = p.t.tenant.clone();
    let sign_in = tokio::spawn(async move {
        sts.check_password(&tenant, "zoe@example.com", &SecretString::from(PASSWORD), ip())
            .await
    });
    let mut buffered = Vec::new();
    let request = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        buffered.extend_from_slice(&chunk);
        let text = String::from_utf8_lossy(&buffered).to_string();
        if let Some(line) = text.lines().find(|l| l.contains("\"validate\"")) {
            assert!(
                !line.contains(PASSWORD),
                "the queued payload carries the password in clear"
            );
            match serde_json::from_str::<postern_proto::relay::QueueFrame>(line).unwrap() {
                postern_proto::relay::QueueFrame::Validate(r) => break r,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(request.username, "zoe@example.com");
    assert_eq!(request.ciphertexts.len(), 1, "one ciphertext per registered agent key");
    // Our key opens it with the request's label, and only with it.
    let clear = open_password(&agent_key, &request);
    assert_eq!(clear.expose(), PASSWORD);
    assert!(
        agent_key
            .decrypt(
                &request.tenant_id,
                "another-request",
                &request.ciphertexts[0].ciphertext
            )
            .is_err()
    );

    let answer = ValidationResult {
        protocol: postern_proto::PROTOCOL_VERSION,
        outcome: ValidationOutcome::WrongCredentials,
        account: None,
    };
    client.agent_result(&request.request_id, &answer).await.unwrap();
    let again = client.agent_result(&request.request_id, &answer).await.unwrap_err();
    assert!(
        matches!(again, postern_uplink::UplinkError::Refused { status: 404, .. }),
        "{again:?}"
    );
    let verdict = sign_in.await.unwrap().unwrap();
    assert!(
        matches!(verdict, PasswordVerdict::WrongCredentials { .. }),
        "{verdict:?}"
    );
}

/// The test plays an agent on the two-way queue: the password arrives on the
/// response, the answer goes back on the same request's body. A line that is
/// not a result is skipped without ending the reading (a flood of them does
/// end it), a second answer to the same request changes nothing, and removing
/// the agent ends the queue.
#[tokio::test]
async fn a_raw_agent_answers_on_the_two_way_queue() {
    let p = Pta::new("example.com").await;
    let (client, agent_key) = p.raw_agent("raw-duplex").await;
    let boot = client.agent_bootstrap().await.unwrap();
    let duplex_path = boot
        .duplex_queue_path
        .clone()
        .expect("the service offers the two-way queue");
    assert_eq!(
        duplex_path,
        postern_proto::relay::agent_duplex_queue_path(&p.t.tenant.id)
    );
    let credential = SecretString::from(boot.queue_credential.as_str());
    let (lines, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let mut response = client
        .agent_duplex_queue(&duplex_path, &credential, body)
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let mut buffered = Vec::new();
    let mut next_request = async || loop {
        if let Some(end) = buffered.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffered.drain(..=end).collect();
            if let Ok(postern_proto::relay::QueueFrame::Validate(r)) = serde_json::from_slice(&line) {
                return r;
            }
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("a frame within 10 s")
            .unwrap()
            .expect("the queue is still open");
        buffered.extend_from_slice(&chunk);
    };
    let line = |request_id: &str, outcome: ValidationOutcome| {
        let answer = postern_proto::relay::QueueResult {
            request_id: request_id.into(),
            result: ValidationResult {
                protocol: postern_proto::PROTOCOL_VERSION,
                outcome,
                account: None,
            },
        };
        bytes::Bytes::from(serde_json::to_string(&answer).unwrap() + "\n")
    };

    const PASSWORD: &str = "Unique-Password-For-The-Two-Way-Queue";
    let sign_in = |user: &'static str| {
        let sts = p.svc.sts().clone();
        let tenant = p.t.tenant.clone();
        tokio::spawn(async move {
            sts.check_password(&tenant, user, &SecretString::from(PASSWORD), ip())
                .await
                .unwrap()
        })
    };
    let first = sign_in("zoe@example.com");
    let request = next_request().await;
    let clear = open_password(&agent_key, &request);
    assert_eq!(clear.expose(), PASSWORD);
    // Garbage first (skipped, the reading goes on), then an answer split across
    // two writes, then a second answer to the same request (ignored).
    lines.send(bytes::Bytes::from_static(b"not a result\n")).await.unwrap();
    let answer = line(&request.request_id, ValidationOutcome::WrongCredentials);
    let (head, tail) = answer.split_at(10);
    lines.send(bytes::Bytes::copy_from_slice(head)).await.unwrap();
    lines.send(bytes::Bytes::copy_from_slice(tail)).await.unwrap();
    lines
        .send(line(&request.request_id, ValidationOutcome::Success))
        .await
        .unwrap();
    let verdict = tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(verdict, PasswordVerdict::WrongCredentials { .. }),
        "{verdict:?}"
    );

    // The next sign-in is answered on the same request, too.
    let second = sign_in("yves@example.com");
    let request = next_request().await;
    lines
        .send(line(&request.request_id, ValidationOutcome::AccountDisabled))
        .await
        .unwrap();
    let verdict = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_directory(verdict, DirectoryProblem::AccountDisabled);

    // A flood of lines that are not results ends the reading of the body (each
    // would be a warning in the log): the next answer on it reaches nobody, the
    // same answer posted on its own does.
    for _ in 0..40 {
        lines
            .send(bytes::Bytes::from_static(b"{\"not\":\"a result\"}\n"))
            .await
            .unwrap();
    }
    let third = sign_in("xena@example.com");
    let request = next_request().await;
    lines
        .send(line(&request.request_id, ValidationOutcome::WrongCredentials))
        .await
        .unwrap();
    let mut third = std::pin::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut third).await.is_err(),
        "an answer after the flood was still read"
    );
    let answer = ValidationResult {
        protocol: postern_proto::PROTOCOL_VERSION,
        outcome: ValidationOutcome::AccountLocked,
        account: None,
    };
    client.agent_result(&request.request_id, &answer).await.unwrap();
    let verdict = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_directory(verdict, DirectoryProblem::AccountLocked);

    // Removing the agent ends its queue: the response ends and what it writes
    // after that reaches nobody.
    p.svc
        .store()
        .delete_component(&p.t.tenant.id, &client.enrolment().component_id, "test", p.svc.now())
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the two-way queue outlived the agent's removal");
}

/// The password of `request`, opened with the agent's key.
fn open_password(key: &postern_agent::decrypt::AgentKey, request: &ValidationRequest) -> SecretString {
    key.decrypt(
        &request.tenant_id,
        &request.request_id,
        &request.ciphertexts[0].ciphertext,
    )
    .unwrap()
}

/// A directory whose server accepts connections and never answers: a
/// validation against it holds its agent's slot until the request's deadline.
pub(crate) async fn unanswering_directory() -> Arc<dyn Directory> {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = postern_directory::LdapConfig::new(
        postern_directory::Flavor::OpenLdap,
        vec![format!("ldap://{addr}")],
        "dc=example,dc=com",
    );
    config.allow_plaintext = true;
    config.operation_timeout_ms = Some(60_000);
    config.sign_in_timeout_ms = Some(60_000);
    Arc::new(LdapDirectory::new(&config).unwrap())
}

/// A local account file with `username` and `password` (argon2id).
pub(crate) fn local_accounts(dir: &std::path::Path, username: &str, password: &str) -> Arc<dyn Directory> {
    use std::os::unix::fs::PermissionsExt;
    let hash = postern_directory::hash_password(&SecretString::from(password)).unwrap();
    let path = dir.join("accounts");
    std::fs::write(&path, format!("{username}:{hash}:Carol\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Arc::new(postern_directory::LocalFileDirectory::load(&path).unwrap())
}

/// Issue 8 item 7: an agent that cannot take a sign-in (its only slot is held
/// by a validation its directory never answers) declines it at once, and the
/// relay offers it to the free agent without waiting for the attempt timeout.
#[tokio::test]
async fn a_saturated_agent_declines_at_once_and_the_free_agent_answers() {
    const CAROL: &str = "carol@example.com";
    const PASSWORD: &str = "Carol-Secret-1";
    let p = Pta::new("example.com").await;
    let attempt = Duration::from_millis(1500); // as Pta::new tunes it
    // Attached first: offered first when the relay sees both agents idle.
    let saturated = p
        .agent_with(
            &p.t.tenant,
            "saturated",
            unanswering_directory().await,
            AgentOptions {
                max_in_flight: Some(1),
                drain_grace: Duration::from_millis(100),
                ..AgentOptions::default()
            },
        )
        .await;
    let free = p.agent("free", local_accounts(p.dir.path(), CAROL, PASSWORD)).await;
    let relay = p.svc.control().relay().clone();

    // The first sign-in takes the saturated agent's only slot (and keeps it); it
    // is answered by the free agent once its attempt there timed out.
    assert!(matches!(p.check(CAROL, PASSWORD).await, PasswordVerdict::Valid(_)));
    assert_eq!(saturated.stats.snapshot().in_flight, 1, "its slot is still held");
    let before = relay.stats();
    assert_eq!(before.attempts_timed_out, 1);

    // The second: declined at once, answered by the free agent.
    let started = Instant::now();
    assert!(matches!(p.check(CAROL, PASSWORD).await, PasswordVerdict::Valid(_)));
    let took = started.elapsed();
    let after = relay.stats();
    assert_eq!(after.attempts_declined, before.attempts_declined + 1, "{after:?}");
    assert_eq!(after.attempts_timed_out, before.attempts_timed_out, "{after:?}");
    assert!(took < attempt / 2, "took {took:?}; the attempt timeout is {attempt:?}");
    assert_eq!(saturated.stats.snapshot().declined, 1);
    assert_eq!(free.stats.snapshot().validated(ValidationOutcome::Success), 2);
}

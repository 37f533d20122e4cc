//! Issue 10: several `postern serve` instances on one PostgreSQL database and
//! NATS JetStream (BEY-1, CON-5, PTA-4, PTA-6, BEY-6).
//!
//! In-process instances (`TestCluster`: one schema, one KEK, one clock, a NATS
//! prefix of their own), connectors and agents in-process over mTLS on
//! loopback, real backends and reqwest clients. The components always attach
//! to instance A; users and administrators reach instance B, which holds no
//! tunnel and no agent: what B answers proves the instances cooperate.
//! `cluster_processes.rs` kills real `postern serve` processes under load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use postern_agent::{Agent, AgentOptions, Phase};
use postern_connector::{AppTable, BackendOptions, Backends, PoolOptions, TunnelEndpoint, TunnelPool};
use postern_directory::{Directory, LocalFileDirectory, hash_password};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_proto::relay::ValidationOutcome;
use postern_store::{DomainAuthMode, Tenant, User};
use postern_sts::{ClientIp, PasswordVerdict};
use postern_testkit::{TenantFixture, TestCluster, TestService};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Events between instances must arrive within this.
const WITHIN: Duration = Duration::from_secs(1);
const CAROL: &str = "carol@example.com";
const CAROL_PASSWORD: &str = "Carol-Secret-1";
const DAVE: &str = "dave@beta-corp.test";
const DAVE_PASSWORD: &str = "Dave-Secret-1";

/// A backend answering `ok from {name}` and counting requests.
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub(crate) async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, hits, task }
    }
}

/// A connector in this process (the connector crate's tunnel pool).
struct Connector {
    id: String,
    pool: TunnelPool,
    _apps: watch::Sender<Arc<AppTable>>,
}

/// An agent in this process.
struct RunningAgent {
    id: String,
    stats: Arc<postern_agent::AgentStats>,
    _task: tokio::task::JoinHandle<Result<(), postern_agent::AgentError>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Two instances of one cluster; acme bootstrapped through A.
struct Two {
    cluster: TestCluster,
    a: TestService,
    b: TestService,
    t: TenantFixture,
    token: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn short_pta(c: &mut postern_sts::StsConfig) {
    c.pta.attempt = Duration::from_millis(1500);
    c.pta.overall = Duration::from_secs(8);
}

impl Two {
    async fn start() -> Two {
        let cluster = TestCluster::new().await.unwrap();
        let a = cluster.instance().tune(short_pta).start().await.unwrap();
        let t = a.bootstrap().await.unwrap();
        let b = cluster.instance().tune(short_pta).start().await.unwrap();
        let token = a.admin_token(&t.tenant, &t.admin).await.unwrap();
        let two = Two {
            cluster,
            a,
            b,
            t,
            token,
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        };
        two.wait_until("the instances know each other", || {
            [&two.a, &two.b]
                .iter()
                .all(|s| s.cluster().is_some_and(|c| c.instances().len() == 2))
        })
        .await;
        two
    }

    async fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            postern_testkit::poll_pause(Duration::from_millis(10)).await;
        }
    }

    /// Calls the admin API of `svc` with `token`.
    async fn api(
        &self,
        svc: &TestService,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", svc.url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Publishes a passthrough app at `http://{host}/` (the default port, so
    /// every instance's listener serves it) for the tenant of `token`.
    async fn publish(&self, svc: &TestService, token: &str, host: &str, backend: &Backend) -> Value {
        let body = json!({
            "name": host.split('.').next().unwrap(),
            "external_url": format!("http://{host}/"),
            "internal_url": format!("http://{}/", backend.addr),
            "preauth": "passthrough",
        });
        let (status, app) = self.api(svc, token, Method::POST, "/apps", Some(body)).await;
        assert_eq!(status, 201, "{app}");
        app
    }

    /// `GET http://{host}/` sent to `svc`'s listener.
    async fn get(&self, svc: &TestService, host: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("http://{}/", svc.local_addr_for_tests()))
            .header("host", host)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    /// Registers a component through instance `svc`.
    async fn register(
        &self,
        svc: &TestService,
        tenant: &Tenant,
        admin: &User,
        kind: ComponentKind,
        name: &str,
    ) -> (StateDir, String) {
        let token = svc.registration_token(tenant, admin, kind, name).await.unwrap();
        let state = StateDir::new(self.dir.path().join(name));
        let options = RegisterOptions {
            server_url: svc.url(),
            kind,
            credential: Credential::AccessToken(SecretString::from(token.as_str())),
            name: name.into(),
            version: "test".into(),
            group: None,
            tenant: None,
            key_alg: match kind {
                ComponentKind::Agent => KeyAlg::Rsa(2048),
                ComponentKind::Connector => KeyAlg::recommended(kind),
            },
            server_ca_pem: None,
        };
        let enrolment = register(&options, &state).await.unwrap();
        (state, enrolment.component_id)
    }

    /// A connector of acme attached to instance A (its control URL is A's).
    async fn connector_on_a(&self, name: &str) -> Connector {
        let (state, id) = self
            .register(&self.a, &self.t.tenant, &self.t.admin, ComponentKind::Connector, name)
            .await;
        let mut client = ControlClient::load(state, self.a.shared_clock()).unwrap();
        let config = client.connector_config("test").await.unwrap();
        let (tables, table) = watch::channel(Arc::new(AppTable::new(&config.apps, Duration::from_secs(10))));
        let pool = TunnelPool::start(
            TunnelEndpoint::from_client(&client),
            table,
            Backends::new(&BackendOptions::default()).unwrap(),
            PoolOptions::default(),
        )
        .unwrap();
        let connector = Connector {
            id,
            pool,
            _apps: tables,
        };
        let group = config.group.id.clone();
        self.wait_until("the connector's tunnels are up on A", || {
            self.a.control().tunnels().tunnels(&self.t.tenant.id, &group).len() >= 2
        })
        .await;
        connector
    }

    /// Makes `domain` a pass-through domain of `tenant` and writes an account
    /// file with `user`.
    async fn passthrough(&self, tenant: &Tenant, domain: &str, user: &str, password: &str) -> std::path::PathBuf {
        let (store, id) = (self.a.store(), &tenant.id);
        store.add_domain(id, domain, "tok", self.a.now()).await.unwrap();
        store.verify_domain(id, domain).await.unwrap();
        store
            .set_domain_auth_mode(id, domain, DomainAuthMode::Passthrough)
            .await
            .unwrap();
        let hash = hash_password(&SecretString::from(password)).unwrap();
        let accounts = self.dir.path().join(format!("accounts-{domain}"));
        std::fs::write(&accounts, format!("{user}:{hash}:Someone\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
        accounts
    }

    /// An agent of `tenant` attached to instance A.
    async fn agent_on_a(
        &self,
        tenant: &Tenant,
        admin: &User,
        name: &str,
        directory: Arc<dyn Directory>,
    ) -> RunningAgent {
        let (state, id) = self.register(&self.a, tenant, admin, ComponentKind::Agent, name).await;
        let agent = Agent::new(state, self.a.shared_clock(), directory)
            .unwrap()
            .with_options(AgentOptions {
                reconnect_min: Duration::from_millis(100),
                reconnect_max: Duration::from_millis(500),
                drain_grace: Duration::from_secs(1),
                ..AgentOptions::default()
            });
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
        .expect("the agent attaches")
        .unwrap();
        RunningAgent {
            id,
            stats,
            _task: task,
            _stop: stop,
        }
    }

    /// A second tenant, `beta`, with its own verified domain `beta.test`.
    async fn beta(&self) -> (Tenant, User) {
        let (status, body) = self
            .api(
                &self.a,
                &self.token,
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
        let store = self.a.store();
        let tenant = store.tenant_by_name("beta").await.unwrap();
        let admin = store.user_by_username(&tenant.id, "admin@beta.test").await.unwrap();
        (tenant, admin)
    }

    async fn check_password(&self, svc: &TestService, tenant: &Tenant, user: &str, password: &str) -> PasswordVerdict {
        svc.sts()
            .check_password(
                tenant,
                user,
                &SecretString::from(password),
                ClientIp("192.0.2.10".parse().unwrap()),
            )
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.cluster.remove_from_nats().await;
    }
}

/// A directory whose server accepts connections and never answers.
pub(crate) async fn unanswering_directory() -> Arc<dyn Directory> {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
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
    Arc::new(postern_directory::LdapDirectory::new(&config).unwrap())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CON-5 across instances: the connector's tunnels are on A only; requests
/// that reach B are forwarded to A over mutual TLS and answered by the backend
/// (before peering: 503 on B every time). The forwarded request's extra
/// latency is measured against the local one. Once no instance holds a
/// tunnel, both say 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_requests_are_answered_through_every_instance() {
    let two = Two::start().await;
    let backend = Backend::start().await;
    two.publish(&two.a, &two.token, "wiki.acme.test", &backend).await;
    let connector = two.connector_on_a("gw-1").await;
    assert!(
        two.b.control().tunnels().held_groups().is_empty(),
        "B holds no tunnel: what it answers went through A"
    );
    two.wait_until("B heard that A holds the group's tunnels", || {
        two.b
            .cluster()
            .unwrap()
            .instances()
            .iter()
            .any(|i| !i.groups.is_empty())
    })
    .await;
    for svc in [&two.a, &two.b] {
        let (status, body) = two.get(svc, "wiki.acme.test").await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }

    // Local against forwarded, one request at a time (informational; the
    // benchmark in bench/ measures under load).
    let mut timings = Vec::new();
    for svc in [&two.a, &two.b] {
        let mut took = Vec::new();
        for _ in 0..200 {
            let started = Instant::now();
            let (status, _) = two.get(svc, "wiki.acme.test").await;
            took.push(started.elapsed());
            assert_eq!(status, 200);
        }
        took.sort();
        timings.push((percentile(&took, 0.5), percentile(&took, 0.99)));
    }
    eprintln!(
        "local (A): p50 {:?} p99 {:?}; forwarded (B→A): p50 {:?} p99 {:?}",
        timings[0].0, timings[0].1, timings[1].0, timings[1].1
    );
    assert_eq!(backend.hits.load(Ordering::SeqCst), 402);

    connector.pool.shutdown().await;
    two.wait_until("A's tunnels are gone", || {
        two.a.control().tunnels().held_groups().is_empty()
    })
    .await;
    // B learns through the cluster that A no longer holds the tunnels.
    let both = &two;
    postern_testkit::eventually_async(
        "both instances answer 503",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move {
            let mut all = true;
            for svc in [&both.a, &both.b] {
                all &= both.get(svc, "wiki.acme.test").await.0 == 503;
            }
            all.then_some(())
        },
    )
    .await;
    let _ = connector.id;
    two.finish().await;
}

/// PTA-4/PTA-5 across instances: the agents are attached to A; a sign-in on B
/// is published to acme's queue on NATS, taken by A for acme's agent and
/// answered back to B (before: "no agent" on B). Beta's agent, attached to the
/// same instance, never sees acme's sign-ins, nor acme's agent beta's. PTA-6:
/// with a silent agent of acme beside the good one, every sign-in still
/// succeeds within the deadline (re-offered to the other agent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_sign_ins_from_any_instance_reach_only_the_tenants_agents() {
    let two = Two::start().await;
    let acme = two.t.tenant.clone();
    let accounts = two.passthrough(&acme, "example.com", CAROL, CAROL_PASSWORD).await;
    let (beta, beta_admin) = two.beta().await;
    let beta_accounts = two.passthrough(&beta, "beta-corp.test", DAVE, DAVE_PASSWORD).await;
    let acme_agent = two
        .agent_on_a(
            &acme,
            &two.t.admin,
            "pta-acme",
            Arc::new(LocalFileDirectory::load(&accounts).unwrap()),
        )
        .await;
    let beta_agent = two
        .agent_on_a(
            &beta,
            &beta_admin,
            "pta-beta",
            Arc::new(LocalFileDirectory::load(&beta_accounts).unwrap()),
        )
        .await;
    assert_eq!(two.b.control().relay().connected_agents(&acme.id), 0, "no agent on B");

    for _ in 0..5 {
        let verdict = two.check_password(&two.b, &acme, CAROL, CAROL_PASSWORD).await;
        assert!(matches!(verdict, PasswordVerdict::Valid(_)), "{verdict:?}");
        let verdict = two.check_password(&two.b, &beta, DAVE, DAVE_PASSWORD).await;
        assert!(matches!(verdict, PasswordVerdict::Valid(_)), "{verdict:?}");
    }
    let wrong = two.check_password(&two.b, &acme, CAROL, "not her password").await;
    assert!(matches!(wrong, PasswordVerdict::WrongCredentials { .. }), "{wrong:?}");
    let acme_seen = acme_agent.stats.snapshot();
    let beta_seen = beta_agent.stats.snapshot();
    assert_eq!(acme_seen.received, 6, "{acme_seen:?}");
    assert_eq!(beta_seen.received, 5, "{beta_seen:?}");
    assert_eq!(acme_seen.skipped_other_tenant + beta_seen.skipped_other_tenant, 0);
    assert_eq!(acme_seen.validated(ValidationOutcome::Success), 5);

    // A silent agent of acme (its directory never answers) beside the good
    // one: sign-ins on B still succeed, re-offered within the deadline.
    let silent = two
        .agent_on_a(&acme, &two.t.admin, "pta-silent", unanswering_directory().await)
        .await;
    let started = Instant::now();
    let verdicts =
        futures_util::future::join_all((0..6).map(|_| two.check_password(&two.b, &acme, CAROL, CAROL_PASSWORD))).await;
    for verdict in verdicts {
        assert!(matches!(verdict, PasswordVerdict::Valid(_)), "{verdict:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "within the deadline");
    assert!(
        silent.stats.snapshot().received >= 1,
        "the silent agent was offered some"
    );
    let _ = (acme_agent.id, beta_agent.id, silent.id);
    two.finish().await;
}

/// BEY-6 and caches across instances: removing a connector or an agent
/// through B's admin API ends their tunnels and queue stream on A within a
/// second (before: A found out at its 30 s recheck or next heartbeat); an app
/// published through B is served by A at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_and_publications_reach_the_other_instance_within_a_second() {
    let two = Two::start().await;
    let backend = Backend::start().await;
    let acme = two.t.tenant.clone();
    // Tokens name their instance's public URL as issuer (here each instance
    // has its own URL; behind a load balancer they share one).
    let token_b = two.b.admin_token(&acme, &two.t.admin).await.unwrap();
    // A's front door looks the host up (a miss, cached) before B publishes
    // it: the service's own landing page answers.
    let landing = two.get(&two.a, "late.acme.test").await;
    assert_eq!(landing.0, 200);
    assert_ne!(landing.1, "ok");
    let connector = two.connector_on_a("gw-1").await;
    two.publish(&two.b, &token_b, "late.acme.test", &backend).await;
    let published = Instant::now();
    loop {
        // Routed to the app: its connector (started before the app existed)
        // does not know it yet, so the front door's 502 page, not the landing.
        let (status, _) = two.get(&two.a, "late.acme.test").await;
        if status != 200 {
            assert_eq!(status, 502);
            break;
        }
        assert!(
            published.elapsed() < WITHIN,
            "A still does not route the app B published"
        );
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }

    let group = two
        .a
        .store()
        .default_connector_group(&acme.id, two.a.now())
        .await
        .unwrap()
        .id;
    let (status, body) = two
        .api(
            &two.b,
            &token_b,
            Method::DELETE,
            &format!("/connectors/{}", connector.id),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let deleted = Instant::now();
    while !two.a.control().tunnels().tunnels(&acme.id, &group).is_empty() {
        assert!(deleted.elapsed() < WITHIN, "A kept the removed connector's tunnels");
        postern_testkit::poll_pause(Duration::from_millis(10)).await;
    }

    let accounts = two.passthrough(&acme, "example.com", CAROL, CAROL_PASSWORD).await;
    let agent = two
        .agent_on_a(
            &acme,
            &two.t.admin,
            "pta-1",
            Arc::new(LocalFileDirectory::load(&accounts).unwrap()),
        )
        .await;
    let (status, body) = two
        .api(&two.b, &token_b, Method::DELETE, &format!("/agents/{}", agent.id), None)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let deleted = Instant::now();
    while two.a.control().relay().connected_agents(&acme.id) > 0 {
        assert!(deleted.elapsed() < WITHIN, "A kept the removed agent's queue stream");
        postern_testkit::poll_pause(Duration::from_millis(10)).await;
    }
    two.finish().await;
}

//! BEY-6: revocation takes effect at once, also for live connections (issue 8,
//! item 3). Deleting a connector, moving it to another group, deleting an agent
//! or a whole tenant ends what they hold open within a second while requests
//! keep flowing: no user request reaches a backend through a removed connector,
//! and no sign-in is offered to a removed agent, later than a second after the
//! admin API answered.
//!
//! Real parts: the service in-process, connectors (the connector crate's tunnel
//! pool) and agents in-process over mTLS on loopback, real backends, reqwest
//! clients. Each connector forwards to a backend of its own, so every request
//! that reached a backend is known to have come through that connector.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
use postern_store::{DomainAuthMode, Tenant, User};
use postern_sts::{ClientIp, PasswordVerdict};
use postern_testkit::{TenantFixture, TestService};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How soon after the admin API answered a revocation must have taken effect.
const AT_ONCE: Duration = Duration::from_secs(1);
/// The pass-through sign-in's account (in the agents' local file).
const CAROL: &str = "carol@example.com";
const CAROL_PASSWORD: &str = "Carol-Secret-1";

/// A backend that notes when each request arrived.
struct CountingBackend {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingBackend {
    async fn start() -> CountingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        seen.lock().unwrap().push(Instant::now());
                        async { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok")))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingBackend { addr, arrivals, task }
    }

    fn internal_url(&self) -> String {
        format!("http://{}/app/", self.addr)
    }

    /// Requests that arrived after `t`.
    fn arrived_after(&self, t: Instant) -> usize {
        self.arrivals.lock().unwrap().iter().filter(|a| **a > t).count()
    }
}

/// A connector running in this process: the connector crate's tunnel pool,
/// forwarding every app of its configuration to its own backend.
struct Connector {
    id: String,
    backend: CountingBackend,
    pool: TunnelPool,
    _apps: watch::Sender<Arc<AppTable>>,
}

impl Connector {
    /// Tunnels open as the connector itself sees them.
    fn tunnels_up(&self) -> usize {
        self.pool.status().borrow().up
    }
}

/// An agent running in this process.
struct RunningAgent {
    id: String,
    status: watch::Receiver<postern_agent::AgentStatus>,
    stats: Arc<postern_agent::AgentStats>,
    task: tokio::task::JoinHandle<Result<(), postern_agent::AgentError>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// One request of the traffic: when it left, when its answer came, and the
/// status (0: no HTTP answer).
#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    answered: Instant,
    status: u16,
}

/// Requests sent in loops until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    loops: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
}

impl Traffic {
    /// `loops` clients sending `GET url` one after the other, each.
    fn start(client: &reqwest::Client, url: &str, loops: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let loops = (0..loops)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let status = match client.get(&url).send().await {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let _ = r.bytes().await;
                                status
                            }
                            Err(_) => 0,
                        };
                        sent.push(Sent {
                            at,
                            answered: Instant::now(),
                            status,
                        });
                        postern_testkit::hold_for(Duration::from_millis(5)).await; // traffic pacing
                    }
                    sent
                })
            })
            .collect();
        Traffic { stop, loops }
    }

    async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for l in self.loops {
            all.extend(l.await.unwrap());
        }
        all
    }
}

/// Waits until `done` holds, checking every 10 ms, and fails at `deadline`.
async fn within(deadline: Instant, what: &str, mut done: impl FnMut() -> bool) {
    while !done() {
        assert!(Instant::now() < deadline, "not within a second: {what}");
        postern_testkit::poll_pause(Duration::from_millis(10)).await;
    }
}

struct Bench {
    svc: TestService,
    t: TenantFixture,
    token: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Bench {
    async fn start() -> Bench {
        let svc = TestService::builder().start().await.unwrap();
        let t = svc.bootstrap().await.unwrap();
        let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
        Bench {
            svc,
            t,
            token,
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
        }
    }

    /// Calls the admin API with `token`.
    async fn api_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.svc.url()))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Calls the admin API as acme's administrator (an operator).
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.api_as(&self.token, method, path, body).await
    }

    /// `http://{host}:{port}/`, an app host on the service.
    fn app_url(&self, host: &str) -> String {
        format!("http://{host}:{}/", self.svc.local_addr_for_tests().port())
    }

    /// A client resolving `host` to the service.
    fn client(&self, host: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(host, self.svc.local_addr_for_tests())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Publishes a passthrough app at `host` for connector group `group` (the
    /// default group when `None`), as the holder of `token`.
    async fn publish(&self, token: &str, host: &str, group: Option<&str>) {
        let mut body = json!({
            "name": host.split('.').next().unwrap(),
            "external_url": self.app_url(host),
            "internal_url": "http://127.0.0.1:9/app/",
            "preauth": "passthrough",
        });
        if let Some(g) = group {
            body["connector_group"] = json!(g);
        }
        let (status, app) = self.api_as(token, Method::POST, "/apps", Some(body)).await;
        assert_eq!(status, 201, "{app}");
    }

    /// A second tenant, `beta`, with its own verified domain `beta.test`; its
    /// administrator and an admin API token of theirs.
    async fn beta(&self) -> (Tenant, User, String) {
        let (status, body) = self
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
        let store = self.svc.store();
        let tenant = store.tenant_by_name("beta").await.unwrap();
        let admin = store.user_by_username(&tenant.id, "admin@beta.test").await.unwrap();
        let token = self.svc.admin_token(&tenant, &admin).await.unwrap();
        (tenant, admin, token)
    }

    /// Registers a component, approved by an administrator.
    async fn register(
        &self,
        tenant: &Tenant,
        admin: &User,
        kind: ComponentKind,
        name: &str,
        group: Option<&str>,
    ) -> (StateDir, String) {
        let token = self.svc.registration_token(tenant, admin, kind, name).await.unwrap();
        let state = StateDir::new(self.dir.path().join(name));
        let options = RegisterOptions {
            server_url: self.svc.url(),
            kind,
            credential: Credential::AccessToken(SecretString::from(token.as_str())),
            name: name.into(),
            version: "test".into(),
            group: group.map(str::to_owned),
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

    /// Registers a connector of `tenant` in `group` (name; the default group when
    /// `None`) and runs it in this process until its tunnels are up.
    async fn connector(&self, tenant: &Tenant, admin: &User, name: &str, group: Option<&str>) -> Connector {
        let (state, id) = self
            .register(tenant, admin, ComponentKind::Connector, name, group)
            .await;
        let mut client = ControlClient::load(state, self.svc.shared_clock()).unwrap();
        let config = client.connector_config("test").await.unwrap();
        let backend = CountingBackend::start().await;
        let mut apps = config.apps.clone();
        for app in &mut apps {
            app.internal_url = backend.internal_url();
        }
        let (tables, table) = watch::channel(Arc::new(AppTable::new(&apps, Duration::from_secs(10))));
        let pool = TunnelPool::start(
            TunnelEndpoint::from_client(&client),
            table,
            Backends::new(&BackendOptions::default()).unwrap(),
            PoolOptions {
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_millis(500),
                ..PoolOptions::default()
            },
        )
        .unwrap();
        let connector = Connector {
            id,
            backend,
            pool,
            _apps: tables,
        };
        self.wait_for_tunnels(&tenant.id, &config.group.id, &connector.id).await;
        connector
    }

    /// Waits (up to 20 s) until `connector` has two tunnels in the group.
    async fn wait_for_tunnels(&self, tenant_id: &str, group_id: &str, connector: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.tunnels_of(tenant_id, group_id, connector).len() < 2 {
            assert!(Instant::now() < deadline, "the connector's tunnels never came up");
            postern_testkit::poll_pause(Duration::from_millis(20)).await;
        }
    }

    /// IDs of the live tunnels `connector` holds for a group.
    fn tunnels_of(&self, tenant_id: &str, group_id: &str, connector: &str) -> Vec<u64> {
        self.svc
            .control()
            .tunnels()
            .tunnels(tenant_id, group_id)
            .into_iter()
            .filter(|t| t.connector_id == connector)
            .map(|t| t.id)
            .collect()
    }

    /// The ID of a group of the tenant, by name.
    async fn group_id(&self, tenant_id: &str, name: &str) -> String {
        self.svc
            .store()
            .connector_group_by_name(tenant_id, name)
            .await
            .unwrap()
            .id
    }

    /// Makes `example.com` a pass-through domain of acme and writes the agents'
    /// account file (Carol).
    async fn passthrough(&self) -> std::path::PathBuf {
        let (store, id) = (self.svc.store(), &self.t.tenant.id);
        store
            .add_domain(id, "example.com", "tok", self.svc.now())
            .await
            .unwrap();
        store.verify_domain(id, "example.com").await.unwrap();
        store
            .set_domain_auth_mode(id, "example.com", DomainAuthMode::Passthrough)
            .await
            .unwrap();
        let hash = hash_password(&SecretString::from(CAROL_PASSWORD)).unwrap();
        let accounts = self.dir.path().join("accounts");
        std::fs::write(&accounts, format!("{CAROL}:{hash}:Carol\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
        accounts
    }

    /// Registers an agent of `tenant` and runs it in this process until it is
    /// attached to its tenant's queue.
    async fn agent(&self, tenant: &Tenant, admin: &User, name: &str, accounts: &std::path::Path) -> RunningAgent {
        let (state, id) = self.register(tenant, admin, ComponentKind::Agent, name, None).await;
        let directory: Arc<dyn Directory> = Arc::new(LocalFileDirectory::load(accounts).unwrap());
        let agent = Agent::new(state, self.svc.shared_clock(), directory)
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
            status,
            stats,
            task,
            _stop: stop,
        }
    }

    /// A pass-through sign-in of Carol at acme.
    async fn sign_in(&self) -> PasswordVerdict {
        self.svc
            .sts()
            .check_password(
                &self.t.tenant,
                CAROL,
                &SecretString::from(CAROL_PASSWORD),
                ClientIp("192.0.2.10".parse().unwrap()),
            )
            .await
            .unwrap()
    }
}

/// No request reached `backend` later than a second after `deleted`.
fn assert_cut_off(backend: &CountingBackend, deleted: Instant, what: &str) {
    assert_eq!(
        backend.arrived_after(deleted + AT_ONCE),
        0,
        "requests reached the backend through {what} more than a second after it was revoked"
    );
}

/// The group's only connector is deleted while users' requests flow through it:
/// within a second its tunnels are closed, nothing more reaches the backend
/// through it, and users get 503.
#[tokio::test]
async fn deleting_a_connector_closes_its_tunnels_at_once() {
    let b = Bench::start().await;
    let (acme, admin) = (&b.t.tenant, &b.t.admin);
    b.publish(&b.token, "wiki.acme.test", None).await;
    let gw = b.connector(acme, admin, "gw-1", None).await;
    let group = b.group_id(&acme.id, "Default").await;
    let traffic = Traffic::start(&b.client("wiki.acme.test"), &b.app_url("wiki.acme.test"), 4);
    let started = Instant::now();
    within(started + Duration::from_secs(10), "traffic flows", || {
        gw.backend.arrived_after(started) >= 20
    })
    .await;

    let (status, body) = b.api(Method::DELETE, &format!("/connectors/{}", gw.id), None).await;
    assert_eq!(status, 204, "{body}");
    let deleted = Instant::now();
    within(deleted + AT_ONCE, "the connector's tunnels are closed", || {
        b.tunnels_of(&acme.id, &group, &gw.id).is_empty() && gw.tunnels_up() == 0
    })
    .await;
    postern_testkit::quiet_for(AT_ONCE + Duration::from_millis(500)).await; // no request may pass in this window
    let sent = traffic.stop().await;

    assert_cut_off(&gw.backend, deleted, "the deleted connector");
    assert!(
        sent.iter().any(|s| s.status == 200 && s.answered < deleted),
        "requests flowed before"
    );
    let late: Vec<&Sent> = sent.iter().filter(|s| s.at > deleted + AT_ONCE).collect();
    assert!(!late.is_empty(), "requests kept coming after the delete");
    assert!(
        late.iter().all(|s| s.status == 503),
        "the group has no connector left: {:?}",
        late.iter().map(|s| s.status).collect::<Vec<_>>()
    );
}

/// One of two connectors of the group is deleted: requests go on through the
/// other one, and none reaches a backend through the deleted one more than a
/// second later.
#[tokio::test]
async fn the_other_connector_of_the_group_takes_over_at_once() {
    let b = Bench::start().await;
    let (acme, admin) = (&b.t.tenant, &b.t.admin);
    b.publish(&b.token, "wiki.acme.test", None).await;
    let gone = b.connector(acme, admin, "gw-gone", None).await;
    let stays = b.connector(acme, admin, "gw-stays", None).await;
    let group = b.group_id(&acme.id, "Default").await;
    let traffic = Traffic::start(&b.client("wiki.acme.test"), &b.app_url("wiki.acme.test"), 4);
    let started = Instant::now();
    within(started + Duration::from_secs(10), "both connectors serve", || {
        gone.backend.arrived_after(started) >= 10 && stays.backend.arrived_after(started) >= 10
    })
    .await;

    let (status, body) = b.api(Method::DELETE, &format!("/connectors/{}", gone.id), None).await;
    assert_eq!(status, 204, "{body}");
    let deleted = Instant::now();
    within(deleted + AT_ONCE, "the deleted connector's tunnels are closed", || {
        b.tunnels_of(&acme.id, &group, &gone.id).is_empty()
    })
    .await;
    postern_testkit::quiet_for(AT_ONCE + Duration::from_millis(500)).await; // no request may pass in this window
    let sent = traffic.stop().await;

    assert_cut_off(&gone.backend, deleted, "the deleted connector");
    assert!(
        stays.backend.arrived_after(deleted + AT_ONCE) > 0,
        "the other connector serves on"
    );
    assert_eq!(b.tunnels_of(&acme.id, &group, &stays.id).len(), 2, "untouched");
    let late: Vec<u16> = sent
        .iter()
        .filter(|s| s.at > deleted + AT_ONCE)
        .map(|s| s.status)
        .collect();
    assert!(!late.is_empty() && late.iter().all(|s| *s == 200), "{late:?}");
}

/// A connector moved to another group no longer serves the old group's apps:
/// its tunnels for the old group close at once (the group's other connector
/// serves on) and it attaches to the new group.
#[tokio::test]
async fn moving_a_connector_cuts_its_tunnels_for_the_old_group() {
    let b = Bench::start().await;
    let (acme, admin) = (&b.t.tenant, &b.t.admin);
    b.publish(&b.token, "wiki.acme.test", None).await;
    let (status, body) = b
        .api(Method::POST, "/connector-groups", Some(json!({"name": "eu"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let moved = b.connector(acme, admin, "gw-moved", None).await;
    let stays = b.connector(acme, admin, "gw-stays", None).await;
    let (default, eu) = (b.group_id(&acme.id, "Default").await, b.group_id(&acme.id, "eu").await);
    let traffic = Traffic::start(&b.client("wiki.acme.test"), &b.app_url("wiki.acme.test"), 4);
    let started = Instant::now();
    within(started + Duration::from_secs(10), "both connectors serve", || {
        moved.backend.arrived_after(started) >= 10 && stays.backend.arrived_after(started) >= 10
    })
    .await;

    let (status, body) = b
        .api(
            Method::PUT,
            &format!("/connectors/{}/group", moved.id),
            Some(json!({"group": "eu"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let moved_at = Instant::now();
    within(moved_at + AT_ONCE, "the tunnels for the old group are closed", || {
        b.tunnels_of(&acme.id, &default, &moved.id).is_empty()
    })
    .await;
    postern_testkit::quiet_for(AT_ONCE + Duration::from_millis(500)).await; // no request may pass in this window
    let sent = traffic.stop().await;

    assert_cut_off(&moved.backend, moved_at, "the moved connector");
    let late: Vec<u16> = sent
        .iter()
        .filter(|s| s.at > moved_at + AT_ONCE)
        .map(|s| s.status)
        .collect();
    assert!(!late.is_empty() && late.iter().all(|s| *s == 200), "{late:?}");
    // It dials again, and now serves its new group.
    b.wait_for_tunnels(&acme.id, &eu, &moved.id).await;
    assert!(b.tunnels_of(&acme.id, &default, &moved.id).is_empty());

    // Deleting a group that still has a connector is refused; its tunnels stay.
    let before = b.tunnels_of(&acme.id, &eu, &moved.id);
    let (status, _) = b.api(Method::DELETE, &format!("/connector-groups/{eu}"), None).await;
    assert_eq!(status, 409);
    assert_eq!(b.tunnels_of(&acme.id, &eu, &moved.id), before);
}

/// An agent deleted while attached: within a second its queue stream ends (the
/// relay and the agent both see it), and sign-ins after the delete are never
/// offered to it; the agent then learns it must be registered again.
#[tokio::test]
async fn deleting_an_agent_ends_its_queue_stream_at_once() {
    let b = Bench::start().await;
    let (acme, admin) = (&b.t.tenant, &b.t.admin);
    let accounts = b.passthrough().await;
    let mut doomed = b.agent(acme, admin, "agent-doomed", &accounts).await;
    let other = b.agent(acme, admin, "agent-other", &accounts).await;
    let relay = b.svc.control().relay().clone();
    assert_eq!(relay.connected_agents(&acme.id), 2);
    for _ in 0..4 {
        assert!(matches!(b.sign_in().await, PasswordVerdict::Valid(_)));
    }

    let (status, body) = b.api(Method::DELETE, &format!("/agents/{}", doomed.id), None).await;
    assert_eq!(status, 204, "{body}");
    let deleted = Instant::now();
    let received = doomed.stats.snapshot().received;
    within(deleted + AT_ONCE, "the relay detached the agent", || {
        relay.connected_agents(&acme.id) == 1
    })
    .await;
    within(deleted + AT_ONCE, "the agent saw its queue stream end", || {
        doomed.status.borrow_and_update().phase != Phase::Connected
    })
    .await;
    assert_eq!(relay.stats().agents_closed, 1);

    let answered_before = other.stats.snapshot().validated_total();
    for _ in 0..6 {
        assert!(matches!(b.sign_in().await, PasswordVerdict::Valid(_)));
    }
    assert_eq!(
        doomed.stats.snapshot().received,
        received,
        "a sign-in was offered to a removed agent"
    );
    assert_eq!(other.stats.snapshot().validated_total(), answered_before + 6);
    let ended = tokio::time::timeout(Duration::from_secs(20), &mut doomed.task)
        .await
        .expect("the removed agent stops")
        .unwrap();
    assert!(ended.unwrap_err().needs_registration());
}

/// Deleting a tenant closes everything of it at once, tunnels and queue
/// streams, and nothing of the other tenant: its connector keeps the very same
/// tunnels, its agent stays attached and its users' requests never fail.
#[tokio::test]
async fn deleting_a_tenant_closes_its_tunnels_and_queue_streams_at_once() {
    let b = Bench::start().await;
    let (acme, admin) = (&b.t.tenant, &b.t.admin);
    let accounts = b.passthrough().await;
    let (beta, beta_admin, beta_token) = b.beta().await;
    b.publish(&b.token, "wiki.acme.test", None).await;
    b.publish(&beta_token, "wiki.beta.test", None).await;
    let acme_gw = b.connector(acme, admin, "acme-gw", None).await;
    let beta_gw = b.connector(&beta, &beta_admin, "beta-gw", None).await;
    let _acme_agent = b.agent(acme, admin, "acme-agent", &accounts).await;
    let mut beta_agent = b.agent(&beta, &beta_admin, "beta-agent", &accounts).await;
    let relay = b.svc.control().relay().clone();
    let (acme_group, beta_group) = (
        b.group_id(&acme.id, "Default").await,
        b.group_id(&beta.id, "Default").await,
    );
    let acme_tunnels = b.tunnels_of(&acme.id, &acme_group, &acme_gw.id);
    let acme_traffic = Traffic::start(&b.client("wiki.acme.test"), &b.app_url("wiki.acme.test"), 2);
    let beta_traffic = Traffic::start(&b.client("wiki.beta.test"), &b.app_url("wiki.beta.test"), 2);
    let started = Instant::now();
    within(started + Duration::from_secs(10), "both tenants' apps serve", || {
        acme_gw.backend.arrived_after(started) >= 10 && beta_gw.backend.arrived_after(started) >= 10
    })
    .await;

    let (status, body) = b.api(Method::DELETE, "/tenants/beta", None).await;
    assert_eq!(status, 204, "{body}");
    let deleted = Instant::now();
    within(
        deleted + AT_ONCE,
        "tenant B's tunnels and queue stream are closed",
        || {
            b.tunnels_of(&beta.id, &beta_group, &beta_gw.id).is_empty()
                && beta_gw.tunnels_up() == 0
                && relay.connected_agents(&beta.id) == 0
        },
    )
    .await;
    within(deleted + AT_ONCE, "tenant B's agent saw its stream end", || {
        beta_agent.status.borrow_and_update().phase != Phase::Connected
    })
    .await;
    postern_testkit::quiet_for(AT_ONCE + Duration::from_millis(500)).await; // no request may pass in this window
    let acme_sent = acme_traffic.stop().await;
    let _ = beta_traffic.stop().await;

    // (Its apps went with it, so nothing was routed to its backend anyway.)
    assert_cut_off(&beta_gw.backend, deleted, "the deleted tenant's connector");
    // Tenant A: not touched at all.
    assert_eq!(b.tunnels_of(&acme.id, &acme_group, &acme_gw.id), acme_tunnels);
    assert_eq!(relay.connected_agents(&acme.id), 1);
    assert!(acme_gw.backend.arrived_after(deleted + AT_ONCE) > 0);
    let failed: Vec<&Sent> = acme_sent.iter().filter(|s| s.status != 200).collect();
    assert!(failed.is_empty(), "tenant A's requests failed: {failed:?}");
    assert!(matches!(b.sign_in().await, PasswordVerdict::Valid(_)));
}

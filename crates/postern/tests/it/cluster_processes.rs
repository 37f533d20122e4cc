//! Issue 10, "done means": three `postern serve` processes on one PostgreSQL
//! database and NATS JetStream behind a load balancer, two connectors and two
//! agents; app requests and pass-through sign-ins go round-robin to all
//! three; then one instance is killed (SIGKILL) under load, NATS is restarted,
//! and PostgreSQL is cut off for a while.
//!
//! Real parts: the `postern` binary three times, a NATS server of this test's
//! own (so restarting it disturbs no other test), the machine's PostgreSQL
//! behind a TCP gate this test can cut (every connection dropped and new ones
//! refused: what the instances see of a database restart, without restarting
//! the server other tests use), a round-robin TCP load balancer for users and
//! one for components (each new connection to the next live instance, as a
//! layer-4 load balancer without stickiness does), connectors and agents of
//! the connector and agent crates in this process, reqwest and the testkit's
//! browser for users.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_agent::{Agent, AgentOptions, Phase};
use postern_connector::{AppTable, BackendOptions, Backends, PoolOptions, TunnelEndpoint, TunnelPool};
use postern_directory::{Directory, LocalFileDirectory, hash_password};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{DomainAuthMode, Store, StoreOptions, Tenant};
use postern_testkit::{Browser, Login, Pkce, TestCluster};
use postern_time::{Clock, SystemClock};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cluster::{Backend, percentile};
use crate::common::{ServeProcess, spawn_serve};

const CAROL: &str = "carol@example.com";
const CAROL_PASSWORD: &str = "Carol-Secret-1";
const REDIRECT: &str = "https://app.acme.test/cb";
/// Every component must be attached again this soon after an instance died.
const REATTACH: Duration = Duration::from_secs(3);

/// A free port on loopback (the same number is then used on 127.0.0.1x).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A layer-4 load balancer: each new connection goes to the next backend that
/// accepts it (round-robin, a refused backend is skipped at once).
struct Balancer {
    addr: SocketAddr,
    /// Connections handed to each backend.
    handed: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Balancer {
    async fn start(addr: SocketAddr, backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let handed: Arc<Vec<AtomicU64>> = Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let counts = handed.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (backends, counts, next) = (backends.clone(), counts.clone(), next.clone());
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..backends.len() {
                        let pick = (first + i) % backends.len();
                        let Ok(Ok(mut upstream)) =
                            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(backends[pick])).await
                        else {
                            continue;
                        };
                        let _ = upstream.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        counts[pick].fetch_add(1, Ordering::Relaxed);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                });
            }
        });
        Balancer { addr, handed, task }
    }

    fn handed(&self) -> Vec<u64> {
        self.handed.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

/// The machine's PostgreSQL behind a gate that can drop every connection and
/// refuse new ones for a while.
struct DatabaseGate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DatabaseGate {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl DatabaseGate {
    async fn start(upstream: String) -> DatabaseGate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (is_open, held) = (open.clone(), links.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !is_open.load(Ordering::SeqCst) {
                    continue;
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream.as_str()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                held.lock().unwrap().push(link.abort_handle());
            }
        });
        DatabaseGate {
            addr,
            open,
            links,
            task,
        }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A NATS server with JetStream of this test's own.
struct Nats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Nats {
    async fn start() -> Nats {
        let mut nats = Nats {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        nats.run().await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nats-server is installed (scripts/test installs it)");
        let child = std::process::Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "NATS did not start");
            postern_testkit::poll_pause(Duration::from_millis(20)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `postern serve` process and where it listens.
struct Instance {
    process: Option<ServeProcess>,
    ip: String,
    log: PathBuf,
}

impl Instance {
    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- {} log ---\n{}",
                self.ip,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}

/// Ports shared by the instances (each on its own loopback address).
#[derive(Clone, Copy)]
struct Ports {
    public: u16,
    control: u16,
    peer: u16,
}

async fn spawn_instance(
    n: usize,
    ports: Ports,
    cluster: &TestCluster,
    database_url: &str,
    nats: &str,
    dir: &Path,
) -> Instance {
    let ip = format!("127.0.0.{}", 10 + n);
    let log = dir.join(format!("serve-{n}.log"));
    let data = dir.join(format!("data-{n}"));
    let process = spawn_serve(
        |c| {
            c.env("RUST_LOG", "info")
                .env("POSTERN_DATA_DIR", &data)
                .env("POSTERN_LISTEN", format!("{ip}:{}", ports.public))
                .env("POSTERN_PUBLIC_URL", format!("http://127.0.0.1:{}", ports.public))
                .env("POSTERN_DATABASE_URL", database_url)
                .env("POSTERN_KEK", cluster.kek().expose())
                .env("POSTERN_CONTROL__LISTEN", format!("{ip}:{}", ports.control))
                .env("POSTERN_CONTROL__URL", format!("https://127.0.0.1:{}", ports.control))
                .env("POSTERN_CLUSTER__NATS_URL", nats)
                .env("POSTERN_CLUSTER__PREFIX", cluster.prefix())
                .env("POSTERN_CLUSTER__PEER_LISTEN", format!("{ip}:{}", ports.peer))
                // Every user comes through the balancer from 127.0.0.1.
                .env("POSTERN_LIMITS__CLIENT_REQUESTS_PER_SEC", "0")
                .env("POSTERN_LIMITS__APP_REQUESTS_PER_SEC", "0")
                .env("POSTERN_LIMITS__TENANT_REQUESTS_PER_SEC", "0")
                .env("POSTERN_LIMITS__CONNECTIONS_PER_CLIENT", "0")
                .env("POSTERN_LIMITS__TENANT_PENDING_SIGNINS", "0");
        },
        &log,
    )
    .await;
    Instance {
        process: Some(process),
        ip,
        log,
    }
}

/// One request or sign-in: when it started and ended, and whether it worked.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    at: Instant,
    took: Duration,
    ok: bool,
}

/// Loops sending work until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    loops: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start<F, Fut>(loops: usize, one: F) -> Load
    where
        F: Fn() -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let loops = (0..loops)
            .map(|_| {
                let (stop, one) = (stop.clone(), one.clone());
                tokio::spawn(async move {
                    let mut done = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let at = Instant::now();
                        let ok = one().await;
                        done.push(Outcome {
                            at,
                            took: at.elapsed(),
                            ok,
                        });
                    }
                    done
                })
            })
            .collect();
        Load { stop, loops }
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for l in self.loops {
            all.extend(l.await.unwrap());
        }
        all.sort_by_key(|o| o.at);
        all
    }
}

/// The instances, balancers and components of the test.
struct Rig {
    public: Balancer,
    control: Balancer,
    instances: Mutex<Vec<Instance>>,
    store: Store,
    tenant: Tenant,
    connectors: Vec<TunnelPool>,
    _apps: Vec<watch::Sender<Arc<AppTable>>>,
    agents: Vec<watch::Receiver<postern_agent::AgentStatus>>,
    _agent_stops: Vec<tokio::sync::oneshot::Sender<()>>,
    dir: tempfile::TempDir,
    ports: Ports,
}

impl Rig {
    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.public)
    }

    /// A registration token (`ptr_…`) for one component.
    async fn registration_token(&self, kind: ComponentKind) -> String {
        let token = format!("ptr_{}", postern_keyring::random_token().unwrap().expose());
        let now = SystemClock.now();
        let admin = self
            .store
            .user_by_username(&self.tenant.id, "admin@acme.test")
            .await
            .unwrap();
        self.store
            .create_registration_token(
                &postern_keyring::digest(&token),
                &self.tenant.id,
                kind,
                None,
                &format!("user:{}", admin.id),
                1,
                now,
                now + Duration::from_secs(600),
            )
            .await
            .unwrap();
        token
    }

    async fn enrol(&self, kind: ComponentKind, name: &str) -> StateDir {
        let state = StateDir::new(self.dir.path().join(name));
        let options = RegisterOptions {
            server_url: self.public_url(),
            kind,
            credential: Credential::RegistrationToken(SecretString::from(self.registration_token(kind).await.as_str())),
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
        register(&options, &state).await.unwrap();
        state
    }

    /// A connector (two tunnels, dialled through the components' balancer).
    async fn add_connector(&mut self, name: &str) {
        let state = self.enrol(ComponentKind::Connector, name).await;
        let mut client = ControlClient::load(state, Arc::new(SystemClock)).unwrap();
        let config = client.connector_config("test").await.unwrap();
        let (tables, table) = watch::channel(Arc::new(AppTable::new(&config.apps, Duration::from_secs(10))));
        let pool = TunnelPool::start(
            TunnelEndpoint::from_client(&client),
            table,
            Backends::new(&BackendOptions::default()).unwrap(),
            PoolOptions::default(),
        )
        .unwrap();
        let mut status = pool.status();
        tokio::time::timeout(Duration::from_secs(20), status.wait_for(|s| s.up == 2))
            .await
            .expect("the connector's tunnels come up")
            .unwrap();
        self.connectors.push(pool);
        self._apps.push(tables);
    }

    /// An agent (its queue stream through the components' balancer), with the
    /// default reconnect timing.
    async fn add_agent(&mut self, name: &str, accounts: &Path) {
        let state = self.enrol(ComponentKind::Agent, name).await;
        let directory: Arc<dyn Directory> = Arc::new(LocalFileDirectory::load(accounts).unwrap());
        let agent = Agent::new(state, Arc::new(SystemClock), directory)
            .unwrap()
            .with_options(AgentOptions::default());
        let mut status = agent.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s| s.phase == Phase::Connected),
        )
        .await
        .expect("the agent attaches")
        .unwrap();
        self.agents.push(status);
        self._agent_stops.push(stop);
    }

    /// Whether every connector has both tunnels and every agent its stream.
    fn all_attached(&self) -> bool {
        self.connectors.iter().all(|c| c.status().borrow().up == 2)
            && self.agents.iter().all(|a| a.borrow().phase == Phase::Connected)
    }

    /// Connections the components' balancer has handed to each instance.
    fn component_connections(&self) -> Vec<u64> {
        self.control.handed()
    }
}

/// `GET http://wiki.acme.test:{port}/` through the users' balancer, on a new
/// connection each time (so each request goes to the next instance).
/// A client reaching the wiki through the rig's balancer (a new connection per
/// request, so the balancer spreads them), and the wiki's URL.
fn wiki_client(rig: &Rig) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .resolve("wiki.acme.test", rig.public.addr)
        .build()
        .unwrap();
    (client, format!("http://wiki.acme.test:{}/", rig.ports.public))
}

async fn app_request(client: reqwest::Client, url: String) -> bool {
    match client.get(&url).send().await {
        Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|b| b == "ok"),
        _ => false,
    }
}

/// A pass-through sign-in of Carol through the pages, to a code.
async fn sign_in(public: String) -> bool {
    let pkce = Pkce::new();
    let start = format!(
        "{public}/t/acme/authorize?response_type=code&client_id=app&redirect_uri={}&scope=openid&state=s&nonce=n&code_challenge={}&code_challenge_method=S256",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        pkce.challenge
    );
    let login = Login {
        username: CAROL.into(),
        password: CAROL_PASSWORD.into(),
        totp_secret: None,
        now: SystemClock.now(),
        recovery_code: None,
    };
    match Browser::new().sign_in(&start, &login).await {
        Ok(page) => page.status.is_redirection() && page.location().is_some_and(|l| l.contains("code=")),
        Err(_) => false,
    }
}

/// What a phase of the test saw.
struct Seen {
    apps: Vec<Outcome>,
    sign_ins: Vec<Outcome>,
}

impl Seen {
    fn failed_apps(&self) -> Vec<Outcome> {
        self.apps.iter().filter(|o| !o.ok).copied().collect()
    }
    fn failed_sign_ins(&self) -> Vec<Outcome> {
        self.sign_ins.iter().filter(|o| !o.ok).copied().collect()
    }
    fn summary(&self, what: &str, seconds: f64) -> String {
        let mut took: Vec<Duration> = self.apps.iter().filter(|o| o.ok).map(|o| o.took).collect();
        took.sort();
        format!(
            "{what}: {} app requests ({:.0}/s, p99 {:?}, {} failed), {} sign-ins ({} failed)",
            self.apps.len(),
            self.apps.len() as f64 / seconds,
            if took.is_empty() {
                Duration::ZERO
            } else {
                percentile(&took, 0.99)
            },
            self.failed_apps().len(),
            self.sign_ins.len(),
            self.failed_sign_ins().len()
        )
    }
}

/// When an event began and ended (a kill ends once the process is reaped).
#[derive(Clone, Copy)]
struct Event {
    began: Instant,
    ended: Instant,
}

/// Runs app requests and sign-ins for `seconds`, doing `during` after `after`.
async fn under_load<F, Fut>(rig: &Rig, seconds: u64, after: Duration, during: F) -> (Seen, Event)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client, url) = wiki_client(rig);
    let apps = Load::start(APP_REQUESTS_AT_ONCE, move || app_request(client.clone(), url.clone()));
    let public = rig.public_url();
    let sign_ins = Load::start(2, move || sign_in(public.clone()));
    let started = Instant::now();
    postern_testkit::hold_for(after).await; // load alone before the fault
    let began = Instant::now();
    during().await;
    let ended = Instant::now();
    tokio::time::sleep_until((started + Duration::from_secs(seconds)).into()).await;
    let seen = Seen {
        apps: apps.stop().await,
        sign_ins: sign_ins.stop().await,
    };
    (seen, Event { began, ended })
}

async fn build_rig(cluster: &TestCluster, nats: &Nats, gate: &DatabaseGate) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports {
        public: free_port(),
        control: free_port(),
        peer: free_port(),
    };
    let database_url = cluster.database_url().replace("127.0.0.1:5432", &gate.addr.to_string());
    let public = Balancer::start(
        SocketAddr::from(([127, 0, 0, 1], ports.public)),
        (1..=3)
            .map(|n| format!("127.0.0.{}:{}", 10 + n, ports.public).parse().unwrap())
            .collect(),
    )
    .await;
    let control = Balancer::start(
        SocketAddr::from(([127, 0, 0, 1], ports.control)),
        (1..=3)
            .map(|n| format!("127.0.0.{}:{}", 10 + n, ports.control).parse().unwrap())
            .collect(),
    )
    .await;
    let mut instances = Vec::new();
    let mut setup_url = None;
    for n in 1..=3 {
        let instance = spawn_instance(n, ports, cluster, &database_url, &nats.url(), dir.path()).await;
        if setup_url.is_none() {
            setup_url = instance.process.as_ref().and_then(|p| p.setup_url.clone());
        }
        instances.push(instance);
    }
    let setup_url = setup_url.expect("the first instance printed the setup link");
    postern_testkit::setup_through_web(&setup_url, SystemClock.now())
        .await
        .unwrap();
    let store = Store::connect(&StoreOptions::new(cluster.database_url()))
        .await
        .unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap();
    Rig {
        public,
        control,
        instances: Mutex::new(instances),
        store,
        tenant,
        connectors: Vec::new(),
        _apps: Vec::new(),
        agents: Vec::new(),
        _agent_stops: Vec::new(),
        dir,
        ports,
    }
}

/// The tenant's app, pass-through domain, accounts file and OAuth client.
async fn configure(rig: &Rig, cluster: &TestCluster, backend: &Backend) -> PathBuf {
    let keyring = postern_keyring::Keyring::from_text(cluster.kek().expose()).unwrap();
    let sts = postern_sts::Sts::new(
        rig.store.clone(),
        Arc::new(keyring),
        Arc::new(SystemClock),
        postern_sts::StsConfig::new(rig.public_url().parse().unwrap()),
    )
    .await
    .unwrap();
    let admin = rig
        .store
        .user_by_username(&rig.tenant.id, "admin@acme.test")
        .await
        .unwrap();
    let token = sts
        .mint_access_token_for_tests(&rig.tenant, &admin, "openid postern:admin")
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .request(Method::POST, format!("{}/api/v1/apps", rig.public_url()))
        .bearer_auth(&token)
        .json(&json!({
            "name": "wiki",
            "external_url": format!("http://wiki.acme.test:{}/", rig.ports.public),
            "internal_url": format!("http://{}/", backend.addr),
            "preauth": "passthrough",
        }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{body}");
    let (store, id) = (&rig.store, &rig.tenant.id);
    store
        .add_domain(id, "example.com", "tok", SystemClock.now())
        .await
        .unwrap();
    store.verify_domain(id, "example.com").await.unwrap();
    store
        .set_domain_auth_mode(id, "example.com", DomainAuthMode::Passthrough)
        .await
        .unwrap();
    store
        .create_client(
            id,
            &postern_store::NewOAuthClient {
                client_id: "app".into(),
                name: "Test app".into(),
                secret_digest: Some(postern_keyring::digest("app-secret")),
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![],
                grant_types: vec!["authorization_code".into()],
                scopes: vec![],
                builtin: false,
            },
            SystemClock.now(),
        )
        .await
        .unwrap();
    let hash = hash_password(&SecretString::from(CAROL_PASSWORD)).unwrap();
    let accounts = rig.dir.path().join("accounts");
    std::fs::write(&accounts, format!("{CAROL}:{hash}:Carol\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
    accounts
}

/// Watches the components from now on: resolves to the last moment they all
/// became attached again after some were not (`None`: none ever dropped).
fn watch_attachments(rig: &Rig, for_how_long: Duration) -> tokio::task::JoinHandle<Option<Instant>> {
    let connectors: Vec<_> = rig.connectors.iter().map(TunnelPool::status).collect();
    let agents = rig.agents.clone();
    tokio::spawn(async move {
        let until = Instant::now() + for_how_long;
        let mut all_back = None;
        let mut was_whole = true;
        while Instant::now() < until {
            let whole = connectors.iter().all(|c| c.borrow().up == 2)
                && agents.iter().all(|a| a.borrow().phase == Phase::Connected);
            if whole && !was_whole {
                all_back = Some(Instant::now());
            }
            was_whole = whole;
            postern_testkit::poll_pause(Duration::from_millis(5)).await; // sampling
        }
        assert!(was_whole, "components not attached again at the end");
        all_back
    })
}

/// How long after a process is reaped its peers' sockets may still take a
/// write before the kernel's reset reaches them.
const RESET_SLACK: Duration = Duration::from_millis(50);

/// App requests the load keeps in flight at once.
const APP_REQUESTS_AT_ONCE: usize = 4;

/// Requests that failed must have been in flight on the killed instance: begun
/// before it was gone, answered after it began dying; so no more than the load
/// keeps in flight at once. (Not a share of all requests: how many those are
/// depends on the machine's speed, how many were in flight does not.)
fn assert_only_in_flight_failed(seen: &Seen, event: Event, what: &str) {
    let failed = seen.failed_apps();
    for f in &failed {
        assert!(
            f.at <= event.ended + RESET_SLACK && f.at + f.took >= event.began,
            "{what}: an app request begun {:?} after the instance was gone failed",
            f.at.saturating_duration_since(event.ended)
        );
    }
    assert!(
        failed.len() <= APP_REQUESTS_AT_ONCE,
        "{what}: {} of {} app requests failed (at most the {APP_REQUESTS_AT_ONCE} in flight allowed)",
        failed.len(),
        seen.apps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_survive_a_killed_instance_and_nats_and_postgres_outages() {
    let cluster = TestCluster::new().await.unwrap();
    let mut nats = Nats::start().await;
    let gate = DatabaseGate::start("127.0.0.1:5432".into()).await;
    let backend = Backend::start().await;
    let mut rig = build_rig(&cluster, &nats, &gate).await;
    let accounts = configure(&rig, &cluster, &backend).await;
    for name in ["gw-1", "gw-2"] {
        rig.add_connector(name).await;
    }
    for name in ["pta-1", "pta-2"] {
        rig.add_agent(name, &accounts).await;
    }
    // Routing and sign-ins settle (each instance learns the others' tunnels):
    // a run of answers through the round-robin balancer, so every instance
    // both serves the app and signs in.
    let (client, url) = wiki_client(&rig);
    let (client, url, public) = (&client, &url, &rig.public_url());
    postern_testkit::eventually_async(
        "every instance serves the app and signs users in",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async move {
            for _ in 0..6 {
                if !app_request(client.clone(), url.clone()).await {
                    return None;
                }
            }
            for _ in 0..3 {
                if !sign_in(public.clone()).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    // 1. All three up: everything succeeds, and every instance serves users.
    let before = rig.public.handed();
    let (steady, _) = under_load(&rig, 4, Duration::ZERO, || async {}).await;
    eprintln!("{}", steady.summary("three instances", 4.0));
    assert!(steady.failed_apps().is_empty() && steady.failed_sign_ins().is_empty());
    let served: Vec<u64> = rig.public.handed().iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(served.iter().all(|n| *n > 10), "round-robin to all three: {served:?}");
    eprintln!("components' connections by instance: {:?}", rig.component_connections());
    assert!(
        rig.component_connections()[1] > 0,
        "some component is attached to the instance about to be killed"
    );

    // 2. Instance 2 killed under load.
    let attachments = watch_attachments(&rig, Duration::from_secs(8));
    let (killed, when) = under_load(&rig, 8, Duration::from_secs(2), || {
        rig.instances.lock().unwrap()[1].kill();
        std::future::ready(())
    })
    .await;
    eprintln!("{}", killed.summary("instance 2 killed", 8.0));
    assert_only_in_flight_failed(&killed, when, "kill");
    for f in killed.failed_sign_ins() {
        assert!(
            f.at <= when.ended + RESET_SLACK,
            "a sign-in begun after the kill failed"
        );
    }
    let back = attachments.await.unwrap();
    let took = back.map_or(Duration::ZERO, |t| t.saturating_duration_since(when.began));
    eprintln!(
        "every component attached again {took:?} after the kill (components' connections by instance: {:?})",
        rig.component_connections()
    );
    assert!(back.is_some(), "some component lost its link to the killed instance");
    assert!(took <= REATTACH, "re-attached after {took:?}");

    // 3. NATS restarted (its JetStream store kept) under load.
    let (restarted, when) = under_load(&rig, 10, Duration::from_secs(2), || async {
        nats.stop();
        postern_testkit::hold_for(Duration::from_millis(500)).await; // NATS down: the fault
        nats.run().await;
    })
    .await;
    eprintln!("{}", restarted.summary("NATS restarted", 10.0));
    assert!(
        restarted.failed_apps().len() * 1000 < restarted.apps.len(),
        "NATS restart: {} of {} app requests failed",
        restarted.failed_apps().len(),
        restarted.apps.len()
    );
    let back = when.ended;
    for f in restarted.failed_sign_ins() {
        assert!(
            f.at < back + Duration::from_secs(3),
            "a sign-in begun {:?} after NATS was back failed",
            f.at.saturating_duration_since(back)
        );
    }
    assert!(
        restarted
            .sign_ins
            .iter()
            .any(|o| o.ok && o.at > back + Duration::from_secs(3)),
        "sign-ins work again after NATS is back"
    );

    // 4. PostgreSQL unreachable for two seconds under load: what needs the
    // database fails meanwhile (sign-ins are refused; app requests once the
    // front door's cached lookups expire); everything begun once it is back
    // succeeds, without a restart, and no component lost its link.
    let attachments = watch_attachments(&rig, Duration::from_secs(10));
    let (cut, when) = under_load(&rig, 10, Duration::from_secs(2), || async {
        gate.cut();
        postern_testkit::hold_for(Duration::from_secs(2)).await; // the database cut: the fault
        gate.reopen();
    })
    .await;
    eprintln!("{}", cut.summary("PostgreSQL cut off for 2 s", 10.0));
    let recovered = when.ended + Duration::from_millis(500);
    for f in cut.failed_apps() {
        assert!(
            f.at < recovered,
            "an app request begun {:?} after the database was back failed",
            f.at.saturating_duration_since(when.ended)
        );
    }
    for f in cut.failed_sign_ins() {
        assert!(
            f.at < recovered + Duration::from_secs(1),
            "a sign-in begun {:?} after the database was back failed",
            f.at.saturating_duration_since(when.ended)
        );
    }
    assert!(
        cut.sign_ins
            .iter()
            .any(|o| o.ok && o.at > recovered + Duration::from_secs(1)),
        "sign-ins work again once the database is back"
    );
    assert_eq!(
        attachments.await.unwrap(),
        None,
        "no component lost its link during the outage"
    );
    assert!(rig.all_attached(), "components stay attached through the outages");
    drop(rig);
    cluster.remove_from_nats().await;
}

//! `postern demo`: everything on one host with one command, in this process:
//! the service on the embedded store with a self-signed certificate, a
//! sample internal app, a registered connector, a registered agent on a
//! directory of demo users (a local file, or OpenLDAP with `--ldap`), a
//! pre-authenticated and a passthrough app on `*.localhost` names, and an
//! administrator. It says what it does while it starts, prints the URLs and
//! the accounts, keeps its state in one directory (a second run reuses it)
//! and stops everything on Ctrl-C or SIGTERM.

mod assertion;
mod components;
mod directory;
mod ports;
mod provision;
mod record;
mod sample_app;
mod slapd;
mod summary;
mod totp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use postern_proto::ComponentKind;
use postern_service::RunningService;
use postern_service::config::{Config, TlsSettings};
use postern_time::{Clock, SharedClock, SystemClock};
use postern_uplink::StateDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use provision::{Addresses, DemoApp, PUBLIC, Provisioned, WIKI};
use record::{DemoDir, DemoRecord};
use summary::{done, note, say};

/// The service's HTTPS port unless the last run used another or `--port` says.
const DEFAULT_PORT: u16 = 9443;
/// The control endpoint's port, likewise (`--control-port`).
const DEFAULT_CONTROL_PORT: u16 = 9444;
/// Time in-flight requests get when the demo stops (event streams never end).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Time the connector and agent get to drain when the demo stops.
const COMPONENT_GRACE: Duration = Duration::from_secs(5);
/// Longest wait for the agent and the first tunnel.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `postern demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory for the demo's state (database, keys, accounts, demo.json);
    /// a second run with the same directory reuses everything in it.
    #[arg(long, default_value = "./postern-demo")]
    pub dir: PathBuf,
    /// HTTPS port of the service and the apps (default: the last run's, else
    /// 9443; 0: any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Port of the control endpoint the connector and agent dial (default: the
    /// last run's, else 9444; 0: any free port).
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Check passwords against an OpenLDAP server (slapd, which must be
    /// installed) that the demo starts, instead of a local file.
    #[arg(long)]
    pub ldap: bool,
    /// Print the demo administrator's current TOTP code (from the state
    /// directory) and exit.
    #[arg(long)]
    pub admin_code: bool,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.admin_code {
        return print_admin_code(&args);
    }
    let (stop, stopping) = watch::channel(false);
    listen_for_signals(stop.clone());
    let dir = DemoDir::open(&args.dir)?;
    let _lock = dir.lock()?;
    log_to_file(&dir)?;
    say(&format!("Starting the Postern demo in {}", dir.root().display()));
    let mut demo = tokio::select! {
        started = Demo::start(&dir, &args, &stopping) => started?,
        () = stopped(stopping.clone()) => {
            say("Stopped before the demo was up.");
            return Ok(());
        }
    };
    say(&demo.summary_text);
    let ended = tokio::select! {
        biased;
        () = stopped(stopping.clone()) => None,
        why = demo.components.ended() => Some(why),
    };
    // The connector and agent end when told to stop: that is no failure.
    let ended = ended.filter(|_| !*stopping.borrow());
    let _ = stop.send(true);
    say("\nStopping the demo…");
    demo.stop().await;
    say("Stopped.");
    match ended {
        Some(why) => bail!("{why} (see {})", dir.log_file().display()),
        None => Ok(()),
    }
}

/// Everything the demo runs.
struct Demo {
    service: RunningService,
    components: components::Running,
    directory: directory::DemoDirectory,
    backends: Vec<JoinHandle<()>>,
    summary_text: String,
}

impl Demo {
    /// Starts everything, step by step, saying each.
    async fn start(dir: &DemoDir, args: &DemoArgs, stopping: &watch::Receiver<bool>) -> anyhow::Result<Demo> {
        let mut record = load_or_make_record(dir)?;
        let (service, listeners) = start_service(dir, &record, args).await?;
        let service_url = service_url(&service);
        done(&format!(
            "service at {service_url} (embedded database, self-signed certificate)"
        ));
        let at = listeners.addresses(service.local_addr().port())?;
        let made = provision::provision(service.sts(), &record, at).await?;
        remember(&mut record, &made, &service, at);
        done(&format!(
            "organisation {}: its administrator, users (named ahead of their first sign-in), apps {} and {}",
            made.tenant.name, made.wiki.name, made.public.name
        ));
        let certificate_pem = std::fs::read_to_string(dir.certificate())
            .with_context(|| format!("reading {}", dir.certificate().display()))?;
        let clock: SharedClock = Arc::new(SystemClock);
        let backends = listeners.serve(&made, &service_url, &certificate_pem, &clock)?;
        done(&format!(
            "sample app on {} and {} (loopback: only the connector reaches it)",
            at.wiki_backend, at.public_backend
        ));
        let directory = directory::prepare(dir, &mut record, args.ldap).await?;
        done(&format!("directory: {}", directory.description));
        register_components(dir, &service, &made, &mut record, &certificate_pem).await?;
        record.save(dir)?;
        let components = components::Running::start(
            StateDir::new(dir.connector()),
            StateDir::new(dir.agent()),
            &dir.agent_config(),
            stopping,
        )?;
        let mut demo = Demo {
            service,
            components,
            directory,
            backends,
            summary_text: String::new(),
        };
        demo.wait_until_ready(&record, &certificate_pem).await?;
        demo.summary_text = summary(
            dir,
            &record,
            &service_url,
            &certificate_pem,
            &demo.directory.description,
            &clock,
        )?;
        Ok(demo)
    }

    /// Waits for the agent to read its queue and for the passthrough app to
    /// answer through the connector's tunnel.
    async fn wait_until_ready(&mut self, record: &DemoRecord, certificate_pem: &str) -> anyhow::Result<()> {
        tokio::time::timeout(READY_TIMEOUT, self.components.agent_connected())
            .await
            .context("the agent did not connect in time")??;
        done("agent connected: pass-through sign-ins reach the directory");
        let port = self.service.local_addr().port();
        let public_url = PUBLIC.url(&record.domain, port);
        wait_until_served(&public_url, SocketAddr::from(([127, 0, 0, 1], port)), certificate_pem).await?;
        done("connector tunnel up: the apps answer through it");
        Ok(())
    }

    /// Stops the apps, the connector and agent, the service and the directory.
    async fn stop(self) {
        for backend in &self.backends {
            // Open event streams and WebSockets end with their app.
            backend.abort();
        }
        let service = async {
            if tokio::time::timeout(COMPONENT_GRACE, self.service.shutdown())
                .await
                .is_err()
            {
                tracing::warn!("the service did not stop in time");
            }
        };
        tokio::join!(self.components.stop(COMPONENT_GRACE), service);
        if let Some(slapd) = self.directory.slapd {
            slapd.stop().await;
        }
    }
}

/// The record of the last run, or a new one. A database without a record
/// holds accounts whose passwords nobody knows: refused, not guessed at.
fn load_or_make_record(dir: &DemoDir) -> anyhow::Result<DemoRecord> {
    if let Some(record) = DemoRecord::load(dir)? {
        done("state of the last run found: reusing it");
        return Ok(record);
    }
    if dir.has_database() {
        bail!(
            "{} holds a database but no demo.json (not a demo's state, or a damaged one): remove the directory \
             or give another --dir",
            dir.root().display()
        );
    }
    let record = DemoRecord::generate()?;
    record.save(dir)?;
    done("new demo: accounts and passwords made (demo.json)");
    Ok(record)
}

/// The sample app's two listeners, bound before the service starts so their
/// ports are known when the apps are published.
struct Listeners {
    wiki: tokio::net::TcpListener,
    public: tokio::net::TcpListener,
}

impl Listeners {
    /// Where the apps are, with the service on `public_port`.
    fn addresses(&self, public_port: u16) -> anyhow::Result<Addresses> {
        Ok(Addresses {
            public_port,
            wiki_backend: self.wiki.local_addr()?,
            public_backend: self.public.local_addr()?,
        })
    }

    /// Serves the sample app for each published app.
    fn serve(
        self,
        made: &Provisioned,
        service_url: &str,
        certificate_pem: &str,
        clock: &SharedClock,
    ) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut served = Vec::new();
        for (listener, app, app_id) in [(self.wiki, WIKI, &made.wiki.id), (self.public, PUBLIC, &made.public.id)] {
            let expected = assertion::Expected {
                issuer: format!("{service_url}/t/{}", made.tenant.name),
                audience: postern_sts::relying_party::assertion_audience(app_id),
                tenant_id: made.tenant.id.clone(),
            };
            let verifier = assertion::Verifier::new(expected, certificate_pem, clock.clone())?;
            let sample = sample_app::SampleApp {
                name: app.name,
                preauth: app.preauth == postern_store::Preauth::Sts,
                verifier,
                clock: clock.clone(),
            };
            served.push(sample_app::serve(listener, sample));
        }
        Ok(served)
    }
}

/// The service on the embedded default, at `https://localhost:PORT`, with a
/// self-signed certificate that also names the apps' hosts; and the sample
/// app's listeners. Ports as asked, else as last time if free.
async fn start_service(
    dir: &DemoDir,
    record: &DemoRecord,
    args: &DemoArgs,
) -> anyhow::Result<(RunningService, Listeners)> {
    let ports = &record.ports;
    let public = ports::choose("the service", args.port, ports.public, Some(DEFAULT_PORT))?;
    let control = ports::choose(
        "the control endpoint",
        args.control_port,
        ports.control,
        Some(DEFAULT_CONTROL_PORT),
    )?;
    let (wiki, wiki_note) = ports::listen("wiki's backend", ports.wiki_backend).await?;
    let (public_backend, public_note) = ports::listen("public app's backend", ports.public_backend).await?;
    for n in [public.note, control.note, wiki_note, public_note]
        .into_iter()
        .flatten()
    {
        note(&n);
    }
    let mut config = Config::local(dir.data());
    config.listen = SocketAddr::from(([127, 0, 0, 1], public.port));
    config.public_url = Some(url::Url::parse(&format!("https://localhost:{}", public.port))?);
    config.control.listen = SocketAddr::from(([127, 0, 0, 1], control.port));
    config.limits.shutdown_grace = SHUTDOWN_GRACE;
    config.tls = Some(TlsSettings {
        self_signed: true,
        self_signed_names: [format!("*.{}", record.domain)]
            .into_iter()
            .chain([WIKI, PUBLIC].map(|app| app_host_name(app, &record.domain)))
            .collect(),
        ..TlsSettings::default()
    });
    let mut service = RunningService::start(config, Arc::new(SystemClock))
        .await
        .context("starting the service")?;
    // The demo makes its organisation itself; a first-run link would be of no use.
    let _ = service.take_setup_code();
    Ok((
        service,
        Listeners {
            wiki,
            public: public_backend,
        },
    ))
}

/// Registers the connector and the agent, or reuses their registrations.
async fn register_components(
    dir: &DemoDir,
    service: &RunningService,
    made: &Provisioned,
    record: &mut DemoRecord,
    certificate_pem: &str,
) -> anyhow::Result<()> {
    let control_url = service.control().config().control_url.clone();
    let admin = service
        .store()
        .user_by_username(&made.tenant.id, &record.admin.username)
        .await
        .context("the demo administrator")?;
    let url = service_url(service);
    let registrar = components::Service {
        sts: service.sts(),
        tenant: &made.tenant,
        admin_id: &admin.id,
        url: &url,
        certificate_pem,
        control_url: &control_url,
    };
    for kind in [ComponentKind::Connector, ComponentKind::Agent] {
        let state = StateDir::new(component_dir(dir, kind));
        let registration = components::ensure_registered(&registrar, kind, &state).await?;
        let how = match (registration.new, registration.replaced) {
            (false, _) => "registration reused",
            (true, false) => "registered",
            (true, true) => "registered again (the last run's registration no longer fits this service)",
        };
        let id = registration.enrolment.component_id;
        done(&format!("{kind} {how} ({id})"));
        match kind {
            ComponentKind::Connector => record.created.connector_id = Some(id),
            ComponentKind::Agent => record.created.agent_id = Some(id),
        }
    }
    Ok(())
}

/// `wiki.demo.localhost`, without the port.
fn app_host_name(app: DemoApp, domain: &str) -> String {
    format!("{}.{domain}", app.label)
}

/// The service's URL without the trailing slash.
fn service_url(service: &RunningService) -> String {
    service.public_url().as_str().trim_end_matches('/').to_owned()
}

/// Notes the ports and IDs of this run in the record.
fn remember(record: &mut DemoRecord, made: &Provisioned, service: &RunningService, at: Addresses) {
    record.ports.public = Some(service.local_addr().port());
    record.ports.control = Some(service.control_addr().port());
    record.ports.wiki_backend = Some(at.wiki_backend.port());
    record.ports.public_backend = Some(at.public_backend.port());
    record.created.tenant_id = Some(made.tenant.id.clone());
    record.created.wiki_app_id = Some(made.wiki.id.clone());
    record.created.public_app_id = Some(made.public.id.clone());
}

fn component_dir(dir: &DemoDir, kind: ComponentKind) -> PathBuf {
    match kind {
        ComponentKind::Connector => dir.connector(),
        ComponentKind::Agent => dir.agent(),
    }
}

/// Asks `url` (resolving its host to `addr`, trusting the demo's certificate)
/// until it answers 200: the whole path from the front door through the
/// tunnel to the app works.
async fn wait_until_served(url: &str, addr: SocketAddr, certificate_pem: &str) -> anyhow::Result<()> {
    let host = url::Url::parse(url)?.host_str().unwrap_or_default().to_owned();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(certificate_pem.as_bytes())?])
        .resolve(&host, addr)
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let answer = client.get(url).send().await;
        let last = match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} did not answer through the tunnel within {READY_TIMEOUT:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An error with its causes, `a: b: c` (reqwest's own text names none).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The summary's text.
fn summary(
    dir: &DemoDir,
    record: &DemoRecord,
    service_url: &str,
    certificate_pem: &str,
    directory: &str,
    clock: &SharedClock,
) -> anyhow::Result<String> {
    let port = record.ports.public.unwrap_or(DEFAULT_PORT);
    let admin = &record.admin;
    Ok(summary::Summary {
        record,
        dir: dir.root().display().to_string(),
        service_url: service_url.to_owned(),
        wiki_url: WIKI.url(&record.domain, port),
        public_url: PUBLIC.url(&record.domain, port),
        directory: directory.to_owned(),
        certificate: dir.certificate().display().to_string(),
        fingerprint: fingerprint(certificate_pem)?,
        admin_code: totp::code_at(admin.totp_secret.expose(), &admin.username, clock.now())?,
        otpauth_uri: totp::otpauth_uri(admin.totp_secret.expose(), &admin.username)?,
        log: dir.log_file().display().to_string(),
        wiki_group: provision::WIKI_GROUP,
    }
    .text())
}

/// SHA-256 of the certificate, `AB:CD:…`, as browsers show it.
fn fingerprint(certificate_pem: &str) -> anyhow::Result<String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the self-signed certificate: {e}"))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    Ok(digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// `--admin-code`: the administrator's current code.
fn print_admin_code(args: &DemoArgs) -> anyhow::Result<()> {
    let dir = DemoDir::existing(&args.dir)?;
    let record = DemoRecord::load(&dir)?.context("no demo.json")?;
    let admin = &record.admin;
    let (code, left) = totp::code_at(admin.totp_secret.expose(), &admin.username, SystemClock.now())?;
    say(&format!("{code}  ({} code, good for {left} s more)", admin.username));
    Ok(())
}

/// Sends `true` to `stop` at the first SIGINT or SIGTERM. The handlers are in
/// place when this returns.
fn listen_for_signals(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    let _ = stop.send(true);
                });
                return;
            }
            _ => tracing::warn!("cannot listen for SIGTERM; only Ctrl-C stops the demo"),
        }
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
}

/// Completes once `stop` is true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Logs go to `demo.log` in the state directory (`RUST_LOG` filters, default
/// `info`), keeping the terminal for the steps and the summary.
fn log_to_file(dir: &DemoDir) -> anyhow::Result<()> {
    let path = dir.log_file();
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}

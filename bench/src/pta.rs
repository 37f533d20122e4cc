//! Pass-through authentication, end to end, beside its baselines:
//!
//! 1. raw RSA-2048 OAEP decryptions per second on one core (aws-lc-rs);
//! 2. raw simple binds per second on one LDAP connection to the same directory;
//! 3. the agent's directory back end alone (search + bind, pooled), concurrently;
//! 4. sign-ins per second through the whole path: the STS's password check (smart
//!    lockout, encryption to each agent key, relay), the agent over mTLS
//!    (decrypt, search + bind), the result back, just-in-time account update;
//! 5. sign-ins per second through the pages, as a browser makes them (the app,
//!    authorize, username, password, the callback with its code exchange, the
//!    app again), against real `postern serve`, `agent` and `connector`
//!    processes, with CPU per sign-in and resident memory by process
//!    ([`pages`]).
//!
//! Rows 1–4 run in this process on loopback except the directory (a real
//! `slapd` or Samba AD DC, started by the `postern-directory` harness); row 5
//! runs the release binary.

pub(crate) mod installation;
pub(crate) mod pages;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey};
use postern_agent::{Agent, Phase};
use postern_directory::testing::{SAMBA_PASSWORD, SLAPD_BASE_DN, SLAPD_PASSWORD, SambaAd, Slapd};
use postern_directory::{Directory, LdapConfig, LdapDirectory};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::DomainAuthMode;
use postern_sts::{ClientIp, PasswordVerdict};
use postern_testkit::TestService;
use postern_uplink::{Credential, RegisterOptions, StateDir, register};

use crate::procfs::{cpu_seconds, pin, processes_under};
use crate::report::{Measured, drive, ms, write_section};

/// Flags of `postern-bench pta`.
#[derive(clap::Args, Debug)]
pub struct PtaArgs {
    /// `openldap` (a fresh slapd) or `samba` (a Samba AD DC).
    #[arg(long, default_value = "openldap")]
    directory: String,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent sign-ins in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Agents attached to the tenant.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Write the results into this Markdown file's section.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Measure only the end-to-end path (for profiling; writes nothing).
    #[arg(long, conflicts_with = "write")]
    e2e_only: bool,
    /// Measure only the page-level path (for profiling; writes nothing).
    #[arg(long, conflicts_with_all = ["write", "e2e_only"])]
    pages_only: bool,
    /// Browsers signing in at once on the page-level path.
    #[arg(long, default_value_t = 16)]
    page_concurrency: usize,
    /// The `postern` binary for the page-level path (default: beside this
    /// benchmark, i.e. `target/release/postern`).
    #[arg(long)]
    postern: Option<PathBuf>,
    /// Leave the directory unpinned. By default, on two cores or more, the
    /// directory's processes run on the last core and everything else on the
    /// others, so the sign-in rate is Postern's and not the directory's.
    #[arg(long)]
    no_pin: bool,
}

/// The directory under test.
struct Target {
    name: &'static str,
    domain: &'static str,
    usernames: Vec<String>,
    password: &'static str,
    /// DN (or bind name) and password for raw binds.
    bind_as: String,
    url: String,
    config: LdapConfig,
    /// A path on the directory processes' command lines (to find them).
    marker: PathBuf,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn target(kind: &str) -> anyhow::Result<Target> {
    Ok(match kind {
        "openldap" => {
            let slapd = Slapd::start().await?;
            let usernames = add_bench_users(&slapd).await?;
            let config = installation::slapd_agent_config(&slapd, 4);
            Target {
                name: "OpenLDAP (slapd 2.5, mdb, ppolicy)",
                domain: "example.com",
                usernames,
                password: SLAPD_PASSWORD,
                bind_as: "uid=alice,ou=people,dc=example,dc=com".into(),
                url: slapd.url(),
                config,
                marker: slapd.dir().to_path_buf(),
                _keep: Box::new(slapd),
            }
        }
        "samba" => {
            let samba = SambaAd::start().await?;
            let names: Vec<String> = (0..BENCH_USERS).map(|n| format!("bench-{n}")).collect();
            samba.add_users(&names)?;
            let config = samba.config();
            let url = config.urls.first().cloned().unwrap_or_default();
            Target {
                name: "Active Directory (Samba 4.17 AD DC)",
                domain: "example.test",
                usernames: names.iter().map(|n| format!("{n}@example.test")).collect(),
                password: SAMBA_PASSWORD,
                bind_as: "alice@EXAMPLE.TEST".into(),
                url,
                config,
                marker: samba.dir().to_path_buf(),
                _keep: Box::new(samba),
            }
        }
        other => anyhow::bail!("unknown directory {other:?}: openldap or samba"),
    })
}

/// Users the benchmark adds to the directory: as many as sign-ins in flight at most, so
/// that no two at once are for one account (the service checks one password
/// of an account at a time and answers the others `Busy`).
const BENCH_USERS: usize = 64;

/// Adds [`BENCH_USERS`] accounts (`bench-N@example.com`, the test password)
/// to slapd; returns their sign-in names.
async fn add_bench_users(slapd: &Slapd) -> anyhow::Result<Vec<String>> {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&slapd.url()).await?;
    ldap3::drive!(conn);
    let (admin, password) = slapd.admin();
    ldap.simple_bind(admin, password.expose()).await?.success()?;
    let mut names = Vec::with_capacity(BENCH_USERS);
    for n in 0..BENCH_USERS {
        let uid = format!("bench-{n}");
        let mail = format!("{uid}@example.com");
        let dn = format!("uid={uid},ou=people,{SLAPD_BASE_DN}");
        let attrs: Vec<(&str, std::collections::HashSet<&str>)> = vec![
            ("objectClass", ["inetOrgPerson"].into()),
            ("uid", [uid.as_str()].into()),
            ("cn", [uid.as_str()].into()),
            ("sn", [uid.as_str()].into()),
            ("mail", [mail.as_str()].into()),
            ("userPassword", [SLAPD_PASSWORD].into()),
        ];
        ldap.add(&dn, attrs)
            .await?
            .success()
            .with_context(|| format!("adding {dn}"))?;
        names.push(mail);
    }
    let _ = ldap.unbind().await;
    Ok(names)
}

/// Raw RSA OAEP-SHA256 decryptions per second on one core, with a key of
/// `bits`.
fn raw_rsa(bits: u32, seconds: u64) -> anyhow::Result<f64> {
    let key = postern_pki::generate_key(KeyAlg::Rsa(bits))?;
    let private = OaepPrivateDecryptingKey::new(
        PrivateDecryptingKey::from_pkcs8(key.pkcs8_der()).map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = OaepPublicEncryptingKey::new(
        aws_lc_rs::rsa::PublicEncryptingKey::from_der(key.public_spki_der()).map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut ct = vec![0u8; public.ciphertext_size()];
    let ct = public
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            b"a password of usual length",
            &mut ct,
            Some(b"label"),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_vec();
    let mut out = vec![0u8; private.min_output_size()];
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    let t0 = Instant::now();
    while Instant::now() < end {
        private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, Some(b"label"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n += 1;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Raw simple binds per second on one connection.
async fn raw_binds(t: &Target, seconds: u64) -> anyhow::Result<Measured> {
    let (conn, ldap) = ldap3::LdapConnAsync::new(&t.url).await?;
    ldap3::drive!(conn);
    let ldap = Arc::new(tokio::sync::Mutex::new(ldap));
    let (dn, pw) = (t.bind_as.clone(), t.password.to_owned());
    Ok(
        drive(1, Duration::from_secs(1), Duration::from_secs(seconds), move |_| {
            let ldap = ldap.clone();
            let (dn, pw) = (dn.clone(), pw.clone());
            async move {
                let mut l = ldap.lock().await;
                matches!(l.simple_bind(&dn, &pw).await.map(|r| r.success()), Ok(Ok(_)))
            }
        })
        .await,
    )
}

/// The agent's back end alone (search + fresh bind, pooled), concurrently.
async fn back_end(t: &Target, concurrency: usize, seconds: u64) -> anyhow::Result<Measured> {
    let directory: Arc<dyn Directory> = Arc::new(LdapDirectory::new(&t.config)?);
    let users = t.usernames.clone();
    let password = SecretString::from(t.password);
    Ok(drive(
        concurrency,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |i| {
            let directory = directory.clone();
            let user = users[(i as usize) % users.len()].clone();
            let password = password.clone();
            async move {
                matches!(
                    directory.validate(&user, &password).await,
                    postern_directory::Outcome::Success(_)
                )
            }
        },
    )
    .await)
}

/// What the end-to-end row measured.
struct EndToEnd {
    measured: Measured,
    /// CPU seconds of this process (service, agents and the calls that drive
    /// them) over the measured window.
    cpu_seconds: f64,
}

impl EndToEnd {
    /// Postern's CPU per successful sign-in, ms.
    fn cpu_ms_per_sign_in(&self) -> f64 {
        let ok = self.measured.ops.saturating_sub(self.measured.errors).max(1);
        self.cpu_seconds * 1000.0 / ok as f64
    }
}

/// CPU seconds `pid` spends from `after` from now for `window`, read on a task
/// of its own.
fn cpu_over(pid: u32, after: Duration, window: Duration) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let before = cpu_seconds(pid).unwrap_or(0.0);
        tokio::time::sleep(window).await;
        cpu_seconds(pid).unwrap_or(0.0) - before
    })
}

/// Sign-ins through the whole service path.
async fn end_to_end(t: &Target, args: &PtaArgs) -> anyhow::Result<EndToEnd> {
    let svc = TestService::builder().system_clock().start().await?;
    let fixture = svc.bootstrap().await?;
    let tenant = fixture.tenant.clone();
    let store = svc.store();
    let now = svc.now();
    store.add_domain(&tenant.id, t.domain, "bench", now).await?;
    store.verify_domain(&tenant.id, t.domain).await?;
    store
        .set_domain_auth_mode(&tenant.id, t.domain, DomainAuthMode::Passthrough)
        .await?;
    let dir = tempfile::tempdir()?;
    let mut stops = Vec::new();
    for n in 0..args.agents {
        let state = StateDir::new(dir.path().join(format!("agent-{n}")));
        let name = format!("bench-agent-{n}");
        let token = svc
            .registration_token(&tenant, &fixture.admin, ComponentKind::Agent, &name)
            .await?;
        register(
            &RegisterOptions {
                server_url: svc.url(),
                kind: ComponentKind::Agent,
                credential: Credential::AccessToken(SecretString::from(token.as_str())),
                name,
                version: "bench".into(),
                group: None,
                tenant: None,
                key_alg: KeyAlg::Rsa(2048),
                server_ca_pem: None,
            },
            &state,
        )
        .await?;
        let agent = Agent::new(state, svc.shared_clock(), Arc::new(LdapDirectory::new(&t.config)?))?;
        let mut status = agent.status();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        status.wait_for(|s| s.phase == Phase::Connected).await?;
        stops.push(stop);
    }
    let sts = svc.sts().clone();
    let users = t.usernames.clone();
    let password = SecretString::from(t.password);
    let (warmup, window) = (Duration::from_secs(2), Duration::from_secs(args.seconds));
    let cpu = cpu_over(std::process::id(), warmup, window);
    let measured = drive(args.concurrency, warmup, window, move |i| {
        let sts = sts.clone();
        let tenant = tenant.clone();
        let n = (i as usize) % users.len();
        let user = users[n].clone();
        let password = password.clone();
        // Each user from a network of their own (a /24 each), as real users would
        // be: after the first sign-in it is a familiar location.
        let ip = ClientIp(std::net::IpAddr::from([10, (n / 200 % 200) as u8, (n % 200) as u8, 1]));
        async move {
            matches!(
                sts.check_password(&tenant, &user, &password, ip).await,
                Ok(PasswordVerdict::Valid(_))
            )
        }
    })
    .await;
    let cpu_seconds = cpu.await?;
    drop(stops);
    svc.stop().await;
    Ok(EndToEnd { measured, cpu_seconds })
}

/// With two cores or more, and unless `--no-pin`: the directory's processes
/// on the last core, this process (and the processes it starts later) on the
/// others. Returns how, for the report.
fn pin_directory(t: &Target, args: &PtaArgs, cores: usize) -> anyhow::Result<Option<String>> {
    if args.no_pin || cores < 2 {
        return Ok(None);
    }
    let last = cores - 1;
    let directory = processes_under(&t.marker);
    anyhow::ensure!(!directory.is_empty(), "no directory process found to pin");
    for pid in directory {
        pin(pid, &last.to_string())?;
    }
    let rest = if last == 1 {
        "0".to_owned()
    } else {
        format!("0-{}", last - 1)
    };
    pin(std::process::id(), &rest)?;
    Ok(Some(format!(
        "The directory runs pinned to core {last} and everything else (Postern, the load, the backend) to \
         core{} {rest} (`taskset`), so the rates are Postern's on {} core{}, not the directory's.",
        if last == 1 { "" } else { "s" },
        last,
        if last == 1 { "" } else { "s" },
    )))
}

/// Sign-ins through the pages against real processes.
async fn page_level(t: &Target, args: &PtaArgs) -> anyhow::Result<pages::PageRun> {
    let postern = match &args.postern {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("postern"),
    };
    let side = installation::DirectorySide {
        domain: t.domain,
        config: &t.config,
        users: &t.usernames,
    };
    pages::measure(
        &postern,
        &side,
        Some(&t.marker),
        &t.usernames,
        t.password,
        args.page_concurrency,
        args.seconds,
    )
    .await
}

/// The page-level row's own tables: CPU per sign-in and memory by process.
fn page_tables(run: &pages::PageRun) -> String {
    let total: f64 = run.cpu_ms.iter().map(|(_, ms)| ms).sum();
    let cpu: Vec<String> = run
        .cpu_ms
        .iter()
        .map(|(name, ms)| format!("| {name} | {ms:.2} |"))
        .collect();
    let memory: Vec<String> = run
        .memory
        .iter()
        .map(|(name, idle, peak)| format!("| postern {name} | {idle:.1} | {peak:.1} |"))
        .collect();
    [
        "CPU per sign-in through the pages, by process (ms; `utime + stime` from \
         `/proc/<pid>/stat` over the measured window, divided by the sign-ins in it):"
            .to_owned(),
        String::new(),
        "| process | CPU ms per sign-in |".to_owned(),
        "|---|---|".to_owned(),
        cpu.join("\n"),
        format!("| **all** | **{total:.2}** |"),
        String::new(),
        "Resident memory of the processes (MiB; idle after the first sign-in, and their \
         peak, VmHWM, after the run):"
            .to_owned(),
        String::new(),
        "| process | idle RSS | peak RSS |".to_owned(),
        "|---|---|---|".to_owned(),
        memory.join("\n"),
        String::new(),
    ]
    .join("\n")
}

/// Prints the page-level figures alone (`--pages-only`).
#[allow(clippy::print_stdout)] // The figures on standard output are the benchmark's result.
fn print_pages(run: &pages::PageRun) {
    let m = &run.measured;
    println!(
        "through the pages: {:.0}/s, p50 {} ms, p99 {} ms, {} errors\n\n{}",
        m.rate(),
        ms(m.quantile(0.5)),
        ms(m.quantile(0.99)),
        m.errors,
        page_tables(run)
    );
}

/// Runs the benchmark and prints (and optionally writes) the table.
#[allow(clippy::print_stdout)] // The table on standard output is the benchmark's result.
pub async fn run(args: PtaArgs) -> anyhow::Result<()> {
    let t = target(&args.directory).await?;
    // Counted before pinning narrows what this process may use.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pinned = pin_directory(&t, &args, cores)?;
    if let Some(how) = &pinned {
        eprintln!("{how}");
    }
    if args.pages_only {
        print_pages(&page_level(&t, &args).await?);
        return Ok(());
    }
    if args.e2e_only {
        let run = end_to_end(&t, &args).await?;
        let e2e = &run.measured;
        println!(
            "end to end: {:.0}/s, p50 {} ms, p99 {} ms, {} errors, {:.3} ms of CPU per sign-in (RSA included)",
            e2e.rate(),
            ms(e2e.quantile(0.5)),
            ms(e2e.quantile(0.99)),
            e2e.errors,
            run.cpu_ms_per_sign_in()
        );
        return Ok(());
    }
    eprintln!("measuring raw RSA OAEP decryption…");
    let rsa = raw_rsa(2048, args.seconds.min(5))?;
    let rsa_3072 = raw_rsa(3072, args.seconds.min(5))?;
    eprintln!("measuring raw binds…");
    let binds = raw_binds(&t, args.seconds).await?;
    eprintln!("measuring the directory back end alone…");
    let backend = back_end(&t, args.concurrency, args.seconds).await?;
    eprintln!("measuring sign-ins end to end…");
    let e2e_run = end_to_end(&t, &args).await?;
    eprintln!("measuring sign-ins through the pages (release binary)…");
    let page_run = page_level(&t, &args).await?;
    // Postern's own CPU per sign-in: what its processes spent, less one RSA
    // decryption (the agent's key size) measured alone above.
    let e2e_cpu = e2e_run.cpu_ms_per_sign_in() - 1000.0 / rsa;
    let page_cpu = page_run
        .cpu_ms
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "serve" | "agent" | "connector"))
        .map(|(_, ms)| ms)
        .sum::<f64>()
        - 1000.0 / rsa_3072;
    let row = |name: &str, m: &Measured, conc: usize, cpu: Option<f64>| {
        format!(
            "| {name} | {conc} | {:.0} | {} | {} | {} | {:.2}× | {} |",
            m.rate(),
            ms(m.quantile(0.5)),
            ms(m.quantile(0.99)),
            m.errors,
            m.rate() / binds.rate().max(f64::EPSILON),
            cpu.map_or_else(|| "–".to_owned(), |c| format!("{c:.2}"))
        )
    };
    let body = format!(
        "### Pass-through authentication against {name}\n\n\
         One run on this machine ({cores} cores), `postern-bench pta --directory {dir} --seconds {s} --concurrency {c} --agents {a}` \
         (release build). Rates are per second; \"vs raw binds\" is the rate relative to raw binds in the same run. \
         \"Postern CPU\" is the CPU time Postern's own code spent per sign-in, less the agent's RSA decryption \
         (measured alone, below) and without the directory's: for the end-to-end row the harness process, which \
         holds the service, the agent and the calls that drive them, over the measured window; for the pages row \
         `serve`, `agent` and `connector` together.{pinned}\n\n\
         | measurement | in flight | rate/s | p50 ms | p99 ms | errors | vs raw binds | Postern CPU ms per sign-in |\n\
         |---|---|---|---|---|---|---|---|\n\
         {raw}\n{be}\n{e2e}\n{pages}\n\n\
         Raw RSA OAEP-SHA256 decryption, one core: {rsa:.0}/s with a 2048-bit key (the end-to-end row's agent), \
         {rsa_3072:.0}/s with a 3072-bit key (the pages row's).\n\n\
         The last row runs the release binary as three processes (`serve`, `agent run` with an RSA-3072 key as \
         `agent register` makes by default, `connector run`) beside the directory; each sign-in is a fresh browser \
         going the whole way: the app, authorize, the username page and post, the password page and post, the \
         callback (the code exchange), the app through the tunnel: eight requests. Limits per client address are \
         off (the load comes from one address).\n\n{page_tables}",
        name = t.name,
        dir = args.directory,
        s = args.seconds,
        c = args.concurrency,
        a = args.agents,
        pinned = pinned.map(|p| format!(" {p}")).unwrap_or_default(),
        raw = row("raw simple bind, one connection", &binds, 1, None),
        be = row(
            "agent back end alone (search + bind, pooled)",
            &backend,
            args.concurrency,
            None
        ),
        e2e = row(
            "sign-in end to end (STS → relay → agent → directory)",
            &e2e_run.measured,
            args.concurrency,
            Some(e2e_cpu)
        ),
        pages = row(
            "sign-in through the pages (browser → serve → agent → directory; app via connector)",
            &page_run.measured,
            args.page_concurrency,
            Some(page_cpu)
        ),
        page_tables = page_tables(&page_run),
        rsa = rsa,
        rsa_3072 = rsa_3072,
    );
    println!("{body}");
    if let Some(file) = &args.write {
        write_section(file, &format!("pta-{}", args.directory), &body)?;
    }
    Ok(())
}

//! Fault injection (issue 14 item 3): parts that fail the way real ones do, and
//! what users and administrators see meanwhile. A backend that sends its
//! response head one byte a second is cut at the app's timeout; a directory
//! that accepts connections and never answers gives the user a clear page
//! within the sign-in deadline; a data directory whose disk is full is reported
//! and the service recovers when space returns; PostgreSQL restarted under
//! load gives clear errors while it is down, nothing half-written, and service
//! again after.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use postern_directory::testing::{SLAPD_PASSWORD, Slapd};
use postern_testkit::{Browser, Pkce};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{authorize_url, login};
use crate::proxy_harness::{AppOptions, ProxyBench};
use crate::pta::{Pta, unanswering_directory};

/// How long past a deadline a cut may be seen (scheduling on a loaded machine).
const SLACK: Duration = Duration::from_secs(3);

/// A backend that reads a request and then sends `HTTP/1.1 200 OK…` one byte a
/// second, forever. Counts the connections whose writes failed (the peer cut
/// them).
struct TricklingBackend {
    addr: std::net::SocketAddr,
    cut: Arc<AtomicUsize>,
}

impl TricklingBackend {
    async fn start() -> TricklingBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Padding: "
                        .iter()
                        .copied();
                    for byte in answer.chain(std::iter::repeat(b'a')) {
                        if stream.write_all(&[byte]).await.is_err() {
                            break;
                        }
                        postern_testkit::hold_for(Duration::from_secs(1)).await; // trickling, on purpose
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        TricklingBackend { addr, cut }
    }
}

/// A backend that trickles its response head is answered with 504 at the app's
/// timeout, and its connection is closed (not left to trickle on).
#[tokio::test]
async fn a_backend_trickling_its_head_is_cut_at_the_apps_timeout() {
    let bench = ProxyBench::start().await;
    let trickle = TricklingBackend::start().await;
    let _connector = bench.start_connector("c1", None).await;
    let timeout = Duration::from_secs(2);
    bench
        .publish(
            "slow",
            "slow.acme.test",
            AppOptions {
                backend_timeout_secs: timeout.as_secs(),
                internal_url: Some(format!("http://{}/", trickle.addr)),
                ..AppOptions::default()
            },
        )
        .await;

    let client = bench.client(&["slow.acme.test"]);
    let started = Instant::now();
    let response = client.get(bench.url("slow.acme.test", "/")).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status().as_u16(), 504, "{:?}", response.text().await);
    assert!(
        took >= timeout - Duration::from_millis(100) && took < timeout + SLACK,
        "answered after {took:?}; the app's timeout is {timeout:?}"
    );
    let body = response.text().await.unwrap();
    assert!(body.to_lowercase().contains("did not answer in time"), "{body}");

    // The connector closed the backend connection: the trickler's next write
    // (a second later at most) fails.
    let deadline = Instant::now() + timeout + SLACK;
    while trickle.cut.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the backend connection was left open after the timeout"
        );
        postern_testkit::poll_pause(Duration::from_millis(100)).await;
    }

    // Only that request failed: the same connector serves an app whose
    // backend answers.
    bench.publish("echo", "echo.acme.test", AppOptions::default()).await;
    let echo = bench
        .client(&["echo.acme.test"])
        .get(bench.url("echo.acme.test", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(echo.status().as_u16(), 200);
}

/// A directory that accepts TCP connections and never answers: the user gets
/// the "can't check your password right now" page within the sign-in deadline,
/// the attempt is not counted by smart lockout, and a sign-in against a
/// healthy directory (a second agent) works meanwhile.
#[tokio::test]
async fn a_hanging_directory_gives_a_clear_page_within_the_sign_in_deadline() {
    let p = Pta::new("example.com").await;
    let overall = Duration::from_secs(8); // `Pta::new` sets the sign-in deadline
    let _hanging = p.agent("agent-hangs", unanswering_directory().await).await;
    let url = authorize_url(
        &p.svc,
        "acme",
        "app",
        "https://app.acme.test/cb",
        &Pkce::new().challenge,
        "",
    );

    let started = Instant::now();
    let refused = Browser::new()
        .sign_in(&url, &login(&p.svc, "alice@example.com", "any password at all"))
        .await
        .expect_err("the sign-in cannot complete");
    let took = started.elapsed();
    let message = refused.to_string();
    assert!(
        message.contains("can't check your password right now"),
        "the user is told what happened: {message}"
    );
    assert!(
        !message.contains("any password at all"),
        "the page never repeats the password"
    );
    assert!(
        took < overall + SLACK,
        "answered after {took:?}; the sign-in deadline is {overall:?}"
    );
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
    assert_eq!(state.failures, 0, "an unanswered check is not a wrong password");

    // With a healthy agent beside it, sign-ins go through (the relay offers the
    // request to the agent that answers).
    let slapd = Slapd::start().await.unwrap();
    let _healthy = p.agent("agent-healthy", crate::pta::slapd_directory(&slapd)).await;
    let started = Instant::now();
    let page = Browser::new()
        .sign_in(&url, &login(&p.svc, "alice@example.com", SLAPD_PASSWORD))
        .await
        .expect("signs in through the healthy agent");
    assert!(page.status.is_redirection(), "{}", page.title());
    assert!(started.elapsed() < overall + SLACK, "took {:?}", started.elapsed());
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes` (needs root).
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", dir.path().display());
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // Whatever partial block remains.
        while file.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The data directory's disk fills up: changes are refused with a clear error
/// that says so (not a panic, not a generic failure), reads and health checks
/// go on, nothing half-written remains, and writes work again once space is
/// freed, without a restart.
#[tokio::test]
async fn a_full_disk_is_reported_and_the_service_recovers_when_space_returns() {
    if !crate::common::running_as_root() {
        crate::common::precondition_missing("a_full_disk_is_reported…", "mounting a small tmpfs needs root");
        return;
    }
    let disk = SmallDisk::mount(24);
    let svc = postern_testkit::TestService::builder()
        .data_under(disk.path())
        .database_url(format!("sqlite://{}/postern.db", disk.path().display()))
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let http = reqwest::Client::new();
    let create = |name: &str| {
        http.post(format!("{}/api/v1/users", svc.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "username": format!("{name}@acme.test"),
                "display_name": name,
                "password": "a long enough password 1",
            }))
            .send()
    };
    let before = create("before").await.unwrap();
    assert_eq!(before.status().as_u16(), 201, "{:?}", before.text().await);

    let filler = disk.fill();
    let mut refused = 0;
    for i in 0..5 {
        let response = create(&format!("during{i}")).await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        if status == 201 {
            // SQLite may still have had room in pages it already owned.
            continue;
        }
        refused += 1;
        assert_eq!(status, 503, "{body}");
        let message = body["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(
            message.contains("storage is full"),
            "refusal {refused} does not say the storage is full: {body}"
        );
        assert!(
            !message.contains("a long enough password"),
            "no password in the error: {body}"
        );
    }
    assert!(refused > 0, "a full disk refused no write");

    // Reads and the health check go on.
    let health = http.get(format!("{}/healthz", svc.url())).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let listed = http
        .get(format!("{}/api/v1/users", svc.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);

    // Space returns: writes work again, and every user the API refused is
    // absent while every user it created is whole (its audit entry too).
    std::fs::remove_file(filler).unwrap();
    // The first write after the space returns works: no connection was left
    // holding SQLite's write lock (before the fix in the store's pool, every
    // write then waited 5 s for "database is locked" until a restart).
    let freed = Instant::now();
    let after = create("after").await.unwrap();
    assert_eq!(after.status().as_u16(), 201, "{:?}", after.text().await);
    assert!(freed.elapsed() < Duration::from_secs(2), "took {:?}", freed.elapsed());
    let users = svc.store().users(&t.tenant.id).await.unwrap();
    let audit = svc.store().audit_entries(&t.tenant.id, 0, 10_000).await.unwrap();
    for user in users.iter().filter(|u| u.username.starts_with("during")) {
        assert!(
            audit.iter().any(|e| e.target.contains(&user.id)),
            "{} was created without its audit entry",
            user.username
        );
    }
    assert!(users.iter().any(|u| u.username == "after@acme.test"));
}

/// A PostgreSQL server of one test's own (its data in a temporary directory,
/// on a free port), which the test may stop and start. Needs root (the server
/// runs as the `postern` test's `postgres` system user) and the Debian package.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// The server binaries of the newest PostgreSQL installed, if any.
    fn binaries() -> Option<std::path::PathBuf> {
        let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        versions.sort_unstable();
        let bin = std::path::PathBuf::from(format!("/usr/lib/postgresql/{}/bin", versions.pop()?));
        bin.join("initdb").exists().then_some(bin)
    }

    fn as_postgres(&self, program: &str, args: &[&str]) {
        let output = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start(bin: std::path::PathBuf) -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { dir, bin, port };
        let data = pg.data();
        pg.as_postgres(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Starts the server and waits until it accepts connections.
    fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"],
        );
    }

    /// Stops the server the way a restart does (`fast`: sessions are ended).
    fn down(&self) {
        self.as_postgres("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

/// What one request of the load got.
#[derive(Clone, Debug)]
enum Got {
    Ok,
    /// Refused with this status and what the body or page said.
    Refused(u16, String),
}

/// PostgreSQL is restarted while administrators create users and users sign
/// in: while it is down every request is refused with a 503 that says to try
/// again (no 500, no hang past the request deadline), it serves again within
/// seconds of the database's return, and nothing is half-written (every user
/// the API created exists with its audit entry).
#[tokio::test]
async fn postgres_restarted_under_load() {
    if !crate::common::running_as_root() {
        crate::common::precondition_missing("postgres_restarted_under_load", "the private PostgreSQL needs root");
        return;
    }
    let Some(bin) = PrivatePostgres::binaries() else {
        crate::common::precondition_missing("postgres_restarted_under_load", "PostgreSQL's server is not installed");
        return;
    };
    let pg = PrivatePostgres::start(bin);
    let svc = Arc::new(
        postern_testkit::TestService::builder()
            .database_url(pg.url())
            .start()
            .await
            .unwrap(),
    );
    let t = svc.bootstrap().await.unwrap();
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    svc.create_client(
        &t.tenant,
        "app",
        None,
        &["https://app.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    svc.create_user(&t.tenant, "carol@acme.test", "carol's long password")
        .await
        .unwrap();
    let authorize = Arc::new(authorize_url(
        &svc,
        "acme",
        "app",
        "https://app.acme.test/cb",
        &Pkce::new().challenge,
        "",
    ));

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..3 {
        let (svc, token, stop) = (svc.clone(), token.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut got = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let name = format!("w{worker}n{n}@acme.test");
                let response = http
                    .post(format!("{}/api/v1/users", svc.url()))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "username": name, "password": "a long enough password 1" }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                // When the answer came: what the database was doing then.
                let at = started.elapsed();
                got.push((
                    at,
                    name,
                    if status == 201 {
                        Got::Ok
                    } else {
                        Got::Refused(status, body)
                    },
                ));
                postern_testkit::hold_for(Duration::from_millis(20)).await; // load pacing
            }
            got
        }));
    }
    let signins = {
        let (svc, authorize, stop) = (svc.clone(), authorize.clone(), stop.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let result = Browser::new()
                    .sign_in(&authorize, &login(&svc, "carol@acme.test", "carol's long password"))
                    .await;
                let at = started.elapsed();
                got.push((
                    at,
                    match result {
                        Ok(page) if page.location().is_some_and(|l| l.contains("code=")) => Got::Ok,
                        Ok(page) => Got::Refused(page.status.as_u16(), page.title()),
                        Err(e) => Got::Refused(0, e.to_string()),
                    },
                ));
                postern_testkit::hold_for(Duration::from_millis(20)).await; // load pacing
            }
            got
        })
    };

    postern_testkit::hold_for(Duration::from_millis(1500)).await; // load before the outage
    let down_at = started.elapsed();
    pg.down();
    // Longer than the store's wait for a connection (5 s): requests made
    // while it is down are refused, not only delayed.
    postern_testkit::hold_for(Duration::from_secs(7)).await; // the outage
    pg.up();
    let up_at = started.elapsed();
    // Load after the outage: the window recovery is measured in (back within
    // 5 s, then two seconds without a failure).
    postern_testkit::hold_for(Duration::from_secs(8)).await;
    stop.store(true, Ordering::SeqCst);

    let mut writes = Vec::new();
    for task in tasks {
        writes.extend(task.await.unwrap());
    }
    let signins = signins.await.unwrap();

    // Before the restart, everything worked.
    for (at, what, got) in writes
        .iter()
        .map(|(a, n, g)| (a, n.as_str(), g))
        .chain(signins.iter().map(|(a, g)| (a, "sign-in", g)))
    {
        if *at < down_at {
            assert!(matches!(got, Got::Ok), "{what} at {at:?}, before the restart: {got:?}");
        }
        // Never a server error or a bare failure, whatever the database does.
        if let Got::Refused(status, said) = got {
            assert!(
                *status == 503 || (*status == 0 && said.contains("unavailable")),
                "{what} at {at:?}: {status} {said}"
            );
            if *status == 503 && said.starts_with('{') {
                assert!(said.contains("temporarily_unavailable"), "{said}");
            }
        }
    }
    let refused_writes = writes.iter().filter(|(_, _, g)| matches!(g, Got::Refused(..))).count();
    assert!(
        refused_writes > 0,
        "the outage refused no write: the test did not test it"
    );

    // Service is back within 5 s of the database accepting connections, and
    // every request of the last two seconds succeeded.
    let first_ok_after_up = |times: Vec<(Duration, bool)>| {
        times
            .into_iter()
            .filter(|(at, ok)| *at >= up_at && *ok)
            .map(|(at, _)| at - up_at)
            .next()
    };
    let writes_back = first_ok_after_up(writes.iter().map(|(a, _, g)| (*a, matches!(g, Got::Ok))).collect());
    let signins_back = first_ok_after_up(signins.iter().map(|(a, g)| (*a, matches!(g, Got::Ok))).collect());
    eprintln!(
        "PostgreSQL down at {down_at:?}, up at {up_at:?}; writes back after {writes_back:?}, sign-ins after {signins_back:?}; {refused_writes} writes refused"
    );
    for back in [writes_back, signins_back] {
        assert!(back.is_some_and(|b| b < Duration::from_secs(5)), "{back:?}");
    }
    let end = up_at + Duration::from_secs(8);
    for (at, what, got) in writes
        .iter()
        .map(|(a, n, g)| (a, n.as_str(), g))
        .chain(signins.iter().map(|(a, g)| (a, "sign-in", g)))
    {
        if *at + Duration::from_secs(2) > end {
            assert!(
                matches!(got, Got::Ok),
                "{what} at {at:?}, long after the restart: {got:?}"
            );
        }
    }

    // Nothing half-written.
    let users = svc.store().users(&t.tenant.id).await.unwrap();
    let audit = svc.store().audit_entries(&t.tenant.id, 0, 100_000).await.unwrap();
    let audited = |id: &str| audit.iter().any(|e| e.target.contains(id));
    for (_, name, got) in &writes {
        let user = users.iter().find(|u| &u.username == name);
        match (got, user) {
            (Got::Ok, Some(user)) => assert!(audited(&user.id), "{name} has no audit entry"),
            (Got::Ok, None) => panic!("{name} was created (201) but is not in the database"),
            // Committed, but the answer was lost with the connection. Its
            // audit entry is a second statement, not the same transaction (a
            // known gap, docs/security-model.md), so it may be missing.
            (Got::Refused(..), Some(user)) => {
                eprintln!("{name}: refused but created; audited: {}", audited(&user.id));
            }
            (Got::Refused(..), None) => {}
        }
    }
}

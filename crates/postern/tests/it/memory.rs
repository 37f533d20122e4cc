//! Issue 15, items 1 and 2: password hashing within a budget. A full hashing
//! pool answers "try again" (503 with `Retry-After`: a page for browsers, JSON
//! for API clients) and the refused attempts never count towards smart
//! lockout; outdated hashes are replaced at the next sign-in; and the real
//! binary under a burst of 500 concurrent wrong-password posts stays under its
//! memory budget and gives the memory back.

use std::time::Duration;

use postern_keyring::SecretString;
use postern_sts::{HashingSettings, PasswordHasher};
use postern_testkit::{Browser, Page, Pkce, TestService};
use reqwest::header::{ACCEPT, RETRY_AFTER};

use crate::common::{authorize_url, login, sign_in_for_code};

const REDIRECT: &str = "https://app.acme.test/cb";
const BOB_PASSWORD: &str = "bob's long enough password";
const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Small, fast argon2 and a pool of one worker.
fn one_worker(queue: usize) -> HashingSettings {
    HashingSettings {
        memory_kib: 1024,
        iterations: 1,
        workers: 1,
        queue,
        queue_wait: Duration::from_millis(200),
        release_after: Duration::from_secs(20),
    }
}

/// Opens a sign-in for `username` and returns the password page.
async fn password_page(svc: &TestService, browser: &Browser, username: &str) -> Page {
    let url = authorize_url(svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    let page = browser.follow(&url, &svc.url()).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("username", username)])
        .await
        .unwrap();
    let page = browser.arrive(r, &svc.url()).await.unwrap();
    assert_eq!(page.title(), "Enter your password");
    page
}

/// Posts `password` on the password page with `accept` as the `Accept` header.
async fn post_password(browser: &Browser, page: &Page, password: &str, accept: &str) -> reqwest::Response {
    let form = page.form().unwrap();
    let mut fields = form.hidden.clone();
    fields.push(("password".into(), password.into()));
    fields.push(("action".into(), "submit".into()));
    browser
        .client()
        .post(&form.action)
        .header(ACCEPT, accept)
        .form(&fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_full_hashing_pool_says_try_again_and_refusals_never_count() {
    let svc = TestService::builder()
        .tune(|c| c.passwords = one_worker(2))
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    svc.create_user(&t.tenant, "bob@acme.test", BOB_PASSWORD).await.unwrap();
    let hasher = svc.sts().hasher();
    let browser = Browser::new();
    let page = password_page(&svc, &browser, "bob@acme.test").await;
    let checked_before = hasher.verifications();

    // Every worker busy: each post waits its 200 ms in the queue (its lockout
    // reservation taken), then is refused. More refusals than the lockout
    // threshold, each with another password (a repeat would count once): none
    // may count.
    let held = hasher.occupy_workers().await.unwrap();
    for i in 0..t.tenant.lockout_threshold + 2 {
        let r = post_password(&browser, &page, &format!("wrong password {i}"), BROWSER_ACCEPT).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        let body = r.text().await.unwrap();
        assert!(body.contains("Wait a few seconds, then try again."), "{body}");
        assert!(
            body.contains("Enter your password"),
            "the browser can try again from the page"
        );
    }

    // An API client (it does not ask for HTML) gets JSON, also when the queue
    // is full and it is refused at once.
    let wrong: Vec<String> = (0..6).map(|i| format!("wrong again {i}")).collect();
    let api: Vec<_> = futures_util::future::join_all(
        wrong
            .iter()
            .map(|w| post_password(&browser, &page, w, "application/json")),
    )
    .await;
    for r in api {
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[RETRY_AFTER], "2");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        assert_eq!(body["retry_after"], 2);
    }
    assert_eq!(hasher.verifications(), checked_before, "no password was checked");
    assert!(hasher.refusals() >= 18, "{} refusals", hasher.refusals());

    // Capacity back: the right password works at once, neither locked nor
    // "busy" (no reservation was left behind).
    drop(held);
    let r = browser
        .submit(&page.form().unwrap(), &[("password", BOB_PASSWORD)])
        .await
        .unwrap();
    let location = r.location().unwrap_or_default();
    assert!(
        location.starts_with(REDIRECT),
        "{} {}: {:?}",
        r.status,
        location,
        r.error()
    );
    assert_eq!(hasher.verifications(), checked_before + 1);
}

#[tokio::test]
async fn outdated_hashes_are_replaced_at_the_next_sign_in() {
    let svc = TestService::builder()
        .tune(|c| c.passwords = one_worker(4))
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    // Bob's hash was made before the parameters changed (two passes then).
    let old = PasswordHasher::new(HashingSettings {
        iterations: 2,
        ..one_worker(0)
    })
    .unwrap()
    .hash(&SecretString::from(BOB_PASSWORD))
    .await
    .unwrap();
    let store = svc.store();
    let bob = store
        .create_user(
            &t.tenant.id,
            postern_store::NewUser::cloud("bob@acme.test", "Bob", Some(old.clone())),
            svc.now(),
        )
        .await
        .unwrap();

    // A wrong password changes nothing.
    let browser = Browser::new();
    let page = password_page(&svc, &browser, "bob@acme.test").await;
    let wrong = browser
        .submit(&page.form().unwrap(), &[("password", "not bob's password")])
        .await
        .unwrap();
    assert!(wrong.error().is_some());
    assert_eq!(
        store.user(&t.tenant.id, &bob.id).await.unwrap().password_hash,
        Some(old.clone())
    );

    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    sign_in_for_code(&Browser::new(), &url, &login(&svc, "bob@acme.test", BOB_PASSWORD)).await;
    let now = store.user(&t.tenant.id, &bob.id).await.unwrap().password_hash.unwrap();
    assert!(old.contains("m=1024,t=2,p=1"), "{old}");
    assert!(
        now.contains("m=1024,t=1,p=1"),
        "rehashed with the current parameters: {now}"
    );
    // And the new hash still takes the same password.
    sign_in_for_code(&Browser::new(), &url, &login(&svc, "bob@acme.test", BOB_PASSWORD)).await;
}

/// Resident memory of process `pid` now and at its peak (VmRSS, VmHWM), MiB.
fn resident_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap()
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// Opens a sign-in flow for `username` on the service at `base` and returns
/// the form to post its password with.
async fn flow_at_password(browser: &Browser, base: &str, username: &str) -> postern_testkit::Form {
    let redirect: String = url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect();
    let url = format!(
        "{base}/t/acme/authorize?response_type=code&client_id=app&redirect_uri={redirect}&scope=openid&state=s&nonce=n&code_challenge={}&code_challenge_method=S256",
        Pkce::new().challenge
    );
    let page = browser.follow(&url, base).await.unwrap();
    let form = page.form().unwrap();
    let r = browser.submit(&form, &[("username", username)]).await.unwrap();
    assert_eq!(r.title(), "Enter your password", "{} {:?}", r.status, r.error());
    r.form().unwrap()
}

/// The memory budget of `postern serve` with the default hashing settings, as
/// `docs/operations.md` states it: the idle process, the hashing pool at its
/// worst (a 19 MiB buffer per worker, a worker per core) and 64 MiB for
/// requests in flight.
fn serve_budget_mib(idle_mib: f64) -> f64 {
    let pool = postern_sts::HashingSettings::default().worst_case_bytes() as f64 / (1024.0 * 1024.0);
    idle_mib + pool + 64.0
}

#[tokio::test]
async fn a_burst_of_wrong_passwords_stays_within_the_memory_budget() {
    const POSTS: usize = 500;
    const REAL_USERS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let serve = crate::common::spawn_serve(
        |c| {
            c.args([
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(&data)
            // A flood from many addresses: limits per client address would
            // refuse most posts before any password check.
            .env("POSTERN_LIMITS__CLIENT_REQUESTS_PER_SEC", "0")
            .env("POSTERN_LIMITS__TENANT_REQUESTS_PER_SEC", "0")
            .env("POSTERN_LIMITS__CONNECTIONS_PER_CLIENT", "0");
        },
        &log,
    )
    .await;
    let mut child = scopeguard_kill(serve.child);
    let pid = child.0.id();
    let base = format!("http://{}", serve.addr);
    postern_testkit::setup_through_web(
        serve.setup_url.as_deref().unwrap(),
        postern_time::Clock::now(&postern_time::SystemClock),
    )
    .await
    .unwrap();

    // Cloud users (hashed as the service hashes them) and an app, written to
    // the service's database beside it.
    let store = postern_store::Store::connect(&postern_store::StoreOptions::new(format!(
        "sqlite://{}",
        data.join("postern.db").display()
    )))
    .await
    .unwrap();
    let tenant = store.tenant_by_name("acme").await.unwrap();
    let now = postern_time::Clock::now(&postern_time::SystemClock);
    let hasher = PasswordHasher::new(HashingSettings::default()).unwrap();
    let hash = hasher.hash(&SecretString::from(BOB_PASSWORD)).await.unwrap();
    for i in 0..REAL_USERS {
        let name = format!("user{i}@acme.test");
        store
            .create_user(
                &tenant.id,
                postern_store::NewUser::cloud(&name, &name, Some(hash.clone())),
                now,
            )
            .await
            .unwrap();
    }
    store
        .create_client(
            &tenant.id,
            &postern_store::NewOAuthClient {
                client_id: "app".into(),
                name: "App".into(),
                secret_digest: Some(postern_keyring::digest("x")),
                redirect_uris: vec![REDIRECT.into()],
                post_logout_redirect_uris: vec![],
                grant_types: vec!["authorization_code".into()],
                scopes: vec![],
                builtin: false,
            },
            now,
        )
        .await
        .unwrap();

    // 500 sign-ins at their password page, one account each: the real users,
    // then unknown names of the same tenant (checked against the dummy hash,
    // the same work).
    // The first flow alone: it sets the browser's binding cookie the others
    // share.
    let browser = Browser::new();
    let mut forms = vec![flow_at_password(&browser, &base, "user0@acme.test").await];
    for chunk in (1..POSTS).collect::<Vec<_>>().chunks(8) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| {
            let name = if *i < REAL_USERS {
                format!("user{i}@acme.test")
            } else {
                format!("nobody{i}@acme.test")
            };
            let (browser, base) = (&browser, &base);
            async move { flow_at_password(browser, base, &name).await }
        }))
        .await;
        forms.extend(opened);
    }
    // The idle baseline, once the resident size has settled after opening
    // the forms: two readings half a second apart within 1 MiB.
    let settling = std::time::Instant::now();
    let mut idle = resident_mib(pid).0;
    loop {
        postern_testkit::poll_pause(Duration::from_millis(500)).await;
        let now = resident_mib(pid).0;
        let steady = (now - idle).abs() < 1.0;
        idle = now;
        if steady {
            break;
        }
        assert!(
            settling.elapsed() < Duration::from_secs(30),
            "the resident size never settled ({idle:.1} MiB)"
        );
    }

    // The burst: every post at once, each on its own connection.
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most: f64 = 0.0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(resident_mib(pid).0);
                postern_testkit::poll_pause(Duration::from_millis(20)).await; // sampling
            }
            most
        })
    };
    let started = std::time::Instant::now();
    let statuses = futures_util::future::join_all(forms.iter().enumerate().map(|(i, form)| {
        let client = browser.client().clone();
        let mut fields = form.hidden.clone();
        fields.push(("password".into(), format!("wrong password {i}")));
        fields.push(("action".into(), "submit".into()));
        let action = form.action.clone();
        async move {
            match client
                .post(&action)
                .header(ACCEPT, BROWSER_ACCEPT)
                .form(&fields)
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(e) => panic!("post {i} failed: {e}"),
            }
        }
    }))
    .await;
    let burst_took = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sampled_peak = sampler.await.unwrap();
    let (after, peak) = resident_mib(pid);
    let checked = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();

    // Settling: the hashing buffers go back after a quiet spell.
    let settle_started = std::time::Instant::now();
    let mut settled = after;
    while settle_started.elapsed() < Duration::from_secs(60) {
        settled = resident_mib(pid).0;
        if settled <= idle * 1.25 {
            break;
        }
        postern_testkit::poll_pause(Duration::from_secs(1)).await;
    }
    let settle_took = settle_started.elapsed();
    let budget = serve_budget_mib(idle);
    eprintln!(
        "postern serve: idle {idle:.1} MiB; burst of {POSTS} posts in {:.1} s: {checked} checked (200), {refused} refused (503); \
         RSS after the burst {after:.1} MiB, peak sampled {sampled_peak:.1} MiB, VmHWM {peak:.1} MiB (budget {budget:.1} MiB); \
         settled to {settled:.1} MiB in {:.0} s",
        burst_took.as_secs_f64(),
        settle_took.as_secs_f64()
    );
    assert_eq!(
        checked + refused,
        POSTS,
        "every post answered with the page or 503: {statuses:?}"
    );
    assert!(checked >= 2, "some passwords were checked");
    assert!(refused > 0, "the pool's bound was reached");
    assert!(
        peak < budget,
        "peak RSS {peak:.1} MiB within the budget {budget:.1} MiB"
    );
    assert!(
        settled <= idle * 1.25,
        "RSS back near idle within a minute: {settled:.1} MiB vs idle {idle:.1} MiB"
    );
    drop(store);
    child.stop();
}

/// Kills the child when dropped (a failing test must not leave it running).
struct KillOnDrop(std::process::Child);

fn scopeguard_kill(child: std::process::Child) -> KillOnDrop {
    KillOnDrop(child)
}

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

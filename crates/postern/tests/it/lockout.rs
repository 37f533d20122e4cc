//! Smart lockout in front of the password check: threshold, release after the
//! period, growth on repeats, familiar locations counted apart, the same wrong
//! password counted once, unknown accounts treated like real ones, and bursts of
//! parallel guesses (on one instance or two) checking no more than the threshold.

use std::time::Duration;

use postern_keyring::SecretString;
use postern_store::LocationClass;
use postern_sts::lockout::LockoutDecision;
use postern_sts::{ClientIp, PasswordVerdict};
use postern_testkit::{Browser, Page, Pkce, TestService};

use crate::common::{authorize_url, login, sign_in_for_code};

const REDIRECT: &str = "https://app.acme.test/cb";
const ALICE_PASSWORD: &str = "alice's long password";
const LOCKED: &str = "temporarily locked";
const WRONG: &str = "incorrect";

/// Opens a sign-in for `username` and returns the password page.
async fn password_page(svc: &TestService, browser: &Browser, username: &str) -> Page {
    let url = authorize_url(svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "&prompt=login");
    let page = browser.follow(&url, &svc.url()).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("username", username)])
        .await
        .unwrap();
    let page = browser.arrive(r, &svc.url()).await.unwrap();
    assert_eq!(page.title(), "Enter your password");
    page
}

async fn try_password(browser: &Browser, page: &Page, password: &str) -> Page {
    browser
        .submit(&page.form().unwrap(), &[("password", password)])
        .await
        .unwrap()
}

#[tokio::test]
async fn lockout_threshold_period_growth_and_locations() {
    let svc = TestService::builder().trust_loopback_proxy().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let alice = svc
        .create_user(&t.tenant, "alice@acme.test", ALICE_PASSWORD)
        .await
        .unwrap();
    let threshold = t.tenant.lockout_threshold;
    assert_eq!(threshold, 10, "default threshold");

    // Alice signs in from home: that network becomes familiar.
    let home = Browser::new().from_ip("198.51.100.10");
    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    sign_in_for_code(&home, &url, &login(&svc, "alice@acme.test", ALICE_PASSWORD)).await;

    // An attacker elsewhere repeats one wrong password: it counts once.
    let attacker = Browser::new().from_ip("203.0.113.5");
    let mut page = password_page(&svc, &attacker, "alice@acme.test").await;
    for _ in 0..5 {
        page = try_password(&attacker, &page, "Summer2026!").await;
        assert!(page.error().unwrap().contains(WRONG));
    }
    let state = svc
        .store()
        .lockout_state(&t.tenant.id, "alice@acme.test", LocationClass::Unfamiliar)
        .await
        .unwrap();
    assert_eq!(state.failures, 1, "the same wrong password repeated counts once");

    // Different guesses reach the threshold and lock the account for unfamiliar places.
    for i in 1..threshold {
        page = try_password(&attacker, &page, &format!("guess number {i}")).await;
    }
    assert!(page.error().unwrap().contains(LOCKED), "{:?}", page.error());
    let locked = try_password(&attacker, &page, ALICE_PASSWORD).await;
    assert!(
        locked.error().unwrap().contains(LOCKED),
        "even the right password is refused while locked"
    );

    // Alice at home is not locked out by the attacker.
    let home_again = Browser::new().from_ip("198.51.100.77");
    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    sign_in_for_code(&home_again, &url, &login(&svc, "alice@acme.test", ALICE_PASSWORD)).await;

    // After the period the attacker's place is unlocked; locking again doubles it.
    svc.advance(Duration::from_secs(61));
    let mut page = password_page(&svc, &attacker, "alice@acme.test").await;
    for i in 0..threshold {
        page = try_password(&attacker, &page, &format!("second round {i}")).await;
    }
    assert!(page.error().unwrap().contains(LOCKED));
    let state = svc
        .store()
        .lockout_state(&t.tenant.id, "alice@acme.test", LocationClass::Unfamiliar)
        .await
        .unwrap();
    assert_eq!(state.lockout_count, 2);
    assert_eq!(
        state.locked_until.secs() - svc.now().secs(),
        120,
        "second lockout lasts twice as long"
    );
    svc.advance(Duration::from_secs(61));
    let still = try_password(&attacker, &page, ALICE_PASSWORD).await;
    assert!(
        still.error().unwrap().contains(LOCKED),
        "still locked after the first period"
    );
    svc.advance(Duration::from_secs(60));
    let page = password_page(&svc, &attacker, "alice@acme.test").await;
    let ok = try_password(&attacker, &page, ALICE_PASSWORD).await;
    assert!(
        ok.status.is_redirection(),
        "released after the doubled period: {:?}",
        ok.error()
    );

    // The sign-in log shows the lockouts, attributed to the attacker's address.
    let log = svc
        .store()
        .signins(&t.tenant.id, postern_time::UnixTime::from_secs(0), 1000)
        .await
        .unwrap();
    assert!(
        log.iter()
            .any(|e| e.outcome == postern_store::SigninOutcome::LockedOut && e.ip == "203.0.113.5")
    );
    assert!(
        log.iter()
            .any(|e| e.outcome == postern_store::SigninOutcome::Success
                && e.user_id.as_deref() == Some(alice.id.as_str()))
    );
}

#[tokio::test]
async fn unknown_accounts_lock_like_real_ones() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let settings = postern_store::TenantSettings {
        lockout_threshold: 3,
        lockout_seconds: 30,
        require_mfa: false,
    };
    svc.store()
        .update_tenant_settings(&t.tenant.id, settings)
        .await
        .unwrap();
    let browser = Browser::new();
    let mut page = password_page(&svc, &browser, "ghost@acme.test").await;
    for i in 0..2 {
        page = try_password(&browser, &page, &format!("ghost guess {i}")).await;
        assert!(
            page.error().unwrap().contains(WRONG),
            "same message as for a real account"
        );
    }
    page = try_password(&browser, &page, "ghost guess 3").await;
    assert!(
        page.error().unwrap().contains(LOCKED),
        "the tenant's threshold of 3 applies to unknown names too"
    );
    svc.advance(Duration::from_secs(31));
    let page = try_password(&browser, &page, "ghost guess 4").await;
    assert!(page.error().unwrap().contains(WRONG));
}

/// Password-page messages a guess in a burst may get: wrong, locked, or refused
/// while as many guesses as may fail are being checked.
const BUSY: &str = "being checked";

/// The message of a guess the hashing pool had no room for (issue 15).
const POOL_FULL: &str = "Many people are signing in right now";

/// 50 parallel wrong passwords against one account through the sign-in pages:
/// at most the threshold are checked (argon2 verifications counted), the account
/// ends up locked, and the right password is then refused without a check.
async fn a_burst_checks_at_most_the_threshold(builder: postern_testkit::TestServiceBuilder) {
    let svc = builder.start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    svc.create_user(&t.tenant, "alice@acme.test", ALICE_PASSWORD)
        .await
        .unwrap();
    let threshold = t.tenant.lockout_threshold;
    let mut pages = Vec::new();
    for _ in 0..50 {
        let browser = Browser::new();
        let page = password_page(&svc, &browser, "alice@acme.test").await;
        pages.push((browser, page));
    }

    let before = svc.sts().password_verifications();
    let guesses = pages
        .iter()
        .enumerate()
        .map(|(i, (browser, page))| async move { try_password(browser, page, &format!("parallel guess {i}")).await });
    let answers = futures_util::future::join_all(guesses).await;
    let checked = svc.sts().password_verifications() - before;
    assert!(
        checked <= u64::try_from(threshold).unwrap(),
        "{checked} passwords checked in one burst; the threshold is {threshold}"
    );
    let mut wrong = 0;
    for answer in &answers {
        let error = answer.error().unwrap_or_default();
        assert!(
            [WRONG, LOCKED, BUSY, POOL_FULL].iter().any(|m| error.contains(m)),
            "unexpected answer: {error:?}"
        );
        wrong += usize::from(error.contains(WRONG));
    }
    assert!(wrong < usize::try_from(threshold).unwrap(), "the last failure locks");
    let state = svc
        .store()
        .lockout_state(&t.tenant.id, "alice@acme.test", LocationClass::Unfamiliar)
        .await
        .unwrap();
    assert_eq!(state.lockout_count, 1, "the burst locked the account: {state:?}");
    assert!(state.locked_until > svc.now());

    // The right password during the lockout: refused, and not even checked.
    let before = svc.sts().password_verifications();
    let (browser, page) = &pages[0];
    let refused = try_password(browser, page, ALICE_PASSWORD).await;
    assert!(refused.error().unwrap().contains(LOCKED), "{:?}", refused.error());
    assert_eq!(svc.sts().password_verifications(), before, "no check while locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_check_at_most_the_threshold_sqlite() {
    a_burst_checks_at_most_the_threshold(TestService::builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_passwords_check_at_most_the_threshold_postgres() {
    a_burst_checks_at_most_the_threshold(TestService::builder().postgres()).await;
}

/// Two STS instances on one PostgreSQL database share the counters: a burst split
/// over both checks at most the threshold between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_burst() {
    let svc = TestService::builder().postgres().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_user(&t.tenant, "alice@acme.test", ALICE_PASSWORD)
        .await
        .unwrap();
    let keyring = postern_keyring::Keyring::load_or_create(&svc.data_dir().join("kek")).unwrap();
    let other = postern_sts::Sts::new(
        svc.store().clone(),
        std::sync::Arc::new(keyring),
        svc.shared_clock(),
        postern_sts::StsConfig::new(svc.url().parse().unwrap()),
    )
    .await
    .unwrap();
    let instances = [svc.sts().clone(), other];
    let ip = ClientIp("203.0.113.5".parse().unwrap());

    let before: u64 = instances.iter().map(|s| s.password_verifications()).sum();
    let guesses = (0..50).map(|i| {
        let sts = instances[i % 2].clone();
        let tenant = t.tenant.clone();
        tokio::spawn(async move {
            let password = SecretString::from(format!("split guess {i}").as_str());
            sts.check_password(&tenant, "alice@acme.test", &password, ip).await
        })
    });
    let verdicts = futures_util::future::join_all(guesses).await;
    let checked = instances.iter().map(|s| s.password_verifications()).sum::<u64>() - before;
    assert!(
        checked <= 10,
        "{checked} passwords checked across two instances; the threshold is 10"
    );
    for verdict in verdicts {
        let verdict = verdict.unwrap().unwrap();
        assert!(
            matches!(
                verdict,
                PasswordVerdict::WrongCredentials { .. } | PasswordVerdict::LockedOut | PasswordVerdict::Busy
            ),
            "{verdict:?}"
        );
    }
    for sts in &instances {
        let before = sts.password_verifications();
        let verdict = sts
            .check_password(&t.tenant, "alice@acme.test", &SecretString::from(ALICE_PASSWORD), ip)
            .await
            .unwrap();
        assert!(matches!(verdict, PasswordVerdict::LockedOut), "{verdict:?}");
        assert_eq!(sts.password_verifications(), before, "locked on both, without a check");
    }
}

/// A reservation whose request dies is given back when it drops; one that is
/// never given back (its instance crashed) lapses, and the account is free again.
#[tokio::test]
async fn reservations_of_dead_requests_do_not_hold_the_account() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let settings = postern_store::TenantSettings {
        lockout_threshold: 2,
        lockout_seconds: 60,
        require_mfa: false,
    };
    svc.store()
        .update_tenant_settings(&t.tenant.id, settings)
        .await
        .unwrap();
    let tenant = svc.store().tenant_by_name("acme").await.unwrap();
    let sts = svc.sts();
    let ip = ClientIp("203.0.113.5".parse().unwrap());
    let reserve = || sts.check_lockout(&tenant, "bob@acme.test", None, ip, None);

    let first = reserve().await.unwrap();
    let second = reserve().await.unwrap();
    assert!(matches!(first, LockoutDecision::Proceed(_)), "{first:?}");
    assert!(matches!(second, LockoutDecision::Proceed(_)), "{second:?}");
    assert!(
        matches!(reserve().await.unwrap(), LockoutDecision::Busy),
        "two checks in flight: a third would outrun the threshold of 2"
    );

    // The request holding `first` is cancelled: its reservation comes back.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let third = loop {
        match reserve().await.unwrap() {
            LockoutDecision::Proceed(a) => break a,
            LockoutDecision::Busy if std::time::Instant::now() < deadline => {
                postern_testkit::poll_pause(Duration::from_millis(20)).await;
            }
            other => panic!("the dropped reservation was not given back: {other:?}"),
        }
    };

    // An instance that dies holds its reservations until they lapse, no longer.
    std::mem::forget(second);
    std::mem::forget(third);
    assert!(matches!(reserve().await.unwrap(), LockoutDecision::Busy));
    svc.advance(postern_sts::lockout::RESERVATION_TTL + Duration::from_secs(1));
    let after_lapse = reserve().await.unwrap();
    assert!(matches!(after_lapse, LockoutDecision::Proceed(_)), "{after_lapse:?}");
    let state = svc
        .store()
        .lockout_state(&tenant.id, "bob@acme.test", LocationClass::Unfamiliar)
        .await
        .unwrap();
    assert_eq!(state.failures, 0, "nothing was counted as a failure");
}

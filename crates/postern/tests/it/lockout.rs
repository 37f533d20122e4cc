//! Smart lockout in front of the password check: threshold, release after the
//! period, growth on repeats, familiar locations counted apart, the same wrong
//! password counted once, and unknown accounts treated like real ones.

use std::time::Duration;

use postern_store::LocationClass;
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
    let page = browser.follow(&r.location().unwrap(), &svc.url()).await.unwrap();
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

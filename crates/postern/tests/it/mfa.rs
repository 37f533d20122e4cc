//! MFA: enrolment on first need, TOTP required and accepted, codes used once,
//! recovery codes used once, too many wrong codes end the attempt.

use std::time::Duration;

use postern_store::UserUpdate;
use postern_testkit::{Browser, Login, Pkce, TestService, totp_code};

use crate::common::{authorize_url, sign_in_for_code};

const REDIRECT: &str = "https://app.acme.test/cb";
const PASSWORD: &str = "bob's long password";

#[tokio::test]
async fn enrolment_on_first_need_then_totp_every_time() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let bob = svc.create_user(&t.tenant, "bob@acme.test", PASSWORD).await.unwrap();
    svc.store()
        .update_user(
            &t.tenant.id,
            &bob.id,
            &UserUpdate {
                mfa_required: Some(true),
                ..Default::default()
            },
            svc.now(),
        )
        .await
        .unwrap();

    // First sign-in: password, then the enrolment page, then recovery codes.
    let browser = Browser::new();
    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    let page = browser.follow(&url, &svc.url()).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("username", "bob@acme.test")])
        .await
        .unwrap();
    let page = browser.arrive(r, &svc.url()).await.unwrap();
    let r = browser
        .submit(&page.form().unwrap(), &[("password", PASSWORD)])
        .await
        .unwrap();
    let enrol = browser.arrive(r, &svc.url()).await.unwrap();
    assert_eq!(enrol.title(), "Set up your authenticator");
    assert!(
        enrol.body.contains("<svg"),
        "a QR code is shown, rendered by the service"
    );
    let secret = enrol.codes()[0].clone();
    let wrong = browser
        .submit(&enrol.form().unwrap(), &[("code", "123456")])
        .await
        .unwrap();
    assert!(wrong.error().unwrap().contains("not right"));
    let codes_page = browser
        .submit(
            &enrol.form().unwrap(),
            &[("code", &totp_code(&secret, svc.now()).unwrap())],
        )
        .await
        .unwrap();
    assert_eq!(codes_page.title(), "Save your recovery codes");
    let recovery = codes_page.codes();
    assert_eq!(recovery.len(), 10);
    let back = browser.submit(&codes_page.form().unwrap(), &[]).await.unwrap();
    assert!(back.location().unwrap().starts_with(REDIRECT));
    assert!(
        svc.store()
            .user(&t.tenant.id, &bob.id)
            .await
            .unwrap()
            .totp_sealed
            .is_some()
    );

    // Next sign-in (new browser, so no SSO): TOTP is required and accepted.
    svc.advance(Duration::from_secs(30));
    let login = Login {
        username: "bob@acme.test".into(),
        password: PASSWORD.into(),
        totp_secret: Some(secret.clone()),
        now: svc.now(),
        recovery_code: None,
    };
    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    sign_in_for_code(&Browser::new(), &url, &login).await;

    // The same code (same time step) is refused the second time.
    let replay = Browser::new().sign_in(&url, &login).await;
    assert!(
        replay.unwrap_err().to_string().contains("not right"),
        "a TOTP code works once"
    );

    // A recovery code works, once.
    let third = Browser::new();
    let page = third.follow(&url, &svc.url()).await.unwrap();
    let r = third
        .submit(&page.form().unwrap(), &[("username", "bob@acme.test")])
        .await
        .unwrap();
    let page = third.arrive(r, &svc.url()).await.unwrap();
    let r = third
        .submit(&page.form().unwrap(), &[("password", PASSWORD)])
        .await
        .unwrap();
    let totp_page = third.arrive(r, &svc.url()).await.unwrap();
    assert_eq!(totp_page.title(), "Verify your identity");
    let r = third
        .submit(&totp_page.form().unwrap(), &[("action", "recovery")])
        .await
        .unwrap();
    let rec_page = third.arrive(r, &svc.url()).await.unwrap();
    assert_eq!(rec_page.title(), "Use a recovery code");
    let ok = third
        .submit(&rec_page.form().unwrap(), &[("code", &recovery[0].to_uppercase())])
        .await
        .unwrap();
    assert!(
        ok.location().unwrap().starts_with(REDIRECT),
        "recovery code accepted: {:?}",
        ok.error()
    );
    assert_eq!(svc.store().recovery_codes_left(&bob.id).await.unwrap(), 9);

    // Five wrong codes end the attempt.
    let fourth = Browser::new();
    let page = fourth.follow(&url, &svc.url()).await.unwrap();
    let r = fourth
        .submit(&page.form().unwrap(), &[("username", "bob@acme.test")])
        .await
        .unwrap();
    let page = fourth.arrive(r, &svc.url()).await.unwrap();
    let r = fourth
        .submit(&page.form().unwrap(), &[("password", PASSWORD)])
        .await
        .unwrap();
    let mut page = fourth.arrive(r, &svc.url()).await.unwrap();
    let form = page.form().unwrap();
    for _ in 0..5 {
        page = fourth.submit(&form, &[("code", &recovery[0])]).await.unwrap();
    }
    assert_eq!(page.title(), "Too many wrong codes");
    let after = fourth
        .submit(
            &form,
            &[(
                "code",
                &totp_code(&secret, svc.now() + Duration::from_secs(30)).unwrap(),
            )],
        )
        .await
        .unwrap();
    assert_eq!(after.title(), "Sign-in expired", "the flow is gone");
}

#[tokio::test]
async fn forms_need_the_flows_csrf_token_and_browser() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let browser = Browser::new();
    let url = authorize_url(&svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    let page = browser.follow(&url, &svc.url()).await.unwrap();
    let form = page.form().unwrap();
    // Wrong CSRF token.
    let mut tampered = form.clone();
    for (k, v) in tampered.hidden.iter_mut() {
        if k == "csrf" {
            *v = "forged".into();
        }
    }
    let r = browser
        .submit(&tampered, &[("username", "admin@acme.test")])
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    // The right form from another browser (no binding cookie) is refused too.
    let r = Browser::new()
        .submit(&form, &[("username", "admin@acme.test")])
        .await
        .unwrap();
    assert_eq!(r.title(), "Sign-in expired");
    // Pages forbid framing and scripts.
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(!page.body.contains("<script"));
}

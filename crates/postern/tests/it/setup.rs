//! First-run setup through the web pages.

use std::time::Duration;

use postern_store::Role;
use postern_testkit::{Browser, TestService};

#[tokio::test]
async fn setup_creates_the_operator_tenant_once() {
    let svc = TestService::start().await.unwrap();
    let setup_url = svc.setup_url().unwrap().to_owned();
    let t = svc.bootstrap().await.unwrap();
    assert!(t.tenant.is_system);
    assert_eq!(t.admin.username, "admin@acme.test");
    assert!(
        t.admin.totp_sealed.is_some(),
        "the administrator enrolled TOTP during setup"
    );
    assert_eq!(t.recovery_codes.len(), 10);
    assert_eq!(
        svc.store().user_roles(&t.admin.id).await.unwrap(),
        vec![Role::GlobalAdministrator]
    );
    assert!(
        svc.store().client(&t.tenant.id, "postern-cli").await.is_ok(),
        "built-in CLI client exists"
    );
    let audit = svc.store().audit_entries(&t.tenant.id, 0, 10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "tenant.create" && e.actor == "setup"));

    // The link works once.
    let again = Browser::new().get(&setup_url).await.unwrap();
    assert_eq!(again.status, 404);
    assert_eq!(again.title(), "Setup link not valid");
    // A restart with a tenant present makes no new code.
    assert!(svc.sts().ensure_setup_code().await.unwrap().is_none());
}

#[tokio::test]
async fn setup_refuses_bad_codes_bad_input_and_expired_links() {
    let svc = TestService::start().await.unwrap();
    let url = svc.setup_url().unwrap().to_owned();
    let browser = Browser::new();
    let forged = browser
        .get(&format!(
            "{}/setup?code=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            svc.url()
        ))
        .await
        .unwrap();
    assert_eq!(forged.status, 404);

    // Every problem is listed at once, and nothing is created.
    let page = browser.get(&url).await.unwrap();
    let form = page.form().unwrap();
    let bad = browser
        .submit(
            &form,
            &[
                ("display_name", "Acme"),
                ("name", "A!"),
                ("domain", "not a domain"),
                ("username", "someone@else.test"),
                ("password", "short"),
                ("password_again", "short"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let err = bad.error().unwrap();
    for needle in ["tenant name", "domain name", "username", "12 characters"] {
        assert!(err.contains(needle), "{needle:?} missing from {err:?}");
    }
    let mismatch = browser
        .submit(
            &form,
            &[
                ("display_name", "Acme"),
                ("name", "acme"),
                ("domain", "acme.test"),
                ("username", "a@acme.test"),
                ("password", "a long enough password"),
                ("password_again", "another long password"),
            ],
        )
        .await
        .unwrap();
    assert!(mismatch.error().unwrap().contains("do not match"));
    assert!(!svc.store().has_tenants().await.unwrap());

    // A wrong TOTP code at the second step creates nothing either.
    let totp_step = browser
        .submit(
            &form,
            &[
                ("display_name", "Acme"),
                ("name", "acme"),
                ("domain", "acme.test"),
                ("username", "a@acme.test"),
                ("password", "a long enough password"),
                ("password_again", "a long enough password"),
            ],
        )
        .await
        .unwrap();
    let wrong = browser
        .submit(&totp_step.form().unwrap(), &[("totp", "000000")])
        .await
        .unwrap();
    assert_eq!(wrong.status, 400);
    assert!(!svc.store().has_tenants().await.unwrap());

    // After its lifetime the link stops working.
    svc.advance(Duration::from_secs(3601));
    assert_eq!(browser.get(&url).await.unwrap().status, 404);
}

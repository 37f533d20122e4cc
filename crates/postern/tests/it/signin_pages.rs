//! The sign-in pages answer each step with the next page itself: `/authorize`
//! shows the username page (no redirect to `/signin?flow=`), and the username's
//! post shows the password page without saving anything (the page carries the
//! name; the flow stays at the username stage until the password comes). What
//! that must not change: a reload is harmless, the form's CSRF token and the
//! browser binding still guard the password's post, and the name on the page
//! buys nothing a user could not type.

use postern_testkit::{Browser, Page, Pkce, TestService};

use crate::common::{authorize_url, query_param};

const REDIRECT: &str = "https://app.acme.test/cb";
const ALICE: &str = "alice@acme.test";
const ALICE_PASSWORD: &str = "alice's long password";
const BOB: &str = "bob@acme.test";
const BOB_PASSWORD: &str = "bob's quite long password";

/// The value of hidden field `name` on `page`.
fn hidden(page: &Page, name: &str) -> String {
    page.form()
        .unwrap()
        .hidden
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no hidden {name} on {}:\n{}", page.title(), page.body))
}

async fn username_page(svc: &TestService, browser: &Browser) -> Page {
    let url = authorize_url(svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    let page = browser.get(&url).await.unwrap();
    assert_eq!(
        (page.status.as_u16(), page.title()),
        (200, "Sign in".to_owned()),
        "/authorize answers with the username page itself:\n{}",
        page.body
    );
    page
}

#[tokio::test]
async fn each_step_answers_with_the_next_page_and_the_name_is_only_kept_on_the_page() {
    let svc = TestService::builder().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let alice = svc.create_user(&t.tenant, ALICE, ALICE_PASSWORD).await.unwrap();
    svc.create_user(&t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    let browser = Browser::new();

    let first = username_page(&svc, &browser).await;
    let flow = hidden(&first, "flow");
    let password = browser
        .submit(&first.form().unwrap(), &[("username", " Alice@ACME.test ")])
        .await
        .unwrap();
    assert_eq!(
        (password.status.as_u16(), password.title()),
        (200, "Enter your password".to_owned()),
        "{}",
        password.body
    );
    assert_eq!(
        hidden(&password, "account"),
        ALICE,
        "the normalized name rides on the page"
    );
    assert_eq!(hidden(&password, "flow"), flow);

    // Nothing was saved: the flow, shown again, is still at its username page.
    let shown = browser
        .get(&format!("{}/signin?flow={flow}", svc.issuer("acme")))
        .await
        .unwrap();
    assert_eq!(shown.title(), "Sign in", "{}", shown.body);

    // A reload posts the username again: the same password page.
    let reloaded = browser
        .submit(&first.form().unwrap(), &[("username", ALICE)])
        .await
        .unwrap();
    assert_eq!(reloaded.title(), "Enter your password");

    // An empty password is asked for again and never checked: more of them
    // than the lockout threshold leave the account open.
    for _ in 0..=t.tenant.lockout_threshold {
        let again = browser
            .submit(&password.form().unwrap(), &[("password", "")])
            .await
            .unwrap();
        assert_eq!(again.title(), "Enter your password");
        assert_eq!(again.error().as_deref(), Some("Enter your password."), "{}", again.body);
        assert_eq!(hidden(&again, "account"), ALICE);
    }

    // A name that cannot be one, put on the page by hand, goes back to the
    // username page.
    let bad = browser
        .submit(
            &password.form().unwrap(),
            &[("account", "\u{7}"), ("password", ALICE_PASSWORD)],
        )
        .await
        .unwrap();
    assert_eq!(bad.title(), "Sign in", "{}", bad.body);
    assert!(bad.error().is_some());

    // The name on the page is only what a user could have typed: Alice's
    // password does not sign in as Bob.
    let wrong = browser
        .submit(
            &password.form().unwrap(),
            &[("account", BOB), ("password", ALICE_PASSWORD)],
        )
        .await
        .unwrap();
    assert_eq!(wrong.title(), "Enter your password");
    assert!(
        wrong.error().unwrap_or_default().contains("incorrect"),
        "{}",
        wrong.body
    );

    // A wrong CSRF token is refused before anything is checked.
    let forged = browser
        .submit(
            &password.form().unwrap(),
            &[("csrf", "forged"), ("password", ALICE_PASSWORD)],
        )
        .await
        .unwrap();
    assert_eq!(forged.status.as_u16(), 403, "{}", forged.body);

    // Another browser (no binding cookie of this flow) cannot post it.
    let other = Browser::new();
    let stolen = other
        .submit(&password.form().unwrap(), &[("password", ALICE_PASSWORD)])
        .await
        .unwrap();
    assert_eq!(stolen.title(), "Sign-in expired", "{}", stolen.body);

    // The right password finishes the sign-in: a code for Alice.
    let done = browser
        .submit(&password.form().unwrap(), &[("password", ALICE_PASSWORD)])
        .await
        .unwrap();
    let location = done.location().unwrap_or_default();
    assert!(location.starts_with(REDIRECT), "{} {}", done.status, done.body);
    assert!(query_param(&location, "code").is_some(), "{location}");
    let signed_in: Vec<_> = svc
        .store()
        .signins(&t.tenant.id, postern_time::UnixTime::from_secs(0), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.outcome == postern_store::SigninOutcome::Success)
        .collect();
    assert_eq!(signed_in.len(), 1);
    assert_eq!(signed_in[0].user_id.as_deref(), Some(alice.id.as_str()));

    // The flow is used up: posting it again is an expired sign-in.
    let replay = browser
        .submit(&password.form().unwrap(), &[("password", ALICE_PASSWORD)])
        .await
        .unwrap();
    assert_eq!(replay.title(), "Sign-in expired", "{}", replay.body);

    // "Use another account" goes back to the username page (in a browser
    // without Alice's session, which would answer /authorize at once).
    let browser = Browser::new();
    let second = username_page(&svc, &browser).await;
    let password = browser
        .submit(&second.form().unwrap(), &[("username", BOB)])
        .await
        .unwrap();
    let back = browser
        .submit(&password.form().unwrap(), &[("action", "back")])
        .await
        .unwrap();
    let back = browser.arrive(back, &svc.url()).await.unwrap();
    assert_eq!(back.title(), "Sign in", "{}", back.body);
}

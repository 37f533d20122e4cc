//! The token endpoint's refusals: replayed code, wrong PKCE verifier, wrong
//! redirect URI, wrong client, expired code and token, wrong audience; a refused
//! refresh that leaves its token usable; the device flow's polling answers; and
//! the tokens of a published app's client: only users the app admits get a code,
//! and nothing the code flow yields passes as the app's identity assertion.

use std::time::Duration;

use postern_store::{Backend, PrincipalKind};
use postern_sts::relying_party::{ASSERTION_TYP, AssertionSubject, assertion_audience};
use postern_sts::{Admission, Denial, TokenError};
use postern_testkit::{Browser, Page, Pkce, TenantFixture, TestService};
use serde_json::{Value, json};

use crate::common::{admin_login, authorize_url, login, query_param, sign_in_for_code, token_request};

const REDIRECT: &str = "https://app.acme.test/cb";

struct Fixture {
    svc: TestService,
    browser: Browser,
    login: postern_testkit::Login,
}

async fn fixture() -> Fixture {
    fixture_on(TestService::start().await.unwrap()).await
}

async fn fixture_on(svc: TestService) -> Fixture {
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(
        &t.tenant,
        "app",
        Some("app-secret"),
        &[REDIRECT],
        &["authorization_code", "refresh_token"],
    )
    .await
    .unwrap();
    svc.create_client(
        &t.tenant,
        "other",
        Some("other-secret"),
        &["https://other.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let login = admin_login(&svc, &t);
    Fixture {
        svc,
        browser: Browser::new(),
        login,
    }
}

/// Signs in (once; later calls use the SSO session) and returns a fresh code.
async fn code(f: &Fixture, pkce: &Pkce) -> String {
    let url = authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "");
    let page = sign_in_for_code(&f.browser, &url, &f.login).await;
    query_param(&page.location().unwrap(), "code").unwrap()
}

fn exchange<'a>(code: &'a str, verifier: &'a str, redirect: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", redirect),
    ]
}

#[tokio::test]
async fn code_exchange_refusals() {
    let f = fixture().await;
    let app = Some(("app", "app-secret"));

    // Wrong PKCE verifier.
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    let (status, body) = token_request(&f.svc, "acme", app, &exchange(&c, &Pkce::new().verifier, REDIRECT)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");

    // Wrong redirect URI at the token endpoint.
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    let (status, body) = token_request(
        &f.svc,
        "acme",
        app,
        &exchange(&c, &pkce.verifier, "https://app.acme.test/other"),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));

    // A code presented by another client.
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    let (status, body) = token_request(
        &f.svc,
        "acme",
        Some(("other", "other-secret")),
        &exchange(&c, &pkce.verifier, REDIRECT),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));

    // Wrong client secret.
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    let (status, body) = token_request(
        &f.svc,
        "acme",
        Some(("app", "nope")),
        &exchange(&c, &pkce.verifier, REDIRECT),
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));

    // Expired code.
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    f.svc.advance(Duration::from_secs(61));
    let (status, body) = token_request(&f.svc, "acme", app, &exchange(&c, &pkce.verifier, REDIRECT)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(body["error_description"].as_str().unwrap().contains("expired"));

    // Replayed code: the second use fails and revokes what the first one got.
    let pkce = Pkce::new();
    let url = authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "");
    let url = url.replace("scope=openid%20profile", "scope=openid%20offline_access");
    let page = f.browser.get(&url).await.unwrap();
    let c = query_param(&page.location().unwrap(), "code").unwrap();
    let (status, first) = token_request(&f.svc, "acme", app, &exchange(&c, &pkce.verifier, REDIRECT)).await;
    assert_eq!(status, 200, "{first}");
    let refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = token_request(&f.svc, "acme", app, &exchange(&c, &pkce.verifier, REDIRECT)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    let (status, body) = token_request(
        &f.svc,
        "acme",
        app,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "tokens of a replayed code are revoked"
    );

    // Unsupported grant type, no client authentication.
    let (status, body) = token_request(&f.svc, "acme", app, &[("grant_type", "password")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
    let (status, _) = token_request(&f.svc, "acme", None, &[("grant_type", "authorization_code")]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn authorization_request_refusals() {
    let f = fixture().await;
    let pkce = Pkce::new();
    // An unregistered redirect URI is never redirected to: the user sees a page.
    let url = authorize_url(&f.svc, "acme", "app", "https://evil.test/steal", &pkce.challenge, "");
    let page = f.browser.get(&url).await.unwrap();
    assert_eq!(page.status, 400);
    assert!(page.location().is_none());
    assert!(page.body.contains("not registered"));
    // Unknown client: a page too.
    let url = authorize_url(&f.svc, "acme", "ghost", REDIRECT, &pkce.challenge, "");
    assert_eq!(f.browser.get(&url).await.unwrap().status, 400);
    // Missing PKCE, plain PKCE, implicit flow: back to the client with an error.
    for (bad, expected) in [
        (
            url_without(
                &authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, ""),
                "code_challenge",
            ),
            "invalid_request",
        ),
        (
            authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "").replace("S256", "plain"),
            "invalid_request",
        ),
        (
            authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "")
                .replace("response_type=code", "response_type=token"),
            "unsupported_response_type",
        ),
        (
            authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "")
                .replace("scope=openid%20profile", "scope=profile"),
            "invalid_scope",
        ),
        (
            authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "&prompt=none"),
            "login_required",
        ),
    ] {
        let page = f.browser.get(&bad).await.unwrap();
        let loc = page
            .location()
            .unwrap_or_else(|| panic!("no redirect for {bad}: {}", page.body));
        assert!(loc.starts_with(REDIRECT));
        assert_eq!(query_param(&loc, "error").as_deref(), Some(expected), "{bad}");
        assert_eq!(query_param(&loc, "state").as_deref(), Some("st4te"));
    }
    // Another tenant's issuer does not know this client.
    let url = authorize_url(&f.svc, "nope", "app", REDIRECT, &pkce.challenge, "");
    assert_eq!(f.browser.get(&url).await.unwrap().status, 404);
}

fn url_without(url: &str, param: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    u.into()
}

#[tokio::test]
async fn access_tokens_expire_and_are_bound_to_their_audience() {
    let f = fixture().await;
    let pkce = Pkce::new();
    let c = code(&f, &pkce).await;
    let (status, tokens) = token_request(
        &f.svc,
        "acme",
        Some(("app", "app-secret")),
        &exchange(&c, &pkce.verifier, REDIRECT),
    )
    .await;
    assert_eq!(status, 200);
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let userinfo = format!("{}/userinfo", f.svc.issuer("acme"));

    // The app's token is good for userinfo...
    assert_eq!(
        http.get(&userinfo).bearer_auth(access).send().await.unwrap().status(),
        200
    );
    // ...but not for the admin API (wrong audience), nor is the ID token.
    for token in [access, id_token] {
        let r = http
            .get(format!("{}/api/v1/me", f.svc.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "admin API must refuse a token for another audience");
    }
    assert_eq!(
        f.svc.sts().verify_admin_token(access).await.unwrap().unwrap_err(),
        postern_sts::TokenError::WrongAudience
    );
    // An ID token is not an access token, even at userinfo.
    assert_eq!(
        http.get(&userinfo).bearer_auth(id_token).send().await.unwrap().status(),
        401
    );
    // A tampered token fails its signature.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    assert_eq!(
        http.get(&userinfo)
            .bearer_auth(parts.join("."))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // After ten minutes the access token has expired.
    f.svc.advance(Duration::from_secs(601));
    let r = http.get(&userinfo).bearer_auth(access).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_eq!(
        f.svc
            .sts()
            .verify_access_token("acme", access, "app")
            .await
            .unwrap()
            .unwrap_err(),
        postern_sts::TokenError::Expired
    );
}

#[tokio::test]
async fn device_flow_polling_answers() {
    let f = fixture().await;
    let http = reqwest::Client::new();
    let start: serde_json::Value = http
        .post(format!("{}/device_authorization", f.svc.issuer("acme")))
        .form(&[("client_id", "postern-cli"), ("scope", "openid postern:admin")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = start["device_code"].as_str().unwrap().to_owned();
    let poll = |code: String| {
        let svc = &f.svc;
        async move {
            token_request(
                svc,
                "acme",
                None,
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("device_code", &code),
                    ("client_id", "postern-cli"),
                ],
            )
            .await
        }
    };
    assert_eq!(poll(device_code.clone()).await.1["error"], "authorization_pending");
    assert_eq!(
        poll(device_code.clone()).await.1["error"],
        "slow_down",
        "polled again at once"
    );
    f.svc.advance(Duration::from_secs(11));
    assert_eq!(poll(device_code.clone()).await.1["error"], "authorization_pending");

    // Denied by the user.
    let entry = f
        .browser
        .get(start["verification_uri_complete"].as_str().unwrap())
        .await
        .unwrap();
    let next = f.browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let mut page = f.browser.arrive(next, &f.svc.url()).await.unwrap();
    // Sign in (answering the pages) up to the approval page, then deny.
    loop {
        let form = page.form().unwrap();
        if page.title() == "Approve sign-in on a device" {
            let denied = f.browser.submit(&form, &[("action", "deny")]).await.unwrap();
            assert_eq!(denied.title(), "Request denied");
            break;
        }
        let fields: Vec<(&str, String)> = if form.fields.contains(&"username".into()) {
            vec![("username", f.login.username.clone())]
        } else if form.fields.contains(&"password".into()) {
            vec![("password", f.login.password.clone())]
        } else {
            vec![(
                "code",
                postern_testkit::totp_code(f.login.totp_secret.as_ref().unwrap(), f.svc.now()).unwrap(),
            )]
        };
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = f.browser.submit(&form, &fields).await.unwrap();
        page = f.browser.arrive(r, &f.svc.url()).await.unwrap();
    }
    f.svc.advance(Duration::from_secs(11));
    assert_eq!(poll(device_code.clone()).await.1["error"], "access_denied");

    // Unknown and expired codes.
    assert_eq!(poll("nonsense".into()).await.1["error"], "invalid_grant");
    let again: serde_json::Value = http
        .post(format!("{}/device_authorization", f.svc.issuer("acme")))
        .form(&[("client_id", "postern-cli")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    f.svc.advance(Duration::from_secs(601));
    assert_eq!(
        poll(again["device_code"].as_str().unwrap().to_owned()).await.1["error"],
        "expired_token"
    );
    // A confidential or unknown client cannot start the device flow.
    let r = http
        .post(format!("{}/device_authorization", f.svc.issuer("acme")))
        .form(&[("client_id", "app")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

/// A refresh asking for a wider scope is refused before the token is spent:
/// the client's corrected retry with the same token works (it is not taken for
/// reuse), and real reuse afterwards still revokes the family.
async fn refused_refresh_leaves_the_token_usable(backend: Backend) {
    let f = fixture_on(TestService::builder().backend(backend).start().await.unwrap()).await;
    let app = Some(("app", "app-secret"));
    let pkce = Pkce::new();
    let url = authorize_url(&f.svc, "acme", "app", REDIRECT, &pkce.challenge, "")
        .replace("scope=openid%20profile", "scope=openid%20profile%20offline_access");
    let page = sign_in_for_code(&f.browser, &url, &f.login).await;
    let c = query_param(&page.location().unwrap(), "code").unwrap();
    let (status, tokens) = token_request(&f.svc, "acme", app, &exchange(&c, &pkce.verifier, REDIRECT)).await;
    assert_eq!(status, 200, "{tokens}");
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String, scope: &'static str| {
        let svc = &f.svc;
        async move {
            token_request(
                svc,
                "acme",
                app,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("scope", scope),
                ],
            )
            .await
        }
    };

    let (status, body) = refresh(first.clone(), "openid profile email").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    let (status, body) = refresh(first.clone(), "openid").await;
    assert_eq!(status, 200, "the retry with the same token works: {body}");
    assert_eq!(body["scope"], "openid");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first, "it rotated");

    let (status, body) = refresh(first, "openid").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(
        body["error_description"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let (status, body) = refresh(second, "openid").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "reuse revoked the family: {body}"
    );
}

#[tokio::test]
async fn refused_refresh_leaves_the_token_usable_on_sqlite() {
    refused_refresh_leaves_the_token_usable(Backend::Sqlite).await;
}

#[tokio::test]
async fn refused_refresh_leaves_the_token_usable_on_postgresql() {
    refused_refresh_leaves_the_token_usable(Backend::Postgres).await;
}

/// The published app `https://wiki.acme.test/` (signed in at the STS), its ID and
/// its client's redirect URI.
struct Wiki {
    app: postern_store::App,
    callback: String,
}

async fn publish_wiki(svc: &TestService, t: &TenantFixture) -> Wiki {
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/apps", svc.url()))
        .bearer_auth(token)
        .json(&json!({
            "name": "Wiki",
            "external_url": "https://wiki.acme.test/",
            "internal_url": "http://wiki.corp/",
            "preauth": "sts",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let view: Value = r.json().await.unwrap();
    let app = svc
        .store()
        .app(&t.tenant.id, view["id"].as_str().unwrap())
        .await
        .unwrap();
    let callback = format!("https://wiki.acme.test/{}", postern_store::APP_CALLBACK_PATH);
    Wiki { app, callback }
}

/// A redirect back to the app's callback with `access_denied` naming `why`,
/// the request's `state`, and no code.
fn assert_access_denied(page: &Page, wiki: &Wiki, why: &str) {
    let location = page
        .location()
        .unwrap_or_else(|| panic!("expected a redirect, got {} {}", page.status, page.body));
    assert!(location.starts_with(&wiki.callback), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied"),
        "{location}"
    );
    let description = query_param(&location, "error_description").unwrap_or_default();
    assert!(description.contains(why), "{description:?} should say {why:?}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    assert_eq!(query_param(&location, "code"), None, "no code for a refused user");
}

#[tokio::test]
async fn an_app_client_issues_codes_only_to_users_the_app_admits() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let wiki = publish_wiki(&svc, &t).await;
    let password = "bob's rather long password";
    let bob = svc.create_user(&t.tenant, "bob@acme.test", password).await.unwrap();
    let browser = Browser::new();
    let start = |pkce: &Pkce| authorize_url(&svc, "acme", &wiki.app.client_id, &wiki.callback, &pkce.challenge, "");

    // Fresh sign-in: Bob authenticates, but the wiki is not his.
    let page = sign_in_for_code(&browser, &start(&Pkce::new()), &login(&svc, "bob@acme.test", password)).await;
    assert_access_denied(&page, &wiki, "not assigned");
    // Single sign-on: he has a session now; still refused, and no page shown.
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert_access_denied(&page, &wiki, "not assigned");

    // Assigned through a group, the same decision as the front door's admits him.
    let store = svc.store();
    let group = store
        .create_group(&t.tenant.id, "wiki-readers", "", svc.now())
        .await
        .unwrap();
    store.add_member(&t.tenant.id, &group.id, &bob.id).await.unwrap();
    store
        .assign_app(&t.tenant.id, &wiki.app.id, PrincipalKind::Group, &group.id)
        .await
        .unwrap();
    assert_eq!(
        svc.sts().app_admits(&wiki.app, &bob.id).await.unwrap(),
        Admission::Allowed {
            groups: vec!["wiki-readers".into()]
        }
    );
    let pkce = Pkce::new();
    let page = browser.get(&start(&pkce)).await.unwrap();
    let code = query_param(&page.location().unwrap(), "code").expect("an admitted user gets a code");
    let (status, tokens) = token_request(
        &svc,
        "acme",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &pkce.verifier),
            ("redirect_uri", &wiki.callback),
            ("client_id", &wiki.app.client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");

    // What /authorize reads is cached; every change applies to the very next
    // request. Out of the group: refused at once (single sign-on, no page).
    store.remove_member(&t.tenant.id, &group.id, &bob.id).await.unwrap();
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert_access_denied(&page, &wiki, "not assigned");
    // Back in: a code at once.
    store.add_member(&t.tenant.id, &group.id, &bob.id).await.unwrap();
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert!(query_param(&page.location().unwrap(), "code").is_some(), "member again");
    // The group unassigned from the app: refused at once.
    store
        .unassign_app(&t.tenant.id, &wiki.app.id, PrincipalKind::Group, &group.id)
        .await
        .unwrap();
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert_access_denied(&page, &wiki, "not assigned");
    store
        .assign_app(&t.tenant.id, &wiki.app.id, PrincipalKind::Group, &group.id)
        .await
        .unwrap();
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "assigned again"
    );

    // Disabled, or of another tenant: refused with the reason.
    let (beta, beta_admin) = second_tenant(&svc).await;
    assert_eq!(
        svc.sts().app_admits(&wiki.app, &beta_admin.id).await.unwrap(),
        Admission::Denied(Denial::NoSuchUser),
        "a user of another tenant is nobody here"
    );
    assert_ne!(beta.id, t.tenant.id);
    store
        .update_user(
            &t.tenant.id,
            &bob.id,
            &postern_store::UserUpdate {
                enabled: Some(false),
                ..Default::default()
            },
            svc.now(),
        )
        .await
        .unwrap();
    assert_eq!(
        svc.sts().app_admits(&wiki.app, &bob.id).await.unwrap(),
        Admission::Denied(Denial::Disabled)
    );
    // His session no longer signs him in: no code, the sign-in page instead.
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    let location = page.location().unwrap_or_default();
    assert!(
        query_param(&location, "code").is_none(),
        "a disabled user gets no code: {location}"
    );
    assert_eq!(
        (page.status.as_u16(), page.title()),
        (200, "Sign in".to_owned()),
        "{}",
        page.body
    );

    // The app deleted: its client is gone at once.
    store.delete_app(&t.tenant.id, &wiki.app.id).await.unwrap();
    let page = browser.get(&start(&Pkce::new())).await.unwrap();
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("not registered"), "{}", page.body);

    // A client that is not an app's keeps signing in every user of the tenant.
    svc.create_client(&t.tenant, "portal", None, &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    let carol = "carol's rather long password";
    svc.create_user(&t.tenant, "carol@acme.test", carol).await.unwrap();
    let url = authorize_url(&svc, "acme", "portal", REDIRECT, &Pkce::new().challenge, "");
    let page = sign_in_for_code(&Browser::new(), &url, &login(&svc, "carol@acme.test", carol)).await;
    assert!(query_param(&page.location().unwrap(), "code").is_some());
}

async fn second_tenant(svc: &TestService) -> (postern_store::Tenant, postern_store::User) {
    let (tenant, admin, _) = svc
        .sts()
        .create_tenant(
            postern_sts::NewTenantRequest {
                name: "beta".into(),
                display_name: "Beta".into(),
                domain: "beta.test".into(),
                admin_username: "admin@beta.test".into(),
                admin_password: "correct horse for beta".into(),
                is_system: false,
                admin_totp: None,
            },
            "test",
        )
        .await
        .unwrap();
    (tenant, admin)
}

/// The decoded header of a JWT.
fn jwt_header(token: &str) -> Value {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

#[tokio::test]
async fn the_code_flow_against_an_app_client_yields_no_assertion() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let wiki = publish_wiki(&svc, &t).await;
    let sts = svc.sts();
    svc.store()
        .assign_app(&t.tenant.id, &wiki.app.id, PrincipalKind::User, &t.admin.id)
        .await
        .unwrap();

    // An assigned user runs the code flow against the app's public client, as
    // any browser can, and holds its ID and access tokens.
    let pkce = Pkce::new();
    let url = authorize_url(&svc, "acme", &wiki.app.client_id, &wiki.callback, &pkce.challenge, "");
    let page = sign_in_for_code(&Browser::new(), &url, &admin_login(&svc, &t)).await;
    let code = query_param(&page.location().unwrap(), "code").unwrap();
    let (status, tokens) = token_request(
        &svc,
        "acme",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &pkce.verifier),
            ("redirect_uri", &wiki.callback),
            ("client_id", &wiki.app.client_id),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let id_token = tokens["id_token"].as_str().unwrap();
    let access_token = tokens["access_token"].as_str().unwrap();

    // Neither passes as the app's assertion: wrong typ, and an audience (the
    // client ID) that is not the assertion's.
    for token in [id_token, access_token] {
        assert_eq!(
            sts.verify_assertion(&t.tenant, token, &wiki.app.id)
                .await
                .unwrap()
                .unwrap_err(),
            TokenError::WrongType
        );
    }
    assert_eq!(jwt_header(id_token)["typ"], "JWT");
    let id_claims: Value = jsonwebtoken_claims(id_token);
    assert_eq!(id_claims["aud"], wiki.app.client_id.as_str());
    assert_ne!(id_claims["aud"], assertion_audience(&wiki.app.id).as_str());

    // A real assertion passes, names its own typ and audience, and is neither an
    // ID token nor an access token of the app's client.
    let groups = Vec::new();
    let subject = AssertionSubject {
        user_id: &t.admin.id,
        username: &t.admin.username,
        email: None,
        groups: &groups,
    };
    let ttl = Duration::from_secs(300);
    let assertion = sts
        .sign_assertion(&t.tenant, &wiki.app.id, &subject, ttl)
        .await
        .unwrap();
    assert_eq!(jwt_header(&assertion)["typ"], ASSERTION_TYP);
    let claims = sts
        .verify_assertion(&t.tenant, &assertion, &wiki.app.id)
        .await
        .unwrap()
        .expect("a real assertion verifies");
    assert_eq!(claims.aud, format!("urn:postern:app:{}", wiki.app.id));
    assert_eq!(
        (claims.sub.as_str(), claims.tid.as_str()),
        (t.admin.id.as_str(), t.tenant.id.as_str())
    );
    assert_eq!(
        sts.verify_id_token("acme", &assertion, &wiki.app.client_id, "n0nce")
            .await
            .unwrap()
            .unwrap_err(),
        TokenError::WrongType
    );
    assert_eq!(
        sts.verify_access_token("acme", &assertion, &wiki.app.client_id)
            .await
            .unwrap()
            .unwrap_err(),
        TokenError::WrongType
    );
    let r = reqwest::Client::new()
        .get(format!("{}/userinfo", svc.issuer("acme")))
        .bearer_auth(&assertion)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an assertion is no access token");

    // Another app's assertion, another tenant's view, and an old one: refused.
    let other = sts
        .sign_assertion(&t.tenant, "another-app", &subject, ttl)
        .await
        .unwrap();
    assert_eq!(
        sts.verify_assertion(&t.tenant, &other, &wiki.app.id)
            .await
            .unwrap()
            .unwrap_err(),
        TokenError::WrongAudience
    );
    let (beta, _) = second_tenant(&svc).await;
    assert_eq!(
        sts.verify_assertion(&beta, &assertion, &wiki.app.id)
            .await
            .unwrap()
            .unwrap_err(),
        TokenError::WrongIssuer
    );
    svc.advance(ttl + Duration::from_secs(1));
    assert_eq!(
        sts.verify_assertion(&t.tenant, &assertion, &wiki.app.id)
            .await
            .unwrap()
            .unwrap_err(),
        TokenError::Expired
    );
}

/// The decoded claims of a JWT, unverified (the test inspects them only).
fn jsonwebtoken_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

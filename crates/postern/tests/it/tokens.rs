//! The token endpoint's refusals: replayed code, wrong PKCE verifier, wrong
//! redirect URI, wrong client, expired code and token, wrong audience; and the
//! device flow's polling answers.

use std::time::Duration;

use postern_testkit::{Browser, Pkce, TestService};

use crate::common::{admin_login, authorize_url, query_param, sign_in_for_code, token_request};

const REDIRECT: &str = "https://app.acme.test/cb";

struct Fixture {
    svc: TestService,
    browser: Browser,
    login: postern_testkit::Login,
}

async fn fixture() -> Fixture {
    let svc = TestService::start().await.unwrap();
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
    let mut page = f.browser.follow(&next.location().unwrap(), &f.svc.url()).await.unwrap();
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
        page = f.browser.follow(&r.location().unwrap(), &f.svc.url()).await.unwrap();
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

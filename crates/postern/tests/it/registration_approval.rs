//! SEC-14, approvals say what they approve: a connector or agent registration
//! through the device flow shows a page naming the kind, the component, the
//! organisation, the requesting address and the code; approving it with only a
//! browser session takes the password and the authenticator code again; and the
//! host receives a registration credential (one kind, one name, minutes of life,
//! no refresh token), never an admin token.

use std::time::Duration;

use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_testkit::{Browser, Page, TenantFixture, TestService, totp_code};
use postern_uplink::{Credential, RegisterOptions, StateDir, UplinkError, register};
use serde_json::Value;

use crate::common::token_request;

/// The device authorization request as `postern connector register` sends it,
/// from `address` (the service trusts loopback as a proxy). Returns status and body.
async fn device_request(svc: &TestService, address: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let mut fields = vec![("client_id", "postern-cli")];
    fields.extend_from_slice(form);
    let r = reqwest::Client::new()
        .post(format!("{}/device_authorization", svc.issuer("acme")))
        .header("x-forwarded-for", address)
        .form(&fields)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A registration request for a connector named `name`; its device authorization.
async fn connector_request(svc: &TestService, address: &str, name: &str) -> Value {
    let (status, body) = device_request(
        svc,
        address,
        &[("scope", "postern:register:connector"), ("component_name", name)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The device's poll of the token endpoint.
async fn poll(svc: &TestService, device: &Value) -> (u16, Value) {
    token_request(
        svc,
        "acme",
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "postern-cli"),
            ("device_code", device["device_code"].as_str().unwrap()),
        ],
    )
    .await
}

/// Opens the device's verification link and answers the sign-in pages (username,
/// password, authenticator code) until the approval page, which it returns.
async fn open_approval(browser: &Browser, svc: &TestService, t: &TenantFixture, device: &Value) -> Page {
    let entry = browser
        .get(device["verification_uri_complete"].as_str().unwrap())
        .await
        .unwrap();
    let started = browser.submit(&entry.form().unwrap(), &[]).await.unwrap();
    let mut page = browser.arrive(started, &svc.url()).await.unwrap();
    for _ in 0..5 {
        if page.title().starts_with("Approve") {
            return page;
        }
        let form = page.form().unwrap();
        let code = totp_code(&t.admin_totp_secret, svc.now()).unwrap();
        let answer = match page.title().as_str() {
            "Sign in" => ("username", t.admin.username.as_str()),
            "Enter your password" => ("password", t.admin_password.as_str()),
            "Verify your identity" => ("code", code.as_str()),
            other => panic!("unexpected page {other:?}: {}", page.body),
        };
        let next = browser.submit(&form, &[answer]).await.unwrap();
        page = browser.arrive(next, &svc.url()).await.unwrap();
    }
    panic!("no approval page: {}", page.body)
}

async fn service() -> (TestService, TenantFixture) {
    let svc = TestService::builder().trust_loopback_proxy().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    (svc, t)
}

#[tokio::test]
async fn the_approval_page_names_the_registration_and_where_it_came_from() {
    let (svc, t) = service().await;
    let device = connector_request(&svc, "203.0.113.50", "gw-berlin-1").await;
    let code = device["user_code"].as_str().unwrap();
    let browser = Browser::new();
    let page = open_approval(&browser, &svc, &t, &device).await;
    assert_eq!(page.title(), "Approve a connector registration");
    let said =
        "Register a connector named gw-berlin-1 for organisation Acme Corp (acme) (requested from 203.0.113.50 at ";
    assert!(page.body.contains(said), "{}", page.body);
    assert!(page.body.contains(&format!(" UTC, code {code}).")), "{}", page.body);
    assert!(!page.body.contains("asks to sign in"), "not the CLI sign-in wording");
    // Password and code were just checked in this flow: nothing more to enter.
    let form = page.form().unwrap();
    assert!(form.fields.is_empty(), "{:?}", form.fields);
    let (status, pending) = poll(&svc, &device).await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let done = browser.submit(&form, &[]).await.unwrap();
    assert_eq!(done.title(), "Registration approved", "{}", done.body);

    // The host gets a registration credential, not an admin token.
    let (status, tokens) = poll(&svc, &device).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "postern:register:connector");
    assert_eq!(tokens["expires_in"], 300);
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    let audit = svc.store().audit_entries(&t.tenant.id, 0, 100).await.unwrap();
    let approval = audit
        .iter()
        .find(|e| e.action == "connector.approve_registration")
        .expect("the approval is audited");
    let detail: Value = serde_json::from_str(&approval.detail).unwrap();
    assert_eq!(
        (&detail["name"], &detail["requested_from"]),
        (&Value::from("gw-berlin-1"), &Value::from("203.0.113.50"))
    );

    // A command-line sign-in keeps its own wording, also naming tenant and
    // address (a new time step: each authenticator code works once).
    svc.advance(Duration::from_secs(30));
    let (status, cli) = device_request(&svc, "198.51.100.7", &[("scope", "openid postern:admin")]).await;
    assert_eq!(status, 200, "{cli}");
    let page = open_approval(&Browser::new(), &svc, &t, &cli).await;
    assert_eq!(page.title(), "Approve sign-in on a device");
    let said = "Postern command line on another device asks to sign in as admin@acme.test to organisation \
                Acme Corp (acme) (requested from 198.51.100.7 at ";
    assert!(page.body.contains(said), "{}", page.body);
}

#[tokio::test]
async fn registration_requests_must_name_one_kind_and_a_plain_component_name() {
    let (svc, t) = service().await;
    /// A request's form, the OAuth error, and words its description holds.
    type Refusal<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let refusals: [Refusal; 5] = [
        (
            &[("scope", "postern:register:agent")],
            "invalid_request",
            "component_name",
        ),
        (
            &[
                ("scope", "postern:register:connector"),
                ("component_name", "gw 1 for organisation Beta"),
            ],
            "invalid_request",
            "letters, digits",
        ),
        (
            &[
                ("scope", "openid postern:register:connector"),
                ("component_name", "gw-1"),
            ],
            "invalid_scope",
            "only granted alone",
        ),
        (
            &[("scope", "openid postern:admin"), ("component_name", "gw-1")],
            "invalid_request",
            "only for connector and agent registrations",
        ),
        (
            &[("scope", "postern:register:nothing")],
            "invalid_scope",
            "only granted alone",
        ),
    ];
    for (form, error, says) in refusals {
        let (status, body) = device_request(&svc, "192.0.2.1", form).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{form:?}: {body}");
        assert!(
            body["error_description"].as_str().unwrap().contains(says),
            "{form:?}: {body}"
        );
    }
    // The authorization endpoint never grants a registration scope either.
    svc.create_client(
        &t.tenant,
        "app",
        Some("x"),
        &["https://app.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let url = crate::common::authorize_url(
        &svc,
        "acme",
        "app",
        "https://app.acme.test/cb",
        &postern_testkit::Pkce::new().challenge,
        "",
    )
    .replace(
        "scope=openid%20profile",
        "scope=openid%20postern%3Aregister%3Aconnector",
    );
    let r = Browser::new().get(&url).await.unwrap();
    let location = r.location().unwrap_or_default();
    assert!(location.contains("error=invalid_scope"), "{} {location}", r.status);
}

#[tokio::test]
async fn a_session_alone_cannot_approve_a_registration() {
    let (svc, t) = service().await;
    // The administrator signs in once (a CLI sign-in): the browser has a session.
    let browser = Browser::new();
    let (_, cli) = device_request(&svc, "198.51.100.7", &[("scope", "openid postern:admin")]).await;
    let page = open_approval(&browser, &svc, &t, &cli).await;
    assert!(page.form().unwrap().fields.is_empty(), "a CLI sign-in stays one click");
    assert_eq!(
        browser.submit(&page.form().unwrap(), &[]).await.unwrap().title(),
        "Device approved"
    );

    // A registration opened in that browser goes straight to the approval page,
    // which asks for the password and the authenticator code again.
    let device = connector_request(&svc, "203.0.113.50", "gw-1").await;
    let page = open_approval(&browser, &svc, &t, &device).await;
    assert_eq!(page.title(), "Approve a connector registration");
    let form = page.form().unwrap();
    assert_eq!(form.fields, ["password", "code"]);
    // Still waiting (polls this close together may also be told to slow down).
    let pending = || async {
        let error = poll(&svc, &device).await.1["error"].clone();
        assert!(error == "authorization_pending" || error == "slow_down", "{error}");
        "not approved"
    };

    // One click: refused, nothing approved.
    let r = browser.submit(&form, &[]).await.unwrap();
    assert_eq!(
        r.error().as_deref(),
        Some("Enter your password to approve this registration.")
    );
    assert_eq!(pending().await, "not approved");
    // A wrong password goes through smart lockout like a sign-in, and is logged.
    let r = browser
        .submit(&form, &[("password", "not the password"), ("code", "000000")])
        .await
        .unwrap();
    assert!(r.error().unwrap().contains("incorrect"), "{:?}", r.error());
    let failed = svc
        .store()
        .signins(&t.tenant.id, svc.now() - Duration::from_secs(60), 50)
        .await
        .unwrap();
    assert!(
        failed
            .iter()
            .any(|e| e.detail == "password again, to approve a registration"),
        "{failed:?}"
    );
    // The password alone is not enough for an account with an authenticator.
    let r = browser.submit(&form, &[("password", &t.admin_password)]).await.unwrap();
    assert_eq!(
        r.error().as_deref(),
        Some("Enter the code from your authenticator app.")
    );
    let r = browser
        .submit(&form, &[("password", &t.admin_password), ("code", "000000")])
        .await
        .unwrap();
    assert!(r.error().unwrap().contains("not right"), "{:?}", r.error());
    assert_eq!(pending().await, "not approved");

    // Both, with a fresh code: approved.
    svc.advance(Duration::from_secs(30));
    let code = totp_code(&t.admin_totp_secret, svc.now()).unwrap();
    let done = browser
        .submit(&form, &[("password", &t.admin_password), ("code", &code)])
        .await
        .unwrap();
    assert_eq!(done.title(), "Registration approved", "{}", done.body);
    let (status, tokens) = poll(&svc, &device).await;
    assert_eq!(status, 200, "{tokens}");

    // Denying takes no proof.
    let other = connector_request(&svc, "203.0.113.51", "gw-2").await;
    let page = open_approval(&browser, &svc, &t, &other).await;
    let denied = browser
        .submit(&page.form().unwrap(), &[("action", "deny")])
        .await
        .unwrap();
    assert_eq!(denied.title(), "Request denied");
    assert_eq!(poll(&svc, &other).await.1["error"], "access_denied");
}

#[tokio::test]
async fn the_credential_registers_its_kind_and_name_only() {
    let (svc, t) = service().await;
    let device = connector_request(&svc, "203.0.113.50", "gw-1").await;
    let browser = Browser::new();
    let page = open_approval(&browser, &svc, &t, &device).await;
    browser.submit(&page.form().unwrap(), &[]).await.unwrap();
    let (_, tokens) = poll(&svc, &device).await;
    let credential = tokens["access_token"].as_str().unwrap().to_owned();

    // Useless for the admin API and userinfo.
    let http = reqwest::Client::new();
    for url in [
        format!("{}/api/v1/me", svc.url()),
        format!("{}/userinfo", svc.issuer("acme")),
    ] {
        let r = http.get(&url).bearer_auth(&credential).send().await.unwrap();
        assert!([401, 403].contains(&r.status().as_u16()), "{url}: {}", r.status());
    }

    let dir = tempfile::tempdir().unwrap();
    let options = |kind: ComponentKind, name: &str, token: &str| RegisterOptions {
        server_url: svc.url(),
        kind,
        credential: Credential::AccessToken(SecretString::from(token)),
        name: name.into(),
        version: "0.1.0".into(),
        group: None,
        tenant: None,
        key_alg: KeyAlg::recommended(kind),
        server_ca_pem: None,
    };
    let refused = |result: Result<_, UplinkError>| match result {
        Err(UplinkError::Refused { status, message, .. }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Another kind, another name, another tenant: refused, nothing registered.
    let (status, message) = refused(
        register(
            &options(ComponentKind::Agent, "gw-1", &credential),
            &StateDir::new(dir.path().join("a")),
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(
        message.contains("for registering a connector, not an agent"),
        "{message}"
    );
    let (status, message) = refused(
        register(
            &options(ComponentKind::Connector, "gw-2", &credential),
            &StateDir::new(dir.path().join("b")),
        )
        .await,
    );
    assert_eq!(status, 403);
    assert!(message.contains(r#"named "gw-1", not "gw-2""#), "{message}");
    let beta = RegisterOptions {
        tenant: Some("beta".into()),
        ..options(ComponentKind::Connector, "gw-1", &credential)
    };
    let (status, message) = refused(register(&beta, &StateDir::new(dir.path().join("c"))).await);
    assert_eq!(status, 403);
    assert!(
        message.contains(r#"belongs to organisation "acme", not "beta""#),
        "{message}"
    );
    // An administrator's access token is no registration credential.
    let admin_token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let (status, message) = refused(
        register(
            &options(ComponentKind::Connector, "gw-1", &admin_token),
            &StateDir::new(dir.path().join("d")),
        )
        .await,
    );
    assert_eq!(status, 401);
    assert!(
        message.contains("an administrator's access token is not accepted here"),
        "{message}"
    );
    assert!(
        svc.store()
            .components(&t.tenant.id, ComponentKind::Connector)
            .await
            .unwrap()
            .is_empty()
    );

    // The approved kind and name: registered, by the approving administrator.
    register(
        &options(ComponentKind::Connector, "gw-1", &credential),
        &StateDir::new(dir.path().join("ok")),
    )
    .await
    .expect("the approved registration");
    let registered = svc
        .store()
        .components(&t.tenant.id, ComponentKind::Connector)
        .await
        .unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        (registered[0].name.as_str(), registered[0].registered_by.as_str()),
        ("gw-1", format!("user:{}", t.admin.id).as_str())
    );
    // One approval, one component: a second host with the same credential is
    // refused, and nothing more is registered.
    let (status, message) = refused(
        register(
            &options(ComponentKind::Connector, "gw-1", &credential),
            &StateDir::new(dir.path().join("again")),
        )
        .await,
    );
    assert_eq!(status, 401);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(
        svc.store()
            .components(&t.tenant.id, ComponentKind::Connector)
            .await
            .unwrap()
            .len(),
        1
    );

    // Minutes of life.
    svc.advance(Duration::from_secs(301));
    let (status, message) = refused(
        register(
            &options(ComponentKind::Connector, "gw-1", &credential),
            &StateDir::new(dir.path().join("late")),
        )
        .await,
    );
    assert_eq!(status, 401);
    assert!(message.contains("expired"), "{message}");
}

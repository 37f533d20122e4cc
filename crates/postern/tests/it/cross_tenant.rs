//! The cross-tenant matrix (SEC-6, SEC-12): two tenants, `acme` and `beta`, each
//! with the same kinds of credentials and objects; every use of one of acme's
//! in beta's place is refused, and the credential still works where it belongs
//! (so a refusal is the tenant boundary, not a broken credential).
//!
//! | acme's …                    | used at beta                    | test |
//! |-----------------------------|---------------------------------|------|
//! | admin token                 | beta's objects, beta's issuer   | `admin_tokens_and_objects` |
//! | OIDC client ID (same name)  | beta's `/authorize`             | `clients_codes_and_tokens` |
//! | authorization code          | beta's token endpoint           | `clients_codes_and_tokens` |
//! | refresh token               | beta's token endpoint           | `clients_codes_and_tokens` |
//! | access token                | beta's userinfo, admin API      | `clients_codes_and_tokens` |
//! | STS session cookie          | beta's `/authorize`             | `clients_codes_and_tokens` |
//! | app host                    | beta publishing on it           | `app_hosts_cookies_and_assertions` |
//! | app session cookie          | beta's app                      | `app_hosts_cookies_and_assertions` |
//! | identity assertion          | verified as beta's              | `app_hosts_cookies_and_assertions` |
//! | registration token          | registering into beta           | `registration_tokens_and_certificates` |
//! | component certificate       | beta's control endpoints        | `registration_tokens_and_certificates` |

use std::time::Duration;

use postern_client::AdminClient;
use postern_client::wire::CreateTenant;
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{Tenant, User};
use postern_sts::relying_party::AssertionSubject;
use postern_testkit::{Browser, Pkce, TenantFixture, TestService};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};
use serde_json::Value;

use crate::common::{admin_login, authorize_url, query_param, sign_in_for_code, token_request};
use crate::proxy_harness::{AppOptions, ProxyBench};

/// The redirect URI both tenants' `app` clients use: only the tenant differs.
const REDIRECT: &str = "https://client.example.net/cb";
const BETA_PASSWORD: &str = "correct horse for beta";

/// Beta, made by acme's operator (acme is the system tenant), with its admin.
struct Beta {
    tenant: Tenant,
    admin: User,
}

async fn beta(svc: &TestService, operator: &TenantFixture) -> Beta {
    let token = svc.admin_token(&operator.tenant, &operator.admin).await.unwrap();
    AdminClient::new(&svc.url(), token.into(), Duration::from_secs(30))
        .unwrap()
        .create_tenant(&CreateTenant {
            name: "beta".into(),
            display_name: "Beta".into(),
            domain: "beta.test".into(),
            admin_username: "admin@beta.test".into(),
            admin_password: BETA_PASSWORD.into(),
        })
        .await
        .unwrap();
    let tenant = svc.store().tenant_by_name("beta").await.unwrap();
    let admin = svc
        .store()
        .user_by_username(&tenant.id, "admin@beta.test")
        .await
        .unwrap();
    Beta { tenant, admin }
}

async fn get_status(url: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn admin_tokens_and_objects() {
    let svc = TestService::start().await.unwrap();
    let acme = svc.bootstrap().await.unwrap();
    let beta = beta(&svc, &acme).await;
    let acme_token = svc.admin_token(&acme.tenant, &acme.admin).await.unwrap();
    let beta_token = svc.admin_token(&beta.tenant, &beta.admin).await.unwrap();
    let api = |path: &str| format!("{}/api/v1{path}", svc.url());

    // Each token sees its own tenant's objects, and another tenant's by ID do
    // not exist for it.
    for (token, own, other) in [
        (&acme_token, &acme.admin.id, &beta.admin.id),
        (&beta_token, &beta.admin.id, &acme.admin.id),
    ] {
        assert_eq!(get_status(&api(&format!("/users/{own}")), token).await, 200);
        assert_eq!(get_status(&api(&format!("/users/{other}")), token).await, 404);
        let users: Value = reqwest::Client::new()
            .get(api("/users"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|u| u["id"].as_str())
            .collect();
        assert!(ids.contains(&own.as_str()) && !ids.contains(&other.as_str()), "{ids:?}");
    }
    // An admin token is no token of the other issuer.
    assert_eq!(
        get_status(&format!("{}/userinfo", svc.issuer("beta")), &acme_token).await,
        401
    );
    assert_eq!(
        get_status(&format!("{}/userinfo", svc.issuer("acme")), &acme_token).await,
        200
    );
    // Beta's administrator is no operator: the installation's routes refuse it.
    assert_eq!(get_status(&api("/tenants"), &beta_token).await, 403);
    assert_eq!(get_status(&api("/tenants"), &acme_token).await, 200);
}

#[tokio::test]
async fn clients_codes_and_tokens() {
    let svc = TestService::start().await.unwrap();
    let acme = svc.bootstrap().await.unwrap();
    let beta = beta(&svc, &acme).await;
    // The same client ID, secret and redirect URI in both tenants.
    for tenant in [&acme.tenant, &beta.tenant] {
        svc.create_client(
            tenant,
            "app",
            Some("app-secret"),
            &[REDIRECT],
            &["authorization_code", "refresh_token"],
        )
        .await
        .unwrap();
    }
    let creds = Some(("app", "app-secret"));
    let browser = Browser::new();
    let pkce = Pkce::new();
    let start = authorize_url(&svc, "acme", "app", REDIRECT, &pkce.challenge, "")
        .replace("scope=openid%20profile", "scope=openid%20profile%20offline_access");
    let page = sign_in_for_code(&browser, &start, &admin_login(&svc, &acme)).await;
    let code = query_param(&page.location().unwrap(), "code").unwrap();
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
        ("redirect_uri", REDIRECT),
    ];

    // Acme's code at beta's token endpoint, with beta's identical client: refused.
    let (status, body) = token_request(&svc, "beta", creds, &exchange).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // ...and still good at acme (a refusal elsewhere does not spend it).
    let (status, tokens) = token_request(&svc, "acme", creds, &exchange).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("a refresh token").to_owned();

    // Acme's access token at beta's userinfo: refused; at acme's: fine.
    assert_eq!(
        get_status(&format!("{}/userinfo", svc.issuer("beta")), &access).await,
        401
    );
    assert_eq!(
        get_status(&format!("{}/userinfo", svc.issuer("acme")), &access).await,
        200
    );
    // Nor is it an admin API token of either tenant.
    assert_eq!(get_status(&format!("{}/api/v1/users", svc.url()), &access).await, 401);

    // Acme's refresh token at beta's token endpoint: refused, and not burned.
    let refresh_form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    let (status, body) = token_request(&svc, "beta", creds, &refresh_form).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let (status, body) = token_request(&svc, "acme", creds, &refresh_form).await;
    assert_eq!(status, 200, "the refused use elsewhere did not spend it: {body}");

    // Acme's STS session does not sign anyone in at beta: beta's /authorize
    // shows its own sign-in page instead of answering with a code.
    let pkce = Pkce::new();
    let at_beta = browser
        .get(&authorize_url(&svc, "beta", "app", REDIRECT, &pkce.challenge, ""))
        .await
        .unwrap();
    assert!(
        at_beta.location().is_none_or(|l| query_param(&l, "code").is_none()),
        "no single sign-on across tenants: {:?}",
        at_beta.location()
    );
    let sign_in = match at_beta.location() {
        Some(next) => {
            assert!(next.starts_with(&svc.issuer("beta")), "{next}");
            browser.get(&next).await.unwrap()
        }
        None => at_beta,
    };
    assert!(
        sign_in.body.contains("name=\"username\""),
        "beta asks who signs in: {} {}",
        sign_in.status,
        sign_in.body
    );
    // While at acme, the same browser signs in at once.
    let again = browser
        .get(&authorize_url(&svc, "acme", "app", REDIRECT, &pkce.challenge, ""))
        .await
        .unwrap();
    assert!(query_param(&again.location().unwrap(), "code").is_some());

    // A client of acme's that beta lacks is unknown at beta: an error page,
    // never a redirect to the client.
    svc.create_client(
        &acme.tenant,
        "acme-only",
        Some("s"),
        &[REDIRECT],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let page = Browser::new()
        .get(&authorize_url(&svc, "beta", "acme-only", REDIRECT, &pkce.challenge, ""))
        .await
        .unwrap();
    assert!(page.location().is_none(), "{:?}", page.location());
    assert_eq!(page.status, 400);
    let _ = BETA_PASSWORD;
}

#[tokio::test]
async fn app_hosts_cookies_and_assertions() {
    let bench = ProxyBench::start().await;
    let _connector = bench.start_connector("gw-1", None).await;
    let beta = beta(&bench.svc, &bench.t).await;
    let beta_token = bench.svc.admin_token(&beta.tenant, &beta.admin).await.unwrap();
    let port = bench.port();

    let wiki = bench
        .publish(
            "wiki",
            "wiki.acme.test",
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await;
    bench.assign(&wiki, &bench.t.admin.id).await;

    // Beta cannot publish on acme's host, at any prefix or port.
    let publish_as_beta = |url: String| {
        let token = beta_token.clone();
        let svc_url = bench.svc.url();
        async move {
            reqwest::Client::new()
                .post(format!("{svc_url}/api/v1/apps"))
                .bearer_auth(token)
                .json(&serde_json::json!({
                    "name": "Wiki", "external_url": url, "internal_url": "http://wiki.beta.corp/", "preauth": "sts",
                }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for url in [
        format!("http://wiki.acme.test:{port}/evil/"),
        format!("http://wiki.acme.test:{}/", port + 1),
        format!("http://other.acme.test:{port}/"),
    ] {
        assert_eq!(publish_as_beta(url.clone()).await, 400, "{url}");
    }
    // Beta's own app, on its own host.
    let beta_app = publish_as_beta(format!("http://wiki.beta.test:{port}/")).await;
    assert_eq!(beta_app, 201);
    let beta_app = bench.svc.store().apps(&beta.tenant.id).await.unwrap().remove(0);
    assert_eq!(
        bench
            .svc
            .store()
            .app_of_client(&beta.tenant.id, &beta_app.client_id)
            .await
            .unwrap()
            .map(|a| a.id),
        Some(beta_app.id.clone())
    );

    // Acme's admin signs in to acme's app; the backend answers through the tunnel.
    let browser = bench.browser(&["wiki.acme.test", "wiki.beta.test"]);
    let start = bench.url("wiki.acme.test", "/echo");
    let landed = crate::proxy::sign_in_to_app(&bench, &browser, &start).await;
    assert_eq!(landed.status, 200);
    let seen: Value = serde_json::from_str(&landed.body).unwrap();
    let assertion = seen["headers"]["x-postern-assertion"][0]
        .as_str()
        .expect("the backend got an assertion")
        .to_owned();

    // The session cookie, presented to beta's app under beta's cookie name (and
    // under its own): refused, the user is asked to sign in at beta.
    let url = url::Url::parse(&start).unwrap();
    let jar = reqwest::cookie::CookieStore::cookies(browser.jar().as_ref(), &url).unwrap();
    let jar = jar.to_str().unwrap().to_owned();
    let wiki_id: String = wiki["id"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let (name, value) = jar
        .split("; ")
        .find_map(|c| c.split_once('=').filter(|(n, _)| n.contains(&wiki_id)))
        .expect("the app's session cookie names the app");
    let beta_id: String = beta_app
        .id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let beta_name = name.replace(&wiki_id, &beta_id);
    let client = bench.client(&["wiki.beta.test", "wiki.acme.test"]);
    for cookie in [format!("{beta_name}={value}"), format!("{name}={value}")] {
        let r = client
            .get(bench.url("wiki.beta.test", "/echo"))
            .header("cookie", &cookie)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{cookie}");
    }
    let r = client
        .get(bench.url("wiki.acme.test", "/echo"))
        .header("cookie", format!("{name}={value}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the same cookie at its own app");

    // The assertion verifies for acme's app only: not as beta's, nor as beta's app.
    let sts = bench.svc.sts();
    let wiki_app = bench
        .svc
        .store()
        .app(&bench.t.tenant.id, wiki["id"].as_str().unwrap())
        .await
        .unwrap();
    let acme_t = &bench.t.tenant;
    assert!(
        sts.verify_assertion(acme_t, &assertion, &wiki_app.id)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(
        sts.verify_assertion(&beta.tenant, &assertion, &wiki_app.id)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        sts.verify_assertion(&beta.tenant, &assertion, &beta_app.id)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        sts.verify_assertion(acme_t, &assertion, &beta_app.id)
            .await
            .unwrap()
            .is_err()
    );
    // And one beta's issuer signs for beta's app is refused for acme's.
    let groups = Vec::new();
    let subject = AssertionSubject {
        user_id: &beta.admin.id,
        username: &beta.admin.username,
        email: None,
        groups: &groups,
    };
    let beta_assertion = sts
        .sign_assertion(&beta.tenant, &beta_app.id, &subject, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        sts.verify_assertion(&beta.tenant, &beta_assertion, &beta_app.id)
            .await
            .unwrap()
            .is_ok()
    );
    assert!(
        sts.verify_assertion(acme_t, &beta_assertion, &wiki_app.id)
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn registration_tokens_and_certificates() {
    let svc = TestService::start().await.unwrap();
    let acme = svc.bootstrap().await.unwrap();
    let beta = beta(&svc, &acme).await;
    let dir = tempfile::tempdir().unwrap();
    let options = |credential: &str, tenant: Option<&str>| RegisterOptions {
        server_url: svc.url(),
        kind: ComponentKind::Connector,
        credential: Credential::AccessToken(SecretString::from(credential)),
        name: "connector-host".into(),
        version: "0.1.0".into(),
        group: None,
        tenant: tenant.map(str::to_owned),
        key_alg: KeyAlg::recommended(ComponentKind::Connector),
        server_ca_pem: None,
    };

    // Beta's approval, presented for acme: refused, nothing registered anywhere.
    let beta_grant = svc
        .registration_token(&beta.tenant, &beta.admin, ComponentKind::Connector, "connector-host")
        .await
        .unwrap();
    let refused = register(
        &options(&beta_grant, Some("acme")),
        &StateDir::new(dir.path().join("x")),
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    for tenant in [&acme.tenant, &beta.tenant] {
        assert!(
            svc.store()
                .components(&tenant.id, ComponentKind::Connector)
                .await
                .unwrap()
                .is_empty()
        );
    }

    // Each tenant's approval registers into that tenant only.
    let mut clients = Vec::new();
    for (t, admin, name) in [(&acme.tenant, &acme.admin, "acme"), (&beta.tenant, &beta.admin, "beta")] {
        let grant = svc
            .registration_token(t, admin, ComponentKind::Connector, "connector-host")
            .await
            .unwrap();
        let state = StateDir::new(dir.path().join(name));
        register(&options(&grant, Some(name)), &state).await.unwrap();
        let client = ControlClient::load(state, svc.shared_clock()).unwrap();
        assert_eq!(client.enrolment().tenant, name);
        assert_eq!(
            svc.store()
                .components(&t.id, ComponentKind::Connector)
                .await
                .unwrap()
                .len(),
            1
        );
        clients.push((t.id.clone(), client));
    }

    // Each certificate works on its own tenant's control endpoints, and is
    // refused on the other's.
    let body = serde_json::json!({ "protocol": postern_proto::PROTOCOL_VERSION, "version": "1" });
    for (own, client) in &clients {
        for (tenant_id, _) in &clients {
            let path = postern_proto::control::connector_config_path(tenant_id);
            let status = client
                .request(reqwest::Method::POST, &path)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status();
            let expected = if tenant_id == own { 200 } else { 403 };
            assert_eq!(status, expected, "a certificate of {own} at {tenant_id}'s endpoint");
        }
    }
}

//! Published apps through the admin API, its typed client and `postern admin
//! apps`, against the real service: settings and their validation, conflicts,
//! tenant isolation, roles, assignments, the app's own OIDC client at the STS,
//! and the configuration its connectors receive.

use std::path::Path;
use std::time::Duration;

use postern_client::wire::{AppSettings, AppView, CreateConnectorGroup, CreateGroup};
use postern_client::{AdminClient, ClientError, CredentialFile, Credentials};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{NewUser, PrincipalKind, Role, Tenant, User};
use postern_testkit::{Browser, Pkce, TenantFixture, TestService};
use postern_time::{Clock, SystemClock};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};
use serde_json::{Value, json};

use crate::common::{authorize_url, login, sign_in_for_code, token_request};

const TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    svc: TestService,
    t: TenantFixture,
    admin: AdminClient,
}

async fn fixture() -> Fixture {
    fixture_on(TestService::start().await.unwrap()).await
}

async fn fixture_on(svc: TestService) -> Fixture {
    let t = svc.bootstrap().await.unwrap();
    let admin = client_for(&svc, &t.tenant, &t.admin).await;
    Fixture { svc, t, admin }
}

async fn client_for(svc: &TestService, tenant: &Tenant, user: &User) -> AdminClient {
    let token = svc.admin_token(tenant, user).await.unwrap();
    AdminClient::new(&svc.url(), token.into(), TIMEOUT).unwrap()
}

impl Fixture {
    /// A user of the tenant with `role` (none: no admin role).
    async fn user(&self, name: &str, role: Option<Role>) -> User {
        let user = self
            .svc
            .store()
            .create_user(
                &self.t.tenant.id,
                NewUser::cloud(&format!("{name}@acme.test"), name, None),
                self.svc.now(),
            )
            .await
            .unwrap();
        if let Some(role) = role {
            self.svc
                .store()
                .assign_role(&user.id, role, self.svc.now())
                .await
                .unwrap();
        }
        user
    }

    /// `POST /api/v1/apps` (or `PUT` with `id`) with a raw JSON body.
    async fn raw(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let token = self.svc.admin_token(&self.t.tenant, &self.t.admin).await.unwrap();
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.svc.url()))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Settings with only the required fields.
fn settings(name: &str, external_url: &str, internal_url: &str) -> AppSettings {
    AppSettings {
        name: name.into(),
        external_url: external_url.into(),
        internal_url: internal_url.into(),
        preauth: None,
        connector_group: None,
        backend_timeout_secs: None,
        validate_backend_tls: None,
        translate_headers: None,
        translate_links: None,
        identity_headers: None,
        rate_limit_per_sec: None,
        rate_limit_burst: None,
        max_body_bytes: None,
    }
}

/// The status and every problem of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String, Vec<String>) {
    match result {
        Err(ClientError::Api {
            status,
            message,
            problems,
            ..
        }) => (status, message, problems),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Whether the STS's authorization endpoint takes `redirect` for `client_id`
/// (it then sends the browser on to sign in rather than showing an error).
async fn sts_accepts_redirect(svc: &TestService, client_id: &str, redirect: &str) -> bool {
    let url = authorize_url(svc, "acme", client_id, redirect, &Pkce::new().challenge, "");
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    // Accepted: the sign-in page itself; refused: an error page (never a
    // redirect to an unchecked URI).
    r.status() == reqwest::StatusCode::OK
}

#[tokio::test]
async fn apps_are_published_replaced_and_deleted_with_their_oidc_client() {
    let f = fixture().await;
    let created = f
        .admin
        .create_app(&settings(
            "Wiki",
            "https://Wiki.Acme.test/docs",
            "http://wiki.corp.local:8080/base",
        ))
        .await
        .unwrap();
    assert_eq!(created.external_url, "https://wiki.acme.test/docs/");
    assert_eq!(created.internal_url, "http://wiki.corp.local:8080/base");
    assert_eq!(created.preauth, postern_store::Preauth::Sts);
    assert_eq!(created.connector_group.name, "Default");
    assert_eq!(created.backend_timeout_secs, 85);
    assert!(created.validate_backend_tls && created.translate_headers && !created.translate_links);
    assert_eq!(created.identity_headers, ["user", "email", "groups", "assertion"]);
    assert_eq!(created.redirect_uri, "https://wiki.acme.test/docs/.postern/callback");
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(f.admin.apps().await.unwrap(), vec![created.clone()]);
    assert_eq!(f.admin.app(&created.id).await.unwrap(), created);

    // Its own public OIDC client, redirected to the app's callback.
    let client = f.admin.client(&created.client_id).await.unwrap();
    assert_eq!(client.app_id.as_deref(), Some(created.id.as_str()));
    assert_eq!(client.client_type, postern_client::wire::ClientType::Public);
    assert_eq!(client.redirect_uris, ["https://wiki.acme.test/docs/.postern/callback"]);
    assert_eq!(client.post_logout_redirect_uris, ["https://wiki.acme.test/docs/"]);
    assert_eq!(client.grant_types, ["authorization_code"]);
    assert!(sts_accepts_redirect(&f.svc, &created.client_id, &created.redirect_uri).await);
    // The clients API does not let it go on its own.
    let (status, message, _) = refusal(f.admin.delete_client(&created.client_id).await);
    assert_eq!(status, 409);
    assert!(message.contains("Wiki"), "{message}");

    // Replace every setting; the client follows the new address.
    let edge = f
        .admin
        .create_connector_group(&CreateConnectorGroup {
            name: "edge".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let replaced = f
        .admin
        .replace_app(
            &created.id,
            &AppSettings {
                preauth: Some(postern_store::Preauth::Passthrough),
                connector_group: Some("edge".into()),
                backend_timeout_secs: Some(3600),
                validate_backend_tls: Some(false),
                translate_headers: Some(false),
                translate_links: Some(true),
                identity_headers: Some(vec!["email".into(), "user".into()]),
                ..settings("Intranet", "http://intranet.acme.test:8080", "https://10.1.2.3/")
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (replaced.id.as_str(), replaced.client_id.as_str(), replaced.created_at),
        (created.id.as_str(), created.client_id.as_str(), created.created_at)
    );
    assert_eq!(replaced.name, "Intranet");
    assert_eq!(replaced.external_url, "http://intranet.acme.test:8080/");
    assert_eq!(replaced.internal_url, "https://10.1.2.3/");
    assert_eq!(replaced.preauth, postern_store::Preauth::Passthrough);
    assert_eq!(
        (
            replaced.connector_group.id.as_str(),
            replaced.connector_group.name.as_str()
        ),
        (edge.id.as_str(), "edge")
    );
    assert_eq!(replaced.backend_timeout_secs, 3600);
    assert!(!replaced.validate_backend_tls && !replaced.translate_headers && replaced.translate_links);
    assert_eq!(replaced.identity_headers, ["user", "email"]);
    let client = f.admin.client(&created.client_id).await.unwrap();
    assert_eq!(
        client.redirect_uris,
        ["http://intranet.acme.test:8080/.postern/callback"]
    );
    assert_eq!(client.post_logout_redirect_uris, ["http://intranet.acme.test:8080/"]);
    assert_eq!(client.name, "Intranet");
    assert!(sts_accepts_redirect(&f.svc, &created.client_id, &replaced.redirect_uri).await);
    assert!(
        !sts_accepts_redirect(&f.svc, &created.client_id, &created.redirect_uri).await,
        "the old callback is no longer registered"
    );

    // PUT replaces: what is left out takes its default again.
    let reset = f
        .admin
        .replace_app(
            &created.id,
            &settings("Intranet", "http://intranet.acme.test:8080/", "https://10.1.2.3/"),
        )
        .await
        .unwrap();
    assert_eq!(reset.preauth, postern_store::Preauth::Sts);
    assert_eq!(reset.connector_group.name, "Default");
    assert_eq!(reset.backend_timeout_secs, 85);
    assert!(reset.validate_backend_tls && reset.translate_headers && !reset.translate_links);
    assert_eq!(reset.identity_headers.len(), 4);

    // Deleting the app removes its client; unknown IDs are 404s.
    f.admin.delete_app(&created.id).await.unwrap();
    assert!(f.admin.apps().await.unwrap().is_empty());
    for result in [
        f.admin.app(&created.id).await.map(|_| ()),
        f.admin.client(&created.client_id).await.map(|_| ()),
        f.admin.delete_app(&created.id).await,
        f.admin.app_assignments(&created.id).await.map(|_| ()),
        f.admin
            .replace_app(&created.id, &settings("x", "https://x.acme.test", "http://x.corp"))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(refusal(result).0, 404);
    }
    assert!(!sts_accepts_redirect(&f.svc, &created.client_id, &reset.redirect_uri).await);

    // Every change is audited.
    let audit = f.svc.store().audit_entries(&f.t.tenant.id, 0, 1000).await.unwrap();
    let actions: Vec<&str> = audit
        .iter()
        .filter(|e| e.target == format!("app:{}", created.id))
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(actions, ["app.create", "app.update", "app.update", "app.delete"]);
}

#[tokio::test]
async fn an_apps_client_signs_users_in_to_its_callback() {
    let f = fixture().await;
    let app = f
        .admin
        .create_app(&settings("Docs", "https://docs.acme.test/", "http://docs.corp/"))
        .await
        .unwrap();
    let sam = f
        .svc
        .create_user(&f.t.tenant, "sam@acme.test", "sam's long password")
        .await
        .unwrap();
    // The client issues codes only to users the app admits.
    f.admin.assign_app(&app.id, PrincipalKind::User, &sam.id).await.unwrap();
    let pkce = Pkce::new();
    let start = authorize_url(&f.svc, "acme", &app.client_id, &app.redirect_uri, &pkce.challenge, "");
    let back = sign_in_for_code(
        &Browser::new(),
        &start,
        &login(&f.svc, "sam@acme.test", "sam's long password"),
    )
    .await;
    let location = back.location().unwrap();
    assert!(
        location.starts_with("https://docs.acme.test/.postern/callback?"),
        "{location}"
    );
    let code = crate::common::query_param(&location, "code").unwrap();
    // A public client: no secret, the PKCE verifier proves the caller.
    let (status, tokens) = token_request(
        &f.svc,
        "acme",
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &app.redirect_uri),
            ("client_id", &app.client_id),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
}

#[tokio::test]
async fn every_invalid_setting_is_a_400_naming_the_field() {
    let f = fixture().await;
    let ok = || settings("Wiki", "https://wiki.acme.test/", "http://wiki.corp/");
    let cases: Vec<(AppSettings, &str)> = vec![
        (
            AppSettings {
                name: " ".into(),
                ..ok()
            },
            "name",
        ),
        (
            AppSettings {
                name: "a\u{7}b".into(),
                ..ok()
            },
            "name",
        ),
        (
            AppSettings {
                external_url: "wiki.acme.test".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                external_url: "ftp://wiki.acme.test/".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                external_url: "https://wiki.acme.test/?a=1".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                external_url: "https://wiki.acme.test/#top".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                external_url: "https://jo:pw@wiki.acme.test/".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                external_url: "https://wiki.acme.test/.postern/x".into(),
                ..ok()
            },
            "external_url",
        ),
        (
            AppSettings {
                internal_url: "wiki.corp:8080".into(),
                ..ok()
            },
            "internal_url",
        ),
        (
            AppSettings {
                internal_url: "file:///etc/passwd".into(),
                ..ok()
            },
            "internal_url",
        ),
        (
            AppSettings {
                internal_url: "http://wiki.corp/?debug=1".into(),
                ..ok()
            },
            "internal_url",
        ),
        (
            AppSettings {
                internal_url: "http://wiki.corp/#x".into(),
                ..ok()
            },
            "internal_url",
        ),
        (
            AppSettings {
                internal_url: "http://svc:secret@wiki.corp/".into(),
                ..ok()
            },
            "internal_url",
        ),
        (
            AppSettings {
                backend_timeout_secs: Some(0),
                ..ok()
            },
            "backend_timeout_secs",
        ),
        (
            AppSettings {
                backend_timeout_secs: Some(3601),
                ..ok()
            },
            "backend_timeout_secs",
        ),
        (
            AppSettings {
                identity_headers: Some(vec!["user".into(), "cookie".into()]),
                ..ok()
            },
            "\"cookie\"",
        ),
        (
            AppSettings {
                connector_group: Some("nowhere".into()),
                ..ok()
            },
            "connector_group",
        ),
    ];
    for (bad, field) in &cases {
        let (status, message, problems) = refusal(f.admin.create_app(bad).await);
        assert_eq!(status, 400, "{bad:?}");
        assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
        assert!(message.contains(field), "{bad:?}: {message}");
    }
    // Every problem at once.
    let (status, _, problems) = refusal(
        f.admin
            .create_app(&AppSettings {
                backend_timeout_secs: Some(-1),
                ..settings("", "mailto:x@acme.test", "http://wiki.corp/?x")
            })
            .await,
    );
    assert_eq!((status, problems.len()), (400, 4), "{problems:?}");
    // Values of the wrong kind are refused by name too.
    for (body, field) in [
        (
            json!({"name": "W", "external_url": "https://w.acme.test", "internal_url": "http://w", "preauth": "sometimes"}),
            "preauth",
        ),
        (
            json!({"name": "W", "external_url": "https://w.acme.test", "internal_url": "http://w", "translate_links": "yes"}),
            "translate_links",
        ),
        (
            json!({"name": "W", "external_url": "https://w.acme.test", "internal_url": "http://w", "external_uri": "x"}),
            "external_uri",
        ),
        (json!({"name": "W", "internal_url": "http://w"}), "external_url"),
    ] {
        let (status, reply) = f.raw(reqwest::Method::POST, "/api/v1/apps", body.clone()).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply["message"].as_str().unwrap().contains(field), "{body}: {reply}");
    }
    // Nothing was published, and no client was left behind.
    assert!(f.admin.apps().await.unwrap().is_empty());
    let clients_before = f.admin.clients().await.unwrap().len();

    // The limits themselves are fine; PUT validates the same way.
    let app = f
        .admin
        .create_app(&AppSettings {
            backend_timeout_secs: Some(1),
            identity_headers: Some(Vec::new()),
            ..ok()
        })
        .await
        .unwrap();
    assert!(app.identity_headers.is_empty());
    assert_eq!(f.admin.clients().await.unwrap().len(), clients_before + 1);
    for (bad, field) in &cases {
        let (status, message, _) = refusal(f.admin.replace_app(&app.id, bad).await);
        assert_eq!(status, 400, "{bad:?}");
        assert!(message.contains(field), "{bad:?}: {message}");
    }
    let (status, reply) = f
        .raw(
            reqwest::Method::PUT,
            &format!("/api/v1/apps/{}", app.id),
            json!({"name": "W", "external_url": "https://w.acme.test", "internal_url": "http://w", "preauth": "never"}),
        )
        .await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(
        f.admin.app(&app.id).await.unwrap(),
        app,
        "a refused PUT changes nothing"
    );
}

#[tokio::test]
async fn a_taken_name_or_address_is_a_409() {
    let f = fixture().await;
    let wiki = f
        .admin
        .create_app(&settings("Wiki", "https://apps.acme.test/wiki", "http://wiki.corp/"))
        .await
        .unwrap();
    let root = f
        .admin
        .create_app(&settings("Root", "https://apps.acme.test/", "http://root.corp/"))
        .await
        .unwrap();
    let clients = f.admin.clients().await.unwrap().len();

    let (status, message, _) = refusal(
        f.admin
            .create_app(&settings("Wiki", "https://other.acme.test/", "http://x.corp/"))
            .await,
    );
    assert_eq!(status, 409);
    assert!(message.contains("named Wiki"), "{message}");
    // The same address written differently.
    let (status, message, _) = refusal(
        f.admin
            .create_app(&settings(
                "Wiki 2",
                "https://APPS.acme.test:443/wiki/",
                "http://x.corp/",
            ))
            .await,
    );
    assert_eq!(status, 409);
    assert!(
        message.contains("https://apps.acme.test/wiki/ is already published"),
        "{message}"
    );
    // Onto another app's address or name by PUT.
    let (status, _, _) = refusal(
        f.admin
            .replace_app(
                &root.id,
                &settings("Root", "https://apps.acme.test/wiki/", "http://root.corp/"),
            )
            .await,
    );
    assert_eq!(status, 409);
    let (status, _, _) = refusal(
        f.admin
            .replace_app(
                &root.id,
                &settings("Wiki", "https://apps.acme.test/", "http://root.corp/"),
            )
            .await,
    );
    assert_eq!(status, 409);
    // An app keeps its own name and address when replaced.
    f.admin
        .replace_app(
            &wiki.id,
            &settings("Wiki", "https://apps.acme.test/wiki/", "http://wiki2.corp/"),
        )
        .await
        .unwrap();
    // A host belongs to one tenant (SEC-12): another tenant cannot publish on
    // it, neither at the same address nor below another prefix.
    let (beta, beta_admin) = second_tenant(&f.svc).await;
    let beta = client_for(&f.svc, &beta, &beta_admin).await;
    for taken in [
        "https://apps.acme.test/wiki",
        "https://apps.acme.test/wiki/beta",
        "https://apps.acme.test:8443/beta/",
        "https://other.apps.acme.test/",
    ] {
        let (status, message, problems) = refusal(beta.create_app(&settings("Wiki", taken, "http://wiki.beta/")).await);
        assert_eq!(status, 400, "{taken}: {message}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("external_url") && p.contains("not under a verified domain")),
            "{taken}: {problems:?}"
        );
    }
    beta.create_app(&settings("Wiki", "https://apps.beta.test/wiki/", "http://wiki.beta/"))
        .await
        .unwrap();
    assert_eq!(
        f.admin.clients().await.unwrap().len(),
        clients,
        "refusals leave no client behind"
    );
}

async fn second_tenant(svc: &TestService) -> (Tenant, User) {
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

#[tokio::test]
async fn another_tenants_apps_do_not_exist() {
    let f = fixture().await;
    let wiki = f
        .admin
        .create_app(&settings("Wiki", "https://wiki.acme.test/", "http://wiki.corp/"))
        .await
        .unwrap();
    let jo = f.user("jo", None).await;
    let (beta_tenant, beta_admin) = second_tenant(&f.svc).await;
    let beta = client_for(&f.svc, &beta_tenant, &beta_admin).await;

    assert!(beta.apps().await.unwrap().is_empty());
    for result in [
        beta.app(&wiki.id).await.map(|_| ()),
        beta.replace_app(&wiki.id, &settings("Mine", "https://mine.acme.test/", "http://mine/"))
            .await
            .map(|_| ()),
        beta.app_assignments(&wiki.id).await.map(|_| ()),
        beta.assign_app(&wiki.id, PrincipalKind::User, &beta_admin.id)
            .await
            .map(|_| ()),
        beta.unassign_app(&wiki.id, PrincipalKind::User, &jo.id).await,
        beta.delete_app(&wiki.id).await,
        beta.client(&wiki.client_id).await.map(|_| ()),
    ] {
        assert_eq!(refusal(result).0, 404);
    }
    assert_eq!(f.admin.app(&wiki.id).await.unwrap(), wiki, "untouched");

    // Nor can another tenant's connector group or users be used.
    let acme_group = wiki.connector_group.id.clone();
    let (status, message, _) = refusal(
        beta.create_app(&AppSettings {
            connector_group: Some(acme_group),
            ..settings("Mine", "https://mine.beta.test/", "http://mine/")
        })
        .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("connector_group"), "{message}");
    let mine = beta
        .create_app(&settings("Mine", "https://mine.beta.test/", "http://mine/"))
        .await
        .unwrap();
    assert_ne!(mine.connector_group.id, wiki.connector_group.id);
    let (status, _, _) = refusal(beta.assign_app(&mine.id, PrincipalKind::User, &jo.id).await);
    assert_eq!(status, 400);
    assert_eq!(f.admin.apps().await.unwrap().len(), 1);
}

#[tokio::test]
async fn only_application_and_global_administrators_manage_apps() {
    let f = fixture().await;
    let wiki = f
        .admin
        .create_app(&settings("Wiki", "https://wiki.acme.test/", "http://wiki.corp/"))
        .await
        .unwrap();
    let nobody = f.user("nobody", None).await;
    let hybrid = f.user("hybrid", Some(Role::HybridIdentityAdministrator)).await;
    for user in [&nobody, &hybrid] {
        let c = client_for(&f.svc, &f.t.tenant, user).await;
        assert_eq!(refusal(c.apps().await).0, 403);
        assert_eq!(refusal(c.app(&wiki.id).await).0, 403);
        let (status, message, _) = refusal(
            c.create_app(&settings("Mine", "https://mine.acme.test/", "http://mine/"))
                .await,
        );
        assert_eq!(status, 403);
        assert!(message.contains("application_administrator"), "{message}");
        assert_eq!(refusal(c.delete_app(&wiki.id).await).0, 403);
        assert_eq!(
            refusal(c.assign_app(&wiki.id, PrincipalKind::User, &user.id).await).0,
            403
        );
    }
    let app_admin = f.user("apps", Some(Role::ApplicationAdministrator)).await;
    let c = client_for(&f.svc, &f.t.tenant, &app_admin).await;
    let mine = c
        .create_app(&settings("Mine", "https://mine.acme.test/", "http://mine/"))
        .await
        .unwrap();
    assert_eq!(c.apps().await.unwrap().len(), 2);
    c.assign_app(&mine.id, PrincipalKind::User, &nobody.id).await.unwrap();
    c.delete_app(&wiki.id).await.unwrap();
    assert_eq!(f.admin.apps().await.unwrap(), vec![c.app(&mine.id).await.unwrap()]);
}

#[tokio::test]
async fn users_and_groups_are_assigned_and_unassigned() {
    let f = fixture().await;
    let wiki = f
        .admin
        .create_app(&settings("Wiki", "https://wiki.acme.test/", "http://wiki.corp/"))
        .await
        .unwrap();
    let jo = f.user("jo", None).await;
    let sam = f.user("sam", None).await;
    let staff = f
        .admin
        .create_group(&CreateGroup {
            name: "staff".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    f.admin.add_member(&staff.id, &sam.id).await.unwrap();
    assert!(f.admin.app_assignments(&wiki.id).await.unwrap().is_empty());

    let after = f.admin.assign_app(&wiki.id, PrincipalKind::User, &jo.id).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (after[0].kind, after[0].id.as_str(), after[0].name.as_deref()),
        (PrincipalKind::User, jo.id.as_str(), Some("jo@acme.test"))
    );
    f.admin
        .assign_app(&wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    let again = f
        .admin
        .assign_app(&wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "assigning twice is one assignment");
    let listed = f.admin.app_assignments(&wiki.id).await.unwrap();
    assert_eq!(listed, again);
    assert!(
        listed
            .iter()
            .any(|a| a.kind == PrincipalKind::Group && a.name.as_deref() == Some("staff"))
    );
    let store = f.svc.store();
    assert!(store.user_assigned_to_app(&wiki.id, &jo.id).await.unwrap());
    assert!(
        store.user_assigned_to_app(&wiki.id, &sam.id).await.unwrap(),
        "through the group"
    );
    assert!(!store.user_assigned_to_app(&wiki.id, &f.t.admin.id).await.unwrap());

    // Unknown principals and kinds are named.
    let (status, message, _) = refusal(f.admin.assign_app(&wiki.id, PrincipalKind::Group, &jo.id).await);
    assert_eq!(status, 400);
    assert!(message.contains("no group"), "{message}");
    let (status, reply) = f
        .raw(
            reqwest::Method::POST,
            &format!("/api/v1/apps/{}/assignments", wiki.id),
            json!({"kind": "robot", "id": jo.id}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(reply["message"].as_str().unwrap().contains("kind"), "{reply}");
    let (status, _) = f
        .raw(
            reqwest::Method::DELETE,
            &format!("/api/v1/apps/{}/assignments/robot/{}", wiki.id, jo.id),
            Value::Null,
        )
        .await;
    assert_eq!(status, 400);

    f.admin
        .unassign_app(&wiki.id, PrincipalKind::User, &jo.id)
        .await
        .unwrap();
    assert!(!store.user_assigned_to_app(&wiki.id, &jo.id).await.unwrap());
    assert_eq!(
        refusal(f.admin.unassign_app(&wiki.id, PrincipalKind::User, &jo.id).await).0,
        404,
        "not assigned any more"
    );
    f.admin
        .unassign_app(&wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    assert!(f.admin.app_assignments(&wiki.id).await.unwrap().is_empty());
    let audit = store.audit_entries(&f.t.tenant.id, 0, 1000).await.unwrap();
    let count = |action: &str| audit.iter().filter(|e| e.action == action).count();
    assert_eq!((count("app.assign"), count("app.unassign")), (3, 2));
}

/// An application administrator may not list users or groups, yet names them
/// by username and group name when assigning: the service resolves names in
/// the caller's tenant only, and unassigns by name too.
#[tokio::test]
async fn application_administrators_assign_by_name() {
    let f = fixture().await;
    let wiki = f
        .admin
        .create_app(&settings("Wiki", "https://wiki.acme.test/", "http://wiki.corp/"))
        .await
        .unwrap();
    let jo = f.user("jo", None).await;
    let staff = f
        .admin
        .create_group(&CreateGroup {
            name: "staff".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let app_admin = f.user("apps", Some(Role::ApplicationAdministrator)).await;
    let apps = client_for(&f.svc, &f.t.tenant, &app_admin).await;
    assert_eq!(refusal(apps.users().await).0, 403, "may not list users");

    let after = apps
        .assign_app(&wiki.id, PrincipalKind::User, "Jo@Acme.test")
        .await
        .unwrap();
    assert_eq!(
        (after[0].id.as_str(), after[0].kind),
        (jo.id.as_str(), PrincipalKind::User)
    );
    let after = apps.assign_app(&wiki.id, PrincipalKind::Group, "staff").await.unwrap();
    assert!(after.iter().any(|a| a.id == staff.id), "{after:?}");
    // The audit log names the resolved ID.
    let audit = f.svc.store().audit_entries(&f.t.tenant.id, 0, 1000).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "app.assign" && e.detail.contains(&jo.id)),
        "{audit:?}"
    );

    // Another tenant's user is not found by name.
    let (_, beta_admin) = second_tenant(&f.svc).await;
    let (status, message, _) = refusal(
        apps.assign_app(&wiki.id, PrincipalKind::User, &beta_admin.username)
            .await,
    );
    assert_eq!(status, 400);
    assert!(message.contains("no user"), "{message}");

    apps.unassign_app(&wiki.id, PrincipalKind::User, "jo@acme.test")
        .await
        .unwrap();
    apps.unassign_app(&wiki.id, PrincipalKind::Group, &staff.id)
        .await
        .unwrap();
    assert!(apps.app_assignments(&wiki.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn connectors_receive_the_apps_of_their_group_only() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("c1"));
    let token = f
        .svc
        .registration_token(&f.t.tenant, &f.t.admin, ComponentKind::Connector, "gw1")
        .await
        .unwrap();
    let options = RegisterOptions {
        server_url: f.svc.url(),
        kind: ComponentKind::Connector,
        credential: Credential::AccessToken(SecretString::from(token.as_str())),
        name: "gw1".into(),
        version: "0.1.0".into(),
        group: None,
        tenant: None,
        key_alg: KeyAlg::recommended(ComponentKind::Connector),
        server_ca_pem: None,
    };
    register(&options, &state).await.unwrap();
    let mut connector = ControlClient::load(state, f.svc.shared_clock()).unwrap();
    let before = connector.connector_config("0.1.0").await.unwrap();
    assert_eq!(before.group.name, "Default");
    assert!(before.apps.is_empty());

    f.admin
        .create_connector_group(&CreateConnectorGroup {
            name: "edge".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    let wiki = f
        .admin
        .create_app(&AppSettings {
            validate_backend_tls: Some(false),
            backend_timeout_secs: Some(120),
            ..settings("Wiki", "https://wiki.acme.test/", "https://wiki.corp.local:8443/base")
        })
        .await
        .unwrap();
    let elsewhere = f
        .admin
        .create_app(&AppSettings {
            connector_group: Some("edge".into()),
            ..settings("Elsewhere", "https://elsewhere.acme.test/", "http://elsewhere.corp/")
        })
        .await
        .unwrap();

    let config = connector.connector_config("0.1.0").await.unwrap();
    assert!(
        config.config_version > before.config_version,
        "publishing bumps the version"
    );
    assert_eq!(
        config.apps,
        vec![postern_proto::control::AppRef {
            id: wiki.id.clone(),
            internal_url: "https://wiki.corp.local:8443/base".into(),
            validate_backend_tls: false,
            backend_timeout_secs: 120,
        }]
    );
    assert!(!config.apps.iter().any(|a| a.id == elsewhere.id));

    // Moved to the other group, the app leaves this connector's configuration.
    let moved = f
        .admin
        .replace_app(
            &wiki.id,
            &AppSettings {
                connector_group: Some("edge".into()),
                ..settings("Wiki", "https://wiki.acme.test/", "https://wiki.corp.local:8443/base")
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.connector_group.name, "edge");
    let after = connector.connector_config("0.1.0").await.unwrap();
    assert!(after.config_version > config.config_version);
    assert!(after.apps.is_empty(), "{:?}", after.apps);

    // A group that serves apps cannot be deleted.
    let (status, message, _) = refusal(f.admin.delete_connector_group(&moved.connector_group.id).await);
    assert_eq!(status, 409);
    assert!(message.contains("Wiki"), "{message}");
}

// ---- the command line ------------------------------------------------------------

/// Runs `postern admin args...` with its configuration in `dir`; returns
/// success, stdout and stderr.
async fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("admin")
        .args(args)
        .env("POSTERN_CONFIG_DIR", dir)
        .env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Like [`cli`], expecting success and JSON on stdout.
async fn cli_json(dir: &Path, args: &[&str]) -> Value {
    let (ok, out, err) = cli(dir, args).await;
    assert!(ok, "postern admin {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test]
async fn the_cli_publishes_updates_assigns_and_deletes_apps() {
    // The real clock: the command line checks its token's expiry by it.
    let f = fixture_on(TestService::builder().system_clock().start().await.unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    // Signed in as the administrator (the device flow has its own test).
    let token = f.svc.admin_token(&f.t.tenant, &f.t.admin).await.unwrap();
    CredentialFile::in_dir(dir.path())
        .save(&Credentials {
            server: f.svc.url(),
            tenant: "acme".into(),
            client_id: "postern-cli".into(),
            access_token: token.into(),
            refresh_token: None,
            expires_at: SystemClock.now() + Duration::from_secs(300),
        })
        .unwrap();
    let dir = dir.path();
    let jo = f.user("jo", None).await;
    f.admin
        .create_group(&CreateGroup {
            name: "staff".into(),
            description: String::new(),
        })
        .await
        .unwrap();

    let created = cli_json(
        dir,
        &[
            "apps",
            "create",
            "wiki",
            "--external-url",
            "https://wiki.acme.test/docs",
            "--internal-url",
            "http://wiki.corp.local:8080/",
            "--connector-group",
            "Default",
            "--backend-timeout",
            "30",
            "--no-validate-backend-tls",
            "--translate-links",
            "--no-translate-headers",
            "--identity-headers",
            "user,email",
        ],
    )
    .await;
    let app: AppView = serde_json::from_value(created).unwrap();
    assert_eq!(app.external_url, "https://wiki.acme.test/docs/");
    assert_eq!(app.redirect_uri, "https://wiki.acme.test/docs/.postern/callback");
    assert_eq!(app.backend_timeout_secs, 30);
    assert!(!app.validate_backend_tls && !app.translate_headers && app.translate_links);
    assert_eq!(app.identity_headers, ["user", "email"]);
    assert_eq!(f.admin.app(&app.id).await.unwrap(), app, "the service has it");

    let listed = cli_json(dir, &["apps", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(cli_json(dir, &["apps", "show", "wiki"]).await["id"], app.id.as_str());
    assert_eq!(cli_json(dir, &["apps", "show", &app.id]).await["name"], "wiki");

    // Update changes what is given and keeps the rest.
    let updated = cli_json(
        dir,
        &[
            "apps",
            "update",
            "wiki",
            "--external-url",
            "https://docs.acme.test/",
            "--preauth",
            "passthrough",
            "--validate-backend-tls",
            "--no-identity-headers",
        ],
    )
    .await;
    let updated: AppView = serde_json::from_value(updated).unwrap();
    assert_eq!(updated.redirect_uri, "https://docs.acme.test/.postern/callback");
    assert_eq!(updated.preauth, postern_store::Preauth::Passthrough);
    assert!(updated.validate_backend_tls && !updated.translate_headers && updated.translate_links);
    assert_eq!(updated.backend_timeout_secs, 30);
    assert!(updated.identity_headers.is_empty());
    let client = f.admin.client(&app.client_id).await.unwrap();
    assert_eq!(client.redirect_uris, [updated.redirect_uri.as_str()]);

    // Assignments by username and group name.
    cli_json(dir, &["apps", "assign", "wiki", "--user", "jo@acme.test"]).await;
    let assigned = cli_json(dir, &["apps", "assign", "wiki", "--group", "staff"]).await;
    assert_eq!(assigned.as_array().unwrap().len(), 2);
    let listed = cli_json(dir, &["apps", "assignments", "wiki"]).await;
    assert_eq!(listed, assigned);
    assert!(listed.as_array().unwrap().iter().any(|a| a["id"] == jo.id.as_str()));
    let (ok, _, err) = cli(dir, &["apps", "unassign", "wiki", "--group", "staff"]).await;
    assert!(ok, "{err}");
    assert_eq!(
        cli_json(dir, &["apps", "assignments", "wiki"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (ok, _, _) = cli(
        dir,
        &["apps", "assign", "wiki", "--user", "jo@acme.test", "--group", "staff"],
    )
    .await;
    assert!(!ok, "one principal at a time");

    // Refusals keep the service's message.
    let (ok, _, err) = cli(
        dir,
        &[
            "apps",
            "create",
            "bad",
            "--external-url",
            "ftp://x.acme.test",
            "--internal-url",
            "http://x",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("external_url must use http or https"), "{err}");
    let (ok, _, err) = cli(
        dir,
        &[
            "apps",
            "create",
            "wiki",
            "--external-url",
            "https://x.acme.test",
            "--internal-url",
            "http://x",
        ],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("named wiki"), "{err}");

    let (ok, _, err) = cli(dir, &["apps", "delete", "wiki"]).await;
    assert!(ok && err.contains("app deleted"), "{err}");
    let (ok, _, err) = cli(dir, &["apps", "show", "wiki"]).await;
    assert!(!ok && err.contains("no app wiki"), "{err}");
    assert_eq!(refusal(f.admin.client(&app.client_id).await).0, 404);
}

/// SEC-13: external and internal URLs are stored as written only when their
/// path is already normalized: dot segments (plain, `%2e`, before `;`), encoded
/// slashes and backslashes, backslashes and empty segments are a 400 naming the
/// field, since the URL parser would otherwise publish another path than the
/// one asked for (`/docs/../../admin/` became `/admin/`). Nothing is created.
#[tokio::test]
async fn urls_whose_paths_climb_or_hide_separators_are_refused() {
    let f = fixture().await;
    let ok = || settings("Docs", "https://docs.acme.test/docs/", "http://docs.corp/base/");
    let external = [
        "https://docs.acme.test/docs/../../admin/",
        "https://docs.acme.test/docs/../admin/",
        "https://docs.acme.test/./docs/",
        "https://docs.acme.test/docs/%2e%2e/admin/",
        "https://docs.acme.test/docs/.%2E/",
        "https://docs.acme.test/docs%2Fadmin/",
        "https://docs.acme.test/docs\\..\\admin\\",
        "https://docs.acme.test/docs/%5C/",
        "https://docs.acme.test//docs/",
        "https://docs.acme.test/docs/..;/",
    ];
    for raw in external {
        let bad = AppSettings {
            external_url: raw.into(),
            ..ok()
        };
        let (status, message, problems) = refusal(f.admin.create_app(&bad).await);
        assert_eq!(status, 400, "{raw}");
        assert!(message.contains("external_url"), "{raw}: {message}");
        assert!(
            problems.iter().any(|p| p.contains("the path must not")),
            "{raw}: {problems:?}"
        );
    }
    for raw in [
        "http://docs.corp/base/../../",
        "http://docs.corp/base/%2e%2e/etc/",
        "http://docs.corp/base%2f..%2f",
        "http://docs.corp\\base\\..\\",
    ] {
        let bad = AppSettings {
            internal_url: raw.into(),
            ..ok()
        };
        let (status, message, _) = refusal(f.admin.create_app(&bad).await);
        assert_eq!(status, 400, "{raw}");
        assert!(message.contains("internal_url"), "{raw}: {message}");
    }
    assert!(f.admin.apps().await.unwrap().is_empty(), "nothing was published");

    // The normalized form of a clean URL is what is stored.
    let created = f
        .admin
        .create_app(&settings(
            "Docs",
            "https://Docs.ACME.test:443/a%20b",
            "http://Docs.Corp:80/base/",
        ))
        .await
        .unwrap();
    assert_eq!(created.external_url, "https://docs.acme.test/a%20b/");
    assert_eq!(created.internal_url, "http://docs.corp/base/");
}

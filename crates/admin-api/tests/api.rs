//! The admin API driven through its router, on a real store (SQLite, and
//! PostgreSQL for the core tenant and user tests), with tokens minted by the
//! real STS and a manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use postern_admin_api::{Access, AdminState, routes};
use postern_keyring::Keyring;
use postern_store::testing::TestDatabase;
use postern_store::{
    Backend, CertRecord, Component, ComponentKind, NewComponent, NewUser, Role, SigninEvent, SigninOutcome, Tenant,
    User,
};
use postern_sts::{NewTenantRequest, Sts, StsConfig};
use postern_time::ManualClock;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Password of every administrator the fixture creates.
const ADMIN_PASSWORD: &str = "fixture operator passphrase";
/// Seconds in a day.
const DAY: u64 = 86_400;

/// A service with two tenants: `ops` (the system tenant) and `acme`, each with
/// a global administrator.
struct Fixture {
    _db: TestDatabase,
    sts: Arc<Sts>,
    clock: Arc<ManualClock>,
    app: Router,
    ops: Tenant,
    ops_admin: User,
    acme: Tenant,
    acme_admin: User,
    /// Every response body seen, to check none carries a secret.
    bodies: Mutex<Vec<String>>,
}

/// A response, decoded.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let db = TestDatabase::new(backend).await.unwrap();
        let store = db.store().await.unwrap();
        let keyring = Arc::new(Keyring::from_text(Keyring::generate_entry(1).unwrap().expose()).unwrap());
        let clock = ManualClock::starting_now();
        let config = StsConfig::new("http://postern.test".parse().unwrap());
        let sts = Sts::new(store.clone(), keyring, clock.clone(), config).await.unwrap();
        let (ops, ops_admin) = create_tenant(&sts, "ops", "ops.test", true).await;
        let (acme, acme_admin) = create_tenant(&sts, "acme", "acme.test", false).await;
        let app = postern_admin_api::router(AdminState::new(store, clock.clone(), sts.clone()));
        Self {
            _db: db,
            sts,
            clock,
            app,
            ops,
            ops_admin,
            acme,
            acme_admin,
            bodies: Mutex::new(Vec::new()),
        }
    }

    /// An admin-API token for `user`.
    async fn token(&self, tenant: &Tenant, user: &User) -> String {
        self.sts
            .mint_access_token_for_tests(tenant, user, "openid postern:admin")
            .await
            .unwrap()
    }

    /// A user with `roles`, made directly in the store.
    async fn user_with(&self, tenant: &Tenant, username: &str, roles: &[Role]) -> User {
        let store = self.sts.store();
        let user = store
            .create_user(&tenant.id, NewUser::cloud(username, username, None), self.sts.now())
            .await
            .unwrap();
        for role in roles {
            store.assign_role(&user.id, *role, self.sts.now()).await.unwrap();
        }
        user
    }

    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        Reply { status, headers, json }
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    async fn patch(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(token), Some(body)).await
    }

    async fn put(&self, path: &str, token: &str) -> Reply {
        self.call(Method::PUT, path, Some(token), None).await
    }

    async fn put_json(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// A connector (in the tenant's default group) or agent registered
    /// directly in the store, with a certificate valid for a year.
    async fn component(&self, tenant: &Tenant, kind: ComponentKind, name: &str) -> Component {
        let store = self.sts.store();
        let now = self.sts.now();
        let group_id = match kind {
            ComponentKind::Connector => Some(store.default_connector_group(&tenant.id, now).await.unwrap().id),
            ComponentKind::Agent => None,
        };
        let serial = uuid::Uuid::new_v4().simple().to_string();
        let new = NewComponent {
            id: uuid::Uuid::new_v4().to_string(),
            tenant_id: tenant.id.clone(),
            kind,
            name: name.into(),
            group_id,
            cert: CertRecord {
                key_id: format!("key-{}", &serial[..8]),
                serial,
                public_key: b"not really a public key".to_vec(),
                issued_at: now,
                not_after: now + Duration::from_secs(365 * DAY),
            },
            version: "0.1.0".into(),
            registered_by: "test".into(),
        };
        store.register_component(&new, now).await.unwrap()
    }

    /// Asserts that no response so far carried a password hash, a TOTP seed
    /// or any of `secrets`.
    fn assert_no_secrets(&self, secrets: &[&str]) {
        let bodies = self.bodies.lock().unwrap();
        assert!(!bodies.is_empty());
        for body in bodies.iter() {
            for needle in ["$argon2", "password_hash", "totp_sealed", "secret_digest"] {
                assert!(!body.contains(needle), "{needle} in {body}");
            }
            for secret in secrets.iter().chain([&ADMIN_PASSWORD]) {
                assert!(!body.contains(secret), "a secret in {body}");
            }
        }
    }
}

async fn create_tenant(sts: &Sts, name: &str, domain: &str, is_system: bool) -> (Tenant, User) {
    let (tenant, admin, _) = sts
        .create_tenant(
            NewTenantRequest {
                name: name.into(),
                display_name: name.to_uppercase(),
                domain: domain.into(),
                admin_username: format!("admin@{domain}"),
                admin_password: ADMIN_PASSWORD.into(),
                is_system,
                admin_totp: None,
            },
            "test",
        )
        .await
        .unwrap();
    (tenant, admin)
}

/// The body of `POST /api/v1/tenants`.
fn tenant_json(name: &str, domain: &str, admin: &str, password: &str) -> Value {
    let display_name = if name.len() > 1 {
        name.to_uppercase()
    } else {
        String::new()
    };
    json!({
        "name": name, "display_name": display_name, "domain": domain,
        "admin_username": admin, "admin_password": password,
    })
}

/// A concrete path for a route pattern: every `{param}` filled with a value
/// that names nothing (a valid role for `{role}`).
fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|seg| match seg {
            "{role}" => "application_administrator",
            s if s.starts_with('{') => "no-such-thing",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn denied(reply: &Reply) -> bool {
    reply.status == StatusCode::UNAUTHORIZED || reply.status == StatusCode::FORBIDDEN
}

// ---- access control -----------------------------------------------------------

#[tokio::test]
async fn every_route_enforces_its_declared_access() {
    let f = Fixture::new(Backend::Sqlite).await;
    let nobody = f.user_with(&f.ops, "nobody@ops.test", &[]).await;
    let ops_app_hybrid = f
        .user_with(
            &f.ops,
            "apphyb@ops.test",
            &[Role::ApplicationAdministrator, Role::HybridIdentityAdministrator],
        )
        .await;
    let app = f
        .user_with(&f.acme, "app@acme.test", &[Role::ApplicationAdministrator])
        .await;
    let hybrid = f
        .user_with(&f.acme, "hyb@acme.test", &[Role::HybridIdentityAdministrator])
        .await;

    let nobody_token = f.token(&f.ops, &nobody).await;
    let wrong_audience = f
        .sts
        .mint_access_token_for_tests(&f.ops, &f.ops_admin, "openid profile")
        .await
        .unwrap();
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let ops_app_hybrid = f.token(&f.ops, &ops_app_hybrid).await;
    let acme_admin = f.token(&f.acme, &f.acme_admin).await;
    let app = f.token(&f.acme, &app).await;
    let hybrid = f.token(&f.acme, &hybrid).await;

    assert!(routes().len() > 30);
    for spec in routes() {
        let path = concrete(spec.path);
        let method = spec.verb.method();
        let call = |token: Option<String>| {
            let method = method.clone();
            let path = path.clone();
            let f = &f;
            async move { f.call(method, &path, token.as_deref(), None).await }
        };

        let r = call(None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{spec:?} without a token");
        assert_eq!(r.error(), "invalid_token");
        let challenge = r.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

        let r = call(Some("not.a.jwt".into())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{spec:?} with garbage");

        let r = call(Some(wrong_audience.clone())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{spec:?} wrong audience");

        let r = call(Some(nobody_token.clone())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{spec:?} without a role");
        assert_eq!(r.error(), "forbidden");

        // One caller just short of the declared access, one that meets it.
        let (short, enough): (Vec<&str>, &str) = match spec.access {
            Access::AnyRole => (vec![], &hybrid),
            Access::Role(Role::GlobalAdministrator) => (vec![&ops_app_hybrid, &app, &hybrid], &acme_admin),
            Access::Role(Role::ApplicationAdministrator) => (vec![&hybrid], &app),
            Access::Role(Role::HybridIdentityAdministrator) => (vec![&app], &hybrid),
            Access::Operator => (vec![&acme_admin, &ops_app_hybrid], &operator),
        };
        for token in short {
            let r = call(Some(token.to_owned())).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{spec:?} with too low a role");
        }
        let r = call(Some(enough.to_owned())).await;
        assert!(!denied(&r), "{spec:?} refused a caller with the role: {}", r.json);
    }
    f.assert_no_secrets(&[]);
}

/// The access policy of the admin API, route by route. A change to the table
/// must change this list too, on purpose.
const POLICY: &str = "
GET /api/v1/me any role
GET /api/v1/tenants operator
POST /api/v1/tenants operator
DELETE /api/v1/tenants/{name} operator
PUT /api/v1/tenants/{name}/limits operator
POST /api/v1/tenants/{name}/domains/{domain}/verify operator
GET /api/v1/tenant global_administrator
PATCH /api/v1/tenant global_administrator
GET /api/v1/domains hybrid_identity_administrator
POST /api/v1/domains global_administrator
GET /api/v1/domains/{name} hybrid_identity_administrator
PATCH /api/v1/domains/{name} hybrid_identity_administrator
DELETE /api/v1/domains/{name} global_administrator
POST /api/v1/domains/{name}/verify global_administrator
GET /api/v1/users global_administrator
POST /api/v1/users global_administrator
POST /api/v1/users/directory global_administrator
GET /api/v1/users/{id} global_administrator
PATCH /api/v1/users/{id} global_administrator
DELETE /api/v1/users/{id} global_administrator
POST /api/v1/users/{id}/password global_administrator
POST /api/v1/users/{id}/mfa/reset global_administrator
PUT /api/v1/users/{id}/risk global_administrator
DELETE /api/v1/users/{id}/risk global_administrator
GET /api/v1/users/{id}/roles global_administrator
PUT /api/v1/users/{id}/roles/{role} global_administrator
DELETE /api/v1/users/{id}/roles/{role} global_administrator
GET /api/v1/groups global_administrator
POST /api/v1/groups global_administrator
POST /api/v1/groups/directory global_administrator
GET /api/v1/groups/{id} global_administrator
DELETE /api/v1/groups/{id} global_administrator
GET /api/v1/groups/{id}/members global_administrator
PUT /api/v1/groups/{id}/members/{user_id} global_administrator
DELETE /api/v1/groups/{id}/members/{user_id} global_administrator
GET /api/v1/clients application_administrator
POST /api/v1/clients application_administrator
GET /api/v1/clients/{client_id} application_administrator
DELETE /api/v1/clients/{client_id} application_administrator
GET /api/v1/apps application_administrator
POST /api/v1/apps application_administrator
GET /api/v1/apps/{id} application_administrator
PUT /api/v1/apps/{id} application_administrator
DELETE /api/v1/apps/{id} application_administrator
POST /api/v1/apps/{id}/test application_administrator
GET /api/v1/apps/{id}/assignments application_administrator
POST /api/v1/apps/{id}/assignments application_administrator
DELETE /api/v1/apps/{id}/assignments/{kind}/{principal_id} application_administrator
GET /api/v1/connectors application_administrator
GET /api/v1/connectors/{id} application_administrator
DELETE /api/v1/connectors/{id} application_administrator
PUT /api/v1/connectors/{id}/group application_administrator
GET /api/v1/agents hybrid_identity_administrator
GET /api/v1/agents/{id} hybrid_identity_administrator
DELETE /api/v1/agents/{id} hybrid_identity_administrator
GET /api/v1/connector-groups application_administrator
POST /api/v1/connector-groups application_administrator
GET /api/v1/connector-groups/{id} application_administrator
DELETE /api/v1/connector-groups/{id} application_administrator
POST /api/v1/registration-tokens any role
GET /api/v1/policies global_administrator
POST /api/v1/policies global_administrator
POST /api/v1/policies/what-if global_administrator
GET /api/v1/policies/{id} global_administrator
PUT /api/v1/policies/{id} global_administrator
DELETE /api/v1/policies/{id} global_administrator
GET /api/v1/locations global_administrator
POST /api/v1/locations global_administrator
GET /api/v1/locations/{id} global_administrator
PUT /api/v1/locations/{id} global_administrator
DELETE /api/v1/locations/{id} global_administrator
GET /api/v1/signins global_administrator
GET /api/v1/audit global_administrator
GET /api/v1/audit/verify operator
GET /api/v1/updates global_administrator
PUT /api/v1/updates/policy global_administrator
GET /api/v1/updates/history global_administrator
GET /api/v1/system/releases operator
POST /api/v1/system/releases operator
PUT /api/v1/system/releases/{id}/chunks/{seq} operator
POST /api/v1/system/releases/{id}/complete operator
DELETE /api/v1/system/releases/{id} operator
GET /api/v1/system/versions operator
POST /api/v1/system/signing-keys/rotate operator
POST /api/v1/system/cookie-keys/rotate operator
";

#[test]
fn the_route_table_is_the_documented_policy() {
    let table: Vec<String> = routes()
        .iter()
        .map(|spec| {
            let access = match spec.access {
                Access::AnyRole => "any role".to_owned(),
                Access::Role(role) => role.to_string(),
                Access::Operator => "operator".to_owned(),
            };
            format!("{} {} {access}", spec.verb.method(), spec.path)
        })
        .collect();
    assert_eq!(table.join("\n"), POLICY.trim());
}

#[tokio::test]
async fn unknown_api_paths_are_json_404s() {
    let f = Fixture::new(Backend::Sqlite).await;
    let r = f.call(Method::GET, "/api/v1/nothing/here", None, None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.error(), "not_found");
}

#[tokio::test]
async fn expired_disabled_and_deleted_callers_are_refused() {
    let f = Fixture::new(Backend::Sqlite).await;
    let token = f.token(&f.acme, &f.acme_admin).await;
    assert_eq!(f.get("/api/v1/me", &token).await.status, StatusCode::OK);
    f.clock.advance(Duration::from_secs(11 * 60));
    let r = f.get("/api/v1/me", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.json["message"].as_str().unwrap().contains("expired"));

    // A second administrator disabled, then deleted, loses access at once.
    let admin = f.token(&f.acme, &f.acme_admin).await;
    let other = f
        .user_with(&f.acme, "second@acme.test", &[Role::GlobalAdministrator])
        .await;
    let other_token = f.token(&f.acme, &other).await;
    assert_eq!(f.get("/api/v1/users", &other_token).await.status, StatusCode::OK);
    let path = format!("/api/v1/users/{}", other.id);
    let r = f.patch(&path, &admin, json!({ "enabled": false })).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(
        f.get("/api/v1/users", &other_token).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(f.delete(&path, &admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        f.get("/api/v1/users", &other_token).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_unavailable_store_is_a_503() {
    let f = Fixture::new(Backend::Sqlite).await;
    let token = f.token(&f.acme, &f.acme_admin).await;
    f.sts.store().close().await;
    let r = f.get("/api/v1/users", &token).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error(), "temporarily_unavailable");
    assert!(!r.json["message"].as_str().unwrap().contains("pool"));
}

#[tokio::test]
async fn me_describes_the_caller() {
    let f = Fixture::new(Backend::Sqlite).await;
    let r = f.get("/api/v1/me", &f.token(&f.ops, &f.ops_admin).await).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["user"]["username"], "admin@ops.test");
    assert_eq!(r.json["tenant"]["name"], "ops");
    assert_eq!(r.json["roles"], json!(["global_administrator"]));
    assert_eq!(r.json["operator"], true);
    assert_eq!(r.json["user"]["has_password"], true);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");

    let r = f.get("/api/v1/me", &f.token(&f.acme, &f.acme_admin).await).await;
    assert_eq!(r.json["operator"], false);
    f.assert_no_secrets(&[]);
}

// ---- tenant isolation ---------------------------------------------------------

#[tokio::test]
async fn another_tenants_objects_do_not_exist() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let (globex, globex_admin) = create_tenant(&f.sts, "globex", "globex.test", false).await;
    let globex = f.token(&globex, &globex_admin).await;

    // Objects of acme.
    let user = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": "jo@acme.test", "password": "tuesday morning coffee" }),
        )
        .await;
    assert_eq!(user.status, StatusCode::CREATED, "{}", user.json);
    let user_id = user.json["id"].as_str().unwrap().to_owned();
    let group = f.post("/api/v1/groups", &acme, json!({ "name": "staff" })).await;
    let group_id = group.json["id"].as_str().unwrap().to_owned();
    assert_eq!(
        f.put(&format!("/api/v1/groups/{group_id}/members/{user_id}"), &acme)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let client = f
        .post(
            "/api/v1/clients",
            &acme,
            json!({ "name": "wiki", "redirect_uris": ["https://wiki.acme.test/cb"], "grant_types": ["authorization_code"] }),
        )
        .await;
    let client_id = client.json["client_id"].as_str().unwrap().to_owned();
    let globex_group = f.post("/api/v1/groups", &globex, json!({ "name": "staff" })).await;
    let globex_group_id = globex_group.json["id"].as_str().unwrap().to_owned();

    // Each of them, through every route, with globex's token.
    let u = format!("/api/v1/users/{user_id}");
    let g = format!("/api/v1/groups/{group_id}");
    let c = format!("/api/v1/clients/{client_id}");
    let not_found = [
        f.get(&u, &globex).await,
        f.patch(&u, &globex, json!({ "display_name": "owned" })).await,
        f.patch(&u, &globex, json!({ "enabled": false })).await,
        f.post(
            &format!("{u}/password"),
            &globex,
            json!({ "password": "a new long passphrase" }),
        )
        .await,
        f.post(&format!("{u}/mfa/reset"), &globex, json!({})).await,
        f.get(&format!("{u}/roles"), &globex).await,
        f.put(&format!("{u}/roles/global_administrator"), &globex).await,
        f.delete(&format!("{u}/roles/global_administrator"), &globex).await,
        f.delete(
            &format!("/api/v1/users/{}/roles/global_administrator", f.acme_admin.id),
            &globex,
        )
        .await,
        f.get(&g, &globex).await,
        f.get(&format!("{g}/members"), &globex).await,
        f.put(&format!("{g}/members/{user_id}"), &globex).await,
        f.delete(&format!("{g}/members/{user_id}"), &globex).await,
        f.put(&format!("/api/v1/groups/{globex_group_id}/members/{user_id}"), &globex)
            .await,
        f.get(&c, &globex).await,
        f.delete(&c, &globex).await,
        f.get("/api/v1/domains/acme.test", &globex).await,
        f.patch(
            "/api/v1/domains/acme.test",
            &globex,
            json!({ "auth_mode": "passthrough" }),
        )
        .await,
        f.post("/api/v1/domains/acme.test/verify", &globex, json!({})).await,
        f.delete("/api/v1/domains/acme.test", &globex).await,
        f.delete(&g, &globex).await,
        f.delete(&u, &globex).await,
    ];
    for (i, r) in not_found.iter().enumerate() {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "call {i}: {}", r.json);
        assert_eq!(r.error(), "not_found");
    }
    // A user of acme cannot be created in globex either.
    let r = f
        .post("/api/v1/users", &globex, json!({ "username": "mallory@acme.test" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Lists show only globex's own objects.
    let users = f.get("/api/v1/users", &globex).await.json;
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["username"], "admin@globex.test");
    let groups = f.get("/api/v1/groups", &globex).await.json;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["id"].as_str().unwrap(), globex_group_id);
    let clients = f.get("/api/v1/clients", &globex).await.json;
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["client_id"] != client_id.as_str())
    );
    let domains = f.get("/api/v1/domains", &globex).await.json;
    assert_eq!(
        domains,
        json!([{ "name": "globex.test", "verified": true, "auth_mode": "cloud", "created_at": domains[0]["created_at"] }])
    );

    // And acme's objects are untouched.
    let r = f.get(&u, &acme).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["display_name"], "jo@acme.test");
    assert_eq!(r.json["enabled"], true);
    let members = f.get(&format!("{g}/members"), &acme).await.json;
    assert_eq!(members.as_array().unwrap().len(), 1);
    assert_eq!(f.get(&c, &acme).await.status, StatusCode::OK);
    let domain = f.get("/api/v1/domains/acme.test", &acme).await.json;
    assert_eq!(domain["auth_mode"], "cloud");
    let roles = f
        .get(&format!("/api/v1/users/{}/roles", f.acme_admin.id), &acme)
        .await
        .json;
    assert_eq!(roles["roles"], json!(["global_administrator"]));
    f.assert_no_secrets(&["tuesday morning coffee", "a new long passphrase"]);
}

// ---- tenants and users (both databases) ---------------------------------------

async fn tenants_and_users(backend: Backend) {
    let f = Fixture::new(backend).await;
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;

    // Operators create, list and delete tenants.
    let created = f
        .post(
            "/api/v1/tenants",
            &operator,
            tenant_json("initech", "initech.test", "bill@initech.test", "TPS reports passphrase"),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    assert_eq!(created.json["tenant"]["name"], "initech");
    assert_eq!(created.json["tenant"]["is_system"], false);
    assert_eq!(created.json["admin"]["username"], "bill@initech.test");
    assert_eq!(created.json["admin"]["has_password"], true);
    let names: Vec<String> = f
        .get("/api/v1/tenants", &operator)
        .await
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["acme", "initech", "ops"]);
    let again = f
        .post(
            "/api/v1/tenants",
            &operator,
            tenant_json("initech", "other.test", "bill@other.test", "TPS reports passphrase"),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let invalid = f
        .post(
            "/api/v1/tenants",
            &operator,
            tenant_json("X", "nodots", "bill", "short"),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.error(), "invalid_request");
    assert_eq!(
        invalid.json["problems"].as_array().unwrap().len(),
        5,
        "{}",
        invalid.json
    );
    assert_eq!(
        f.delete("/api/v1/tenants/initech", &operator).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.delete("/api/v1/tenants/initech", &operator).await.status,
        StatusCode::NOT_FOUND
    );
    let r = f.delete("/api/v1/tenants/ops", &operator).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.error(), "conflict");

    // Own tenant settings.
    let r = f
        .patch(
            "/api/v1/tenant",
            &acme,
            json!({ "lockout_threshold": 5, "require_mfa": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["lockout_threshold"], 5);
    assert_eq!(r.json["lockout_seconds"], 60);
    assert_eq!(r.json["require_mfa"], true);
    let r = f
        .patch(
            "/api/v1/tenant",
            &acme,
            json!({ "lockout_threshold": 0, "lockout_seconds": 86401 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["problems"].as_array().unwrap().len(), 2);
    assert_eq!(f.get("/api/v1/tenant", &acme).await.json["lockout_threshold"], 5);

    // Users: with and without a password, then changed.
    let with = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": " Ann@Acme.test ", "display_name": "Ann", "email": "ann@acme.test", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(with.status, StatusCode::CREATED, "{}", with.json);
    assert_eq!(with.json["username"], "ann@acme.test");
    assert_eq!(with.json["has_password"], true);
    assert_eq!(with.json["mfa_enrolled"], false);
    let ann = with.json["id"].as_str().unwrap().to_owned();
    let without = f
        .post("/api/v1/users", &acme, json!({ "username": "bob@acme.test" }))
        .await;
    assert_eq!(without.status, StatusCode::CREATED);
    assert_eq!(without.json["has_password"], false);
    assert_eq!(without.json["display_name"], "bob@acme.test");
    let bob = without.json["id"].as_str().unwrap().to_owned();
    let dup = f
        .post("/api/v1/users", &acme, json!({ "username": "ann@acme.test" }))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let unknown_field = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": "cy@acme.test", "is_admin": true }),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_field.error(), "invalid_request");

    let r = f
        .patch(
            &format!("/api/v1/users/{ann}"),
            &acme,
            json!({ "display_name": "Ann A.", "email": null, "mfa_required": true }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["display_name"], "Ann A.");
    assert_eq!(r.json["email"], Value::Null);
    assert_eq!(r.json["mfa_required"], true);

    // A password for bob; a weak one is refused.
    let r = f
        .post(
            &format!("/api/v1/users/{bob}/password"),
            &acme,
            json!({ "password": "bob" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .post(
            &format!("/api/v1/users/{bob}/password"),
            &acme,
            json!({ "password": "purple monkey dishwasher" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        f.get(&format!("/api/v1/users/{bob}"), &acme).await.json["has_password"],
        true
    );
    let stored = f.sts.store().user(&f.acme.id, &bob).await.unwrap();
    assert!(
        f.sts
            .hasher()
            .verify(&"purple monkey dishwasher".into(), stored.password_hash.as_deref())
            .await
            .unwrap()
    );

    // Disabling ends the user's sessions.
    let now = f.sts.now();
    let session = f
        .sts
        .store()
        .create_session(
            b"cookie digest",
            &f.acme.id,
            &ann,
            now,
            None,
            "pwd",
            now,
            now + Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let r = f
        .patch(&format!("/api/v1/users/{ann}"), &acme, json!({ "enabled": false }))
        .await;
    assert_eq!(r.json["enabled"], false);
    assert!(f.sts.store().session(&f.acme.id, &session.id, now).await.is_err());

    // MFA reset.
    let r = f
        .post(&format!("/api/v1/users/{ann}/mfa/reset"), &acme, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // Roles.
    let r = f
        .put(&format!("/api/v1/users/{bob}/roles/application_administrator"), &acme)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["roles"], json!(["application_administrator"]));
    let r = f.put(&format!("/api/v1/users/{bob}/roles/root"), &acme).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = f
        .delete(
            &format!("/api/v1/users/{bob}/roles/hybrid_identity_administrator"),
            &acme,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f
        .delete(&format!("/api/v1/users/{bob}/roles/application_administrator"), &acme)
        .await;
    assert_eq!(r.json["roles"], json!([]));

    // The last enabled global administrator stays.
    let me = format!("/api/v1/users/{}", f.acme_admin.id);
    for r in [
        f.delete(&me, &acme).await,
        f.patch(&me, &acme, json!({ "enabled": false })).await,
        f.delete(&format!("{me}/roles/global_administrator"), &acme).await,
    ] {
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.json);
        assert!(
            r.json["message"]
                .as_str()
                .unwrap()
                .contains("without an enabled global administrator")
        );
    }
    // A disabled global administrator does not count as the second one.
    assert_eq!(
        f.put(&format!("/api/v1/users/{ann}/roles/global_administrator"), &acme)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(f.delete(&me, &acme).await.status, StatusCode::CONFLICT);
    // An enabled one does.
    assert_eq!(
        f.put(&format!("/api/v1/users/{bob}/roles/global_administrator"), &acme)
            .await
            .status,
        StatusCode::OK
    );
    let r = f.delete(&format!("{me}/roles/global_administrator"), &acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(f.get("/api/v1/users", &acme).await.status, StatusCode::FORBIDDEN);

    // Bob, now the only global administrator, deletes Ann.
    let bob_user = f.sts.store().user(&f.acme.id, &bob).await.unwrap();
    let bob_token = f.token(&f.acme, &bob_user).await;
    assert_eq!(
        f.delete(&format!("/api/v1/users/{ann}"), &bob_token).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.get(&format!("/api/v1/users/{ann}"), &bob_token).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.delete(&format!("/api/v1/users/{bob}"), &bob_token).await.status,
        StatusCode::CONFLICT
    );

    f.assert_no_secrets(&[
        "TPS reports passphrase",
        "correct horse battery",
        "purple monkey dishwasher",
    ]);
}

#[tokio::test]
async fn tenants_and_users_on_sqlite() {
    tenants_and_users(Backend::Sqlite).await;
}

#[tokio::test]
async fn tenants_and_users_on_postgres() {
    tenants_and_users(Backend::Postgres).await;
}

#[tokio::test]
async fn users_are_validated_all_at_once() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let r = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": "eve@unknown.test", "display_name": "  ", "email": "not an email", "password": "short" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let problems: Vec<&str> = r.json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems[0].contains("not a domain of this tenant"));
    assert!(problems.iter().any(|p| p.contains("display_name")));
    assert!(problems.iter().any(|p| p.contains("email")));
    assert!(problems.iter().any(|p| p.contains("at least 12")));
    assert_eq!(r.json["message"], "the request has 4 problems");

    let r = f.call(Method::POST, "/api/v1/users", Some(&acme), None).await;
    assert!(r.status.is_client_error());
    assert_eq!(r.error(), "invalid_request");
    let r = f.get("/api/v1/signins?limit=5000&since=-1", &acme).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["problems"].as_array().unwrap().len(), 2);
    let r = f.get("/api/v1/signins?limt=5", &acme).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

// ---- domains ------------------------------------------------------------------

#[tokio::test]
async fn domains_are_verified_by_an_operator() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let hybrid = f
        .user_with(&f.acme, "hyb@acme.test", &[Role::HybridIdentityAdministrator])
        .await;
    let hybrid = f.token(&f.acme, &hybrid).await;

    let r = f
        .post("/api/v1/domains", &acme, json!({ "name": "Acme.Example" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["name"], "acme.example");
    assert_eq!(r.json["verified"], false);
    let txt = r.json["dns_txt_record"].as_str().unwrap().to_owned();
    assert!(txt.starts_with("postern-verify="));
    assert_eq!(
        f.post("/api/v1/domains", &acme, json!({ "name": "acme.example" }))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.post("/api/v1/domains", &acme, json!({ "name": "not a domain" }))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // No users in an unverified domain.
    let r = f
        .post("/api/v1/users", &acme, json!({ "username": "jo@acme.example" }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["problems"][0].as_str().unwrap().contains("not verified"));

    // The tenant cannot verify it itself.
    let r = f.post("/api/v1/domains/acme.example/verify", &acme, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json["message"].as_str().unwrap().contains(&txt));
    assert!(r.json["message"].as_str().unwrap().contains("operator"));

    // An operator vouches for it.
    let r = f
        .post("/api/v1/tenants/acme/domains/acme.example/verify", &operator, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["verified"], true);
    assert!(r.json.get("dns_txt_record").is_none());
    assert_eq!(
        f.post("/api/v1/domains/acme.example/verify", &acme, json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        f.post("/api/v1/tenants/acme/domains/nope.example/verify", &operator, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.post("/api/v1/tenants/nope/domains/acme.example/verify", &operator, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = f
        .post("/api/v1/users", &acme, json!({ "username": "jo@acme.example" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    // A verified name belongs to one tenant only (SEC-12): another tenant
    // cannot even add it, nor a name above or below it.
    let (globex, globex_admin) = create_tenant(&f.sts, "globex", "globex.test", false).await;
    let globex = f.token(&globex, &globex_admin).await;
    for name in ["acme.example", "eu.acme.example"] {
        let r = f.post("/api/v1/domains", &globex, json!({ "name": name })).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{name}: {}", r.json);
        assert!(
            r.json["message"].as_str().unwrap().contains("another organisation"),
            "{}",
            r.json
        );
    }
    // An unverified name may be added by both; the second verification of
    // an overlapping name is refused.
    for token in [&acme, &globex] {
        let r = f
            .post("/api/v1/domains", token, json!({ "name": "shared.example" }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }
    let r = f
        .post(
            "/api/v1/tenants/acme/domains/shared.example/verify",
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = f
        .post(
            "/api/v1/tenants/globex/domains/shared.example/verify",
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Hybrid identity administrators switch authentication modes, nothing more.
    let r = f
        .patch(
            "/api/v1/domains/acme.example",
            &hybrid,
            json!({ "auth_mode": "passthrough" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["auth_mode"], "passthrough");
    assert_eq!(
        f.patch("/api/v1/domains/acme.example", &hybrid, json!({ "auth_mode": "ldap" }))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        f.post("/api/v1/domains", &hybrid, json!({ "name": "x.example" }))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        f.delete("/api/v1/domains/acme.example", &hybrid).await.status,
        StatusCode::FORBIDDEN
    );

    // No cloud passwords in a pass-through domain.
    let users = f.get("/api/v1/users", &acme).await.json;
    let jo_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "jo@acme.example")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = f
        .post(
            &format!("/api/v1/users/{jo_id}/password"),
            &acme,
            json!({ "password": "tuesday morning coffee" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": "kim@acme.example", "password": "a long enough passphrase" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A domain in use cannot be removed; an unused one can.
    assert_eq!(
        f.delete("/api/v1/domains/acme.example", &acme).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.delete(&format!("/api/v1/users/{jo_id}"), &acme).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.delete("/api/v1/domains/acme.example", &acme).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.get("/api/v1/domains/acme.example", &acme).await.status,
        StatusCode::NOT_FOUND
    );
}

// ---- groups -------------------------------------------------------------------

#[tokio::test]
async fn groups_and_members() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let r = f
        .post(
            "/api/v1/groups",
            &acme,
            json!({ "name": "Sales", "description": "people who sell" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let g = format!("/api/v1/groups/{}", r.json["id"].as_str().unwrap());
    assert_eq!(
        f.post("/api/v1/groups", &acme, json!({ "name": "Sales" })).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        f.post("/api/v1/groups", &acme, json!({ "name": "" })).await.status,
        StatusCode::BAD_REQUEST
    );
    let member = format!("{g}/members/{}", f.acme_admin.id);
    assert_eq!(f.put(&member, &acme).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.put(&member, &acme).await.status, StatusCode::NO_CONTENT);
    let members = f.get(&format!("{g}/members"), &acme).await.json;
    assert_eq!(members[0]["username"], "admin@acme.test");
    assert_eq!(f.delete(&member, &acme).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.delete(&member, &acme).await.status, StatusCode::NOT_FOUND);
    assert_eq!(f.delete(&g, &acme).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.get(&g, &acme).await.status, StatusCode::NOT_FOUND);
}

// ---- OAuth clients ------------------------------------------------------------

#[tokio::test]
async fn client_secret_is_shown_once_and_stored_as_a_digest() {
    let f = Fixture::new(Backend::Sqlite).await;
    let app = f
        .user_with(&f.acme, "app@acme.test", &[Role::ApplicationAdministrator])
        .await;
    let app = f.token(&f.acme, &app).await;
    let r = f
        .post(
            "/api/v1/clients",
            &app,
            json!({
                "name": "Wiki",
                "redirect_uris": ["https://wiki.acme.test/cb", "https://wiki.acme.test/cb", "http://127.0.0.1:8000/cb"],
                "grant_types": ["authorization_code", "refresh_token"],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.json["client_type"], "confidential");
    assert_eq!(r.json["redirect_uris"].as_array().unwrap().len(), 2);
    let client_id = r.json["client_id"].as_str().unwrap().to_owned();
    assert!(uuid_like(&client_id));
    let secret = r.json["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43);

    let stored = f.sts.store().client(&f.acme.id, &client_id).await.unwrap();
    assert_eq!(stored.secret_digest, Some(postern_keyring::digest(&secret)));
    let shown = f.get(&format!("/api/v1/clients/{client_id}"), &app).await;
    assert!(shown.json.get("client_secret").is_none());
    let listed = f.get("/api/v1/clients", &app).await;
    assert_eq!(
        listed.json.as_array().unwrap().len(),
        3,
        "the CLI's and the console's built-in clients, and Wiki"
    );
    {
        let bodies = f.bodies.lock().unwrap();
        let with_secret = bodies.iter().filter(|b| b.contains(&secret)).count();
        assert_eq!(with_secret, 1, "the secret was shown more than once");
    }

    // A public client gets no secret and may use the device flow.
    let r = f
        .post(
            "/api/v1/clients",
            &app,
            json!({ "name": "Tool", "client_type": "public", "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["client_secret"], Value::Null);
    let public_id = r.json["client_id"].as_str().unwrap().to_owned();
    assert!(
        f.sts
            .store()
            .client(&f.acme.id, &public_id)
            .await
            .unwrap()
            .secret_digest
            .is_none()
    );

    // Every problem of a bad registration at once.
    let r = f
        .post(
            "/api/v1/clients",
            &app,
            json!({
                "name": "",
                "redirect_uris": ["http://wiki.acme.test/cb", "https://wiki.acme.test/cb#top", "wiki"],
                "grant_types": ["password", "urn:ietf:params:oauth:grant-type:device_code"],
                "scopes": ["postern:admin", "bad scope"],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let problems = r.json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 8, "{problems:#?}");

    // Only a global administrator may hand out the admin scope.
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let admin_tool = json!({ "name": "Ops tool", "client_type": "public", "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"], "scopes": ["postern:admin"] });
    assert_eq!(
        f.post("/api/v1/clients", &app, admin_tool.clone()).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        f.post("/api/v1/clients", &acme, admin_tool).await.status,
        StatusCode::CREATED
    );

    // Built-in clients stay.
    let r = f.delete("/api/v1/clients/postern-cli", &app).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        f.delete(&format!("/api/v1/clients/{client_id}"), &app).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        f.get(&format!("/api/v1/clients/{client_id}"), &app).await.status,
        StatusCode::NOT_FOUND
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

// ---- on-prem components -------------------------------------------------------

#[tokio::test]
async fn connectors_are_for_application_and_agents_for_hybrid_identity_administrators() {
    let f = Fixture::new(Backend::Sqlite).await;
    let connector = f
        .component(&f.acme, ComponentKind::Connector, "gw1.acme.internal")
        .await;
    let agent = f.component(&f.acme, ComponentKind::Agent, "dc1.acme.internal").await;
    let app = f
        .user_with(&f.acme, "app@acme.test", &[Role::ApplicationAdministrator])
        .await;
    let app = f.token(&f.acme, &app).await;
    let hybrid = f
        .user_with(&f.acme, "hyb@acme.test", &[Role::HybridIdentityAdministrator])
        .await;
    let hybrid = f.token(&f.acme, &hybrid).await;
    let global = f.token(&f.acme, &f.acme_admin).await;
    let c = format!("/api/v1/connectors/{}", connector.id);
    let a = format!("/api/v1/agents/{}", agent.id);

    // The application administrator manages connectors and their groups...
    let r = f.get("/api/v1/connectors", &app).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    let r = f.get(&c, &app).await;
    assert_eq!(r.json["name"], "gw1.acme.internal");
    assert_eq!(r.json["kind"], "connector");
    assert_eq!(r.json["group"]["name"], "Default");
    assert_eq!(r.json["serial"], connector.serial.as_str());
    assert_eq!(r.json["cert_not_after"], connector.not_after.secs());
    assert_eq!(r.json.get("key_id"), None);
    assert_eq!(f.get("/api/v1/connector-groups", &app).await.status, StatusCode::OK);
    let r = f.post("/api/v1/connector-groups", &app, json!({ "name": "dmz" })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let r = f
        .post("/api/v1/registration-tokens", &app, json!({ "kind": "connector" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // ...but not agents, nor tokens that register them (the role is checked
    // before the rest of the body).
    for r in [
        f.get("/api/v1/agents", &app).await,
        f.get(&a, &app).await,
        f.delete(&a, &app).await,
        f.post("/api/v1/registration-tokens", &app, json!({ "kind": "agent" }))
            .await,
        f.post(
            "/api/v1/registration-tokens",
            &app,
            json!({ "kind": "agent", "ttl_secs": 0 }),
        )
        .await,
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
        assert_eq!(r.error(), "forbidden");
    }
    // An agent is not a connector.
    let r = f.get(&format!("/api/v1/connectors/{}", agent.id), &app).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.delete(&format!("/api/v1/connectors/{}", agent.id), &app).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // The hybrid identity administrator: the reverse.
    let r = f.get("/api/v1/agents", &hybrid).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    let r = f.get(&a, &hybrid).await;
    assert_eq!(r.json["key_id"], agent.key_id.as_str());
    assert_eq!(r.json.get("group"), None);
    let r = f
        .post("/api/v1/registration-tokens", &hybrid, json!({ "kind": "agent" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    for r in [
        f.get("/api/v1/connectors", &hybrid).await,
        f.get(&c, &hybrid).await,
        f.delete(&c, &hybrid).await,
        f.put_json(&format!("{c}/group"), &hybrid, json!({ "group": "dmz" }))
            .await,
        f.get("/api/v1/connector-groups", &hybrid).await,
        f.post("/api/v1/connector-groups", &hybrid, json!({ "name": "mine" }))
            .await,
        f.post("/api/v1/registration-tokens", &hybrid, json!({ "kind": "connector" }))
            .await,
    ] {
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    }
    assert_eq!(
        f.get(&format!("/api/v1/agents/{}", connector.id), &hybrid).await.status,
        StatusCode::NOT_FOUND
    );

    // A global administrator may do both.
    for kind in ["connector", "agent"] {
        let r = f
            .post("/api/v1/registration-tokens", &global, json!({ "kind": kind }))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{kind}: {}", r.json);
    }
    assert_eq!(f.get(&a, &global).await.status, StatusCode::OK);
    assert_eq!(f.get(&c, &global).await.status, StatusCode::OK);
    f.assert_no_secrets(&["not really a public key"]);
}

#[tokio::test]
async fn component_status_follows_the_service_clock() {
    let f = Fixture::new(Backend::Sqlite).await;
    let connector = f.component(&f.acme, ComponentKind::Connector, "gw1").await;
    let c = format!("/api/v1/connectors/{}", connector.id);
    let token = f.token(&f.acme, &f.acme_admin).await;
    let r = f.get(&c, &token).await;
    assert_eq!(r.json["status"], "inactive", "never seen");
    assert_eq!(r.json["last_seen_at"], Value::Null);
    assert_eq!(r.json["renewal_due"], false);

    f.sts
        .store()
        .touch_component(&connector.id, "192.0.2.7", Some("0.2.0"), f.sts.now())
        .await
        .unwrap();
    let r = f.get(&c, &token).await;
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["last_seen_ip"], "192.0.2.7");
    assert_eq!(r.json["version"], "0.2.0");
    f.clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(f.get(&c, &token).await.json["status"], "active");
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(f.get(&c, &token).await.json["status"], "inactive");

    // A connector renews once its certificate is 180 days old.
    f.clock.advance(Duration::from_secs(180 * DAY));
    let token = f.token(&f.acme, &f.acme_admin).await;
    let listed = f.get("/api/v1/connectors", &token).await.json;
    assert_eq!(listed[0]["renewal_due"], true);
    assert_eq!(listed[0]["status"], "inactive");
}

#[tokio::test]
async fn deleting_a_component_revokes_its_certificate_at_once() {
    let f = Fixture::new(Backend::Sqlite).await;
    let token = f.token(&f.acme, &f.acme_admin).await;
    let store = f.sts.store();
    for (kind, route, ca) in [
        (ComponentKind::Connector, "connectors", "connectors"),
        (ComponentKind::Agent, "agents", "agents"),
    ] {
        let component = f.component(&f.acme, kind, "host").await;
        let path = format!("/api/v1/{route}/{}", component.id);
        assert!(
            store
                .component_by_serial(&component.serial, f.sts.now())
                .await
                .unwrap()
                .is_some()
        );
        let r = f.delete(&path, &token).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);

        // The very next mTLS request presenting this serial finds nothing...
        assert!(
            store
                .component_by_serial(&component.serial, f.sts.now())
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        // ...and the CA's next revocation list names it.
        let revoked = store.revoked_certificates(ca, f.sts.now()).await.unwrap();
        let entry = revoked.iter().find(|r| r.serial == component.serial).unwrap();
        assert_eq!(entry.reason, "removed");
        assert_eq!(f.get(&path, &token).await.status, StatusCode::NOT_FOUND);
        assert_eq!(f.delete(&path, &token).await.status, StatusCode::NOT_FOUND);
    }
    let audit = f.get("/api/v1/audit?limit=1000", &token).await.json;
    let deletes: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"].as_str().unwrap().ends_with(".delete"))
        .collect();
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[0]["action"], "connector.delete");
    assert_eq!(deletes[1]["action"], "agent.delete");
    assert_eq!(deletes[1]["detail"]["reason"], "removed");
    assert_eq!(deletes[1]["detail"]["revoked_serials"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn connector_groups_and_moves() {
    let f = Fixture::new(Backend::Sqlite).await;
    let token = f.token(&f.acme, &f.acme_admin).await;
    let connector = f.component(&f.acme, ComponentKind::Connector, "gw1").await;
    let c = format!("/api/v1/connectors/{}", connector.id);

    let groups = f.get("/api/v1/connector-groups", &token).await.json;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["name"], "Default");
    assert_eq!(groups[0]["is_default"], true);
    assert_eq!(groups[0]["connector_count"], 1);
    let default = format!("/api/v1/connector-groups/{}", groups[0]["id"].as_str().unwrap());
    let default_version = groups[0]["config_version"].as_i64().unwrap();

    let r = f
        .post(
            "/api/v1/connector-groups",
            &token,
            json!({ "name": " DMZ west ", "description": "second site" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["name"], "DMZ west");
    assert_eq!(r.json["is_default"], false);
    assert_eq!(r.json["connector_count"], 0);
    let dmz_id = r.json["id"].as_str().unwrap().to_owned();
    let dmz = format!("/api/v1/connector-groups/{dmz_id}");
    let r = f
        .post("/api/v1/connector-groups", &token, json!({ "name": "DMZ west" }))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = f
        .post(
            "/api/v1/connector-groups",
            &token,
            json!({ "name": "a/b", "description": "x".repeat(1001) }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json["problems"].as_array().unwrap().len(), 2, "{}", r.json);
    let r = f
        .post("/api/v1/connector-groups", &token, json!({ "name": "x".repeat(65) }))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Moved by name; moving again is a no-op; by ID works too.
    let r = f
        .put_json(&format!("{c}/group"), &token, json!({ "group": "DMZ west" }))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["group"], json!({ "id": dmz_id, "name": "DMZ west" }));
    let r = f
        .put_json(&format!("{c}/group"), &token, json!({ "group": dmz_id }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let detail = f.get(&dmz, &token).await.json;
    assert_eq!(detail["connector_count"], 1);
    assert_eq!(detail["connectors"][0]["id"], connector.id.as_str());
    let default_detail = f.get(&default, &token).await.json;
    assert_eq!(default_detail["connectors"], json!([]));
    assert!(default_detail["config_version"].as_i64().unwrap() > default_version);
    for bad in [
        json!({ "group": "nowhere" }),
        json!({ "group": "dmz", "extra": 1 }),
        json!({}),
    ] {
        let r = f.put_json(&format!("{c}/group"), &token, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    }

    // Neither the default group nor one with connectors can be deleted.
    let r = f.delete(&dmz, &token).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json["message"].as_str().unwrap().contains("move or delete them"));
    let r = f.delete(&default, &token).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json["message"].as_str().unwrap().contains("default"));
    let r = f
        .put_json(&format!("{c}/group"), &token, json!({ "group": "Default" }))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(f.delete(&dmz, &token).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.get(&dmz, &token).await.status, StatusCode::NOT_FOUND);

    let audit = f.get("/api/v1/audit?limit=1000", &token).await.json;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .filter(|a| a.starts_with("connector"))
        .collect();
    assert_eq!(
        actions,
        [
            "connector_group.create",
            "connector.move",
            "connector.move",
            "connector_group.delete"
        ]
    );
}

#[tokio::test]
async fn registration_tokens_are_shown_once_and_stored_as_digests() {
    let f = Fixture::new(Backend::Sqlite).await;
    let app_user = f
        .user_with(&f.acme, "app@acme.test", &[Role::ApplicationAdministrator])
        .await;
    let app = f.token(&f.acme, &app_user).await;
    let hybrid = f
        .user_with(&f.acme, "hyb@acme.test", &[Role::HybridIdentityAdministrator])
        .await;
    let hybrid = f.token(&f.acme, &hybrid).await;
    let store = f.sts.store();
    let default = store.default_connector_group(&f.acme.id, f.sts.now()).await.unwrap();

    let now = f.sts.now();
    let r = f
        .post(
            "/api/v1/registration-tokens",
            &app,
            json!({ "kind": "connector", "group": "Default", "ttl_secs": 600, "uses": 3 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let token = r.json["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ptr_"), "{token}");
    assert_eq!(token.len(), 4 + 43);
    assert!(
        token[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(r.json["kind"], "connector");
    assert_eq!(r.json["uses"], 3);
    assert_eq!(r.json["expires_at"], (now + Duration::from_secs(600)).secs());
    assert_eq!(r.json["group"], json!({ "id": default.id, "name": "Default" }));

    // Only the digest of the whole token is stored: neither the token nor the
    // part after its prefix finds anything.
    for wrong in [token.as_str(), &token[4..]] {
        assert!(
            store
                .consume_registration_token(wrong.as_bytes(), now)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        store
            .consume_registration_token(&postern_keyring::digest(&token[4..]), now)
            .await
            .unwrap()
            .is_none()
    );
    let grant = store
        .consume_registration_token(&postern_keyring::digest(&token), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(grant.tenant_id, f.acme.id);
    assert_eq!(grant.kind, ComponentKind::Connector);
    assert_eq!(grant.group_id.as_deref(), Some(default.id.as_str()));
    assert_eq!(grant.created_by, format!("user:{}", app_user.id));
    assert_eq!(grant.uses_left, 2);
    assert_eq!(grant.expires_at, now + Duration::from_secs(600));

    // Defaults: an hour, one use.
    let r = f
        .post("/api/v1/registration-tokens", &hybrid, json!({ "kind": "agent" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["uses"], 1);
    assert_eq!(r.json["expires_at"], (now + Duration::from_secs(3600)).secs());
    assert_eq!(r.json.get("group"), None);
    let agent_token = r.json["token"].as_str().unwrap().to_owned();
    assert_ne!(agent_token, token);

    // Every problem at once.
    let r = f
        .post(
            "/api/v1/registration-tokens",
            &app,
            json!({ "kind": "connector", "ttl_secs": 86_401, "uses": 0, "group": "nowhere" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let problems = r.json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let r = f
        .post(
            "/api/v1/registration-tokens",
            &app,
            json!({ "kind": "connector", "ttl_secs": -1, "uses": 101 }),
        )
        .await;
    assert_eq!(r.json["problems"].as_array().unwrap().len(), 2, "{}", r.json);
    let r = f
        .post(
            "/api/v1/registration-tokens",
            &hybrid,
            json!({ "kind": "agent", "group": "Default" }),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.json["message"].as_str().unwrap().contains("agents do not belong"));
    for bad in [
        json!({ "kind": "printer" }),
        json!({ "kind": "agent", "ttl": 60 }),
        json!({ "uses": 1 }),
    ] {
        let r = f.post("/api/v1/registration-tokens", &hybrid, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    }
    // The most a token may be: a day, a hundred uses.
    let r = f
        .post(
            "/api/v1/registration-tokens",
            &app,
            json!({ "kind": "connector", "ttl_secs": 86_400, "uses": 100 }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);

    // The audit log names the token by its prefix only.
    let global = f.token(&f.acme, &f.acme_admin).await;
    let audit = f.get("/api/v1/audit?limit=1000", &global).await.json;
    let minted: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "registration_token.create")
        .collect();
    assert_eq!(minted.len(), 3);
    assert!(
        minted[0]["target"]
            .as_str()
            .unwrap()
            .starts_with("registration_token:ptr_")
    );
    assert_eq!(minted[0]["detail"]["group"], "Default");
    assert_eq!(minted[0]["detail"]["uses"], 3);

    // Each token was in exactly one response.
    let bodies = f.bodies.lock().unwrap();
    for secret in [&token, &agent_token] {
        assert_eq!(bodies.iter().filter(|b| b.contains(secret.as_str())).count(), 1);
        assert_eq!(bodies.iter().filter(|b| b.contains(&secret[..20])).count(), 1);
    }
}

#[tokio::test]
async fn another_tenants_components_do_not_exist() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let (globex, globex_admin) = create_tenant(&f.sts, "globex", "globex.test", false).await;
    let globex_token = f.token(&globex, &globex_admin).await;
    let connector = f.component(&f.acme, ComponentKind::Connector, "gw1").await;
    let agent = f.component(&f.acme, ComponentKind::Agent, "dc1").await;
    let group = f
        .post("/api/v1/connector-groups", &acme, json!({ "name": "dmz" }))
        .await;
    let group_id = group.json["id"].as_str().unwrap().to_owned();
    let globex_connector = f.component(&globex, ComponentKind::Connector, "gw1").await;

    let c = format!("/api/v1/connectors/{}", connector.id);
    let a = format!("/api/v1/agents/{}", agent.id);
    let g = format!("/api/v1/connector-groups/{group_id}");
    let not_found = [
        f.get(&c, &globex_token).await,
        f.put_json(&format!("{c}/group"), &globex_token, json!({ "group": "Default" }))
            .await,
        f.delete(&c, &globex_token).await,
        f.get(&a, &globex_token).await,
        f.delete(&a, &globex_token).await,
        f.get(&g, &globex_token).await,
        f.delete(&g, &globex_token).await,
    ];
    for (i, r) in not_found.iter().enumerate() {
        assert_eq!(r.status, StatusCode::NOT_FOUND, "call {i}: {}", r.json);
        assert_eq!(r.error(), "not_found");
    }
    // acme's group cannot be named from globex, by ID or by name.
    let moved = format!("/api/v1/connectors/{}/group", globex_connector.id);
    for group in [group_id.as_str(), "dmz"] {
        let r = f.put_json(&moved, &globex_token, json!({ "group": group })).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
        let r = f
            .post(
                "/api/v1/registration-tokens",
                &globex_token,
                json!({ "kind": "connector", "group": group }),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.json);
    }

    // Lists show only globex's own.
    let connectors = f.get("/api/v1/connectors", &globex_token).await.json;
    assert_eq!(connectors.as_array().unwrap().len(), 1);
    assert_eq!(connectors[0]["id"], globex_connector.id.as_str());
    assert_eq!(f.get("/api/v1/agents", &globex_token).await.json, json!([]));
    let groups = f.get("/api/v1/connector-groups", &globex_token).await.json;
    assert_eq!(groups.as_array().unwrap().len(), 1);
    assert_eq!(groups[0]["name"], "Default");

    // And acme's are untouched.
    assert_eq!(f.get(&c, &acme).await.json["group"]["name"], "Default");
    assert_eq!(f.get(&a, &acme).await.status, StatusCode::OK);
    assert_eq!(f.get(&g, &acme).await.status, StatusCode::OK);
    assert!(
        f.sts
            .store()
            .component_by_serial(&agent.serial, f.sts.now())
            .await
            .unwrap()
            .is_some()
    );
}

// ---- logs, audit, keys --------------------------------------------------------

#[tokio::test]
async fn changes_are_audited_and_the_chain_verifies() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let r = f
        .post(
            "/api/v1/users",
            &acme,
            json!({ "username": "ann@acme.test", "password": "correct horse battery" }),
        )
        .await;
    let ann = r.json["id"].as_str().unwrap().to_owned();
    f.post(
        &format!("/api/v1/users/{ann}/password"),
        &acme,
        json!({ "password": "staple gun in the drawer" }),
    )
    .await;
    f.post("/api/v1/groups", &acme, json!({ "name": "staff" })).await;
    f.put(
        &format!("/api/v1/users/{ann}/roles/hybrid_identity_administrator"),
        &acme,
    )
    .await;
    f.patch("/api/v1/tenant", &acme, json!({ "require_mfa": true })).await;
    // Refused changes leave no entry.
    f.delete(&format!("/api/v1/users/{}", f.acme_admin.id), &acme).await;

    let entries = f.get("/api/v1/audit", &acme).await.json;
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "user.create",
            "user.password.set",
            "group.create",
            "role.assign",
            "tenant.settings"
        ]
    );
    let actor = format!("user:{}", f.acme_admin.id);
    assert!(
        entries.as_array().unwrap()[1..]
            .iter()
            .all(|e| e["actor"] == actor.as_str())
    );
    assert_eq!(entries[1]["target"], format!("user:{ann}"));
    assert_eq!(entries[1]["detail"]["username"], "ann@acme.test");
    assert_eq!(entries[4]["detail"]["role"], "hybrid_identity_administrator");

    // Paging.
    let after = entries[3]["seq"].as_i64().unwrap();
    let page = f.get(&format!("/api/v1/audit?after={after}&limit=1"), &acme).await.json;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["action"], "role.assign");

    // Other tenants' entries are not shown; the operator's own actions are.
    f.post("/api/v1/system/signing-keys/rotate", &operator, json!({})).await;
    let ops_entries = f.get("/api/v1/audit", &operator).await.json;
    assert!(
        ops_entries
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "user.create")
    );
    assert_eq!(
        ops_entries.as_array().unwrap().last().unwrap()["action"],
        "signing_key.rotate"
    );

    // The chain is installation-wide: operators only.
    assert_eq!(f.get("/api/v1/audit/verify", &acme).await.status, StatusCode::FORBIDDEN);
    let r = f.get("/api/v1/audit/verify", &operator).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["intact"], true);
    assert_eq!(r.json["first_broken_seq"], Value::Null);
    assert!(r.json["entries"].as_i64().unwrap() >= 8);
    f.assert_no_secrets(&["correct horse battery", "staple gun in the drawer"]);
}

#[tokio::test]
async fn signins_are_listed_for_the_tenant() {
    let f = Fixture::new(Backend::Sqlite).await;
    let acme = f.token(&f.acme, &f.acme_admin).await;
    for (tenant, username, outcome) in [
        (&f.acme, "admin@acme.test", SigninOutcome::Success),
        (&f.acme, "nobody@acme.test", SigninOutcome::BadCredentials),
        (&f.ops, "admin@ops.test", SigninOutcome::Success),
    ] {
        f.sts
            .store()
            .log_signin(&SigninEvent {
                id: String::new(),
                tenant_id: tenant.id.clone(),
                at: f.sts.now(),
                username: username.into(),
                user_id: None,
                client_id: Some("postern-cli".into()),
                ip: "192.0.2.1".into(),
                outcome,
                detail: String::new(),
            })
            .await
            .unwrap();
        f.clock.advance(Duration::from_secs(1));
    }
    let r = f.get("/api/v1/signins", &acme).await;
    assert_eq!(r.status, StatusCode::OK);
    let events = r.json.as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["outcome"], "bad_credentials");
    let r = f.get("/api/v1/signins?limit=1", &acme).await;
    assert_eq!(r.json.as_array().unwrap().len(), 1);
    let later = f.sts.now().secs();
    let r = f.get(&format!("/api/v1/signins?since={later}"), &acme).await;
    assert_eq!(r.json, json!([]));
}

/// Cookie keys belong to the installation's front door: operators only, and a
/// router without a front door in its process answers 503 instead of
/// pretending (the service always wires it; see the proxy tests).
#[tokio::test]
async fn cookie_key_rotation_is_for_operators_and_needs_the_front_door() {
    let f = Fixture::new(Backend::Sqlite).await;
    let tenant_admin = f.token(&f.acme, &f.acme_admin).await;
    let r = f
        .post("/api/v1/system/cookie-keys/rotate", &tenant_admin, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let r = f.post("/api/v1/system/cookie-keys/rotate", &operator, json!({})).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.json);
}

#[tokio::test]
async fn signing_key_rotation_keeps_issued_tokens_valid() {
    let f = Fixture::new(Backend::Sqlite).await;
    let operator = f.token(&f.ops, &f.ops_admin).await;
    let first = f.post("/api/v1/system/signing-keys/rotate", &operator, json!({})).await;
    assert_eq!(first.status, StatusCode::OK);
    let second = f.post("/api/v1/system/signing-keys/rotate", &operator, json!({})).await;
    assert_ne!(first.json["kid"], second.json["kid"]);
    assert_eq!(f.get("/api/v1/me", &operator).await.status, StatusCode::OK);
    let fresh = f.token(&f.ops, &f.ops_admin).await;
    assert_eq!(f.get("/api/v1/me", &fresh).await.status, StatusCode::OK);
}

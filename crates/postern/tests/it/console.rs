//! The admin console at `/admin` against the real service with a real HTTP
//! client keeping cookies: sign-in through the STS pages (password + TOTP),
//! publishing and assigning through the forms (seen in the API), "Test this
//! app" with a running connector and without one, CSRF and cross-site
//! refusals that change nothing, expired sessions, roles (no role: 403; an
//! application administrator cannot open the users page), tenant isolation,
//! escaping of user-supplied names, and no secrets in the pages.

use std::time::Duration;

use postern_store::{NewUser, Role, Tenant, User};
use postern_testkit::{Browser, Login, Page, TestService};
use serde_json::{Value, json};

use crate::common::admin_login;
use crate::proxy_harness::{AppOptions, ProxyBench};

/// The CSRF token of the first form on a console page.
fn csrf(page: &Page) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field on {} ({}):\n{}", page.url, page.status, page.body))
        + marker.len();
    let end = page.body[start..].find('"').unwrap() + start;
    page.body[start..end].to_owned()
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Signs in to the console of `tenant` through the real pages and returns the
/// browser and the overview page.
async fn sign_in(svc: &TestService, tenant: &str, login: &Login) -> (Browser, Page) {
    let browser = Browser::new();
    let page = browser
        .sign_in(&format!("{}/admin/login?tenant={tenant}", svc.url()), login)
        .await
        .unwrap();
    (browser, page)
}

/// `GET path` of the admin API with a token minted for `user`.
async fn api_get(svc: &TestService, tenant: &Tenant, user: &User, path: &str) -> Value {
    let token = svc.admin_token(tenant, user).await.unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1{path}", svc.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

fn session_cookie(browser: &Browser, svc: &TestService) -> Option<String> {
    use reqwest::cookie::CookieStore;
    let url = url::Url::parse(&svc.url()).unwrap();
    let cookies = browser.jar().cookies(&url)?;
    let cookies = cookies.to_str().unwrap().to_owned();
    cookies
        .split("; ")
        .find(|c| c.starts_with("postern-console=") || c.starts_with("__Host-postern-console="))
        .map(str::to_owned)
}

#[tokio::test]
async fn sign_in_publish_assign_csrf_and_session_expiry() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let base = svc.url();
    let bob = svc
        .create_user(&t.tenant, "bob@acme.test", "bob's long password")
        .await
        .unwrap();

    // Without a session the console asks for the organisation.
    let anonymous = Browser::new();
    let page = anonymous.follow(&format!("{base}/admin"), &base).await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"id="login""#), "{}", page.body);
    // An unknown organisation is said so.
    let page = anonymous
        .get(&format!("{base}/admin/login?tenant=nosuchorg"))
        .await
        .unwrap();
    assert_eq!(page.status, 404);
    assert!(page.body.contains("no organisation named nosuchorg"));

    // Sign in with password + TOTP through the STS pages.
    let (browser, overview) = sign_in(&svc, "acme", &admin_login(&svc, &t)).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.url.ends_with("/admin"), "{}", overview.url);
    assert!(overview.body.contains("<h1>Overview</h1>"), "{}", overview.body);
    assert!(overview.body.contains("admin@acme.test"));
    let h = &overview.headers;
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["referrer-policy"], "same-origin");
    let cookie = session_cookie(&browser, &svc).expect("a console session cookie");
    let token = cookie.split_once('=').unwrap().1.split_once('.').unwrap().1.to_owned();
    assert!(!overview.body.contains(&token), "the access token is not in the page");
    assert!(!overview.body.contains(&t.admin_password), "no password in the page");

    // Publish through the form; the API sees it.
    let form = browser.get(&format!("{base}/admin/apps/new")).await.unwrap();
    assert_eq!(form.status, 200);
    let token_field = csrf(&form);
    let hostile = r#"Wiki <script>alert("x")</script> & co"#;
    let published = browser
        .post(
            &format!("{base}/admin/apps"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("name", hostile),
                ("external_url", "https://wiki.acme.test/"),
                ("internal_url", "http://127.0.0.1:9/"),
                ("preauth", "sts"),
                ("connector_group", ""),
                ("action", "publish"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(published.status, 303, "{}", published.body);
    let app_page = browser.get(&published.location().unwrap()).await.unwrap();
    assert_eq!(app_page.status, 200);
    assert!(app_page.body.contains("The app is published."));
    assert!(!app_page.body.contains("<script>alert"), "names are escaped");
    assert!(
        app_page
            .body
            .contains("Wiki &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co")
    );
    let apps = api_get(&svc, &t.tenant, &t.admin, "/apps").await;
    let app = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == hostile)
        .expect("the app is in the API")
        .clone();
    assert_eq!(app["external_url"], "https://wiki.acme.test/");
    assert_eq!(app["preauth"], "sts");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let listing = browser.get(&format!("{base}/admin/apps")).await.unwrap();
    assert!(!listing.body.contains("<script>alert"));

    // An invalid app: every problem is listed, the values kept, nothing made.
    let refused = browser
        .post(
            &format!("{base}/admin/apps"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("name", ""),
                ("external_url", "ftp://nowhere"),
                ("internal_url", "not a url"),
                ("preauth", "sts"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains(r#"role="alert""#));
    assert!(refused.body.matches("<li>").count() >= 2, "{}", refused.body);
    assert!(refused.body.contains(r#"value="ftp://nowhere""#), "the values are kept");
    assert_eq!(
        api_get(&svc, &t.tenant, &t.admin, "/apps")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Assign a user by name.
    let assigned = browser
        .post(
            &format!("{base}/admin/apps/{app_id}/assign"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("kind", "user"),
                ("principal", "bob@acme.test"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(assigned.status, 303, "{}", assigned.body);
    let assignments = api_get(&svc, &t.tenant, &t.admin, &format!("/apps/{app_id}/assignments")).await;
    assert!(
        assignments
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == bob.id.as_str()),
        "{assignments}"
    );
    // An unknown user: the API's 404, shown, nothing added.
    let unknown = browser
        .post(
            &format!("{base}/admin/apps/{app_id}/assign"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("kind", "user"),
                ("principal", "nobody@acme.test"),
            ]),
        )
        .await
        .unwrap();
    assert!(unknown.status.is_client_error(), "{}", unknown.status);
    assert!(unknown.body.contains(r#"role="alert""#));

    // CSRF: without the token, with a wrong one, from another site: refused,
    // nothing changed.
    let delete_url = format!("{base}/admin/apps/{app_id}/delete");
    for (what, body, extra) in [
        ("no token", fields(&[("action", "delete")]), None),
        ("wrong token", fields(&[("csrf", "AAAA"), ("action", "delete")]), None),
        (
            "cross-site Origin",
            fields(&[("csrf", token_field.as_str()), ("action", "delete")]),
            Some(("origin", "https://evil.example")),
        ),
        (
            "cross-site fetch metadata",
            fields(&[("csrf", token_field.as_str()), ("action", "delete")]),
            Some(("sec-fetch-site", "cross-site")),
        ),
        (
            "a same-site app host",
            fields(&[("csrf", token_field.as_str()), ("action", "delete")]),
            Some(("sec-fetch-site", "same-site")),
        ),
    ] {
        let mut request = browser.client().post(&delete_url).form(&body);
        if let Some((k, v)) = extra {
            request = request.header(k, v);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        let text = r.text().await.unwrap();
        assert!(text.contains("nothing was changed"), "{what}: {text}");
    }
    let still = api_get(&svc, &t.tenant, &t.admin, "/apps").await;
    assert_eq!(
        still.as_array().unwrap().len(),
        1,
        "the app survived every refused POST"
    );
    // The same form with the right token and the console's own origin works.
    let confirm = browser.get(&delete_url).await.unwrap();
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains(r#"id="delete""#));

    // Another user's session token does not fit this session.
    let other = Browser::new();
    let r = other
        .post(
            &delete_url,
            &fields(&[("csrf", token_field.as_str()), ("action", "delete")]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401, "no session: expired page");
    assert_eq!(
        api_get(&svc, &t.tenant, &t.admin, "/apps")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The session expires with its token (10 minutes): a POST says so and
    // changes nothing; a GET signs in again silently (the STS session lives).
    svc.advance(Duration::from_secs(11 * 60));
    let expired = browser
        .post(
            &delete_url,
            &fields(&[("csrf", token_field.as_str()), ("action", "delete")]),
        )
        .await
        .unwrap();
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(expired.body.contains("Your session expired"));
    assert_eq!(
        api_get(&svc, &t.tenant, &t.admin, "/apps")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = browser.follow(&format!("{base}/admin/apps"), &base).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.url.ends_with("/admin/apps"), "{}", again.url);
    assert!(again.body.contains("<h1>Apps</h1>"));
    let fresh = csrf(&again);
    assert_ne!(fresh, token_field, "a new session, a new CSRF token");

    // Delete through the confirm step.
    let deleted = browser
        .post(&delete_url, &fields(&[("csrf", fresh.as_str()), ("action", "delete")]))
        .await
        .unwrap();
    assert_eq!(deleted.status, 303, "{}", deleted.body);
    assert!(
        api_get(&svc, &t.tenant, &t.admin, "/apps")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Sign out: the cookie is gone, pages ask to sign in again.
    let out = browser
        .post(&format!("{base}/admin/logout"), &fields(&[("csrf", fresh.as_str())]))
        .await
        .unwrap();
    assert_eq!(out.status, 200);
    assert!(
        session_cookie(&browser, &svc).is_none(),
        "the session cookie is cleared"
    );
    let after = browser.get(&format!("{base}/admin/apps")).await.unwrap();
    assert_eq!(after.status, 303);
    assert!(after.location().unwrap().contains("/admin/login"));
}

#[tokio::test]
async fn roles_and_tenants_are_the_apis() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let base = svc.url();

    // A user without any administrative role: a clear 403, no session.
    svc.create_user(&t.tenant, "carol@acme.test", "carol's long password")
        .await
        .unwrap();
    let (carol, page) = sign_in(
        &svc,
        "acme",
        &crate::common::login(&svc, "carol@acme.test", "carol's long password"),
    )
    .await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("no administrative role"), "{}", page.body);
    assert!(session_cookie(&carol, &svc).is_none());

    // An application administrator: apps yes, users no (the API's 403).
    let hash = svc.sts().hasher().hash(&"dave's long password".into()).await.unwrap();
    let dave = svc
        .store()
        .create_user(
            &t.tenant.id,
            NewUser::cloud("dave@acme.test", "Dave", Some(hash)),
            svc.now(),
        )
        .await
        .unwrap();
    svc.store()
        .assign_role(&dave.id, Role::ApplicationAdministrator, svc.now())
        .await
        .unwrap();
    let (dave_browser, page) = sign_in(
        &svc,
        "acme",
        &crate::common::login(&svc, "dave@acme.test", "dave's long password"),
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        !page.body.contains(r#"href="/admin/users""#),
        "no users link for an app admin"
    );
    let apps = dave_browser.get(&format!("{base}/admin/apps")).await.unwrap();
    assert_eq!(apps.status, 200);
    let users = dave_browser.get(&format!("{base}/admin/users")).await.unwrap();
    assert_eq!(users.status, 403, "{}", users.body);
    assert!(users.body.contains("your roles do not allow this"), "{}", users.body);

    // A second tenant's administrator sees none of acme's apps and cannot
    // change them.
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/apps"))
        .bearer_auth(&token)
        .json(&json!({"name": "acme-wiki", "external_url": "https://wiki.acme.test/", "internal_url": "http://127.0.0.1:9/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let acme_app: Value = r.json().await.unwrap();
    let acme_app_id = acme_app["id"].as_str().unwrap();
    let r = http
        .post(format!("{base}/api/v1/tenants"))
        .bearer_auth(&token)
        .json(&json!({
            "name": "globex",
            "display_name": "Globex",
            "domain": "globex.test",
            "admin_username": "admin@globex.test",
            "admin_password": "Correct horse battery staple 42",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let globex_login = crate::common::login(&svc, "admin@globex.test", "Correct horse battery staple 42");
    let (globex, page) = sign_in(&svc, "globex", &globex_login).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("globex"));
    let list = globex.get(&format!("{base}/admin/apps")).await.unwrap();
    assert_eq!(list.status, 200);
    assert!(!list.body.contains("acme-wiki"));
    let other = globex.get(&format!("{base}/admin/apps/{acme_app_id}")).await.unwrap();
    assert_eq!(other.status, 404, "{}", other.body);
    let token_field = csrf(&list);
    let r = globex
        .post(
            &format!("{base}/admin/apps/{acme_app_id}/delete"),
            &fields(&[("csrf", token_field.as_str())]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let still = api_get(&svc, &t.tenant, &t.admin, "/apps").await;
    assert_eq!(still.as_array().unwrap().len(), 1, "acme's app is untouched");
    // A globex session's cookie names globex: a login started for acme is
    // acme's own (a different session), never a switch of this one.
    let cookie = session_cookie(&globex, &svc).unwrap();
    assert!(cookie.split_once('=').unwrap().1.starts_with("globex."));
}

#[tokio::test]
async fn test_this_app_reports_the_backend_and_a_group_without_connectors() {
    let bench = ProxyBench::start().await;
    let _connector = bench.start_connector("c1", None).await;
    let app = bench
        .publish(
            "echo",
            "echo.acme.test",
            AppOptions {
                preauth: "passthrough",
                ..AppOptions::default()
            },
        )
        .await;
    let lonely = bench.create_group("lonely").await;
    let orphan = bench
        .publish(
            "orphan",
            "orphan.acme.test",
            AppOptions {
                group: Some("lonely".into()),
                ..AppOptions::default()
            },
        )
        .await;
    assert_eq!(orphan["connector_group"]["id"], lonely.as_str());
    let (browser, page) = sign_in(&bench.svc, "acme", &bench.admin_login()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let base = bench.svc.url();
    let app_id = app["id"].as_str().unwrap();
    let app_page = browser.get(&format!("{base}/admin/apps/{app_id}")).await.unwrap();
    let token_field = csrf(&app_page);

    let tested = browser
        .post(
            &format!("{base}/admin/apps/{app_id}/test"),
            &fields(&[("csrf", token_field.as_str()), ("action", "test")]),
        )
        .await
        .unwrap();
    assert_eq!(tested.status, 200, "{}", tested.body);
    let backend_row = tested.body.split(r#"<tr id="test-backend">"#).nth(1).unwrap();
    assert!(backend_row.contains("The backend answered 200"), "{}", tested.body);
    let connectors_row = tested.body.split(r#"<tr id="test-connectors">"#).nth(1).unwrap();
    assert!(connectors_row.contains("1 of the group"), "{}", tested.body);
    // echo.acme.test resolves nowhere here: reported, not fatal.
    assert!(tested.body.contains(r#"<tr id="test-dns">"#));

    let orphan_id = orphan["id"].as_str().unwrap();
    let tested = browser
        .post(
            &format!("{base}/admin/apps/{orphan_id}/test"),
            &fields(&[("csrf", token_field.as_str()), ("action", "test")]),
        )
        .await
        .unwrap();
    assert_eq!(tested.status, 200, "{}", tested.body);
    assert!(tested.body.contains("has no connector"), "{}", tested.body);
    assert!(tested.body.contains("Not tried: no connector"), "{}", tested.body);

    // The API's endpoint answers the same, and is in the audit log.
    let (status, probe) = bench
        .api(reqwest::Method::POST, &format!("/apps/{app_id}/test"), None)
        .await;
    assert_eq!(status, 200, "{probe}");
    assert_eq!(probe["backend"]["ok"], true, "{probe}");
    assert_eq!(probe["backend_status"], 200);
    let (_, audit) = bench.api(reqwest::Method::GET, "/audit?limit=1000", None).await;
    assert!(audit.as_array().unwrap().iter().any(|e| e["action"] == "app.test"));

    // Revoke the connector through its confirm step: it is gone from the
    // API, its tunnels close, and the app reports no connector.
    let (_, connectors) = bench.api(reqwest::Method::GET, "/connectors", None).await;
    let connector_id = connectors[0]["id"].as_str().unwrap().to_owned();
    let listing = browser.get(&format!("{base}/admin/connectors")).await.unwrap();
    assert!(listing.body.contains(&format!(r#"id="revoke-{connector_id}""#)));
    let confirm = browser
        .get(&format!("{base}/admin/connectors/{connector_id}/revoke"))
        .await
        .unwrap();
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    assert!(confirm.body.contains(r#"id="revoke""#));
    let revoked = browser
        .post(
            &format!("{base}/admin/connectors/{connector_id}/revoke"),
            &fields(&[("csrf", token_field.as_str()), ("action", "revoke")]),
        )
        .await
        .unwrap();
    assert_eq!(revoked.status, 303, "{}", revoked.body);
    let (_, connectors) = bench.api(reqwest::Method::GET, "/connectors", None).await;
    assert!(connectors.as_array().unwrap().is_empty(), "{connectors}");
    let group = bench.default_group().await;
    bench.wait_for_tunnels(&group, <[_]>::is_empty).await;
    let tested = browser
        .post(
            &format!("{base}/admin/apps/{app_id}/test"),
            &fields(&[("csrf", token_field.as_str()), ("action", "test")]),
        )
        .await
        .unwrap();
    assert!(tested.body.contains("has no connector"), "{}", tested.body);
}

#[tokio::test]
async fn a_tenant_made_before_the_console_gets_its_client_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/postern.db", dir.path().display());
    let svc = TestService::builder().database_url(url.clone()).start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    // A tenant of an older release has no console client: remove it behind
    // the service's back (nothing has read it yet, so nothing caches it).
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let gone = sqlx::query("DELETE FROM oauth_clients WHERE client_id = 'postern-console'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        gone.rows_affected(),
        1,
        "the setup made the tenant with its console client"
    );
    let (_, page) = sign_in(&svc, "acme", &admin_login(&svc, &t)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h1>Overview</h1>"));
    let client = svc
        .store()
        .client(&t.tenant.id, postern_sts::CONSOLE_CLIENT_ID)
        .await
        .unwrap();
    assert!(client.builtin);
    assert_eq!(client.redirect_uris, vec![format!("{}/admin/callback", svc.url())]);
    assert!(client.secret_digest.is_none(), "a public client");
}

#[tokio::test]
async fn users_groups_tokens_connector_groups_and_logs_through_the_pages() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let base = svc.url();
    let (browser, overview) = sign_in(&svc, "acme", &admin_login(&svc, &t)).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    let token_field = csrf(&overview);

    // A cloud user through the form: in the API, the display name escaped.
    let made = browser
        .post(
            &format!("{base}/admin/users"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("kind", "cloud"),
                ("username", "erin@acme.test"),
                ("display_name", "Erin <i>the admin</i>"),
                ("password", "Blue kettle sings at dawn 7"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 303, "{}", made.body);
    let users = api_get(&svc, &t.tenant, &t.admin, "/users").await;
    let erin = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "erin@acme.test")
        .expect("erin is in the API")
        .clone();
    let erin_id = erin["id"].as_str().unwrap();
    let page = browser.get(&format!("{base}/admin/users")).await.unwrap();
    assert!(page.body.contains("Erin &lt;i&gt;the admin&lt;/i&gt;"));
    assert!(!page.body.contains("<i>the admin"));
    assert!(!page.body.contains("Blue kettle sings at dawn 7"));

    // A role through the user's page, then disable her.
    for (op, role) in [("add-role", "application_administrator"), ("disable", "")] {
        let r = browser
            .post(
                &format!("{base}/admin/users/{erin_id}"),
                &fields(&[("csrf", token_field.as_str()), ("op", op), ("role", role)]),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 303, "{op}: {}", r.body);
    }
    let roles = api_get(&svc, &t.tenant, &t.admin, &format!("/users/{erin_id}/roles")).await;
    assert_eq!(roles["roles"], json!(["application_administrator"]));
    let erin = api_get(&svc, &t.tenant, &t.admin, &format!("/users/{erin_id}")).await;
    assert_eq!(erin["enabled"], false);

    // A group and a member by username.
    let r = browser
        .post(
            &format!("{base}/admin/groups"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("name", "Wiki editors"),
                ("source", "cloud"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let groups = api_get(&svc, &t.tenant, &t.admin, "/groups").await;
    let group_id = groups.as_array().unwrap()[0]["id"].as_str().unwrap().to_owned();
    let r = browser
        .post(
            &format!("{base}/admin/groups/{group_id}"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("op", "add"),
                ("user", "erin@acme.test"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let members = api_get(&svc, &t.tenant, &t.admin, &format!("/groups/{group_id}/members")).await;
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");

    // A connector group, then a registration token for it, shown once.
    let r = browser
        .post(
            &format!("{base}/admin/connector-groups"),
            &fields(&[("csrf", token_field.as_str()), ("name", "dc-east"), ("description", "")]),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 303, "{}", r.body);
    let page = browser.get(&format!("{base}/admin/connectors")).await.unwrap();
    assert!(page.body.contains("dc-east"));
    let shown = browser
        .post(
            &format!("{base}/admin/tokens"),
            &fields(&[
                ("csrf", token_field.as_str()),
                ("kind", "connector"),
                ("group", "dc-east"),
                ("ttl_secs", "600"),
                ("uses", "2"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.headers["cache-control"], "no-store");
    let start = shown.body.find(r#"<code id="registration-token">"#).unwrap() + 30;
    assert!(shown.body[start..].starts_with("ptr_"), "{}", &shown.body[start..]);
    assert!(shown.body.contains("in group dc-east"));
    // A refused token (a ttl out of range): the API's problems, shown.
    let refused = browser
        .post(
            &format!("{base}/admin/tokens"),
            &fields(&[("csrf", token_field.as_str()), ("kind", "connector"), ("ttl_secs", "5")]),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(!refused.body.contains(r#"id="registration-token""#));

    // The logs show what happened.
    let signins = browser.get(&format!("{base}/admin/signins")).await.unwrap();
    assert_eq!(signins.status, 200);
    assert!(signins.body.contains("admin@acme.test"), "{}", signins.body);
    let audit = browser
        .get(&format!("{base}/admin/audit?q=connector_group"))
        .await
        .unwrap();
    assert_eq!(audit.status, 200);
    assert!(audit.body.contains("connector_group"), "{}", audit.body);
    assert!(
        !audit.body.contains("user.create"),
        "the filter keeps matching rows only"
    );
    let policies = browser.get(&format!("{base}/admin/policies")).await.unwrap();
    assert_eq!(policies.status, 200);
}

//! The application proxy end to end (APP-1..APP-7, SEC-1, SEC-3, SEC-8, BEY-3):
//! real HTTP clients → the service's front door → a tunnel a real `postern
//! connector run` process dialled → the backend; pre-authentication through the
//! real sign-in pages with a cookie jar.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_testkit::Browser;
use serde_json::{Value, json};

use crate::proxy_harness::{AppOptions, ProxyBench};

async fn json(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"))
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name][0].as_str()
}

#[tokio::test]
async fn passthrough_get_post_robots_and_forwarding_headers() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    bench.publish("wiki", "wiki.acme.test", AppOptions::default()).await;
    bench
        .publish(
            "docs",
            "docs.acme.test",
            AppOptions {
                prefix: "/docs/",
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["wiki.acme.test", "docs.acme.test"]);

    // GET: the path maps onto the internal base; Host is the internal one (header
    // translation is on by default); forwarding headers are set by the service.
    let r = client
        .get(bench.url("wiki.acme.test", "/echo/a?b=c"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-request-id").is_some());
    let echo = json(r).await;
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/app/echo/a?b=c");
    assert_eq!(header(&echo, "host"), Some(bench.backend.addr.to_string().as_str()));
    assert_eq!(
        header(&echo, "x-forwarded-for"),
        Some("127.0.0.1"),
        "a client's chain is not believed"
    );
    assert_eq!(header(&echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        Some(format!("wiki.acme.test:{}", bench.port()).as_str())
    );
    assert!(header(&echo, "x-postern-request-id").is_some());
    assert!(
        header(&echo, "x-postern-app").is_none(),
        "tunnel headers stay in the tunnel"
    );

    // POST: the body arrives whole.
    let body = vec![7u8; 300_000];
    let echo = json(
        client
            .post(bench.url("wiki.acme.test", "/echo/upload"))
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["len"], 300_000);
    assert_eq!(
        echo["sha256"],
        crate::proxy_harness::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref())
    );

    // A prefix app: the prefix is replaced by the internal base path.
    let echo = json(
        client
            .get(bench.url("docs.acme.test", "/docs/echo"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["path"], "/app/echo");
    let outside = client.get(bench.url("docs.acme.test", "/other")).send().await.unwrap();
    assert_eq!(outside.status(), 404);

    // SEC-8: robots.txt is the service's, on every app host, never the backend's.
    for host in ["wiki.acme.test", "docs.acme.test"] {
        let r = client.get(bench.url(host, "/robots.txt")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "User-agent: *\nDisallow: /\n");
    }

    // The service's own host still serves the service.
    let own = client.get(format!("{}/healthz", bench.svc.url())).send().await.unwrap();
    assert_eq!(own.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn header_and_link_translation() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    bench
        .publish(
            "crm",
            "crm.acme.test",
            AppOptions {
                prefix: "/crm/",
                translate_links: true,
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["crm.acme.test"]);
    let external = bench.url("crm.acme.test", "/crm/");

    let r = client
        .get(bench.url("crm.acme.test", "/crm/redirect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("{external}landing?x=1"),
        "internal URLs never reach the user"
    );

    let r = client
        .get(bench.url("crm.acme.test", "/crm/cookie"))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(!cookie.contains("Domain=127.0.0.1"), "{cookie}");
    assert!(cookie.contains("Path=/crm"), "{cookie}");

    let r = client
        .get(bench.url("crm.acme.test", "/crm/page.html"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-length").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains(&format!("href=\"{external}next\"")), "{html}");
    assert!(html.contains("src=\"/crm/logo.png\""), "{html}");
    assert!(!html.contains(&bench.backend.addr.to_string()), "{html}");
}

/// Signs `browser` in to the pre-authenticated app at `start` as the admin:
/// app → sign-in pages → callback → back to `start`. Returns the final response
/// at `start` (after the callback's redirect).
pub(crate) async fn sign_in_to_app(
    bench: &ProxyBench,
    browser: &postern_testkit::Browser,
    start: &str,
) -> postern_testkit::Page {
    let first = browser.get(start).await.unwrap();
    assert_eq!(first.status, 302, "{}", first.body);
    let authorize = first.location().unwrap();
    assert!(authorize.starts_with(&bench.svc.issuer("acme")), "{authorize}");
    assert!(authorize.contains("code_challenge_method=S256"), "{authorize}");
    let back = browser.sign_in(&authorize, &bench.admin_login()).await.unwrap();
    assert!(back.status.is_redirection(), "{}", back.body);
    let callback = back.location().unwrap();
    assert!(callback.contains("/.postern/callback?"), "{callback}");
    let done = browser.get(&callback).await.unwrap();
    assert_eq!(done.status, 302, "{}", done.title());
    let target = done.location().unwrap();
    let origin = url::Url::parse(start).unwrap().origin().ascii_serialization();
    assert!(
        target.starts_with(&origin),
        "the return address is on the app: {target}"
    );
    browser.get(&target).await.unwrap()
}

#[tokio::test]
async fn pre_authentication_with_identity_headers() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    let app = bench
        .publish(
            "hr",
            "hr.acme.test",
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["hr.acme.test"]);
    let start = bench.url("hr.acme.test", "/echo/me?tab=1");

    // Scripts get a JSON 401, never a redirect.
    let r = client
        .get(&start)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body = json(r).await;
    assert_eq!(body["error"], "unauthenticated");
    assert!(
        body["sign_in_url"].as_str().unwrap().contains("/.postern/signin?rd="),
        "{body}"
    );

    // Not assigned yet: signing in works, the app says no and names why.
    let browser = bench.browser(&["hr.acme.test"]);
    let first = browser.get(&start).await.unwrap();
    let back = browser
        .sign_in(&first.location().unwrap(), &bench.admin_login())
        .await
        .unwrap();
    let denied = browser.get(&back.location().unwrap()).await.unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert!(denied.body.contains("not assigned"), "{}", denied.body);

    // Assigned: the whole dance lands on the page first asked for.
    bench.assign(&app, &bench.t.admin.id).await;
    let browser = bench.browser(&["hr.acme.test"]);
    let page = sign_in_to_app(&bench, &browser, &start).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let echo: Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(echo["path"], "/app/echo/me?tab=1");
    assert_eq!(header(&echo, "x-postern-user"), Some(bench.t.admin.username.as_str()));
    // The front door's cookies never reach the backend.
    let cookies = header(&echo, "cookie").unwrap_or("");
    assert!(!cookies.contains("__postern_"), "{cookies}");

    // The assertion verifies against the issuer's JWKS and is for this app.
    let jwt = header(&echo, "x-postern-assertion").unwrap().to_owned();
    let claims = verify_with_jwks(&bench, &jwt).await;
    assert_eq!(
        claims["aud"],
        format!("urn:postern:app:{}", app["id"].as_str().unwrap())
    );
    assert!(
        bench
            .svc
            .sts()
            .verify_assertion(&bench.t.tenant, &jwt, app["id"].as_str().unwrap())
            .await
            .unwrap()
            .is_ok(),
        "the backend's view: typ, issuer, audience, expiry, tenant"
    );
    assert_eq!(claims["sub"], bench.t.admin.id.as_str());
    assert_eq!(claims["iss"], bench.svc.issuer("acme"));

    // Identity headers a client sends are replaced, not believed.
    let cookie_jar_client = browser.client();
    let r = cookie_jar_client
        .get(&start)
        .header("x-postern-user", "ceo@acme.test")
        .header("x-postern-groups", "Domain Admins")
        .header("x-postern-assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo = json(r).await;
    assert_eq!(header(&echo, "x-postern-user"), Some(bench.t.admin.username.as_str()));
    assert_ne!(header(&echo, "x-postern-assertion"), Some("forged"));
    assert_ne!(header(&echo, "x-postern-groups"), Some("Domain Admins"));
}

/// Verifies an RS256 JWT with the tenant's published keys; returns its claims.
async fn verify_with_jwks(bench: &ProxyBench, jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let jwks: Value = reqwest::get(format!("{}/jwks.json", bench.svc.issuer("acme")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the assertion's key is published");
    let n = URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &signature,
        )
        .expect("the assertion's signature verifies");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

#[tokio::test]
async fn session_cookies_refuse_tampering_transplants_and_expiry() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    let mut apps = Vec::new();
    for (name, prefix) in [("one", "/one/"), ("two", "/two/")] {
        let app = bench
            .publish(
                name,
                "pair.acme.test",
                AppOptions {
                    preauth: "sts",
                    prefix,
                    ..AppOptions::default()
                },
            )
            .await;
        bench.assign(&app, &bench.t.admin.id).await;
        apps.push(app);
    }
    let browser = bench.browser(&["pair.acme.test"]);
    let one = bench.url("pair.acme.test", "/one/echo");
    assert_eq!(sign_in_to_app(&bench, &browser, &one).await.status, 200);
    let url = url::Url::parse(&one).unwrap();
    let cookies = reqwest::cookie::CookieStore::cookies(browser.jar().as_ref(), &url).unwrap();
    let cookies = cookies.to_str().unwrap().to_owned();
    let (name, value) = cookies
        .split("; ")
        .find_map(|c| c.split_once('=').filter(|(n, _)| n.starts_with("__postern_s_")))
        .unwrap();
    let client = bench.client(&["pair.acme.test"]);
    let with_cookie = |target: String, cookie: String| {
        let client = client.clone();
        async move {
            client
                .get(target)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The genuine cookie works on its own, and the browser sends it for the bare
    // prefix too (`/one`, no slash).
    assert_eq!(with_cookie(one.clone(), format!("{name}={value}")).await, 200);
    let bare = browser
        .client()
        .get(bench.url("pair.acme.test", "/one"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    // One flipped character anywhere: refused.
    let mut tampered: Vec<char> = value.chars().collect();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    assert_eq!(with_cookie(one.clone(), format!("{name}={tampered}")).await, 401);
    // App one's cookie presented to app two (renamed to app two's cookie): refused.
    let two = bench.url("pair.acme.test", "/two/echo");
    let two_name = format!(
        "__postern_s_{}",
        apps[1]["id"]
            .as_str()
            .unwrap()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect::<String>()
    );
    assert_eq!(with_cookie(two.clone(), format!("{two_name}={value}")).await, 401);
    // Expired: eight hours later the same cookie no longer opens.
    bench.svc.advance(Duration::from_secs(8 * 3600 + 1));
    assert_eq!(with_cookie(one.clone(), format!("{name}={value}")).await, 401);
}

#[tokio::test]
async fn no_open_redirects_and_forged_callbacks_are_refused() {
    let bench = ProxyBench::start().await;
    bench
        .publish(
            "fin",
            "fin.acme.test",
            AppOptions {
                preauth: "sts",
                prefix: "/fin/",
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["fin.acme.test"]);
    for rd in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "/elsewhere",
        "/fin/../admin",
    ] {
        let target = format!(
            "{}?rd={}",
            bench.url("fin.acme.test", "/fin/.postern/signin"),
            url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
        );
        let r = client.get(&target).send().await.unwrap();
        assert_eq!(r.status(), 400, "{rd}");
        assert!(r.headers().get("location").is_none(), "{rd}");
    }
    let ok = client
        .get(format!(
            "{}?rd=%2Ffin%2Freport",
            bench.url("fin.acme.test", "/fin/.postern/signin")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 302);
    assert!(
        ok.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&bench.svc.issuer("acme"))
    );

    // A callback without the flow cookie, or with another state, names the cause.
    let r = client
        .get(bench.url("fin.acme.test", "/fin/.postern/callback?code=x&state=y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("expired or was started in another window")
    );
    let browser = bench.browser(&["fin.acme.test"]);
    let first = browser.get(&bench.url("fin.acme.test", "/fin/")).await.unwrap();
    assert_eq!(first.status, 302);
    let forged = browser
        .get(&bench.url("fin.acme.test", "/fin/.postern/callback?code=x&state=forged"))
        .await
        .unwrap();
    assert_eq!(forged.status, 400);
    assert!(forged.body.contains("state mismatch"), "{}", forged.body);
}

#[tokio::test]
async fn error_pages_for_missing_connectors_and_failing_backends() {
    let bench = ProxyBench::start().await;
    // No connector in the group: 503 at once.
    let lonely = bench.create_group("lonely").await;
    bench
        .publish(
            "orphan",
            "orphan.acme.test",
            AppOptions {
                group: Some(lonely),
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["orphan.acme.test", "down.acme.test", "slow.acme.test"]);
    let started = Instant::now();
    let r = client.get(bench.url("orphan.acme.test", "/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("No connector serving this application is online")
    );

    let _c = bench.start_connector("gw-1", None).await;
    // The backend refuses connections: 502 naming it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    bench
        .publish(
            "down",
            "down.acme.test",
            AppOptions {
                internal_url: Some(refused_url),
                ..AppOptions::default()
            },
        )
        .await;
    bench
        .publish(
            "slow",
            "slow.acme.test",
            AppOptions {
                backend_timeout_secs: 1,
                ..AppOptions::default()
            },
        )
        .await;
    // The connector learns about new apps from its configuration watch.
    let known = |url: String| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let r = client.get(&url).send().await.unwrap();
                let status = r.status();
                let body = r.text().await.unwrap();
                if !body.contains("does not know this application yet") || Instant::now() > deadline {
                    break (status, body);
                }
                postern_testkit::poll_pause(Duration::from_millis(100)).await;
            }
        }
    };
    let down = known(bench.url("down.acme.test", "/")).await;
    known(bench.url("slow.acme.test", "/echo")).await;
    assert_eq!(down.0, 502, "{}", down.1);
    assert!(down.1.contains("refused the connection"), "{}", down.1);
    // The backend is too slow: 504 after the app's timeout, naming it.
    let started = Instant::now();
    let r = client
        .get(bench.url("slow.acme.test", "/slow?ms=4000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(r.text().await.unwrap().contains("did not answer in time"));
}

#[tokio::test]
async fn a_streamed_download_arrives_intact() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    bench.publish("files", "files.acme.test", AppOptions::default()).await;
    let client = bench.client(&["files.acme.test"]);
    let size: u64 = 20 * 1024 * 1024 + 123;
    let mut r = client
        .get(bench.url("files.acme.test", &format!("/download?bytes={size}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut len = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        len += chunk.len() as u64;
        ctx.update(&chunk);
    }
    assert_eq!(len, size);
    assert_eq!(
        crate::proxy_harness::hex(ctx.finish().as_ref()),
        crate::proxy_harness::pattern_sha256(size)
    );
}

/// A bench with a connector and a pre-authenticated app `ops.acme.test`
/// assigned to the admin, and a browser signed in to it; the app's `/echo` URL.
async fn signed_in_to_ops_app() -> (ProxyBench, crate::proxy_harness::ConnectorProcess, Browser, String) {
    let bench = ProxyBench::start().await;
    let connector = bench.start_connector("gw-1", None).await;
    let app = bench
        .publish(
            "ops",
            "ops.acme.test",
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await;
    bench.assign(&app, &bench.t.admin.id).await;
    let browser = bench.browser(&["ops.acme.test"]);
    let start = bench.url("ops.acme.test", "/echo");
    assert_eq!(sign_in_to_app(&bench, &browser, &start).await.status, 200);
    (bench, connector, browser, start)
}

#[tokio::test]
async fn sessions_survive_a_cookie_key_rotation() {
    let (bench, _c, browser, start) = signed_in_to_ops_app().await;
    let before =
        reqwest::cookie::CookieStore::cookies(browser.jar().as_ref(), &url::Url::parse(&start).unwrap()).unwrap();

    // A new key seals from now on; the session sealed with the old one still opens.
    bench.svc.edge().rotate_cookie_key(false).await.unwrap();
    let r = browser
        .client()
        .get(&start)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A fresh sign-in gets a cookie sealed with the new key.
    let other = bench.browser(&["ops.acme.test"]);
    assert_eq!(sign_in_to_app(&bench, &other, &start).await.status, 200);
    let after = reqwest::cookie::CookieStore::cookies(other.jar().as_ref(), &url::Url::parse(&start).unwrap()).unwrap();
    let kid = |v: &reqwest::header::HeaderValue| {
        v.to_str()
            .unwrap()
            .split("; ")
            .find_map(|c| c.strip_prefix("__postern_s_"))
            .and_then(|c| c.split('=').nth(1))
            .and_then(|sealed| sealed.split('.').nth(1))
            .unwrap()
            .to_owned()
    };
    assert_ne!(kid(&before), kid(&after));
}

/// After a suspected leak an operator rotates the cookie key with
/// `revoke_older` through the admin API: every app session sealed before stops
/// opening at once (the user is asked to sign in again), the rotation is
/// audited, and signing in again works.
#[tokio::test]
async fn revoking_cookie_keys_ends_every_app_session() {
    let (bench, _c, browser, start) = signed_in_to_ops_app().await;
    let as_script = |b: &Browser| b.client().get(&start).header("accept", "application/json").send();
    assert_eq!(as_script(&browser).await.unwrap().status(), 200);

    // A plain rotation keeps the session.
    let (status, rotated) = bench
        .api(reqwest::Method::POST, "/system/cookie-keys/rotate", Some(json!({})))
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["revoked_older"], false);
    assert_eq!(as_script(&browser).await.unwrap().status(), 200);

    // Revoking ends it.
    let (status, revoked) = bench
        .api(
            reqwest::Method::POST,
            "/system/cookie-keys/rotate",
            Some(json!({"revoke_older": true})),
        )
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["revoked_older"], true);
    assert_ne!(revoked["kid"], rotated["kid"]);
    let r = as_script(&browser).await.unwrap();
    assert_eq!(r.status(), 401, "the old session no longer opens");
    let (status, audit) = bench.api(reqwest::Method::GET, "/audit", None).await;
    assert_eq!(status, 200);
    assert!(
        audit.to_string().contains("cookie_key.rotate"),
        "the rotation is audited: {audit}"
    );

    // Signing in again works, with the new key.
    let again = bench.browser(&["ops.acme.test"]);
    assert_eq!(sign_in_to_app(&bench, &again, &start).await.status, 200);
    assert_eq!(as_script(&again).await.unwrap().status(), 200);

    // Unknown fields are refused, not ignored.
    let (status, _) = bench
        .api(
            reqwest::Method::POST,
            "/system/cookie-keys/rotate",
            Some(json!({"revoke_everything": true})),
        )
        .await;
    assert_eq!(status, 400);
}

/// A revocation made by another instance (a second front door on the same
/// database and KEK) reaches this one when it rereads the key ring, which a
/// running service does every 30 s: until then the old session opens here,
/// afterwards it does not.
#[tokio::test]
async fn another_instances_revocation_takes_effect_at_the_next_refresh() {
    let (bench, _c, browser, start) = signed_in_to_ops_app().await;
    let as_script = || browser.client().get(&start).header("accept", "application/json").send();

    let keyring = postern_keyring::Keyring::load_or_create(&bench.svc.data_dir().join("kek")).unwrap();
    let other = postern_edge::Edge::new(
        bench.svc.sts().clone(),
        std::sync::Arc::new(keyring),
        bench.svc.control().tunnels().clone(),
        postern_edge::EdgeOptions::default(),
    )
    .await
    .unwrap();
    other.rotate_cookie_key(true).await.unwrap();
    assert_eq!(
        as_script().await.unwrap().status(),
        200,
        "this instance has not reread the ring yet"
    );
    bench.svc.edge().refresh_cookie_keys().await.unwrap();
    assert_eq!(as_script().await.unwrap().status(), 401, "revoked here too");
    assert_eq!(postern_edge::COOKIE_KEYS_REFRESH, Duration::from_secs(30));
}

#[tokio::test]
async fn http2_clients_and_tls_terminating_load_balancers() {
    let bench = ProxyBench::start_with(postern_testkit::TestService::builder().trust_loopback_proxy()).await;
    let _c = bench.start_connector("gw-1", None).await;
    bench.publish("plain", "plain.acme.test", AppOptions::default()).await;
    bench
        .publish(
            "secure",
            "secure.acme.test",
            AppOptions {
                https: true,
                ..AppOptions::default()
            },
        )
        .await;

    // HTTP/2 (prior knowledge on cleartext) through the front door.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("plain.acme.test", bench.svc.local_addr_for_tests())
        .build()
        .unwrap();
    let r = h2.get(bench.url("plain.acme.test", "/echo/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(
        !r.headers().contains_key("strict-transport-security"),
        "no HSTS for an HTTP app"
    );
    let echo = json(r).await;
    assert_eq!(echo["path"], "/app/echo/h2");

    // An HTTPS app reached over plain HTTP without a proxy saying so: 308 to https.
    let client = bench.client(&["secure.acme.test"]);
    let r = client
        .get(bench.url("secure.acme.test", "/echo?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        format!("https://secure.acme.test:{}/echo?q=1", bench.port())
    );
    assert!(
        !r.headers().contains_key("strict-transport-security"),
        "HSTS only over HTTPS"
    );
    // From the trusted load balancer that terminated TLS: served, and the backend
    // learns the user's address and scheme.
    let r = client
        .get(bench.url("secure.acme.test", "/echo"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000",
        "HTTPS apps get HSTS for their host"
    );
    let echo = json(r).await;
    assert_eq!(header(&echo, "x-forwarded-proto"), Some("https"));
    assert_eq!(header(&echo, "x-forwarded-for"), Some("198.51.100.7, 127.0.0.1"));
}

/// SEC-13: an app published at `/docs/` over `…/base/` exposes only `/base/`.
/// Paths sent exactly as written (no client-side resolution): every spelling of
/// a climb out of the prefix (dot segments plain or `%2e`-encoded in any case,
/// backslashes, doubled slashes, encoded slashes and backslashes, `..;`) is a
/// 400 page from the front door; paths that resolve inside the prefix reach the
/// backend resolved, under `/base/`; other percent-encodings and the query
/// arrive unchanged.
#[tokio::test]
async fn paths_stay_inside_the_published_base() {
    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    let base = format!("http://{}/base/", bench.backend.addr);
    bench
        .publish(
            "docs",
            "paths.acme.test",
            AppOptions {
                prefix: "/docs/",
                internal_url: Some(base),
                ..AppOptions::default()
            },
        )
        .await;
    let host = "paths.acme.test";
    let sanity = bench.raw_get(host, "/docs/echo").await;
    assert_eq!(sanity.echo().unwrap()["path"], "/base/echo", "{}", sanity.body);

    for attack in [
        "/docs/../../etc/passwd",
        "/docs/%2e%2e/%2e%2e/etc/passwd",
        "/docs/%2E%2E/%2E%2E/etc/passwd",
        "/docs/.%2e/%2E./etc/passwd",
        "/docs/..%2f..%2fetc/passwd",
        "/docs/..%2F..%2Fetc/passwd",
        "/docs/..\\..\\secret",
        "/docs/..%5c..%5csecret",
        "/docs//../../secret",
        "/docs/..;/..;/secret",
        "/docs/a/../../../secret?x=1",
    ] {
        let r = bench.raw_get(host, attack).await;
        assert_eq!(r.status, 400, "{attack}: {}", r.body);
        assert!(r.echo().is_none(), "{attack} reached the backend: {}", r.body);
        assert!(r.content_type.starts_with("text/html"), "{attack}: the error page");
        assert!(r.body.contains("Bad request"), "{attack}: {}", r.body);
    }

    for (sent, received) in [
        ("/docs/a/../b", "/base/b"),
        ("/docs/./x/%2e%2e/y", "/base/y"),
        ("/docs/x/.%2E/y", "/base/y"),
        ("/docs\\sub\\page", "/base/sub/page"),
        ("/docs//twice//slashed/", "/base/twice/slashed/"),
        ("/docs/a%20b/c?q=../x&r=%2e%2e", "/base/a%20b/c?q=../x&r=%2e%2e"),
        ("/docs/group%2Fproject", "/base/group%2Fproject"),
    ] {
        let r = bench.raw_get(host, sent).await;
        let echo = r.echo().unwrap_or_else(|| panic!("{sent}: {} {}", r.status, r.body));
        assert_eq!(echo["path"], received, "{sent}");
    }

    // Resolved outside the prefix: not this app (no other app on the host).
    let r = bench.raw_get(host, "/docs/../etc/passwd").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.echo().is_none());
    // robots.txt is the service's however it is spelled.
    let r = bench.raw_get(host, "/docs/../robots.txt").await;
    assert_eq!(r.body, "User-agent: *\nDisallow: /\n");
}

/// SEC-13, defence in depth: a tunnel stream whose `:path` carries dot segments
/// (which the front door never sends) is refused by the connector with 400 and
/// never reaches the backend; a clean one does.
#[tokio::test]
async fn the_connector_refuses_tunnel_paths_leaving_the_base() {
    use http_body_util::BodyExt;
    use postern_proto::tunnel::{APP_HEADER, REQUEST_ID_HEADER};

    let bench = ProxyBench::start().await;
    let _c = bench.start_connector("gw-1", None).await;
    let app = bench
        .publish(
            "raw",
            "raw.acme.test",
            AppOptions {
                internal_url: Some(format!("http://{}/base/", bench.backend.addr)),
                ..AppOptions::default()
            },
        )
        .await;
    let group = app["connector_group"]["id"].as_str().unwrap().to_owned();
    let send = |path: &'static str| {
        let (app_id, group, tenant) = (
            app["id"].as_str().unwrap().to_owned(),
            group.clone(),
            bench.t.tenant.id.clone(),
        );
        let tunnels = bench.svc.control().tunnels().clone();
        let authority = bench.backend.addr.to_string();
        async move {
            let body = http_body_util::Empty::<bytes::Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut request = hyper::Request::new(body);
            *request.uri_mut() = format!("http://{authority}{path}").parse().unwrap();
            assert_eq!(request.uri().path(), path.split('?').next().unwrap(), "sent as written");
            request.headers_mut().insert(APP_HEADER, app_id.parse().unwrap());
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, "it-raw".parse().unwrap());
            let response = tunnels.send(&tenant, &group, request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = send("/ok?q=../x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["path"], "/base/ok?q=../x");
    for path in [
        "/../../etc/passwd",
        "/a/%2e%2e/%2E%2E/etc/passwd",
        "/..%2f..%2fetc/passwd",
        "/..;/secret",
    ] {
        let (status, body) = send(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("leaves the application's base path"), "{path}: {body}");
    }
}

/// Item 7: a sign-in's return address is checked as a browser resolves it, so
/// encoded dot segments cannot lead out of the app's prefix.
#[tokio::test]
async fn sign_in_return_paths_with_encoded_dot_segments_are_refused() {
    let bench = ProxyBench::start().await;
    bench
        .publish(
            "fin",
            "fin.acme.test",
            AppOptions {
                preauth: "sts",
                prefix: "/fin/",
                ..AppOptions::default()
            },
        )
        .await;
    let client = bench.client(&["fin.acme.test"]);
    let sign_in = |rd: &str| {
        client
            .get(format!(
                "{}?rd={}",
                bench.url("fin.acme.test", "/fin/.postern/signin"),
                url::form_urlencoded::byte_serialize(rd.as_bytes()).collect::<String>()
            ))
            .send()
    };
    for rd in [
        "/fin/.%2e/admin",
        "/fin/%2e./admin",
        "/fin/%2E%2E/admin",
        "/fin/x/%2e%2e/%2e%2e/admin",
        "/fin/..\\admin",
        "/fin/..%2fadmin",
    ] {
        let r = sign_in(rd).await.unwrap();
        assert_eq!(r.status(), 400, "{rd}");
        assert!(r.headers().get("location").is_none(), "{rd}");
    }
    let r = sign_in("/fin/x/%2e%2e/report").await.unwrap();
    assert_eq!(r.status(), 302, "inside the prefix once resolved");
}

/// A bench with a connector and the pre-authenticated app `name` at
/// `http://{name}.acme.test:{port}/`, assigned to the admin, and a browser
/// signed in to it; the app's `/echo` URL.
async fn signed_in_on_acme(name: &str) -> (ProxyBench, crate::proxy_harness::ConnectorProcess, Browser, String) {
    let bench = ProxyBench::start().await;
    let connector = bench.start_connector("gw-1", None).await;
    let host = format!("{name}.acme.test");
    let app = bench
        .publish(
            name,
            &host,
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await;
    bench.assign(&app, &bench.t.admin.id).await;
    let browser = bench.browser(&[&host]);
    let start = bench.url(&host, "/echo");
    assert_eq!(sign_in_to_app(&bench, &browser, &start).await.status, 200);
    (bench, connector, browser, start)
}

/// The status of `url` for a script using `browser`'s cookies.
async fn script_status(browser: &Browser, url: &str) -> u16 {
    browser
        .client()
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Item 7 (logout CSRF): a GET of the app's sign-out URL only asks; a POST
/// without the confirmation page's token, without the session cookie (a
/// cross-site form under `SameSite=Lax`) or with another session's token is
/// refused; the confirmed POST clears the session and goes to the tenant's
/// end-session endpoint.
#[tokio::test]
async fn signing_out_of_an_app_needs_a_confirmed_post() {
    let (bench, _c, browser, start) = signed_in_on_acme("out").await;
    let signout = bench.url("out.acme.test", "/.postern/signout");
    let set_cookies = |headers: &reqwest::header::HeaderMap| {
        headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    // A link (or an <img>) to the sign-out URL: a page asking, nothing ended.
    let asked = browser.get(&signout).await.unwrap();
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert_eq!(asked.title(), "Sign out?");
    assert!(set_cookies(&asked.headers).is_empty(), "a GET sets no cookie");
    assert_eq!(script_status(&browser, &start).await, 200, "still signed in");
    let form = asked.form().unwrap();
    assert_eq!(form.action, signout);
    let token = form.hidden.iter().find(|(k, _)| k == "csrf").unwrap().1.clone();

    // A forged POST: no token, or the token without the session cookie.
    let no_token = browser.post(&signout, &[]).await.unwrap();
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(set_cookies(&no_token.headers).is_empty());
    let cookieless = bench
        .client(&["out.acme.test"])
        .post(&signout)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cookieless.status(), 403);
    assert!(set_cookies(cookieless.headers()).is_empty());
    // Another browser's token does not sign this one out.
    let other = bench.browser(&["out.acme.test"]);
    assert_eq!(sign_in_to_app(&bench, &other, &start).await.status, 200);
    let other_form = other.get(&signout).await.unwrap().form().unwrap();
    let crossed = browser.post(&signout, &other_form.hidden).await.unwrap();
    assert_eq!(crossed.status, 403);
    assert_eq!(script_status(&browser, &start).await, 200, "still signed in");

    // The page's own form: signed out, on to the tenant's end-session endpoint.
    let done = browser.submit(&form, &[]).await.unwrap();
    assert_eq!(done.status, 303, "{}", done.body);
    let location = done.location().unwrap();
    assert!(
        location.starts_with(&format!("{}/logout?", bench.svc.issuer("acme"))),
        "{location}"
    );
    assert!(location.contains("post_logout_redirect_uri="), "{location}");
    let cleared = set_cookies(&done.headers);
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("__postern_s_") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert_eq!(script_status(&browser, &start).await, 401, "signed out");
    assert_eq!(script_status(&other, &start).await, 200, "the other browser is not");

    // Without a session there is nothing to confirm: on to the tenant's sign-out.
    let again = browser.get(&signout).await.unwrap();
    assert_eq!(again.status, 302);
    assert!(again.location().unwrap().starts_with(&bench.svc.issuer("acme")));
}

/// APP-1 step 4: an app session never outlives the STS sign-in session its ID
/// token came from. Signed in to the STS at t0 (its session lasts 12 hours),
/// the app is entered again at t0 + 6 h through single sign-on: that app
/// session (and its cookie) ends with the STS session at t0 + 12 h, not 8 hours
/// after t0 + 6 h.
#[tokio::test]
async fn app_sessions_end_no_later_than_the_sts_session() {
    let (bench, _c, browser, start) = signed_in_on_acme("life").await;
    let sts_session_ttl = Duration::from_secs(12 * 3600);
    bench.svc.advance(Duration::from_secs(6 * 3600));
    let signin = bench.url("life.acme.test", "/.postern/signin?rd=%2Fecho");
    let first = browser.get(&signin).await.unwrap();
    assert_eq!(first.status, 302);
    let back = browser.get(&first.location().unwrap()).await.unwrap();
    assert!(back.status.is_redirection(), "single sign-on: {}", back.body);
    let callback = browser.get(&back.location().unwrap()).await.unwrap();
    assert_eq!(callback.status, 302, "{}", callback.body);
    let session_cookie = callback
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("__postern_s_"))
        .unwrap();
    let max_age: u64 = session_cookie
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap_or_else(|| panic!("the cookie expires: {session_cookie}"))
        .parse()
        .unwrap();
    let left = sts_session_ttl - Duration::from_secs(6 * 3600);
    assert!(max_age <= left.as_secs() && max_age > 0, "{session_cookie}");
    assert_eq!(script_status(&browser, &start).await, 200);

    // Just before the STS session ends the app session works; just after, not.
    bench.svc.advance(left - Duration::from_secs(1));
    assert_eq!(script_status(&browser, &start).await, 200);
    bench.svc.advance(Duration::from_secs(2));
    assert_eq!(script_status(&browser, &start).await, 401, "ended with the STS session");
}

/// HTTPS apps' cookies are `__Host-` cookies (`Secure`, `Path=/`, no `Domain`).
/// Two apps on one host therefore receive each other's cookies: one app's
/// session never opens for the other, and no front-door cookie reaches a
/// backend, whatever the case of its prefix.
#[tokio::test]
async fn https_apps_use_host_cookies_that_stay_out_of_backends() {
    let bench = ProxyBench::start_with(postern_testkit::TestService::builder().trust_loopback_proxy()).await;
    let _c = bench.start_connector("gw-1", None).await;
    let host = "secure.acme.test";
    for (name, prefix) in [("one", "/one/"), ("two", "/two/")] {
        let app = bench
            .publish(
                name,
                host,
                AppOptions {
                    preauth: "sts",
                    prefix,
                    https: true,
                    ..AppOptions::default()
                },
            )
            .await;
        bench.assign(&app, &bench.t.admin.id).await;
    }
    // The service listens on plain HTTP behind a TLS-terminating proxy.
    let client = bench.client(&[host]);
    let get = |path: String, cookie: String| {
        client
            .get(bench.url(host, &path))
            .header("x-forwarded-proto", "https")
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
    };
    let set_cookie = |r: &reqwest::Response, prefix: &str| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} cookie: {:?}", r.headers()))
    };
    let name_value = |set: &str| set.split("; ").next().unwrap().to_owned();

    let first = get("/one/echo".into(), String::new()).await.unwrap();
    assert_eq!(first.status(), 302);
    let flow = set_cookie(&first, "__Host-postern_f_");
    assert!(
        flow.contains("; Path=/;") && flow.contains("; Secure") && !flow.contains("Domain"),
        "{flow}"
    );
    let authorize = first.headers()["location"].to_str().unwrap().to_owned();
    let browser = bench.browser(&[]);
    let back = browser.sign_in(&authorize, &bench.admin_login()).await.unwrap();
    let callback = url::Url::parse(&back.location().unwrap()).unwrap();
    assert_eq!(callback.scheme(), "https");
    let callback_path = format!("{}?{}", callback.path(), callback.query().unwrap());
    let done = get(callback_path, name_value(&flow)).await.unwrap();
    assert_eq!(done.status(), 302);
    let session = set_cookie(&done, "__Host-postern_s_");
    for attribute in ["; Path=/;", "; HttpOnly", "; SameSite=Lax", "; Secure", "; Max-Age="] {
        assert!(session.contains(attribute), "{attribute}: {session}");
    }
    assert!(!session.contains("Domain"), "{session}");
    let session = name_value(&session);

    // What a browser sends to every path of the host: both apps' cookies (here
    // app one's session, a forged one for app two, one in other case) and the
    // app's own.
    let jar = format!("{session}; pref=1; __Host-postern_s_forged=x; __HOST-POSTERN_f_y=z");
    let r = get("/one/echo".into(), jar.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo = json(r).await;
    assert_eq!(header(&echo, "cookie"), Some("pref=1"), "{echo}");
    // App one's session opens nowhere else, under either name.
    let r = get("/two/echo".into(), jar).await.unwrap();
    assert_eq!(r.status(), 302, "app two asks to sign in");
    let (_, value) = session.split_once('=').unwrap();
    let two_id = bench
        .svc
        .store()
        .apps(&bench.t.tenant.id)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.name == "two")
        .unwrap()
        .id;
    let two_tag: String = two_id.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    let renamed = format!("__Host-postern_s_{two_tag}={value}");
    let r = get("/two/echo".into(), renamed).await.unwrap();
    assert_eq!(r.status(), 302, "a transplanted session does not open");
}

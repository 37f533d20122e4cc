//! Conditional access and risk end to end (SEC-2, SEC-10, issue 9 items 1 and
//! 2): policies written through the admin API, enforced by the sign-in pages,
//! `/authorize` and the front door, explained in the sign-in log, and the
//! "what if" evaluation agreeing with what really happens. Client addresses
//! come from `X-Forwarded-For` through the trusted loopback proxy.

use std::time::Duration;

use postern_store::{SigninEvent, SigninOutcome};
use postern_testkit::{Browser, Page, TestService};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{authorize_url, login, query_param};
use crate::proxy_harness::{AppOptions, ProxyBench};

const BOB: &str = "bob@acme.test";
const BOB_PASSWORD: &str = "bob's rather long password";

/// A bench whose service believes `X-Forwarded-For` from loopback.
async fn bench() -> ProxyBench {
    ProxyBench::start_with(TestService::builder().trust_loopback_proxy()).await
}

async fn api_ok(bench: &ProxyBench, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, value) = bench.api(method, path, body).await;
    assert!((200..300).contains(&status), "{path}: {status} {value}");
    value
}

async fn create_policy(bench: &ProxyBench, policy: Value) -> Value {
    let (status, value) = bench.api(Method::POST, "/policies", Some(policy)).await;
    assert_eq!(status, 201, "{value}");
    value
}

async fn what_if(bench: &ProxyBench, question: Value) -> Value {
    api_ok(bench, Method::POST, "/policies/what-if", Some(question)).await
}

/// The tenant's sign-in events, newest last.
async fn signins(bench: &ProxyBench) -> Vec<SigninEvent> {
    bench
        .svc
        .store()
        .signins(&bench.t.tenant.id, postern_time::UnixTime::from_secs(0), 1000)
        .await
        .unwrap()
}

fn access_of(event: &SigninEvent) -> Value {
    let detail: Value = serde_json::from_str(&event.detail)
        .unwrap_or_else(|_| panic!("the detail of {event:?} carries the decision as JSON"));
    detail["access"].clone()
}

/// Publishes a pre-authenticated app `name` at `http://{name}.acme.test:{port}/`.
async fn publish(bench: &ProxyBench, name: &str) -> Value {
    bench
        .publish(
            name,
            &format!("{name}.acme.test"),
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await
}

/// Follows the front door's redirect to `/authorize`; returns that URL.
async fn authorize_from(browser: &Browser, start: &str) -> String {
    let first = browser.get(start).await.unwrap();
    assert_eq!(first.status, 302, "{}", first.body);
    first.location().unwrap()
}

/// Ends a front-door sign-in at its callback; returns the page the callback answers.
async fn callback(browser: &Browser, back: &Page) -> Page {
    assert!(back.status.is_redirection(), "{} {}", back.status, back.title());
    let location = back.location().unwrap();
    assert!(location.contains("/.postern/callback?"), "{location}");
    browser.get(&location).await.unwrap()
}

#[tokio::test]
async fn a_blocked_network_is_refused_before_any_password_is_checked() {
    let bench = bench().await;
    let svc = &bench.svc;
    svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        None,
        &["https://portal.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let location = api_ok(
        &bench,
        Method::POST,
        "/locations",
        Some(json!({"name": "tor exits", "ranges": ["198.51.100.0/24", "2001:db8:bad::/48"]})),
    )
    .await;
    assert_eq!(location["ranges"], json!(["198.51.100.0/24", "2001:db8:bad::/48"]));
    create_policy(
        &bench,
        json!({
            "name": "No Tor",
            "conditions": {
                "users": {"include": ["all"]},
                "apps": {"include": ["all"]},
                "locations": {"include": ["location:tor exits"]},
            },
            "grants": ["block"],
        }),
    )
    .await;
    let start = authorize_url(
        svc,
        "acme",
        "portal",
        "https://portal.acme.test/cb",
        &postern_testkit::Pkce::new().challenge,
        "",
    );

    // From the blocked network: refused on the password page, with nothing checked.
    let before = svc.sts().password_verifications();
    let page = Browser::new()
        .from_ip("198.51.100.23")
        .sign_in(&start, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert_eq!(page.status, 403, "{}", page.body);
    assert_eq!(page.title(), "Access blocked");
    assert!(page.body.contains("No Tor"), "{}", page.body);
    assert_eq!(svc.sts().password_verifications(), before, "no password was checked");
    // A name that is no account is refused the same way.
    let page = Browser::new()
        .from_ip("198.51.100.24")
        .sign_in(&start, &login(svc, "nobody@acme.test", "whatever it is"))
        .await
        .unwrap();
    assert_eq!(page.title(), "Access blocked");
    assert_eq!(svc.sts().password_verifications(), before);

    // The log names the policy and why it applied.
    let events = signins(&bench).await;
    let blocked: Vec<&SigninEvent> = events.iter().filter(|e| e.outcome == SigninOutcome::Blocked).collect();
    assert_eq!(blocked.len(), 2, "{events:#?}");
    let bobs = blocked.iter().find(|e| e.username == BOB).unwrap();
    assert_eq!(bobs.ip, "198.51.100.23");
    let access = access_of(bobs);
    assert_eq!(access["effect"], "block");
    assert_eq!(access["policies"][0]["policy"], "No Tor");
    let why = access["policies"][0]["why"].to_string();
    assert!(why.contains("198.51.100.0/24 of location \\\"tor exits\\\""), "{why}");

    // Elsewhere the same sign-in goes through, its password checked once.
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&start, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "{}",
        page.body
    );
    assert_eq!(svc.sts().password_verifications(), before + 1);

    // What-if agrees with both, IPv6 included.
    let q = |ip: &str| json!({"user": BOB, "app": "portal", "ip": ip});
    let verdict = what_if(&bench, q("198.51.100.99")).await;
    assert_eq!(
        (verdict["effect"].as_str(), verdict["allowed"].as_bool()),
        (Some("block"), Some(false))
    );
    assert!(verdict["reasons"][0].as_str().unwrap().contains("No Tor"));
    let verdict = what_if(&bench, q("2001:db8:bad::1")).await;
    assert_eq!(verdict["effect"], "block");
    let verdict = what_if(&bench, q("203.0.113.77")).await;
    assert_eq!(
        (verdict["effect"].as_str(), verdict["allowed"].as_bool()),
        (Some("allow"), Some(true))
    );
    assert_eq!(
        verdict["evaluations"][0]["why"][0],
        "location: 203.0.113.77 not included"
    );

    // Bad input: every problem at once; a location a policy names stays.
    let (status, body) = bench
        .api(
            Method::POST,
            "/policies",
            Some(json!({
                "name": "",
                "conditions": {
                    "users": {"include": ["group:no-such-group"]},
                    "apps": {"include": []},
                    "locations": {"include": ["location:nowhere"]},
                },
                "grants": ["block", "require_mfa"],
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["problems"].as_array().unwrap().len(), 5, "{body}");
    let (status, body) = bench
        .api(
            Method::DELETE,
            &format!("/locations/{}", location["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("No Tor"), "{body}");
}

#[tokio::test]
async fn an_mfa_policy_forces_totp_for_one_app_and_not_another() {
    let bench = bench().await;
    let svc = &bench.svc;
    let bob = svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    let wiki = publish(&bench, "wiki").await;
    let crm = publish(&bench, "crm").await;
    bench.assign(&wiki, &bob.id).await;
    bench.assign(&crm, &bob.id).await;
    let policy = create_policy(
        &bench,
        json!({
            "name": "MFA for the wiki",
            "conditions": {"users": {"include": ["all"]}, "apps": {"include": ["app:wiki"]}},
            "grants": ["require_mfa"],
        }),
    )
    .await;
    assert_eq!(
        policy["conditions"]["apps"]["include"][0],
        format!("app:{}", wiki["id"].as_str().unwrap())
    );
    let q = |app: &str| json!({"user": BOB, "app": app, "ip": "203.0.113.5"});
    assert_eq!(what_if(&bench, q("wiki")).await["effect"], "require_mfa");
    assert_eq!(what_if(&bench, q("crm")).await["effect"], "allow");

    let browser = bench
        .browser(&["wiki.acme.test", "crm.acme.test"])
        .from_ip("203.0.113.5");
    // The CRM: password only.
    let crm_url = bench.url("crm.acme.test", "/");
    let back = browser
        .sign_in(
            &authorize_from(&browser, &crm_url).await,
            &login(svc, BOB, BOB_PASSWORD),
        )
        .await
        .unwrap();
    let done = callback(&browser, &back).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let user = svc.store().user(&bench.t.tenant.id, &bob.id).await.unwrap();
    assert!(user.totp_sealed.is_none(), "no second factor was asked for the CRM");
    assert_ne!(browser.get(&crm_url).await.unwrap().status, 403);

    // The wiki: the same session is stepped up; Bob must set up TOTP first.
    let wiki_url = bench.url("wiki.acme.test", "/");
    let authorize = authorize_from(&browser, &wiki_url).await;
    let asked = browser.follow(&authorize, &svc.url()).await.unwrap();
    assert_eq!(asked.title(), "Set up your authenticator", "{}", asked.body);
    let back = browser
        .sign_in(&authorize, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    let done = callback(&browser, &back).await;
    assert_eq!(done.status, 302, "{} {}", done.title(), done.body);
    let user = svc.store().user(&bench.t.tenant.id, &bob.id).await.unwrap();
    assert!(user.totp_sealed.is_some(), "TOTP was demanded for the wiki");
    let served = browser.get(&wiki_url).await.unwrap();
    assert_ne!(served.status, 403, "{}", served.body);
    assert_ne!(served.status, 302, "admitted with MFA");

    // The policy now covers the CRM too: the CRM's session (without MFA) is
    // sent back to sign in at once, not served.
    let mut both = policy.clone();
    both["conditions"]["apps"]["include"] = json!(["app:wiki", "app:crm"]);
    both.as_object_mut().unwrap().remove("id");
    api_ok(
        &bench,
        Method::PUT,
        &format!("/policies/{}", policy["id"].as_str().unwrap()),
        Some(both),
    )
    .await;
    let step_up = browser.get(&crm_url).await.unwrap();
    assert_eq!(step_up.status, 302, "{}", step_up.body);
    assert!(
        step_up.location().unwrap().starts_with(&svc.issuer("acme")),
        "{:?}",
        step_up.location()
    );
}

#[tokio::test]
async fn an_unassigned_or_blocked_user_is_refused_at_authorize_and_at_the_front_door_with_the_reason() {
    let bench = bench().await;
    let svc = &bench.svc;
    let bob = svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    let wiki = publish(&bench, "wiki").await;
    let wiki_url = bench.url("wiki.acme.test", "/");

    // Not assigned: /authorize answers access_denied with the reason, and the
    // front door's callback shows it on a page.
    let browser = bench.browser(&["wiki.acme.test"]).from_ip("203.0.113.5");
    let back = browser
        .sign_in(
            &authorize_from(&browser, &wiki_url).await,
            &login(svc, BOB, BOB_PASSWORD),
        )
        .await
        .unwrap();
    let location = back.location().unwrap();
    assert_eq!(query_param(&location, "error").as_deref(), Some("access_denied"));
    assert!(
        query_param(&location, "error_description")
            .unwrap()
            .contains("not assigned")
    );
    let page = callback(&browser, &back).await;
    assert_eq!(page.status, 403);
    assert!(page.body.contains("not assigned"), "{}", page.body);

    // Assigned, signed in; then a policy blocks his group: the front door
    // refuses the live session at once, naming the policy, and so does /authorize.
    bench.assign(&wiki, &bob.id).await;
    let back = browser
        .sign_in(
            &authorize_from(&browser, &wiki_url).await,
            &login(svc, BOB, BOB_PASSWORD),
        )
        .await
        .unwrap();
    assert_eq!(callback(&browser, &back).await.status, 302);
    assert_ne!(browser.get(&wiki_url).await.unwrap().status, 403);
    let contractors = api_ok(&bench, Method::POST, "/groups", Some(json!({"name": "contractors"}))).await;
    let group_id = contractors["id"].as_str().unwrap();
    api_ok(
        &bench,
        Method::PUT,
        &format!("/groups/{group_id}/members/{}", bob.id),
        None,
    )
    .await;
    create_policy(
        &bench,
        json!({
            "name": "Contractors stay out of the wiki",
            "conditions": {"users": {"include": ["group:contractors"]}, "apps": {"include": ["app:wiki"]}},
            "grants": ["block"],
        }),
    )
    .await;
    let page = browser.get(&wiki_url).await.unwrap();
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Contractors stay out of the wiki"), "{}", page.body);
    let client_id = wiki["client_id"].as_str().unwrap();
    let callback_url = format!("{wiki_url}.postern/callback");
    let refused = browser
        .get(&authorize_url(
            svc,
            "acme",
            client_id,
            &callback_url,
            &postern_testkit::Pkce::new().challenge,
            "",
        ))
        .await
        .unwrap();
    let location = refused.location().unwrap();
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("access_denied"),
        "{location}"
    );
    assert!(
        query_param(&location, "error_description")
            .unwrap()
            .contains("Contractors"),
        "{location}"
    );
    assert_eq!(query_param(&location, "code"), None);
    let blocked = signins(&bench).await;
    assert!(
        blocked
            .iter()
            .any(|e| e.outcome == SigninOutcome::Blocked && e.user_id.as_deref() == Some(&bob.id))
    );
}

#[tokio::test]
async fn report_only_logs_what_it_would_do_without_enforcing() {
    let bench = bench().await;
    let svc = &bench.svc;
    svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        None,
        &["https://portal.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let policy = create_policy(
        &bench,
        json!({
            "name": "Trial: block everyone outside the office",
            "state": "report_only",
            "conditions": {
                "users": {"include": ["all"]},
                "apps": {"include": ["client:portal"]},
                "locations": {"include": ["any"], "exclude": ["192.0.2.0/24"]},
            },
            "grants": ["block"],
        }),
    )
    .await;
    let start = || {
        authorize_url(
            svc,
            "acme",
            "portal",
            "https://portal.acme.test/cb",
            &postern_testkit::Pkce::new().challenge,
            "",
        )
    };
    let before = svc.sts().password_verifications();
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&start(), &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "not enforced: {}",
        page.body
    );
    assert_eq!(svc.sts().password_verifications(), before + 1);
    let events = signins(&bench).await;
    let success = events.iter().rfind(|e| e.outcome == SigninOutcome::Success).unwrap();
    let access = access_of(success);
    assert_eq!(access["effect"], "allow");
    assert_eq!(access["report_only"]["would_be"], "block", "{access}");
    assert_eq!(
        access["report_only"]["policies"][0],
        "Trial: block everyone outside the office"
    );
    let verdict = what_if(&bench, json!({"user": BOB, "app": "portal", "ip": "203.0.113.5"})).await;
    assert_eq!(
        (verdict["effect"].as_str(), verdict["report_only_effect"].as_str()),
        (Some("allow"), Some("block"))
    );

    // Enabled, the same sign-in is refused before the password.
    let mut enabled = policy.clone();
    enabled["state"] = json!("enabled");
    enabled.as_object_mut().unwrap().remove("id");
    api_ok(
        &bench,
        Method::PUT,
        &format!("/policies/{}", policy["id"].as_str().unwrap()),
        Some(enabled),
    )
    .await;
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&start(), &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert_eq!(page.title(), "Access blocked");
    assert_eq!(svc.sts().password_verifications(), before + 1);
    // From the office it still goes through.
    let page = Browser::new()
        .from_ip("192.0.2.40")
        .sign_in(&start(), &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(query_param(&page.location().unwrap(), "code").is_some());
}

#[tokio::test]
async fn risk_signals_each_raise_the_level_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let anonymizers = dir.path().join("tor-exits.txt");
    std::fs::write(&anonymizers, "# Tor exits\n198.51.100.7\n").unwrap();
    let file = anonymizers.clone();
    let bench = ProxyBench::start_with(TestService::builder().trust_loopback_proxy().tune(move |c| {
        c.risk.anonymizers_file = Some(file);
        c.risk.spray_accounts = 3;
        c.risk.brute_force_networks = 3;
    }))
    .await;
    let svc = &bench.svc;
    let bob = svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        None,
        &["https://portal.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let start = || {
        authorize_url(
            svc,
            "acme",
            "portal",
            "https://portal.acme.test/cb",
            &postern_testkit::Pkce::new().challenge,
            "",
        )
    };
    let risk = |ip: &'static str| {
        let bench = &bench;
        async move { what_if(bench, json!({"user": BOB, "app": "portal", "ip": ip})).await["risk"].clone() }
    };
    let kinds = |risk: &Value| -> Vec<String> {
        risk["signals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(risk("203.0.113.5").await["level"], "none");

    // Anonymising networks, and the list reread when it changes.
    let r = risk("198.51.100.7").await;
    assert_eq!(
        (r["level"].as_str(), kinds(&r)),
        (Some("high"), vec!["anonymizing_network".to_owned()])
    );
    assert_eq!(risk("198.51.100.8").await["level"], "none");
    std::fs::write(&anonymizers, "# Tor exits\n198.51.100.7\n198.51.100.8\n").unwrap();
    assert_eq!(risk("198.51.100.8").await["level"], "high", "the file was reread");

    // A network Bob has not signed in from, once he has signed in somewhere.
    assert_eq!(risk("192.0.2.9").await["level"], "none", "nothing known yet");
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&start(), &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(query_param(&page.location().unwrap(), "code").is_some());
    let r = risk("192.0.2.9").await;
    assert_eq!(
        (r["level"].as_str(), kinds(&r)),
        (Some("low"), vec!["unfamiliar_network".to_owned()])
    );
    assert!(r["signals"][0]["detail"].as_str().unwrap().contains("192.0.2.0/24"));
    assert_eq!(risk("203.0.113.77").await["level"], "none", "the same /24 is familiar");

    // An administrator's word: set, then dismissed.
    api_ok(
        &bench,
        Method::PUT,
        &format!("/users/{}/risk", bob.id),
        Some(json!({"level": "medium", "reason": "credentials found in a paste"})),
    )
    .await;
    let r = risk("203.0.113.5").await;
    assert_eq!(
        (r["level"].as_str(), kinds(&r)),
        (Some("medium"), vec!["user_risk".to_owned()])
    );
    assert!(
        r["signals"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("credentials found in a paste")
    );
    let (status, _) = bench
        .api(Method::DELETE, &format!("/users/{}/risk", bob.id), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(risk("203.0.113.5").await["level"], "none");
    let (status, _) = bench
        .api(Method::DELETE, &format!("/users/{}/risk", bob.id), None)
        .await;
    assert_eq!(status, 404, "nothing left to dismiss");
    let audit = api_ok(&bench, Method::GET, "/audit?limit=1000", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"user.risk.set") && actions.contains(&"user.risk.dismiss"),
        "{actions:?}"
    );

    // Password spraying: three accounts failing from one network.
    for name in ["ann", "cid", "dee"] {
        let page = Browser::new()
            .from_ip("198.18.0.10")
            .sign_in(&start(), &login(svc, &format!("{name}@acme.test"), "a wrong password!"))
            .await;
        assert!(page.is_err(), "the wrong password is refused");
    }
    let r = risk("198.18.0.99").await;
    assert_eq!(
        (r["level"].as_str(), kinds(&r)),
        (
            Some("high"),
            vec!["password_spraying".to_owned(), "unfamiliar_network".to_owned()]
        )
    );
    assert!(
        r["signals"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("3 accounts failed from 198.18.0.0/24")
    );

    // Brute force: Bob's account failing from three networks.
    for ip in ["198.19.1.1", "198.19.2.1", "198.19.3.1"] {
        let page = Browser::new()
            .from_ip(ip)
            .sign_in(&start(), &login(svc, BOB, "not bob's password"))
            .await;
        assert!(page.is_err());
    }
    let r = risk("203.0.113.5").await;
    assert_eq!(
        (r["level"].as_str(), kinds(&r)),
        (Some("medium"), vec!["brute_force".to_owned()])
    );
    // Out of the window, both are forgotten (an admin token lasts ten
    // minutes: a fresh one).
    svc.advance(Duration::from_secs(11 * 60));
    let token = svc.admin_token(&bench.t.tenant, &bench.t.admin).await.unwrap();
    let api = |method: Method, path: &'static str, body: Value| {
        let request = reqwest::Client::new()
            .request(method, format!("{}/api/v1{path}", svc.url()))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (status, verdict) = api(
        Method::POST,
        "/policies/what-if",
        json!({"user": BOB, "app": "portal", "ip": "203.0.113.5"}),
    )
    .await;
    assert_eq!(
        (status, verdict["risk"]["level"].as_str()),
        (200, Some("none")),
        "{verdict}"
    );

    // Risk in a policy: high-risk sign-ins are blocked before the password,
    // and the log explains the risk.
    let (status, _) = api(
        Method::POST,
        "/policies",
        json!({
            "name": "Block high risk",
            "conditions": {"users": {"include": ["all"]}, "apps": {"include": ["all"]}, "risk_levels": ["high"]},
            "grants": ["block"],
        }),
    )
    .await;
    assert_eq!(status, 201);
    let before = svc.sts().password_verifications();
    let page = Browser::new()
        .from_ip("198.51.100.7")
        .sign_in(&start(), &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert_eq!(page.title(), "Access blocked");
    assert_eq!(svc.sts().password_verifications(), before);
    let events = signins(&bench).await;
    let blocked = events.iter().rfind(|e| e.outcome == SigninOutcome::Blocked).unwrap();
    let access = access_of(blocked);
    assert_eq!(access["risk"]["level"], "high");
    assert_eq!(access["risk"]["signals"][0]["kind"], "anonymizing_network");
    assert!(
        access["risk"]["signals"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("198.51.100.7")
    );
}

/// For a pass-through domain, a blocked network never reaches an agent: no
/// offer through the relay, no validation by the agent; once the policy is
/// gone the same sign-in is validated on-prem.
#[tokio::test]
async fn a_blocked_network_never_reaches_an_agent() {
    const CAROL: &str = "carol@example.com";
    const PASSWORD: &str = "Carol-Secret-1";
    let p = crate::pta::Pta::new("example.com").await;
    let agent = p
        .agent("pta-1", crate::pta::local_accounts(p.dir.path(), CAROL, PASSWORD))
        .await;
    let token = p.svc.admin_token(&p.t.tenant, &p.t.admin).await.unwrap();
    let http = reqwest::Client::new();
    // The test's browser connects from loopback: that is the blocked network.
    let r = http
        .post(format!("{}/api/v1/policies", p.svc.url()))
        .bearer_auth(&token)
        .json(&json!({
            "name": "Loopback is hostile",
            "conditions": {
                "users": {"include": ["all"]},
                "apps": {"include": ["client:app"]},
                "locations": {"include": ["127.0.0.0/8"]},
            },
            "grants": ["block"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let policy: Value = r.json().await.unwrap();
    let relay = p.svc.control().relay().clone();
    let start = || {
        authorize_url(
            &p.svc,
            "acme",
            "app",
            "https://app.acme.test/cb",
            &postern_testkit::Pkce::new().challenge,
            "",
        )
    };

    let page = Browser::new()
        .sign_in(&start(), &login(&p.svc, CAROL, PASSWORD))
        .await
        .unwrap();
    assert_eq!(page.title(), "Access blocked", "{}", page.body);
    assert_eq!(relay.stats().offers, 0, "no agent was asked");
    assert_eq!(agent.stats.snapshot().validated_total(), 0);

    let r = http
        .delete(format!(
            "{}/api/v1/policies/{}",
            p.svc.url(),
            policy["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let page = Browser::new()
        .sign_in(&start(), &login(&p.svc, CAROL, PASSWORD))
        .await
        .unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "{}",
        page.body
    );
    assert_eq!(relay.stats().offers, 1);
    assert_eq!(agent.stats.snapshot().validated_total(), 1);
}

/// A MaxMind DB (format 2.0, IPv4, 24-bit records) placing each /8 network at
/// a latitude and longitude: enough of a GeoIP City database for impossible
/// travel, written here because no test database ships with the reader.
fn geoip_database(places: &[(u8, f64, f64)]) -> Vec<u8> {
    fn control(kind: u8, size: usize, out: &mut Vec<u8>) {
        assert!(size < 29);
        if kind <= 7 {
            out.push((kind << 5) | size as u8);
        } else {
            out.push(size as u8);
            out.push(kind - 7);
        }
    }
    fn text(s: &str, out: &mut Vec<u8>) {
        control(2, s.len(), out);
        out.extend_from_slice(s.as_bytes());
    }
    fn uint(kind: u8, v: u64, out: &mut Vec<u8>) {
        let bytes: Vec<u8> = v.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        control(kind, bytes.len(), out);
        out.extend_from_slice(&bytes);
    }
    fn double(v: f64, out: &mut Vec<u8>) {
        control(3, 8, out);
        out.extend_from_slice(&v.to_be_bytes());
    }
    // Data: one record per place.
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (_, lat, lon) in places {
        offsets.push(data.len());
        control(7, 1, &mut data);
        text("location", &mut data);
        control(7, 2, &mut data);
        text("latitude", &mut data);
        double(*lat, &mut data);
        text("longitude", &mut data);
        double(*lon, &mut data);
    }
    // The search tree: a path of eight nodes per /8, the last record pointing at data.
    #[derive(Clone, Copy)]
    enum Record {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes = vec![[Record::Empty; 2]];
    for ((first, _, _), offset) in places.iter().zip(&offsets) {
        let mut node = 0;
        for depth in 0..8 {
            let bit = usize::from((first >> (7 - depth)) & 1);
            if depth == 7 {
                nodes[node][bit] = Record::Data(*offset);
            } else if let Record::Node(next) = nodes[node][bit] {
                node = next;
            } else {
                nodes.push([Record::Empty; 2]);
                let next = nodes.len() - 1;
                nodes[node][bit] = Record::Node(next);
                node = next;
            }
        }
    }
    let count = nodes.len();
    let mut file = Vec::new();
    for node in &nodes {
        for record in node {
            let value = match *record {
                Record::Empty => count,
                Record::Node(i) => i,
                Record::Data(offset) => count + 16 + offset,
            };
            file.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    file.extend_from_slice(&[0; 16]);
    file.extend_from_slice(&data);
    file.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut meta = Vec::new();
    control(7, 9, &mut meta);
    text("node_count", &mut meta);
    uint(6, count as u64, &mut meta);
    text("record_size", &mut meta);
    uint(5, 24, &mut meta);
    text("ip_version", &mut meta);
    uint(5, 4, &mut meta);
    text("database_type", &mut meta);
    text("Test-City", &mut meta);
    text("languages", &mut meta);
    control(11, 1, &mut meta);
    text("en", &mut meta);
    text("binary_format_major_version", &mut meta);
    uint(5, 2, &mut meta);
    text("binary_format_minor_version", &mut meta);
    uint(5, 0, &mut meta);
    text("build_epoch", &mut meta);
    uint(9, 1_700_000_000, &mut meta);
    text("description", &mut meta);
    control(7, 1, &mut meta);
    text("en", &mut meta);
    text("test", &mut meta);
    file.extend_from_slice(&meta);
    file
}

/// Impossible travel, with a GeoIP database configured: Paris, then New York
/// an hour later, is too fast; twelve hours later it is a flight.
#[tokio::test]
async fn impossible_travel_needs_a_geoip_database_and_too_fast_a_journey() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    // 81.0.0.0/8 in Paris, 8.0.0.0/8 in New York.
    std::fs::write(&db, geoip_database(&[(81, 48.8566, 2.3522), (8, 40.7128, -74.0060)])).unwrap();
    let path = db.clone();
    let bench = ProxyBench::start_with(
        TestService::builder()
            .trust_loopback_proxy()
            .tune(move |c| c.risk.geoip_database = Some(path)),
    )
    .await;
    let svc = &bench.svc;
    svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        None,
        &["https://portal.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let start = authorize_url(
        svc,
        "acme",
        "portal",
        "https://portal.acme.test/cb",
        &postern_testkit::Pkce::new().challenge,
        "",
    );
    let page = Browser::new()
        .from_ip("81.2.3.4")
        .sign_in(&start, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(query_param(&page.location().unwrap(), "code").is_some());
    let risk_from_new_york = || async {
        // Admin tokens last ten minutes: a fresh one for each look.
        let token = svc.admin_token(&bench.t.tenant, &bench.t.admin).await.unwrap();
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/policies/what-if", svc.url()))
            .bearer_auth(token)
            .json(&json!({"user": BOB, "app": "portal", "ip": "8.8.8.8"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["risk"].clone()
    };

    svc.advance(Duration::from_secs(3600));
    let risk = risk_from_new_york().await;
    assert_eq!(risk["level"], "medium", "{risk}");
    let travel = risk["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "impossible_travel")
        .unwrap_or_else(|| panic!("{risk}"));
    let detail = travel["detail"].as_str().unwrap();
    assert!(detail.contains("5837 km") || detail.contains("5838 km"), "{detail}");
    assert!(detail.contains("81.2.3.4"), "{detail}");

    svc.advance(Duration::from_secs(11 * 3600));
    let risk = risk_from_new_york().await;
    assert_eq!(risk["level"], "low", "only the unfamiliar network is left: {risk}");
}

/// Client kinds: a policy on refreshes refuses the refresh grant (the token
/// stays usable) and leaves browser sign-ins alone; a second factor demanded
/// for refreshes refuses a grant that was made without one.
#[tokio::test]
async fn refresh_grants_are_decided_as_their_own_client_kind() {
    const CB: &str = "https://portal.acme.test/cb";
    let bench = bench().await;
    let svc = &bench.svc;
    svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        Some("portal-secret"),
        &[CB],
        &["authorization_code", "refresh_token"],
    )
    .await
    .unwrap();
    let basic = Some(("portal", "portal-secret"));
    let pkce = postern_testkit::Pkce::new();
    let url = authorize_url(svc, "acme", "portal", CB, &pkce.challenge, "")
        .replace("scope=openid%20profile", "scope=openid%20profile%20offline_access");
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&url, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    let code = query_param(&page.location().unwrap(), "code").unwrap();
    let (status, tokens) = crate::common::token_request(
        svc,
        "acme",
        basic,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &pkce.verifier),
            ("redirect_uri", CB),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |token: String| async move {
        crate::common::token_request(
            svc,
            "acme",
            basic,
            &[("grant_type", "refresh_token"), ("refresh_token", &token)],
        )
        .await
    };

    let policy = create_policy(
        &bench,
        json!({
            "name": "No refreshes",
            "conditions": {"users": {"include": ["all"]}, "apps": {"include": ["client:portal"]}, "client_kinds": ["refresh"]},
            "grants": ["block"],
        }),
    )
    .await;
    let (status, body) = refresh(refresh_token.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("No refreshes"),
        "{body}"
    );
    // A browser sign-in to the same client is another kind: not blocked.
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(
            &authorize_url(svc, "acme", "portal", CB, &pkce.challenge, ""),
            &login(svc, BOB, BOB_PASSWORD),
        )
        .await
        .unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "{}",
        page.body
    );

    // MFA for refreshes: this grant was made with a password only.
    let mut mfa = policy.clone();
    mfa["grants"] = json!(["require_mfa"]);
    mfa.as_object_mut().unwrap().remove("id");
    api_ok(
        &bench,
        Method::PUT,
        &format!("/policies/{}", policy["id"].as_str().unwrap()),
        Some(mfa),
    )
    .await;
    let (status, body) = refresh(refresh_token.clone()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("multi-factor"),
        "{body}"
    );

    // Without the policy, the same token (never spent) refreshes.
    let (status, _) = bench
        .api(
            Method::DELETE,
            &format!("/policies/{}", policy["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = refresh(refresh_token).await;
    assert_eq!(status, 200, "{body}");
}

/// Device approvals are the `device_flow` client kind: a policy on it refuses
/// the sign-in that would approve a device, before the password, and leaves
/// browser sign-ins alone.
#[tokio::test]
async fn device_approvals_are_decided_as_their_own_client_kind() {
    let bench = bench().await;
    let svc = &bench.svc;
    svc.create_user(&bench.t.tenant, BOB, BOB_PASSWORD).await.unwrap();
    svc.create_client(
        &bench.t.tenant,
        "portal",
        None,
        &["https://portal.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    create_policy(
        &bench,
        json!({
            "name": "No devices",
            "conditions": {"users": {"include": ["all"]}, "apps": {"include": ["all"]}, "client_kinds": ["device_flow"]},
            "grants": ["block"],
        }),
    )
    .await;
    let verdict = what_if(
        &bench,
        json!({"user": BOB, "app": "postern-cli", "ip": "203.0.113.5", "client_kind": "device_flow"}),
    )
    .await;
    assert_eq!(verdict["effect"], "block");

    let r = reqwest::Client::new()
        .post(format!("{}/device_authorization", svc.issuer("acme")))
        .form(&[("client_id", "postern-cli"), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let device: Value = r.json().await.unwrap();
    let before = svc.sts().password_verifications();
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(
            device["verification_uri_complete"].as_str().unwrap(),
            &login(svc, BOB, BOB_PASSWORD),
        )
        .await
        .unwrap();
    assert_eq!(page.title(), "Access blocked", "{}", page.body);
    assert_eq!(svc.sts().password_verifications(), before);
    let events = signins(&bench).await;
    let blocked = events.iter().find(|e| e.outcome == SigninOutcome::Blocked).unwrap();
    assert_eq!(blocked.client_id.as_deref(), Some("postern-cli"));
    assert_eq!(access_of(blocked)["policies"][0]["policy"], "No devices");

    // A browser sign-in of the same user goes through.
    let start = authorize_url(
        svc,
        "acme",
        "portal",
        "https://portal.acme.test/cb",
        &postern_testkit::Pkce::new().challenge,
        "",
    );
    let page = Browser::new()
        .from_ip("203.0.113.5")
        .sign_in(&start, &login(svc, BOB, BOB_PASSWORD))
        .await
        .unwrap();
    assert!(
        query_param(&page.location().unwrap(), "code").is_some(),
        "{}",
        page.body
    );
}

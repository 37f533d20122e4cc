//! One origin, one tenant (SEC-12): an app's host lies under a verified domain
//! of its tenant or is the tenant's own name under the operator's app domain;
//! another tenant can neither publish on it nor claim its domain; the service's
//! own host and IP addresses are never app hosts; and apps that break the rule
//! (published before it, or whose domain lost its verification) are reported
//! and not served.

use std::time::Duration;

use postern_client::wire::{AppSettings, CreateTenant};
use postern_client::{AdminClient, ClientError};
use postern_store::{AppSpec, ExternalScheme, HostRules, Preauth, Tenant, User};
use postern_testkit::{TenantFixture, TestService};

const TIMEOUT: Duration = Duration::from_secs(30);

fn settings(name: &str, external_url: &str) -> AppSettings {
    AppSettings {
        name: name.into(),
        external_url: external_url.into(),
        internal_url: "http://wiki.corp/".into(),
        preauth: Some(Preauth::Passthrough),
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

/// The status and every problem (or the message) of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api {
            status,
            message,
            problems,
            ..
        }) => (status, format!("{message} {}", problems.join(" | "))),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

struct Installation {
    svc: TestService,
    acme: TenantFixture,
    /// The operator (acme's global administrator: acme is the system tenant).
    operator: AdminClient,
}

async fn installation(svc: TestService) -> Installation {
    let acme = svc.bootstrap().await.unwrap();
    let operator = client_for(&svc, &acme.tenant, &acme.admin).await;
    Installation { svc, acme, operator }
}

async fn client_for(svc: &TestService, tenant: &Tenant, user: &User) -> AdminClient {
    let token = svc.admin_token(tenant, user).await.unwrap();
    AdminClient::new(&svc.url(), token.into(), TIMEOUT).unwrap()
}

impl Installation {
    /// A tenant created by the operator, with its administrator's client.
    async fn tenant(&self, name: &str, domain: &str) -> AdminClient {
        self.operator
            .create_tenant(&CreateTenant {
                name: name.into(),
                display_name: name.to_uppercase(),
                domain: domain.into(),
                admin_username: format!("admin@{domain}"),
                admin_password: "correct horse for the tenant".into(),
            })
            .await
            .unwrap();
        let store = self.svc.store();
        let tenant = store.tenant_by_name(name).await.unwrap();
        let admin = store
            .user_by_username(&tenant.id, &format!("admin@{domain}"))
            .await
            .unwrap();
        client_for(&self.svc, &tenant, &admin).await
    }

    /// What the front door answers for `http://{host}:{port}/`.
    async fn status_at(&self, host: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/", self.svc.url()))
            .header("host", format!("{host}:{}", self.svc.local_addr_for_tests().port()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

#[tokio::test]
async fn a_host_belongs_to_the_tenant_that_verified_its_domain() {
    let i = installation(TestService::start().await.unwrap()).await;
    let acme = &i.operator;
    let beta = i.tenant("beta", "beta.test").await;
    acme.create_app(&settings("Wiki", "http://wiki.acme.test/"))
        .await
        .unwrap();

    // The attack of the issue: beta publishing below acme's app host, at a
    // prefix of its own, or anywhere under acme's domain. Refused before
    // anything is stored, naming the field.
    for url in [
        "http://wiki.acme.test/evil/",
        "http://wiki.acme.test:8080/",
        "http://acme.test/",
        "http://new.acme.test/",
        "http://WIKI.ACME.TEST./x/",
    ] {
        let (status, message) = refusal(beta.create_app(&settings("Evil", url)).await);
        assert_eq!(status, 400, "{url}: {message}");
        assert!(
            message.contains("external_url") && message.contains("not under a verified domain"),
            "{url}: {message}"
        );
        assert!(message.contains("beta.test"), "says what would work: {message}");
    }
    assert!(beta.apps().await.unwrap().is_empty());
    // Nor by moving an app of its own there.
    let mine = beta
        .create_app(&settings("Mine", "http://mine.beta.test/"))
        .await
        .unwrap();
    let (status, _) = refusal(
        beta.replace_app(&mine.id, &settings("Mine", "http://wiki.acme.test/mine/"))
            .await,
    );
    assert_eq!(status, 400);
    assert_eq!(beta.app(&mine.id).await.unwrap(), mine, "untouched");

    // Nor can beta take acme's domain, or one above or below it.
    for domain in ["acme.test", "sub.acme.test"] {
        let (status, message) = refusal(beta.create_domain(domain).await);
        assert_eq!(status, 409, "{domain}: {message}");
        assert!(message.contains("another organisation"), "{message}");
    }
    // An unverified domain does not count, and cannot be verified over
    // another tenant's.
    beta.create_domain("shared.test").await.unwrap();
    acme.create_domain("eu.shared.test").await.unwrap();
    i.operator.verify_tenant_domain("beta", "shared.test").await.unwrap();
    let (status, message) = refusal(acme.verify_domain("eu.shared.test").await);
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("overlaps shared.test"), "{message}");
    // A tenant created with a domain under another's is refused too.
    let (status, message) = refusal(
        i.operator
            .create_tenant(&CreateTenant {
                name: "gamma".into(),
                display_name: "Gamma".into(),
                domain: "x.beta.test".into(),
                admin_username: "admin@x.beta.test".into(),
                admin_password: "correct horse for gamma".into(),
            })
            .await,
    );
    assert_eq!(status, 409, "{message}");

    // Once verified, beta's own hosts are beta's.
    beta.create_app(&settings("Shared", "http://app.shared.test/"))
        .await
        .unwrap();
    let (status, _) = refusal(acme.create_app(&settings("Shared", "http://app.shared.test/x/")).await);
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_service_host_and_ip_addresses_are_not_app_hosts() {
    let i = installation(TestService::start().await.unwrap()).await;
    let port = i.svc.local_addr_for_tests().port();
    // The service listens at 127.0.0.1:PORT; even a tenant that somehow held
    // such a name could not publish there, whatever the port.
    for (url, says) in [
        (format!("http://127.0.0.1:{port}/app/"), "address of this service"),
        ("http://127.0.0.1:9999/".to_owned(), "address of this service"),
        ("https://10.1.2.3/".to_owned(), "IP address"),
        ("http://[::1]:8080/".to_owned(), "IP address"),
    ] {
        let (status, message) = refusal(i.operator.create_app(&settings("Here", &url)).await);
        assert_eq!(status, 400, "{url}: {message}");
        assert!(message.contains(says), "{url}: {message}");
    }
}

#[tokio::test]
async fn the_app_domain_gives_each_tenant_its_own_names() {
    let svc = TestService::builder()
        .apps_domain("apps.example.net")
        .start()
        .await
        .unwrap();
    let i = installation(svc).await;
    let beta = i.tenant("beta", "beta.test").await;

    let wiki = i
        .operator
        .create_app(&settings("Wiki", "https://wiki-acme.apps.example.net/"))
        .await
        .unwrap();
    assert_eq!(wiki.external_url, "https://wiki-acme.apps.example.net/");
    beta.create_app(&settings("Wiki", "https://wiki-beta.apps.example.net/"))
        .await
        .unwrap();
    // Names of acme's, a bare label, deeper names, the app domain itself:
    // refused, with an example that works.
    for url in [
        "https://wiki-acme.apps.example.net/beta/",
        "https://beta.apps.example.net/",
        "https://x.wiki-beta.apps.example.net/",
        "https://apps.example.net/",
    ] {
        let (status, message) = refusal(beta.create_app(&settings("Other", url)).await);
        assert_eq!(status, 400, "{url}: {message}");
        assert!(message.contains("wiki-beta.apps.example.net"), "{url}: {message}");
    }

    // Tenant short names may contain dashes: `web-x-beta` reads as tenant
    // x-beta's once that tenant exists, so beta may no longer take it...
    let x_beta = i.tenant("x-beta", "xbeta.test").await;
    let (status, message) = refusal(
        beta.create_app(&settings("Web", "https://web-x-beta.apps.example.net/"))
            .await,
    );
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("another organisation"), "{message}");
    x_beta
        .create_app(&settings("Web", "https://web-x-beta.apps.example.net/"))
        .await
        .unwrap();
    // ...and one beta took before x-beta existed stays beta's: the claim decides.
    let _y_beta_first = beta
        .create_app(&settings("Docs", "https://docs-y-beta.apps.example.net/"))
        .await
        .unwrap();
    let y_beta = i.tenant("y-beta", "ybeta.test").await;
    let (status, message) = refusal(
        y_beta
            .create_app(&settings("Docs", "https://docs-y-beta.apps.example.net/"))
            .await,
    );
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("used by another organisation"), "{message}");
}

#[tokio::test]
async fn apps_that_break_the_rule_are_reported_and_not_served() {
    let i = installation(TestService::start().await.unwrap()).await;
    let beta = i.tenant("beta", "beta.test").await;
    let store = i.svc.store();
    let beta_tenant = store.tenant_by_name("beta").await.unwrap();
    let group = store
        .default_connector_group(&beta_tenant.id, i.svc.now())
        .await
        .unwrap();

    // As if published before host rules existed: beta on a host of acme's.
    let legacy = AppSpec {
        name: "Legacy".into(),
        external_scheme: ExternalScheme::Http,
        external_host: format!("legacy.acme.test:{}", i.svc.local_addr_for_tests().port()),
        path_prefix: "/".into(),
        internal_url: "http://legacy.corp/".into(),
        preauth: Preauth::Passthrough,
        connector_group_id: group.id.clone(),
        backend_timeout_secs: 30,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: false,
        identity_headers: Vec::new(),
        limits: postern_store::AppLimits::default(),
    };
    store
        .create_app(&beta_tenant.id, &legacy, "legacy-client", i.svc.now())
        .await
        .unwrap();
    // And one of beta's own, which is fine.
    let own = AppSpec {
        name: "Own".into(),
        external_host: format!("own.beta.test:{}", i.svc.local_addr_for_tests().port()),
        ..legacy.clone()
    };
    store
        .create_app(&beta_tenant.id, &own, "own-client", i.svc.now())
        .await
        .unwrap();

    // The admin API says what is wrong, app by app.
    let listed = beta.apps().await.unwrap();
    let problem = |name: &str| {
        listed
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.host_problem.clone())
    };
    let legacy_problem = problem("Legacy").expect("reported");
    assert!(legacy_problem.contains("legacy.acme.test"), "{legacy_problem}");
    assert!(
        legacy_problem.contains("not under a verified domain"),
        "{legacy_problem}"
    );
    assert_eq!(problem("Own"), None);
    // So does the report made at start.
    let report = store.host_violations(&HostRules::default(), None).await.unwrap();
    assert_eq!(
        report.iter().map(|v| v.app.name.as_str()).collect::<Vec<_>>(),
        ["Legacy"]
    );

    // The front door does not serve it (421 with a page), while beta's own app
    // gets as far as looking for a connector (503: none attached).
    assert_eq!(i.status_at("legacy.acme.test").await, 421);
    assert_eq!(i.status_at("own.beta.test").await, 503);

    // Acme cannot use the host while beta's old claim stands, but once beta
    // moves its app to a host of its own, the name is free for acme.
    let (status, _) = refusal(
        i.operator
            .create_app(&settings("Legacy", "http://legacy.acme.test/"))
            .await,
    );
    assert_eq!(status, 409);
    let legacy_id = listed.iter().find(|a| a.name == "Legacy").unwrap().id.clone();
    beta.replace_app(&legacy_id, &settings("Legacy", "http://legacy.beta.test/"))
        .await
        .unwrap();
    i.operator
        .create_app(&settings("Legacy", "http://legacy.acme.test/"))
        .await
        .unwrap();
    let _ = &i.acme;
}

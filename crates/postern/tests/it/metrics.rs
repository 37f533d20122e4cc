//! Issue 11 item 5: Prometheus metrics. The service serves them on a listener
//! of its own (`metrics_listen`), never on the public one; the connector and
//! the agent, run as real processes, on `--metrics-listen`. After an app
//! request, a rate-limit refusal, a pass-through sign-in through the agent, a
//! sign-in with its policy decision and a lockout, every series shows what
//! happened, labelled by IDs and fixed vocabularies only (no user names, no
//! paths).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use postern_edge::{Rate, RateLimitSettings};
use postern_keyring::SecretString;
use postern_proto::ComponentKind;
use postern_service::config::AbuseLimits;
use postern_sts::{ClientIp, PasswordVerdict};
use postern_testkit::{Browser, Pkce, TestService};

use crate::common::{authorize_url, login, sign_in_for_code};
use crate::proxy_harness::{AppOptions, ProxyBench};

const REDIRECT: &str = "https://app.acme.test/cb";
const ZOE: &str = "zoe@corp.test";
const ZOE_PASSWORD: &str = "zoe's directory password";
const ALICE_PASSWORD: &str = "alice's long password";

/// One sample of a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (enough of it for these series).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

/// The sum of the samples of `name` that carry every label of `with`; `None`
/// when there is none.
fn value(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Asserts a series exists with a value above zero.
#[track_caller]
fn assert_positive(samples: &[Sample], name: &str, with: &[(&str, &str)], text: &str) -> f64 {
    let v = value(samples, name, with).unwrap_or_else(|| panic!("no {name} {with:?} in:\n{text}"));
    assert!(v > 0.0, "{name} {with:?} is {v} in:\n{text}");
    v
}

/// Scrapes `http://{addr}/metrics`, waiting (up to 30 s) for the listener
/// and for `ready` to hold.
async fn scrape_until(addr: &str, ready: impl Fn(&[Sample]) -> bool) -> (String, Vec<Sample>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("http://{addr}/metrics")).await {
            assert_eq!(r.status(), 200);
            let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
            let text = r.text().await.unwrap();
            let samples = parse(&text);
            if ready(&samples) {
                return (text, samples);
            }
            assert!(
                Instant::now() < deadline,
                "metrics never showed what was expected:\n{text}"
            );
        } else {
            assert!(Instant::now() < deadline, "nothing listens on {addr}");
        }
        postern_testkit::poll_pause(Duration::from_millis(100)).await;
    }
}

/// A loopback address with a port free now (for a child process to bind).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// Registers an agent of `acme` with a registration token and runs `postern
/// agent run` on a local account file holding Zoe, with `--metrics-listen`.
async fn start_agent(bench: &ProxyBench, metrics: &str) -> std::process::Child {
    let dir = bench.dir.path();
    let now = bench.svc.now();
    let token = format!("ptr_{}", postern_keyring::random_token().unwrap().expose());
    bench
        .svc
        .store()
        .create_registration_token(
            &postern_keyring::digest(&token),
            &bench.t.tenant.id,
            ComponentKind::Agent,
            None,
            &format!("user:{}", bench.t.admin.id),
            1,
            now,
            now + Duration::from_secs(600),
        )
        .await
        .unwrap();
    let accounts = dir.join("accounts");
    let hash = postern_directory::hash_password(&SecretString::from(ZOE_PASSWORD)).unwrap();
    postern_keyring::write_private_file(&accounts, format!("{ZOE}:{hash}:Zoe\n").as_bytes()).unwrap();
    let config = dir.join("agent.toml");
    let toml = format!(
        "[directory]\nkind = \"local_file\"\npath = \"{}\"\n",
        accounts.display()
    );
    postern_keyring::write_private_file(&config, toml.as_bytes()).unwrap();
    let state = dir.join("agent-state");
    let registered = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["agent", "register", "--allow-root", "--rsa-bits", "2048", "--server"])
        .arg(bench.svc.url())
        .arg("--state-dir")
        .arg(&state)
        .env("POSTERN_REGISTRATION_TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(
        registered.status.success(),
        "{}",
        String::from_utf8_lossy(&registered.stderr)
    );
    std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(["agent", "run", "--allow-root", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--metrics-listen", metrics])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("agent.log")).unwrap()))
        .spawn()
        .unwrap()
}

/// Kills a child process when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn metrics_of_the_service_connector_and_agent() {
    // One request per second per app: the second at once is refused.
    let mut abuse = AbuseLimits::off();
    abuse.rates = RateLimitSettings {
        client: None,
        app: Rate::new(1, 1),
        tenant: None,
    };
    let bench = ProxyBench::start_with(TestService::builder().system_clock().metrics().abuse_limits(abuse)).await;
    let (svc, tenant) = (&bench.svc, &bench.t.tenant);
    let service_metrics = svc.metrics_addr().expect("metrics_listen is set").to_string();

    // An app through a connector run with --metrics-listen.
    let app = bench.publish("wiki", "wiki.acme.test", AppOptions::default()).await;
    let app_id = app["id"].as_str().unwrap().to_owned();
    let connector_metrics = free_addr();
    let _connector = bench
        .start_connector_with("gw-1", None, &["--metrics-listen", &connector_metrics])
        .await;
    let client = bench.client(&["wiki.acme.test"]);
    let first = client
        .post(bench.url("wiki.acme.test", "/private/path?code=secret"))
        .body("twelve bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = client.get(bench.url("wiki.acme.test", "/again")).send().await.unwrap();
    assert_eq!(second.status(), 429, "the app's rate of one a second");

    // A pass-through sign-in checked by an agent run with --metrics-listen.
    let store = svc.store();
    store.add_domain(&tenant.id, "corp.test", "t", svc.now()).await.unwrap();
    store.verify_domain(&tenant.id, "corp.test").await.unwrap();
    store
        .set_domain_auth_mode(&tenant.id, "corp.test", postern_store::DomainAuthMode::Passthrough)
        .await
        .unwrap();
    let agent_metrics = free_addr();
    let _agent = Killed(start_agent(&bench, &agent_metrics).await);
    let ip = ClientIp("192.0.2.10".parse().unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let verdict = svc
            .sts()
            .check_password(tenant, ZOE, &SecretString::from(ZOE_PASSWORD), ip)
            .await
            .unwrap();
        match verdict {
            PasswordVerdict::Valid(_) => break,
            other => assert!(Instant::now() < deadline, "the agent never answered: {other:?}"),
        }
        postern_testkit::poll_pause(Duration::from_millis(100)).await;
    }

    // A sign-in through the pages: conditional access decides.
    svc.create_client(tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
        .await
        .unwrap();
    svc.create_user(tenant, "alice@acme.test", ALICE_PASSWORD)
        .await
        .unwrap();
    let url = authorize_url(svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "");
    sign_in_for_code(&Browser::new(), &url, &login(svc, "alice@acme.test", ALICE_PASSWORD)).await;

    // Smart lockout: different wrong passwords up to the threshold lock Bob,
    // and the next attempt is refused without a check.
    svc.create_user(tenant, "bob@acme.test", "bob's long password")
        .await
        .unwrap();
    for i in 0..tenant.lockout_threshold {
        let wrong = SecretString::from(format!("wrong guess {i}").as_str());
        svc.sts()
            .check_password(tenant, "bob@acme.test", &wrong, ip)
            .await
            .unwrap();
    }
    let refused = svc
        .sts()
        .check_password(tenant, "bob@acme.test", &SecretString::from("bob's long password"), ip)
        .await
        .unwrap();
    assert!(matches!(refused, PasswordVerdict::LockedOut), "{refused:?}");

    // The service's series.
    let (text, s) = scrape_until(&service_metrics, |s| {
        value(s, "postern_app_requests_total", &[("status", "2xx")]).is_some()
    })
    .await;
    let app_labels = [("app", app_id.as_str()), ("tenant", tenant.id.as_str())];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        app_labels.iter().copied().chain(extra.iter().copied()).collect()
    };
    assert_positive(&s, "postern_app_requests_total", &with(&[("status", "2xx")]), &text);
    assert_positive(&s, "postern_app_requests_total", &with(&[("status", "4xx")]), &text);
    assert_positive(&s, "postern_app_request_duration_seconds_count", &app_labels, &text);
    assert_positive(
        &s,
        "postern_app_request_duration_seconds_bucket",
        &with(&[("le", "+Inf")]),
        &text,
    );
    let bytes_in = assert_positive(&s, "postern_app_body_bytes_total", &with(&[("direction", "in")]), &text);
    assert!(bytes_in >= 12.0, "{bytes_in}");
    assert_positive(
        &s,
        "postern_app_body_bytes_total",
        &with(&[("direction", "out")]),
        &text,
    );
    assert_positive(&s, "postern_rate_limited_total", &[("limit", "app")], &text);
    let group = bench.default_group().await;
    let group_labels = [("tenant", tenant.id.as_str()), ("group", group.as_str())];
    assert_eq!(value(&s, "postern_tunnels", &group_labels), Some(2.0), "{text}");
    assert_eq!(
        value(&s, "postern_connector_group_up", &group_labels),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&s, "postern_tunnel_requests_in_flight", &group_labels).is_some(),
        "{text}"
    );
    let tenant_label = [("tenant", tenant.id.as_str())];
    let pta_ok = [("tenant", tenant.id.as_str()), ("outcome", "success")];
    assert_positive(&s, "postern_pta_requests_total", &pta_ok, &text);
    assert_positive(&s, "postern_pta_request_duration_seconds_count", &pta_ok, &text);
    assert_positive(&s, "postern_lockouts_total", &tenant_label, &text);
    assert_positive(&s, "postern_lockout_refusals_total", &tenant_label, &text);
    let allowed = [("tenant", tenant.id.as_str()), ("effect", "allow")];
    assert_positive(&s, "postern_policy_decisions_total", &allowed, &text);
    let now = svc.now().secs() as f64;
    let connector = store.components(&tenant.id, ComponentKind::Connector).await.unwrap();
    let agent = store.components(&tenant.id, ComponentKind::Agent).await.unwrap();
    for (kind, id) in [("connector", &connector[0].id), ("agent", &agent[0].id)] {
        let labels = [
            ("tenant", tenant.id.as_str()),
            ("kind", kind),
            ("component", id.as_str()),
        ];
        let expiry = assert_positive(
            &s,
            "postern_component_certificate_expiry_timestamp_seconds",
            &labels,
            &text,
        );
        assert!(expiry > now, "{kind} certificate expiry {expiry} is not after {now}");
    }
    for ca in ["connectors", "agents", "service"] {
        let expiry = assert_positive(&s, "postern_ca_expiry_timestamp_seconds", &[("ca", ca)], &text);
        assert!(expiry > now + 86_400.0 * 365.0, "{ca}: {expiry}");
    }
    assert_eq!(
        value(&s, "postern_components", &[("kind", "connector")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&s, "postern_components", &[("kind", "agent")]),
        Some(1.0),
        "{text}"
    );
    assert_positive(&s, "postern_build_info", &[("role", "service")], &text);
    // Labels carry IDs, never names, paths or addresses.
    for leak in [
        ZOE,
        "alice@acme.test",
        "bob@acme.test",
        "/private",
        "secret",
        "192.0.2.10",
    ] {
        assert!(!text.contains(leak), "{leak} in the metrics:\n{text}");
    }

    // The connector's and the agent's own.
    let (text, s) = scrape_until(&connector_metrics, |s| {
        value(s, "postern_connector_requests_total", &[]).is_some()
    })
    .await;
    let ok = [("app", app_id.as_str()), ("status", "2xx")];
    assert_positive(&s, "postern_connector_requests_total", &ok, &text);
    assert_positive(
        &s,
        "postern_connector_backend_duration_seconds_count",
        &[("app", &app_id)],
        &text,
    );
    assert_eq!(value(&s, "postern_connector_tunnels_up", &[]), Some(2.0), "{text}");
    assert_positive(&s, "postern_build_info", &[("role", "connector")], &text);
    assert!(
        value(&s, "postern_app_requests_total", &[]).is_none(),
        "the service's series in the connector"
    );
    let (text, s) = scrape_until(&agent_metrics, |s| {
        value(s, "postern_agent_validations_total", &[]).is_some()
    })
    .await;
    assert_positive(&s, "postern_agent_validations_total", &[("outcome", "success")], &text);
    assert_positive(
        &s,
        "postern_agent_directory_duration_seconds_count",
        &[("outcome", "success")],
        &text,
    );
    assert_eq!(
        value(&s, "postern_agent_validations_in_flight", &[]),
        Some(0.0),
        "{text}"
    );
    assert_positive(&s, "postern_build_info", &[("role", "agent")], &text);
    assert!(!text.contains(ZOE), "a user name in the agent's metrics");

    // Never on the public listener: /metrics there is the service's 404 page,
    // and the listener has no other page.
    let public = reqwest::get(format!("{}/metrics", svc.url())).await.unwrap();
    assert_eq!(public.status(), 404);
    assert!(!public.text().await.unwrap().contains("postern_"));
    let elsewhere = reqwest::get(format!("http://{service_metrics}/api/v1/me"))
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}

/// Without `metrics_listen` nothing is served: no listener, and `/metrics` on
/// the public listener is a 404.
#[tokio::test]
async fn no_metrics_unless_configured() {
    let svc = TestService::start().await.unwrap();
    assert_eq!(svc.metrics_addr(), None);
    let r = reqwest::get(format!("{}/metrics", svc.url())).await.unwrap();
    assert_eq!(r.status(), 404);
}

//! Helpers shared by the end-to-end tests.

use std::time::Duration;

use postern_testkit::{Browser, Login, Page, TenantFixture, TestService};

/// Sends a request for the `openidconnect` crate with reqwest.
pub async fn http(request: openidconnect::HttpRequest) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(std::io::Error::other)?;
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (k, v) in response.headers() {
        builder = builder.header(k, v);
    }
    let bytes = response.bytes().await.map_err(std::io::Error::other)?;
    builder.body(bytes.to_vec()).map_err(std::io::Error::other)
}

/// Whether the tests run in CI (`CI=true`, as CI systems set it), where every
/// precondition of a test is promised (root, `ip netns`, the directories).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A test (or a part of one) whose precondition is missing here: in CI that is
/// a failure, never a silent pass; elsewhere it is skipped with a line saying so.
pub fn precondition_missing(test: &str, why: &str) {
    assert!(!in_ci(), "{test} cannot run in CI: {why}");
    eprintln!("SKIPPED {test}: {why}");
}

/// Whether this process runs as root.
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The admin's login for the sign-in pages.
pub fn admin_login(svc: &TestService, t: &TenantFixture) -> Login {
    Login {
        username: t.admin.username.clone(),
        password: t.admin_password.clone(),
        totp_secret: Some(t.admin_totp_secret.clone()),
        now: svc.now(),
        recovery_code: None,
    }
}

/// A login without MFA.
pub fn login(svc: &TestService, username: &str, password: &str) -> Login {
    Login {
        username: username.into(),
        password: password.into(),
        totp_secret: None,
        now: svc.now(),
        recovery_code: None,
    }
}

/// The query parameter `name` of a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// An authorization URL for a confidential test client, by hand.
pub fn authorize_url(
    svc: &TestService,
    tenant: &str,
    client_id: &str,
    redirect: &str,
    challenge: &str,
    extra: &str,
) -> String {
    format!(
        "{}/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20profile&state=st4te&nonce=n0nce&code_challenge={challenge}&code_challenge_method=S256{extra}",
        svc.issuer(tenant),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    )
}

/// Signs in through the pages and returns the redirect back to the client.
pub async fn sign_in_for_code(browser: &Browser, start: &str, login: &Login) -> Page {
    let page = browser.sign_in(start, login).await.expect("sign-in completes");
    assert!(
        page.status.is_redirection(),
        "expected a redirect to the client, got {} {}",
        page.status,
        page.title()
    );
    page
}

/// Posts to the token endpoint.
pub async fn token_request(
    svc: &TestService,
    tenant: &str,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/token", svc.issuer(tenant)))
        .form(form);
    if let Some((id, secret)) = auth {
        req = req.basic_auth(id, Some(secret));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// `postern serve` started as a process of its own, once it printed its address.
pub struct ServeProcess {
    /// The process (the caller stops it).
    pub child: std::process::Child,
    /// Where the public listener is.
    pub addr: std::net::SocketAddr,
    /// The first-run setup link, if it printed one.
    pub setup_url: Option<String>,
}

/// Starts `postern serve` with `configure` adding arguments and environment (the
/// data dir, listen addresses, …), its log (standard error) in `log`; returns
/// once it prints the address it listens on. Standard output keeps being
/// drained, like a terminal.
pub async fn spawn_serve(configure: impl FnOnce(&mut std::process::Command), log: &std::path::Path) -> ServeProcess {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_postern"));
    command
        .arg("serve")
        .env_remove("POSTERN_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    configure(&mut command);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut setup = None;
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("/setup?code=") {
                setup = Some(line.trim().to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("Postern is listening on ")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send((setup.clone(), rest.split(' ').next().unwrap_or_default().to_owned()));
            }
        }
    });
    let Ok((setup_url, addr)) = ready_rx.await else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the service exited before it was ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    };
    ServeProcess {
        child,
        addr: addr.parse().unwrap(),
        setup_url,
    }
}

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

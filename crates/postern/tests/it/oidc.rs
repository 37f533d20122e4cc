//! A real OpenID Connect relying party (the `openidconnect` crate) against the
//! service: discovery, code flow with PKCE, ID token validation against the JWKS,
//! userinfo (header or form body), refresh rotation, single sign-on, logout, the
//! device flow, and native clients on loopback redirect URIs.

use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreDeviceAuthorizationResponse, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, RefreshToken, Scope, TokenResponse,
};
use postern_testkit::{Browser, Pkce, TestService};

use crate::common::{admin_login, authorize_url, http, query_param, sign_in_for_code, token_request};

const REDIRECT: &str = "https://app.acme.test/callback";

#[tokio::test]
async fn code_flow_with_pkce_through_a_real_relying_party() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(
        &t.tenant,
        "web-app",
        Some("s3cret-s3cret"),
        &[REDIRECT],
        &["authorization_code", "refresh_token"],
    )
    .await
    .unwrap();

    let issuer = IssuerUrl::new(svc.issuer("acme")).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("discovery");
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("web-app".into()),
        Some(ClientSecret::new("s3cret-s3cret".into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::new();
    let back = browser
        .sign_in(auth_url.as_str(), &admin_login(&svc, &t))
        .await
        .unwrap();
    let location = back.location().unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some(csrf.secret().as_str()));
    assert_eq!(
        query_param(&location, "iss").as_deref(),
        Some(svc.issuer("acme").as_str()),
        "RFC 9207 iss"
    );
    let code = query_param(&location, "code").unwrap();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("ID token verifies against the JWKS");
    assert_eq!(claims.subject().as_str(), t.admin.id);
    assert_eq!(claims.preferred_username().unwrap().as_str(), "admin@acme.test");
    let amr: Vec<String> = claims
        .auth_method_refs()
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert!(
        amr.contains(&"mfa".to_string()) && amr.contains(&"pwd".to_string()),
        "{amr:?}"
    );

    // Userinfo with the access token.
    let info: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), t.admin.id);

    // Refresh rotates: the new token works, the old one is refused and revokes the family.
    let first_refresh = tokens
        .refresh_token()
        .expect("offline_access gives a refresh token")
        .clone();
    let refreshed = client
        .exchange_refresh_token(&first_refresh)
        .unwrap()
        .request_async(&http)
        .await
        .expect("refresh");
    let second_refresh = refreshed.refresh_token().unwrap().clone();
    assert_ne!(first_refresh.secret(), second_refresh.secret());
    assert!(
        client
            .exchange_refresh_token(&first_refresh)
            .unwrap()
            .request_async(&http)
            .await
            .is_err(),
        "reuse refused"
    );
    assert!(
        client
            .exchange_refresh_token(&second_refresh)
            .unwrap()
            .request_async(&http)
            .await
            .is_err(),
        "reuse revoked the whole family"
    );

    // Single sign-on: a second authorization in the same browser needs no page.
    let (challenge, _verifier) = PkceCodeChallenge::new_random_sha256();
    let (again, _, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let sso = browser.get(again.as_str()).await.unwrap();
    assert!(sso.status.is_redirection());
    assert!(
        sso.location().unwrap().starts_with(REDIRECT),
        "SSO redirects straight back"
    );

    // Logout with the ID token as hint ends the session at once and returns to the
    // registered post-logout URI; the next authorization shows the sign-in page.
    let logout = format!(
        "{}/logout?id_token_hint={}&post_logout_redirect_uri={}&state=bye",
        svc.issuer("acme"),
        id_token,
        url::form_urlencoded::byte_serialize(format!("{REDIRECT}/bye").as_bytes()).collect::<String>()
    );
    let out = browser.get(&logout).await.unwrap();
    assert!(
        out.location()
            .unwrap()
            .starts_with(&format!("{REDIRECT}/bye?state=bye")),
        "{:?}",
        out.location()
    );
    let (challenge, _verifier) = PkceCodeChallenge::new_random_sha256();
    let (after, _, _) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let page = browser.follow(after.as_str(), &svc.url()).await.unwrap();
    assert_eq!(page.title(), "Sign in");
}

#[tokio::test]
async fn device_flow_through_a_real_client() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let issuer = IssuerUrl::new(svc.issuer("acme")).unwrap();
    let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.unwrap();
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("postern-cli".into()), None)
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{}/device_authorization", svc.issuer("acme"))).unwrap(),
        );
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("postern:admin".into()))
        .add_scope(Scope::new("offline_access".into()))
        .request_async(&http)
        .await
        .expect("device authorization");
    let user_code = details.user_code().secret().clone();
    assert_eq!(user_code.len(), 9, "XXXX-XXXX");

    // The user opens the verification page, signs in (with MFA) and approves.
    let browser = Browser::new();
    let complete = details.verification_uri_complete().unwrap().secret().clone();
    let entry = browser.get(&complete).await.unwrap();
    let form = entry.form().unwrap();
    let start = browser.submit(&form, &[("user_code", &user_code)]).await.unwrap();
    let done = browser
        .sign_in(&start.location().unwrap(), &admin_login(&svc, &t))
        .await
        .unwrap();
    assert_eq!(done.title(), "Device approved", "{}", done.body);

    // The client polls; its sleeps move the service clock instead of waiting.
    let clock_svc = &svc;
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(&http, |d: Duration| async move { clock_svc.advance(d) }, None)
        .await
        .expect("device token");
    assert!(tokens.refresh_token().is_some());
    // The token works at the admin API.
    let me = reqwest::Client::new()
        .get(format!("{}/api/v1/me", svc.url()))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_ne!(
        me.status(),
        401,
        "a device-flow admin token is accepted by the admin API"
    );
    // Refresh works for the CLI (public client) too.
    let refreshed = client
        .exchange_refresh_token(&RefreshToken::new(tokens.refresh_token().unwrap().secret().clone()))
        .unwrap()
        .request_async(&http)
        .await;
    assert!(refreshed.is_ok());
}

#[tokio::test]
async fn signing_key_rotation_keeps_old_tokens_valid_until_they_expire() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let jwks = |svc: &TestService| {
        let url = format!("{}/jwks.json", svc.issuer("acme"));
        async move {
            let keys: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            keys["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let before = jwks(&svc).await;
    assert_eq!(before.len(), 1);
    let admin = svc.store().user(&t.tenant.id, &t.admin.id).await.unwrap();
    let old_token = svc
        .sts()
        .mint_access_token_for_tests(&t.tenant, &admin, "openid postern:admin")
        .await
        .unwrap();

    let new_kid = svc.sts().rotate_signing_key().await.unwrap();
    let after = jwks(&svc).await;
    assert_eq!(
        after,
        vec![new_kid.clone(), before[0].clone()],
        "new key first, old key still published"
    );
    assert!(
        svc.sts().verify_admin_token(&old_token).await.unwrap().is_ok(),
        "a token signed before rotation still verifies"
    );
    let new_token = svc
        .sts()
        .mint_access_token_for_tests(&t.tenant, &admin, "openid postern:admin")
        .await
        .unwrap();
    let header = jsonwebtoken_kid(&new_token);
    assert_eq!(header, new_kid, "new tokens are signed with the new key");

    // Once every token the old key signed has expired, it leaves the JWKS.
    svc.advance(Duration::from_secs(601));
    svc.sts().forget_cached_keys().await;
    assert_eq!(jwks(&svc).await, vec![new_kid]);
}

fn jsonwebtoken_kid(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn code_flow_on_postgresql() {
    let svc = TestService::builder().postgres().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(
        &t.tenant,
        "pg-app",
        Some("pg-secret"),
        &[REDIRECT],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(svc.issuer("acme")).unwrap(), &http)
        .await
        .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("pg-app".into()),
        Some(ClientSecret::new("pg-secret".into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    let back = Browser::new()
        .sign_in(auth_url.as_str(), &admin_login(&svc, &t))
        .await
        .unwrap();
    let code = query_param(&back.location().unwrap(), "code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&client.id_token_verifier(), &nonce)
        .unwrap();
    assert_eq!(claims.subject().as_str(), t.admin.id);
    assert_eq!(svc.store().backend(), postern_store::Backend::Postgres);
}

#[tokio::test]
async fn userinfo_takes_the_access_token_from_a_form_body() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let admin = svc.store().user(&t.tenant.id, &t.admin.id).await.unwrap();
    let token = svc
        .sts()
        .mint_access_token_for_tests(&t.tenant, &admin, "openid profile")
        .await
        .unwrap();
    let userinfo = format!("{}/userinfo", svc.issuer("acme"));
    let client = reqwest::Client::new();
    let post_form = |body: String| {
        client
            .post(&userinfo)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap_or_default())
    };

    // RFC 6750 §2.2: the token as a form parameter, as pyoidc sends it.
    let (status, body) = answer(post_form(format!("access_token={token}")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], t.admin.id.as_str());
    assert_eq!(body["preferred_username"], "admin@acme.test");
    let r = client
        .post(&userinfo)
        .header("content-type", "application/x-www-form-urlencoded; charset=UTF-8")
        .body(format!("access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "with a charset parameter too");

    // Both places at once, or twice in the body: invalid_request.
    let (status, body) = answer(
        post_form(format!("access_token={token}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = answer(
        post_form(format!("access_token={token}&access_token={token}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );

    // No token, a token in a body that is not a form, a bad token: invalid_token.
    for request in [
        post_form("scope=openid".into()),
        client
            .post(&userinfo)
            .header("content-type", "text/plain")
            .body(format!("access_token={token}")),
        post_form("access_token=not-a-token".into()),
    ] {
        let (status, body) = answer(request.send().await.unwrap()).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    }

    // The body is bounded.
    let huge = format!("access_token={token}&pad={}", "x".repeat(64 * 1024));
    let r = post_form(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);

    // The header alone still works.
    let r = client.get(&userinfo).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn native_clients_redirect_to_any_loopback_port() {
    let svc = TestService::start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    svc.create_client(
        &t.tenant,
        "native",
        None,
        &["http://127.0.0.1/cb", "http://[::1]/cb", "https://app.acme.test/cb"],
        &["authorization_code"],
    )
    .await
    .unwrap();
    let browser = Browser::new();
    let start = |redirect: &str, pkce: &Pkce| authorize_url(&svc, "acme", "native", redirect, &pkce.challenge, "");
    let redeem = |code: String, verifier: String, redirect: &'static str| {
        let svc = &svc;
        async move {
            token_request(
                svc,
                "acme",
                None,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &verifier),
                    ("redirect_uri", redirect),
                    ("client_id", "native"),
                ],
            )
            .await
        }
    };

    // A port the registration does not name (RFC 8252 §7.3): the code comes back
    // to exactly that URI.
    let pkce = Pkce::new();
    let page = sign_in_for_code(
        &browser,
        &start("http://127.0.0.1:53123/cb", &pkce),
        &admin_login(&svc, &t),
    )
    .await;
    let location = page.location().unwrap();
    assert!(location.starts_with("http://127.0.0.1:53123/cb?"), "{location}");
    let code = query_param(&location, "code").unwrap();
    let (status, body) = redeem(code, pkce.verifier.clone(), "http://127.0.0.1:53123/cb").await;
    assert_eq!(status, 200, "{body}");

    // The token endpoint takes the URI the authorization named, nothing else.
    for other in ["http://127.0.0.1/cb", "http://127.0.0.1:53124/cb"] {
        let pkce = Pkce::new();
        let page = browser.get(&start("http://127.0.0.1:53123/cb", &pkce)).await.unwrap();
        let code = query_param(&page.location().unwrap(), "code").unwrap();
        let (status, body) = redeem(code, pkce.verifier.clone(), other).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{other}: {body}"
        );
    }

    // IPv6 loopback likewise.
    let pkce = Pkce::new();
    let page = browser.get(&start("http://[::1]:61000/cb", &pkce)).await.unwrap();
    assert!(
        page.location().unwrap().starts_with("http://[::1]:61000/cb?code="),
        "{:?}",
        page.location()
    );

    // Not another path, address, name, scheme, or a non-loopback host's port.
    for refused in [
        "http://127.0.0.1:53123/other",
        "http://[::1]:53123/other",
        "http://127.0.0.2:53123/cb",
        "http://localhost:53123/cb",
        "https://127.0.0.1:53123/cb",
        "https://app.acme.test:8443/cb",
    ] {
        let page = browser.get(&start(refused, &Pkce::new())).await.unwrap();
        assert_eq!(page.status, 400, "{refused}");
        assert!(page.location().is_none(), "{refused} is never redirected to");
        assert!(page.body.contains("not registered"), "{refused}");
    }
}

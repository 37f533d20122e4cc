//! OAuth clients (relying parties) of the tenant's STS. A confidential client's
//! secret is generated here, shown once in the response to its creation, and
//! kept only as a SHA-256 digest.

use crate::AdminState;
use crate::views::View;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{NewOAuthClient, OAuthClient, Role};
use postern_sts::ADMIN_SCOPE;
use serde_json::json;
use std::net::{Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_text};
use crate::wire::{
    ClientCreated, ClientType, ClientView, CreateClient, GRANT_AUTHORIZATION_CODE, GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN,
};

/// Grant types a registered client may use.
const GRANTS: [&str; 3] = [GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_DEVICE_CODE];
/// Most URIs in one list.
const MAX_URIS: usize = 20;
/// Longest URI.
const MAX_URI_LEN: usize = 2000;
/// Most extra scopes.
const MAX_SCOPES: usize = 20;

/// Whether `host` is the local machine: the only hosts a redirect may reach
/// over plain HTTP (native apps, RFC 8252 §7.3).
fn is_loopback(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip == Ipv4Addr::LOCALHOST,
        Some(Host::Ipv6(ip)) => ip == Ipv6Addr::LOCALHOST,
        None => false,
    }
}

/// Checks one redirect URI: absolute, `https` (or `http` to a loopback host),
/// no fragment, no credentials. Returns it as given, since redirects are
/// matched exactly.
fn check_uri(problems: &mut Problems, field: &str, uri: &str) {
    if uri.len() > MAX_URI_LEN {
        problems.add(format!("{field}: a URI must be at most {MAX_URI_LEN} characters."));
        return;
    }
    let Ok(url) = Url::parse(uri) else {
        problems.add(format!("{field}: {uri:?} is not an absolute URL."));
        return;
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(url.host()) => {}
        _ => problems.add(format!(
            "{field}: {uri:?} must use https (http only for 127.0.0.1, localhost or [::1])."
        )),
    }
    if url.fragment().is_some() {
        problems.add(format!("{field}: {uri:?} must not have a fragment."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        problems.add(format!("{field}: {uri:?} must not contain credentials."));
    }
}

/// Checks a list of URIs and drops repeats.
fn check_uris(problems: &mut Problems, field: &str, uris: &[String]) -> Vec<String> {
    if uris.len() > MAX_URIS {
        problems.add(format!("{field}: at most {MAX_URIS} URIs."));
    }
    let mut kept: Vec<String> = Vec::new();
    for uri in uris {
        check_uri(problems, field, uri);
        if !kept.contains(uri) {
            kept.push(uri.clone());
        }
    }
    kept
}

/// Whether `s` is an OAuth scope token (RFC 6749 §3.3).
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// Validates a registration, reporting every problem.
fn validate(caller: &Caller, req: &CreateClient) -> Result<NewOAuthClient, ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &req.name, 100);
    let redirect_uris = check_uris(&mut problems, "redirect_uris", &req.redirect_uris);
    let post_logout_redirect_uris = check_uris(
        &mut problems,
        "post_logout_redirect_uris",
        &req.post_logout_redirect_uris,
    );
    let mut grant_types: Vec<String> = Vec::new();
    for g in &req.grant_types {
        if !GRANTS.contains(&g.as_str()) {
            problems.add(format!(
                "grant_types: {g:?} is not supported; use {}.",
                GRANTS.join(", ")
            ));
        } else if !grant_types.contains(g) {
            grant_types.push(g.clone());
        }
    }
    let has = |g: &str| grant_types.iter().any(|x| x == g);
    if req.grant_types.is_empty() {
        problems.add("grant_types: at least one grant type is required.");
    }
    if has(GRANT_DEVICE_CODE) && req.client_type == ClientType::Confidential {
        problems.add("grant_types: the device flow is only for public clients.");
    }
    if has(GRANT_AUTHORIZATION_CODE) && redirect_uris.is_empty() {
        problems.add("redirect_uris: authorization_code needs at least one redirect URI.");
    }
    if has(GRANT_REFRESH_TOKEN) && !has(GRANT_AUTHORIZATION_CODE) && !has(GRANT_DEVICE_CODE) {
        problems.add("grant_types: refresh_token needs authorization_code or the device flow.");
    }
    if req.scopes.len() > MAX_SCOPES {
        problems.add(format!("scopes: at most {MAX_SCOPES}."));
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in &req.scopes {
        if !is_scope_token(s) {
            problems.add(format!("scopes: {s:?} is not a valid scope."));
        } else if s == ADMIN_SCOPE && !caller.holds(Role::GlobalAdministrator) {
            problems.add(format!(
                "scopes: only a global administrator may give a client {ADMIN_SCOPE}."
            ));
        } else if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    problems.finish()?;
    Ok(NewOAuthClient {
        client_id: uuid::Uuid::new_v4().to_string(),
        name,
        secret_digest: None,
        redirect_uris,
        post_logout_redirect_uris,
        grant_types,
        scopes,
        builtin: false,
    })
}

/// Views of `clients`, each naming the published app it belongs to, if any.
async fn client_views(
    state: &AdminState,
    tenant_id: &str,
    clients: &[OAuthClient],
) -> Result<Vec<ClientView>, ApiError> {
    let apps = state.store.apps(tenant_id).await?;
    Ok(clients
        .iter()
        .map(|c| ClientView {
            app_id: apps.iter().find(|a| a.client_id == c.client_id).map(|a| a.id.clone()),
            ..View::view(c)
        })
        .collect())
}

/// `GET /api/v1/clients`.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<ClientView>>, ApiError> {
    let clients = state.store.clients(&caller.tenant.id).await?;
    Ok(Json(client_views(&state, &caller.tenant.id, &clients).await?))
}

/// `GET /api/v1/clients/{client_id}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<ClientView>, ApiError> {
    let client = state.store.client(&caller.tenant.id, &client_id).await?;
    client_views(&state, &caller.tenant.id, &[client])
        .await?
        .pop()
        .map(Json)
        .ok_or(ApiError::NotFound)
}

/// `POST /api/v1/clients`: registers a client; a confidential one gets a
/// secret, returned here once.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateClient>,
) -> Result<(StatusCode, Json<ClientCreated>), ApiError> {
    let mut new = validate(&caller, &req)?;
    let secret = match req.client_type {
        ClientType::Confidential => {
            let secret = postern_keyring::random_token()?;
            new.secret_digest = Some(postern_keyring::digest(secret.expose()));
            Some(secret)
        }
        ClientType::Public => None,
    };
    let client = state.store.create_client(&caller.tenant.id, &new, state.now()).await?;
    caller
        .audit(
            &state,
            "client.create",
            format!("client:{}", client.client_id),
            json!({
                "name": client.name,
                "client_type": req.client_type,
                "grant_types": client.grant_types,
                "redirect_uris": client.redirect_uris,
                "scopes": client.scopes,
            }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ClientCreated {
            client: View::view(&client),
            client_secret: secret,
        }),
    ))
}

/// `DELETE /api/v1/clients/{client_id}`: with its codes and tokens. Built-in
/// clients (the command line's) cannot be deleted, nor can the client of a
/// published app (it goes with the app; the store refuses, 409).
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let client = state.store.client(&caller.tenant.id, &client_id).await?;
    if client.builtin {
        return Err(ApiError::Conflict(
            "built-in clients belong to the service and cannot be deleted".into(),
        ));
    }
    state.store.delete_client(&caller.tenant.id, &client_id).await?;
    caller
        .audit(
            &state,
            "client.delete",
            format!("client:{client_id}"),
            json!({ "name": client.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(uri: &str) -> usize {
        let mut p = Problems::new();
        check_uri(&mut p, "redirect_uris", uri);
        match p.finish() {
            Ok(()) => 0,
            Err(ApiError::Invalid { problems, .. }) => problems.len(),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example.com/callback",
            "http://127.0.0.1:8400/cb",
            "http://localhost/cb",
            "http://[::1]:9000/cb",
            "https://app.example.com/cb?x=1",
        ] {
            assert_eq!(problems_of(ok), 0, "{ok}");
        }
        for bad in [
            "http://app.example.com/cb",
            "/relative",
            "app.example.com/cb",
            "javascript:alert(1)",
            "ftp://example.com/",
            "http://127.0.0.2/cb",
            "http://localhost.evil.test/cb",
        ] {
            assert_eq!(problems_of(bad), 1, "{bad}");
        }
        assert_eq!(problems_of("https://u:p@app.example.com/cb#frag"), 2);
    }

    #[test]
    fn scope_tokens() {
        assert!(is_scope_token("api:read"));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\""));
        assert!(!is_scope_token(""));
    }
}

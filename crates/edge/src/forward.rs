//! To the backend and back (APP-3..APP-7, BEY-2, BEY-3): the user's request,
//! cleaned and annotated, goes through a tunnel of the app's connector group as
//! one HTTP/2 stream; the response streams back, translated where the app asks.
//!
//! Towards the backend: hop-by-hop headers, every `x-postern-*` header the client
//! sent, the front door's cookies and forwarding headers the client made up are
//! removed; then the identity headers the app asks for (user, email, groups, and
//! a signed assertion), `X-Forwarded-For/Proto/Host` and the tunnel's own headers
//! are added. A WebSocket (or other) upgrade becomes a stream whose request body
//! carries the client's bytes and whose response body carries the backend's.
//!
//! The request's ID reaches the backend twice: in the tunnel's
//! `x-postern-request-id` and in `X-Request-Id` (a client's own `X-Request-Id`
//! is replaced, never passed on). What the access log needs from here (the
//! user, the connector, the request body's size) goes to the request's
//! [`AccessRecord`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use postern_proto::headers::strip_hop_by_hop;
use postern_proto::tunnel::{
    APP_HEADER, BackendError, ERROR_HEADER, REQUEST_ID_HEADER, UPGRADE_HEADER, UPGRADED_HEADER,
};
use postern_proto::upgrade::UpgradeReadBuffer;
use postern_store::App;
use postern_translate::{BodyTranslator, UrlMap};
use postern_tunnel::{BoxError, SendError, TunnelBody, TunnelResponseBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access_log::AccessRecord;
use crate::body_limit::{BodyCap, CappedBody};
use crate::preauth::Access;
use crate::{ClientInfo, Edge, pages};

/// Identity header: the user's sign-in name.
pub const USER_HEADER: &str = "x-postern-user";
/// Identity header: the user's email.
pub const EMAIL_HEADER: &str = "x-postern-email";
/// Identity header: the user's groups, comma-separated, each percent-encoded.
pub const GROUPS_HEADER: &str = "x-postern-groups";
/// Identity header: a JWT signed by the tenant's issuer (verify with its JWKS;
/// audience the app's client ID).
pub const ASSERTION_HEADER: &str = "x-postern-assertion";
/// The request's ID as the backend gets it (the same as in the access log).
pub const BACKEND_REQUEST_ID_HEADER: &str = "x-request-id";

/// Removes every `x-postern-*` header: only the front door sets them.
fn strip_postern_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-postern-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// A user's request headers as the tunnel may carry them: hop-by-hop, the front
/// door's own (`x-postern-*`, its cookies) and the forwarding headers it sets
/// itself (`Host`, `Forwarded`, `X-Forwarded-Host`, `X-Forwarded-Proto`) removed.
pub(crate) fn clean_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    strip_postern_headers(headers);
    crate::cookies::strip_own_cookies(headers);
    for name in [HOST.as_str(), "forwarded", "x-forwarded-host", "x-forwarded-proto"] {
        headers.remove(name);
    }
}

/// A backend's response headers as the user gets them: hop-by-hop and
/// `x-postern-*` headers removed.
pub(crate) fn clean_response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    strip_postern_headers(headers);
}

/// The protocol an HTTP/1.1 request asks to upgrade to (`Connection: upgrade`).
pub(crate) fn upgrade_protocol(parts: &Parts) -> Option<String> {
    let connection_upgrade = parts
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return None;
    }
    parts
        .headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Percent-encodes a group name for the groups header (commas and anything not
/// plain visible ASCII).
pub(crate) fn encode_group(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b" -_.~@()[]{}/:+=!$&'*;".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// `host[:port]` of an internal URL.
pub(crate) fn internal_authority(internal_url: &str) -> Option<String> {
    let url = url::Url::parse(internal_url).ok()?;
    let host = url.host_str()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// What the front door works out once per app from its two base URLs, not per
/// request.
pub(crate) struct AppUrls {
    /// The URL translation between them.
    map: UrlMap,
    /// `host[:port]` of the internal URL.
    internal_authority: Option<String>,
}

impl Edge {
    /// The app's URL translation and internal authority (cached while the app
    /// is unchanged).
    fn app_urls(&self, app: &App) -> Option<Arc<AppUrls>> {
        let generation = self.store.routing_generation();
        let key = app.id.clone();
        if let Some(urls) = self.url_maps.get(&key, generation) {
            return Some(urls);
        }
        match UrlMap::new(&app.external_url(), &app.internal_url) {
            Ok(map) => {
                let urls = Arc::new(AppUrls {
                    map,
                    internal_authority: internal_authority(&app.internal_url),
                });
                self.url_maps.put(key, urls.clone(), generation);
                Some(urls)
            }
            Err(e) => {
                tracing::warn!(app = %app.name, error = %e, "app URLs cannot be translated");
                None
            }
        }
    }

    /// Adds the identity headers the app asks for.
    async fn identity_headers(&self, app: &App, access: &Access, headers: &mut HeaderMap) {
        let s = &access.session;
        for wanted in &app.identity_headers {
            match wanted.as_str() {
                "user" => {
                    if let Some(v) = header_value(&s.n) {
                        headers.insert(USER_HEADER, v);
                    }
                }
                "email" => {
                    if let Some(v) = s.e.as_deref().and_then(header_value) {
                        headers.insert(EMAIL_HEADER, v);
                    }
                }
                "groups" => {
                    let joined = access
                        .groups
                        .iter()
                        .map(|g| encode_group(g))
                        .collect::<Vec<_>>()
                        .join(",");
                    if let Some(v) = header_value(&joined) {
                        headers.insert(GROUPS_HEADER, v);
                    }
                }
                "assertion" => match self.assertion(app, access).await {
                    Ok(jwt) => {
                        if let Some(v) = header_value(&jwt) {
                            headers.insert(ASSERTION_HEADER, v);
                        }
                    }
                    Err(e) => tracing::warn!(app = %app.name, error = %e, "identity assertion not signed"),
                },
                _ => {}
            }
        }
    }

    /// A signed assertion for the user and app, reused while it has more than
    /// half its lifetime left (signing costs an RSA operation).
    async fn assertion(&self, app: &App, access: &Access) -> Result<String, crate::EdgeError> {
        let key = (app.id.clone(), access.session.u.clone());
        let now = self.now();
        if let Ok(cache) = self.assertions.lock()
            && let Some((jwt, renew_at)) = cache.get(&key)
            && *renew_at > now
        {
            return Ok(jwt.clone());
        }
        let tenant = self.store.tenant(&app.tenant_id).await?;
        let ttl = self.options.assertion_ttl;
        let subject = postern_sts::relying_party::AssertionSubject {
            user_id: &access.session.u,
            username: &access.session.n,
            email: access.session.e.as_deref(),
            groups: &access.groups,
        };
        let jwt = self.sts.sign_assertion(&tenant, &app.id, &subject, ttl).await?;
        if let Ok(mut cache) = self.assertions.lock() {
            if cache.len() >= crate::MAX_CACHED_ASSERTIONS {
                cache.clear();
            }
            cache.insert(key, (jwt.clone(), now + ttl / 2));
        }
        Ok(jwt)
    }

    /// Whether connectors are registered in the app's group (connectors in
    /// the tenant's default group count for any group: a cheap, lenient check
    /// made only just after a start). A database error counts as no.
    async fn group_has_connectors(&self, app: &App) -> bool {
        self.store
            .components(&app.tenant_id, postern_proto::ComponentKind::Connector)
            .await
            .is_ok_and(|all| {
                all.iter()
                    .any(|c| c.group_id.as_deref().is_none_or(|g| g == app.connector_group_id))
            })
    }

    /// Sends the request to the app's backend through a tunnel and returns what
    /// the user gets.
    pub(crate) async fn forward(
        &self,
        app: &Arc<App>,
        path: &str,
        request: Request<Incoming>,
        client: &ClientInfo,
        access: Option<&Access>,
        request_id: &str,
    ) -> Response {
        let (mut parts, body) = request.into_parts();
        let record = parts.extensions.remove::<Arc<AccessRecord>>();
        if let (Some(record), Some(access)) = (&record, access) {
            record.set_user(&access.session.u, &access.session.n);
        }
        let upgrade = upgrade_protocol(&parts);
        let body_cap = BodyCap::for_app(app, self.options.app_max_body_bytes);
        if let Some(refused) = body_cap
            .as_ref()
            .and_then(|cap| cap.refuse_declared(&parts.headers, request_id))
        {
            return refused;
        }
        let body = CappedBody::new(body, body_cap.as_ref());
        let on_upgrade = if upgrade.is_some() {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let original_host = original_host(&parts, app);
        let mut headers = std::mem::take(&mut parts.headers);
        let sent_as = SentAs {
            client,
            original_host: &original_host,
            upgrade: upgrade.as_deref(),
            request_id,
        };
        self.backend_request_headers(app, access, &sent_as, &mut headers).await;
        let urls = (app.translate_headers || app.translate_links)
            .then(|| self.app_urls(app))
            .flatten();
        let map = urls.as_ref().map(|u| &u.map);
        let authority = backend_authority(app, urls.as_deref(), &mut headers, &original_host);
        let Some(uri) = backend_uri(&authority, path, parts.uri.query()) else {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request's address cannot be forwarded.",
                request_id,
            );
        };
        let (client_bytes, tunnel_body) = tunnel_request_body(upgrade.is_some(), body, record.clone());
        let mut outbound = Request::new(tunnel_body);
        *outbound.method_mut() = parts.method.clone();
        *outbound.uri_mut() = uri;
        *outbound.headers_mut() = headers;
        let sent = self.send_through_tunnel(app, outbound).await;
        if let Some(cap) = body_cap.as_ref().filter(|cap| cap.tripped()) {
            return cap.too_large(request_id);
        }
        let response = match sent {
            Ok(response) => response,
            Err(failure) => return tunnel_failure_page(app, request_id, &failure),
        };
        if let Some(record) = &record {
            record.set_connector(response.body().connector_id());
        }
        let (mut head, body) = response.into_parts();
        if let Some(page) = backend_error_page(app, &head, request_id) {
            return page;
        }
        let upgraded = head.headers.remove(UPGRADED_HEADER).is_some();
        clean_response_headers(&mut head.headers);
        if app.translate_headers
            && let Some(map) = map
        {
            postern_translate::translate_response_headers(map, &mut head.headers);
        }
        if let (true, Some(protocol), Some(on_upgrade), Some(tx)) = (upgraded, upgrade, on_upgrade, client_bytes) {
            return switch_protocols(head, body, &protocol, on_upgrade, tx, record);
        }
        let body = user_response_body(app, map, &mut head.headers, body);
        if let Some(v) = header_value(request_id) {
            head.headers.insert("x-request-id", v);
        }
        Response::from_parts(head, body)
    }

    /// Cleans the client's headers for the backend and adds the front door's:
    /// `X-Forwarded-*`, the tunnel's app, request ID and upgrade headers, and
    /// the user's identity headers when the app asks for them.
    async fn backend_request_headers(
        &self,
        app: &App,
        access: Option<&Access>,
        sent_as: &SentAs<'_>,
        headers: &mut HeaderMap,
    ) {
        clean_request_headers(headers);
        let forwarded_for = forwarded_for(headers, sent_as.client);
        for (name, value) in [
            ("x-forwarded-for", forwarded_for.as_str()),
            ("x-forwarded-proto", sent_as.client.proto),
            ("x-forwarded-host", sent_as.original_host),
            (APP_HEADER, app.id.as_str()),
            (REQUEST_ID_HEADER, sent_as.request_id),
            (BACKEND_REQUEST_ID_HEADER, sent_as.request_id),
        ] {
            if let Some(v) = header_value(value) {
                headers.insert(name, v);
            }
        }
        if let Some(protocol) = sent_as.upgrade.and_then(header_value) {
            headers.insert(UPGRADE_HEADER, protocol);
        }
        if let Some(access) = access {
            self.identity_headers(app, access, headers).await;
        }
    }

    /// Sends the request through a tunnel of the app's connector group, waiting
    /// for the response head at most the app's backend timeout (plus slack).
    async fn send_through_tunnel(
        &self,
        app: &App,
        outbound: Request<TunnelBody>,
    ) -> Result<http::Response<TunnelResponseBody>, TunnelFailure> {
        let deadline = Duration::from_secs(u64::try_from(app.backend_timeout_secs.max(1)).unwrap_or(85))
            + self.options.response_head_slack;
        // Just after a restart the group's connectors are re-attaching: wait
        // for them briefly rather than fail (only if it has any registered).
        if self
            .tunnels
            .awaiting_first_tunnel(&app.tenant_id, &app.connector_group_id)
            && self.group_has_connectors(app).await
        {
            self.tunnels
                .attached_soon(&app.tenant_id, &app.connector_group_id)
                .await;
        }
        match tokio::time::timeout(
            deadline,
            self.tunnels.send(&app.tenant_id, &app.connector_group_id, outbound),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(TunnelFailure::Send(e)),
            Err(_) => Err(TunnelFailure::TimedOut),
        }
    }
}

/// How the client reached the front door, for the headers the backend gets.
struct SentAs<'a> {
    client: &'a ClientInfo,
    /// The host the client asked for.
    original_host: &'a str,
    /// The protocol the client asks to upgrade to, if any.
    upgrade: Option<&'a str>,
    request_id: &'a str,
}

/// Why no response came back through the tunnel.
enum TunnelFailure {
    /// No connector, or the tunnel broke.
    Send(SendError),
    /// The response head did not come in time.
    TimedOut,
}

/// The host the client asked for: its `Host` header, else the URI's authority,
/// else the app's external host.
fn original_host(parts: &Parts, app: &App) -> String {
    parts
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| app.external_host.clone())
}

/// The `X-Forwarded-For` the backend gets (removed from `headers`): the chain a
/// trusted proxy sent with its address appended, else the peer's address alone.
fn forwarded_for(headers: &mut HeaderMap, client: &ClientInfo) -> String {
    match headers
        .remove("x-forwarded-for")
        .and_then(|v| v.to_str().ok().map(str::to_owned))
    {
        Some(chain) if client.peer_is_trusted_proxy => format!("{chain}, {}", client.peer_ip),
        _ => client.peer_ip.to_string(),
    }
}

/// The authority the backend is asked for: the internal one when the app
/// translates headers (whose request headers are translated here too), else the
/// host the client asked for. Asks for an uncompressed body when links are
/// translated.
fn backend_authority(app: &App, urls: Option<&AppUrls>, headers: &mut HeaderMap, original_host: &str) -> String {
    let authority = match (urls, app.translate_headers) {
        (Some(urls), true) => {
            postern_translate::translate_request_headers(&urls.map, headers);
            urls.internal_authority
                .clone()
                .unwrap_or_else(|| app.external_host.clone())
        }
        _ => original_host.to_owned(),
    };
    if app.translate_links {
        postern_translate::request_uncompressed(headers);
    }
    authority
}

/// The URI of the backend request, or `None` if it cannot be built.
fn backend_uri(authority: &str, path: &str, query: Option<&str>) -> Option<Uri> {
    let path_and_query = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query.as_str())
        .build()
        .ok()
}

/// The tunnel's request body. An upgrade's is the client's side of the
/// connection, fed through the returned sender once the upgrade is done; a plain
/// request's is the user's body, read only as fast as the tunnel takes it and
/// counted into the access record.
fn tunnel_request_body(
    upgrade: bool,
    body: CappedBody<Incoming>,
    record: Option<Arc<AccessRecord>>,
) -> (Option<tokio::sync::mpsc::Sender<Bytes>>, TunnelBody) {
    if upgrade {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, BoxError>(Frame::data(b)));
        (Some(tx), StreamBody::new(stream).boxed_unsync())
    } else {
        let body = body.map_frame(move |frame| {
            if let (Some(record), Some(data)) = (&record, frame.data_ref()) {
                record.add_bytes_in(data.len());
            }
            frame
        });
        (None, body.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
    }
}

/// The page the user gets when the tunnel gave no response.
fn tunnel_failure_page(app: &App, request_id: &str, failure: &TunnelFailure) -> Response {
    match failure {
        TunnelFailure::Send(SendError::NoConnector) => {
            tracing::warn!(app = %app.name, request = %request_id, "no connector online");
            pages::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Application unavailable",
                "No connector serving this application is online. Try again shortly; if it persists, tell the application's administrator.",
                request_id,
            )
        }
        TunnelFailure::Send(SendError::Failed(why)) => {
            tracing::warn!(app = %app.name, request = %request_id, error = %why, "tunnel failed");
            pages::error(
                StatusCode::BAD_GATEWAY,
                "Application unavailable",
                "The connection to the application's connector broke before it answered.",
                request_id,
            )
        }
        TunnelFailure::TimedOut => {
            tracing::warn!(app = %app.name, request = %request_id, "connector did not answer in time");
            pages::error(
                StatusCode::GATEWAY_TIMEOUT,
                "Application did not answer",
                "The application's connector did not answer in time.",
                request_id,
            )
        }
    }
}

/// The page the user gets when the connector reports that the backend failed
/// (its error header), or `None` for a backend's own response.
fn backend_error_page(app: &App, head: &http::response::Parts, request_id: &str) -> Option<Response> {
    let code = head.headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok())?;
    let cause = match BackendError::parse(code) {
        Some(BackendError::UnknownApp) => {
            "The connector does not know this application yet (its configuration is being updated). Try again shortly."
        }
        Some(BackendError::Unreachable) => "The application's server refused the connection or could not be found.",
        Some(BackendError::Tls) => "The application's server presented a TLS certificate the connector does not trust.",
        Some(BackendError::Timeout) => "The application's server did not answer in time.",
        Some(BackendError::Protocol) | None => "The application's server answered with something that is not HTTP.",
    };
    tracing::info!(app = %app.name, request = %request_id, code, "backend error");
    let status = if head.status.is_server_error() {
        head.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    let title = if status == StatusCode::GATEWAY_TIMEOUT {
        "Application did not answer"
    } else {
        "Application unavailable"
    };
    Some(pages::error(status, title, cause, request_id))
}

/// The body the user gets: the backend's, with links translated when the app
/// asks for it and the response is of a kind that is translated (whose headers
/// are adjusted for the changed body).
fn user_response_body(app: &App, map: Option<&UrlMap>, headers: &mut HeaderMap, body: TunnelResponseBody) -> Body {
    let translator = if app.translate_links {
        map.and_then(|m| BodyTranslator::for_response(m, headers))
    } else {
        None
    };
    match translator {
        Some(t) => {
            postern_translate::adjust_headers_for_translated_body(headers);
            Body::new(t.translate_body(body))
        }
        None => Body::new(body),
    }
}

/// Answers the client's upgrade with 101 and the backend's handshake headers, then
/// copies bytes both ways until either side ends; the access log line is
/// written then, with the bytes each way.
fn switch_protocols(
    head: http::response::Parts,
    body: postern_tunnel::TunnelResponseBody,
    protocol: &str,
    on_upgrade: hyper::upgrade::OnUpgrade,
    to_backend: tokio::sync::mpsc::Sender<Bytes>,
    record: Option<Arc<AccessRecord>>,
) -> Response {
    if let Some(record) = &record {
        record.defer();
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in &head.headers {
        if name.as_str().starts_with("sec-websocket-") {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(v) = header_value(protocol) {
        response.headers_mut().insert(UPGRADE, v);
    }
    if let Some(v) = record.as_ref().and_then(|r| header_value(r.request_id())) {
        response.headers_mut().insert(BACKEND_REQUEST_ID_HEADER, v);
    }
    tokio::spawn(async move {
        let request_id = record.as_ref().map_or("-", |r| r.request_id());
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(request = %request_id, error = %e, "client upgrade failed");
                if let Some(record) = &record {
                    record.log(101, 0, "error");
                }
                return;
            }
        };
        let (mut from_client, mut to_client) = tokio::io::split(TokioIo::new(upgraded));
        let up_record = record.clone();
        let up = async move {
            let mut buf = UpgradeReadBuffer::new();
            loop {
                match from_client.read(buf.space()).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf.space()[..n]);
                        buf.after_read(n);
                        if to_backend.send(chunk).await.is_err() {
                            break;
                        }
                        if let Some(record) = &up_record {
                            record.add_bytes_in(n);
                        }
                    }
                }
            }
            // Dropping the sender ends the stream's request body: the backend sees
            // the client's side close.
        };
        let down = async move {
            let mut body = body;
            let mut sent = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if to_client.write_all(&data).await.is_err() {
                        break;
                    }
                    sent = sent.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                }
            }
            let _ = to_client.shutdown().await;
            sent
        };
        let ((), bytes_out) = tokio::join!(up, down);
        tracing::debug!(request = %request_id, "upgraded connection closed");
        if let Some(record) = &record {
            record.log(101, bytes_out, "upgraded");
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn client_sent_postern_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(USER_HEADER, HeaderValue::from_static("admin@corp"));
        h.insert("X-Postern-App", HeaderValue::from_static("other-app"));
        h.insert("x-posternish", HeaderValue::from_static("kept"));
        strip_postern_headers(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-posternish"));
    }

    #[test]
    fn groups_are_encoded() {
        assert_eq!(encode_group("Domain Users"), "Domain Users");
        assert_eq!(encode_group("a,b"), "a%2Cb");
        assert_eq!(encode_group("Ünïcode"), "%C3%9Cn%C3%AFcode");
    }

    #[test]
    fn internal_authorities() {
        assert_eq!(
            internal_authority("http://wiki.corp:8080/app/").as_deref(),
            Some("wiki.corp:8080")
        );
        assert_eq!(internal_authority("https://wiki.corp/").as_deref(), Some("wiki.corp"));
        assert_eq!(internal_authority("http://[::1]:81/").as_deref(), Some("[::1]:81"));
    }
}

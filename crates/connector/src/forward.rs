//! One tunnel stream, forwarded to its app's backend: the request's head rebuilt
//! for HTTP/1.1, both bodies streamed frame by frame, failures answered with the
//! tunnel's error codes, upgrades turned into a byte copy.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, UPGRADE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
pub(crate) use postern_proto::headers::{is_hop_by_hop, strip_hop_by_hop};
use postern_proto::tunnel::{
    APP_HEADER, BackendError, ERROR_HEADER, REQUEST_ID_HEADER, UPGRADE_HEADER, UPGRADED_HEADER,
};
use postern_proto::upgrade::UpgradeReadBuffer;
use postern_tunnel::streams::RecvBody;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::apps::{App, AppTable};
use crate::backend::{BackendBody, BackendFailure, Backends};
use crate::error::chain;

/// An error inside a response body (the stream is then reset).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of a response on the tunnel.
pub(crate) type TunnelBody = UnsyncBoxBody<Bytes, BoxError>;

/// The backend's bytes of an upgraded connection as a stream of chunks, each
/// copied out of an [`UpgradeReadBuffer`]; ends at the backend's end of file or
/// after the first error.
fn upgraded_chunks<R>(read: R) -> impl futures_util::Stream<Item = std::io::Result<Bytes>>
where
    R: AsyncRead + Unpin,
{
    futures_util::stream::unfold(Some((read, UpgradeReadBuffer::new())), |state| async move {
        let (mut read, mut buf) = state?;
        match read.read(buf.space()).await {
            Ok(0) => None,
            Ok(n) => {
                let chunk = Bytes::copy_from_slice(&buf.space()[..n]);
                buf.after_read(n);
                Some((Ok(chunk), Some((read, buf))))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// Aborts a task when dropped, unless disarmed.
pub(crate) struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    pub(crate) fn new(handle: tokio::task::AbortHandle) -> Self {
        Self(Some(handle))
    }

    /// Lets the task run on.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

fn full(text: &'static str) -> TunnelBody {
    Full::new(Bytes::from_static(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn plain(status: StatusCode, text: &'static str) -> Response<TunnelBody> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The answer when no response came from the backend.
fn backend_error(e: BackendError) -> Response<TunnelBody> {
    let text = match e {
        BackendError::UnknownApp => "This connector does not serve that application.\n",
        BackendError::Unreachable => "The application's server could not be reached.\n",
        BackendError::Tls => "The application's server presented a certificate that is not valid.\n",
        BackendError::Timeout => "The application's server did not answer in time.\n",
        BackendError::Protocol => "The application's server sent an invalid response.\n",
    };
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = plain(status, text);
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(e.as_str()));
    response
}

/// Whether a tunnel `:path` stays inside the app's internal base path once the
/// backend resolves it (SEC-13, defence in depth: the front door sends only
/// normalized paths, but a tunnel could carry anything). Refused: any `.` or
/// `..` segment, spelled with `%2e` or not, between `/`, `\`, `%2f` or `%5c`,
/// or before a `;` parameter. The query is not looked at.
fn stays_under_base(path_and_query: &str) -> bool {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    // A dot segment needs a `.`, spelled as it is or `%2e`: a path with
    // neither (most paths) has none, and needs no copies to tell.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return true;
    }
    let lower = path.to_ascii_lowercase().replace("%2e", ".");
    let unified = lower.replace("%2f", "/").replace("%5c", "/").replace('\\', "/");
    !unified.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or(segment);
        name == "." || name == ".."
    })
}

/// What identifies a stream in logs.
struct Ids {
    app: String,
    request: String,
}

/// Forwards one tunnel stream and returns the response to send on it. Each
/// stream is logged at INFO once its answer's head is ready: app, request ID
/// (the front door's, so the service's access log line and this one can be
/// matched), method, path (without the query), status, the tunnel error code
/// if the backend gave no answer, and the time to the head.
pub(crate) async fn handle(req: Request<RecvBody>, apps: Arc<AppTable>, backends: Backends) -> Response<TunnelBody> {
    let started = Instant::now();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ids = Ids {
        app: header(APP_HEADER),
        request: header(REQUEST_ID_HEADER),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = forward_stream(req, apps, backends, &ids).await;
    let error = response
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        app = %ids.app,
        request_id = %ids.request,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        error,
        head_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request forwarded"
    );
    postern_metrics::record::connector_request(&ids.app, response.status().as_u16(), started.elapsed());
    response
}

/// Sends one tunnel stream to its app's backend.
async fn forward_stream(
    req: Request<RecvBody>,
    apps: Arc<AppTable>,
    backends: Backends,
    ids: &Ids,
) -> Response<TunnelBody> {
    let Some(app) = apps.get(&ids.app).cloned() else {
        tracing::info!(app = %ids.app, request_id = %ids.request, "request for an app this connector does not serve");
        return backend_error(BackendError::UnknownApp);
    };
    drop(apps);
    let deadline = Instant::now() + app.timeout();
    let (parts, body) = req.into_parts();
    let head = match backend_head(&app, &parts) {
        Ok(head) => head,
        Err(refused) => {
            tracing::warn!(app = %ids.app, request_id = %ids.request, why = refused.log(), "tunnel request refused");
            return plain(StatusCode::BAD_REQUEST, refused.message());
        }
    };
    match parts.headers.get(UPGRADE_HEADER).cloned() {
        // Boxed: upgrades are rare, and their state would otherwise make every
        // stream's future (moved into its task) larger.
        Some(protocol) => Box::pin(forward_upgrade(&app, &backends, head, protocol, body, deadline, ids)).await,
        None => {
            let body = body.map_err(BoxError::from).boxed_unsync();
            forward_plain(&app, &backends, head, body, deadline, ids).await
        }
    }
}

/// Why a tunnel stream's head cannot be sent to the backend (a 400 on the stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadRefused {
    /// A `.` or `..` segment would leave the internal base path.
    LeavesBase,
    /// The `:path` is not origin form.
    NotOriginForm,
    /// The `:authority` is no header value.
    BadAuthority,
}

impl HeadRefused {
    /// For the log line.
    fn log(self) -> &'static str {
        match self {
            HeadRefused::LeavesBase => "path leaving the app's base",
            HeadRefused::NotOriginForm => "path not in origin form",
            HeadRefused::BadAuthority => "invalid authority",
        }
    }

    /// The body of the 400 answer.
    fn message(self) -> &'static str {
        match self {
            HeadRefused::LeavesBase => "The tunnel request's path leaves the application's base path.\n",
            HeadRefused::NotOriginForm => "The tunnel request's path is not valid.\n",
            HeadRefused::BadAuthority => "The tunnel request's authority is not valid.\n",
        }
    }
}

/// The backend request's head for a tunnel stream's head: the path under the
/// app's internal base (refused if it could leave it), `Host` from the stream's
/// authority or the internal host, end-to-end headers only.
pub(crate) fn backend_head(app: &App, parts: &http::request::Parts) -> Result<Head, HeadRefused> {
    let root = PathAndQuery::from_static("/");
    let path = parts.uri.path_and_query().unwrap_or(&root);
    if !stays_under_base(path.as_str()) {
        return Err(HeadRefused::LeavesBase);
    }
    let uri = app.backend_target(path).ok_or(HeadRefused::NotOriginForm)?;
    let host = parts.uri.authority().map_or(app.default_host(), |a| a.as_str());
    let host = HeaderValue::from_str(host).map_err(|_| HeadRefused::BadAuthority)?;
    let mut headers = backend_headers(&parts.headers);
    headers.insert(HOST, host);
    Ok(Head {
        method: parts.method.clone(),
        uri,
        headers,
    })
}

/// The backend request's head.
#[derive(Debug)]
pub(crate) struct Head {
    /// The method, as the stream had it.
    pub(crate) method: http::Method,
    /// The request target, in origin form (path and query).
    pub(crate) uri: Uri,
    /// What the backend gets.
    pub(crate) headers: HeaderMap,
}

impl Head {
    fn into_request(self, body: BackendBody) -> Request<BackendBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
    }
}

/// The stream's headers as the backend gets them: end-to-end headers only, the
/// tunnel's control headers removed (the request ID stays, for correlation), and
/// HTTP/2's split `cookie` headers joined into one as HTTP/1.1 requires.
fn backend_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(from.len() + 3);
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in from {
        if is_hop_by_hop(name) || name == HOST || name.as_str() == APP_HEADER || name.as_str() == UPGRADE_HEADER {
            continue;
        }
        if name == COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    if !cookies.is_empty()
        && let Ok(joined) = HeaderValue::from_bytes(&cookies.join(&b"; "[..]))
    {
        headers.insert(COOKIE, joined);
    }
    headers
}

/// Waits for `exchange` (a request sent, its response head awaited) until
/// `deadline`; a failure is logged and becomes its code.
async fn answer<T>(
    app: &App,
    exchange: impl Future<Output = Result<T, BackendFailure>>,
    deadline: Instant,
    ids: &Ids,
) -> Result<T, BackendError> {
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(failure)) => {
            tracing::warn!(app = %ids.app, request_id = %ids.request, error = %failure.detail, code = failure.code.as_str(), "backend gave no response");
            Err(failure.code)
        }
        Err(_) => {
            tracing::warn!(app = %ids.app, request_id = %ids.request, timeout = ?app.timeout(), "backend did not answer in time");
            Err(BackendError::Timeout)
        }
    }
}

async fn forward_plain(
    app: &App,
    backends: &Backends,
    head: Head,
    body: BackendBody,
    deadline: Instant,
    ids: &Ids,
) -> Response<TunnelBody> {
    let exchange = backends.send(app.origin(), head.into_request(body));
    match answer(app, exchange, deadline, ids).await {
        Ok(response) => relay(response, ids),
        Err(e) => backend_error(e),
    }
}

/// The backend's response on the stream, its body passed on frame by frame as it
/// comes (so server-sent events arrive one by one). A body that breaks off
/// becomes an error, which resets the stream.
fn relay<B>(response: Response<B>, ids: &Ids) -> Response<TunnelBody>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
{
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_2;
    tracing::debug!(app = %ids.app, request_id = %ids.request, status = parts.status.as_u16(), "backend answered");
    let (app, request) = (ids.app.clone(), ids.request.clone());
    let body = body
        .map_err(move |e| {
            tracing::warn!(%app, request_id = %request, error = %chain(&e), "backend response body broke off; resetting the stream");
            BoxError::from(e)
        })
        .boxed_unsync();
    Response::from_parts(parts, body)
}

/// An upgrade (WebSocket): an HTTP/1.1 upgrade request to the backend; on `101`
/// the answer is `200` with [`UPGRADED_HEADER`] and the backend's headers, the
/// stream's request body is copied to the backend and the backend's bytes become
/// the response body, until either side ends. Any other answer passes through.
async fn forward_upgrade(
    app: &App,
    backends: &Backends,
    mut head: Head,
    protocol: HeaderValue,
    body: RecvBody,
    deadline: Instant,
    ids: &Ids,
) -> Response<TunnelBody> {
    head.headers.remove(CONTENT_LENGTH);
    head.headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    head.headers.insert(UPGRADE, protocol);
    let empty = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
    let exchange = backends.send_upgrade(app.origin(), head.into_request(empty));
    // The connection's sending half is kept until the upgrade is done.
    let (mut response, _connection) = match answer(app, exchange, deadline, ids).await {
        Ok(r) => r,
        Err(e) => return backend_error(e),
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return relay(response, ids);
    }
    let upgraded = match tokio::time::timeout_at(deadline, hyper::upgrade::on(&mut response)).await {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            tracing::warn!(app = %ids.app, request_id = %ids.request, error = %chain(&e), "backend upgrade failed");
            return backend_error(BackendError::Protocol);
        }
        Err(_) => return backend_error(BackendError::Timeout),
    };
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    headers.insert(UPGRADED_HEADER, HeaderValue::from_static("101"));
    tracing::debug!(app = %ids.app, request_id = %ids.request, "backend switched protocols");

    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    let upload = tokio::spawn(copy_to_backend(body, write));
    // When the backend's side ends or the stream goes away, stop the upload too.
    let upload = AbortOnDrop::new(upload.abort_handle());
    let download = upgraded_chunks(read).map(move |chunk| {
        let _upload = &upload;
        chunk.map(Frame::data).map_err(BoxError::from)
    });
    let mut answer = Response::new(StreamBody::new(download).boxed_unsync());
    *answer.headers_mut() = headers;
    answer
}

/// Copies the stream's request body to the upgraded backend connection; the
/// backend's pace holds the stream back through flow control. Ends the backend's
/// write side when the stream's body ends or is reset.
async fn copy_to_backend(mut body: RecvBody, mut to: impl AsyncWrite + Unpin) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data()
            && to.write_all(&data).await.is_err()
        {
            return;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use postern_proto::upgrade::{UPGRADE_CHUNK, UPGRADE_QUIET_READ};

    #[test]
    fn backend_headers_drop_hop_by_hop_and_control_and_join_cookies() {
        let mut from = HeaderMap::new();
        from.insert("x-postern-app", HeaderValue::from_static("wiki"));
        from.insert("x-postern-upgrade", HeaderValue::from_static("websocket"));
        from.insert("x-postern-request-id", HeaderValue::from_static("r1"));
        from.insert("te", HeaderValue::from_static("trailers"));
        from.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        from.insert("host", HeaderValue::from_static("evil"));
        from.insert("accept", HeaderValue::from_static("text/html"));
        from.append("cookie", HeaderValue::from_static("a=1"));
        from.append("cookie", HeaderValue::from_static("b=2"));
        let to = backend_headers(&from);
        let names: Vec<&str> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(to["x-postern-request-id"], "r1");
        assert_eq!(to["accept"], "text/html");
        assert_eq!(to.get_all("cookie").iter().count(), 1);
        assert_eq!(to["cookie"], "a=1; b=2");
    }

    #[test]
    fn response_headers_lose_connection_specific_ones() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("text/event-stream"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn paths_with_dot_segments_never_reach_the_backend() {
        for ok in [
            "/",
            "/a/b?x=../../y",
            "/a%20b/c%2Fd",
            "/...",
            "/.well-known/x",
            "/a..b/x..",
            "/file%2etxt",
        ] {
            assert!(stays_under_base(ok), "{ok:?}");
        }
        for bad in [
            "/..",
            "/../../etc/passwd",
            "/a/./b",
            "/%2e%2e/x",
            "/%2E%2E/x",
            "/.%2e/x",
            "/%2E./x",
            "/..%2f..%2fetc",
            "/..%2F",
            "/..%5cx",
            "/..\\x",
            "/..;/x",
            "/%2e;a/x",
        ] {
            assert!(!stays_under_base(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn upgraded_bytes_arrive_whole_and_the_quiet_buffer_is_small() {
        let (mut backend, connector_side) = tokio::io::duplex(64 * 1024);
        let mut chunks = Box::pin(upgraded_chunks(connector_side));
        // A burst larger than the quiet buffer, then a small message, then the end.
        let burst: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        backend.write_all(&burst).await.unwrap();
        let mut got = Vec::new();
        let mut largest = 0;
        while got.len() < burst.len() {
            let chunk = chunks.next().await.unwrap().unwrap();
            largest = largest.max(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, burst);
        assert!(largest > UPGRADE_QUIET_READ, "the buffer grew with the burst");
        assert!(largest <= UPGRADE_CHUNK);
        backend.write_all(b"ping").await.unwrap();
        assert_eq!(&chunks.next().await.unwrap().unwrap()[..], b"ping");
        drop(backend);
        assert!(chunks.next().await.is_none());
    }

    #[test]
    fn error_answers_carry_the_code() {
        let r = backend_error(BackendError::Timeout);
        assert_eq!(r.status(), 504);
        assert_eq!(r.headers()[ERROR_HEADER], "backend_timeout");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(backend_error(BackendError::Tls).status(), 502);
    }

    #[test]
    fn tunnel_heads_map_under_the_base_or_are_refused() {
        let app_ref = postern_proto::control::AppRef {
            id: "wiki".into(),
            internal_url: "http://wiki.corp.local:8080/app/".into(),
            validate_backend_tls: true,
            backend_timeout_secs: 0,
        };
        let app = App::parse(&app_ref, std::time::Duration::from_secs(1)).unwrap();
        let parts = |uri: &str| {
            let request = Request::builder().uri(uri).header("cookie", "a=1").body(()).unwrap();
            request.into_parts().0
        };
        let head = backend_head(&app, &parts("/x?y=1")).unwrap();
        assert_eq!(head.uri.to_string(), "/app/x?y=1");
        assert_eq!(head.headers[HOST], "wiki.corp.local:8080");
        assert_eq!(head.headers[COOKIE], "a=1");
        let head = backend_head(&app, &parts("https://wiki.acme.test/x")).unwrap();
        assert_eq!(head.headers[HOST], "wiki.acme.test");
        assert_eq!(
            backend_head(&app, &parts("/a/../../etc")).unwrap_err(),
            HeadRefused::LeavesBase
        );
        assert_eq!(backend_head(&app, &parts("*")).unwrap_err(), HeadRefused::NotOriginForm);
    }
}

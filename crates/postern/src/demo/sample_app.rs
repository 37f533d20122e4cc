//! The demo's internal app: a small HTTP server on a loopback port that only
//! the connector talks to. `/` shows the request headers it received and the
//! identity the front door vouched for (the assertion verified against the
//! organisation's JWKS); `/events` shows server-sent events from
//! `/events/stream`; `/ws` echoes through a WebSocket at `/ws/echo`. Plain
//! HTML with a few lines of inline script, nothing fetched from elsewhere.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, Stream, StreamExt};
use hyper_util::rt::TokioIo;
use postern_time::SharedClock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::assertion::{Identity, Verifier};

/// The header carrying the front door's signed statement of the user.
const ASSERTION_HEADER: &str = "x-postern-assertion";
/// Characters of a header value shown before it is cut (the assertion is a
/// bearer token: the page shows its start only).
const SHOWN_CHARS: usize = 80;
/// Interval of the server-sent events.
const TICK: Duration = Duration::from_secs(1);

/// One sample app: its name, whether it sits behind a sign-in, and how it
/// checks assertions.
pub(crate) struct SampleApp {
    /// Shown in the title.
    pub(crate) name: &'static str,
    /// Whether the front door signs users in before they get here.
    pub(crate) preauth: bool,
    /// Checks `X-Postern-Assertion`.
    pub(crate) verifier: Verifier,
    /// Time for the events.
    pub(crate) clock: SharedClock,
}

/// Serves `app` on `listener` until the task is aborted.
pub(crate) fn serve(listener: TcpListener, app: SampleApp) -> JoinHandle<()> {
    let router = Router::new()
        .route("/", get(home))
        .route("/events", get(events_page))
        .route("/events/stream", get(event_stream))
        .route("/ws", get(websocket_page))
        .route("/ws/echo", get(websocket_echo))
        .with_state(Arc::new(app));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the demo's sample app stopped");
        }
    })
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page around `body`; `title` is HTML already.
fn page(app: &SampleApp, title: &str, body: &str) -> Html<String> {
    let signout = if app.preauth {
        r#" · <a href="/.postern/signout">Sign out</a>"#
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;\
         vertical-align:top;font-family:monospace;word-break:break-all}}.ok{{color:#060}}.bad{{color:#a00}}\
         </style></head><body><p><a href=\"/\">Home</a> · <a href=\"/events\">Server-sent events</a> · \
         <a href=\"/ws\">WebSocket echo</a>{signout}</p><h1>{title}</h1>{body}</body></html>",
    ))
}

/// `/`: who the user is, and every request header.
async fn home(State(app): State<Arc<SampleApp>>, headers: HeaderMap) -> Html<String> {
    let mut body = format!(
        "<p>This is the internal app <b>{}</b>, reached through Postern: the connector carried this \
         request from the front door to a loopback port nothing outside can reach.</p><h2>Who you are</h2>",
        escape(app.name)
    );
    body.push_str(&identity_section(&app, &headers).await);
    body.push_str("<h2>Request headers the app received</h2><table>");
    let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        for value in headers.get_all(name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let shown = match text.char_indices().nth(SHOWN_CHARS) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text.into_owned(),
            };
            let _ = write!(body, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&shown));
        }
    }
    body.push_str("</table>");
    page(&app, &format!("Postern demo app: {}", escape(app.name)), &body)
}

/// The identity part of `/`: the verified assertion, why it was refused, or
/// that there is none.
async fn identity_section(app: &SampleApp, headers: &HeaderMap) -> String {
    let Some(token) = headers.get(ASSERTION_HEADER).and_then(|v| v.to_str().ok()) else {
        return if app.preauth {
            "<p id=\"identity\" class=\"bad\">No X-Postern-Assertion came with this request.</p>".into()
        } else {
            "<p id=\"identity\">Nobody in particular: this app is published without pre-authentication \
             (passthrough), so anyone who reaches it gets here without signing in, and the front door \
             vouches for no one.</p>"
                .into()
        };
    };
    match app.verifier.verify(token).await {
        Ok(identity) => verified(app, &identity),
        Err(why) => format!(
            "<p id=\"identity\" class=\"bad\">X-Postern-Assertion refused: {}</p>",
            escape(&why)
        ),
    }
}

fn verified(app: &SampleApp, identity: &Identity) -> String {
    let expected = app.verifier.expected();
    let rows = [
        ("user", identity.preferred_username.clone()),
        ("email", identity.email.clone().unwrap_or_default()),
        ("groups", identity.groups.join(", ")),
        ("user ID (sub)", identity.sub.clone()),
        ("issued at / expires", format!("{} / {}", identity.iat, identity.exp)),
    ];
    let mut out = format!(
        "<p id=\"identity\" class=\"ok\">Assertion verified: you are <b>{}</b>.</p><table>",
        escape(&identity.preferred_username)
    );
    for (name, value) in rows {
        let _ = write!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    let _ = write!(
        out,
        "</table><p>Checked as <code>docs/security.md</code> asks of a backend: signature with a key of \
         <code>{}</code>, alg RS256, typ <code>postern-assertion+jwt</code>, iss <code>{}</code>, \
         aud <code>{}</code>, exp and iat, tid.</p>",
        escape(&app.verifier.jwks_url()),
        escape(&expected.issuer),
        escape(&expected.audience),
    );
    out
}

/// `/events`: a page that listens to `/events/stream`.
async fn events_page(State(app): State<Arc<SampleApp>>) -> Html<String> {
    page(
        &app,
        "Server-sent events",
        "<p>One event a second from <code>/events/stream</code>, streamed through the tunnel as it is \
         made:</p><ol id=\"events\"></ol><script>const list=document.getElementById('events');\
         const source=new EventSource('/events/stream');source.addEventListener('tick',e=>{\
         const item=document.createElement('li');item.textContent=e.data;list.prepend(item);});\
         </script>",
    )
}

/// `/events/stream`: a `tick` event every second, forever.
async fn event_stream(State(app): State<Arc<SampleApp>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let clock = app.clock.clone();
    let ticks = futures_util::stream::unfold(0u64, move |n| {
        let clock = clock.clone();
        async move {
            if n > 0 {
                tokio::time::sleep(TICK).await;
            }
            let data = format!("tick {n} at {} (Unix time)", clock.now().secs());
            Some((Ok(Event::default().event("tick").data(data)), n + 1))
        }
    });
    Sse::new(ticks).keep_alive(KeepAlive::default())
}

/// `/ws`: a page that talks to `/ws/echo`.
async fn websocket_page(State(app): State<Arc<SampleApp>>) -> Html<String> {
    page(
        &app,
        "WebSocket echo",
        "<p>What you send comes back from the app, through the tunnel.</p><form id=\"f\">\
         <input id=\"m\" value=\"hello\"> <button>Send</button></form><ol id=\"log\"></ol><script>\
         const log=document.getElementById('log');const say=t=>{const i=document.createElement('li');\
         i.textContent=t;log.prepend(i);};const ws=new WebSocket((location.protocol==='https:'?'wss://':'ws://')\
         +location.host+'/ws/echo');ws.onopen=()=>say('connected');ws.onclose=()=>say('closed');\
         ws.onmessage=e=>say('echo: '+e.data);document.getElementById('f').onsubmit=e=>{e.preventDefault();\
         ws.send(document.getElementById('m').value);};</script>",
    )
}

/// `/ws/echo`: a WebSocket that sends back every text and binary message.
async fn websocket_echo(mut request: Request<Body>) -> Response {
    let headers = request.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| upgrade) else {
        return (StatusCode::BAD_REQUEST, "a WebSocket upgrade is expected here\n").into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => echo(WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut socket: WebSocketStream<S>) {
    while let Some(Ok(message)) = socket.next().await {
        if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}

//! One tunnel stream in its own task: the request handed to [`forward`], the
//! answer's head sent, its body copied into the stream under the service's
//! flow control.

use std::future::poll_fn;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response};
use hyper::body::Body;
use postern_tunnel::streams::{RecvBody, send_body};

use crate::apps::AppTable;
use crate::backend::Backends;
use crate::forward;

/// Answers one stream: forwards the request with the app table of when the
/// stream came, then sends the answer. A reset from the service before the
/// answer's head drops the backend exchange with it (its user went away); one
/// during the body ends the copy and drops the backend's body.
pub(super) async fn serve(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    table: Arc<AppTable>,
    backends: Backends,
) {
    let (parts, recv) = request.into_parts();
    let body = RecvBody::new(recv, &parts.headers);
    // The answer is worked out in a future of its own allocation, freed once
    // the head is out: a long response or an open WebSocket then holds only
    // its body in this task, not the request head and the backend exchange.
    let answer = Box::pin(forward::handle(Request::from_parts(parts, body), table, backends));
    let response = tokio::select! {
        response = answer => response,
        reason = poll_fn(|cx| respond.poll_reset(cx)) => {
            tracing::debug!(reason = ?reason.ok(), "the service reset the stream before its answer");
            return;
        }
    };
    let (head, body) = head_and_body(response);
    let end = body.is_end_stream();
    match respond.send_response(head, end) {
        Ok(stream) if !end => {
            send_body(body, stream, std::future::pending()).await;
        }
        Ok(_) => {}
        Err(e) => {
            // A stream the service reset just now (its user went away), or a
            // head h2 finds malformed (the answers are built without
            // connection-specific headers, so none is expected).
            tracing::debug!(error = %e, "the answer's head could not be sent; resetting the stream");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

/// The answer's head for `h2`, with `Content-Length` from the body when it
/// knows its length and the head has none (as hyper's server did), and the
/// body.
fn head_and_body<B: Body>(response: Response<B>) -> (Response<()>, B) {
    let (mut parts, body) = response.into_parts();
    if let Some(len) = body.size_hint().exact()
        && !parts.headers.contains_key(CONTENT_LENGTH)
    {
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    (Response::from_parts(parts, ()), body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::{Empty, Full, StreamBody};

    #[test]
    fn a_known_length_is_sent_unless_the_head_has_one() {
        let (head, _) = head_and_body(Response::new(Full::new(Bytes::from_static(b"hello"))));
        assert_eq!(head.headers()[CONTENT_LENGTH], "5");
        let (head, _) = head_and_body(Response::new(Empty::<Bytes>::new()));
        assert_eq!(head.headers()[CONTENT_LENGTH], "0");
        // A HEAD answer keeps the length the backend said, not its empty body's.
        let mut response = Response::new(Empty::<Bytes>::new());
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        let (head, _) = head_and_body(response);
        assert_eq!(head.headers()[CONTENT_LENGTH], "1024");
        let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::new()))]);
        let (head, _) = head_and_body(Response::new(StreamBody::new(chunks)));
        assert!(!head.headers().contains_key(CONTENT_LENGTH));
    }
}

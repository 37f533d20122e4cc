//! Bodies on HTTP/2 streams, for both ends of a tunnel: what arrives on a
//! stream read as an HTTP body ([`RecvBody`]), and an HTTP body copied into a
//! stream under the peer's flow control ([`send_body`]). The service sends
//! requests and reads responses this way (`client`), the connector reads
//! requests and sends responses.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use hyper::body::{Body, Frame, SizeHint};

/// A body read from an HTTP/2 stream; what is read is handed back to the
/// stream's window at once, so the peer may send more.
#[derive(Debug)]
pub struct RecvBody {
    recv: h2::RecvStream,
    /// What `Content-Length` said is left, when it said.
    content_length: Option<u64>,
    data_done: bool,
}

impl RecvBody {
    /// The body of a stream whose head had `headers` (`Content-Length`, when
    /// it has exactly one valid one, becomes the size hint; h2 has checked the
    /// data against it).
    pub fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        Self {
            recv,
            content_length: content_length(headers),
            data_done: false,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.content_length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM with NO_ERROR: the peer answered early (RFC 9113,
                // 8.1) and needs no more; the body ends, it has not failed.
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.content_length.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// `Content-Length`, when `headers` have exactly one valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// Copies `body` into `stream` until it ends, the peer resets the stream, or
/// `stop` resolves. At most one frame of the body is read ahead of the
/// peer's window: the copy waits for room in the window before it reads more,
/// so what is buffered stays bounded whatever the body's size. A body that
/// fails resets the stream with `INTERNAL_ERROR`, never ends it as if
/// complete; `stop` resets it with `CANCEL`.
pub async fn send_body<B>(body: B, mut stream: h2::SendStream<Bytes>, stop: impl Future<Output = ()>)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut stop = std::pin::pin!(stop);
    loop {
        stream.reserve_capacity(1);
        while stream.capacity() == 0 {
            let room = tokio::select! {
                room = poll_fn(|cx| stream.poll_capacity(cx)) => room,
                () = &mut stop => {
                    stream.send_reset(h2::Reason::CANCEL);
                    return;
                }
            };
            match room {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "tunnel stream closed while its body was sent");
                    return;
                }
                None => return,
            }
        }
        let frame = tokio::select! {
            frame = poll_fn(|cx| body.as_mut().poll_frame(cx)) => frame,
            reason = poll_fn(|cx| stream.poll_reset(cx)) => {
                tracing::debug!(reason = ?reason.ok(), "the peer reset the tunnel stream");
                return;
            }
            () = &mut stop => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        let sent = match frame {
            None => stream.send_data(Bytes::new(), true),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    let sent = stream.send_data(data, end);
                    if !end && sent.is_ok() {
                        continue;
                    }
                    sent
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => stream.send_trailers(trailers),
                    Err(_) => continue,
                },
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "body failed; resetting its tunnel stream");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "tunnel stream closed while its body was sent");
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_length_is_read_only_when_unambiguous() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert_eq!(content_length(&headers), Some(1024));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&headers), None);
    }
}

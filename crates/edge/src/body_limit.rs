//! The request body limit of an app (SEC-9): off unless the app or the
//! installation sets one. A `Content-Length` above the limit is answered 413
//! before anything is forwarded; a body without one (chunked, HTTP/2) is
//! counted as it streams and cut where it passes the limit: 413 if the
//! backend's answer has not begun, else the stream is reset. Nothing is
//! buffered.

use std::error::Error;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use postern_store::App;

use crate::pages;

/// The limit of one request's body, and whether it tripped.
#[derive(Clone, Debug)]
pub(crate) struct BodyCap {
    limit: u64,
    tripped: Arc<AtomicBool>,
}

impl BodyCap {
    /// The app's limit: its own (0 meaning none), else the installation's
    /// default for apps; `None` when there is none.
    pub(crate) fn for_app(app: &App, default: Option<u64>) -> Option<Self> {
        let limit = match app.limits.max_body_bytes {
            Some(own) => u64::try_from(own).ok().filter(|n| *n > 0),
            None => default.filter(|n| *n > 0),
        }?;
        Some(Self {
            limit,
            tripped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// 413 at once when the declared `Content-Length` is above the limit.
    pub(crate) fn refuse_declared(&self, headers: &HeaderMap, request_id: &str) -> Option<Response> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())?;
        (declared > self.limit).then(|| self.too_large(request_id))
    }

    /// Whether a body went past the limit.
    pub(crate) fn tripped(&self) -> bool {
        self.tripped.load(Ordering::Relaxed)
    }

    /// The 413 page.
    pub(crate) fn too_large(&self, request_id: &str) -> Response {
        tracing::info!(request = %request_id, limit = self.limit, "request body over the app's limit");
        pages::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Upload too large",
            &format!(
                "This application accepts request bodies of at most {} bytes.",
                self.limit
            ),
            request_id,
        )
    }
}

/// A request body counted as it streams; an error once it passes the limit.
pub(crate) struct CappedBody<B> {
    inner: B,
    left: u64,
    tripped: Option<Arc<AtomicBool>>,
}

impl<B> CappedBody<B> {
    /// `inner` under `cap` (unlimited without one).
    pub(crate) fn new(inner: B, cap: Option<&BodyCap>) -> Self {
        Self {
            inner,
            left: cap.map_or(u64::MAX, |c| c.limit),
            tripped: cap.map(|c| c.tripped.clone()),
        }
    }
}

/// Why a capped body ended early.
#[derive(Debug)]
pub(crate) enum CappedBodyError<E> {
    /// The client's body failed.
    Inner(E),
    /// It went past the limit.
    TooLarge,
}

impl<E: fmt::Display> fmt::Display for CappedBodyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CappedBodyError::Inner(e) => e.fmt(f),
            CappedBodyError::TooLarge => f.write_str("request body over the app's limit"),
        }
    }
}

impl<E: Error + 'static> Error for CappedBodyError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            CappedBodyError::Inner(e) => Some(e),
            CappedBodyError::TooLarge => None,
        }
    }
}

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = CappedBodyError<B::Error>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(CappedBodyError::Inner(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            match self.left.checked_sub(len) {
                Some(left) => self.left = left,
                None => {
                    if let Some(tripped) = &self.tripped {
                        tripped.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Some(Err(CappedBodyError::TooLarge)));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn cap(limit: u64) -> BodyCap {
        BodyCap {
            limit,
            tripped: Arc::new(AtomicBool::new(false)),
        }
    }

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;

    fn chunks(sizes: &[usize]) -> StreamBody<Frames> {
        let frames: Vec<_> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_streamed_body_is_cut_where_it_passes_the_limit() {
        let c = cap(10);
        let whole = CappedBody::new(chunks(&[4, 6]), Some(&c)).collect().await;
        assert_eq!(whole.unwrap().to_bytes().len(), 10, "exactly the limit passes");
        assert!(!c.tripped());
        let cut = CappedBody::new(chunks(&[4, 6, 1]), Some(&c)).collect().await;
        assert!(matches!(cut, Err(CappedBodyError::TooLarge)));
        assert!(c.tripped());
        let free = CappedBody::new(chunks(&[1 << 20]), None).collect().await;
        assert!(free.is_ok(), "no cap, no limit");
    }

    #[test]
    fn a_declared_length_above_the_limit_is_refused_at_once() {
        let c = cap(100);
        let mut headers = HeaderMap::new();
        assert!(
            c.refuse_declared(&headers, "r").is_none(),
            "no length: counted as it streams"
        );
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("100"));
        assert!(c.refuse_declared(&headers, "r").is_none());
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("101"));
        let refused = c.refuse_declared(&headers, "r").unwrap();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}

//! Choosing whether to translate a response body, and translating it chunk by chunk.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::Stream;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame};

use crate::css::CssRewriter;
use crate::html::HtmlTranslator;
use crate::{TranslateError, UrlMap};

/// The kinds of body whose links are translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `text/html` or `application/xhtml+xml`.
    Html,
    /// `text/css`.
    Css,
}

/// Which kind of body translation applies to a response, from its headers:
/// `text/html`, `application/xhtml+xml` or `text/css`, with no `Content-Encoding`
/// other than `identity`, no `Content-Range`, and a character encoding (if
/// declared) that is known and ASCII-compatible. None: pass the body through.
pub fn translatable_body(headers: &HeaderMap) -> Option<BodyKind> {
    // Only bodies as the backend wrote them: no content coding, no byte range.
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().ok()?;
        if !value
            .split(',')
            .map(str::trim)
            .all(|c| c.is_empty() || c.eq_ignore_ascii_case("identity"))
        {
            return None;
        }
    }
    if headers.contains_key(header::CONTENT_RANGE) {
        return None;
    }
    let mut content_type = headers.get_all(header::CONTENT_TYPE).iter();
    let value = content_type.next()?.to_str().ok()?;
    if content_type.next().is_some() {
        return None;
    }
    let mut parts = value.split(';');
    let essence = parts.next()?.trim();
    let kind = if essence.eq_ignore_ascii_case("text/html") || essence.eq_ignore_ascii_case("application/xhtml+xml") {
        BodyKind::Html
    } else if essence.eq_ignore_ascii_case("text/css") {
        BodyKind::Css
    } else {
        return None;
    };
    for (name, label) in parts.filter_map(|p| p.split_once('=')) {
        // The scanners read ASCII markup in the raw bytes: that takes an
        // ASCII-compatible encoding (not UTF-16), and a known one.
        if name.trim().eq_ignore_ascii_case("charset")
            && !encoding_rs::Encoding::for_label(label.trim().trim_matches('"').as_bytes())
                .is_some_and(|e| e.is_ascii_compatible())
        {
            return None;
        }
    }
    Some(kind)
}

#[derive(Debug)]
enum Engine {
    Html(Box<HtmlTranslator>),
    Css(CssRewriter),
}

/// Translates the links of one response body, chunk by chunk.
///
/// Memory is bounded whatever the input: each call returns everything it can
/// decide, holding back only a possible token cut by the chunk boundary — for
/// CSS (and `<style>` text) at most [`crate::MAX_CSS_TOKEN`] bytes, for `<script>`
/// text less than the longest spelling of the internal base, and for HTML markup
/// what `lol_html` needs to finish an incomplete token (a start tag, in practice),
/// capped at [`crate::HTML_MEMORY_LIMIT`]. An HTML token past that cap stops the translation:
/// the rest of the body passes through unchanged ([`BodyTranslator::stopped`]).
/// The output of one call is at most the held-back bytes plus the chunk, each
/// translated URL grown by the difference in length of the two bases.
///
/// The translator is `Send`, so a body can move between tasks.
#[derive(Debug)]
pub struct BodyTranslator {
    engine: Engine,
}

impl BodyTranslator {
    /// A translator for the body of a response with these (backend) headers, or
    /// None when it is to be passed through (see [`translatable_body`]). Call
    /// [`crate::adjust_headers_for_translated_body`] on the headers when it is Some.
    pub fn for_response(map: &UrlMap, headers: &HeaderMap) -> Option<Self> {
        Self::new(map, translatable_body(headers)?).ok()
    }

    /// A translator for a body of `kind`, in any ASCII-compatible encoding: bytes
    /// outside the rewritten URL prefixes come out exactly as they came in.
    ///
    /// # Errors
    /// [`TranslateError::Html`] if the HTML rewriter cannot be built (a bug: its
    /// selectors are fixed).
    pub fn new(map: &UrlMap, kind: BodyKind) -> Result<Self, TranslateError> {
        let engine = match kind {
            BodyKind::Html => Engine::Html(Box::new(HtmlTranslator::new(map)?)),
            BodyKind::Css => Engine::Css(CssRewriter::new(map.clone())),
        };
        Ok(BodyTranslator { engine })
    }

    /// What this translator translates.
    pub fn kind(&self) -> BodyKind {
        match self.engine {
            Engine::Html(_) => BodyKind::Html,
            Engine::Css(_) => BodyKind::Css,
        }
    }

    /// Translates the next chunk, returning the output that is ready (possibly
    /// empty, possibly including held-back bytes of earlier chunks).
    ///
    /// # Errors
    /// [`TranslateError::Html`] when the HTML rewriter failed and lost input (the
    /// body is broken: abort the response), then [`TranslateError::Broken`] on any
    /// later call.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, TranslateError> {
        match &mut self.engine {
            Engine::Html(html) => html.feed(chunk),
            Engine::Css(css) => {
                let mut out = Vec::with_capacity(chunk.len() + css.held());
                css.feed(chunk, &mut out);
                Ok(Bytes::from(out))
            }
        }
    }

    /// Ends the body, returning the last output (held-back bytes, as written when
    /// they did not complete a token).
    ///
    /// # Errors
    /// As for [`BodyTranslator::feed`].
    pub fn finish(self) -> Result<Bytes, TranslateError> {
        match self.engine {
            Engine::Html(html) => html.finish(),
            Engine::Css(mut css) => {
                let mut out = Vec::new();
                css.finish(&mut out);
                Ok(Bytes::from(out))
            }
        }
    }

    /// Bytes held back by the CSS, `<style>` and `<script>` scanners (not counting
    /// `lol_html`'s own markup buffer, capped at [`crate::HTML_MEMORY_LIMIT`]).
    pub fn held_back(&self) -> usize {
        match &self.engine {
            Engine::Html(html) => html.held(),
            Engine::Css(css) => css.held(),
        }
    }

    /// Whether HTML translation stopped at [`crate::HTML_MEMORY_LIMIT`]; the rest of
    /// the body then passes through unchanged. Worth a log line or a metric.
    pub fn stopped(&self) -> bool {
        match &self.engine {
            Engine::Html(html) => html.passing_through(),
            Engine::Css(_) => false,
        }
    }

    /// Wraps a stream of body chunks into a stream of translated chunks.
    pub fn translate_stream<S>(self, stream: S) -> TranslatedStream<S> {
        TranslatedStream {
            inner: Box::pin(stream),
            translator: Some(self),
        }
    }

    /// Wraps an [`http_body::Body`] into a translated body; trailers pass through
    /// after the last data.
    pub fn translate_body<B>(self, body: B) -> TranslatedBody<B> {
        TranslatedBody {
            inner: Box::pin(body),
            translator: Some(self),
            trailers: None,
        }
    }
}

/// The error of a translated stream or body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError<E> {
    /// The backend's body failed; the translated body ends here. Whose fault:
    /// upstream.
    #[error("backend body: {0}")]
    Upstream(#[source] E),
    /// Translation failed and lost data; the translated body is broken. Abort the
    /// response.
    #[error(transparent)]
    Translate(#[from] TranslateError),
}

/// A stream of translated body chunks (see [`BodyTranslator::translate_stream`]).
/// Empty outputs are skipped; the stream ends after the first error.
pub struct TranslatedStream<S> {
    inner: Pin<Box<S>>,
    translator: Option<BodyTranslator>,
}

impl<S> std::fmt::Debug for TranslatedStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslatedStream")
            .field("translator", &self.translator)
            .finish_non_exhaustive()
    }
}

/// The last output of `translator`, if any, as a stream item.
fn last_output<E>(translator: BodyTranslator) -> Option<Result<Bytes, BodyError<E>>> {
    match translator.finish() {
        Ok(out) if out.is_empty() => None,
        Ok(out) => Some(Ok(out)),
        Err(e) => Some(Err(e.into())),
    }
}

impl<S, E> Stream for TranslatedStream<S>
where
    S: Stream<Item = Result<Bytes, E>>,
{
    type Item = Result<Bytes, BodyError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(translator) = this.translator.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => match translator.feed(&chunk) {
                    Ok(out) if out.is_empty() => {}
                    Ok(out) => return Poll::Ready(Some(Ok(out))),
                    Err(e) => {
                        this.translator = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                },
                Some(Err(e)) => {
                    this.translator = None;
                    return Poll::Ready(Some(Err(BodyError::Upstream(e))));
                }
                None => {
                    let Some(translator) = this.translator.take() else {
                        return Poll::Ready(None);
                    };
                    return Poll::Ready(last_output(translator));
                }
            }
        }
    }
}

/// A translated [`http_body::Body`] (see [`BodyTranslator::translate_body`]).
/// Its size is unknown (the length changes); empty data frames are skipped.
pub struct TranslatedBody<B> {
    inner: Pin<Box<B>>,
    translator: Option<BodyTranslator>,
    trailers: Option<HeaderMap>,
}

impl<B> std::fmt::Debug for TranslatedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranslatedBody")
            .field("translator", &self.translator)
            .finish_non_exhaustive()
    }
}

impl<B> Body for TranslatedBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = BodyError<B::Error>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(translator) = this.translator.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    this.translator = None;
                    this.trailers = None;
                    return Poll::Ready(Some(Err(BodyError::Upstream(e))));
                }
                None => {
                    let Some(translator) = this.translator.take() else {
                        continue;
                    };
                    match last_output(translator) {
                        Some(item) => return Poll::Ready(Some(item.map(Frame::data))),
                        None => continue,
                    }
                }
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    match translator.feed(&chunk) {
                        Ok(out) if out.is_empty() => {}
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(e) => {
                            this.translator = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                }
                Err(frame) => {
                    // Trailers end the data: flush the translator, then send them.
                    if let Ok(trailers) = frame.into_trailers() {
                        this.trailers = Some(trailers);
                        if let Some(item) = this.translator.take().and_then(last_output) {
                            return Poll::Ready(Some(item.map(Frame::data)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.translator.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests;

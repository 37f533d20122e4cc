//! Streaming HTML link translation on top of `lol_html`'s `Send` rewriter.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use lol_html::errors::RewritingError;
use lol_html::html_content::{BailOut, ContentType, DocumentEnd, TextChunk};
use lol_html::send::{DocumentContentHandlers, Element, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, OutputSink, Selector};

use crate::css::{CssRewriter, rewrite_css_str};
use crate::headers::rewrite_refresh;
use crate::literal::LiteralReplacer;
use crate::{TranslateError, UrlMap};

/// The most memory `lol_html` may use for one response: in practice the longest
/// start tag that arrives split over several chunks (an inline `data:` image in a
/// `src` attribute, say); text, comments and `<style>`/`<script>` content are not
/// held. Past it the translator stops
/// translating and passes the rest of the body through unchanged.
pub const HTML_MEMORY_LIMIT: usize = 1024 * 1024;

/// Attributes holding one URL, on any element.
const URL_ATTRIBUTES: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "poster",
    "cite",
    "background",
    "longdesc",
    "manifest",
    "xlink:href",
    "data-src",
    "data-href",
];

/// Attributes holding a `srcset` list.
const SRCSET_ATTRIBUTES: &[&str] = &["srcset", "imagesrcset", "data-srcset"];

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Collects the rewriter's output for the caller to take after each write.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl OutputSink for Sink {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        lock(&self.0).extend_from_slice(chunk);
    }
}

/// Rewriters of text inside `<style>` and `<script>`, which keep a little state
/// between text chunks.
#[derive(Debug)]
struct TextRewriters {
    style: CssRewriter,
    script: LiteralReplacer,
}

impl TextRewriters {
    /// Whatever both still hold back, as written.
    fn drain(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.style.finish(&mut out);
        self.script.finish(&mut out);
        out
    }
}

/// A streaming rewriter of element text.
trait TextScanner {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>);
    fn finish(&mut self, out: &mut Vec<u8>);
}

impl TextScanner for CssRewriter {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        CssRewriter::feed(self, input, out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        CssRewriter::finish(self, out);
    }
}

impl TextScanner for LiteralReplacer {
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        LiteralReplacer::feed(self, input, out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        LiteralReplacer::finish(self, out);
    }
}

/// Rewrites one text chunk through `scanner`, touching the chunk only when the
/// text changes (an untouched chunk keeps its exact bytes).
fn rewrite_text(chunk: &mut TextChunk<'_>, scanner: &mut impl TextScanner) {
    let input = chunk.as_str();
    let mut out = Vec::with_capacity(input.len());
    scanner.feed(input.as_bytes(), &mut out);
    if chunk.last_in_text_node() {
        scanner.finish(&mut out);
    }
    if out != input.as_bytes() {
        chunk.set_str(into_string(out));
    }
}

/// Rewrites each URL in a `srcset` list; None when nothing changes.
pub(crate) fn rewrite_srcset(map: &UrlMap, srcset: &str) -> Option<String> {
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c');
    let bytes = srcset.as_bytes();
    let mut out = String::with_capacity(srcset.len());
    let mut changed = false;
    let mut i = 0;
    // Every index below sits next to an ASCII delimiter or at an end, so each
    // `get` is on a character boundary.
    let piece = |a: usize, b: usize| srcset.get(a..b).unwrap_or_default();
    while i < bytes.len() {
        let start = i;
        while bytes.get(i).is_some_and(|&b| is_space(b) || b == b',') {
            i += 1;
        }
        out.push_str(piece(start, i));
        let url_start = i;
        while bytes.get(i).is_some_and(|&b| !is_space(b)) {
            i += 1;
        }
        let mut url_end = i;
        while url_end > url_start && bytes.get(url_end - 1) == Some(&b',') {
            url_end -= 1;
        }
        match map.to_external(piece(url_start, url_end)) {
            Some(url) => {
                out.push_str(&url);
                changed = true;
            }
            None => out.push_str(piece(url_start, url_end)),
        }
        out.push_str(piece(url_end, i));
        if url_end < i {
            continue;
        }
        // Descriptors run to the next comma outside parentheses.
        let descriptors = i;
        let mut depth = 0usize;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        out.push_str(piece(descriptors, i));
    }
    changed.then_some(out)
}

/// How an attribute's value is rewritten.
#[derive(Clone, Copy)]
enum AttributeRule {
    Url,
    Srcset,
    Css,
    Refresh,
}

impl AttributeRule {
    fn apply(self, map: &UrlMap, value: &str) -> Option<String> {
        match self {
            AttributeRule::Url => map.to_external(value),
            AttributeRule::Srcset => rewrite_srcset(map, value),
            AttributeRule::Css => rewrite_css_str(map, value),
            AttributeRule::Refresh => rewrite_refresh(map, value),
        }
    }
}

/// Rewrites the URL-bearing attributes of one element. Values are read only for
/// the attributes that may hold URLs.
fn rewrite_element(map: &UrlMap, el: &mut Element<'_, '_>) {
    let tag = el.tag_name();
    let mut changes = Vec::new();
    for attribute in el.attributes() {
        let name = attribute.name();
        let rule = match name.as_str() {
            n if URL_ATTRIBUTES.contains(&n) => AttributeRule::Url,
            "data" if tag == "object" => AttributeRule::Url,
            n if SRCSET_ATTRIBUTES.contains(&n) => AttributeRule::Srcset,
            "style" => AttributeRule::Css,
            "content"
                if tag == "meta"
                    && el
                        .get_attribute("http-equiv")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh")) =>
            {
                AttributeRule::Refresh
            }
            _ => continue,
        };
        if let Some(new) = rule.apply(map, &attribute.value()) {
            changes.push((name, new));
        }
    }
    for (name, value) in changes {
        // The name came from the parser, so it is valid; on the impossible error
        // the attribute stays as it was.
        if el.set_attribute(&name, &value).is_err() {
            continue;
        }
    }
}

/// Where the translator stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Rewriting,
    /// The memory limit was hit: the rest of the body passes through unchanged.
    PassThrough,
    /// The rewriter failed and lost input: the body is broken.
    Failed,
}

/// Streaming HTML translator (one per response body).
pub(crate) struct HtmlTranslator {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    output: Arc<Mutex<Vec<u8>>>,
    texts: Arc<Mutex<TextRewriters>>,
    mode: Mode,
}

impl std::fmt::Debug for HtmlTranslator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HtmlTranslator")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn selector(text: &str) -> Result<Selector, TranslateError> {
    text.parse()
        .map_err(|e: lol_html::errors::SelectorError| TranslateError::Html(e.to_string()))
}

impl HtmlTranslator {
    /// A translator for a document in any ASCII-compatible encoding.
    ///
    /// `lol_html` is told the document is `x-user-defined`, which maps every byte
    /// to one character and back: markup, URLs and the bases are ASCII, so they
    /// read the same in every ASCII-compatible encoding, and every byte outside a
    /// rewritten URL prefix (invalid UTF-8 included) comes out exactly as it came
    /// in, whatever the document's real encoding and however it is chunked. In
    /// multi-byte encodings (Shift_JIS, GBK, Big5) trail bytes never fall in the
    /// range of `<`, `>`, `=`, quotes or `/`, and follow a lead byte that the CSS
    /// scanner counts as part of an identifier.
    pub(crate) fn new(map: &UrlMap) -> Result<Self, TranslateError> {
        let output = Arc::new(Mutex::new(Vec::new()));
        let texts = Arc::new(Mutex::new(TextRewriters {
            style: CssRewriter::new(map.clone()),
            script: LiteralReplacer::new(map.literals()),
        }));
        let element_map = map.clone();
        let (style_texts, script_texts, end_texts, bail_texts) =
            (texts.clone(), texts.clone(), texts.clone(), texts.clone());
        let settings = Settings::new_send()
            .with_encoding(
                AsciiCompatibleEncoding::new(encoding_rs::X_USER_DEFINED)
                    .unwrap_or_else(AsciiCompatibleEncoding::utf_8),
            )
            .with_strict(false)
            .with_memory_settings(
                MemorySettings::new()
                    .with_max_allowed_memory_usage(HTML_MEMORY_LIMIT)
                    .with_graceful_bail_out_on_memory_limit_exceeded(true),
            )
            .append_element_content_handler((
                Cow::Owned(selector("*")?),
                ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                    rewrite_element(&element_map, el);
                    Ok(())
                }),
            ))
            .append_element_content_handler((
                Cow::Owned(selector("style")?),
                ElementContentHandlers::default().text(move |chunk: &mut TextChunk<'_>| {
                    rewrite_text(chunk, &mut lock(&style_texts).style);
                    Ok(())
                }),
            ))
            .append_element_content_handler((
                Cow::Owned(selector("script")?),
                ElementContentHandlers::default().text(move |chunk: &mut TextChunk<'_>| {
                    rewrite_text(chunk, &mut lock(&script_texts).script);
                    Ok(())
                }),
            ))
            .append_document_content_handler(DocumentContentHandlers::default().end(
                move |end: &mut DocumentEnd<'_>| {
                    // The document ended inside <style> or <script>.
                    let held = lock(&end_texts).drain();
                    if !held.is_empty() {
                        end.append(&into_string(held), ContentType::Html);
                    }
                    Ok(())
                },
            ))
            .append_bail_out_handler(move |_: &RewritingError, bail_out: &mut BailOut<'_>| {
                let held = lock(&bail_texts).drain();
                if !held.is_empty() {
                    bail_out.append(&into_string(held), ContentType::Html);
                }
            });
        let rewriter = HtmlRewriter::new(settings, Sink(output.clone()));
        Ok(HtmlTranslator {
            rewriter: Some(rewriter),
            output,
            texts,
            mode: Mode::Rewriting,
        })
    }

    /// Whether translation stopped at the memory limit and the rest of the body
    /// passes through unchanged.
    pub(crate) fn passing_through(&self) -> bool {
        self.mode == Mode::PassThrough
    }

    /// Bytes held back by the `<style>`/`<script>` text rewriters (the parser's
    /// own buffer is bounded by [`HTML_MEMORY_LIMIT`]).
    pub(crate) fn held(&self) -> usize {
        let texts = lock(&self.texts);
        texts.style.held() + texts.script.held()
    }

    fn take_output(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *lock(&self.output)))
    }

    fn settle(&mut self, result: Result<(), RewritingError>) -> Result<Bytes, TranslateError> {
        match result {
            Ok(()) => Ok(self.take_output()),
            // Graceful bail-out: every byte received so far is in the output.
            Err(RewritingError::MemoryLimitExceeded(_)) => {
                self.rewriter = None;
                self.mode = Mode::PassThrough;
                Ok(self.take_output())
            }
            Err(e) => {
                self.rewriter = None;
                self.mode = Mode::Failed;
                Err(TranslateError::Html(e.to_string()))
            }
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, TranslateError> {
        match (self.mode, self.rewriter.as_mut()) {
            (Mode::PassThrough, _) => Ok(Bytes::copy_from_slice(chunk)),
            (Mode::Rewriting, Some(rewriter)) => {
                let result = rewriter.write(chunk);
                self.settle(result)
            }
            _ => Err(TranslateError::Broken),
        }
    }

    pub(crate) fn finish(mut self) -> Result<Bytes, TranslateError> {
        match (self.mode, self.rewriter.take()) {
            (Mode::PassThrough, _) => Ok(Bytes::new()),
            (Mode::Rewriting, Some(rewriter)) => {
                let result = rewriter.end();
                self.settle(result)
            }
            _ => Err(TranslateError::Broken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> UrlMap {
        UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080/app/").unwrap()
    }

    fn html(input: &str) -> String {
        let mut t = HtmlTranslator::new(&map()).unwrap();
        let mut out = t.feed(input.as_bytes()).unwrap().to_vec();
        out.extend_from_slice(&t.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn srcset_lists() {
        let m = map();
        assert_eq!(
            rewrite_srcset(&m, "/app/a.png 1x, /app/b.png 2x").as_deref(),
            Some("/docs/a.png 1x, /docs/b.png 2x")
        );
        assert_eq!(
            rewrite_srcset(&m, " /app/a.png,/app/b.png 480w , x.png 2x").as_deref(),
            Some(" /docs/a.png,/app/b.png 480w , x.png 2x"),
            "one URL: a comma inside a URL does not split it"
        );
        assert_eq!(
            rewrite_srcset(&m, "/app/a,b.png 1x,/app/c.png").as_deref(),
            Some("/docs/a,b.png 1x,/docs/c.png")
        );
        assert_eq!(
            rewrite_srcset(&m, "/app/a.png (max-width: 1px, 2px) 1x, /app/b.png").as_deref(),
            Some("/docs/a.png (max-width: 1px, 2px) 1x, /docs/b.png")
        );
        assert_eq!(rewrite_srcset(&m, "x.png 1x, y.png 2x"), None);
        assert_eq!(rewrite_srcset(&m, ""), None);
        assert_eq!(
            rewrite_srcset(&m, ",,, ,é, /app/é 1x").as_deref(),
            Some(",,, ,é, /docs/é 1x")
        );
    }

    #[test]
    fn url_attributes_are_translated() {
        let cases = [
            (r#"<a href="/app/x">"#, r#"<a href="/docs/x">"#),
            (
                r#"<A HREF='http://wiki.corp.local:8080/app/x'>"#,
                r#"<A HREF="https://wiki.example.com/docs/x">"#,
            ),
            (
                r#"<link rel=stylesheet href=/app/s.css>"#,
                r#"<link rel=stylesheet href="/docs/s.css">"#,
            ),
            (
                r#"<img src="/app/i.png" srcset="/app/i2.png 2x">"#,
                r#"<img src="/docs/i.png" srcset="/docs/i2.png 2x">"#,
            ),
            (r#"<source srcset="/app/a.webp">"#, r#"<source srcset="/docs/a.webp">"#),
            (
                r#"<script src="/app/s.js"></script>"#,
                r#"<script src="/docs/s.js"></script>"#,
            ),
            (
                r#"<iframe src="//wiki.corp.local:8080/app/f">"#,
                r#"<iframe src="//wiki.example.com/docs/f">"#,
            ),
            (
                r#"<form action="/app/post" method=post>"#,
                r#"<form action="/docs/post" method=post>"#,
            ),
            (
                r#"<video src="/app/v.mp4" poster="/app/p.jpg">"#,
                r#"<video src="/docs/v.mp4" poster="/docs/p.jpg">"#,
            ),
            (r#"<audio src="/app/a.mp3">"#, r#"<audio src="/docs/a.mp3">"#),
            (
                r#"<base href="http://wiki.corp.local:8080/app/">"#,
                r#"<base href="https://wiki.example.com/docs/">"#,
            ),
            (r#"<button formaction="/app/b">"#, r#"<button formaction="/docs/b">"#),
            (r#"<object data="/app/o.svg">"#, r#"<object data="/docs/o.svg">"#),
            (
                r#"<img data-src="/app/lazy.png">"#,
                r#"<img data-src="/docs/lazy.png">"#,
            ),
            (
                r#"<meta http-equiv="Refresh" content="5; url=/app/next">"#,
                r#"<meta http-equiv="Refresh" content="5; url=/docs/next">"#,
            ),
            (
                r#"<div style="background:url('/app/bg.png')">"#,
                r#"<div style="background:url('/docs/bg.png')">"#,
            ),
            (r#"<a href="/app/x?a=1&amp;b=2">"#, r#"<a href="/docs/x?a=1&amp;b=2">"#),
        ];
        for (input, expected) in cases {
            assert_eq!(html(input), expected, "{input}");
        }
    }

    #[test]
    fn other_attributes_and_values_are_untouched() {
        for input in [
            r#"<a href="x.png" title="/app/x">"#,
            r#"<a href="https://elsewhere.example/app/x">"#,
            r#"<meta name="description" content="/app/x">"#,
            r#"<meta http-equiv="content-type" content="text/html; url=/app/x">"#,
            r#"<div data="/app/x" data-other="/app/x">"#,
            r#"<p>Go to /app/x or http://wiki.corp.local:8080/app/x</p>"#,
            r#"<!-- <a href="/app/x"> -->"#,
            r#"<textarea><a href="/app/x"></textarea>"#,
            "<a href='javascript:go(\"/app/x\")'>",
        ] {
            assert_eq!(html(input), input);
        }
    }

    #[test]
    fn style_elements_and_scripts() {
        assert_eq!(
            html("<style>a{b:url(/app/i.png)} @import '/app/x.css';</style><style>url(/app/y)</style>"),
            "<style>a{b:url(/docs/i.png)} @import '/docs/x.css';</style><style>url(/docs/y)</style>"
        );
        assert_eq!(
            html(
                r#"<script>var u="http://wiki.corp.local:8080/app/api", j="http:\/\/wiki.corp.local:8080\/app\/x", p="/app/route";</script>"#
            ),
            r#"<script>var u="https://wiki.example.com/docs/api", j="https:\/\/wiki.example.com\/docs\/x", p="/app/route";</script>"#
        );
    }

    #[test]
    fn a_document_ending_inside_style_keeps_its_text() {
        assert_eq!(html("<style>a{b:url(/app/i.png"), "<style>a{b:url(/app/i.png");
        assert_eq!(
            html("<script>x='http://wiki.corp.local:80"),
            "<script>x='http://wiki.corp.local:80"
        );
    }

    #[test]
    fn the_translator_is_send() {
        fn send<T: Send>(_: &T) {}
        send(&HtmlTranslator::new(&map()).unwrap());
    }
}

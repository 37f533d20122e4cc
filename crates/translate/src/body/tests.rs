use std::convert::Infallible;

use futures_util::StreamExt;
use http::HeaderValue;
use http_body_util::{BodyExt, StreamBody};

use super::*;
use crate::testing::Rng;
use crate::{HTML_MEMORY_LIMIT, MAX_CSS_TOKEN};

const INTERNAL: &str = "http://wiki.corp.local:8080/app/";
const EXTERNAL: &str = "https://wiki.example.com/docs/";

fn map() -> UrlMap {
    UrlMap::new(EXTERNAL, INTERNAL).unwrap()
}

fn headers(content_type: &str, encoding: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
    }
    h
}

/// Translates `input` cut into chunks of the sizes `sizes` yields, returning the
/// output and the most input bytes ever consumed but not yet answered by output
/// (the "lag", which would be negative while output runs ahead: clamped at 0).
fn run(mut t: BodyTranslator, input: &[u8], sizes: impl FnMut() -> usize) -> (Vec<u8>, usize) {
    let (mut out, lag) = feed_all(&mut t, input, sizes);
    out.extend_from_slice(&t.finish().unwrap());
    (out, lag)
}

/// [`run`] without the finish, so the caller can still look at the translator.
fn feed_all(t: &mut BodyTranslator, input: &[u8], mut sizes: impl FnMut() -> usize) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(input.len() + input.len() / 8);
    let mut rest = input;
    let mut lag = 0;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(sizes().clamp(1, rest.len()));
        out.extend_from_slice(&t.feed(chunk).unwrap());
        let consumed = input.len() - tail.len();
        lag = lag.max(consumed.saturating_sub(out.len()));
        assert!(t.held_back() <= MAX_CSS_TOKEN, "scanners hold {}", t.held_back());
        rest = tail;
    }
    (out, lag)
}

fn one_shot(kind: BodyKind, input: &[u8]) -> Vec<u8> {
    run(BodyTranslator::new(&map(), kind).unwrap(), input, || usize::MAX).0
}

/// An HTML page of about `size` bytes exercising every rule, written once with
/// internal URLs (the input) and once with external ones (the expected output).
/// Text, comments and non-URL attributes mention `/app/` too: they must not change.
fn page(size: usize) -> (String, String) {
    let head = "<!DOCTYPE html><html><head><meta charset=\"utf-8\">\
        <meta http-equiv=\"refresh\" content=\"300; url={R}home\"><base href=\"{A}\">\
        <link rel=stylesheet href=\"{R}main.css\"></head><body>\n";
    let block = "<div class=\"item-{i}\" style=\"background:url('{R}img/{i}.png')\">\
        <a href=\"{R}page/{i}?a=1&amp;b=2\" title=\"/app/not-a-url\">Page {i} – é ü 日本</a>\n\
        <img src=\"{A}img/{i}.png\" srcset=\"{R}img/{i}@2x.png 2x, {R}img/{i}@3x.png 3x\" alt=\"/app/x\">\n\
        <p>Text mentions /app/ and http://wiki.corp.local:8080/app/ verbatim; url(/app/x)</p>\n\
        <!-- <a href=\"/app/comment\"> url(/app/c) -->\n\
        <style>.c{i}{background:url({R}bg/{i}.png)} @import \"{R}css/{i}.css\"; .d{content:'é'}</style>\n\
        <script>var u{i}=\"{A}api/{i}\", j=\"{J}x\", p=\"/app/route\", o=\"http://other:8080/app/\";</script>\n\
        <form action=\"{R}post/{i}\"><input type=image src=\"{R}btn.png\"></form>\
        <video src=\"//wiki.corp.local:8080/app/v/{i}.mp4\" poster=\"{R}p.jpg\"></video></div>\n";
    let fill = |template: &str, a: &str, r: &str, i: usize| {
        template
            .replace("{A}", a)
            .replace("{R}", r)
            .replace("{J}", &a.replace('/', "\\/"))
            .replace("{i}", &i.to_string())
    };
    let (mut input, mut expected) = (fill(head, INTERNAL, "/app/", 0), fill(head, EXTERNAL, "/docs/", 0));
    for i in 0.. {
        input.push_str(&fill(block, INTERNAL, "/app/", i));
        expected.push_str(
            &fill(block, EXTERNAL, "/docs/", i).replace("//wiki.corp.local:8080/app/v/", "//wiki.example.com/docs/v/"),
        );
        if input.len() >= size {
            break;
        }
    }
    input.push_str("</body></html>\n");
    expected.push_str("</body></html>\n");
    (input, expected)
}

#[test]
fn the_page_fixture_differs_only_where_urls_are() {
    let (input, expected) = page(1);
    assert_ne!(input, expected);
    assert!(
        expected.contains("<base href=\"https://wiki.example.com/docs/\">"),
        "{expected}"
    );
    assert!(expected.contains("Text mentions /app/ and http://wiki.corp.local:8080/app/ verbatim"));
    assert!(
        expected
            .contains("var u0=\"https://wiki.example.com/docs/api/0\", j=\"https:\\/\\/wiki.example.com\\/docs\\/x\"")
    );
}

#[test]
fn a_small_page_translates_every_rule() {
    let (input, expected) = page(1);
    let out = String::from_utf8(one_shot(BodyKind::Html, input.as_bytes())).unwrap();
    assert_eq!(out, expected);
}

#[test]
fn five_mib_of_html_in_random_chunks_equals_one_shot() {
    let (input, expected) = page(5 * 1024 * 1024);
    let whole = one_shot(BodyKind::Html, input.as_bytes());
    assert!(
        whole == expected.as_bytes(),
        "one-shot output differs from the expected page"
    );
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..3 {
        let cap = [16, 1500, 70_000][round];
        let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
        let (out, lag) = run(t, input.as_bytes(), || 1 + rng.below(cap));
        assert!(
            out == whole,
            "round {round} (chunks up to {cap} bytes) differs from one-shot"
        );
        // Output follows input closely: at most one chunk plus the longest tag.
        assert!(lag <= cap + 4096, "round {round}: lag {lag}");
    }
}

#[test]
fn multi_mib_html_in_one_byte_chunks_keeps_a_small_bounded_lag() {
    let (input, expected) = page(2 * 1024 * 1024);
    let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    let (out, lag) = run(t, input.as_bytes(), || 1);
    assert!(
        out == expected.as_bytes(),
        "1-byte chunks differ from the expected page"
    );
    // The longest tag of the page is under 200 bytes; nothing else is held.
    assert!(lag <= 512, "lag {lag}");
}

#[test]
fn multi_mib_css_in_one_byte_and_random_chunks() {
    let mut input = String::new();
    let mut expected = String::new();
    let mut i = 0;
    while input.len() < 3 * 1024 * 1024 {
        let block = format!(
            ".c{i}{{background:url({{R}}bg/{i}.png) , url( \"{{A}}x/{i}\" )}}\n@import '{{R}}s/{i}.css';\n\
             .e{i}:after{{content:\"/app/ é\"; background:url(data:image/png;base64,{pad})}}\n",
            pad = "QUJD".repeat(i % 300)
        );
        input.push_str(&block.replace("{A}", INTERNAL).replace("{R}", "/app/"));
        expected.push_str(&block.replace("{A}", EXTERNAL).replace("{R}", "/docs/"));
        i += 1;
    }
    let whole = one_shot(BodyKind::Css, input.as_bytes());
    assert!(whole == expected.as_bytes(), "one-shot CSS differs from expected");
    let t = BodyTranslator::new(&map(), BodyKind::Css).unwrap();
    let (out, lag) = run(t, input.as_bytes(), || 1);
    assert!(out == whole, "1-byte chunks differ");
    assert!(lag <= MAX_CSS_TOKEN, "lag {lag}");
    let mut rng = Rng(99);
    let t = BodyTranslator::new(&map(), BodyKind::Css).unwrap();
    let (out, _) = run(t, input.as_bytes(), || 1 + rng.below(9000));
    assert!(out == whole, "random chunks differ");
}

#[test]
fn a_token_split_across_chunks_is_translated() {
    let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    let pieces: [&[u8]; 7] = [
        b"<a hr",
        b"ef=\"/ap",
        b"p/x\">a</a><style>a{b:ur",
        b"l(/app/",
        b"y)}</sty",
        b"le><script>x='http://wiki.corp.loc",
        b"al:8080/app/z'</script>",
    ];
    let mut sizes = pieces.iter().map(|p| p.len());
    let input = pieces.concat();
    let (out, _) = run(t, &input, || sizes.next().unwrap());
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "<a href=\"/docs/x\">a</a><style>a{b:url(/docs/y)}</style><script>x='https://wiki.example.com/docs/z'</script>"
    );
}

#[test]
fn non_utf8_bodies_with_nothing_to_rewrite_pass_through_byte_identical() {
    let input: &[u8] = b"<p>caf\xe9 \xff\xfe</p><a href=\"x\xff.html\" title=\"\xe9\">\xe9</a>\
        <style>.a{content:'\xff'} .b{background:url(x\xe9.png)}</style><script>var s='\xfe\xff';</script>\
        <img src=\"/other/\xe9.png\"><!-- \xff --></p>";
    for kind in [BodyKind::Html, BodyKind::Css] {
        assert_eq!(one_shot(kind, input), input.to_vec(), "{kind:?} one-shot");
        let t = BodyTranslator::new(&map(), kind).unwrap();
        assert_eq!(run(t, input, || 1).0, input.to_vec(), "{kind:?} 1-byte chunks");
    }
}

#[test]
fn a_declared_legacy_charset_is_respected() {
    let h = headers("text/html; charset=windows-1252", None);
    let t = BodyTranslator::for_response(&map(), &h).unwrap();
    let input: &[u8] = b"<p>caf\xe9</p><a href=\"/app/caf\xe9\">\xe9</a>";
    let (out, _) = run(t, input, || 7);
    assert_eq!(out, b"<p>caf\xe9</p><a href=\"/docs/caf\xe9\">\xe9</a>".to_vec());
}

#[test]
fn a_huge_tag_stops_translation_but_keeps_every_byte() {
    let mut input = b"<a href=\"/app/before\">x</a><img src=\"data:image/png;base64,".to_vec();
    input.extend(std::iter::repeat_n(b'A', 2 * HTML_MEMORY_LIMIT));
    input.extend_from_slice(b"\"><a href=\"/app/after\">y</a>");
    let mut t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    let (mut out, lag) = feed_all(&mut t, &input, || 8192);
    assert!(t.stopped(), "the memory limit should have stopped translation");
    out.extend_from_slice(&t.finish().unwrap());
    assert!(lag <= HTML_MEMORY_LIMIT + 8192, "lag {lag}");
    let mut expected = input.clone();
    expected.splice(9..9 + "/app/before".len(), b"/docs/before".iter().copied());
    assert!(
        out == expected,
        "only the URL before the huge tag is translated, nothing is lost"
    );
}

#[test]
fn randomised_documents_never_panic_and_do_not_depend_on_chunking() {
    let fragments: &[&str] = &[
        "<a href=\"/app/x\">",
        "<a href='",
        "/app/",
        "http://wiki.corp.local:8080/app/",
        "//wiki.corp.local:8080/app/",
        "\">",
        "<style>",
        "</style>",
        "url(",
        ")",
        "@import '",
        "'",
        "<script>",
        "</script>",
        "<img srcset=\"",
        " 2x, ",
        "<!--",
        "-->",
        "<meta http-equiv=refresh content=\"0;url=",
        "<",
        ">",
        "&amp;",
        "é",
        " ",
        "\n",
        "<textarea>",
        "</textarea>",
        "<svg><style>",
        "</svg>",
        "<![CDATA[",
        "]]>",
        "<!DOCTYPE html>",
        "http:\\/\\/wiki.corp.local:8080\\/app\\/",
    ];
    let mut rng = Rng(7);
    for case in 0..300 {
        let count = rng.below(60);
        let doc = rng.text(fragments, count);
        for kind in [BodyKind::Html, BodyKind::Css] {
            let whole = one_shot(kind, doc.as_bytes());
            let t = BodyTranslator::new(&map(), kind).unwrap();
            let cap = 1 + rng.below(20);
            let (out, _) = run(t, doc.as_bytes(), || 1 + rng.below(cap));
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&whole),
                "case {case} {kind:?}: {doc:?}"
            );
        }
    }
}

#[test]
fn empty_bodies_stay_empty() {
    for kind in [BodyKind::Html, BodyKind::Css] {
        assert!(one_shot(kind, b"").is_empty());
        let mut t = BodyTranslator::new(&map(), kind).unwrap();
        assert!(t.feed(b"").unwrap().is_empty());
        assert!(t.finish().unwrap().is_empty());
    }
}

#[test]
fn which_responses_are_translated() {
    let cases: &[(&str, Option<&str>, Option<BodyKind>)] = &[
        ("text/html", None, Some(BodyKind::Html)),
        ("Text/HTML; charset=UTF-8", None, Some(BodyKind::Html)),
        ("application/xhtml+xml", None, Some(BodyKind::Html)),
        ("text/css;charset=\"iso-8859-1\"", None, Some(BodyKind::Css)),
        ("text/html", Some("identity"), Some(BodyKind::Html)),
        ("text/html", Some("gzip"), None),
        ("text/html", Some("identity, br"), None),
        ("text/html; charset=utf-16", None, None),
        ("text/html; charset=no-such-charset", None, None),
        ("application/json", None, None),
        ("text/plain", None, None),
        ("text/javascript", None, None),
        ("image/svg+xml", None, None),
        ("", None, None),
    ];
    for (content_type, encoding, expected) in cases {
        let h = headers(content_type, *encoding);
        assert_eq!(translatable_body(&h), *expected, "{content_type} {encoding:?}");
        assert_eq!(BodyTranslator::for_response(&map(), &h).map(|t| t.kind()), *expected);
    }
    assert_eq!(translatable_body(&HeaderMap::new()), None);
    let mut h = headers("text/html", None);
    h.insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes 0-9/100"));
    assert_eq!(
        translatable_body(&h),
        None,
        "a byte range of the backend's body cannot be translated"
    );
    let mut h = headers("text/html", None);
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_bytes(b"\xffgzip").unwrap());
    assert_eq!(translatable_body(&h), None);
}

#[test]
fn translators_and_wrappers_are_send() {
    fn send<T: Send>(_: &T) {}
    let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    send(&t);
    let stream = futures_util::stream::iter(Vec::<Result<Bytes, Infallible>>::new());
    send(&t.translate_stream(stream));
    let body = http_body_util::Full::new(Bytes::new());
    send(&BodyTranslator::new(&map(), BodyKind::Css).unwrap().translate_body(body));
}

#[tokio::test]
async fn a_translated_stream_can_move_between_tasks() {
    let (input, expected) = page(256 * 1024);
    let chunks: Vec<Result<Bytes, Infallible>> = input
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    let stream = t.translate_stream(futures_util::stream::iter(chunks));
    let out = tokio::spawn(async move {
        let parts: Vec<Bytes> = stream.map(|r| r.unwrap()).collect().await;
        assert!(parts.iter().all(|p| !p.is_empty()), "empty chunks are skipped");
        parts.concat()
    })
    .await
    .unwrap();
    assert!(out == expected.as_bytes());
}

#[tokio::test]
async fn a_stream_error_ends_the_stream() {
    let items: Vec<Result<Bytes, &str>> = vec![
        Ok(Bytes::from_static(b"a{b:url(/app/x)} url(")),
        Err("reset"),
        Ok(Bytes::new()),
    ];
    let t = BodyTranslator::new(&map(), BodyKind::Css).unwrap();
    let got: Vec<_> = t.translate_stream(futures_util::stream::iter(items)).collect().await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().unwrap(), &Bytes::from_static(b"a{b:url(/docs/x)} "));
    assert!(matches!(got[1], Err(BodyError::Upstream("reset"))));
}

#[tokio::test]
async fn a_translated_body_flushes_before_its_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("1"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"a{b:url(/app/x)} c{d:url(/ap"))),
        Ok(Frame::data(Bytes::from_static(b"p/y"))),
        Ok(Frame::trailers(trailers.clone())),
    ];
    let t = BodyTranslator::new(&map(), BodyKind::Css).unwrap();
    let body = t.translate_body(StreamBody::new(futures_util::stream::iter(frames)));
    assert!(!body.is_end_stream());
    let collected = body.collect().await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(
        collected.to_bytes(),
        Bytes::from_static(b"a{b:url(/docs/x)} c{d:url(/app/y")
    );
}

#[tokio::test]
async fn a_translated_body_without_trailers_ends() {
    let (input, expected) = page(64 * 1024);
    let t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
    let body = t.translate_body(http_body_util::Full::new(Bytes::from(input)));
    let out = body.collect().await.unwrap().to_bytes();
    assert!(out == expected.as_bytes());
}

#[test]
fn huge_comments_and_text_are_not_held() {
    for (open, close) in [
        ("<!--", "-->"),
        ("<p>", "</p>"),
        ("<style>", "</style>"),
        ("<script>", "</script>"),
    ] {
        let mut input = format!("<a href=\"/app/1\">{open}").into_bytes();
        input.extend(std::iter::repeat_n(b'x', 2 * HTML_MEMORY_LIMIT));
        input.extend_from_slice(format!("{close}<a href=\"/app/2\">").as_bytes());
        let mut t = BodyTranslator::new(&map(), BodyKind::Html).unwrap();
        let (mut out, lag) = feed_all(&mut t, &input, || 8192);
        assert!(!t.stopped(), "{open}");
        assert!(lag <= 64, "{open}: lag {lag}");
        out.extend_from_slice(&t.finish().unwrap());
        let expected = String::from_utf8(input).unwrap().replace("/app/", "/docs/");
        assert!(out == expected.as_bytes(), "{open}");
    }
}

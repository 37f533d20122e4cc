//! Streaming rewriter of URLs in CSS: `url(...)` (quoted or not) and `@import "..."`.
//!
//! A byte-at-a-time state machine, so the output does not depend on how the input
//! is cut into chunks. Only a candidate token is held back, and never more than
//! [`MAX_CSS_TOKEN`] bytes of it: a longer one (an inline `data:` image, say) is
//! passed through untranslated.

use crate::UrlMap;

/// The most bytes of one CSS token (`url(...)` or `@import "..."`) held back while
/// waiting for its end. A longer token is passed on untranslated.
pub const MAX_CSS_TOKEN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    Url,
    Import,
}

impl Keyword {
    fn text(self) -> &'static [u8] {
        match self {
            Keyword::Url => b"url(",
            Keyword::Import => b"@import",
        }
    }
}

/// Where the scanner is. Offsets index the held-back bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Outside any candidate token.
    Normal,
    /// Part of a keyword seen.
    Keyword { keyword: Keyword, matched: usize },
    /// After `url(`, before the URL.
    UrlLead,
    /// Inside an unquoted URL starting at `start`.
    Unquoted { start: usize },
    /// White space after an unquoted URL `start..end`.
    UnquotedTrail { start: usize, end: usize },
    /// Inside a quoted URL or `@import` string; `escaped` after a backslash; `plain`
    /// false once a backslash was seen (the value is then left as written).
    Quoted {
        quote: u8,
        start: usize,
        escaped: bool,
        plain: bool,
        import: bool,
    },
    /// After the closing quote of `url("...")`, before `)`.
    AfterQuote { start: usize, end: usize, plain: bool },
    /// After `@import`, before its string.
    ImportLead,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// Bytes that continue a CSS identifier: `url(` after one of them is another function.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'\\' || b >= 0x80
}

/// The streaming CSS URL rewriter.
#[derive(Debug)]
pub(crate) struct CssRewriter {
    map: UrlMap,
    held: Vec<u8>,
    state: State,
    prev_ident: bool,
}

impl CssRewriter {
    pub(crate) fn new(map: UrlMap) -> Self {
        CssRewriter {
            map,
            held: Vec::new(),
            state: State::Normal,
            prev_ident: false,
        }
    }

    /// Bytes held back, waiting for the end of a token (at most [`MAX_CSS_TOKEN`]).
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Rewrites `input`, appending what can be decided to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        let mut rest = input;
        while let Some((&b, tail)) = rest.split_first() {
            if self.state == State::Normal {
                // Fast path: copy up to the next byte that may start a token.
                let stop = rest
                    .iter()
                    .position(|&c| c == b'@' || (c | 0x20) == b'u')
                    .unwrap_or(rest.len());
                if stop > 0 {
                    let (plain, after) = rest.split_at(stop);
                    out.extend_from_slice(plain);
                    self.prev_ident = plain.last().is_some_and(|&c| is_ident(c));
                    rest = after;
                    continue;
                }
            }
            self.step(b, out);
            rest = tail;
        }
    }

    /// Ends the input: anything held back is passed on as written, and the
    /// rewriter is ready for another, independent piece of CSS.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        self.abandon(out);
        self.prev_ident = false;
    }

    /// Gives up on the current candidate: its bytes go out as written.
    fn abandon(&mut self, out: &mut Vec<u8>) {
        if let Some(&last) = self.held.last() {
            self.prev_ident = is_ident(last);
        }
        out.append(&mut self.held);
        self.state = State::Normal;
    }

    /// A whole token is held, its URL at `start..end`: translate and pass it on.
    fn complete(&mut self, start: usize, end: usize, translate: bool, out: &mut Vec<u8>) {
        let replaced = translate
            .then(|| self.held.get(start..end))
            .flatten()
            .and_then(|url| std::str::from_utf8(url).ok())
            .and_then(|url| self.map.to_external(url));
        match (replaced, self.held.get(..start), self.held.get(end..)) {
            (Some(url), Some(head), Some(tail)) => {
                out.extend_from_slice(head);
                out.extend_from_slice(url.as_bytes());
                out.extend_from_slice(tail);
                self.held.clear();
            }
            _ => out.append(&mut self.held),
        }
        self.prev_ident = false;
        self.state = State::Normal;
    }

    fn step(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Normal => self.start(b, out),
            State::Keyword { keyword, matched } => {
                let text = keyword.text();
                if text.get(matched) == Some(&b.to_ascii_lowercase()) {
                    self.held.push(b);
                    self.state = if matched + 1 < text.len() {
                        State::Keyword {
                            keyword,
                            matched: matched + 1,
                        }
                    } else if keyword == Keyword::Url {
                        State::UrlLead
                    } else {
                        State::ImportLead
                    };
                } else {
                    self.abandon(out);
                    self.start(b, out);
                }
            }
            State::UrlLead => {
                self.held.push(b);
                let start = self.held.len();
                match b {
                    _ if is_space(b) => {}
                    b'"' | b'\'' => {
                        self.state = State::Quoted {
                            quote: b,
                            start,
                            escaped: false,
                            plain: true,
                            import: false,
                        };
                    }
                    b')' | b'(' | b'\\' => self.abandon(out),
                    _ => self.state = State::Unquoted { start: start - 1 },
                }
            }
            State::Unquoted { start } => {
                let end = self.held.len();
                self.held.push(b);
                match b {
                    b')' => self.complete(start, end, true, out),
                    _ if is_space(b) => self.state = State::UnquotedTrail { start, end },
                    b'"' | b'\'' | b'(' | b'\\' => self.abandon(out),
                    _ => {}
                }
            }
            State::UnquotedTrail { start, end } => {
                self.held.push(b);
                match b {
                    b')' => self.complete(start, end, true, out),
                    _ if is_space(b) => {}
                    _ => self.abandon(out),
                }
            }
            State::Quoted {
                quote,
                start,
                escaped,
                plain,
                import,
            } => {
                let end = self.held.len();
                self.held.push(b);
                if escaped {
                    self.state = State::Quoted {
                        quote,
                        start,
                        escaped: false,
                        plain,
                        import,
                    };
                } else if b == b'\\' {
                    self.state = State::Quoted {
                        quote,
                        start,
                        escaped: true,
                        plain: false,
                        import,
                    };
                } else if b == quote {
                    if import {
                        self.complete(start, end, plain, out);
                    } else {
                        self.state = State::AfterQuote { start, end, plain };
                    }
                } else if b == b'\n' {
                    self.abandon(out);
                }
            }
            State::AfterQuote { start, end, plain } => {
                self.held.push(b);
                match b {
                    b')' => self.complete(start, end, plain, out),
                    _ if is_space(b) => {}
                    _ => self.abandon(out),
                }
            }
            State::ImportLead => match b {
                _ if is_space(b) => self.held.push(b),
                b'"' | b'\'' => {
                    self.held.push(b);
                    let start = self.held.len();
                    self.state = State::Quoted {
                        quote: b,
                        start,
                        escaped: false,
                        plain: true,
                        import: true,
                    };
                }
                // `@import url(...)`: the url() is a token of its own.
                _ => {
                    self.abandon(out);
                    self.start(b, out);
                }
            },
        }
        if self.held.len() > MAX_CSS_TOKEN {
            self.abandon(out);
        }
    }

    /// Handles `b` outside any token.
    fn start(&mut self, b: u8, out: &mut Vec<u8>) {
        if (b == b'u' || b == b'U') && !self.prev_ident {
            self.held.push(b);
            self.state = State::Keyword {
                keyword: Keyword::Url,
                matched: 1,
            };
        } else if b == b'@' {
            self.held.push(b);
            self.state = State::Keyword {
                keyword: Keyword::Import,
                matched: 1,
            };
        } else {
            out.push(b);
            self.prev_ident = is_ident(b);
        }
    }
}

/// Rewrites the URLs in a complete piece of CSS (a `style` attribute). None when
/// nothing changes.
pub(crate) fn rewrite_css_str(map: &UrlMap, css: &str) -> Option<String> {
    let mut rewriter = CssRewriter::new(map.clone());
    let mut out = Vec::with_capacity(css.len());
    rewriter.feed(css.as_bytes(), &mut out);
    rewriter.finish(&mut out);
    if out == css.as_bytes() {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> UrlMap {
        UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080/app/").unwrap()
    }

    fn css(input: &str) -> String {
        rewrite_css_str(&map(), input).unwrap_or_else(|| input.to_owned())
    }

    /// Feeds `input` in pieces of `size` bytes, returning the output and the most
    /// bytes ever held back.
    fn chunked(input: &[u8], size: usize) -> (Vec<u8>, usize) {
        let mut r = CssRewriter::new(map());
        let mut out = Vec::new();
        let mut most = 0;
        for piece in input.chunks(size) {
            r.feed(piece, &mut out);
            most = most.max(r.held());
        }
        r.finish(&mut out);
        (out, most)
    }

    #[test]
    fn url_functions_quoted_and_unquoted() {
        assert_eq!(css("a{background:url(/app/i.png)}"), "a{background:url(/docs/i.png)}");
        assert_eq!(
            css("a{background:url( \"/app/i.png\" )}"),
            "a{background:url( \"/docs/i.png\" )}"
        );
        assert_eq!(
            css("a{background:URL('/app/i.png')}"),
            "a{background:URL('/docs/i.png')}"
        );
        assert_eq!(
            css("a{background:url(http://wiki.corp.local:8080/app/i.png  )}"),
            "a{background:url(https://wiki.example.com/docs/i.png  )}"
        );
        assert_eq!(css("b{x:url(\"a)b/app/\")}"), "b{x:url(\"a)b/app/\")}");
        assert_eq!(css("b{x:url(\"/app/a)b\")}"), "b{x:url(\"/docs/a)b\")}");
    }

    #[test]
    fn imports_with_strings_and_urls() {
        assert_eq!(css("@import \"/app/a.css\";"), "@import \"/docs/a.css\";");
        assert_eq!(css("@IMPORT'/app/a.css' screen;"), "@IMPORT'/docs/a.css' screen;");
        assert_eq!(css("@import url(/app/a.css);"), "@import url(/docs/a.css);");
        assert_eq!(css("@media print{}"), "@media print{}");
    }

    #[test]
    fn things_that_are_not_url_tokens_stay() {
        for input in [
            "a{x:myurl(/app/x)}",
            "a{x:url(/app/x}",
            "a{x:url(/app/ x y)}",
            "a{x:url(/app/\\29 x)}",
            "a{x:url(\"/app/\\\"x\")}",
            "a{x:url(\"/app/x\n\")}",
            "a{x:url(\"/app/x\" y)}",
            "a{x:url()}",
            "a{x:url(x.png)}",
            "a{x:url(data:image/png;base64,AAAA)}",
            "uuuurl( @@import ",
            "",
        ] {
            assert_eq!(rewrite_css_str(&map(), input), None, "{input:?}");
        }
    }

    #[test]
    fn several_tokens_and_non_ascii_text() {
        let input = "/* é */ a{b:url(/app/1)} c{d:url('/app/2')} @import '/app/3'; e{content:\"ü\"}";
        assert_eq!(
            css(input),
            "/* é */ a{b:url(/docs/1)} c{d:url('/docs/2')} @import '/docs/3'; e{content:\"ü\"}"
        );
    }

    #[test]
    fn output_does_not_depend_on_chunking() {
        let input = "x{a:url( '/app/q' )}@import \"/app/z\";y{b:url(/app/w)}uurl(/app/v)@imp url(/app/u)";
        let (whole, _) = chunked(input.as_bytes(), input.len());
        assert_eq!(
            String::from_utf8(whole.clone()).unwrap(),
            "x{a:url( '/docs/q' )}@import \"/docs/z\";y{b:url(/docs/w)}uurl(/app/v)@imp url(/docs/u)"
        );
        for size in 1..input.len() {
            assert_eq!(chunked(input.as_bytes(), size).0, whole, "chunk size {size}");
        }
    }

    #[test]
    fn long_tokens_pass_through_and_hold_back_is_bounded() {
        let mut input = b"a{b:url(data:image/png;base64,".to_vec();
        input.extend(std::iter::repeat_n(b'A', 3 * MAX_CSS_TOKEN));
        input.extend_from_slice(b")} c{d:url(/app/x)}");
        let (out, most) = chunked(&input, 1);
        assert!(most <= MAX_CSS_TOKEN, "held {most}");
        let mut expected = input.clone();
        expected.truncate(expected.len() - b"/app/x)}".len());
        expected.extend_from_slice(b"/docs/x)}");
        assert_eq!(out, expected);
        assert_eq!(chunked(&input, 1000).0, expected);
    }

    #[test]
    fn invalid_utf8_passes_through_byte_for_byte() {
        let input = b"a{b:url(/app/\xff)} \xfe\xfd u\xff @\xff";
        let (out, _) = chunked(input, 3);
        assert_eq!(out, input.to_vec());
    }
}

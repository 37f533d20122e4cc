//! Translation between an app's internal and external URLs (APP-7): headers and streaming bodies, no I/O.
//!
//! An app is published at an external base (`https://wiki.example.com/docs/`) and
//! served from an internal base (`http://wiki.corp.local:8080/app/`). [`UrlMap`]
//! swaps one base prefix for the other, keeping the rest of a URL byte for byte.
//!
//! # What is translated
//! - **URLs** ([`UrlMap::to_external`]): absolute (`http://wiki.corp.local:8080/app/x`),
//!   scheme-relative (`//wiki.corp.local:8080/app/x`) and root-relative (`/app/x`)
//!   references under the internal base. Hosts compare case-insensitively (IPv6 by
//!   address), ports by value with the default port written or not.
//! - **Response headers** ([`translate_response_headers`]): `Location`,
//!   `Content-Location`, `Refresh`, `Link`, `Access-Control-Allow-Origin`, and the
//!   `Domain`/`Path` of `Set-Cookie` (an internal `Domain` is dropped, making the
//!   cookie host-only for the external host).
//! - **Request headers** ([`translate_request_headers`]): `Referer` and `Origin`,
//!   external to internal; [`request_uncompressed`] asks for bodies that can be read.
//! - **HTML bodies** (`text/html`, `application/xhtml+xml`), streamed through
//!   `lol_html`: URL attributes on any element (`href`, `src`, `action`,
//!   `formaction`, `poster`, `cite`, `background`, `longdesc`, `manifest`,
//!   `xlink:href`, `data-src`, `data-href`, `data` on `<object>`), `srcset` lists
//!   (`srcset`, `imagesrcset`, `data-srcset`), `<meta http-equiv=refresh content>`,
//!   CSS in `style` attributes and `<style>` elements, and in `<script>` text the
//!   absolute spellings of the internal base (with and without a default port,
//!   plain and JSON-escaped `http:\/\/...`) by plain string replacement. That
//!   replacement is safe because a base may not contain quotes, backslashes,
//!   angle brackets or white space, and only a string that begins with the whole
//!   internal base (scheme, host, port, path, final `/`) is replaced.
//! - **CSS bodies** (`text/css`): `url(...)`, quoted or not, and `@import "..."`.
//!
//! Bodies in any ASCII-compatible encoding are read byte for byte: everything but
//! the swapped base prefixes comes out exactly as it came in (invalid UTF-8
//! included), and the output does not depend on how the body is chunked.
//!
//! # What is not
//! Relative references (`x.png`, `../x`) need nothing. Left as written: URLs in
//! HTML text, comments and `<textarea>`; root-relative paths inside scripts (they
//! may be routes, not URLs); URLs built by script at run time; URLs spelled with
//! entities or escapes (`http&#58;//...`, CSS `\2f`); `ping` lists; other headers
//! (`Content-Security-Policy`, ...); compressed bodies, byte ranges, bodies in a
//! character encoding that is unknown or not ASCII-compatible (UTF-16), and other
//! media types (JSON, JavaScript files, SVG files).
//!
//! # Memory
//! Bodies are never buffered whole: see [`BodyTranslator`] for the bound
//! ([`MAX_CSS_TOKEN`], [`HTML_MEMORY_LIMIT`]).
#![warn(missing_docs)]

mod body;
mod css;
mod headers;
mod html;
mod literal;
#[cfg(test)]
mod testing;
mod url_map;

pub use body::{BodyError, BodyKind, BodyTranslator, TranslatedBody, TranslatedStream, translatable_body};
pub use css::MAX_CSS_TOKEN;
pub use headers::{
    adjust_headers_for_translated_body, request_uncompressed, translate_request_headers, translate_response_headers,
};
pub use html::HTML_MEMORY_LIMIT;
pub use url_map::UrlMap;

/// What went wrong, by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A base URL of the app is unusable: a configuration error for the operator;
    /// the app cannot be published until it is fixed.
    #[error("invalid {which} base URL: {reason}")]
    InvalidBase {
        /// `external` or `internal`.
        which: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The HTML rewriter failed mid-body and lost input: the translated body is
    /// broken. Abort the response (reset the stream); whose fault: internal.
    #[error("HTML translation failed: {0}")]
    Html(String),
    /// The translator was fed after it had failed.
    #[error("the body translator failed earlier")]
    Broken,
}

//! Request paths as a browser resolves them (SEC-13), before routing: an app
//! published at `/docs/` over `http://host/base/` must never let a request climb
//! out of `/base/` on the backend.
//!
//! [`normalize`] follows RFC 3986 §5.2.4 and the WHATWG URL parser: `\` is `/`,
//! `%2e` (any case) is a dot in a dot segment, `.` segments go, `..` removes the
//! segment before it, and empty segments (`//`) collapse (backends such as nginx
//! merge them before resolving dot segments). Every other byte stays as it was
//! sent: `%20`, `%7E` and `%2F` reach the backend unchanged.
//!
//! Refused (400): a path that climbs above `/`, and a segment that a backend
//! would take for a dot segment although a browser does not: one that `%2f` or
//! `%5c` (an encoded slash or backslash) splits into dot segments
//! (`..%2f..%2fetc`), or one that is a dot segment up to a `;` parameter
//! (`..;`, which Tomcat resolves as `..`).

/// Why a request path cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not a path starting with `/` (e.g. `*` or an empty target).
    #[error("the request's path must start with /")]
    NotAPath,
    /// `..` segments would climb above the root.
    #[error("the request's path climbs above the root with .. segments")]
    AboveRoot,
    /// A segment hides a dot segment behind an encoded slash or backslash, or a
    /// `;` parameter, which some backends resolve.
    #[error("the request's path hides a . or .. segment behind %2F, %5C or ;")]
    HiddenDotSegment,
}

/// What one segment is once a browser has looked at it.
#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// `.` (or `%2e`): stays where it is.
    Current,
    /// `..` (or `.%2e`, `%2e.`, `%2e%2e`): up one.
    Parent,
    /// Anything else, kept byte for byte.
    Name,
}

/// `seg` with every `%2e`/`%2E` decoded to `.` (nothing else decoded).
fn decode_dots(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    let mut rest = seg;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.get(1..3).is_some_and(|code| code.eq_ignore_ascii_case("2e")) {
            out.push('.');
            rest = &tail[3..];
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn classify_plain(seg: &str) -> Segment {
    match decode_dots(seg).as_str() {
        "." => Segment::Current,
        ".." => Segment::Parent,
        _ => Segment::Name,
    }
}

/// Splits `seg` at `%2f` and `%5c` (any case).
fn split_encoded_separators(seg: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut from) = (0, 0);
    while let Some(offset) = seg[from..].find('%') {
        let at = from + offset;
        let code = seg.get(at + 1..at + 3);
        if code.is_some_and(|c| c.eq_ignore_ascii_case("2f") || c.eq_ignore_ascii_case("5c")) {
            parts.push(&seg[start..at]);
            start = at + 3;
        }
        from = at + 1;
    }
    parts.push(&seg[start..]);
    parts
}

/// Whether a segment that a browser keeps as a name would be a dot segment to
/// a backend that splits at encoded separators or cuts `;` parameters.
fn hides_dot_segment(seg: &str) -> bool {
    split_encoded_separators(seg).into_iter().any(|part| {
        let before_params = part.split(';').next().unwrap_or(part);
        classify_plain(part) != Segment::Name || classify_plain(before_params) != Segment::Name
    })
}

/// What one segment is, or why it is refused.
fn classify(seg: &str) -> Result<Segment, PathError> {
    match classify_plain(seg) {
        Segment::Name if hides_dot_segment(seg) => Err(PathError::HiddenDotSegment),
        other => Ok(other),
    }
}

/// The request path (without the query) as a browser would send it after
/// resolving it: backslashes as slashes, empty segments collapsed, dot segments
/// (plain or percent-encoded) removed; other bytes unchanged. A trailing `/`,
/// or a final dot segment, leaves the result ending in `/`.
pub fn normalize(path: &str) -> Result<String, PathError> {
    let Some(rest) = path.strip_prefix(['/', '\\']) else {
        return Err(PathError::NotAPath);
    };
    let unified = rest.replace('\\', "/");
    let mut kept: Vec<&str> = Vec::new();
    let mut last_was_dot_segment = false;
    for seg in unified.split('/').filter(|s| !s.is_empty()) {
        let segment = classify(seg)?;
        last_was_dot_segment = segment != Segment::Name;
        match segment {
            Segment::Current => {}
            Segment::Parent => {
                kept.pop().ok_or(PathError::AboveRoot)?;
            }
            Segment::Name => kept.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &kept {
        out.push('/');
        out.push_str(seg);
    }
    if kept.is_empty() || last_was_dot_segment || unified.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_a_browser_resolves_them() {
        let table: &[(&str, Result<&str, PathError>)] = &[
            // Unchanged.
            ("/", Ok("/")),
            ("/docs/", Ok("/docs/")),
            ("/docs/a", Ok("/docs/a")),
            ("/docs/a%20b/c", Ok("/docs/a%20b/c")),
            ("/docs/%7Euser/file%2etxt", Ok("/docs/%7Euser/file%2etxt")),
            ("/docs/...", Ok("/docs/...")),
            ("/docs/.hidden/..x/x..", Ok("/docs/.hidden/..x/x..")),
            ("/docs/group%2Fproject", Ok("/docs/group%2Fproject")),
            ("/docs/a;jsessionid=1", Ok("/docs/a;jsessionid=1")),
            // Dot segments, plain and encoded, any case.
            ("/docs/./a", Ok("/docs/a")),
            ("/docs/a/..", Ok("/docs/")),
            ("/docs/a/.", Ok("/docs/a/")),
            ("/docs/a/../b", Ok("/docs/b")),
            ("/docs/%2e/a", Ok("/docs/a")),
            ("/docs/x/%2e%2e/a", Ok("/docs/a")),
            ("/docs/x/%2E%2E/a", Ok("/docs/a")),
            ("/docs/x/.%2e/a", Ok("/docs/a")),
            ("/docs/x/%2E./a", Ok("/docs/a")),
            ("/docs/../other", Ok("/other")),
            ("/docs/..", Ok("/")),
            // Backslashes are slashes; empty segments collapse.
            ("/docs\\a\\b", Ok("/docs/a/b")),
            ("\\docs\\", Ok("/docs/")),
            ("/docs//a///b//", Ok("/docs/a/b/")),
            ("//", Ok("/")),
            // Climbing above the root.
            ("/..", Err(PathError::AboveRoot)),
            ("/docs/../../etc/passwd", Err(PathError::AboveRoot)),
            ("/docs/%2e%2e/%2e%2e/etc/passwd", Err(PathError::AboveRoot)),
            ("/docs/%2E%2E/%2E%2E/etc/passwd", Err(PathError::AboveRoot)),
            ("/docs/.%2E/%2e./etc/passwd", Err(PathError::AboveRoot)),
            ("/docs/..\\..\\secret", Err(PathError::AboveRoot)),
            ("/docs//../../secret", Err(PathError::AboveRoot)),
            ("/docs/a/../../../x", Err(PathError::AboveRoot)),
            // Dot segments hidden from the browser but not from every backend.
            ("/docs/..%2f..%2fetc/passwd", Err(PathError::HiddenDotSegment)),
            ("/docs/..%2F..%2Fetc/passwd", Err(PathError::HiddenDotSegment)),
            ("/docs/a%2f..", Err(PathError::HiddenDotSegment)),
            ("/docs/%2e%2e%2f", Err(PathError::HiddenDotSegment)),
            ("/docs/..%5c..%5csecret", Err(PathError::HiddenDotSegment)),
            ("/docs/..%5C", Err(PathError::HiddenDotSegment)),
            ("/docs/..;/..;/manager", Err(PathError::HiddenDotSegment)),
            ("/docs/.;x/a", Err(PathError::HiddenDotSegment)),
            ("/docs/%2e%2e;a=b", Err(PathError::HiddenDotSegment)),
            // Not a path.
            ("*", Err(PathError::NotAPath)),
            ("", Err(PathError::NotAPath)),
            ("docs/", Err(PathError::NotAPath)),
        ];
        for (input, expected) in table {
            assert_eq!(normalize(input).as_deref().map_err(|e| *e), *expected, "{input:?}");
        }
    }

    #[test]
    fn a_stray_percent_is_kept() {
        assert_eq!(normalize("/a%").as_deref(), Ok("/a%"));
        assert_eq!(normalize("/a%2").as_deref(), Ok("/a%2"));
        assert_eq!(normalize("/%%2e").as_deref(), Ok("/%%2e"));
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for p in ["/docs/./a/../b/", "/x//y/%2e/z", "/a\\b/.%2e/c"] {
            let once = normalize(p).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{p:?}");
        }
    }
}

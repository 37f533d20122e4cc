//! How the fuzz targets read their input: text split into lines, so that seeds
//! are readable files (`fuzz/corpus/<target>/`).

/// The first `n - 1` lines of `data` and the rest (which may hold more lines);
/// `None` when `data` is not UTF-8.
pub fn fields<const N: usize>(data: &[u8]) -> Option<[&str; N]> {
    let text = std::str::from_utf8(data).ok()?;
    let mut out = [""; N];
    let mut rest = text;
    for slot in out.iter_mut().take(N - 1) {
        let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
        *slot = line;
        rest = tail;
    }
    out[N - 1] = rest;
    Some(out)
}

/// `name: value` lines as header pairs (a line without `:` is a name with an
/// empty value); values keep every byte after `": "` or `":"`.
pub fn header_lines(text: &str) -> Vec<(&[u8], &[u8])> {
    text.split('\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            (name.as_bytes(), value.as_bytes())
        })
        .collect()
}

/// The app every translation target translates for: published at
/// `https://wiki.acme.test/docs/`, served from `http://wiki.corp.local:8080/app/`.
pub fn url_map() -> postern_translate::UrlMap {
    postern_translate::UrlMap::new("https://wiki.acme.test/docs/", "http://wiki.corp.local:8080/app/")
        .expect("the fuzzing app's bases are valid")
}

fn translate_in_chunks(kind: postern_translate::BodyKind, body: &[u8], size: usize) -> Option<Vec<u8>> {
    let mut translator = postern_translate::BodyTranslator::new(&url_map(), kind).ok()?;
    let mut out = Vec::new();
    for chunk in body.chunks(size.max(1)) {
        out.extend_from_slice(&translator.feed(chunk).ok()?);
    }
    out.extend_from_slice(&translator.finish().ok()?);
    Some(out)
}

/// Translates `data` (after its first byte, which picks a chunk size) whole and
/// in chunks: the outputs are equal, and a body that names neither the internal
/// host nor its base path comes out byte for byte.
pub fn translate_body(kind: postern_translate::BodyKind, data: &[u8]) {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    let whole = translate_in_chunks(kind, body, body.len());
    let chunked = translate_in_chunks(kind, body, usize::from(size % 97) + 1);
    if let (Some(whole), Some(chunked)) = (&whole, &chunked) {
        assert!(whole == chunked, "chunking changed the output");
    }
    let lower = body.to_ascii_lowercase();
    let names = |needle: &[u8]| lower.windows(needle.len()).any(|w| w == needle);
    if let Some(whole) = whole
        && !names(b"app")
        && !names(b"corp")
    {
        assert!(whole == body, "a body without the internal base was changed");
    }
}

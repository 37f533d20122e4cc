//! Streaming replacement of fixed byte strings (the internal base URL in script text).

use std::sync::Arc;

/// Replaces each occurrence of a fixed set of patterns, leftmost first and, at one
/// position, the longest pattern first. Holds back at most the longest pattern
/// length minus one byte between calls; the output does not depend on chunking.
#[derive(Debug)]
pub(crate) struct LiteralReplacer {
    /// (pattern, replacement), longest pattern first; no pattern is empty.
    patterns: Arc<[(Vec<u8>, Vec<u8>)]>,
    held: Vec<u8>,
}

impl LiteralReplacer {
    pub(crate) fn new(patterns: &[(Vec<u8>, Vec<u8>)]) -> Self {
        let mut patterns: Vec<_> = patterns.iter().filter(|(p, _)| !p.is_empty()).cloned().collect();
        patterns.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        LiteralReplacer {
            patterns: patterns.into(),
            held: Vec::new(),
        }
    }

    /// Bytes held back (a possible start of a pattern).
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Replaces in `input`, appending what can be decided to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(input);
        let used = self.scan(&buf, false, out);
        buf.drain(..used);
        self.held = buf;
    }

    /// Ends the input: the held-back bytes cannot start a pattern any more.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let buf = std::mem::take(&mut self.held);
        self.scan(&buf, true, out);
    }

    /// Scans `buf`; returns how many bytes were decided (the rest may start a
    /// pattern and needs more input, unless `last`).
    fn scan(&self, buf: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        let mut copied = 0;
        'scan: while let Some(rest) = buf.get(i..).filter(|r| !r.is_empty()) {
            for (pattern, replacement) in self.patterns.iter() {
                if rest.starts_with(pattern) {
                    out.extend_from_slice(buf.get(copied..i).unwrap_or_default());
                    out.extend_from_slice(replacement);
                    i += pattern.len();
                    copied = i;
                    continue 'scan;
                }
                if !last && pattern.starts_with(rest) {
                    break 'scan;
                }
            }
            i += 1;
        }
        out.extend_from_slice(buf.get(copied..i).unwrap_or_default());
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replacer() -> LiteralReplacer {
        LiteralReplacer::new(&[
            (b"http://a/x/".to_vec(), b"https://b/".to_vec()),
            (b"http://a:80/x/".to_vec(), b"https://b/".to_vec()),
            (b"http://a/".to_vec(), b"SHORT".to_vec()),
        ])
    }

    fn run(input: &[u8], size: usize) -> (Vec<u8>, usize) {
        let mut r = replacer();
        let mut out = Vec::new();
        let mut most = 0;
        for piece in input.chunks(size.max(1)) {
            r.feed(piece, &mut out);
            most = most.max(r.held());
        }
        r.finish(&mut out);
        (out, most)
    }

    #[test]
    fn replaces_longest_match_first_whatever_the_chunking() {
        let input = b"s=\"http://a/x/p\";t='http://a:80/x/';u=http://a/y;v=http://a/x;w=http://a:8";
        let (whole, _) = run(input, input.len());
        assert_eq!(
            whole,
            b"s=\"https://b/p\";t='https://b/';u=SHORTy;v=SHORTx;w=http://a:8".to_vec()
        );
        for size in 1..input.len() {
            let (out, most) = run(input, size);
            assert_eq!(out, whole, "chunk size {size}");
            assert!(most < b"http://a:80/x/".len(), "held {most}");
        }
    }

    #[test]
    fn text_without_patterns_is_untouched() {
        let input = b"\xff\xfe plain h ht htt http:/ \x00";
        assert_eq!(run(input, 2).0, input.to_vec());
        assert_eq!(run(b"", 1).0, Vec::<u8>::new());
    }
}

//! Certificate serial numbers: generation and the text form stored and compared.
//!
//! The text form of a serial is the lowercase hex of its magnitude, two digits per byte,
//! without the `00` sign byte DER adds when the top bit is set and without any other
//! leading zero byte (zero itself is `00`). One serial has one text form, so the store
//! can compare serials as strings. The serials this crate issues are 16 bytes whose
//! first byte is `0x40..=0x7f` (126 random bits): their text form is always exactly
//! 32 characters and their DER encoding always exactly 16 bytes.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::error::PkiError;

/// Bytes in a serial this crate issues.
pub const SERIAL_LEN: usize = 16;

/// Longest serial RFC 5280 allows a CA to issue.
const MAX_SERIAL_LEN: usize = 20;

/// A fresh random positive serial of [`SERIAL_LEN`] bytes, from the system's secure
/// generator.
pub(crate) fn random_serial() -> Result<[u8; SERIAL_LEN], PkiError> {
    let mut bytes = [0u8; SERIAL_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Internal("system random generator failed".into()))?;
    // Clear the sign bit (positive) and set the next one (no leading zero byte).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

/// The text form of a serial given as the content octets of its DER INTEGER (or any
/// big-endian magnitude).
pub(crate) fn to_text(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let magnitude = &bytes[start..];
    if magnitude.is_empty() {
        return "00".into();
    }
    magnitude.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a serial's text form, tolerating upper case, `:` separators and leading
/// zeros (as `openssl` prints serials), and returns the canonical text form.
pub fn normalize_serial(text: &str) -> Result<String, PkiError> {
    parse_text(text).map(|bytes| to_text(&bytes))
}

/// The magnitude bytes of a serial's text form (see [`normalize_serial`]).
pub(crate) fn parse_text(text: &str) -> Result<Vec<u8>, PkiError> {
    let bad = || PkiError::BadParameter(format!("serial {text:?} is not 1 to {MAX_SERIAL_LEN} bytes of hex"));
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    };
    // Left-pad an odd count with a zero nibble, then pair up.
    let padded: Vec<u8> = if digits.len() % 2 == 1 {
        std::iter::once(b'0').chain(digits.iter().copied()).collect()
    } else {
        digits
    };
    let bytes: Vec<u8> = padded.chunks(2).map(|p| nibble(p[0]) << 4 | nibble(p[1])).collect();
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    let magnitude = bytes[start..].to_vec();
    if magnitude.len() > MAX_SERIAL_LEN {
        return Err(bad());
    }
    Ok(magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_sixteen_bytes_and_differ() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        for s in [a, b] {
            assert!((0x40..=0x7f).contains(&s[0]));
            let text = to_text(&s);
            assert_eq!(text.len(), 32);
            assert_eq!(parse_text(&text).unwrap(), s.to_vec());
        }
    }

    #[test]
    fn text_form_is_canonical() {
        assert_eq!(to_text(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(to_text(&[0, 0]), "00");
        assert_eq!(to_text(&[]), "00");
        assert_eq!(normalize_serial("00:8F:01").unwrap(), "8f01");
        assert_eq!(normalize_serial("abc").unwrap(), "0abc");
        assert_eq!(normalize_serial("0").unwrap(), "00");
        assert_eq!(parse_text("0").unwrap(), vec![0]);
    }

    #[test]
    fn bad_serials_are_refused() {
        for bad in ["", ":", "xyz", "12 34", "-1", &"ab".repeat(21)] {
            assert!(matches!(normalize_serial(bad), Err(PkiError::BadParameter(_))), "{bad}");
        }
        // 20 bytes after stripping leading zeros is fine.
        assert!(normalize_serial(&format!("0000{}", "ab".repeat(20))).is_ok());
    }
}

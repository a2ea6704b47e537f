//! The one canonical form of a request path, decided before any rule is matched.
//!
//! Upstreams read paths differently: Go's mux and Flask percent-decode, Tomcat and Jetty drop
//! `;parameters`, some routers fold case, IIS turns `\` into `/` and drops trailing dots, some
//! frameworks apply Unicode compatibility normalisation. A rule matched on the raw path can be
//! walked around by any spelling that one of them reads as the protected path. So a path is
//! accepted only when every such reading agrees with ours:
//!
//! 1. `%XX` escapes of unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded; the hex digits of
//!    every other escape are upper-cased.
//! 2. Refused (400): an escape of `/`, `\`, `%`, `;` or a control character; a raw `;`, `\`, control
//!    character, non-ASCII byte or any character RFC 3986 does not allow in a path; a malformed
//!    escape; escaped bytes that are not UTF-8 or not in Unicode NFC; a non-ASCII character that
//!    case mapping or compatibility normalisation (NFKC) turns into ASCII (fullwidth letters,
//!    ligatures, `K`, `ſ`, dot leaders, slash look-alikes, Unicode spaces…); an empty segment
//!    (`//`) anywhere but at the end; a `.` or `..` segment; a segment ending in `.` or whitespace.
//! 3. Rules match the fully decoded path; the reverse proxy forwards the canonical spelling. (Case is
//!    the rules' business: see [`crate::rules`].)

use unicode_normalization::UnicodeNormalization;

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// The canonical spelling: what the reverse proxy forwards.
    pub spelling: String,
    /// The decoded path: what rules match.
    pub decoded: String,
}

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not starting with `/`.
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%` without two hex digits.
    #[error("a malformed percent escape")]
    MalformedEscape,
    /// An escape of `/`, `\`, `%`, `;` or a control character.
    #[error("an escaped separator, percent sign, parameter or control character")]
    EscapedSeparator,
    /// A raw character a path may not hold (or one upstreams treat as a separator or parameter).
    #[error("a character that a path may not hold unescaped")]
    ForbiddenCharacter,
    /// Escaped bytes that are not shortest-form UTF-8 in NFC.
    #[error("escaped bytes that are not canonical UTF-8")]
    NonCanonicalUtf8,
    /// A non-ASCII character some reader turns into ASCII.
    #[error("a character that case mapping or compatibility normalisation turns into ASCII")]
    AsciiLookalike,
    /// `//`, `.`, `..`, or a segment ending in `.` or whitespace.
    #[error("an empty, dot or trailing-dot segment")]
    AmbiguousSegment,
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

// RFC 3986 `pchar` and `/`, without `;` (a parameter delimiter for Tomcat, Jetty and others).
fn is_allowed_raw(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'/' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

/// Whether some reader turns `c` (non-ASCII) into ASCII: case mapping (`K` → `k`, `ſ` → `S`,
/// `ß` → `SS`) or compatibility normalisation (`ａ` → `a`, `․` → `.`, `ﬁ` → `fi`, U+2000 → space).
fn turns_ascii(c: char) -> bool {
    c.to_lowercase()
        .chain(c.to_uppercase())
        .chain(std::iter::once(c).nfkc())
        .any(|mapped| mapped.is_ascii())
}

/// The canonical form of `raw` (a path without its query string).
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = raw.as_bytes();
    let mut spelling = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' {
            let (Some(high), Some(low)) = (
                bytes.get(at + 1).copied().and_then(hex),
                bytes.get(at + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::MalformedEscape);
            };
            let value = high << 4 | low;
            if matches!(value, b'/' | b'\\' | b'%' | b';') || value.is_ascii_control() {
                return Err(PathError::EscapedSeparator);
            }
            if is_unreserved(value) {
                spelling.push(char::from(value));
            } else {
                spelling.push_str(&format!("%{value:02X}"));
            }
            decoded.push(value);
            at += 3;
        } else if is_allowed_raw(byte) {
            spelling.push(char::from(byte));
            decoded.push(byte);
            at += 1;
        } else {
            return Err(PathError::ForbiddenCharacter);
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NonCanonicalUtf8)?;
    if !unicode_normalization::is_nfc(&decoded) {
        return Err(PathError::NonCanonicalUtf8);
    }
    if decoded.chars().any(|c| !c.is_ascii() && turns_ascii(c)) {
        return Err(PathError::AsciiLookalike);
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let last = segments.len() - 1;
    for (position, segment) in segments.iter().enumerate() {
        let ambiguous = if segment.is_empty() {
            position != last
        } else {
            matches!(*segment, "." | "..")
                || segment.ends_with('.')
                || segment.ends_with(char::is_whitespace)
                || segment.starts_with(char::is_whitespace)
        };
        if ambiguous {
            return Err(PathError::AmbiguousSegment);
        }
    }
    Ok(CanonicalPath { spelling, decoded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_spellings_of_a_path_become_one() {
        for spelling in ["/admin/users", "/%61dmin/users", "/adm%69n/users"] {
            assert_eq!(
                canonicalize(spelling).unwrap().decoded,
                "/admin/users",
                "{spelling}"
            );
        }
        let path = canonicalize("/%61%2a%c3%a9/x").unwrap();
        assert_eq!(path.spelling, "/a%2A%C3%A9/x");
        assert_eq!(path.decoded, "/a*é/x");
        assert_eq!(canonicalize(&path.spelling).unwrap(), path);
    }

    #[test]
    fn paths_that_upstreams_read_differently_are_refused() {
        use PathError::*;
        for (raw, error) in [
            ("admin", NotAbsolute),
            ("/admin;x/users", ForbiddenCharacter),
            ("/public/..;/admin", ForbiddenCharacter),
            ("/admin%3Bx", EscapedSeparator),
            ("/a%2Fb", EscapedSeparator),
            ("/a%5cb", EscapedSeparator),
            ("/%2561dmin", EscapedSeparator),
            ("/a%00", EscapedSeparator),
            ("/a%0a", EscapedSeparator),
            ("/a%zz", MalformedEscape),
            ("/a%4", MalformedEscape),
            ("/a\\b", ForbiddenCharacter),
            ("/a b", ForbiddenCharacter),
            ("/café", ForbiddenCharacter),
            ("/%c0%af", NonCanonicalUtf8),
            ("/%ff", NonCanonicalUtf8),
            ("/cafe%CC%81", NonCanonicalUtf8),
            ("/%EF%BD%81dmin", AsciiLookalike),
            ("/%E2%84%AAey", NonCanonicalUtf8),
            ("/%C5%BFecret", AsciiLookalike),
            ("/%E2%80%A4%E2%80%A4/admin", AsciiLookalike),
            ("/a%E2%80%83b", AsciiLookalike),
            ("//admin", AmbiguousSegment),
            ("/public//admin", AmbiguousSegment),
            ("/public/../admin", AmbiguousSegment),
            ("/public/%2e%2e/admin", AmbiguousSegment),
            ("/public/./x", AmbiguousSegment),
            ("/admin./x", AmbiguousSegment),
            ("/admin%20/x", AmbiguousSegment),
        ] {
            assert_eq!(canonicalize(raw), Err(error), "{raw}");
        }
        for fine in [
            "/",
            "/admin/",
            "/files/a.b/c..d",
            "/q%20x",
            "/caf%C3%A9",
            "/.well-known/x",
            "/~u/a+b:c@d",
        ] {
            assert!(canonicalize(fine).is_ok(), "{fine}");
        }
    }
}

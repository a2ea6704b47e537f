//! Canonical base64url: the only encoding a token segment may use.

/// Whether `segment` is unpadded base64url in its one canonical form: only the URL-safe alphabet,
/// no `=`, a possible length, and zero bits where the last character carries padding bits (so no
/// two strings decode to the same bytes).
pub fn is_canonical_base64url(segment: &[u8]) -> bool {
    let Some(&last) = segment.last() else {
        return false;
    };
    if !segment.iter().all(|&c| sextet(c).is_some()) {
        return false;
    }
    let last = sextet(last).unwrap_or(0);
    match segment.len() % 4 {
        1 => false,
        2 => last & 0b1111 == 0,
        3 => last & 0b11 == 0,
        _ => true,
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

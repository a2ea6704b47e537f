//! Reading the bearer token of a request (RFC 6750 §2.1, header form only).

use poem::http::HeaderMap;
use poem::http::header::AUTHORIZATION;

/// Why no token could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// No `Authorization` header (a query-string `access_token` is deliberately never read).
    #[error("no bearer token")]
    Missing,
    /// More than one `Authorization` header, another scheme, or an empty token.
    #[error("malformed authorization header")]
    Malformed,
}

/// The token of the one `Authorization: Bearer <token>` header; the scheme is case-insensitive.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(BearerError::Missing)?;
    if values.next().is_some() {
        return Err(BearerError::Malformed);
    }
    // Plain UTF-8 validation (fast for ASCII); the validator accepts base64url characters only.
    let value = std::str::from_utf8(value.as_bytes()).map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(BearerError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn one_bearer_header_in_any_case_yields_its_token() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER abc"])), Ok("abc"));
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(bearer_token(&headers(&[])), Err(BearerError::Missing));
        for bad in [
            &["Basic abc"][..],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a", "Bearer a"],
        ] {
            assert_eq!(
                bearer_token(&headers(bad)),
                Err(BearerError::Malformed),
                "{bad:?}"
            );
        }
    }
}

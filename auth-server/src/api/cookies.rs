//! The refresh-token cookie: httpOnly, Secure, SameSite=Strict, scoped to `/api/auth`.

use poem::web::cookie::{Cookie, SameSite};
use time::OffsetDateTime;

use crate::service::grants::Grant;
use crate::settings::RefreshDelivery;

/// The cookie's name.
pub const REFRESH_COOKIE: &str = "refresh_token";

fn cookie(value: String, max_age: i64) -> String {
    let mut cookie = Cookie::new_with_str(REFRESH_COOKIE, value);
    cookie.set_http_only(true);
    cookie.set_secure(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_path("/api/auth");
    cookie.set_max_age(std::time::Duration::from_secs(
        u64::try_from(max_age).unwrap_or(0),
    ));
    cookie.to_string()
}

/// The `Set-Cookie` value carrying the grant's refresh token, when cookies are in use.
pub fn set_refresh_cookie(delivery: RefreshDelivery, grant: &Grant) -> Option<String> {
    if delivery == RefreshDelivery::Body {
        return None;
    }
    let max_age = (grant.refresh_expires_at - OffsetDateTime::now_utc()).whole_seconds();
    Some(cookie(grant.refresh.encode(), max_age))
}

/// The `Set-Cookie` value that removes the cookie, when cookies are in use.
pub fn clear_refresh_cookie(delivery: RefreshDelivery) -> Option<String> {
    (delivery != RefreshDelivery::Body).then(|| cookie(String::new(), 0))
}

/// Whether the refresh token also goes in the JSON body.
pub fn in_body(delivery: RefreshDelivery) -> bool {
    delivery != RefreshDelivery::Cookie
}

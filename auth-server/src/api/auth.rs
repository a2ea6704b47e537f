//! `/api/auth/*`: registering, logging in, refreshing, logging out, the current user.

use poem::Request;
use poem_openapi::param::Cookie;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::Tag;
use super::client::client_info;
use super::cookies::{clear_refresh_cookie, in_body, set_refresh_cookie};
use super::json_body::{JsonBody, OptionalJsonBody};
use super::models::{
    AuthResponse, ChangePasswordRequest, LoginRequest, RefreshRequest, RegisterRequest, UserView,
};
use super::responses::{BODY, CONFLICT, Errors, FORBIDDEN, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE};
use super::security::BearerAuth;
use crate::error::{ApiError, FieldError};
use crate::service::grants::Grant;
use crate::service::{accounts, changes, login, logout, refresh};
use crate::state::{AppState, SharedState};

/// Account creation, login and token lifecycle.
pub struct AuthApi {
    state: SharedState,
}

impl AuthApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// New tokens, with the refresh cookie when cookies are in use.
#[derive(ApiResponse)]
pub enum GrantResponse {
    /// The account, its tokens and its session.
    #[oai(status = 200)]
    Ok(
        Json<AuthResponse>,
        /// The refresh token as an httpOnly cookie (only with `AUTH_REFRESH_TOKEN_DELIVERY` `cookie` or `both`).
        #[oai(header = "Set-Cookie")]
        Option<String>,
    ),
}

/// A new account.
#[derive(ApiResponse)]
// One per request, built once and moved once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum CreatedResponse {
    /// The account was created; tokens for its first session.
    #[oai(status = 201)]
    Created(
        Json<AuthResponse>,
        /// The refresh token as an httpOnly cookie (only with cookie delivery).
        #[oai(header = "Set-Cookie")]
        Option<String>,
    ),
    /// Only with `AUTH_ENUMERATION_SAFE_REGISTRATION`: the same answer for a new and a taken
    /// address. A new account exists (log in once the address is verified); the owner of a taken
    /// one is told by mail.
    #[oai(status = 202)]
    Accepted(Json<super::recovery::Accepted>),
}

/// Nothing to return.
#[derive(ApiResponse)]
pub enum LoggedOut {
    /// Done.
    #[oai(status = 204)]
    NoContent(
        /// Removes the refresh cookie (only with cookie delivery).
        #[oai(header = "Set-Cookie")]
        Option<String>,
    ),
}

fn granted(state: &AppState, grant: Grant) -> (Json<AuthResponse>, Option<String>) {
    let cookie = set_refresh_cookie(state.refresh_delivery, &grant);
    let body = AuthResponse::new(
        grant,
        state.lifetimes.access.as_secs(),
        in_body(state.refresh_delivery),
    );
    (Json(body), cookie)
}

#[OpenApi(prefix_path = "/api/auth", tag = "Tag::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates the account and logs it in: the response holds the user, a token pair and the new
    /// session. Emails are unique case-insensitively.
    #[oai(path = "/register", method = "post", operation_id = "register")]
    async fn register(
        &self,
        req: &Request,
        body: JsonBody<RegisterRequest>,
    ) -> Result<CreatedResponse, Errors<{ BODY | CONFLICT | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        let request = body.0;
        let registration = accounts::Registration {
            email: &request.email,
            password: &request.password,
            username: request.username.as_deref(),
            first_name: request.first_name.as_deref(),
            last_name: request.last_name.as_deref(),
        };
        let registered =
            accounts::register(state, registration, &client_info(req, state.trusted_proxy_hops)).await?;
        match registered {
            accounts::Registered::Granted(grant) => {
                let (body, cookie) = granted(state, *grant);
                Ok(CreatedResponse::Created(body, cookie))
            }
            accounts::Registered::Accepted => {
                Ok(CreatedResponse::Accepted(Json(super::recovery::Accepted {
                    message:
                        "If the address is new, the account exists now: confirm the address with the link we \
                          mailed, then log in."
                            .to_owned(),
                })))
            }
        }
    }

    /// Log in
    ///
    /// Checks an email address (or username) and password and starts a session. Every failure is
    /// the same 401, whether the account exists or not. With `AUTH_REQUIRE_VERIFIED_EMAIL`, the
    /// right password for an unverified address is a 403 `email-not-verified`.
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &Request,
        body: JsonBody<LoginRequest>,
    ) -> Result<GrantResponse, Errors<{ BODY | UNAUTHORIZED | FORBIDDEN | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        let request = body.0;
        let name = match (&request.email, &request.username) {
            (Some(email), None) => login::LoginName::Email(email),
            (None, Some(username)) => login::LoginName::Username(username),
            _ => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "email",
                    "give exactly one of email and username",
                )])
                .into());
            }
        };
        let client = client_info(req, state.trusted_proxy_hops);
        let logged_in = login::login(
            state,
            name,
            &request.password,
            request.device_token.as_deref(),
            &client,
        )
        .await?;
        let (mut body, cookie) = granted(state, logged_in.grant);
        body.0.device_token = logged_in.device_token;
        Ok(GrantResponse::Ok(body, cookie))
    }

    /// Refresh the tokens
    ///
    /// Exchanges a refresh token (body or cookie) for a new pair; the old refresh token stops
    /// working. Presenting it again within a few seconds returns the same new refresh token
    /// (safe retries); presenting it later revokes the whole session.
    #[oai(path = "/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        req: &Request,
        body: OptionalJsonBody<RefreshRequest>,
        #[oai(name = "refresh_token")] cookie: Cookie<Option<String>>,
    ) -> Result<GrantResponse, Errors<{ BODY | UNAUTHORIZED | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        let presented = body
            .0
            .refresh_token
            .or(cookie.0)
            .ok_or(ApiError::BadRefreshToken)?;
        let grant = refresh::refresh(state, &presented, &client_info(req, state.trusted_proxy_hops)).await?;
        let (body, cookie) = granted(state, grant);
        Ok(GrantResponse::Ok(body, cookie))
    }

    /// Log out
    ///
    /// Revokes this session and this access token everywhere (sidecars included).
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<LoggedOut, Errors<{ UNAUTHORIZED | UNAVAILABLE }>> {
        let state = &*self.state;
        logout::logout(state, &auth.0, &client_info(req, state.trusted_proxy_hops)).await?;
        Ok(LoggedOut::NoContent(clear_refresh_cookie(state.refresh_delivery)))
    }

    /// Log out everywhere
    ///
    /// Revokes every session of the user and every access token issued to them so far.
    #[oai(path = "/logout-all", method = "post", operation_id = "logoutAll")]
    async fn logout_all(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<LoggedOut, Errors<{ UNAUTHORIZED | UNAVAILABLE }>> {
        let state = &*self.state;
        logout::logout_all(state, &auth.0, &client_info(req, state.trusted_proxy_hops)).await?;
        Ok(LoggedOut::NoContent(clear_refresh_cookie(state.refresh_delivery)))
    }

    /// The current user
    #[oai(path = "/me", method = "get", operation_id = "getMe")]
    async fn me(&self, auth: BearerAuth) -> Result<Json<UserView>, Errors<{ UNAUTHORIZED | UNAVAILABLE }>> {
        Ok(Json(changes::current_user(&self.state, &auth.0).await?.into()))
    }

    /// Change the password
    ///
    /// Needs the current password. Every session and token of the user is revoked; the response
    /// holds tokens for a new session so this client stays logged in.
    #[oai(path = "/change-password", method = "post", operation_id = "changePassword")]
    async fn change_password(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: JsonBody<ChangePasswordRequest>,
    ) -> Result<GrantResponse, Errors<{ BODY | UNAUTHORIZED | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        let request = body.0;
        let client = client_info(req, state.trusted_proxy_hops);
        let grant = changes::change_password(
            state,
            &auth.0,
            &request.current_password,
            &request.new_password,
            &client,
        )
        .await?;
        let (body, cookie) = granted(state, grant);
        Ok(GrantResponse::Ok(body, cookie))
    }
}

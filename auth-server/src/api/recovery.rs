//! `/api/auth/forgot-password`, `reset-password`, `verify-email`, `resend-verification`.

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::Tag;
use super::client::client_info;
use super::json_body::JsonBody;
use super::models::EXAMPLE_EMAIL;
use super::responses::{BODY, Errors, TOO_MANY_REQUESTS};
use crate::service::recovery;
use crate::state::SharedState;

/// Getting back into an account and proving its address.
pub struct RecoveryApi {
    state: SharedState,
}

impl RecoveryApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// The shape of a mailed token (43 characters of base64url); the real one comes from the link.
const EXAMPLE_TOKEN: &str = "q3XvY1m0b5rGZfKq2N8cJtLwUe7sHaPd9VxBnC4oRiE";

/// An address to mail.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    /// The account's email address.
    pub email: String,
}

impl Example for AddressRequest {
    fn example() -> Self {
        Self {
            email: EXAMPLE_EMAIL.to_owned(),
        }
    }
}

/// A new password, with the token from the reset mail.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The token from the link in the mail.
    pub token: String,
    /// The new password: 8 to 72 bytes, not common.
    pub new_password: String,
}

impl Example for ResetPasswordRequest {
    fn example() -> Self {
        Self {
            token: EXAMPLE_TOKEN.to_owned(),
            new_password: "a new and longer passphrase".to_owned(),
        }
    }
}

/// The token from the verification mail.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the link in the mail.
    pub token: String,
}

impl Example for TokenRequest {
    fn example() -> Self {
        Self {
            token: EXAMPLE_TOKEN.to_owned(),
        }
    }
}

/// The same answer whatever the address.
#[derive(Debug, Object)]
pub struct Accepted {
    /// What happens next.
    pub message: String,
}

/// Accepted: a mail goes out if there is one to send.
#[derive(ApiResponse)]
pub enum AcceptedResponse {
    /// Accepted.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

/// Done.
#[derive(ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

fn accepted(what: &str) -> AcceptedResponse {
    AcceptedResponse::Accepted(Json(Accepted {
        message: format!("If an account uses this address, {what} is on its way."),
    }))
}

#[OpenApi(prefix_path = "/api/auth", tag = "Tag::Auth")]
impl RecoveryApi {
    /// Ask for a password reset
    ///
    /// Mails a single-use link (valid one hour by default) to the address if an account uses it.
    /// The answer is the same, in about the same time, whether or not one does.
    #[oai(path = "/forgot-password", method = "post", operation_id = "forgotPassword")]
    async fn forgot_password(
        &self,
        req: &Request,
        body: JsonBody<AddressRequest>,
    ) -> Result<AcceptedResponse, Errors<{ BODY | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        recovery::forgot_password(state, &body.0.email, &client_info(req, state.trusted_proxy_hops)).await?;
        Ok(accepted("a link to reset the password"))
    }

    /// Reset the password
    ///
    /// Sets a new password with the token from the reset mail. The address counts as verified,
    /// any lockout ends, and every session and token of the account is revoked.
    #[oai(path = "/reset-password", method = "post", operation_id = "resetPassword")]
    async fn reset_password(
        &self,
        req: &Request,
        body: JsonBody<ResetPasswordRequest>,
    ) -> Result<Done, Errors<{ BODY | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        let request = body.0;
        let client = client_info(req, state.trusted_proxy_hops);
        recovery::reset_password(state, &request.token, &request.new_password, &client).await?;
        Ok(Done::NoContent)
    }

    /// Verify the email address
    ///
    /// Marks the address verified with the token from the verification mail.
    #[oai(path = "/verify-email", method = "post", operation_id = "verifyEmail")]
    async fn verify_email(
        &self,
        req: &Request,
        body: JsonBody<TokenRequest>,
    ) -> Result<Done, Errors<{ BODY | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        recovery::verify_email(state, &body.0.token, &client_info(req, state.trusted_proxy_hops)).await?;
        Ok(Done::NoContent)
    }

    /// Send the verification mail again
    ///
    /// Mails a new verification link if an account uses the address and it is not verified yet;
    /// the answer is the same either way.
    #[oai(
        path = "/resend-verification",
        method = "post",
        operation_id = "resendVerification"
    )]
    async fn resend_verification(
        &self,
        req: &Request,
        body: JsonBody<AddressRequest>,
    ) -> Result<AcceptedResponse, Errors<{ BODY | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        recovery::resend_verification(state, &body.0.email, &client_info(req, state.trusted_proxy_hops))
            .await?;
        Ok(accepted("a verification link"))
    }
}

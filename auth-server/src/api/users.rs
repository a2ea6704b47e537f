//! `/api/users/*`: the profile and the account.

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::Tag;
use super::client::client_info;
use super::json_body::JsonBody;
use super::models::{DeleteAccountRequest, ProfileUpdate, UserView};
use super::responses::{BODY, CONFLICT, Errors, TOO_MANY_REQUESTS, UNAUTHORIZED, UNAVAILABLE};
use super::security::BearerAuth;
use crate::service::changes;
use crate::state::SharedState;
use crate::store::users::ProfileChanges;

/// The user's own profile and account.
pub struct UsersApi {
    state: SharedState,
}

impl UsersApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// A deleted account.
#[derive(ApiResponse)]
pub enum Deleted {
    /// The account is deleted and every session and token revoked.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/users", tag = "Tag::Users")]
impl UsersApi {
    /// My profile
    #[oai(path = "/profile", method = "get", operation_id = "getProfile")]
    async fn profile(
        &self,
        auth: BearerAuth,
    ) -> Result<Json<UserView>, Errors<{ UNAUTHORIZED | UNAVAILABLE }>> {
        Ok(Json(changes::current_user(&self.state, &auth.0).await?.into()))
    }

    /// Update my profile
    ///
    /// Changes the fields present in the body; `null` clears a field. Usernames are unique.
    #[oai(path = "/profile", method = "put", operation_id = "updateProfile")]
    async fn update_profile(
        &self,
        auth: BearerAuth,
        body: JsonBody<ProfileUpdate>,
    ) -> Result<Json<UserView>, Errors<{ BODY | UNAUTHORIZED | CONFLICT }>> {
        let update = body.0;
        let changes = ProfileChanges {
            username: update.username.into(),
            first_name: update.first_name.into(),
            last_name: update.last_name.into(),
            profile: update.profile,
        };
        Ok(Json(
            changes::update_profile(&self.state, &auth.0, changes)
                .await?
                .into(),
        ))
    }

    /// Delete my account
    ///
    /// Needs the password again. The account is deleted (its email address becomes free) and
    /// every session and token is revoked.
    #[oai(path = "/account", method = "delete", operation_id = "deleteAccount")]
    async fn delete_account(
        &self,
        req: &Request,
        auth: BearerAuth,
        body: JsonBody<DeleteAccountRequest>,
    ) -> Result<Deleted, Errors<{ BODY | UNAUTHORIZED | TOO_MANY_REQUESTS }>> {
        let state = &*self.state;
        changes::delete_account(
            state,
            &auth.0,
            &body.0.password,
            &client_info(req, state.trusted_proxy_hops),
        )
        .await?;
        Ok(Deleted::NoContent)
    }
}

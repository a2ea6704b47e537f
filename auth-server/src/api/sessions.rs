//! `/api/auth/sessions`: the user's sessions.

use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};
use uuid::Uuid;

use super::Tag;
use super::client::client_info;
use super::models::SessionView;
use super::responses::{BAD_REQUEST, Errors, NOT_FOUND, UNAUTHORIZED, UNAVAILABLE};
use super::security::BearerAuth;
use crate::service::logout;
use crate::state::SharedState;
use crate::store::sessions;

/// Listing and revoking sessions.
pub struct SessionsApi {
    state: SharedState,
}

impl SessionsApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// A revoked session.
#[derive(ApiResponse)]
pub enum Revoked {
    /// The session and its tokens are revoked.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/auth/sessions", tag = "Tag::Sessions")]
impl SessionsApi {
    /// List my sessions
    ///
    /// Every live session of the user, newest first, with where it was created and whether it
    /// is the one making this request.
    #[oai(path = "/", method = "get", operation_id = "listSessions")]
    async fn list(
        &self,
        auth: BearerAuth,
    ) -> Result<Json<Vec<SessionView>>, Errors<{ UNAUTHORIZED | UNAVAILABLE }>> {
        let claims = &auth.0.claims;
        let sessions = sessions::list_active(&self.state.db, claims.sub).await?;
        Ok(Json(
            sessions
                .into_iter()
                .map(|session| SessionView::new(session, claims.sid))
                .collect(),
        ))
    }

    /// Revoke one of my sessions
    ///
    /// Ends the session (its refresh token stops working) and revokes its access tokens.
    #[oai(path = "/:id", method = "delete", operation_id = "revokeSession")]
    async fn revoke(
        &self,
        req: &Request,
        auth: BearerAuth,
        /// The session id.
        id: Path<Uuid>,
    ) -> Result<Revoked, Errors<{ BAD_REQUEST | UNAUTHORIZED | NOT_FOUND | UNAVAILABLE }>> {
        let state = &*self.state;
        logout::revoke_session(state, &auth.0, id.0, &client_info(req, state.trusted_proxy_hops)).await?;
        Ok(Revoked::NoContent)
    }
}

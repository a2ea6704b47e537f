//! The bearer security scheme: a valid, unrevoked access token.

use auth_core::revocation::{LookupOutcome, lookup};
use auth_core::token::{VerifiedToken, bearer_token};
use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::error::ApiError;
use crate::state::{AppState, SharedState};
use crate::store::revoked;

/// A request authenticated by an access token from `POST /api/auth/login`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "authenticate")]
pub struct BearerAuth(pub VerifiedToken);

/// Verifies the token and checks the revocation keys in Redis (the server has Redis at hand, so
/// it does not keep the verifier's in-memory index). When Redis is unreachable or has lost the
/// revocation state, PostgreSQL, which holds every revocation durably, answers instead, so the
/// account API (logout above all) keeps working through a Redis outage.
async fn authenticate(req: &Request, _bearer: Bearer) -> poem::Result<VerifiedToken> {
    let state = req
        .data::<SharedState>()
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("no application state")))?;
    let rejected = |reason: &str| {
        state.metrics.token_rejections.with_label_values(&[reason]).inc();
        poem::Error::from(ApiError::BadToken)
    };
    let token = bearer_token(req.headers()).map_err(|_| rejected("malformed_header"))?;
    let verified = state
        .validator
        .validate(token, state.keys.load().verification_keys())
        .map_err(|error| rejected(error.label()))?;
    let revoked = match revoked_in_redis(state, &verified).await {
        Some(revoked) => revoked,
        None => revoked::applies_to(&state.db, &verified)
            .await
            .map_err(ApiError::from)?,
    };
    if revoked {
        Err(rejected("revoked"))
    } else {
        Ok(verified)
    }
}

/// The answer of the revocation keys, or `None` when Redis cannot be asked or has lost the
/// revocation state (an absent key then proves nothing).
async fn revoked_in_redis(state: &AppState, token: &VerifiedToken) -> Option<bool> {
    let mut conn = state.redis.get().await.ok()?;
    match lookup(&mut *conn, &state.redis_keys, token).await.ok()? {
        LookupOutcome::Clear => Some(false),
        LookupOutcome::Revoked(_) => Some(true),
        LookupOutcome::Unknown => None,
    }
}

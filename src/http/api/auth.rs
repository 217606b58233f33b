//! Bearer-token authentication for the Results API: an extractor turning
//! `Authorization: Bearer igr_…` into a typed [`Caller`]. Handlers take a
//! `Caller` and never see the header. The token is looked up by its SHA-256
//! on every request (a primary-key-sized index lookup), so a revoked token
//! fails on its very next request on every replica; nothing is cached.
//! Missing, malformed, unknown and revoked tokens all get the same `401`
//! with `WWW-Authenticate: Bearer`; a token without the route's scope gets
//! `403 forbidden`. A token in the query string is ignored.

use std::net::IpAddr;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::audit::{Action, Actor, AuditEntry};
use crate::error::AppError;
use crate::security::ClientIp;
use crate::store::{Store, StoreError};
use crate::tokens::{self, Scope, TokenHash};

/// Who is calling: the token's name and scopes, and where from.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
    /// The token's hash, to look it up again before a late answer.
    token: TokenHash,
}

impl Caller {
    /// `Ok` when the token holds `scope`, else `403 forbidden`.
    pub fn require(&self, scope: Scope) -> Result<(), AppError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(AppError::MissingScope(scope.as_str()))
        }
    }

    /// `Ok` while the token still exists and is not revoked, else `401`.
    /// A request that waited (a long-poll) checks again before it answers:
    /// a token revoked meanwhile must not receive, or be audited for, what
    /// was committed after its revocation.
    pub async fn still_authorised(&self, store: &Store) -> Result<(), AppError> {
        match store
            .token_by_hash(&self.token)
            .await
            .map_err(store_error)?
        {
            Some(_) => Ok(()),
            None => Err(AppError::Unauthorized),
        }
    }

    /// An audit record of `action` on `target` by this caller.
    pub fn audit(&self, action: Action, target: Option<String>) -> AuditEntry {
        AuditEntry {
            client_ip: self.client_ip,
            request_id: self.request_id.clone(),
            ..AuditEntry::new(Actor::Token(self.name.clone()), action, target)
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Store: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let mut values = parts.headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(AppError::Unauthorized);
        };
        let token = tokens::from_authorization(value.as_bytes()).ok_or(AppError::Unauthorized)?;
        let token = TokenHash::of(token);
        let store = &Store::from_ref(state);
        let found = store
            .token_by_hash(&token)
            .await
            .map_err(store_error)?
            .ok_or(AppError::Unauthorized)?;
        let now = crate::audit::now_micros();
        let stale = found
            .last_used_at
            .is_none_or(|t| now - t >= crate::store::LAST_USED_GRANULARITY_MICROS);
        if stale {
            // Bookkeeping, not authorisation: off the request's path.
            let (store, id) = (store.clone(), found.id);
            tokio::spawn(async move {
                if let Err(e) = store.touch_token(id).await {
                    tracing::debug!(error = %e, "cannot record token use");
                }
            });
        }
        Ok(Caller {
            name: found.name,
            scopes: found.scopes,
            client_ip: parts.extensions.get::<ClientIp>().map(|c| c.0),
            request_id: parts
                .headers
                .get(crate::http::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            token,
        })
    }
}

/// A store failure as the API answers it: 503 when transient, else 500;
/// the detail is logged here, never sent.
pub fn store_error(e: StoreError) -> AppError {
    match e {
        StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "database unavailable for an API request");
            AppError::StoreUnavailable
        }
        e => {
            tracing::error!(error = %e, "database error in an API request");
            AppError::Internal
        }
    }
}

//! Results API tokens' SQL. Tokens are found by the SHA-256 of the token
//! (a unique index), never by comparing the token itself; a revoked token
//! is not found, so revocation holds from the next request on every
//! replica. Creation and revocation are audited in the same transaction.

use super::{Store, StoreError};
use crate::audit::{self, AuditEntry};
use crate::tokens::{scopes_from_text, scopes_to_text, Scope, TokenHash, TokenInfo};

/// How stale `last_used_at` may get before a request writes it again: one
/// write a minute per busy token, not one per request.
pub const LAST_USED_GRANULARITY_MICROS: i64 = 60 * 1_000_000;

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: i64,
    name: String,
    scopes: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<TokenRow> for TokenInfo {
    fn from(r: TokenRow) -> Self {
        Self {
            id: r.id,
            name: r.name,
            scopes: scopes_from_text(&r.scopes),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        }
    }
}

const COLUMNS: &str = "id, name, scopes, created_at, last_used_at, revoked_at";

impl Store {
    /// Stores a new token's hash under `name` with its audit record; `false`
    /// (nothing written) when a token of that name is active.
    pub async fn create_token(
        &self,
        name: &str,
        hash: &TokenHash,
        scopes: &[Scope],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let active: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM api_tokens WHERE name = $1 AND revoked_at IS NULL",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if active.is_some() {
                return Ok(false);
            }
            let inserted = sqlx::query(
                "INSERT INTO api_tokens (name, token_hash, scopes, created_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(&hash.0[..])
            .bind(scopes_to_text(scopes))
            .bind(audit::now_micros())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                // A concurrent create of the same name won the unique index.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
            super::audit::append(&mut *tx, &audit.clone().count(1)).await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// The active token with this hash, if any.
    pub async fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenInfo>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        let row = on_backend!(self, s => sqlx::query_as::<_, TokenRow>(&sql)
            .bind(&hash.0[..])
            .fetch_optional(s.pool())
            .await?);
        Ok(row.map(TokenInfo::from))
    }

    /// Records that token `id` was used now, unless that was recorded less
    /// than a minute ago.
    pub async fn touch_token(&self, id: i64) -> Result<(), StoreError> {
        let now = audit::now_micros();
        on_backend!(self, s => sqlx::query(
            "UPDATE api_tokens SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - LAST_USED_GRANULARITY_MICROS)
        .execute(s.pool())
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// Every token, revoked ones included, oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id");
        let rows = on_backend!(self, s => sqlx::query_as::<_, TokenRow>(&sql)
            .fetch_all(s.pool())
            .await?);
        Ok(rows.into_iter().map(TokenInfo::from).collect())
    }

    /// Revokes the active token `name` with its audit record; `false` when
    /// there is none.
    pub async fn revoke_token(&self, name: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        on_backend!(self, s => {
            let mut tx = s.pool().begin().await?;
            let revoked = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
            )
            .bind(audit::now_micros())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if revoked == 0 {
                return Ok(false);
            }
            super::audit::append(&mut *tx, &audit.clone().count(revoked)).await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}

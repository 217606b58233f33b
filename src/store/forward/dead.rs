//! Dead letters: the messages a destination refused for good, and their
//! replay (`forward dead replay`).

use super::{now_micros, DeadLetter};
use crate::store::feed::Position;
use crate::store::{Store, StoreError};

impl Store {
    /// Dead letters, of one destination or all, oldest first.
    pub async fn forward_dead(
        &self,
        name: Option<&str>,
        only_replays: bool,
    ) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        const SQL: &str = "SELECT destination, message_id, notice, tx, row_id, reason, dead_at \
             FROM forward_dead WHERE ($1 IS NULL OR destination = $1) AND (NOT $2 OR replay) \
             ORDER BY id";
        let rows: Vec<(String, String, bool, i64, i64, String, i64)> = on_backend!(self, s => sqlx::query_as(SQL)
                .bind(name)
                .bind(only_replays)
                .fetch_all(s.pool())
                .await?);
        Ok(rows
            .into_iter()
            .map(|(dest, message_id, notice, tx, id, reason, dead_at)| {
                (
                    dest,
                    DeadLetter {
                        message_id,
                        notice,
                        position: Position { tx, id },
                        reason,
                        dead_at,
                    },
                )
            })
            .collect())
    }

    /// Marks dead letters of `name` (one, or all) to be sent again; how many.
    pub async fn forward_request_replay(
        &self,
        name: &str,
        message_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "UPDATE forward_dead SET replay = true \
             WHERE destination = $1 AND ($2 IS NULL OR message_id = $2)";
        Ok(on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .execute(s.pool())
            .await?
            .rows_affected()))
    }

    /// A replayed dead letter was confirmed (or is gone): forgets it.
    pub async fn forward_dead_done(&self, name: &str, message_id: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM forward_dead WHERE destination = $1 AND message_id = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }

    /// A replayed dead letter was refused again: stays dead, with `reason`.
    pub async fn forward_dead_again(
        &self,
        name: &str,
        message_id: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE forward_dead SET replay = false, reason = $3, dead_at = $4 \
             WHERE destination = $1 AND message_id = $2";
        on_backend!(self, s => sqlx::query(SQL)
            .bind(name)
            .bind(message_id)
            .bind(reason)
            .bind(now_micros())
            .execute(s.pool())
            .await?
            .rows_affected());
        Ok(())
    }
}

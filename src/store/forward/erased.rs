//! Erasure (inside its transaction): which of the deleted events each
//! destination must hear of, and the notice that names them (CONTRACT §11).
//!
//! A destination is told only of the erased events it forwarded or may have
//! in flight: its filters (`events`, `valid`) admit them, and they lie at
//! or before its position plus one relay batch ([`RELAY_BATCH`] feed items
//! read ahead of the confirmed position). The read-ahead is measured after
//! the delete, over the events that remain, so it reaches at least as far
//! as any batch the relay read before: it errs toward naming a few ids
//! that were never sent, never toward missing one that was. On Postgres
//! the destinations' rows are read `FOR SHARE`, so no position moves (and
//! no next batch is read from a moved one) until the erasure commits; on
//! SQLite the one writer orders the two already.
//!
//! The events are gone after the commit, so each destination's list is
//! written now, one row per (destination, notice); a destination with an
//! empty list gets no notice, and an erasure nobody has to hear of writes
//! no notice at all.

use std::collections::BTreeMap;

use super::now_micros;
use crate::config::forward::ValidFilter;
use crate::store::feed::Position;
use crate::store::StoreError;

/// Feed items the relay reads (and sends) per batch: how far ahead of its
/// confirmed position a destination may have messages in flight.
pub const RELAY_BATCH: u32 = 256;

/// A deleted event as the erasure's `DELETE … RETURNING` gives it.
#[derive(Clone, Debug)]
pub(crate) struct Erased {
    pub id: i64,
    pub position: Position,
    pub event: String,
    pub valid: Option<bool>,
}

/// The deleted-events columns of `RETURNING`, per backend (see [`Erased`]).
pub(crate) const RETURNING_PG: &str = "id, tx::text::bigint, event, valid";
pub(crate) const RETURNING_SQLITE: &str = "id, 0, event, valid";

impl Erased {
    pub(crate) fn from_row((id, tx, event, valid): (i64, i64, String, Option<bool>)) -> Self {
        Self {
            id,
            position: Position { tx, id },
            event,
            valid,
        }
    }
}

/// A destination's row as the erasure reads it.
struct Destination {
    name: String,
    position: Position,
    /// Newline-separated event names, `None` = all.
    events: Option<String>,
    valid_filter: String,
}

impl Destination {
    fn admits(&self, e: &Erased) -> bool {
        let named = self
            .events
            .as_deref()
            .is_none_or(|names| names.split('\n').any(|n| n == e.event));
        // An unknown filter (never written by this version) names the id.
        let verdict =
            ValidFilter::try_from(self.valid_filter.clone()).map_or(true, |f| f.admits(e.valid));
        named && verdict
    }

    /// The ids of `erased` it must hear of, in feed order, comma-separated;
    /// `horizon`: the last event its relay may have read (`None`: every
    /// event after its position).
    fn ids(&self, erased: &[Erased], horizon: Option<Position>) -> String {
        let mut named: Vec<&Erased> = erased
            .iter()
            .filter(|e| horizon.is_none_or(|h| e.position <= h) && self.admits(e))
            .collect();
        named.sort_by_key(|e| e.position);
        named
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

type Row = (String, i64, i64, Option<String>, String);

fn destination((name, tx, id, events, valid_filter): Row) -> Destination {
    Destination {
        name,
        position: Position { tx, id },
        events,
        valid_filter,
    }
}

/// Postgres: the notice of `erased`, per destination.
pub(crate) async fn notice_pg(
    conn: &mut sqlx::PgConnection,
    erased: &[Erased],
) -> Result<(), StoreError> {
    if erased.is_empty() {
        return Ok(());
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT destination, tx, id, events, valid_filter FROM forward_positions \
         ORDER BY destination FOR SHARE",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut lists = BTreeMap::new();
    for d in rows.into_iter().map(destination) {
        let horizon: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx::text::bigint, id FROM webhook_events \
             WHERE (tx, id) > ($1::bigint::text::xid8, $2) ORDER BY tx, id OFFSET $3 LIMIT 1",
        )
        .bind(d.position.tx)
        .bind(d.position.id)
        .bind(i64::from(RELAY_BATCH) - 1)
        .fetch_optional(&mut *conn)
        .await?;
        let ids = d.ids(erased, horizon.map(|(tx, id)| Position { tx, id }));
        if !ids.is_empty() {
            lists.insert(d.name, ids);
        }
    }
    if lists.is_empty() {
        return Ok(());
    }
    let notice: i64 = sqlx::query_scalar(
        "INSERT INTO forward_notices (id, event_ids, created_at) \
         VALUES (nextval(pg_get_serial_sequence('webhook_events', 'id')), '', $1) RETURNING id",
    )
    .bind(now_micros())
    .fetch_one(&mut *conn)
    .await?;
    for (name, ids) in lists {
        sqlx::query(
            "INSERT INTO forward_notice_ids (destination, notice, event_ids) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(notice)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// [`notice_pg`] for SQLite: the notice's id is the events' next
/// AUTOINCREMENT value, taken from `sqlite_sequence` so no event gets it.
pub(crate) async fn notice_sqlite(
    conn: &mut sqlx::SqliteConnection,
    erased: &[Erased],
) -> Result<(), StoreError> {
    if erased.is_empty() {
        return Ok(());
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT destination, tx, id, events, valid_filter FROM forward_positions \
         ORDER BY destination",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut lists = BTreeMap::new();
    for d in rows.into_iter().map(destination) {
        let horizon: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_events WHERE id > $1 ORDER BY id LIMIT 1 OFFSET $2",
        )
        .bind(d.position.id)
        .bind(i64::from(RELAY_BATCH) - 1)
        .fetch_optional(&mut *conn)
        .await?;
        let ids = d.ids(erased, horizon.map(|id| Position { tx: 0, id }));
        if !ids.is_empty() {
            lists.insert(d.name, ids);
        }
    }
    if lists.is_empty() {
        return Ok(());
    }
    let notice: i64 = sqlx::query_scalar(
        "UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'webhook_events' RETURNING seq",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO forward_notices (id, event_ids, created_at) VALUES ($1, '', $2)")
        .bind(notice)
        .bind(now_micros())
        .execute(&mut *conn)
        .await?;
    for (name, ids) in lists {
        sqlx::query(
            "INSERT INTO forward_notice_ids (destination, notice, event_ids) VALUES ($1, $2, $3)",
        )
        .bind(name)
        .bind(notice)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erased(id: i64, event: &str, valid: Option<bool>) -> Erased {
        Erased::from_row((id, 0, event.to_owned(), valid))
    }

    fn dest(events: Option<&str>, valid: &str) -> Destination {
        Destination {
            name: "d".to_owned(),
            position: Position::default(),
            events: events.map(str::to_owned),
            valid_filter: valid.to_owned(),
        }
    }

    #[test]
    fn a_destination_hears_only_of_what_its_filters_and_read_ahead_reach() {
        let all = [
            erased(7, "job.failed", Some(true)),
            erased(3, "job.succeeded", None),
            erased(9, "job.failed", Some(false)),
        ];
        assert_eq!(dest(None, "any").ids(&all, None), "3,7,9");
        let failed = dest(Some("job.failed\njob.cancelled"), "any");
        assert_eq!(failed.ids(&all, None), "7,9");
        assert_eq!(dest(None, "true").ids(&all, None), "7");
        assert_eq!(dest(None, "false").ids(&all, None), "9");
        let behind = Some(Position { tx: 0, id: 7 });
        assert_eq!(dest(None, "any").ids(&all, behind), "3,7");
        assert_eq!(dest(Some("job.other"), "any").ids(&all, None), "");
        // A filter this version never writes: named rather than missed.
        assert_eq!(dest(None, "maybe").ids(&all, None), "3,7,9");
    }
}

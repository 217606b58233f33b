//! Time partitions on Postgres (CONTRACT §5): events in partitions of
//! `storage.partition_interval`; their dedup keys claimed into a partition
//! of the receipt's day ([`CLAIMS`]) and sealed, once the day is over, into
//! four-week windows ([`KEYS`], [`seal`]). All are made ahead of time (and
//! on demand, for a row no partition holds); events and key windows are
//! dropped whole by retention, claim days by the seal.
//!
//! Every decision is taken from the partitions' bounds as the catalog has
//! them, never from their names or the current interval: a partition made
//! under another interval, or by hand, is covered and dropped like the
//! others. New partitions fill only what no partition covers, from the
//! interval's boundary (UTC) or an existing partition's edge, whichever is
//! nearer, so they never overlap one.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::PgPool;
use sqlx::{Connection as _, PgConnection};

use super::StoreError;

/// The events table.
pub const EVENTS: &str = "webhook_events";
/// The sealed dedup keys, in [`KEY_WINDOW`]s: probed by every insert,
/// written only by [`seal`].
pub const KEYS: &str = "event_keys";
/// The dedup keys claimed by inserts, a partition per [`CLAIM_DAY`] of
/// receipt: small, so the random places each claim writes stay in memory.
pub const CLAIMS: &str = "event_claims";

/// Width of a claim partition: a UTC day.
pub const CLAIM_DAY: Duration = Duration::from_secs(86_400);
/// How long after its day ends a claim partition is sealed: past the age
/// from which a row claims on today instead (`postgres::OLD`), with room
/// for replicas' clocks that disagree by up to the guard's margin
/// (`postgres::NEAR_EDGE` less `OLD`): after it, nothing claims into the
/// day.
pub const SEAL_AFTER: Duration = Duration::from_secs(2 * 3600);

/// Width of a key window: four weeks, each starting on a Monday 00:00 UTC
/// (the migration's `date_bin('28 days', …, '1970-01-05')`). An insert
/// probes every window kept (from the one holding `now - max_age`): at the
/// default 30 days two or three, each holding at most four weeks of keys.
/// Weekly windows made that five or six probes, and ingest with ten
/// million events stored ran at 0.65x of an empty table's. Each claim day
/// lies wholly in one window (a day starts at 00:00 UTC, a window too).
pub const KEY_WINDOW: Duration = Duration::from_secs(28 * 86_400);
/// The Monday the key windows count from.
const KEY_ORIGIN: i64 = 4 * 86_400;

/// Advisory lock id held while partitions are made ("imggo-pa"): replicas
/// (and a writer making one on demand) never make the same one twice.
const CREATE_LOCK_KEY: i64 = 0x696d_6767_6f2d_7061;

/// How the events are laid out, and how long they are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `storage.partition_interval`.
    pub interval: Duration,
    /// `retention.max_age`: no read returns an event received longer ago.
    /// `None` serves everything stored (tools and tests that set no
    /// retention).
    pub max_age: Option<Duration>,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(86_400),
            max_age: None,
        }
    }
}

impl Layout {
    /// From the settings.
    pub fn of(settings: &crate::config::Settings) -> Self {
        Self {
            interval: settings.storage.partition_interval,
            max_age: Some(settings.retention.max_age),
        }
    }

    /// The oldest receipt a read may return now (the Unix epoch when no
    /// retention applies). Always a value, never NULL: `received_at >= $n`
    /// lets Postgres skip the partitions wholly before it.
    pub fn served_since(&self) -> DateTime<Utc> {
        self.max_age
            .map_or(DateTime::UNIX_EPOCH, super::retention_cutoff)
    }

    /// How far ahead of now partitions are made: two intervals, so the
    /// next one exists a whole interval before it is needed, even if a
    /// purge pass (which makes them) is late.
    fn ahead(&self) -> chrono::Duration {
        secs(self.interval) * 2
    }
}

fn secs(d: Duration) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000).max(1))
}

/// The start of the window of `width` (from `origin`, Unix seconds) that
/// holds `t`.
fn align_down(t: DateTime<Utc>, width: Duration, origin: i64) -> DateTime<Utc> {
    let width = i64::try_from(width.as_secs()).unwrap_or(86_400).max(1);
    let start = origin + (t.timestamp() - origin).div_euclid(width) * width;
    Utc.timestamp_opt(start, 0).single().unwrap_or(t)
}

/// One partition, by its bounds (`None`: MINVALUE or MAXVALUE).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    pub name: String,
    pub lo: Option<DateTime<Utc>>,
    pub hi: Option<DateTime<Utc>>,
    /// A `DETACH … CONCURRENTLY` was interrupted: it is still attached,
    /// and only `DETACH … FINALIZE` may touch it.
    pub detach_pending: bool,
}

impl Partition {
    fn holds(&self, t: DateTime<Utc>) -> bool {
        self.lo.is_none_or(|lo| lo <= t) && self.hi.is_none_or(|hi| t < hi)
    }
}

/// The partitions of `parent`, by lower bound. The bounds are printed and
/// parsed back in one session, so its time zone and date style cancel out.
pub async fn list(conn: &mut PgConnection, parent: &str) -> Result<Vec<Partition>, StoreError> {
    const SQL: &str = "\
        SELECT c.relname::text AS name, i.inhdetachpending AS detach_pending, \
          (regexp_match(b, 'FROM \\(''([^'']*)''\\)'))[1]::timestamptz AS lo, \
          (regexp_match(b, 'TO \\(''([^'']*)''\\)'))[1]::timestamptz AS hi \
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid, \
             pg_get_expr(c.relpartbound, c.oid) AS b \
        WHERE i.inhparent = $1::regclass";
    let mut parts: Vec<Partition> = sqlx::query_as(SQL)
        .bind(parent)
        .fetch_all(&mut *conn)
        .await?;
    parts.sort_by_key(|p| p.lo);
    Ok(parts)
}

/// The range a new partition of `width` holding `t` takes: from the
/// window's start or the edge of the partition before, to the window's end
/// or the start of the partition after.
fn gap_around(
    parts: &[Partition],
    t: DateTime<Utc>,
    width: Duration,
    origin: i64,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = align_down(t, width, origin);
    let lo = parts
        .iter()
        .filter_map(|p| p.hi.filter(|hi| *hi <= t))
        .fold(start, DateTime::max);
    let hi = parts
        .iter()
        .filter_map(|p| p.lo.filter(|lo| *lo > t))
        .fold(start + secs(width), DateTime::min);
    (lo, hi)
}

/// Makes the partitions of `parent` that `times` need, each `width` wide
/// (from `origin`): every instant of `times` ends up in a partition, and so
/// does every instant from the first to the last when `span` is set. Each
/// partition is made in a transaction of its own under [`CREATE_LOCK_KEY`]
/// (replicas racing here make it once; few locks are held at a time), which
/// gives up after `lock_timeout` rather than wait long behind a detach.
/// Returns the names made.
async fn cover(
    pool: &PgPool,
    parent: &str,
    width: Duration,
    origin: i64,
    times: &[DateTime<Utc>],
    span: bool,
) -> Result<Vec<String>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut parts = list(&mut conn, parent).await?;
    let mut made = Vec::new();
    let mut wanted: Vec<DateTime<Utc>> = times.to_vec();
    wanted.sort();
    wanted.dedup();
    let mut i = 0;
    while i < wanted.len() {
        let t = wanted[i];
        let holder = parts.iter().position(|p| p.holds(t));
        let end = if let Some(p) = holder {
            parts[p].hi
        } else {
            let mut tx = conn.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '5s'")
                .execute(&mut *tx)
                .await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(CREATE_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            // Another replica may have made it meanwhile.
            parts = list(&mut tx, parent).await?;
            let end = if let Some(p) = parts.iter().position(|p| p.holds(t)) {
                parts[p].hi
            } else {
                let (lo, hi) = gap_around(&parts, t, width, origin);
                let name: String =
                    sqlx::query_scalar("SELECT imggo_create_partition($1::regclass, $2, $3)")
                        .bind(parent)
                        .bind(lo)
                        .bind(hi)
                        .fetch_one(&mut *tx)
                        .await?;
                parts.push(Partition {
                    name: name.clone(),
                    lo: Some(lo),
                    hi: Some(hi),
                    detach_pending: false,
                });
                made.push(name);
                Some(hi)
            };
            tx.commit().await?;
            end
        };
        // With a span, the instant after this partition is wanted too.
        if let (true, Some(end), Some(next)) = (span, end, wanted.get(i + 1)) {
            if end < *next {
                wanted.insert(i + 1, end);
            }
        }
        i += 1;
    }
    if !made.is_empty() {
        tracing::info!(table = parent, partitions = ?made, "made time partitions");
    }
    Ok(made)
}

/// Makes the partitions that events received at `times` (and their keys)
/// need: a batch whose rows no partition holds (a delivery spooled long
/// ago, a clock that jumped), or a test placing rows in the past.
pub async fn cover_times(
    pool: &PgPool,
    layout: &Layout,
    times: &[DateTime<Utc>],
) -> Result<(), StoreError> {
    cover(pool, EVENTS, layout.interval, 0, times, false).await?;
    // Old rows claim on today (`postgres::claim_days`).
    let mut days = times.to_vec();
    days.push(Utc::now());
    cover(pool, CLAIMS, CLAIM_DAY, 0, &days, false).await?;
    cover(pool, KEYS, KEY_WINDOW, KEY_ORIGIN, times, false).await?;
    Ok(())
}

/// Makes every partition from the one holding `from` to two intervals
/// ahead of now (and the key windows for the same span), so that inserts
/// never wait for one to be made. Run from now at start-up (after
/// migrations) and by each purge pass; an older row (a delivery spooled
/// long ago) gets its partition on demand ([`cover_times`]).
pub async fn make_ahead(
    pool: &PgPool,
    layout: &Layout,
    from: DateTime<Utc>,
) -> Result<(), StoreError> {
    let until = Utc::now() + layout.ahead();
    let from = from.min(until);
    cover(pool, EVENTS, layout.interval, 0, &[from, until], true).await?;
    cover(pool, CLAIMS, CLAIM_DAY, 0, &[from, until], true).await?;
    cover(pool, KEYS, KEY_WINDOW, KEY_ORIGIN, &[from, until], true).await?;
    if let Err(e) = tune_subject_indexes(pool).await {
        tracing::warn!(error = %e, "cannot look at the subject indexes' options; next pass");
    }
    Ok(())
}

/// The options of every partition's subject index (GIN): a 64 kB pending
/// list (migration `20261212100000_subject_index_pending_list`).
const SUBJECT_INDEX_OPTIONS: [&str; 2] = ["fastupdate=on", "gin_pending_list_limit=64"];

/// Gives each partition's subject index that lacks them
/// [`SUBJECT_INDEX_OPTIONS`], newest partition first: the ones made before
/// the migration that set them for new partitions, or by a replica of an
/// older release since. Each in a transaction of its own that waits at
/// most 100 ms for the index's lock (ALTER INDEX … SET holds it
/// exclusively, and inserts and feed reads would queue behind it); one not
/// had in time, or a partition dropped meanwhile, is left to the next pass.
/// Returns how many it changed.
pub async fn tune_subject_indexes(pool: &PgPool) -> Result<usize, StoreError> {
    let lacking: Vec<String> = sqlx::query_scalar(
        "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass('webhook_events_subjects_idx') \
           AND NOT coalesce(c.reloptions, '{}') @> $1 \
         ORDER BY c.relname DESC",
    )
    .bind(&SUBJECT_INDEX_OPTIONS[..])
    .fetch_all(pool)
    .await?;
    let mut changed = 0;
    for index in &lacking {
        // One simple query, so one implicit transaction: the lock is let go
        // at once, not after another round trip for COMMIT.
        let alter = format!(
            "SET LOCAL lock_timeout = '100ms'; ALTER INDEX {index} SET ({})",
            SUBJECT_INDEX_OPTIONS.join(", ")
        );
        match sqlx::raw_sql(&alter).execute(pool).await {
            Ok(_) => changed += 1,
            // Not had in time (55P03), or the partition dropped meanwhile.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("55P03" | "42P01")) =>
            {
                tracing::info!(index, error = %e, "subject index options not set; next pass");
            }
            Err(e) => tracing::warn!(index, error = %e, "subject index options not set; next pass"),
        }
    }
    if changed > 0 {
        tracing::info!(
            indexes = changed,
            "subject indexes given a small pending list"
        );
    }
    Ok(changed)
}

/// Relations a read of the whole events table locks per partition: the
/// partition and its five indexes (the planner opens every one).
const LOCKS_PER_PARTITION: u64 = 6;

/// Warns once per process when the partitions `layout` keeps could run
/// Postgres' shared lock table out: a read of the whole table (a feed
/// page) locks every partition and its indexes, and the table holds
/// `max_locks_per_transaction × max_connections` entries for the whole
/// server. Judged with a tenth of the connections reading at once; the
/// warning names the setting and a value that fits.
pub async fn warn_if_locks_run_short(pool: &PgPool, layout: &Layout) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Some(max_age) = layout.max_age else {
        return;
    };
    if WARNED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let kept = max_age.as_secs() / layout.interval.as_secs().max(1) + 3;
    let per_read = kept * LOCKS_PER_PARTITION;
    let settings: Result<(String, String), _> = sqlx::query_as(
        "SELECT current_setting('max_locks_per_transaction'), current_setting('max_connections')",
    )
    .fetch_one(pool)
    .await;
    let Ok((locks, connections)) = settings else {
        return;
    };
    let (Ok(locks), Ok(connections)) = (locks.parse::<u64>(), connections.parse::<u64>()) else {
        return;
    };
    let needed = locks_needed(per_read, connections);
    if needed > locks && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            partitions = kept,
            locks_per_read = per_read,
            max_locks_per_transaction = locks,
            "storage.partition_interval and retention.max_age keep {kept} partitions, and a feed \
             read locks {per_read} relations: raise Postgres' max_locks_per_transaction to at \
             least {} (a restart of Postgres), or use a wider partition_interval, or reads may \
             fail with 'out of shared memory'",
            needed.next_power_of_two()
        );
    }
}

/// The `max_locks_per_transaction` at which a tenth of `connections`
/// (at least one) can each hold `per_read` locks at once: the lock table
/// has `max_locks_per_transaction × max_connections` entries.
fn locks_needed(per_read: u64, connections: u64) -> u64 {
    (per_read * (connections / 10).max(1)).div_ceil(connections.max(1))
}

/// The partitions of `parent` that retention drops at `cutoff`: every one
/// whose upper bound is at or before it.
pub fn expired(parts: &[Partition], cutoff: DateTime<Utc>) -> Vec<&Partition> {
    parts
        .iter()
        .filter(|p| p.hi.is_some_and(|hi| hi <= cutoff))
        .collect()
}

/// The comment a partition gets before it is detached: a pass that
/// stopped between the detach and the drop (a crash, a refused drop)
/// leaves a table that is no partition any more, and the next pass finds it
/// by this and drops it.
const EXPIRED: &str = "imggo-receiver: expired partition, to drop";

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Detaches (`CONCURRENTLY`: inserts and reads of the other partitions go
/// on) and drops `part`. A detach left pending by an interrupted pass is
/// finished first. Runs outside a transaction, as `CONCURRENTLY` must.
pub async fn drop_partition(
    conn: &mut PgConnection,
    parent: &str,
    part: &Partition,
) -> Result<(), StoreError> {
    let name = quoted(&part.name);
    let mark = format!("COMMENT ON TABLE {name} IS '{EXPIRED}'");
    sqlx::Executor::execute(&mut *conn, mark.as_str()).await?;
    let how = if part.detach_pending {
        "FINALIZE"
    } else {
        "CONCURRENTLY"
    };
    let detach = format!("ALTER TABLE {parent} DETACH PARTITION {name} {how}");
    sqlx::Executor::execute(&mut *conn, detach.as_str()).await?;
    if parent == EVENTS {
        // Its events are gone from every read: a relay's shared run that
        // holds some (a replica whose clock is behind this one's) is not
        // served again (see `forward::shared`).
        // (A database the migrations have not reached yet has no epoch,
        // and no relay of this release reading it.)
        let counted = sqlx::query("UPDATE forward_erasure_epoch SET epoch = epoch + 1")
            .execute(&mut *conn)
            .await;
        match counted {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {}
            other => {
                other?;
            }
        }
    }
    let drop = format!("DROP TABLE {name}");
    sqlx::Executor::execute(&mut *conn, drop.as_str()).await?;
    Ok(())
}

/// Drops the tables an earlier pass detached but did not drop (see
/// [`EXPIRED`]); returns how many.
pub async fn drop_leftovers(conn: &mut PgConnection) -> Result<usize, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace \
           AND obj_description(c.oid, 'pg_class') = $1 \
           AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)",
    )
    .bind(EXPIRED)
    .fetch_all(&mut *conn)
    .await?;
    for name in &names {
        let drop = format!("DROP TABLE {}", quoted(name));
        sqlx::Executor::execute(&mut *conn, drop.as_str()).await?;
    }
    Ok(names.len())
}

/// Rows in `part` (a purge reports how many events it removed).
///
/// A count reads every row: a sequential scan, which our sessions have
/// off (see `pg_connect::connect_options`), is turned on for it alone.
pub async fn rows_in(conn: &mut PgConnection, part: &Partition) -> Result<u64, StoreError> {
    use sqlx::Connection as _;
    let sql = format!("SELECT count(*) FROM {}", quoted(&part.name));
    let mut tx = conn
        .begin_with("BEGIN READ ONLY; SET LOCAL enable_seqscan = on")
        .await?;
    let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *tx).await?;
    tx.commit().await?;
    Ok(n.unsigned_abs())
}

/// The start of the key window holding `t`.
pub fn key_window(t: DateTime<Utc>) -> DateTime<Utc> {
    align_down(t, KEY_WINDOW, KEY_ORIGIN)
}

/// The start of the claim day holding `t`.
pub fn claim_day(t: DateTime<Utc>) -> DateTime<Utc> {
    align_down(t, CLAIM_DAY, 0)
}

/// [`key_window`] of the SQL timestamp `expr`, as Postgres computes it (for
/// tools and tests that move keys in time).
pub fn key_window_sql(expr: &str) -> String {
    let origin = DateTime::from_timestamp(KEY_ORIGIN, 0).unwrap_or_default();
    format!(
        "date_bin('{} days', {expr}, '{}')",
        KEY_WINDOW.as_secs() / 86_400,
        origin.format("%Y-%m-%d %H:%M:%S+00")
    )
}

/// [`claim_day`] of the SQL timestamp `expr`, as Postgres computes it (for
/// tools and tests that move claims in time).
pub fn claim_day_sql(expr: &str) -> String {
    format!(
        "date_bin('{} seconds', {expr}, '1970-01-01 00:00:00+00')",
        CLAIM_DAY.as_secs()
    )
}

/// Keys a seal copies per transaction.
pub const SEAL_CHUNK: i64 = 50_000;

/// Seals every claim partition whose day ended [`SEAL_AFTER`] before
/// `now`: no batch claims into it any more (a batch claims on the day of
/// its rows' receipt only while they are recent, and old rows claim on
/// today: `postgres::claim_days`). Its keys are copied, in key order,
/// [`SEAL_CHUNK`] per transaction, into the key window holding the day,
/// and then the partition is detached concurrently and dropped
/// ([`drop_partition`]). A batch's statement sees each key in one place or
/// both, never in neither: every copy commits before the detach, and the
/// detach waits for the statements that may read the partition. Nothing
/// here holds a lock an insert or an erasure waits for. A pass stopped
/// half-way leaves copies (made again, ON CONFLICT, by the next pass) or
/// a detached table (dropped by the next pass: [`drop_leftovers`]).
/// Returns the keys copied.
pub async fn seal(
    pool: &PgPool,
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let horizon = now - secs(SEAL_AFTER);
    let parts = list(conn, CLAIMS).await?;
    let mut sealed = 0;
    for part in expired(&parts, horizon) {
        let Some(lo) = part.lo else { continue };
        let window = key_window(lo);
        cover(pool, KEYS, KEY_WINDOW, KEY_ORIGIN, &[window], false).await?;
        let name = quoted(&part.name);
        let copy = format!(
            "WITH chunk AS (SELECT key FROM {name} WHERE key > $1 ORDER BY key LIMIT $2), \
             copied AS (INSERT INTO {KEYS} (key, since) SELECT key, $3 FROM chunk \
                        ON CONFLICT DO NOTHING) \
             SELECT (SELECT key FROM chunk ORDER BY key DESC LIMIT 1), \
                    (SELECT count(*) FROM chunk)"
        );
        let mut after = uuid::Uuid::nil();
        let mut copied = 0u64;
        loop {
            let mut tx = conn
                .begin_with("BEGIN; SELECT set_config('imggo.seal', 'on', true)")
                .await?;
            let (last, n): (Option<uuid::Uuid>, i64) = sqlx::query_as(&copy)
                .bind(after)
                .bind(SEAL_CHUNK)
                .bind(window)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            copied += n.unsigned_abs();
            match last {
                Some(last) if n == SEAL_CHUNK => after = last,
                _ => break,
            }
        }
        // Detached concurrently, as retention detaches: inserts go on
        // meanwhile, and the detach waits for every statement that may
        // still read the day. Every copy committed before it.
        drop_partition(conn, CLAIMS, part).await?;
        tracing::info!(partition = %part.name, keys = copied, "sealed a claim day");
        sealed += copied;
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn part(lo: &str, hi: &str) -> Partition {
        Partition {
            name: lo.to_owned(),
            lo: Some(at(lo)),
            hi: Some(at(hi)),
            detach_pending: false,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn windows_start_at_utc_boundaries_and_key_windows_on_mondays() {
        assert_eq!(
            align_down(at("2026-12-07T13:45:10Z"), HOUR, 0),
            at("2026-12-07T13:00:00Z")
        );
        assert_eq!(
            align_down(at("2026-12-07T13:45:10Z"), DAY, 0),
            at("2026-12-07T00:00:00Z")
        );
        // 2026-11-23 and 2026-12-21 are Mondays 4 x 7 x k days after 1970-01-05.
        assert_eq!(
            key_window(at("2026-12-09T08:00:00Z")),
            at("2026-11-23T00:00:00Z")
        );
        assert_eq!(
            key_window(at("2026-12-21T00:00:00Z")),
            at("2026-12-21T00:00:00Z")
        );
        assert_eq!(
            key_window(at("2026-11-22T23:59:59Z")),
            at("2026-10-26T00:00:00Z")
        );
        assert_eq!(
            key_window(at("1970-01-04T00:00:00Z")),
            at("1969-12-08T00:00:00Z")
        );
    }

    #[test]
    fn a_new_partition_fills_only_the_gap_it_finds() {
        // A day partition exists; the interval is now an hour.
        let parts = [part("2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z")];
        assert_eq!(
            gap_around(&parts, at("2026-12-08T00:30:00Z"), HOUR, 0),
            (at("2026-12-08T00:00:00Z"), at("2026-12-08T01:00:00Z"))
        );
        // An hourly partition exists from 01:00; the interval is now a day.
        let parts = [part("2026-12-08T01:00:00Z", "2026-12-08T02:00:00Z")];
        assert_eq!(
            gap_around(&parts, at("2026-12-08T00:10:00Z"), DAY, 0),
            (at("2026-12-08T00:00:00Z"), at("2026-12-08T01:00:00Z"))
        );
        assert_eq!(
            gap_around(&parts, at("2026-12-08T05:00:00Z"), DAY, 0),
            (at("2026-12-08T02:00:00Z"), at("2026-12-09T00:00:00Z"))
        );
    }

    #[test]
    fn the_key_window_in_sql_is_the_migrations_date_bin() {
        // The literal 20261209100000_time_partitions.sql wrote the keys with.
        assert_eq!(
            key_window_sql("b.received_at"),
            "date_bin('28 days', b.received_at, '1970-01-05 00:00:00+00')"
        );
    }

    #[test]
    fn the_lock_budget_fits_a_tenth_of_the_connections_reading() {
        // Daily partitions for 30 days (33 kept) on a stock Postgres:
        // 198 locks a read, 10 readers of 100 connections: 20 each, < 64.
        assert_eq!(locks_needed(33 * LOCKS_PER_PARTITION, 100), 20);
        // Hourly for 30 days (723 kept): 4,338 a read, 434 each, > 64.
        assert_eq!(locks_needed(723 * LOCKS_PER_PARTITION, 100), 434);
        // One connection still counts as one reader.
        assert_eq!(locks_needed(198, 1), 198);
    }

    #[test]
    fn retention_drops_by_upper_bound_only() {
        let parts = [
            part("2026-12-05T00:00:00Z", "2026-12-06T00:00:00Z"),
            part("2026-12-06T00:00:00Z", "2026-12-07T00:00:00Z"),
            part("2026-12-07T00:00:00Z", "2026-12-08T00:00:00Z"),
        ];
        let cutoff = at("2026-12-07T00:00:00Z");
        let names: Vec<&str> = expired(&parts, cutoff)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["2026-12-05T00:00:00Z", "2026-12-06T00:00:00Z"]);
        // A cutoff inside a partition keeps it whole.
        let cutoff = at("2026-12-06T23:00:00Z");
        assert_eq!(expired(&parts, cutoff).len(), 1);
        // A partition with no upper bound is never dropped.
        let open = [Partition {
            hi: None,
            ..part("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z")
        }];
        assert!(expired(&open, at("2030-01-01T00:00:00Z")).is_empty());
    }
}

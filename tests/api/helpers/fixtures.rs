//! What tests need to see or arrange in the events table, named for what
//! it means, so the test files do not know the schema: a partitioned or
//! renamed table changes these few lines, not every test.

use sqlx::Connection as _;

use super::TestDb;
use imggo_receiver::crypto::Sealed;

impl TestDb {
    /// Job ids of every stored event, sorted.
    pub async fn stored_job_ids(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT job_id FROM webhook_events ORDER BY job_id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Job ids of every stored event in feed (commit) order.
    pub async fn job_ids_in_feed_order(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT job_id FROM webhook_events ORDER BY tx, id")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// Stored events of `job_id`.
    pub async fn events_of(&self, job_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The key id each event of `job_id` is sealed under.
    pub async fn key_id_of(&self, job_id: &str) -> String {
        sqlx::query_scalar("SELECT key_id FROM webhook_events WHERE job_id = $1")
            .bind(job_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `n` events (`bulk-1`...) written straight to the table, received
    /// `age_hours` ago, with placeholder payloads (they are never opened).
    pub async fn insert_raw_events(&self, n: i64, age_hours: i64) {
        let at = chrono::Utc::now() - chrono::Duration::hours(age_hours);
        let around = [at - chrono::Duration::minutes(1), at];
        self.store().make_partitions_for(&around).await.unwrap();
        sqlx::query(
            "INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext, received_at) \
             SELECT 'bulk-' || g, 'job.succeeded', 'ka', '\\x00', '\\x00', \
                    now() - make_interval(hours => $2::int) \
             FROM generate_series(1, $1::int) g",
        )
        .bind(n)
        .bind(age_hours)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// A `job.succeeded` event of `job_id` inserted in a transaction left
    /// open on the returned connection (it holds the earlier transaction
    /// id; `COMMIT` on the connection commits it).
    pub async fn insert_raw_event_uncommitted(
        &self,
        job_id: &str,
        sealed: &Sealed,
    ) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query(
            "INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext) \
             VALUES ($1, 'job.succeeded', $2, $3, $4)",
        )
        .bind(job_id)
        .bind(sealed.key_id.as_str())
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .execute(&mut conn)
        .await
        .unwrap();
        conn
    }

    /// Blocks every write to the events table until the returned
    /// connection ends its transaction (a database that hangs).
    pub async fn lock_events(&self) -> sqlx::PgConnection {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
        sqlx::query("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    /// Stored events not sealed under `key_id` (what re-encryption left).
    pub async fn events_not_sealed_under(&self, key_id: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE key_id <> $1")
            .bind(key_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The plaintext envelope columns (event, pattern id, status) of each
    /// event of `job_id`, by event.
    pub async fn envelopes_of(
        &self,
        job_id: &str,
    ) -> Vec<(String, Option<String>, Option<String>)> {
        sqlx::query_as(
            "SELECT event, pattern_id, status FROM webhook_events WHERE job_id = $1 ORDER BY event",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    /// Every stored event row, whole, as Postgres prints it: what someone
    /// reading the table would see.
    pub async fn events_as_text(&self) -> String {
        sqlx::query_scalar("SELECT coalesce(string_agg(t::text, ' '), '') FROM webhook_events t")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Makes every batch insert fail (the events table is gone) until
    /// [`Self::restore_events_table`].
    pub async fn take_events_table_away(&self) {
        sqlx::query("ALTER TABLE webhook_events RENAME TO webhook_events_away")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// Undoes [`Self::take_events_table_away`].
    pub async fn restore_events_table(&self) {
        sqlx::query("ALTER TABLE webhook_events_away RENAME TO webhook_events")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    /// Holds every insert into the events table (reads go on) until the
    /// returned transaction ends: an insert in flight, stalled.
    pub async fn stall_event_inserts(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut stall = self.pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE webhook_events IN EXCLUSIVE MODE")
            .execute(&mut *stall)
            .await
            .unwrap();
        stall
    }

    /// Makes every retention pass fail from now on: no table of this
    /// database can be dropped (retention drops expired partitions).
    pub async fn refuse_event_deletes(&self) {
        sqlx::raw_sql(
            "CREATE FUNCTION refuse_drop() RETURNS event_trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused'; END $$; \
             CREATE EVENT TRIGGER refuse_drop ON ddl_command_start \
             WHEN TAG IN ('DROP TABLE') EXECUTE FUNCTION refuse_drop()",
        )
        .execute(&self.pool)
        .await
        .unwrap();
    }
}

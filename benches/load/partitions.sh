#!/usr/bin/env bash
# Storage at scale (time partitions on Postgres), three measurements in one
# run, each against its own baseline measured in the same run:
#
#   bash benches/load/partitions.sh
#
# 1. Purge: PB_PURGE_ROWS (1,000,000) expired deliveries removed by
#    `imggo-receiver purge` (partition drop) against the previous release's
#    batched DELETE (1000 rows per transaction, as it ran) on the previous
#    schema, each on a fresh database after a CHECKPOINT: wall time and WAL
#    bytes written (pg_current_wal_lsn before and after).
# 1b. Seal: PB_PURGE_ROWS dedup keys claimed on a day past, sealed by
#    `imggo-receiver purge` into their four-week key window (a copy in key
#    order, and the day dropped): wall time and WAL bytes.
# 2. Growth: ingest with PB_GROW_ROWS (10,000,000) deliveries already stored
#    (filled with generate_series over the last 29 days, keys included)
#    against an empty table, rounds alternating (PB_ROUNDS each).
# 3. Load while purging: ingest while the server's own first retention pass
#    (5 s after start) drops PB_PURGE_ROWS expired deliveries, against
#    ingest with nothing to purge, rounds alternating.
#
# Ingest rounds are ab.sh's: wrk, one thread, PB_CONNECTIONS (64)
# connections, PB_SECONDS (20) s, unique signed 1.5 KB deliveries with PII,
# every feature at its default; stored/s, p99, and CPU per stored delivery
# (receiver and Postgres, from /proc; Postgres' kernel share beside it),
# and WAL bytes and full-page images (pg_stat_wal) per stored delivery.
#
# Before every round and every purge the machine settles: a CHECKPOINT, the
# kernel's dirty pages written (sync) and no autovacuum worker left. A fill
# of millions of rows otherwise leaves gigabytes of writeback behind it that
# the next round pays for in kernel time, which says nothing about the
# table the round writes to.
#
# Each growth round measures a running service: PB_WARMUP (10) s of the
# same load (deliveries of their own) go first, unmeasured, so the round
# sees what a service that has run for a while sees: the indexes it writes
# to in memory, their pages' first images since the last checkpoint
# written. Load-while-purging rounds have none: the server's first
# retention pass (5 s after start) must fall in the measured seconds.
# PB_WARMUP=0 PB_DROP_CACHES=1 (root only: the page cache dropped before
# each round) measures a cold start instead: every page of the grown
# table's indexes that a round touches is read from disk and logged whole.
#
# PB_PARTS ("purge seal growth load") runs a subset. PB_SHARED_BUFFERS (say
# 2GB) runs everything with Postgres' shared_buffers set so (ALTER SYSTEM
# and a restart of the local cluster, as root), and puts the setting back
# and restarts it again on exit, however the run ends: the dedup keys of
# the retention window, probed at random by every insert, fit there as
# the README's Scaling section advises, or do not at the default 128MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh

ROUNDS=${PB_ROUNDS:-2}
SECS=${PB_SECONDS:-20}
CONNS=${PB_CONNECTIONS:-64}
GROW_ROWS=${PB_GROW_ROWS:-10000000}
PURGE_ROWS=${PB_PURGE_ROWS:-1000000}
PARTS=${PB_PARTS:-purge seal growth load}
SHARED_BUFFERS=${PB_SHARED_BUFFERS:-}
WARMUP=${PB_WARMUP:-10}
if [ -w /proc/sys/vm/drop_caches ]; then DROP_CACHES=${PB_DROP_CACHES:-0}; else DROP_CACHES=0; fi
COUNT=$((40000 * SECS))
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
export PGSSLMODE=${PGSSLMODE:-disable}
DB=imggo_parts
BIG=imggo_parts_big
PORT=28190
ADMIN=29574
API=28193

WORK=$(mktemp -d /tmp/imggo-parts.XXXXXX)
PID=
SAMPLER=
RESTORE_PG=
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
  if [ -n "$RESTORE_PG" ]; then
    psql "$PGURL/postgres" -qAt -c "ALTER SYSTEM RESET shared_buffers" >/dev/null 2>&1 || true
    restart_pg || true
  fi
  rm -rf "$WORK"
}
# The local cluster, restarted, and waited for.
restart_pg() {
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main restart
  for _ in $(seq 1 60); do
    psql "$PGURL/postgres" -qAt -c "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}
trap cleanup EXIT
trap 'echo "benches/load/partitions.sh: failed at line $LINENO" >&2' ERR
say() { printf '\n== %s\n' "$*" >&2; }
q() { PGOPTIONS="-c client_min_messages=warning" psql "$PGURL/$1" -qAt -v ON_ERROR_STOP=1 "${@:2}"; }

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
for v in $(compgen -e | grep '^IMGGO_' || true); do unset "$v"; done

if [ -n "$SHARED_BUFFERS" ]; then
  say "Postgres: shared_buffers = $SHARED_BUFFERS for this run (restarting the local cluster)"
  RESTORE_PG=1
  q postgres -c "ALTER SYSTEM SET shared_buffers = '$SHARED_BUFFERS'"
  restart_pg
fi

say "building the working tree (release)"
cargo build --release --locked --quiet --bin imggo-receiver --example loadgen
BIN=$TARGET/release/imggo-receiver
LOADGEN=$TARGET/release/examples/loadgen
export IMGGO_WEBHOOK_SECRETS="whsec_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export IMGGO_ENCRYPTION_KEYS="kbench:$($BIN keygen)"
export IMGGO_HASH_KEY="$($BIN keygen)"
export IMGGO__SERVER__BIND=127.0.0.1:$PORT IMGGO__ADMIN__BIND=127.0.0.1:$ADMIN
export IMGGO__API__BIND=127.0.0.1:$API IMGGO__SPOOL__PATH=$WORK/spool.db
export IMGGO__RATE_LIMIT__PER_SECOND=10000000 IMGGO__RATE_LIMIT__BURST=10000000

say "generating $COUNT unique signed deliveries"
$LOADGEN gen "$COUNT" "$WORK/deliveries.tsv"
[ "$WARMUP" = 0 ] || $LOADGEN gen "$((40000 * WARMUP))" "$WORK/warmup.tsv"

fresh_db() {
  q postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}
migrate() { DATABASE_URL="$PGURL/$1?sslmode=$PGSSLMODE" "$BIN" migrate >/dev/null 2>&1; }

# Rows received from $3 to $4 (SQL timestamptz expressions), $2 of them, in
# database $1, with their dedup keys, in daily partitions (and four-week key
# windows, and today's claim day) made first: keys of days past sealed into
# their windows, today's claimed, as a running server leaves them. ~0.5 kB
# each, every other one with a subject hash.
fill() {
  q "$1" <<SQL
DO \$\$
DECLARE lo timestamptz; hi timestamptz := ($4);
BEGIN
  lo := date_trunc('day', ($3), 'UTC');
  WHILE lo < hi LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'webhook_events_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI')) THEN
      PERFORM imggo_create_partition('webhook_events', lo, lo + interval '24 hours');
    END IF;
    lo := lo + interval '24 hours';
  END LOOP;
  lo := date_bin('28 days', ($3), '1970-01-05 00:00:00+00');
  WHILE lo < hi LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'event_keys_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI')) THEN
      PERFORM imggo_create_partition('event_keys', lo, lo + interval '672 hours');
    END IF;
    lo := lo + interval '672 hours';
  END LOOP;
  lo := date_trunc('day', now(), 'UTC');
  IF hi > lo AND NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'event_claims_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI')) THEN
    PERFORM imggo_create_partition('event_claims', lo, lo + interval '24 hours');
  END IF;
END
\$\$;
INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext, received_at, subjects)
SELECT 'fill-' || md5(g::text), 'job.succeeded', 'kfill', decode(md5(g::text) || md5(g::text), 'hex'),
       decode(repeat(md5(g::text), 24), 'hex'),
       ($3) + (g::float8 / $2) * (($4) - ($3)),
       CASE WHEN g % 2 = 0 THEN ARRAY[decode(md5(g::text), 'hex')] END
FROM generate_series(1, $2) g;
SET imggo.seal = 'on';
INSERT INTO event_keys (key, since)
SELECT imggo_event_key(job_id, event), date_bin('28 days', received_at, '1970-01-05 00:00:00+00')
FROM webhook_events WHERE received_at < date_trunc('day', now(), 'UTC')
ORDER BY 1;
INSERT INTO event_claims (key, day)
SELECT imggo_event_key(job_id, event), date_trunc('day', received_at, 'UTC')
FROM webhook_events WHERE received_at >= date_trunc('day', now(), 'UTC');
VACUUM (ANALYZE, FREEZE);
-- The filled partitions are vacuumed and frozen: no autovacuum worker may
-- start on them during a round (the sampler counts every autovacuum
-- worker, of any database). Partitions the rounds write keep theirs.
DO \$\$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.oid::regclass AS t FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent IN ('webhook_events'::regclass, 'event_keys'::regclass)
             AND c.reltuples > 0 LOOP
    EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false)', r.t);
  END LOOP;
END
\$\$;
SQL
}


wal() { q postgres -c "SELECT pg_current_wal_lsn()"; }
wal_bytes() { q postgres -c "SELECT pg_wal_lsn_diff('$2', '$1')::bigint"; }

# Waits until Postgres has no background work left (autovacuum, a
# checkpoint's writes), so a round measures its own work only.
settle() {
  q postgres -c "CHECKPOINT" >/dev/null
  sync
  if [ "$DROP_CACHES" = 1 ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  for _ in $(seq 1 240); do
    [ "$(q postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ] && return 0
    sleep 0.5
  done
}

# One ingest round on database $1 labelled $2, after $3 (default
# PB_WARMUP) seconds of warm-up load: appends
# "<label> <stored/s> <p99> <receiver µs> <postgres µs>" to $WORK/results.
round() {
  local db=$1 label=$2 warm=${3:-$WARMUP} out line before stored secs rcpu0 rcpu1 pgs pgsys
  rm -f "$WORK"/spool.db*
  settle
  local l0 l1 start first f0 f1; first=$(q postgres -c "SELECT now()")
  DATABASE_URL="$PGURL/$db?sslmode=$PGSSLMODE" "$BIN" serve > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if [ "$warm" != 0 ]; then
    wrk -t1 -c"$CONNS" -d"${warm}s" --timeout 10s -s benches/load/wrk.lua \
      "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/warmup.tsv" 1 >/dev/null
  fi
  l0=$(wal); start=$(q postgres -c "SELECT now()")
  f0=$(q postgres -c "SELECT wal_fpi FROM pg_stat_wal")
  pg_sampler "$db" > "$WORK/pg.samples" &
  SAMPLER=$!
  sleep 0.6
  rcpu0=$(cpu_s "$PID")
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s benches/load/wrk.lua \
    "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/deliveries.tsv" 1)
  rcpu1=$(cpu_s "$PID")
  sleep 0.6
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  kill "$PID"; wait "$PID" || true; PID=
  l1=$(wal); f1=$(q postgres -c "SELECT wal_fpi FROM pg_stat_wal")
  pgs=$(pg_seconds "$WORK/pg.samples"); pgsys=$(pg_seconds "$WORK/pg.samples" 4)
  stored=$(( $(q "$db" -c "SELECT count(*) FROM webhook_events WHERE received_at >= '$start'") ))
  if [ "$label" = quiet ]; then
    # A fresh database holds only this round's rows: bytes per delivery on
    # disk (heap, TOAST and indexes of events and keys) and in WAL.
    # (disk over every row of the round, warm-up's too; WAL over the
    # measured ones).
    q "$db" -c "SELECT $stored, coalesce(sum(pg_total_relation_size(c.oid)), 0) \
        * $stored / (SELECT count(*) FROM webhook_events) FROM pg_class c \
      JOIN pg_inherits i ON i.inhrelid = c.oid \
      WHERE i.inhparent IN ('webhook_events'::regclass, 'event_keys'::regclass, 'event_claims'::regclass)" \
      -F' ' | awk -v w="$(wal_bytes "$l0" "$l1")" '{printf "%s %s %s\n", $1, $2, w}' >> "$WORK/bytes"
  fi
  line=$(echo "$out" | grep '^WRK ')
  secs=$(echo "$line" | tr ' ' '\n' | awk -F= '$1=="seconds" {print $2}')
  local p99; p99=$(echo "$line" | tr ' ' '\n' | awk -F= '$1=="p99_ms" {print $2}')
  echo "$label $stored $secs $p99 $rcpu0 $rcpu1 $pgs $pgsys $(wal_bytes "$l0" "$l1") $((f1 - f0))" |
    awk '{n=$2; printf "%s %.0f %s %.1f %.1f %.0f %.0f %.2f\n", $1, n/$3, $4, ($6-$5)*1e6/n, $7*1e6/n, ($7 > 0 ? 100*$8/$7 : 0), $9/n, $10/n}' >> "$WORK/results"
  tail -n1 "$WORK/results" | awk '{printf "  %-16s %8s/s  p99 %7s ms  receiver %6s µs  postgres %6s µs (%s%% system)  WAL %s B, %s full pages\n", $1, $2, $3, $4, $5, $6, $7, $8}' >&2
  echo "  (of Postgres' CPU, autovacuum workers: $(pg_autovacuum_seconds "$WORK/pg.samples") s of $pgs s)" >&2
  if grep -q "dropped an expired partition" "$WORK/server.log"; then
    echo "  (the server's retention pass dropped $(grep -c 'dropped an expired partition' "$WORK/server.log") partition(s) during the round)" >&2
  fi
  # The round's own deliveries (the warm-up's too) go, found by receipt
  # (the partitions of the round only), so the next round stores them anew.
  q "$db" -c "WITH d AS (DELETE FROM webhook_events WHERE received_at >= '$first' \
      RETURNING job_id, event) DELETE FROM event_claims k USING d \
      WHERE k.key = imggo_event_key(d.job_id, d.event)" \
    -c "VACUUM ANALYZE webhook_events, event_claims" >/dev/null
}


has() { [[ " $PARTS " == *" $1 "* ]]; }

# One `imggo-receiver purge` on $DB after the machine settles: its wall
# time in PURGE_S and the WAL bytes it wrote in PURGE_WAL.
timed_purge() {
  local l0 l1 t0 t1
  settle
  l0=$(wal); t0=$(date +%s.%N)
  DATABASE_URL="$PGURL/$DB?sslmode=$PGSSLMODE" "$BIN" purge 2>/dev/null | sed -n 1p >&2
  t1=$(date +%s.%N); l1=$(wal)
  PURGE_S=$(echo "$t1 - $t0" | bc); PURGE_WAL=$(wal_bytes "$l0" "$l1")
}
: > "$WORK/results"; : > "$WORK/bytes"
DROP_S=

if has purge; then
# (not indented: the heredocs end on a line of their own)
say "1. purge of $PURGE_ROWS expired deliveries: partition drop"
fresh_db "$DB"; migrate "$DB"
fill "$DB" "$PURGE_ROWS" "now() - interval '41 days'" "now() - interval '40 days'"
timed_purge; DROP_S=$PURGE_S; DROP_WAL=$PURGE_WAL
left=$(q "$DB" -c "SELECT count(*) FROM webhook_events")
echo "  partition drop: $DROP_S s, $DROP_WAL WAL bytes, $left rows left" >&2

say "1. purge of $PURGE_ROWS expired deliveries: the previous release's batched DELETE"
fresh_db "$DB"
# The schema before partitions: every migration older than them.
for f in migrations/postgres/*.sql; do
  v=$(basename "$f"); v=${v%%_*}
  [ "$v" -lt 20261209100000 ] || continue
  q "$DB" -f "$f" >/dev/null
done
q "$DB" <<SQL
INSERT INTO webhook_events (job_id, event, key_id, nonce, ciphertext, received_at, subjects)
SELECT 'fill-' || md5(g::text), 'job.succeeded', 'kfill', decode(md5(g::text) || md5(g::text), 'hex'),
       decode(repeat(md5(g::text), 24), 'hex'),
       now() - interval '41 days' + (g::float8 / $PURGE_ROWS) * interval '1 day',
       CASE WHEN g % 2 = 0 THEN ARRAY[decode(md5(g::text), 'hex')] END
FROM generate_series(1, $PURGE_ROWS) g;
VACUUM ANALYZE;
SQL
settle
l0=$(wal); t0=$(date +%s.%N)
q "$DB" <<'SQL'
DO $$
DECLARE n bigint;
BEGIN
  LOOP
    DELETE FROM webhook_events WHERE id = ANY(ARRAY(
      SELECT id FROM webhook_events WHERE received_at < now() - interval '30 days'
      ORDER BY received_at LIMIT 1000 FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    COMMIT;
    EXIT WHEN n < 1000;
  END LOOP;
END
$$;
SQL
t1=$(date +%s.%N); l1=$(wal)
DEL_S=$(echo "$t1 - $t0" | bc); DEL_WAL=$(wal_bytes "$l0" "$l1")
left=$(q "$DB" -c "SELECT count(*) FROM webhook_events")
echo "  batched DELETE: $DEL_S s, $DEL_WAL WAL bytes, $left rows left (vacuum's WAL comes later, not counted)" >&2
fi

if has seal; then
# (not indented: the heredocs end on a line of their own)
say "1b. seal of $PURGE_ROWS claimed keys of a day past into their key window"
fresh_db "$DB"; migrate "$DB"
q "$DB" <<SQL
SELECT imggo_create_partition('event_claims', date_trunc('day', now(), 'UTC') - interval '2 days',
                              date_trunc('day', now(), 'UTC') - interval '1 day');
INSERT INTO event_claims (key, day)
SELECT imggo_event_key('seal-' || g, 'job.succeeded'), date_trunc('day', now(), 'UTC') - interval '2 days'
FROM generate_series(1, $PURGE_ROWS) g;
VACUUM ANALYZE event_claims;
SQL
timed_purge; SEAL_S=$PURGE_S; SEAL_WAL=$PURGE_WAL
sealed=$(q "$DB" -c "SELECT count(*) FROM event_keys")
echo "  seal: $SEAL_S s, $SEAL_WAL WAL bytes, $sealed keys sealed, $(q "$DB" -c "SELECT count(*) FROM event_claims") claims left" >&2
fi

if has growth; then
  say "2. growth: filling $GROW_ROWS deliveries over the last 29 days"
  fresh_db "$BIG"; migrate "$BIG"
  fill "$BIG" "$GROW_ROWS" "now() - interval '29 days'" "now() - interval '1 minute'"
  BIG_SIZE=$(q "$BIG" -c "SELECT pg_size_pretty(pg_database_size('$BIG'))")
  echo "  $BIG_SIZE" >&2
  fresh_db "$DB"; migrate "$DB"
  for i in $(seq 1 "$ROUNDS"); do
    say "2. growth round $i of $ROUNDS: empty, then $GROW_ROWS stored"
    round "$DB" empty
    round "$BIG" "grown"
  done
  q postgres -c "DROP DATABASE IF EXISTS $BIG WITH (FORCE)" >/dev/null
fi

if has load; then
  for i in $(seq 1 "$ROUNDS"); do
    say "3. load while purging, round $i of $ROUNDS: nothing to purge, then $PURGE_ROWS expired"
    # No warm-up: the server's first retention pass, 5 s after it
    # starts, falls in the measured 20 s.
    fresh_db "$DB"; migrate "$DB"
    round "$DB" quiet 0
    fresh_db "$DB"; migrate "$DB"
    fill "$DB" "$PURGE_ROWS" "now() - interval '41 days'" "now() - interval '40 days'"
    round "$DB" purging 0
  done
fi

echo
echo "imggo-receiver partitions benchmark ($(git describe --always --dirty)); $(nproc) cores, PostgreSQL $(q postgres -c 'SHOW server_version')"
echo "wrk $CONNS connections, ${SECS}s per round (growth rounds after ${WARMUP}s of warm-up), page cache dropped: $DROP_CACHES, $ROUNDS rounds of each kind, alternating; CPU per stored delivery; shared_buffers $(q postgres -c 'SHOW shared_buffers')"
[ -z "${SEAL_S:-}" ] || awk -v s="$SEAL_S" -v w="$SEAL_WAL" -v n="$PURGE_ROWS" 'BEGIN {
  printf "seal of %d claimed keys (the whole purge pass): %.2f s, %.1f MB WAL (%.0f B per key)\n", n, s, w / 1048576, w / n }'
[ -z "$DROP_S" ] || awk -v ds="$DROP_S" -v dw="$DROP_WAL" -v xs="$DEL_S" -v xw="$DEL_WAL" -v n="$PURGE_ROWS" 'BEGIN {
  printf "purge %d rows: partition drop %.2f s, %.1f kB WAL; batched DELETE %.2f s, %.1f MB WAL -> time %.3fx, WAL %.4fx\n",
    n, ds, dw / 1024, xs, xw / 1048576, ds / xs, dw / xw }'
awk -v g="$GROW_ROWS" '
  { c[$1]++; s[$1] += $2; p[$1] += $3; r[$1] += $4; q[$1] += $5; y[$1] += $6; wb[$1] += $7; fp[$1] += $8; runs[$1] = runs[$1] sprintf("%s%s", c[$1] > 1 ? ", " : "", $2) }
  END {
    printf "%-10s %10s %9s %13s %13s %9s %8s %8s  %s\n", "kind", "stored/s", "p99 ms", "receiver µs", "postgres µs", "pg sys %", "WAL B", "FPI", "per round"
    split("empty grown quiet purging", k, " ")
    for (i = 1; i <= 4; i++) { x = k[i]; if (!c[x]) continue
      m[x] = s[x] / c[x]; rc[x] = r[x] / c[x]; pc[x] = q[x] / c[x]
      printf "%-10s %10.0f %9.2f %13.1f %13.1f %9.0f %8.0f %8.2f  %s\n", x, m[x], p[x] / c[x], rc[x], pc[x], y[x] / c[x], wb[x] / c[x], fp[x] / c[x], runs[x] }
    if (c["empty"] && c["grown"])
      printf "growth (%d rows stored / empty): stored/s %.2fx, receiver CPU %.2fx, postgres CPU %.2fx\n", g, m["grown"] / m["empty"], rc["grown"] / rc["empty"], pc["grown"] / pc["empty"]
    if (c["quiet"] && c["purging"])
      printf "load while purging / without: stored/s %.2fx, receiver CPU %.2fx, postgres CPU %.2fx\n", m["purging"] / m["quiet"], rc["purging"] / rc["quiet"], pc["purging"] / pc["quiet"]
  }' "$WORK/results"
awk '{ n += $1; d += $2; w += $3 } END { if (n) printf "bytes per stored delivery (quiet rounds, %d deliveries): %.0f on disk (heap, TOAST, indexes of events and keys), %.0f of WAL\n", n, d / n, w / n }' "$WORK/bytes"

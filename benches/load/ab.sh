#!/usr/bin/env bash
# A/B load benchmark: an older commit against the working tree, in one run.
#
#   bash benches/load/ab.sh REV        # e.g. 94228f5
#
# Builds REV (release) in a temporary worktree and the working tree as it is,
# then runs them alternately (REV, tree, REV, tree, ...; AB_ROUNDS each), each
# round on a fresh database and a fresh server: wrk, 64 connections, one
# thread, cycling through the same pre-signed unique 1.5 KB deliveries
# carrying PII (benches/load/loadgen.rs, benches/load/wrk.lua). Every feature
# is at its default (spool, subject index, quarantine, Results API listener):
# only addresses, the spool's file and the per-IP rate limit (one load
# generator) are set, and each build is given only the settings of the
# sections its own config/default.toml has (an older commit refuses keys it
# does not know).
#
# Prints per round and per build: stored/s (rows committed / wrk's seconds),
# wrk's p50/p99, the receiver's peak RSS (VmHWM), and CPU time per stored
# delivery read from /proc (utime+stime):
#   - receiver: the server process;
#   - postgres: every backend serving the benchmark's database plus the
#     shared background processes (walwriter, checkpointer, background
#     writer, autovacuum), sampled every 0.5 s so that backends opened
#     during the round count too. Backends of other databases (other work
#     on the machine) are not counted.
# CPU per delivery drifts much less with the machine than stored/s does, and
# says which side got slower. Then Postgres' own single-row INSERT ceiling
# (pgbench, 32 clients, 10 s) on the tree's schema, for scale.
#
# Knobs (environment): AB_ROUNDS (2), AB_SECONDS (20), AB_CONNECTIONS (64),
# AB_DELIVERIES (40000 x AB_SECONDS), AB_PGBENCH (1; 0 = skip),
# AB_TARGET (target/ab: REV's cargo target dir, seeded from target/release on
# first use so dependencies are not compiled again; REV's binary is kept
# there by commit id), PGURL (postgres://postgres@127.0.0.1:5432),
# PGSSLMODE (disable), AB_TREE_SQL (SQL run on the tree's database after its
# migrations, before it serves: with REV = HEAD, the cost of one index or
# setting, e.g. AB_TREE_SQL='DROP INDEX webhook_events_brin'), AB_TREE_ENV
# (settings for the tree's server only, one NAME=VALUE per line, e.g.
# AB_TREE_ENV=IMGGO__DATABASE__WRITERS=2 with REV = HEAD).
set -euo pipefail
REV_ARG=${1:?usage: benches/load/ab.sh REV}
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh

ROUNDS=${AB_ROUNDS:-2}
SECS=${AB_SECONDS:-20}
CONNS=${AB_CONNECTIONS:-64}
COUNT=${AB_DELIVERIES:-$((40000 * SECS))}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
AB_TARGET=${AB_TARGET:-$ROOT/target/ab}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
export PGSSLMODE=${PGSSLMODE:-disable}
DB=imggo_ab
PORT=28180
ADMIN=29564
API=28183

REV=$(git rev-parse --verify "$REV_ARG^{commit}")
SHORT=${REV:0:7}
WORK=$(mktemp -d /dev/shm/imggo-ab.XXXXXX 2>/dev/null || mktemp -d /tmp/imggo-ab.XXXXXX)
PID=
SAMPLER=
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; fi
  if [ -d "$WORK/rev" ]; then git worktree remove --force "$WORK/rev" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "benches/load/ab.sh: failed at line $LINENO" >&2' ERR
say() { printf '\n== %s\n' "$*" >&2; }

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n1 || true)

# Nothing from the caller's environment reaches either build's settings.
for v in $(compgen -e | grep '^IMGGO_' || true); do unset "$v"; done

say "building the working tree (release)"
cargo build --release --locked --quiet --bin imggo-receiver --example loadgen
mkdir -p "$WORK/tree"
cp "$TARGET/release/imggo-receiver" "$WORK/tree/"
cp config/default.toml "$WORK/tree/default.toml"
LOADGEN=$TARGET/release/examples/loadgen

say "building $SHORT (release)"
CACHED=$AB_TARGET/bin/$REV
if [ ! -x "$CACHED/imggo-receiver" ]; then
  if [ ! -d "$AB_TARGET/release" ] && [ -d "$TARGET/release" ]; then
    mkdir -p "$AB_TARGET"
    cp -a "$TARGET/release" "$AB_TARGET/"
  fi
  git worktree add --quiet --detach "$WORK/rev" "$REV"
  (cd "$WORK/rev" && CARGO_TARGET_DIR=$AB_TARGET cargo build --release --locked --quiet --bin imggo-receiver)
  mkdir -p "$CACHED"
  cp "$AB_TARGET/release/imggo-receiver" "$WORK/rev/config/default.toml" "$CACHED/"
  git worktree remove --force "$WORK/rev"
fi
mkdir -p "$WORK/base"
cp "$CACHED/imggo-receiver" "$WORK/base/"
cp "$CACHED/default.toml" "$WORK/base/default.toml"

BIN=$WORK/tree/imggo-receiver
export IMGGO_WEBHOOK_SECRETS="whsec_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export IMGGO_ENCRYPTION_KEYS="kbench:$($BIN keygen)"
export IMGGO_HASH_KEY="$($BIN keygen)"
export DATABASE_URL="$PGURL/$DB?sslmode=$PGSSLMODE"

say "generating $COUNT unique signed deliveries"
$LOADGEN gen "$COUNT" "$WORK/deliveries.tsv"

# "section key value": set only for a build whose defaults have [section].
SETTINGS="server bind 127.0.0.1:$PORT
admin bind 127.0.0.1:$ADMIN
rate_limit per_second 10000000
rate_limit burst 10000000
api bind 127.0.0.1:$API
spool path $WORK/spool.db"

# Prints the NAME=VALUE environment for the build whose defaults are $1.
settings_for() {
  local section key value
  while read -r section key value; do
    if grep -q "^\[$section\]" "$1"; then
      echo "IMGGO__${section^^}__${key^^}=$value"
    fi
  done <<<"$SETTINGS"
}
for b in base tree; do
  settings_for "$WORK/$b/default.toml" > "$WORK/$b/env"
  if [ "$b" = tree ] && [ -n "${AB_TREE_ENV:-}" ]; then echo "$AB_TREE_ENV" >> "$WORK/$b/env"; fi
  echo "$b gets: $(tr '\n' ' ' < "$WORK/$b/env")" >&2
done

fresh_db() {
  PGOPTIONS="-c client_min_messages=warning" psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
    -c "CREATE DATABASE $DB" -c "CHECKPOINT" >/dev/null
  sync
}

# One round: build $1 (base|tree) on a fresh database; appends
# "<build> <stored/s> <p50> <p99> <rss MiB> <receiver µs> <postgres µs> <non2xx> <stored>"
# to $WORK/results.
round() {
  local b=$1 out line field_ stored secs rcpu0 rcpu1 pgs rss bad
  fresh_db
  rm -f "$WORK"/spool.db*
  (set -a; . "$WORK/$b/env"; exec "$WORK/$b/imggo-receiver" migrate) > "$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log"; exit 1; }
  if [ "$b" = tree ] && [ -n "${AB_TREE_SQL:-}" ]; then
    psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qc "$AB_TREE_SQL" >/dev/null
  fi
  (set -a; . "$WORK/$b/env"; exec "$WORK/$b/imggo-receiver" serve) > "$WORK/server.log" 2>&1 &
  PID=$!
  local ready=
  for _ in $(seq 1 200); do
    if curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "$b did not become ready"; tail "$WORK/server.log"; exit 1; }
  pg_sampler "$DB" > "$WORK/pg.samples" &
  SAMPLER=$!
  sleep 0.6
  rcpu0=$(cpu_s "$PID")
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s benches/load/wrk.lua \
    "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/deliveries.tsv" 1)
  rcpu1=$(cpu_s "$PID")
  sleep 0.6
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
  rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID/status")
  kill "$PID"; wait "$PID" || true; PID=
  pgs=$(pg_seconds "$WORK/pg.samples")
  stored=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM webhook_events")
  line=$(echo "$out" | grep '^WRK ')
  field_() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
  secs=$(field_ seconds); bad=$(field_ non2xx_or_errors)
  if [ "$(field_ completed)" -gt "$COUNT" ]; then
    echo "note: wrk cycled past $COUNT unique deliveries (raise AB_DELIVERIES)" >&2
  fi
  echo "$b $stored $secs $(field_ p50_ms) $(field_ p99_ms) $rss $rcpu0 $rcpu1 $pgs $bad" |
    awk '{n=$2; printf "%s %.0f %s %s %s %.1f %.1f %s %d\n", $1, n/$3, $4, $5, $6, ($8-$7)*1e6/n, $9*1e6/n, $10, n}' \
    >> "$WORK/results"
  tail -n1 "$WORK/results" | awk -v s="$SHORT" '{printf "  %-11s %8s/s  p50 %6s ms  p99 %7s ms  RSS %5s MiB  receiver %5s µs  postgres %5s µs  non-2xx %s\n",
    ($1 == "base" ? s : "tree"), $2, $3, $4, $5, $6, $7, $8}' >&2
}

for i in $(seq 1 "$ROUNDS"); do
  say "round $i of $ROUNDS: $SHORT, then the working tree (${SECS}s each, $CONNS connections)"
  round base
  round tree
done

PGB=
if [ "${AB_PGBENCH:-1}" = 1 ] && [ -n "$PGBENCH" ]; then
  say "pgbench: one key claim (ON CONFLICT) and INSERT per transaction, 32 clients, 10 s"
  fresh_db
  (set -a; . "$WORK/tree/env"; exec "$BIN" migrate) > "$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log"; exit 1; }
  cp benches/load/pgbench_insert.sql "$WORK/insert.sql"
  if "$PGBENCH" -n -c 32 -j 2 -T 10 -f "$WORK/insert.sql" "$DATABASE_URL" > "$WORK/pgbench.out" 2>&1; then
    PGB=$(awk -F'= ' '/^tps/ {printf "%.0f", $2}' "$WORK/pgbench.out")
  else
    echo "pgbench failed:" >&2; tail -n 5 "$WORK/pgbench.out" >&2
  fi
fi
psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null

echo
echo "imggo-receiver A/B: $SHORT vs working tree ($(git describe --always --dirty)), $ROUNDS rounds each, alternating"
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), PostgreSQL $(psql "$PGURL/postgres" -Atc 'SHOW server_version'); wrk $CONNS connections, ${SECS}s; CPU per stored delivery"
awk -v s="$SHORT" -v pgb="${PGB:-}" '
  { k = $1; c[k]++; r[k] = r[k] sprintf("%s%.0f", c[k] > 1 ? ", " : "", $2)
    for (f = 2; f <= 8; f++) sum[k, f] += $f
    if ($5 > rss[k]) rss[k] = $5; bad[k] += $8 }
  END {
    printf "%-12s %10s %9s %9s %9s %13s %13s  %s\n", "build", "stored/s", "p50 ms", "p99 ms", "RSS MiB", "receiver µs", "postgres µs", "stored/s per round"
    for (i = 1; i <= 2; i++) {
      k = (i == 1) ? "base" : "tree"
      if (!c[k]) continue
      m[k, 2] = sum[k, 2] / c[k]; m[k, 6] = sum[k, 6] / c[k]; m[k, 7] = sum[k, 7] / c[k]
      printf "%-12s %10.0f %9.2f %9.2f %9.1f %13.1f %13.1f  %s%s\n", (k == "base" ? s : "tree"), m[k, 2],
        sum[k, 3] / c[k], sum[k, 4] / c[k], rss[k], m[k, 6], m[k, 7], r[k], bad[k] ? "  (non-2xx: " bad[k] ")" : ""
    }
    if (c["base"] && c["tree"])
      printf "tree/%s: stored/s %.2fx, receiver CPU %.2fx, postgres CPU %.2fx (RSS is the peak of the rounds)\n", s,
        m["tree", 2] / m["base", 2], m["tree", 6] / m["base", 6], m["tree", 7] / m["base", 7]
    if (pgb != "")
      printf "pgbench single-row INSERT ceiling (32 clients, 10 s): %s rows/s -> tree/pgbench %.2fx\n", pgb, m["tree", 2] / pgb
  }' "$WORK/results"

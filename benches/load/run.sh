#!/usr/bin/env bash
# Load benchmark: one command, from a clean clone.
#
#   bash benches/load/run.sh
#
# Builds the receiver (release), generates unique signed 1.5 KB deliveries
# carrying PII, and against a fresh Postgres database measures:
#   1. throughput: wrk, 64 connections, 30 s, cycling through pre-signed
#      bodies; then checks that every 2xx answer has its row committed;
#   2. latency at a fixed offered 5,000 deliveries/s, open loop (requests are
#      sent on schedule whether or not earlier ones answered; latency counts
#      from the scheduled send time, as wrk2 does);
#   3. a lone delivery on an idle server (no batch to join);
#   4. for comparison, Postgres' own single-row INSERT ceiling (pgbench, 32
#      clients, one key claim (ON CONFLICT) and INSERT per transaction) in the same run;
#   5. the spool: Postgres made unreachable for the receiver (a forwarder in
#      between, killed), wrk at the same connections: every answer must be
#      a 2xx from the spool;
#   6. the drain of what phase 5 spooled (100,000+ rows) into Postgres once
#      the forwarder is back, timed until imggo_spool_depth is 0;
#   7. validation A/B: wrk throughput with `validation.schemas_dir` off and
#      on (benches/load/schemas: a realistic invoice schema for the load's
#      pattern, ~20 properties with required, type, format and pattern),
#      alternating off/on BENCH_AB_ROUNDS times on fresh databases, with the
#      receiver's CPU time per stored delivery (utime+stime from /proc).
#   8. forwarding A/B: wrk throughput with no destination and with four
#      (nats, rabbitmq, redis on the local brokers, http to `loadgen sink`),
#      alternating off/on BENCH_AB_ROUNDS times on fresh databases, in the
#      same run; with them on, the time after the load until every
#      destination has confirmed every stored event (imggo_forward_sent_total
#      >= rows for each, and imggo_forward_lag_events 0), and the receiver's
#      peak RSS. Targets (issue 24): on/off >= 0.90, catch-up within the
#      load's own duration, peak RSS <= 64 MiB.
# Right after phase 3, on the same server and database, the Results API
# feed is drained (GET /v1/events?limit=1000, following `next`) of
# everything phase 3 stored, in events/s, with the receiver's peak RSS.
# Peak RSS of the receiver is read from /proc (VmHWM) after each phase.
#
# Knobs (environment): BENCH_SECONDS (30), BENCH_CONNECTIONS (64),
# BENCH_RATE (5000), BENCH_OPEN_SECONDS (20), BENCH_DELIVERIES (900000),
# PGURL (postgres://postgres@127.0.0.1:5432), PGSSLMODE (disable),
# BENCH_AB_SECONDS (15), BENCH_AB_ROUNDS (2), BENCH_ONLY (`validation`:
# phase 7 alone; `forwarding`: phase 8 alone). BENCH_PERF=PREFIX records
# the receiver with `perf record` during each load with destinations
# on, into PREFIX.<random> (`perf report -i` reads it).
# Phase 8 needs NATS with JetStream (127.0.0.1:4222), RabbitMQ (5672,
# guest/guest) and Redis (6379) running.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=benches/load/lib.sh
. benches/load/lib.sh

SECONDS_=${BENCH_SECONDS:-30}
CONNS=${BENCH_CONNECTIONS:-64}
RATE=${BENCH_RATE:-5000}
OPEN_SECONDS=${BENCH_OPEN_SECONDS:-20}
COUNT=${BENCH_DELIVERIES:-900000}
SPOOL_SECONDS=${BENCH_SPOOL_SECONDS:-15}
SPOOL_COUNT=${BENCH_SPOOL_DELIVERIES:-400000}
PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
PORT=28080
ADMIN=29464
# Deliveries live in memory (tmpfs): writing 1.5 GB to disk just before a
# phase would have the kernel flushing it while Postgres waits on fsync.
WORK=$(mktemp -d /dev/shm/imggo-bench.XXXXXX 2>/dev/null || mktemp -d /tmp/imggo-bench.XXXXXX)
# (Never `kill 0`: with PID empty that would signal this whole process group.)
trap 'if [ -n "${PID:-}" ]; then kill "$PID" 2>/dev/null || true; fi; if [ -n "${SINK_PID:-}" ]; then kill "$SINK_PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

trap 'echo "benches/load/run.sh: failed at line $LINENO" >&2' ERR

say() { printf '\n== %s\n' "$*" >&2; }

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
PGBENCH=$(ls /usr/lib/postgresql/*/bin/pgbench | tail -n1)

say "building (release)"
cargo build --release --locked --quiet --bin imggo-receiver --example loadgen
BIN=target/release/imggo-receiver
LOADGEN=target/release/examples/loadgen

export IMGGO_WEBHOOK_SECRETS="whsec_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export IMGGO_ENCRYPTION_KEYS="kbench:$($BIN keygen)"
export IMGGO_HASH_KEY="$($BIN keygen)"
API=$((PORT + 3))
export IMGGO__SERVER__BIND=127.0.0.1:$PORT IMGGO__ADMIN__BIND=127.0.0.1:$ADMIN IMGGO__API__BIND=127.0.0.1:$API
# One load generator address: lift the per-IP limit, keep everything else default.
export IMGGO__RATE_LIMIT__PER_SECOND=10000000 IMGGO__RATE_LIMIT__BURST=10000000

say "generating $COUNT unique signed deliveries"
$LOADGEN gen "$COUNT" "$WORK/deliveries.tsv"
$LOADGEN gen 150000 "$WORK/open.tsv"
$LOADGEN gen "$SPOOL_COUNT" "$WORK/spool.tsv"

# A fresh database per phase, with the previous phase's writes on disk first
# (a checkpoint and the kernel's writeback), so phases do not tax each other.
# Postgres is on this host: the receiver and pgbench both reach it over
# loopback without TLS (PGSSLMODE), as a receiver beside its database would.
export PGSSLMODE=${PGSSLMODE:-disable}
fresh_db() {
  psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS imggo_bench WITH (FORCE)" -c "CREATE DATABASE imggo_bench" -c "CHECKPOINT" >/dev/null
  sync
  export DATABASE_URL="$PGURL/imggo_bench?sslmode=$PGSSLMODE"
}

start() {
  # A spool of the run's own: each phase starts with an empty one.
  rm -f "$WORK"/spool.db*
  export IMGGO__SPOOL__PATH="$WORK/spool.db"
  $BIN serve > "$WORK/server.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "receiver did not become ready"; tail "$WORK/server.log"; exit 1
}

stop() { kill "$PID"; wait "$PID" || true; PID=; }
rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID/status"; }
rows() { psql "$DATABASE_URL" -Atc "SELECT count(*) FROM webhook_events"; }

# Follows the feed from the start with limit=1000 until a page comes back
# empty; prints "<events> <seconds>".
drain_feed() {
  local token after="" n=0 c code t0 t1
  token=$($BIN token create "bench-$RANDOM" --scope events:read 2>/dev/null)
  t0=$(date +%s.%N)
  while :; do
    code=$(curl -s -H "Authorization: Bearer $token" -o "$WORK/page.json" -w '%{http_code}' \
      "http://127.0.0.1:$API/v1/events?limit=1000${after:+&after=$after}")
    [ "$code" = 200 ] || { echo "drain: HTTP $code" >&2; break; }
    c=$(grep -o '"cursor":' "$WORK/page.json" | wc -l)
    [ "$c" -eq 0 ] && break
    n=$((n + c))
    after=$(tail -c 200 "$WORK/page.json" | sed -n 's/.*"next":"\([^"]*\)".*/\1/p')
  done
  t1=$(date +%s.%N)
  echo "$n $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b-a}')"
}

# wrk against a fresh database and server, with `validation.schemas_dir` =
# $1 ("" = off); prints "<stored/s> <receiver µs CPU per stored delivery>".
ab_round() {
  local out line cpu0 cpu1 stored t0 t1
  fresh_db
  IMGGO__VALIDATION__SCHEMAS_DIR=$1 start
  cpu0=$(cpu_s "$PID"); t0=$(date +%s.%N)
  out=$(wrk -t1 -c"$CONNS" -d"${AB_SECONDS}s" --timeout 10s -s benches/load/wrk.lua \
    "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/deliveries.tsv" 1)
  t1=$(date +%s.%N); cpu1=$(cpu_s "$PID")
  stop
  stored=$(rows)
  line=$(echo "$out" | grep '^WRK ')
  awk -v n="$stored" -v a="$t0" -v b="$t1" -v c0="$cpu0" -v c1="$cpu1" \
    'BEGIN {printf "%.0f %.1f", n/(b-a), (n > 0) ? (c1-c0)*1e6/n : 0}'
}

AB_SECONDS=${BENCH_AB_SECONDS:-15}
AB_ROUNDS=${BENCH_AB_ROUNDS:-2}
validation_ab() {
  local i off on off_sum=0 on_sum=0 off_cpu=0 on_cpu=0
  say "7/8 validation A/B: off/on x $AB_ROUNDS, ${AB_SECONDS}s each"
  for i in $(seq 1 "$AB_ROUNDS"); do
    read -r off off_c <<<"$(ab_round "")"
    read -r on on_c <<<"$(ab_round "$PWD/benches/load/schemas")"
    echo "round $i: off $off/s (${off_c} µs CPU/delivery), on $on/s (${on_c} µs CPU/delivery)" >&2
    off_sum=$((off_sum + off)); on_sum=$((on_sum + on))
    off_cpu=$(awk -v a="$off_cpu" -v b="$off_c" 'BEGIN {print a + b}')
    on_cpu=$(awk -v a="$on_cpu" -v b="$on_c" 'BEGIN {print a + b}')
  done
  AB_REPORT=$(awk -v a="$on_sum" -v b="$off_sum" -v ca="$on_cpu" -v cb="$off_cpu" -v r="$AB_ROUNDS" \
    'BEGIN {printf "validation A/B (%d rounds each, alternating): off %.0f/s, on %.0f/s -> on/off = %.3fx; receiver CPU per delivery off %.1f µs, on %.1f µs (+%.1f µs)", r, b/r, a/r, a/b, cb/r, ca/r, (ca-cb)/r}')
  echo "$AB_REPORT"
}

SINK=$((PORT + 4))
metric_of() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1==m {printf "%.0f", $2}'; }
# BENCH_FORWARD_KINDS (all four) runs phase 8 with some of them, e.g.
# "rabbitmq" alone, to cost one kind.
KINDS=${BENCH_FORWARD_KINDS:-nats rabbitmq redis http}
DESTS=$(for k in $KINDS; do case $k in nats) echo bnats ;; rabbitmq) echo bmq ;;
  redis) echo bredis ;; http) echo bhttp ;; *) echo "unknown kind $k" >&2; exit 1 ;; esac; done | xargs)

# The four destinations of phase 8 as IMGGO__FORWARD__* settings, over the
# broker objects named $1 (`loadgen brokers setup`).
forward_on() {
  local n=$1 pre
  export IMGGO__FORWARD__BNATS__KIND=nats IMGGO__FORWARD__BNATS__URL=nats://127.0.0.1:4222 \
    IMGGO__FORWARD__BNATS__SUBJECT="$n.{event}"
  export IMGGO__FORWARD__BMQ__KIND=rabbitmq IMGGO__FORWARD__BMQ__URL="amqp://guest:guest@127.0.0.1:5672/%2f" \
    IMGGO__FORWARD__BMQ__EXCHANGE="$n" IMGGO__FORWARD__BMQ__ROUTING_KEY=bench
  # Trimmed like the other two (loadgen brokers keeps 20,000 each).
  export IMGGO__FORWARD__BREDIS__KIND=redis IMGGO__FORWARD__BREDIS__URL=redis://127.0.0.1:6379 \
    IMGGO__FORWARD__BREDIS__STREAM="$n" IMGGO__FORWARD__BREDIS__MAXLEN=20000
  export IMGGO__FORWARD__BHTTP__KIND=http IMGGO__FORWARD__BHTTP__URL="http://127.0.0.1:$SINK/hook" \
    IMGGO__FORWARD__BHTTP__SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
  for pre in BNATS BMQ BREDIS BHTTP; do export "IMGGO__FORWARD__${pre}__MAX_BACKOFF=2s"; done
  # Only the kinds asked for.
  for pre in BNATS BMQ BREDIS BHTTP; do
    case " $DESTS " in *" ${pre,,} "*) ;; *) unset $(compgen -v "IMGGO__FORWARD__${pre}__") ;; esac
  done
}
forward_off() { unset "${!IMGGO__FORWARD__@}"; }

# CPU seconds (utime + stime) of each side of a forwarding round, now:
# "<receiver> <postgres> <brokers and sink>". Postgres is every process of
# the server (the relays' connections come and go with the receiver's
# pools); the brokers are the machine's NATS, RabbitMQ and Redis plus the
# bench's own HTTP sink.
side_cpu() {
  local hz pg other
  hz=$(getconf CLK_TCK)
  pg=$(pgrep -d ' ' -x postgres | tr ' ' '\n' | sed 's|.*|/proc/&/stat|' | xargs awk '{s += $14 + $15} END {print s + 0}' 2>/dev/null)
  other=$( (pgrep -x beam.smp; pgrep -x nats-server; pgrep -x redis-server; echo "${SINK_PID:-}") |
    grep . | sed 's|.*|/proc/&/stat|' | xargs awk '{s += $14 + $15} END {print s + 0}' 2>/dev/null)
  awk -v hz="$hz" -v p="$pg" -v o="$other" -v r="$(awk '{print $14 + $15}' "/proc/$PID/stat")" \
    'BEGIN {printf "%.3f %.3f %.3f", r/hz, p/hz, o/hz}'
}

# One round: wrk on a fresh database and server, destinations off ($1 =
# off) or on; prints "<stored/s> <catch-up s> <peak RSS MiB> <lag events>
# <receiver µs> <postgres µs> <brokers µs>" (catch-up and lag "-" when off;
# catch-up "never" past 4x the load). The CPU is per stored delivery, from
# the load's start until every destination caught up (on) or the load
# ended (off): what ingest plus forwarding cost each side.
forward_round() {
  local out cpu0 cpu1 stored t0 t1 t2 name="" d ok lag rss catch="-" lagsum="-"
  fresh_db
  if [ "$1" = on ]; then
    name="imggobench$RANDOM$RANDOM"
    $LOADGEN brokers setup "$name"
    forward_on "$name"
  fi
  start
  local perf=""
  if [ "$1" = on ] && [ -n "${BENCH_PERF:-}" ]; then
    perf record -q -F 499 -p "$PID" -o "$BENCH_PERF.$RANDOM" 2>/dev/null & perf=$!
  fi
  t0=$(date +%s.%N); cpu0=$(side_cpu)
  out=$(wrk -t1 -c"$CONNS" -d"${AB_SECONDS}s" --timeout 10s -s benches/load/wrk.lua \
    "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/deliveries.tsv" 1)
  t1=$(date +%s.%N); cpu1=$(side_cpu)
  stored=$(rows)
  if [ -n "$perf" ]; then kill -INT "$perf"; wait "$perf" || true; fi
  if [ "$1" = on ]; then
    catch=never
    while awk -v a="$t1" -v b="$(date +%s.%N)" -v s="$AB_SECONDS" 'BEGIN {exit !(b - a < 4 * s)}'; do
      ok=1
      for d in $DESTS; do
        [ "$(metric_of "imggo_forward_sent_total{destination=\"$d\"}")" -ge "$stored" ] 2>/dev/null || ok=0
      done
      if [ "$ok" = 1 ]; then
        t2=$(date +%s.%N); cpu1=$(side_cpu)
        catch=$(awk -v a="$t1" -v b="$t2" 'BEGIN {printf "%.1f", b - a}')
        break
      fi
      sleep 0.2
    done
    # The lag gauges are measured every 2 s: wait for a measurement after the catch-up.
    sleep 2.5
    lagsum=0
    for d in $DESTS; do
      lag=$(metric_of "imggo_forward_lag_events{destination=\"$d\"}")
      lagsum=$((lagsum + ${lag:-0}))
    done
  fi
  rss=$(rss_mib)
  stop
  if [ -n "$name" ]; then
    forward_off
    $LOADGEN brokers teardown "$name"
  fi
  awk -v n="$stored" -v a="$t0" -v b="$t1" -v c="$catch" -v r="$rss" -v l="$lagsum" \
    -v c0="$cpu0" -v c1="$cpu1" \
    'BEGIN {split(c0, x, " "); split(c1, y, " ");
      printf "%.0f %s %s %s %.1f %.1f %.1f", n/(b-a), c, r, l,
        (y[1]-x[1])*1e6/n, (y[2]-x[2])*1e6/n, (y[3]-x[3])*1e6/n}'
}

forwarding_ab() {
  local i off on off_sum=0 on_sum=0 catch rss rss_off lag worst_catch=0 worst_rss=0 never=0 lag_left=0
  local offr offp offb onr onp onb cpu_off="0 0 0" cpu_on="0 0 0"
  say "8/8 forwarding A/B: no destination / $DESTS x $AB_ROUNDS, ${AB_SECONDS}s each"
  $LOADGEN sink "127.0.0.1:$SINK" & SINK_PID=$!
  for i in $(seq 1 "$AB_ROUNDS"); do
    read -r off _ rss_off _ offr offp offb <<<"$(forward_round off)"
    read -r on catch rss lag onr onp onb <<<"$(forward_round on)"
    echo "round $i: off $off/s, on $on/s, caught up ${catch}s after the load, peak RSS off ${rss_off} / on ${rss} MiB, lag after ${lag} events;" \
      "CPU per delivery (receiver/postgres/brokers+sink) off $offr/$offp/$offb µs, on $onr/$onp/$onb µs" >&2
    cpu_off=$(echo "$cpu_off $offr $offp $offb" | awk '{printf "%s %s %s", $1+$4, $2+$5, $3+$6}')
    cpu_on=$(echo "$cpu_on $onr $onp $onb" | awk '{printf "%s %s %s", $1+$4, $2+$5, $3+$6}')
    off_sum=$((off_sum + off)); on_sum=$((on_sum + on))
    if [ "$catch" = never ]; then never=1; else worst_catch=$(awk -v a="$worst_catch" -v b="$catch" 'BEGIN {print (b > a) ? b : a}'); fi
    worst_rss=$(awk -v a="$worst_rss" -v b="$rss" 'BEGIN {print (b > a) ? b : a}')
    [ "$lag" = 0 ] || lag_left=1
  done
  kill "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
  [ "$never" = 1 ] && worst_catch=never
  FWD_REPORT=$(awk -v a="$on_sum" -v b="$off_sum" -v r="$AB_ROUNDS" -v c="$worst_catch" -v s="$AB_SECONDS" -v m="$worst_rss" -v d="$DESTS" \
    'BEGIN {printf "forwarding A/B (%d rounds each, alternating): off %.0f/s, on (%s) %.0f/s -> on/off = %.3fx (target >= 0.90); every destination caught up at most %ss after a %ss load (target <= %s); receiver peak RSS with them on %s MiB (target <= 64)", r, b/r, d, a/r, a/b, c, s, s, m}')
  FWD_REPORT="$FWD_REPORT; $(echo "$cpu_off $cpu_on" | awk -v r="$AB_ROUNDS" \
    '{printf "CPU per stored delivery, receiver / postgres / brokers+sink: off %.1f / %.1f / %.1f µs, on %.1f / %.1f / %.1f µs", $1/r, $2/r, $3/r, $4/r, $5/r, $6/r}')"
  echo "$FWD_REPORT"
  FWD_OK=$(awk -v a="$on_sum" -v b="$off_sum" -v c="$worst_catch" -v s="$AB_SECONDS" -v m="$worst_rss" -v l="$lag_left" \
    'BEGIN {print (a/b >= 0.90 && c != "never" && c <= s && m <= 64 && l == 0) ? "ok" : "MISSED"}')
  echo "forwarding targets: $FWD_OK"
}

if [ "${BENCH_ONLY:-}" = validation ]; then
  validation_ab
  exit 0
fi
if [ "${BENCH_ONLY:-}" = forwarding ]; then
  forwarding_ab
  exit 0
fi

say "1/8 open loop: $RATE deliveries/s for ${OPEN_SECONDS}s"
fresh_db; start
OPEN_OUT=$($LOADGEN open-loop "http://127.0.0.1:$PORT/webhooks/imggo" "$WORK/open.tsv" "$RATE" "$OPEN_SECONDS")
OPEN_RSS=$(rss_mib)
stop

say "2/8 lone deliveries on an idle server"
fresh_db; start
tail -n 200 "$WORK/open.tsv" > "$WORK/lone.tsv"
LONE_OUT=$($LOADGEN lone "http://127.0.0.1:$PORT/webhooks/imggo" "$WORK/lone.tsv" 200)
stop

say "3/8 throughput: wrk, $CONNS connections, ${SECONDS_}s"
fresh_db; start
# One wrk thread: wrk loads each thread's requests (wrk.lua's init) one
# thread after another and starts its clock only after the last, so with two
# threads the first sends for seconds before the clock starts and the rate
# it reports is inflated. One thread drives well past 20,000 requests/s here.
WRK_OUT=$(wrk -t1 -c"$CONNS" -d"${SECONDS_}s" --timeout 10s -s benches/load/wrk.lua \
  "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/deliveries.tsv" 1)
echo "$WRK_OUT" >&2
LINE=$(echo "$WRK_OUT" | grep '^WRK ')
field() { echo "$LINE" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
COMPLETED=$(field completed); BAD=$(field non2xx_or_errors); RATE_W=$(field rate)
OK=$((COMPLETED - BAD))
THRU_RSS=$(rss_mib)
BATCH=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^imggo_write_batch_size_sum/ {s=$2} /^imggo_write_batch_size_count/ {c=$2} END {if (c) printf "%.1f", s/c}')
say "3b feed drain: GET /v1/events?limit=1000 of everything just stored"
read -r FEED_N FEED_S <<<"$(drain_feed)"
FEED_RATE=$(awk -v n="$FEED_N" -v s="$FEED_S" 'BEGIN {if (s > 0) printf "%.0f", n/s}')
FEED_RSS=$(rss_mib)
stop
STORED=$(rows)
if [ "$COMPLETED" -gt "$COUNT" ]; then
  echo "note: wrk cycled past $COUNT unique deliveries; later answers were duplicates" >&2
fi
# Every 2xx is committed; rows may exceed 2xx by requests in flight when wrk stopped.
CHECK="ok"
if [ "$STORED" -lt "$OK" ] && [ "$COMPLETED" -le "$COUNT" ]; then CHECK="FAILED: $OK acknowledged, $STORED stored"; fi

say "4/8 pgbench: one key claim (ON CONFLICT) and INSERT per transaction, 32 clients, 10s"
fresh_db; $BIN migrate >/dev/null
cp benches/load/pgbench_insert.sql "$WORK/insert.sql"
if ! $PGBENCH -n -c 32 -j 2 -T 10 -f "$WORK/insert.sql" "$DATABASE_URL" > "$WORK/pgbench.out" 2>&1; then
  echo "pgbench failed:" >&2; tail -n 20 "$WORK/pgbench.out" >&2
fi
PGB=$(awk -F'= ' '/^tps/ {printf "%.0f", $2}' "$WORK/pgbench.out")
PGB=${PGB:-0}
psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS imggo_bench" >/dev/null

say "5/8 spool: Postgres unreachable, wrk, $CONNS connections, ${SPOOL_SECONDS}s"
# The receiver reaches Postgres through a forwarder; killing it makes
# Postgres unreachable for the receiver alone (the server keeps running).
fresh_db
PROXY_PORT=$((PORT + 2))
BASE_URL=$DATABASE_URL
$LOADGEN proxy "127.0.0.1:$PROXY_PORT" 127.0.0.1:5432 & PROXY=$!
export DATABASE_URL="postgresql://postgres@127.0.0.1:$PROXY_PORT/imggo_bench?sslmode=$PGSSLMODE"
start
kill "$PROXY"; wait "$PROXY" 2>/dev/null || true
SPOOL_OUT=$(wrk -t1 -c"$CONNS" -d"${SPOOL_SECONDS}s" --timeout 10s -s benches/load/wrk.lua \
  "http://127.0.0.1:$PORT/webhooks/imggo" -- "$WORK/spool.tsv" 1)
echo "$SPOOL_OUT" >&2
LINE=$(echo "$SPOOL_OUT" | grep '^WRK ')
SPOOL_RATE=$(field rate); SPOOL_BAD=$(field non2xx_or_errors)
metric() { curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1==m {printf "%.0f", $2}'; }
SPOOLED=$(metric imggo_spool_depth)

say "6/8 drain: $SPOOLED spooled deliveries into Postgres"
$LOADGEN proxy "127.0.0.1:$PROXY_PORT" 127.0.0.1:5432 & PROXY=$!
T0=$(date +%s.%N)
while [ "$(metric imggo_spool_depth)" != "0" ]; do sleep 0.05; done
T1=$(date +%s.%N)
SPOOL_RSS=$(rss_mib)
stop
kill "$PROXY"; wait "$PROXY" 2>/dev/null || true
export DATABASE_URL=$BASE_URL
DRAINED=$(rows)
DRAIN_RATE=$(awk -v n="$DRAINED" -v a="$T0" -v b="$T1" 'BEGIN {printf "%.0f", n/(b-a)}')
psql "$PGURL/postgres" -qc "DROP DATABASE IF EXISTS imggo_bench WITH (FORCE)" >/dev/null

LINE=$(echo "$WRK_OUT" | grep '^WRK ')
cat <<REPORT

imggo-receiver load benchmark ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(psql "$PGURL/postgres" -Atc 'SHOW server_version'))
receiver, Postgres and load generators share the machine

throughput (wrk, $CONNS connections, ${SECONDS_}s): $RATE_W deliveries/s
  answered: $COMPLETED, non-2xx/errors: $BAD, latency p50 $(field p50_ms) ms, p99 $(field p99_ms) ms
  rows stored: $STORED, 2xx answers: $OK -> every acknowledged delivery stored: $CHECK
  mean rows per commit: $BATCH, receiver peak RSS: ${THRU_RSS} MiB
open loop: $OPEN_OUT
  receiver peak RSS: ${OPEN_RSS} MiB
$LONE_OUT
feed drain (limit=1000): $FEED_N events in ${FEED_S}s = $FEED_RATE events/s -> drain/ingest = $(awk -v a="$FEED_RATE" -v b="$RATE_W" 'BEGIN {if (b > 0) printf "%.2f", a/b}')x, receiver peak RSS through ingest and drain: ${FEED_RSS} MiB
pgbench single-row INSERT ceiling (32 clients): $PGB rows/s -> receiver/pgbench = $(awk -v a="$RATE_W" -v b="$PGB" 'BEGIN {if (b > 0) printf "%.2f", a/b; else printf "n/a "}')x
spool, Postgres unreachable (wrk, $CONNS connections, ${SPOOL_SECONDS}s): $SPOOL_RATE deliveries/s, non-2xx/errors: $SPOOL_BAD -> spool/normal = $(awk -v a="$SPOOL_RATE" -v b="$RATE_W" 'BEGIN {if (b > 0) printf "%.2f", a/b}')x
drain: $DRAINED spooled deliveries into Postgres at $DRAIN_RATE/s -> drain/normal = $(awk -v a="$DRAIN_RATE" -v b="$RATE_W" 'BEGIN {if (b > 0) printf "%.2f", a/b}')x, receiver peak RSS ${SPOOL_RSS} MiB
REPORT
validation_ab
forwarding_ab
[ "$CHECK" = "ok" ] && [ "$SPOOL_BAD" = "0" ]

# CPU time from /proc, shared by ab.sh, partitions.sh and run.sh (sourced).

HZ=$(getconf CLK_TCK)

# Every 0.5 s until killed: one line "S <pid> <utime+stime> <stime>" (ticks)
# per Postgres process serving database $1 or the whole server in the
# background (walwriter, checkpointer, background writer, autovacuum), then
# "T". Backends opened during a round count too; backends of other
# databases (other work on the machine) do not.
pg_sampler() {
  local pattern="^postgres: .*( $1 |walwriter|checkpointer|background writer|autovacuum)" pids
  while :; do
    pids=$(pgrep -f "$pattern" | sed 's|.*|/proc/&/stat|' | tr '\n' ' ')
    # shellcheck disable=SC2086
    [ -z "$pids" ] || awk '{split(FILENAME, p, "/"); print "S", p[3], $14 + $15, $15}' $pids 2>/dev/null || true
    # Which of them are autovacuum workers (a line "A pid" each).
    pgrep -f "^postgres: autovacuum worker" | sed 's/^/A /' || true
    echo T
    sleep 0.5
  done
}

# Postgres CPU seconds over a sampler's output $1 ($2 = 3: user and system,
# the default; 4: system only), per process from its first sample (0 for
# one that started during the round) to its last.
pg_seconds() {
  awk -v hz="$HZ" -v f="${2:-3}" '
    $1 == "T" { n++; next }
    $1 == "A" { next }
    { if (!($2 in last)) first[$2] = (n == 0) ? $f : 0; last[$2] = $f }
    END { for (p in last) s += last[p] - first[p]; printf "%.3f", s / hz }' "$1"
}

# The autovacuum workers' share of pg_seconds over the same output $1.
pg_autovacuum_seconds() {
  awk -v hz="$HZ" '
    $1 == "T" { n++; next }
    $1 == "A" { av[$2] = 1; next }
    { if (!($2 in last)) first[$2] = (n == 0) ? $3 : 0; last[$2] = $3 }
    END { for (p in last) if (p in av) s += last[p] - first[p]; printf "%.3f", s / hz }' "$1"
}

# CPU seconds (user and system) process $1 has used so far.
cpu_s() { awk -v hz="$HZ" '{printf "%.3f", ($14 + $15) / hz}' "/proc/$1/stat"; }

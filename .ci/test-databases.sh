#!/usr/bin/env bash
# Test databases on a Postgres that other runs may share (a colleague's,
# another CI job). Tests name theirs imggo_test_<unix seconds at the run's
# start>_<run>_<uuid> (tests/api/helpers/mod.rs) and drop them themselves.
# Only a leftover whose name says it is over a day old is dropped here: no
# run lasts that long. Anything younger may be in use right now and is
# never touched; names of any other form are not ours to judge.
#
# First a self-check, so a rule that drops too much fails CI instead of
# someone's test run: a fresh database of "another run" must survive, a
# day-old one must go.
set -euo pipefail
PSQL=(psql -h "${PGHOST:-127.0.0.1}" -p "${PGPORT:-5432}" -U "${PGUSER:-postgres}" -v ON_ERROR_STOP=1 -Atq)

drop_stale() {
  "${PSQL[@]}" -c "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname)
      FROM pg_database
      WHERE datname ~ '^imggo_test_[0-9]{10}_'
        AND substring(datname from '^imggo_test_([0-9]{10})_')::bigint
            < extract(epoch from now())::bigint - 86400" \
    | "${PSQL[@]}" >/dev/null
}

exists() {
  [ "$("${PSQL[@]}" -c "SELECT count(*) FROM pg_database WHERE datname = '$1'")" = 1 ]
}

now=$(date +%s)
tag=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
fresh="imggo_test_${now}_c1check0_${tag}"
stale="imggo_test_$((now - 2 * 86400))_c1check0_${tag}"
"${PSQL[@]}" -c "CREATE DATABASE $fresh" -c "CREATE DATABASE $stale"
drop_stale
if ! exists "$fresh"; then
  echo "test database clean-up dropped a fresh database of another run ($fresh)" >&2
  exit 1
fi
"${PSQL[@]}" -c "DROP DATABASE $fresh"
if exists "$stale"; then
  echo "test database clean-up left a day-old leftover ($stale)" >&2
  "${PSQL[@]}" -c "DROP DATABASE $stale"
  exit 1
fi
echo "test databases: day-old leftovers dropped; other runs' databases left alone"

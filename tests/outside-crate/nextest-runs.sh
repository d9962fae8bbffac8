#!/usr/bin/env bash
# Real runs: 5 `cargo nextest run`s of this crate on 3 migration sets
# (its own migrations plus one of three extra tables), then the shared server must hold no
# `_building` database, at most PGHARNESS_TEST_TEMPLATES (3) templates (this crate's most recently
# used; its tests build others too, with fixtures baked in or their own migrations), and
# no test database of a finished process. Needs psql. Run from the workspace root.
set -euo pipefail

work=$(mktemp -d)
# As root, PostgreSQL runs as an unprivileged account that must pass through it.
chmod 711 "$work"
# The server stops 5 s after the last test process; the files go once it has.
cleanup() {
  for _ in $(seq 1 40); do [ -e "$work/run/state.json" ] || break; sleep 0.5; done
  rm -rf "$work"
}
trap cleanup EXIT
export PGHARNESS_TEST_DIR="$work/run" PGHARNESS_TEST_IDLE_SECONDS=5
crate=tests/outside-crate

for run in 1 2 3 4 5; do
  set_number=$(( run % 3 ))
  migrations="$work/migrations-$set_number"
  if [ ! -d "$migrations" ]; then
    cp -r "$crate/migrations" "$migrations"
    echo "CREATE TABLE extra_$set_number (id int PRIMARY KEY);" \
      >"$migrations/20260201000000_extra_$set_number.up.sql"
    echo "DROP TABLE extra_$set_number;" >"$migrations/20260201000000_extra_$set_number.down.sql"
  fi
  PGHARNESS_TEST_MIGRATIONS_DIR="$migrations" cargo nextest run -p outside-crate --no-fail-fast \
    --status-level fail --final-status-level none
  echo "nextest run $run (migration set $set_number) passed"
done

state="$PGHARNESS_TEST_DIR/state.json"
port=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$state")
export PGPASSFILE="$PGHARNESS_TEST_DIR/pgpass"
databases=$(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc \
  "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database
   WHERE starts_with(datname, 'pgh_') ORDER BY 1")
echo "databases left on the shared server after 5 runs:"
echo "${databases:-(none)}" | sed 's/^/  /'

building=$(echo "$databases" | grep -c '_building' || true)
test_databases=$(echo "$databases" | grep -c '^pgh_t_' || true)
templates=$(echo "$databases" | grep -c '^pgh_tpl_' || true)
echo "_building: $building (must be 0); test databases: $test_databases (must be 0); templates: $templates (at most 3)"
[ "$building" -eq 0 ] && [ "$test_databases" -eq 0 ] && [ "$templates" -le 3 ] || exit 1

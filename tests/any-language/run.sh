#!/usr/bin/env bash
# Runs the projects in other languages against `pgharness testdb serve` (IntegreSQL's API):
# each in a fresh environment (a venv, node_modules), under `pgharness testdb run`.
#
#   tests/any-language/run.sh [python|node]...   (default: all)
#   tests/any-language/run.sh python-bench      (not in the default: see run_python_bench below)
#
# PGHARNESS names the binary (default: `pgharness` on PATH, else built with cargo). Packages
# come from the index pip and npm are configured with.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -z "${PGHARNESS:-}" ]]; then
  if command -v pgharness >/dev/null; then
    PGHARNESS="$(command -v pgharness)"
  else
    cargo build --quiet --manifest-path "$root/Cargo.toml" --bin pgharness
    PGHARNESS="${CARGO_TARGET_DIR:-$root/target}/debug/pgharness"
  fi
fi

venv="$here/.venv-python"
pytest_under_pgharness=("$PGHARNESS" testdb run -- "$venv/bin/python" -m pytest -n 4 -q -p no:cacheprovider)

python_venv() {
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
}

run_python() {
  python_venv
  (cd "$here/python" && "${pytest_under_pgharness[@]}")
}

# The Python suite's wall time (the pytest command under `pgharness testdb run`, venv aside) with
# databases from pgharness's pool (a) against each test creating its own database and running
# `alembic upgrade head` on it (b, PGHARNESS_BENCH_PER_TEST_MIGRATIONS=1), on the same server.
# The modes alternate, ROUNDS times each (default 5), after one untimed run of each (which also
# starts the shared server), so a drift of the machine's speed reaches both.
run_python_bench() {
  python_venv
  local rounds="${ROUNDS:-5}" log round mode start
  log="$(mktemp)"
  local -A seconds=([a]="" [b]="")
  for round in $(seq 0 "$rounds"); do
    for mode in a b; do
      start=$(date +%s%N)
      if ! (cd "$here/python" && PGHARNESS_BENCH_PER_TEST_MIGRATIONS=$([[ $mode == b ]] && echo 1 || echo 0) \
        "${pytest_under_pgharness[@]}") >"$log" 2>&1; then
        cat "$log"
        echo "✗ mode $mode failed in round $round (output above)" >&2
        return 1
      fi
      if ((round > 0)); then
        seconds[$mode]+=" $(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN { printf "%.2f", ns / 1e9 }')"
      fi
    done
  done
  rm -f "$log"
  python3 - "${seconds[a]}" "${seconds[b]}" <<'SUMMARY'
import math, statistics, sys
modes = {"a": "databases from pgharness's pool", "b": "per test: CREATE DATABASE + alembic upgrade head"}
figures = {}
for (mode, label), samples in zip(modes.items(), sys.argv[1:]):
    samples = [float(s) for s in samples.split()]
    # Nearest rank: with fewer than 100 samples, p99 is the largest.
    p99 = sorted(samples)[math.ceil(0.99 * len(samples)) - 1]
    figures[mode] = (statistics.median(samples), p99)
    print(f"({mode}) {label}: {', '.join(f'{s:.2f}' for s in samples)} s")
    largest = f": the largest of {len(samples)}" if len(samples) < 100 else ""
    print(f"    median {figures[mode][0]:.2f} s, p99 {p99:.2f} s (nearest rank{largest})")
print(f"b / a: median {figures['b'][0] / figures['a'][0]:.2f}x, p99 {figures['b'][1] / figures['a'][1]:.2f}x")
SUMMARY
}

run_node() {
  (cd "$here/node" && npm install --silent --no-audit --no-fund &&
    "$PGHARNESS" testdb run -- node --test --test-concurrency=4 --test-reporter=spec tests/)
}

languages=("$@")
[[ ${#languages[@]} -gt 0 ]] || languages=(python node)
for language in "${languages[@]}"; do
  echo "== $language"
  "run_${language//-/_}"
done

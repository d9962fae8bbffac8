#!/usr/bin/env bash
# Runs the projects in other languages against `pgharness testdb serve` (IntegreSQL's API):
# each in a fresh environment (a venv, node_modules), under `pgharness testdb run`.
#
#   tests/any-language/run.sh [python|node]...   (default: all)
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

run_python() {
  local venv="$here/.venv-python"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
  (cd "$here/python" && "$PGHARNESS" testdb run -- "$venv/bin/python" -m pytest -n 4 -q -p no:cacheprovider)
}

run_node() {
  (cd "$here/node" && npm install --silent --no-audit --no-fund &&
    "$PGHARNESS" testdb run -- node --test --test-concurrency=4 --test-reporter=spec tests/)
}

languages=("$@")
[[ ${#languages[@]} -gt 0 ]] || languages=(python node)
for language in "${languages[@]}"; do
  echo "== $language"
  "run_$language"
done

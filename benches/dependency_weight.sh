#!/usr/bin/env bash
# What `pgharness::testing` adds to a crate that already uses sqlx + tokio + rstest: crates
# (`cargo tree`) and seconds of a clean `cargo test --no-run`, both sides built the same way,
# alternately, `RUNS` (3) times each. Run on an otherwise idle machine:
# `bash benches/dependency_weight.sh`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for side in base with; do
  mkdir -p "$work/$side/src"
  echo "pub fn nothing() {}" > "$work/$side/src/lib.rs"
  cat > "$work/$side/Cargo.toml" <<TOML
[package]
name = "weight-$side"
version = "0.0.0"
edition = "2024"

[workspace]

[dependencies]
sqlx = { version = "0.9", default-features = false, features = ["runtime-tokio", "tls-rustls-ring-native-roots", "postgres", "macros", "migrate"] }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }

[dev-dependencies]
rstest = "0.26"
TOML
  cp "$repo/Cargo.lock" "$work/$side/"
done
echo "pgharness = { path = \"$repo\", default-features = false, features = [\"testing\"] }" >> "$work/with/Cargo.toml"
crates() { (cd "$work/$1" && cargo tree -e normal,dev --prefix none | sed 's/ (\*)//' | sort -u | wc -l); }
# Prints "<wall seconds> <CPU seconds>" of one clean build.
build() {
  rm -rf "$work/$1/target"
  local TIMEFORMAT='%R %U %S'
  { time (cd "$work/$1" && CARGO_TARGET_DIR="$work/$1/target" cargo test --no-run --quiet >/dev/null 2>&1); } 2> "$work/$1.time"
  awk '{ printf "%.1f %.1f\n", $1, $2 + $3 }' "$work/$1.time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
base_crates=$(crates base); with_crates=$(crates with)
printf 'crates: %s without pgharness, %s with: +%s\n' "$base_crates" "$with_crates" "$((with_crates - base_crates))"
# Wall time on a shared 2-core machine swings by ±15 s from run to run: alternate the sides
# and take medians; CPU time (user + system) varies much less.
runs=${RUNS:-3}
for run in $(seq "$runs"); do
  for side in base with; do
    read -r wall cpu < <(build "$side")
    echo "$wall" >> "$work/$side.walls"; echo "$cpu" >> "$work/$side.cpus"
    printf 'run %s, %s: %.1f s wall, %.1f s CPU\n' "$run" "$side" "$wall" "$cpu"
  done
done
base_wall=$(median < "$work/base.walls"); with_wall=$(median < "$work/with.walls")
base_cpu=$(median < "$work/base.cpus"); with_cpu=$(median < "$work/with.cpus")
printf 'clean cargo test --no-run, median of %s: %.1f s without, %.1f s with: +%.1f s wall; CPU %.1f s without, %.1f s with: +%.1f s\n' \
  "$runs" "$base_wall" "$with_wall" "$(echo "$with_wall - $base_wall" | bc)" \
  "$base_cpu" "$with_cpu" "$(echo "$with_cpu - $base_cpu" | bc)"

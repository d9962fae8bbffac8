#!/usr/bin/env bash
# What `pgharness::testing` adds to a crate that already uses sqlx + tokio + rstest: crates
# (`cargo tree`) and seconds of a clean `cargo test --no-run`, both sides built the same way,
# one after the other. Run on an otherwise idle machine: `bash benches/dependency_weight.sh`.
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
build() {
  local started
  started=$(date +%s.%N)
  (cd "$work/$1" && CARGO_TARGET_DIR="$work/$1/target" cargo test --no-run --quiet >/dev/null 2>&1)
  echo "$(date +%s.%N) - $started" | bc
}
base_crates=$(crates base); with_crates=$(crates with)
base_seconds=$(build base); with_seconds=$(build with)
printf 'crates: %s without pgharness, %s with: +%s\n' "$base_crates" "$with_crates" "$((with_crates - base_crates))"
printf 'clean cargo test --no-run: %.1f s without, %.1f s with: +%.1f s\n' \
  "$base_seconds" "$with_seconds" "$(echo "$with_seconds - $base_seconds" | bc)"

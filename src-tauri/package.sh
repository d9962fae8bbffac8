#!/usr/bin/env bash
# Builds the Debian package of the desktop app, with the PostgreSQL 16 binaries inside so that an
# installed app needs no download at first launch. Needs tauri-cli:
#   cargo install tauri-cli --version '^2' --locked
# With PGHARNESS_EXTENSIONS set (e.g. vector), the extensions are put into the installation
# first, so the package carries them too.
set -euo pipefail
cd "$(dirname "$0")/.."
installation=$(cargo run -q -- binaries)
rm -rf src-tauri/resources
mkdir -p src-tauri/resources
cp -a "$installation" src-tauri/resources/postgresql
cd src-tauri
cargo tauri build --bundles deb --config tauri.bundle.json
ls -l ../target/release/bundle/deb/*.deb

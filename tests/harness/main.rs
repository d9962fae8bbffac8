//! Integration tests: one binary, against real `PostgreSQL` 16 servers started by the harness.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod autogenerate;
mod binaries;
mod check;
mod config;
mod extensions;
mod helpers;
mod integresql;
mod migrate;
mod pool;
mod proxy;
mod security;
mod server;
mod snapshots;
mod testing;

//! pgharness: the database stack of a web service — `PostgreSQL` 16, a pool, migrations, an API —
//! offline, with no `PostgreSQL` installed.
//!
//! - [`config`]: the guide's variables and the embedded server's;
//! - [`binaries`]: `PostgreSQL` 16 binaries, found or fetched;
//! - [`embedded`]: the embedded server, also as root;
//! - [`platform`]: what differs between Linux, macOS and Windows;
//! - [`progress`]: what a start reports while it works;
//! - [`database`]: the pool and connection failures;
//! - [`check`]: the connection check report (feature `server`);
//! - [`dev_data`]: the dev database reset and seeded (feature `server`);
//! - [`migrations`]: schema migrations, and the drift check (feature `server`);
//! - [`fixtures`]: SQL fixture files, for test databases and the dev database;
//! - [`monitor`]: health over time and the events timeline, sampled in the background (feature
//!   `server`);
//! - [`api`]: the HTTP API (feature `server`);
//! - [`testing`]: test databases: the server a test run shares, a migrated database per test
//!   for `cargo test` (feature `testing`), and the same for any language through `IntegreSQL`'s
//!   API (feature `server`);
//! - [`harness`]: all of it started and stopped as one (feature `server`).
//!
//! Features: `cli` (default: the command line, and `server`), `server` (API, web UI, logs,
//! [`Harness`] and `Stack`), `testing` (test databases; with `default-features = false`, all
//! another crate's tests need and nothing of the server).

#![warn(missing_docs)]
// The documentation names what the `server` feature adds; without it those items do not exist.
#![cfg_attr(not(feature = "server"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "server")]
pub mod api;
pub mod binaries;
#[cfg(feature = "server")]
pub mod check;
pub mod config;
pub mod database;
#[cfg(feature = "server")]
pub mod dev_data;
pub mod embedded;
pub mod fixtures;
#[cfg(feature = "server")]
pub mod harness;
pub mod migrations;
#[cfg(feature = "server")]
pub mod monitor;
pub mod platform;
pub mod progress;
#[cfg(feature = "server")]
pub mod telemetry;
pub mod testing;

#[cfg(feature = "server")]
pub use harness::{Harness, HarnessError, Stack, StackError};

/// The README's Rust examples, compiled by `cargo test`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The Rust examples of `docs/testing.md`, compiled by `cargo test`.
#[doc = include_str!("../docs/testing.md")]
#[cfg(doctest)]
pub struct TestingGuideDoctests;

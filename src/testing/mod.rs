//! Test databases: every test gets its own, migrated with the calling crate's migrations, in
//! milliseconds, from one embedded `PostgreSQL` 16 server that the whole test run shares.
//!
//! ```no_run
//! use pgharness::testing::{TestDb, db};
//! use rstest::rstest;
//!
//! #[rstest]
//! #[tokio::test]
//! async fn users_start_empty(db: TestDb) {
//!     let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
//!         .fetch_one(db.pool())
//!         .await
//!         .unwrap();
//!     assert_eq!(count, 0);
//! }
//! ```
//!
//! With no configuration, migrations come from `<crate>/migrations` and fixtures from
//! `<crate>/fixtures` of the crate whose tests run (cargo sets `CARGO_MANIFEST_DIR` for them);
//! `TestDb::builder()` or `PGHARNESS_TEST_MIGRATIONS_DIR` / `PGHARNESS_TEST_FIXTURES_DIR` point
//! elsewhere. A plain `#[tokio::test]` takes `TestDb::new().await?`, a plain `#[test]`
//! `TestDb::new_blocking()?`. The fixtures are plain (not async) values: no `#[future(awt)]`.
//!
//! How: one embedded server per test run, shared by every test process ([`server`]); per
//! migration set a template database, built once; each test database a `FILE_COPY` clone of it.
//! A background thread of each test process (`worker.rs`, which opens with the life of a
//! `TestDb` step by step) keeps a few clones ready and drops finished databases off the tests'
//! critical path. The database of a test that panicked is kept
//! (`PGHARNESS_TEST_KEEP=failed|always|never`) and its `psql` URL printed.
//!
//! The parts:
//! - [`server`]: the shared server, its run directory, locks, watchdog and upkeep (always
//!   compiled: the CLI's `testdb` commands use it);
//! - [`integresql`]: the same server's databases for any language, through `IntegreSQL`'s HTTP
//!   API (`pgharness testdb serve|run`, feature `server`);
//! - `TestDb`, its builder and the rstest fixtures `db` and `app` (feature `testing`), with
//!   `template.rs` (building a migration set's template) and `worker.rs` (the process's
//!   background thread).

#[cfg(feature = "server")]
pub mod integresql;
#[cfg(feature = "testing")]
mod pooled;
pub mod server;
#[cfg(feature = "testing")]
mod template;
#[cfg(all(feature = "testing", feature = "server"))]
mod test_app;
#[cfg(feature = "testing")]
mod test_db;
#[cfg(feature = "testing")]
mod worker;

#[cfg(all(feature = "testing", feature = "server"))]
pub use self::test_app::{TestApp, app};
#[cfg(feature = "testing")]
pub use self::test_db::{TestDb, TestDbBuilder, TestDbError, db};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgharness::config::{Config, PoolSettings};
use pgharness::database::{Database, DatabaseError};
use sqlx::{Connection as _, PgConnection};

use crate::helpers::{binaries, options, temporary_server, wait_for};
use pgharness::embedded::EmbeddedServer;

fn pool_settings(pairs: &[(&str, &str)]) -> PoolSettings {
    let variables: HashMap<&str, &str> = pairs.iter().copied().collect();
    Config::from_lookup(|name| variables.get(name).map(|value| (*value).to_owned()))
        .unwrap()
        .pool
}

#[derive(Debug)]
struct WorkFailed;

impl From<DatabaseError> for WorkFailed {
    fn from(error: DatabaseError) -> Self {
        panic!("unexpected database error: {error}")
    }
}

async fn note_count(database: &Database) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(database.maintenance_pool())
        .await
        .unwrap()
}

async fn insert_note(connection: &mut PgConnection) {
    sqlx::query("INSERT INTO notes VALUES ('x')")
        .execute(connection)
        .await
        .unwrap();
}

async fn database_with_notes(server: &EmbeddedServer, settings: &PoolSettings) -> Database {
    let database = Database::connect_lazy(&server.url(), settings);
    sqlx::query("CREATE TABLE notes (body text)")
        .execute(database.maintenance_pool())
        .await
        .unwrap();
    database
}

/// Waits until the pool has opened `count` idle connections by itself.
async fn wait_for_idle(database: &Database, count: u32) {
    wait_for("the pool's idle connections", || async move {
        database.stats().idle >= count
    })
    .await;
}

/// The server process behind the connection the pool lends for one piece of work.
async fn backend_of_next_connection(database: &Database) -> i32 {
    database
        .run(async |connection| {
            sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(connection)
                .await
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn the_pool_follows_each_variable() {
    let (_home, server) = temporary_server().await;
    let settings = pool_settings(&[
        ("DATABASE_POOL_SIZE", "3"),
        ("DATABASE_MAX_OVERFLOW", "4"),
        ("DATABASE_POOL_TIMEOUT", "7"),
        ("DATABASE_POOL_RECYCLE", "90"),
    ]);
    let database = Database::connect_lazy(&server.url(), &settings);
    // The pool size is opened without any request.
    wait_for_idle(&database, 3).await;
    assert_eq!(database.stats().size, 3);

    // Under load the pool opens overflow connections up to size + overflow, no more.
    let mut held = Vec::new();
    for _ in 0..7 {
        held.push(database.acquire().await.unwrap());
    }
    let stats = database.stats();
    assert_eq!(
        (stats.size, stats.in_use, stats.idle, stats.max),
        (7, 7, 0, 7)
    );
    drop(held);
    database.close().await;
    server.stop().await.unwrap();
}

/// The guide's pre-ping promise without a ping per use: work never sees a connection that
/// died while idle, even right after it was last used (it is retried on a live one).
#[tokio::test]
async fn a_connection_killed_while_idle_is_never_surfaced_to_the_work() {
    let (_home, server) = temporary_server().await;
    let settings = pool_settings(&[("DATABASE_POOL_SIZE", "1"), ("DATABASE_MAX_OVERFLOW", "0")]);
    let database = Database::connect_lazy(&server.url(), &settings);
    let first = backend_of_next_connection(&database).await;
    let mut admin = sqlx::PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(first)
        .execute(&mut admin)
        .await
        .unwrap();
    let second = backend_of_next_connection(&database).await;
    assert_ne!(first, second);
    database.close().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_exhausted_pool_says_so_within_its_timeout() {
    let (_home, server) = temporary_server().await;
    let settings = pool_settings(&[
        ("DATABASE_POOL_SIZE", "1"),
        ("DATABASE_MAX_OVERFLOW", "1"),
        ("DATABASE_POOL_TIMEOUT", "2"),
    ]);
    let database = Database::connect_lazy(&server.url(), &settings);
    let _first = database.acquire().await.unwrap();
    let _second = database.acquire().await.unwrap();

    let started = Instant::now();
    let error = database.acquire().await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        (1.6..=2.4).contains(&waited.as_secs_f64()),
        "waited {waited:?} for a 2 s timeout"
    );
    assert!(
        matches!(error, DatabaseError::PoolExhausted { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with("connection pool exhausted: 1 + 1 overflow connections busy, waited 2 s"),
        "{text}"
    );
    assert!(text.contains("DATABASE_MAX_OVERFLOW"), "{text}");
    let stats = database.stats();
    assert_eq!(stats.connection_errors, 1);
    assert!(stats.waited >= 1 && stats.wait_ms >= 1600, "{stats:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_given_back_goes_to_the_request_waiting_longest_not_to_a_newcomer() {
    let (_home, server) = temporary_server().await;
    let settings = pool_settings(&[("DATABASE_POOL_SIZE", "1"), ("DATABASE_MAX_OVERFLOW", "0")]);
    let database = Database::connect_lazy(&server.url(), &settings);
    let held = database.acquire().await.unwrap();
    let waiting = tokio::spawn({
        let database = database.clone();
        // Keeps the connection it gets (in its output) until the end of the test.
        async move { database.acquire().await }
    });
    // Time for the waiting request to get in line.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(held);
    // Asked before the waiting request could run again.
    let newcomer = tokio::time::timeout(Duration::ZERO, database.acquire()).await;
    assert!(
        newcomer.is_err(),
        "a newcomer took the connection the waiting request was woken for: {newcomer:?}"
    );
    drop(waiting.await.unwrap().unwrap());
    database.close().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_one_at_a_time_reuse_the_most_recently_used_connection() {
    let (_home, server) = temporary_server().await;
    let settings = pool_settings(&[("DATABASE_POOL_SIZE", "3"), ("DATABASE_MAX_OVERFLOW", "0")]);
    let database = Database::connect_lazy(&server.url(), &settings);
    wait_for_idle(&database, 3).await;
    let mut backends = Vec::new();
    for _ in 0..4 {
        backends.push(backend_of_next_connection(&database).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The other two stay idle, so they can be closed when the pool shrinks.
    assert!(
        backends.iter().all(|backend| *backend == backends[0]),
        "{backends:?}"
    );
    database.close().await;
    server.stop().await.unwrap();
}

/// Sessions ever opened on the server's databases (this query's own included).
async fn sessions_opened(server: &EmbeddedServer) -> i64 {
    let mut connection = PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT sum(sessions)::int8 FROM pg_stat_database")
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_requests_waiting_through_a_restart_opens_few_more_connections_than_the_pool_keeps()
 {
    let (_home, server) = temporary_server().await;
    let server = Arc::new(server);
    let settings = pool_settings(&[("DATABASE_POOL_SIZE", "2"), ("DATABASE_MAX_OVERFLOW", "1")]);
    let database = Database::connect_lazy(&server.url(), &settings);
    wait_for_idle(&database, 2).await;
    let before = sessions_opened(&server).await;
    let stopped = Arc::new(AtomicBool::new(false));
    let crowd: Vec<_> = (0..30)
        .map(|_| {
            let (database, stopped) = (database.clone(), Arc::clone(&stopped));
            tokio::spawn(async move {
                while !stopped.load(Ordering::Relaxed) {
                    // Errors while the server is down are expected; only the sessions count.
                    let _ = database
                        .run(async |connection| {
                            sqlx::query("SELECT pg_sleep(0.01)")
                                .execute(connection)
                                .await
                        })
                        .await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.pause().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stopped.store(true, Ordering::Relaxed);
    for request in crowd {
        request.await.unwrap();
    }
    database.close().await;
    // The sessions just closed report themselves as they end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = sessions_opened(&server).await - before - 1;
    // Three to replace the ones the restart closed, a few more opened while it was still
    // starting; not one per waiting request.
    assert!(opened <= 12, "{opened} sessions for a pool of 3");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_unit_of_work_commits_when_it_succeeds() {
    let (_home, server) = temporary_server().await;
    let database = database_with_notes(&server, &pool_settings(&[])).await;
    let result: Result<(), WorkFailed> = database
        .transaction(async |connection| {
            insert_note(connection).await;
            Ok(())
        })
        .await;
    result.unwrap();
    assert_eq!(note_count(&database).await, 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_unit_of_work_rolls_back_when_it_fails() {
    let (_home, server) = temporary_server().await;
    let database = database_with_notes(&server, &pool_settings(&[])).await;
    let result: Result<(), WorkFailed> = database
        .transaction(async |connection| {
            insert_note(connection).await;
            Err(WorkFailed)
        })
        .await;
    assert!(result.is_err());
    assert_eq!(note_count(&database).await, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_unit_of_work_rolls_back_when_it_panics() {
    let (_home, server) = temporary_server().await;
    let database = database_with_notes(&server, &pool_settings(&[])).await;
    let worker = database.clone();
    let outcome = tokio::spawn(async move {
        let _: Result<(), WorkFailed> = worker
            .transaction(async |connection| {
                insert_note(connection).await;
                panic!("the handler crashed");
            })
            .await;
    })
    .await;
    assert!(outcome.unwrap_err().is_panic());
    assert_eq!(note_count(&database).await, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_unit_of_work_left_unfinished_rolls_back() {
    let (_home, server) = temporary_server().await;
    let database = database_with_notes(&server, &pool_settings(&[])).await;
    {
        let mut unit = database.begin().await.unwrap();
        insert_note(unit.connection()).await;
        // An early return: the unit is dropped without `finish`.
    }
    assert_eq!(note_count(&database).await, 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_pool_larger_than_the_server_allows_is_warned_about() {
    let home = pgharness::platform::files::scratch_dir().unwrap();
    let mut options = options(home.path());
    options
        .configuration
        .insert("max_connections".to_owned(), "40".to_owned());
    let server = EmbeddedServer::start(&binaries().await, &options)
        .await
        .unwrap();
    let fits = Database::connect_lazy(&server.url(), &pool_settings(&[]));
    assert_eq!(fits.sizing_warning().await.unwrap(), None);
    let too_big = Database::connect_lazy(
        &server.url(),
        &pool_settings(&[
            ("APP_ENV", "production"),
            ("DATABASE_URL", "postgresql://x@h/d"),
        ]),
    );
    let warning = too_big.sizing_warning().await.unwrap().unwrap();
    assert!(
        warning.contains("(50 + 20 = 70) exceeds the server's max_connections (40)"),
        "{warning}"
    );
    fits.close().await;
    too_big.close().await;
    server.stop().await.unwrap();
}

//! This crate's tests on `pgharness::testing`, used as any crate would: the bare `db` fixture
//! gives a database migrated with *this* crate's migrations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use pgharness::fixtures::FixtureError;
use pgharness::testing::{TestDb, TestDbError, db};
use rstest::rstest;

async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[rstest]
#[tokio::test]
async fn the_bare_fixture_has_this_crates_schema_and_no_rows(db: TestDb) {
    for table in ["authors", "books", "loans", "available_books"] {
        assert_eq!(count(&db, table).await, 0, "{table}");
    }
    let users: Option<String> = sqlx::query_scalar("SELECT to_regclass('users')::text")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(
        users, None,
        "pgharness's own schema leaked into this crate's database"
    );
}

#[rstest]
#[tokio::test]
async fn fixtures_come_from_this_crates_folder_in_order(#[with(&["authors", "books"])] db: TestDb) {
    assert_eq!(count(&db, "authors").await, 2);
    assert_eq!(count(&db, "available_books").await, 2);
}

#[rstest]
#[tokio::test]
async fn one_test_lends_small_gods(#[with(&["authors", "books"])] db: TestDb) {
    outside_crate::lend(db.pool(), 2, "Vimes").await.unwrap();
    assert_eq!(count(&db, "available_books").await, 1);
}

#[rstest]
#[tokio::test]
async fn another_test_lends_it_too_in_its_own_database(#[with(&["authors", "books"])] db: TestDb) {
    outside_crate::lend(db.pool(), 2, "Carrot").await.unwrap();
    let again = outside_crate::lend(db.pool(), 2, "Angua")
        .await
        .unwrap_err();
    assert!(
        again
            .as_database_error()
            .is_some_and(|error| error.is_unique_violation()),
        "{again}"
    );
}

#[rstest]
#[tokio::test]
async fn the_trigger_and_the_check_constraint_work(#[with(&["authors", "books"])] db: TestDb) {
    let before: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT updated_at FROM books WHERE id = 1")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let after: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("UPDATE books SET copies = 3 WHERE id = 1 RETURNING updated_at")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(after > before);
    let refused = sqlx::query("UPDATE books SET copies = 0 WHERE id = 1")
        .execute(db.pool())
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("books_copies_positive"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_plain_tokio_test_needs_one_line() {
    let db = TestDb::new().await.unwrap();
    assert_eq!(count(&db, "books").await, 0);
}

#[test]
fn a_plain_test_has_a_blocking_form() {
    let db = TestDb::new_blocking().unwrap();
    // Cloned by this process, or handed out by `pgharness testdb run`'s pool under nextest.
    assert!(
        ["pgh_t_", "pgh_i_"]
            .iter()
            .any(|prefix| db.name().starts_with(prefix)),
        "{}",
        db.name()
    );
    assert!(db.psql_url().starts_with("postgresql://"));
}

#[tokio::test]
async fn databases_can_be_built_in_spawned_tasks() {
    let mut builds = tokio::task::JoinSet::new();
    for _ in 0..4 {
        builds.spawn(async { TestDb::builder().fixtures(&["authors"]).build().await });
    }
    let mut names = Vec::new();
    while let Some(built) = builds.join_next().await {
        let db = built.unwrap().unwrap();
        assert_eq!(count(&db, "authors").await, 2);
        names.push(db.name().to_owned());
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 4);
}

/// Baked fixtures live in a template of their own: every database cloned from it has the rows,
/// each is still its own, and the rows were written once (the same transaction id in both),
/// not by each test.
#[tokio::test]
async fn baked_fixtures_are_in_every_database_each_its_own() {
    let baked = || {
        TestDb::builder()
            .fixtures(&["authors", "books"])
            .bake()
            .build()
    };
    let (first, second) = (baked().await.unwrap(), baked().await.unwrap());
    assert_eq!(count(&first, "authors").await, 2);
    outside_crate::lend(first.pool(), 2, "Vimes").await.unwrap();
    assert_eq!(count(&first, "available_books").await, 1);
    assert_eq!(count(&second, "available_books").await, 2);

    let writers = |db: &TestDb| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT xmin::text FROM authors ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(writers(&first).await, writers(&second).await);
    let applied = TestDb::builder()
        .fixtures(&["authors", "books"])
        .build()
        .await
        .unwrap();
    assert_ne!(
        writers(&applied).await,
        writers(&second).await,
        "applied per test, the rows come from the test's own transaction"
    );
}

#[tokio::test]
async fn a_baked_fixture_that_breaks_a_foreign_key_names_its_line_too() {
    let error = TestDb::builder()
        .fixtures(&["orphan_book"])
        .bake()
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            TestDbError::Fixture(FixtureError::Statement { line: 5, .. })
        ),
        "{error}"
    );
}

#[tokio::test]
async fn a_fixture_that_breaks_a_foreign_key_names_its_line() {
    let error = TestDb::builder()
        .fixtures(&["orphan_book"])
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(
            error,
            TestDbError::Fixture(FixtureError::Statement { line: 5, .. })
        ),
        "{message}"
    );
    assert!(message.contains("orphan_book.sql"), "{message}");
    assert!(message.contains("foreign key"), "{message}");
}

#[tokio::test]
async fn a_wrong_migrations_folder_is_named_with_its_absolute_path() {
    let error = TestDb::builder()
        .migrations_dir("no/such/migrations")
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("was not found"), "{message}");
    let absolute = std::path::absolute("no/such/migrations").unwrap();
    assert!(
        message.contains(&absolute.display().to_string()),
        "{message}"
    );
    assert!(message.contains("working directory"), "{message}");
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

#[tokio::test]
async fn an_up_migration_without_its_down_script_is_refused() {
    let dir = pgharness::platform::files::scratch_dir().unwrap();
    write(
        dir.path(),
        "20260101000001_things.up.sql",
        "CREATE TABLE things (id int);",
    );
    let error = TestDb::builder()
        .migrations_dir(dir.path())
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("20260101000001_things.down.sql"),
        "{message}"
    );
}

#[tokio::test]
async fn a_failing_migration_names_file_and_line_and_no_cli() {
    let dir = pgharness::platform::files::scratch_dir().unwrap();
    write(
        dir.path(),
        "20260101000001_broken.up.sql",
        "CREATE TABLE a (id int);\nCREATE TABLE b (id int,);\n",
    );
    write(
        dir.path(),
        "20260101000001_broken.down.sql",
        "DROP TABLE a;",
    );
    let error = TestDb::builder()
        .migrations_dir(dir.path())
        .build()
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TestDbError::MigrationFailed { line: 2, .. }),
        "{message}"
    );
    assert!(!message.contains("pgharness migrate"), "{message}");
}

/// Fails on purpose: run by the test below, which checks what it leaves behind.
#[rstest]
#[tokio::test]
#[ignore = "fails on purpose; run by a_failed_test_keeps_its_database_and_says_how_to_open_it"]
async fn deliberately_failing(#[with(&["authors"])] db: TestDb) {
    assert_eq!(count(&db, "authors").await, 0, "this test fails on purpose");
}

#[test]
fn a_failed_test_keeps_its_database_and_says_how_to_open_it() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "deliberately_failing",
            "--test-threads",
            "1",
        ])
        .env_remove("PGHARNESS_TEST_KEEP")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stderr
        .lines()
        .chain(stdout.lines())
        .find(|line| line.contains("pgharness: kept the database"))
        .unwrap_or_else(|| panic!("no kept line in:\n{stdout}\n{stderr}"));
    let url = line
        .split("psql '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(!url.contains(":@") && url.contains("passfile="), "{url}");
    // psql opens the printed URL as it is.
    let psql = std::process::Command::new("psql")
        .args([url, "-XAtc", "SELECT count(*) FROM authors"])
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "2");

    let name = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let admin = pgharness::testing::server::attach().await.unwrap().admin;
        let kept = pgharness::testing::server::kept_databases(&admin)
            .await
            .unwrap();
        let this = kept.iter().find(|database| database.name == name).unwrap();
        assert!(this.test.contains("deliberately_failing"), "{this:?}");
        pgharness::testing::server::drop_database(&admin, &name)
            .await
            .unwrap();
    });
}

use std::path::{Path, PathBuf};

use sqlx::{Connection as _, PgConnection};
use tempfile::TempDir;

use crate::helpers::{Output, migration_versions, pgharness, run, temporary_server};
use pgharness::embedded::EmbeddedServer;

/// A copy of the project's migrations that a test may edit.
pub(crate) fn migrations_copy() -> (TempDir, PathBuf) {
    let directory = pgharness::platform::files::scratch_dir().unwrap();
    let copy = directory.path().join("migrations");
    std::fs::create_dir(&copy).unwrap();
    for entry in
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")).unwrap()
    {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    (directory, copy)
}

/// `pgharness migrate <args>` against the server's application database.
pub(crate) fn migrate(server: &EmbeddedServer, migrations: Option<&Path>, args: &[&str]) -> Output {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let mut command = pgharness(workdir.path());
    command
        .arg("migrate")
        .args(args)
        .env("DATABASE_URL", server.url().expose_url());
    if let Some(directory) = migrations {
        command.env("PGHARNESS_MIGRATIONS_DIR", directory);
    }
    run(command)
}

pub(crate) fn assert_succeeds(output: &Output) {
    assert!(output.success, "{}\n{}", output.stdout, output.stderr);
}

pub(crate) fn assert_fails(output: &Output) {
    assert!(!output.success, "{}\n{}", output.stdout, output.stderr);
}

pub(crate) async fn execute(server: &EmbeddedServer, sql: &str) {
    let mut connection = PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

pub(crate) async fn table_exists(server: &EmbeddedServer, table: &str) -> bool {
    let mut connection = PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    let exists = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    exists
}

#[tokio::test]
async fn up_history_current_down_and_status_follow_the_database() {
    let (_home, server) = temporary_server().await;
    let head = migration_versions().last().unwrap().clone();

    let status = migrate(&server, None, &["status"]);
    assert_fails(&status);
    status.assert_shows("Target database is not up to date");

    let up = migrate(&server, None, &["up"]);
    assert_succeeds(&up);
    up.assert_shows(&format!("Applied {head}"));
    assert!(table_exists(&server, "users").await);

    let history = migrate(&server, None, &["history"]);
    assert_succeeds(&history);
    history.assert_shows("applied 20");
    assert!(!history.stdout.contains("pending"), "{}", history.stdout);

    let current = migrate(&server, None, &["current"]);
    current.assert_shows(&format!("{head}  "));
    current.assert_shows(" (head)");

    let status = migrate(&server, None, &["status"]);
    assert_succeeds(&status);
    status.assert_shows("✓ Database is up to date.");

    let again = migrate(&server, None, &["up"]);
    again.assert_shows("Already up to date.");

    let down = migrate(&server, None, &["down"]);
    assert_succeeds(&down);
    down.assert_shows(&format!("Reverted {head}"));
    let steps = (migration_versions().len() - 1).to_string();
    assert_succeeds(&migrate(&server, None, &["down", "--steps", &steps]));
    assert!(!table_exists(&server, "users").await);
    migrate(&server, None, &["current"]).assert_shows("No migration applied.");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn every_migration_round_trips_down_and_up() {
    let (_home, server) = temporary_server().await;
    let count = migration_versions().len();
    assert_succeeds(&migrate(&server, None, &["up"]));
    let before = migrate(&server, None, &["check"]);
    assert_succeeds(&before);

    let down = migrate(&server, None, &["down", "--steps", &count.to_string()]);
    assert_succeeds(&down);
    assert_eq!(down.stdout.matches("Reverted").count(), count);
    assert!(!table_exists(&server, "users").await);

    assert_succeeds(&migrate(&server, None, &["up"]));
    let after = migrate(&server, None, &["check"]);
    assert_succeeds(&after);
    after.assert_shows("No drift");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn stamp_head_records_without_running_and_new_creates_a_pending_pair() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();

    let stamp = migrate(&server, Some(&migrations), &["stamp", "head"]);
    assert_succeeds(&stamp);
    stamp.assert_shows("Stamped the database at");
    assert!(
        !table_exists(&server, "users").await,
        "stamp must not run SQL"
    );
    assert_succeeds(&migrate(&server, Some(&migrations), &["status"]));

    let new = migrate(&server, Some(&migrations), &["new", "add notes"]);
    assert_succeeds(&new);
    new.assert_shows("_add_notes.up.sql");
    let up_file = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with("_add_notes.up.sql"))
        .unwrap();
    assert!(
        up_file
            .with_file_name(
                up_file
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace(".up.", ".down.")
            )
            .exists()
    );
    std::fs::write(&up_file, "CREATE TABLE notes (body text);\n").unwrap();
    std::fs::write(
        up_file.to_string_lossy().replace(".up.", ".down."),
        "DROP TABLE notes;\n",
    )
    .unwrap();

    let status = migrate(&server, Some(&migrations), &["status"]);
    assert_fails(&status);
    status.assert_shows("add notes");
    status.assert_shows("1 pending migration(s)");
    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));
    assert!(table_exists(&server, "notes").await);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn editing_an_applied_migration_makes_status_fail_naming_the_file() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();
    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));
    let file = std::fs::read_dir(&migrations)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with("create_users.up.sql"))
        .unwrap();
    let mut sql = std::fs::read_to_string(&file).unwrap();
    sql.push_str("\n-- an innocent-looking edit\n");
    std::fs::write(&file, sql).unwrap();

    let status = migrate(&server, Some(&migrations), &["status"]);
    assert_fails(&status);
    status.assert_shows(&format!(
        "✗ {} was changed after it was applied",
        file.display()
    ));
    let up = migrate(&server, Some(&migrations), &["up"]);
    assert_fails(&up);
    assert!(
        up.stderr.contains(&file.display().to_string()),
        "{}",
        up.stderr
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_database_ahead_of_the_code_is_explained() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();
    std::fs::write(
        migrations.join("29990101000000_from_the_future.up.sql"),
        "SELECT 1;",
    )
    .unwrap();
    std::fs::write(
        migrations.join("29990101000000_from_the_future.down.sql"),
        "SELECT 1;",
    )
    .unwrap();
    assert_succeeds(&migrate(&server, Some(&migrations), &["up"]));

    // The code (built-in migrations) does not know 29990101000000.
    let status = migrate(&server, None, &["status"]);
    assert_fails(&status);
    status.assert_shows("29990101000000 (from the future) is applied but has no file");
    let up = migrate(&server, None, &["up"]);
    assert_fails(&up);
    assert!(
        up.stderr.contains("the database is ahead of this code"),
        "{}",
        up.stderr
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_migration_names_file_and_line_and_changes_nothing() {
    let (_home, server) = temporary_server().await;
    let (_directory, migrations) = migrations_copy();
    let bad = migrations.join("29990101000000_broken.up.sql");
    std::fs::write(
        &bad,
        "CREATE TABLE half_done (id int);\n\nALTER TABLE half_done ADD COLUMN oops nosuchtype;\n",
    )
    .unwrap();
    std::fs::write(
        migrations.join("29990101000000_broken.down.sql"),
        "DROP TABLE half_done;",
    )
    .unwrap();

    let up = migrate(&server, Some(&migrations), &["up"]);
    assert_fails(&up);
    assert!(
        up.stderr
            .contains(&format!("migration {} failed at line 3", bad.display())),
        "{}",
        up.stderr
    );
    assert!(
        up.stderr.contains("type \"nosuchtype\" does not exist"),
        "{}",
        up.stderr
    );
    assert!(
        !table_exists(&server, "half_done").await,
        "the failed migration left a table"
    );
    assert!(
        table_exists(&server, "users").await,
        "earlier migrations stay applied"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn two_concurrent_upgrades_apply_each_migration_once() {
    let (_home, server) = temporary_server().await;
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| migrate(&server, None, &["up"]));
        let second = scope.spawn(|| migrate(&server, None, &["up"]));
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_succeeds(&first);
    assert_succeeds(&second);
    let applied =
        first.stdout.matches("Applied").count() + second.stdout.matches("Applied").count();
    assert_eq!(applied, migration_versions().len());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn drift_check_reports_a_column_added_by_hand() {
    let (_home, server) = temporary_server().await;
    assert_succeeds(&migrate(&server, None, &["up"]));
    assert_succeeds(&migrate(&server, None, &["check"]));

    execute(&server, "ALTER TABLE users ADD COLUMN x int").await;
    let check = migrate(&server, None, &["check"]);
    assert_fails(&check);
    check.assert_shows("+ column users.x integer NULL");

    // Also as a library call, for tests of other crates.
    let database = pgharness::database::Database::connect_lazy(
        &server.url(),
        &pgharness::config::Config::from_lookup(|_| None)
            .unwrap()
            .pool,
    );
    let differences = pgharness::migrations::drift::check(
        &pgharness::migrations::Migrations::embedded(),
        database.maintenance_pool(),
        &server.superuser_url("postgres"),
    )
    .await
    .unwrap();
    assert_eq!(
        differences,
        vec![pgharness::migrations::drift::Difference::OnlyInLive(
            "column users.x integer NULL".to_owned()
        )]
    );
    database.close().await;
    server.stop().await.unwrap();
}

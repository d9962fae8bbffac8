//! `pgharness::testing`, used the way a project's tests use it.

use std::io::{BufRead as _, BufReader};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use pgharness::fixtures::FixtureError;
use pgharness::testing::server::TestSettings;
use pgharness::testing::{TestApp, TestDb, TestDbError, app, db};
use rstest::rstest;
use sqlx::Connection as _;
use tower::ServiceExt as _;

use pgharness::platform::process::{is_postgres, postmaster_pid};

use crate::helpers::wait_until;

async fn insert_alice(db: &TestDb) {
    sqlx::query("INSERT INTO users (username, email) VALUES ('alice', 'alice@example.com')")
        .execute(db.pool())
        .await
        .unwrap();
}

// The same unique username in two tests running in parallel: both pass, each database is its own.
#[rstest]
#[tokio::test]
async fn one_test_inserts_alice(db: TestDb) {
    insert_alice(&db).await;
}

#[rstest]
#[tokio::test]
async fn another_test_inserts_alice_too(db: TestDb) {
    insert_alice(&db).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[rstest]
#[tokio::test]
async fn a_test_database_is_migrated_and_has_its_own_name_and_connection(db: TestDb) {
    // Cloned by this process, or handed out by `pgharness testdb run`'s pool under nextest.
    let settings = TestSettings::get();
    let prefix = if settings.pool_url.is_some() && settings.process_per_test {
        "pgh_i_"
    } else {
        "pgh_t_"
    };
    assert!(db.name().starts_with(prefix), "{}", db.name());
    assert!(db.url().to_string().ends_with(db.name()));
    let mut connection = db.connect().await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(database, db.name());
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        applied,
        i64::try_from(crate::helpers::migration_versions().len()).unwrap()
    );
    connection.close().await.unwrap();
}

/// A plain `#[test]`: the database and its pool are had outside any runtime; the queries run in
/// a runtime of the test's own.
#[test]
fn a_plain_test_takes_the_pool_outside_a_runtime_and_queries_in_its_own() {
    let db = TestDb::new_blocking().unwrap();
    let pool = db.pool();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let count: i64 = runtime
        .block_on(sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(pool))
        .unwrap();
    assert_eq!(count, 0);
}

#[rstest]
#[tokio::test]
async fn fixtures_are_applied_by_name(#[with(&["users"])] db: TestDb) {
    let names: Vec<String> = sqlx::query_scalar("SELECT username FROM users ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(names, ["alice", "bob", "carol"]);
}

/// What a test's log receives, kept for assertions.
#[derive(Clone, Default)]
struct CapturedLog(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_test_that_ends_right_after_a_query_leaves_no_warning_in_its_log() {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = TestDb::new().await.unwrap();
        let (name, admin) = (db.name().to_owned(), db.url().with_database("postgres"));
        sqlx::query("SELECT 1").execute(db.pool()).await.unwrap();
        let oid: i64 = sqlx::query_scalar(
            "SELECT oid::int8 FROM pg_database WHERE datname = current_database()",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        // The pool takes the connection back in a task that this one-thread runtime runs at
        // the next await: block until the database is gone, so that it runs after the drop.
        drop(db);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let _context = runtime.enter();
            let admin = sqlx::PgPool::connect_lazy_with(admin.connect_options());
            // Dropped, or (from `pgharness testdb run`'s pool) dropped and made again.
            wait_until("the database to be dropped", || {
                let gone = sqlx::query_scalar::<_, bool>(
                    "SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = $1 AND oid::int8 = $2)",
                )
                .bind(&name)
                .bind(oid)
                .fetch_one(&admin);
                runtime.block_on(gone).unwrap()
            });
        })
        .join()
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(!logged.contains("WARN"), "{logged}");
}

#[tokio::test]
async fn a_missing_fixture_names_the_file_and_the_folder() {
    let error = TestDb::builder()
        .fixtures(&["no_such"])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        TestDbError::Fixture(FixtureError::Missing { .. })
    ));
    let text = error.to_string();
    assert!(
        text.contains("no_such.sql") && text.contains("fixtures"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failing_fixture_names_the_file_and_line_and_fixtures_apply_in_order() {
    let folder = pgharness::platform::files::scratch_dir().unwrap();
    std::fs::write(
        folder.path().join("first.sql"),
        "CREATE TABLE notes (body text);\n",
    )
    .unwrap();
    std::fs::write(
        folder.path().join("second.sql"),
        "INSERT INTO notes VALUES ('x');\n",
    )
    .unwrap();
    std::fs::write(
        folder.path().join("broken.sql"),
        "SELECT 1;\n\nSELECT * FROM nowhere;\n",
    )
    .unwrap();

    let db = TestDb::builder()
        .fixtures_dir(folder.path())
        .fixtures(&["first", "second"])
        .build()
        .await
        .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(count, 1);

    let reversed = TestDb::builder()
        .fixtures_dir(folder.path())
        .fixtures(&["second", "first"])
        .build()
        .await;
    assert!(reversed.unwrap_err().to_string().contains("second.sql"));

    let error = TestDb::builder()
        .fixtures_dir(folder.path())
        .fixtures(&["broken"])
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("broken.sql failed at line 3"), "{error}");
    assert!(error.contains("\"nowhere\" does not exist"), "{error}");
}

#[tokio::test]
async fn another_crate_points_the_harness_at_its_own_migrations() {
    let folder = pgharness::platform::files::scratch_dir().unwrap();
    std::fs::write(
        folder.path().join("1_orders.up.sql"),
        "CREATE TABLE orders (id int);",
    )
    .unwrap();
    std::fs::write(
        folder.path().join("1_orders.down.sql"),
        "DROP TABLE orders;",
    )
    .unwrap();
    let db = TestDb::builder()
        .migrations_dir(folder.path())
        .build()
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(tables, ["_sqlx_migrations", "orders"]);
}

#[rstest]
#[tokio::test]
async fn the_app_fixture_serves_the_api_on_the_tests_database(app: TestApp) {
    sqlx::query("INSERT INTO users (username, email) VALUES ('dave', 'dave@example.com')")
        .execute(app.db.pool())
        .await
        .unwrap();
    let response = app
        .router
        .clone()
        .oneshot(Request::get("/users?q=dave").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let base = app.serve().await.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let page: serde_json::Value = reqwest::get(format!("{base}/users"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["username"], "dave");
}

/// Runs one helper test (below, `#[ignore]`d) of this binary in a process of its own.
fn helper_process(name: &str, variables: &[(&str, &str)]) -> std::process::Child {
    crate::helpers::helper_process(&format!("testing::{name}"), variables)
}

/// The first line the helper printed that starts with `prefix`, without it.
fn read_reported(child: &mut std::process::Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        // The test harness may print `test ... ` before the helper's line.
        if let Some(start) = line.find(prefix) {
            // Keep reading, so that the helper never writes to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return line[start + prefix.len()..].trim().to_owned();
        }
        seen.push(line);
    }
    panic!(
        "the helper reported no {prefix}; it printed:\n{}",
        seen.join("\n")
    )
}

#[tokio::test]
#[ignore = "helper: run in its own process by the tests above"]
async fn helper_report_the_shared_server() {
    let db = TestDb::new().await.unwrap();
    let port = db.url().port;
    println!("port={port}");
    println!("database={}", db.name());
    if std::env::var("PGHARNESS_HELPER_HOLD").is_ok() {
        // Until the test kills it, or ends and so closes this input: a fixed time would let a
        // slow run's first helper finish (and drop its database) before the last has started.
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await
            .unwrap()
            .unwrap();
    }
    if std::env::var("PGHARNESS_HELPER_AWAIT_PREFETCH").is_ok() {
        // Ends only once the background thread holds its ready clones beside this test's.
        let mut admin = admin_of(&TestSettings::get().run_dir).await;
        let mine = format!("pgh_t_{}_", std::process::id());
        let prefetch = TestSettings::get().prefetch;
        while process_databases(&mut admin, &mine).await.len() <= prefetch {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The databases on the shared server whose names start with `prefix`.
async fn process_databases(admin: &mut sqlx::PgConnection, prefix: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind(prefix)
        .fetch_all(admin)
        .await
        .unwrap()
}

/// `cargo test` runs a binary's tests in one process, which keeps clones ready for the next
/// test: when it ends, its test's database and the unused ready ones are gone with it.
#[tokio::test]
async fn a_test_process_leaves_no_database_behind_when_it_ends() {
    let mut helper = helper_process(
        "helper_report_the_shared_server",
        &[("PGHARNESS_HELPER_AWAIT_PREFETCH", "1")],
    );
    let database = read_reported(&mut helper, "database=");
    let pid = helper.id();
    assert!(helper.wait().unwrap().success());
    assert!(database.starts_with(&format!("pgh_t_{pid}_")), "{database}");
    let mut admin = admin_of(&TestSettings::get().run_dir).await;
    let left = process_databases(&mut admin, &format!("pgh_t_{pid}_")).await;
    assert!(left.is_empty(), "left behind by process {pid}: {left:?}");
}

/// What nextest does: one process per test. They must share one server.
#[tokio::test]
async fn test_processes_share_one_server() {
    let mut first = helper_process("helper_report_the_shared_server", &[]);
    let mut second = helper_process("helper_report_the_shared_server", &[]);
    let (first_port, second_port) = (
        read_reported(&mut first, "port="),
        read_reported(&mut second, "port="),
    );
    assert!(first.wait().unwrap().success() && second.wait().unwrap().success());
    assert_eq!(first_port, second_port);
    let mine = TestDb::new().await.unwrap();
    assert_eq!(mine.url().port.to_string(), first_port);
    let state = TestSettings::get().run_dir.join("server/pgdata");
    let servers = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let text = String::from_utf8_lossy(cmdline);
            text.contains("postgres\0-D\0") && text.contains(&*state.to_string_lossy())
        })
        .count();
    assert_eq!(
        servers, 1,
        "postmasters on the shared test server's data directory"
    );
}

/// The admin connection of a run directory's shared server.
async fn admin_of(run_dir: &std::path::Path) -> sqlx::PgConnection {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).unwrap()).unwrap();
    let url = format!(
        "postgresql://postgres:{}@127.0.0.1:{}/postgres",
        state["password"].as_str().unwrap(),
        state["port"]
    );
    <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap()
}

async fn databases(admin: &mut sqlx::PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'pgh_') ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap()
}

/// Four migration sets, four killed processes and an abandoned template build: the upkeep every
/// test process runs leaves the newest templates (3 per crate), and nothing else.
#[tokio::test]
async fn upkeep_drops_dead_processes_databases_abandoned_builds_and_old_templates() {
    let run_dir = pgharness::platform::files::scratch_dir().unwrap();
    let sets = pgharness::platform::files::scratch_dir().unwrap();
    let directory = run_dir.path().to_str().unwrap().to_owned();
    let (mut helpers, mut reported) = (Vec::new(), Vec::new());
    for set in 0..4 {
        let migrations = sets.path().join(set.to_string());
        std::fs::create_dir(&migrations).unwrap();
        std::fs::write(
            migrations.join(format!("2026010100000{set}_t.up.sql")),
            format!("CREATE TABLE t{set} (id int);"),
        )
        .unwrap();
        std::fs::write(
            migrations.join(format!("2026010100000{set}_t.down.sql")),
            format!("DROP TABLE t{set};"),
        )
        .unwrap();
        let migrations = migrations.to_str().unwrap().to_owned();
        // The helpers' own upkeep must leave this test's set-up as it is, however far it gets
        // before they are killed: all four are alive until the last has its database (so none
        // drops another's), they keep every template, and they prefetch nothing (each leaves
        // exactly its test's database).
        let variables = [
            ("PGHARNESS_TEST_DIR", directory.as_str()),
            ("PGHARNESS_TEST_MIGRATIONS_DIR", migrations.as_str()),
            ("PGHARNESS_TEST_TEMPLATES", "4"),
            ("PGHARNESS_TEST_PREFETCH", "0"),
            ("PGHARNESS_HELPER_HOLD", "1"),
        ];
        let mut helper = helper_process("helper_report_the_shared_server", &variables);
        reported.push(read_reported(&mut helper, "database="));
        helpers.push(helper);
    }
    // Killed: their databases are left behind, as after a crash or an interrupted run. All are
    // stopped first: a helper still running its upkeep after another was killed would drop the
    // killed one's database.
    for helper in &helpers {
        let pid = rustix::process::Pid::from_child(helper);
        rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    }
    for mut helper in helpers {
        helper.kill().unwrap();
        helper.wait().unwrap();
    }
    let mut admin = admin_of(run_dir.path()).await;
    sqlx::raw_sql("CREATE DATABASE pgh_tpl_0123456789abcdef_building")
        .execute(&mut admin)
        .await
        .unwrap();
    let before = databases(&mut admin).await;
    let left_behind = before
        .iter()
        .filter(|name| name.starts_with("pgh_t_"))
        .count();
    assert_eq!(left_behind, 4, "reported {reported:?}, found {before:?}");

    let dropped = pgharness::testing::server::tidy(&mut admin).await.unwrap();
    let after = databases(&mut admin).await;
    // The killed processes' databases, the abandoned build, the oldest of the four templates.
    assert_eq!(dropped, left_behind + 2, "{before:?} -> {after:?}");
    assert!(
        !after.iter().any(|name| name.ends_with("_building")),
        "{after:?}"
    );
    assert!(
        !after.iter().any(|name| name.starts_with("pgh_t_")),
        "{after:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|name| name.starts_with("pgh_tpl_"))
            .count(),
        3,
        "{after:?}"
    );
}

#[test]
fn a_killed_runs_server_stops_after_the_idle_timeout() {
    let run_dir = pgharness::platform::files::scratch_dir().unwrap();
    let directory = run_dir.path().to_str().unwrap();
    let mut killed = helper_process(
        "helper_report_the_shared_server",
        &[
            ("PGHARNESS_TEST_DIR", directory),
            ("PGHARNESS_TEST_IDLE_SECONDS", "2"),
            ("PGHARNESS_HELPER_HOLD", "1"),
        ],
    );
    read_reported(&mut killed, "database=");
    let postmaster = postmaster_pid(&run_dir.path().join("server/pgdata")).unwrap();
    assert!(is_postgres(postmaster));
    killed.kill().unwrap();
    killed.wait().unwrap();
    wait_until("the idle server to stop", || !is_postgres(postmaster));
    assert!(!run_dir.path().join("state.json").exists());
}

// The idle server stops soon after the tests; the kept databases are still in it, and
// `pgharness testdb` starts it again to reach them.
#[test]
fn testdb_reaches_a_kept_database_after_the_idle_server_has_stopped() {
    let run_dir = pgharness::platform::files::scratch_dir().unwrap();
    let variables = [
        ("PGHARNESS_TEST_DIR", run_dir.path().to_str().unwrap()),
        ("PGHARNESS_TEST_IDLE_SECONDS", "1"),
        ("PGHARNESS_TEST_KEEP", "always"),
    ];
    let mut keeper = helper_process("helper_report_the_shared_server", &variables);
    let database = read_reported(&mut keeper, "database=");
    assert!(keeper.wait().unwrap().success());
    let pgdata = run_dir.path().join("server/pgdata");
    let stopped = |postmaster| move || !is_postgres(postmaster);
    wait_until(
        "the idle server to stop",
        stopped(postmaster_pid(&pgdata).unwrap()),
    );

    let testdb = |arguments: &[&str]| {
        let output = crate::helpers::pgharness(run_dir.path())
            .arg("testdb")
            .args(arguments)
            .envs(variables)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{arguments:?}: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    };
    let listed = testdb(&["list"]);
    assert!(listed.contains(&database), "{listed}");
    testdb(&["drop", &database]);
    let listed = testdb(&["list"]);
    assert!(!listed.contains(&database), "{listed}");
    // Before its directory goes: the server `testdb` started stops once idle.
    if let Some(postmaster) = postmaster_pid(&pgdata) {
        wait_until("the idle server to stop again", stopped(postmaster));
    }
}

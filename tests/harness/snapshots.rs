//! Named snapshots of the dev database, through `pgharness snapshot` and through the API of a
//! real `pgharness serve`, whose pool must follow a restore done by either.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use reqwest::{Client, Method};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};

use crate::helpers::{Output, Serve, migration_versions, pgharness, run, wait_for};

/// `pgharness snapshot <arguments>` on the data directory `home`, with `variables`.
fn snapshot(workdir: &Path, home: &Path, arguments: &[&str], variables: &[(&str, &str)]) -> Output {
    let mut command = pgharness(workdir);
    command
        .arg("snapshot")
        .args(arguments)
        .env("PGHARNESS_DATA_DIR", home)
        .envs(variables.iter().copied());
    run(command)
}

/// `pgharness migrate <arguments>` on the data directory `home`.
fn migrate(workdir: &Path, home: &Path, arguments: &[&str]) -> Output {
    let mut command = pgharness(workdir);
    command
        .arg("migrate")
        .args(arguments)
        .env("PGHARNESS_DATA_DIR", home);
    run(command)
}

/// A request to `serve`'s API with its admin token: status and JSON body (`Null` when none).
async fn call(serve: &Serve, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut request = Client::new()
        .request(method, format!("{}{path}", serve.api))
        .bearer_auth(serve.admin_token.as_deref().unwrap());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn usernames(serve: &Serve) -> Vec<String> {
    let (status, page) = call(serve, Method::GET, "/users", None).await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap().to_owned())
        .collect()
}

async fn add_user(serve: &Serve, username: &str) {
    let body = json!({"username": username, "email": format!("{username}@example.com")});
    let (status, answer) = call(serve, Method::POST, "/users", Some(body)).await;
    assert_eq!(status, 201, "{answer}");
}

/// `GET /users` requested without pause while an action runs.
struct RequestLoop {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl RequestLoop {
    /// Started, and answered at least once.
    async fn start(serve: &Serve) -> Self {
        let url = format!("{}/users", serve.api);
        let (stop, answered) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let task = tokio::spawn({
            let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
            async move {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = Client::new();
                let mut wrong = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = client.get(&url).send().await.unwrap();
                    let status = answer.status().as_u16();
                    let retry_after = answer.headers().contains_key("retry-after");
                    let expected = (200..300).contains(&status) || (status == 503 && retry_after);
                    if !expected {
                        wrong.push(format!(
                            "{status}: {}",
                            answer.text().await.unwrap_or_default()
                        ));
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                wrong
            }
        });
        let requests = Self {
            stop,
            answered,
            task,
        };
        wait_for("the first answer", async || requests.answered() > 0).await;
        requests
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops once answered again after `since` answers; asserts every answer was 2xx, or 503
    /// with Retry-After.
    async fn check(self, since: usize) {
        wait_for("answers after the action", async || self.answered() > since).await;
        self.stop.store(true, Ordering::Relaxed);
        let wrong = self.task.await.unwrap();
        assert!(
            wrong.is_empty(),
            "answers other than 2xx or 503 with Retry-After: {wrong:?}"
        );
    }
}

/// Runs `action` (blocking) while `GET /users` is requested in a loop; asserts no answer was
/// anything but 2xx or 503 with Retry-After.
async fn under_requests<T: Send + 'static>(
    serve: &Serve,
    action: impl FnOnce() -> T + Send + 'static,
) -> T {
    let requests = RequestLoop::start(serve).await;
    let before = requests.answered();
    let result = tokio::task::spawn_blocking(action).await.unwrap();
    requests.check(before).await;
    result
}

/// A connection to the `postgres` database of `serve`'s server.
async fn server_of(serve: &Serve) -> PgConnection {
    PgConnection::connect(&serve.url().replace("/app_db", "/postgres"))
        .await
        .unwrap()
}

/// Runs `statement` on `serve`'s server.
async fn on_server(serve: &Serve, statement: &str) {
    let mut server = server_of(serve).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut server)
        .await
        .unwrap();
    server.close().await.unwrap();
}

/// The databases of `serve`'s server that pgharness's snapshots made, by name.
async fn snapshot_databases(serve: &Serve) -> Vec<String> {
    let mut server = server_of(serve).await;
    let names = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, 'pgh_') \
         AND NOT starts_with(datname, 'pgh_t_') ORDER BY datname",
    )
    .fetch_all(&mut server)
    .await
    .unwrap();
    server.close().await.unwrap();
    names
}

/// Restores the snapshot `one` through the API.
async fn restore_one(serve: &Serve) -> (u16, Value) {
    let path = "/api/database/snapshots/one/restore";
    call(serve, Method::POST, path, Some(json!({}))).await
}

fn serve() -> (tempfile::TempDir, Serve) {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let serve = Serve::start(workdir.path(), &workdir.path().join("data"));
    (workdir, serve)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_saves_and_restores_under_a_running_serve_whose_requests_never_fail() {
    let (workdir, serve) = serve();
    let (dir, home) = (workdir.path().to_owned(), serve.home.clone());
    add_user(&serve, "alice").await;
    let saved = under_requests(&serve, {
        let (dir, home) = (dir.clone(), home.clone());
        move || snapshot(&dir, &home, &["save", "with-alice"], &[])
    })
    .await;
    assert!(saved.success, "{}{}", saved.stdout, saved.stderr);
    saved.assert_shows("Saved app_db as snapshot with-alice");
    add_user(&serve, "bob").await;
    assert_eq!(usernames(&serve).await, ["alice", "bob"]);

    let restored = under_requests(&serve, move || {
        snapshot(&dir, &home, &["restore", "with-alice"], &[])
    })
    .await;
    assert!(restored.success, "{}{}", restored.stdout, restored.stderr);
    restored.assert_shows("Restored snapshot with-alice into app_db");
    restored
        .assert_shows("Copying snapshot with-alice now, so that its next restore copies nothing");
    // The serve's pool follows the restored database, without a restart.
    assert_eq!(usernames(&serve).await, ["alice"]);
    assert_eq!(
        snapshot_databases(&serve).await,
        ["pgh_next_with-alice", "pgh_snap_with-alice"]
    );

    // Restored again, from the ready copy the first restore made, after changes.
    let (dir, home) = (workdir.path(), &serve.home);
    add_user(&serve, "carol").await;
    let again = snapshot(dir, home, &["restore", "with-alice"], &[]);
    assert!(again.success, "{}{}", again.stdout, again.stderr);
    assert_eq!(usernames(&serve).await, ["alice"]);

    // Without its ready copy, and with the unfinished copy a killed process left (an empty
    // database), a restore copies the snapshot itself, and makes the ready copy again.
    add_user(&serve, "dave").await;
    on_server(&serve, "DROP DATABASE \"pgh_next_with-alice\"").await;
    on_server(&serve, "CREATE DATABASE \"pgh_making_with-alice\"").await;
    let copied = snapshot(dir, home, &["restore", "with-alice"], &[]);
    assert!(copied.success, "{}{}", copied.stdout, copied.stderr);
    assert_eq!(usernames(&serve).await, ["alice"]);
    assert_eq!(
        snapshot_databases(&serve).await,
        ["pgh_next_with-alice", "pgh_snap_with-alice"]
    );

    let listed = snapshot(dir, home, &["list"], &[]);
    listed.assert_shows("with-alice");
    listed.assert_shows(" MB");
    listed.assert_shows(&format!(
        "migration {}",
        migration_versions().last().unwrap()
    ));
    listed.assert_shows("1 snapshot(s)");
    listed.assert_shows("sizes include each snapshot's ready copy");
    let deleted = snapshot(dir, home, &["delete", "with-alice"], &[]);
    assert!(deleted.success, "{}", deleted.stderr);
    snapshot(dir, home, &["list"], &[]).assert_shows("No snapshots");
    assert_eq!(snapshot_databases(&serve).await, Vec::<String>::new());
    let missing = snapshot(dir, home, &["restore", "with-alice"], &[]);
    assert!(!missing.success);
    assert!(
        missing.stderr.contains("no snapshot named `with-alice`"),
        "{}",
        missing.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_saves_lists_restores_and_deletes_while_requests_get_only_2xx_or_503() {
    let (_workdir, serve) = serve();
    add_user(&serve, "alice").await;
    let (status, saved) = call(
        &serve,
        Method::POST,
        "/api/database/snapshots",
        Some(json!({"name": "one"})),
    )
    .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["name"], "one");
    let (status, taken) = call(
        &serve,
        Method::POST,
        "/api/database/snapshots",
        Some(json!({"name": "one"})),
    )
    .await;
    assert_eq!(status, 409, "{taken}");
    assert!(
        taken["detail"]
            .as_str()
            .unwrap()
            .contains("delete it first"),
        "{taken}"
    );
    add_user(&serve, "bob").await;

    let (status, listing) = call(&serve, Method::GET, "/api/database/snapshots", None).await;
    assert_eq!(status, 200, "{listing}");
    let one = &listing["snapshots"][0];
    assert_eq!(one["name"], "one");
    assert!(one["size_bytes"].as_i64().unwrap() > 1_000_000, "{listing}");
    assert_eq!(listing["total_bytes"], one["size_bytes"]);
    assert_eq!(
        one["migration"].as_i64().unwrap().to_string(),
        *migration_versions().last().unwrap()
    );
    assert!(
        one["created_at"].as_str().unwrap().ends_with('Z'),
        "{listing}"
    );
    assert_eq!(listing["allowed"], true);

    let requests = RequestLoop::start(&serve).await;
    let before = requests.answered();
    let (status, restored) = restore_one(&serve).await;
    requests.check(before).await;
    assert_eq!(status, 200, "{restored}");
    assert!(restored.get("notice").is_none(), "{restored}");
    assert_eq!(usernames(&serve).await, ["alice"]);
    let (_, events) = call(&serve, Method::GET, "/api/health/events", None).await;
    assert!(events.to_string().contains("snapshot_restored"), "{events}");

    // The ready copy is made again after the answer; restored again after changes, the
    // snapshot's data comes back as it was saved.
    wait_for("the ready copy made again", async || {
        let (_, listing) = call(&serve, Method::GET, "/api/database/snapshots", None).await;
        listing["snapshots"][0]["ready"] == true
    })
    .await;
    add_user(&serve, "carol").await;
    let (status, again) = restore_one(&serve).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["snapshot"]["ready"], true, "{again}");
    assert_eq!(usernames(&serve).await, ["alice"]);
    let (_, listing) = call(&serve, Method::GET, "/api/database/snapshots", None).await;
    assert_eq!(
        listing["snapshots"].as_array().unwrap().len(),
        1,
        "{listing}"
    );

    // Waits for the ready copy being made, then drops it with the snapshot.
    let (status, _) = call(&serve, Method::DELETE, "/api/database/snapshots/one", None).await;
    assert_eq!(status, 204);
    assert_eq!(snapshot_databases(&serve).await, Vec::<String>::new());
    let (status, _) = call(&serve, Method::DELETE, "/api/database/snapshots/one", None).await;
    assert_eq!(status, 404);
    let (_, listing) = call(&serve, Method::GET, "/api/database/snapshots", None).await;
    assert_eq!(listing["snapshots"], json!([]));
    assert_eq!(listing["total_bytes"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn names_outside_the_rule_are_refused_with_the_rule() {
    let (workdir, serve) = serve();
    for name in [
        "",
        "Upper",
        "-leading",
        "has space",
        "semi;colon",
        &"x".repeat(41),
    ] {
        let (status, refused) = call(
            &serve,
            Method::POST,
            "/api/database/snapshots",
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(status, 422, "{name:?}: {refused}");
        assert!(
            refused
                .to_string()
                .contains("lowercase letters a-z, digits"),
            "{refused}"
        );
    }
    let (status, _) = call(
        &serve,
        Method::POST,
        "/api/database/snapshots/..%2Fetc/restore",
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 422);
    let refused = snapshot(workdir.path(), &serve.home, &["save", "Bad!"], &[]);
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("`Bad!` is not a valid snapshot name: use 1 to 40 characters"),
        "{}",
        refused.stderr
    );
    // The longest name allowed.
    let longest = "a".repeat(40);
    let saved = snapshot(workdir.path(), &serve.home, &["save", &longest], &[]);
    assert!(saved.success, "{}", saved.stderr);
}

#[test]
fn snapshots_are_refused_in_production_as_reset_is() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let serve = Serve::start(workdir.path(), &workdir.path().join("data"));
    let url = serve.url();
    for arguments in [
        &["save", "prod"][..],
        &["restore", "prod"],
        &["delete", "prod"],
    ] {
        let refused = snapshot(
            workdir.path(),
            &serve.home,
            arguments,
            &[("APP_ENV", "production"), ("DATABASE_URL", &url)],
        );
        assert!(!refused.success, "{arguments:?}: {}", refused.stdout);
        assert!(
            refused
                .stderr
                .contains("refused in the production environment"),
            "{arguments:?}: {}",
            refused.stderr
        );
    }
}

/// Without a `serve`, each command starts the server and stops it: the snapshot outlives them.
#[test]
fn a_snapshot_of_an_older_migration_is_restored_with_the_way_to_migrate_or_migrated_on_request() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let (dir, home) = (workdir.path(), &workdir.path().join("data"));
    assert!(migrate(dir, home, &["up"]).success);
    assert!(migrate(dir, home, &["down"]).success);
    let saved = snapshot(dir, home, &["save", "older"], &[]);
    assert!(saved.success, "{}", saved.stderr);
    assert!(migrate(dir, home, &["up"]).success);

    let restored = snapshot(dir, home, &["restore", "older"], &[]);
    assert!(restored.success, "{}", restored.stderr);
    restored.assert_shows("behind this code by 1 migration(s): run `pgharness migrate up`");
    assert!(
        !migrate(dir, home, &["status"]).success,
        "the restored database is behind"
    );

    let migrated = snapshot(dir, home, &["restore", "older", "--migrate"], &[]);
    assert!(migrated.success, "{}", migrated.stderr);
    migrated.assert_shows("applied the 1 newer migration(s) of this code");
    assert!(migrate(dir, home, &["status"]).success);
}

/// A session held on a snapshot stops its copies: the restore from the ready copy still works
/// (the ready copy not made again is reported), the next one, which must copy the snapshot,
/// fails and leaves the dev database as it was, and serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restore_leaves_the_database_as_it_was() {
    let (workdir, serve) = serve();
    let (dir, home) = (workdir.path(), &serve.home);
    add_user(&serve, "alice").await;
    let saved = snapshot(dir, home, &["save", "held"], &[]);
    assert!(saved.success, "{}", saved.stderr);
    add_user(&serve, "bob").await;
    on_server(
        &serve,
        "ALTER DATABASE pgh_snap_held ALLOW_CONNECTIONS true",
    )
    .await;
    let holder = PgConnection::connect(&serve.url().replace("/app_db", "/pgh_snap_held"))
        .await
        .unwrap();

    let restored = snapshot(dir, home, &["restore", "held"], &[]);
    assert!(restored.success, "{}{}", restored.stdout, restored.stderr);
    restored.assert_shows("Restored snapshot held into app_db");
    for shown in [
        "cannot copy the snapshot for its next restore",
        "being accessed by other users",
        "The next restore of held copies the snapshot first",
    ] {
        assert!(restored.stderr.contains(shown), "{}", restored.stderr);
    }
    assert_eq!(usernames(&serve).await, ["alice"]);
    assert_eq!(snapshot_databases(&serve).await, ["pgh_snap_held"]);
    add_user(&serve, "bob").await;

    let failed = snapshot(dir, home, &["restore", "held"], &[]);
    assert!(!failed.success, "{}", failed.stdout);
    for shown in ["cannot copy the snapshot:", "being accessed by other users"] {
        assert!(failed.stderr.contains(shown), "{}", failed.stderr);
    }
    wait_for("the API to serve the database as it was", async || {
        call(&serve, Method::GET, "/users", None).await.0 == 200
    })
    .await;
    assert_eq!(usernames(&serve).await, ["alice", "bob"]);
    assert_eq!(snapshot_databases(&serve).await, ["pgh_snap_held"]);

    holder.close().await.unwrap();
    let restored = snapshot(dir, home, &["restore", "held"], &[]);
    assert!(restored.success, "{}", restored.stderr);
    assert_eq!(usernames(&serve).await, ["alice"]);
    assert_eq!(
        snapshot_databases(&serve).await,
        ["pgh_next_held", "pgh_snap_held"]
    );
}

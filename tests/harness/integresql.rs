//! `pgharness testdb serve` over HTTP, as `IntegreSQL`'s clients call it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};

/// `pgharness testdb serve --port 0` on the shared test server, stopped (SIGTERM) when dropped.
struct Served {
    child: Child,
    api: String,
    client: Client,
}

impl Served {
    fn start(arguments: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let workdir = std::env::temp_dir();
        let mut child = crate::helpers::pgharness(&workdir)
            .args(["testdb", "serve", "--port", "0"])
            .args(arguments)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| {
                line.strip_prefix("Test databases (IntegreSQL API) at ")
                    .map(str::to_owned)
            })
            .expect("testdb serve printed no address");
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            api: format!("{url}/api/v1"),
            client: Client::new(),
        }
    }

    /// A request as the Node client sends it: JSON content type even without a body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.api))
            .header("Content-Type", "application/json");
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /templates`, form-encoded as the Python client sends it.
    async fn initialize(&self, hash: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/templates", self.api))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("hash={hash}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The overview page at the server's root.
    async fn page(&self) -> String {
        let root = self.api.trim_end_matches("/api/v1");
        let response = self.client.get(root).send().await.unwrap();
        response.text().await.unwrap()
    }

    async fn finalize(&self, hash: &str) -> StatusCode {
        self.call(Method::PUT, &format!("/templates/{hash}"), None)
            .await
            .0
    }

    async fn take(&self, hash: &str) -> (StatusCode, Value) {
        self.call(Method::GET, &format!("/templates/{hash}/tests"), None)
            .await
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = kill_process(Pid::from_child(&self.child), Signal::TERM);
        let _ = self.child.wait();
    }
}

/// A hash no other test (or run) uses.
fn unique_hash(length: usize) -> String {
    use sha2::Digest as _;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        Instant::now()
    );
    let hex = format!("{:x}", sha2::Sha256::digest(seed));
    hex[..length].to_owned()
}

async fn connect(database: &Value) -> Result<PgConnection, sqlx::Error> {
    let config = &database["database"]["config"];
    let options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .host(config["host"].as_str().unwrap())
        .port(u16::try_from(config["port"].as_u64().unwrap()).unwrap())
        .username(config["username"].as_str().unwrap())
        .password(config["password"].as_str().unwrap())
        .database(config["database"].as_str().unwrap());
    PgConnection::connect_with(&options).await
}

/// Migrates a template as a client would: a trusted extension and a table.
async fn migrate(template: &Value) {
    let mut connection = connect(template).await.unwrap();
    sqlx::raw_sql(
        "CREATE EXTENSION pgcrypto; CREATE EXTENSION citext;
         CREATE TABLE notes (id serial PRIMARY KEY, body citext NOT NULL,
                             digest bytea GENERATED ALWAYS AS (digest(body::text, 'sha1')) STORED)",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
}

/// A finalized, migrated template.
async fn ready_template(served: &Served, hash: &str) {
    let (status, template) = served.initialize(hash).await;
    assert_eq!(status, StatusCode::OK, "{template}");
    migrate(&template).await;
    assert_eq!(served.finalize(hash).await, StatusCode::NO_CONTENT);
}

async fn notes(connection: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar("SELECT body::text FROM notes ORDER BY id")
        .fetch_all(connection)
        .await
        .unwrap()
}

fn detail(body: &Value) -> &str {
    body["detail"].as_str().unwrap_or_default()
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "every route's answers, in one server's order"
)]
async fn routes_answer_with_integresqls_statuses_and_details_naming_the_hash() {
    let served = Served::start(&[]);
    let hash = unique_hash(40);

    let (status, body) = served.take(&hash).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(detail(&body).contains(&hash), "{body}");
    assert_eq!(served.finalize(&hash).await, StatusCode::NOT_FOUND);
    let (status, body) = served
        .call(Method::POST, "/templates", Some(json!({ "hash": "" })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // JSON, as the Node client sends it; the database name fits whatever the hash's length.
    let long_hash = unique_hash(64);
    let (status, template) = served
        .call(
            Method::POST,
            "/templates",
            Some(json!({ "hash": long_hash })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{template}");
    assert_eq!(template["database"]["templateHash"], long_hash.as_str());
    assert!(
        template["database"]["config"]["database"]
            .as_str()
            .unwrap()
            .len()
            <= 63
    );
    migrate(&template).await;
    assert_eq!(served.finalize(&long_hash).await, StatusCode::NO_CONTENT);
    // Every caller of the Python client's `with tpl.initialize():` finalizes.
    assert_eq!(served.finalize(&long_hash).await, StatusCode::NO_CONTENT);
    let (status, body) = served.initialize(&long_hash).await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");

    let (status, first) = served.take(&long_hash).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["database"]["templateHash"], long_hash.as_str());
    let (_, second) = served.take(&long_hash).await;
    assert_ne!(first["id"], second["id"]);
    assert_ne!(
        first["database"]["config"]["database"],
        second["database"]["config"]["database"]
    );
    let mut connection = connect(&first).await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('mine')")
        .execute(&mut connection)
        .await
        .unwrap();
    assert_eq!(notes(&mut connection).await, ["mine"]);
    assert!(notes(&mut connect(&second).await.unwrap()).await.is_empty());

    // Given back while connected: refused; right after it closed, handed out again, unchanged.
    let first_id = first["id"].as_u64().unwrap();
    let unlock = format!("/templates/{long_hash}/tests/{first_id}/unlock");
    let (status, body) = served.call(Method::POST, &unlock, None).await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    assert!(detail(&body).contains(&long_hash), "{body}");
    connection.close().await.unwrap();
    assert_eq!(
        served.call(Method::POST, &unlock, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = served.call(Method::POST, &unlock, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, again) = served.take(&long_hash).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(notes(&mut connect(&again).await.unwrap()).await, ["mine"]);

    // The deprecated return, right after the test's connection closed; and recreate.
    let deprecated = format!("/templates/{long_hash}/tests/{first_id}");
    assert_eq!(
        served.call(Method::DELETE, &deprecated, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, again) = served.take(&long_hash).await;
    assert_eq!(again["id"], first["id"]);
    let recreate = format!("/templates/{long_hash}/tests/{first_id}/recreate");
    assert_eq!(
        served.call(Method::POST, &recreate, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = served
        .call(
            Method::POST,
            &format!("/templates/{long_hash}/tests/x/unlock"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Discarded: gone (410), then unknown to a second discard (404).
    let discard = format!("/templates/{long_hash}");
    assert_eq!(
        served.call(Method::DELETE, &discard, None).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, body) = served.take(&long_hash).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert!(detail(&body).contains(&long_hash), "{body}");
    assert_eq!(
        served.call(Method::DELETE, &discard, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        connect(&second).await.is_err(),
        "a discarded template's databases are dropped"
    );

    let (status, _) = served.initialize(&hash).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        served
            .call(Method::DELETE, "/admin/templates", None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(served.take(&hash).await.0, StatusCode::NOT_FOUND);
}

/// Waits until the server has closed the sessions a test closed (their backends end a little
/// after the client hangs up).
async fn wait_for_no_sessions(database: &Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let name = database["database"]["config"]["database"].as_str().unwrap();
    let attached = pgharness::testing::server::attach().await.unwrap();
    let mut admin = attached.connection;
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if open == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "sessions on {name} stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// Two processes initialize the same hash at once (pytest-xdist workers): one migrates, the
// other gets 423, finalizes at once (the Python client's `with` block does) and waits in GET
// until the first has finalized, then gets a migrated clone.
#[tokio::test]
async fn a_second_initializer_gets_423_and_waits_for_the_first_to_finalize() {
    let served = Served::start(&[]);
    let hash = unique_hash(32);
    let (first, second) = tokio::join!(served.initialize(&hash), served.initialize(&hash));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::LOCKED]);
    let template = if first.0 == StatusCode::OK {
        first.1
    } else {
        second.1
    };
    let mut initializer = connect(&template).await.unwrap();
    // The waiter's early finalize must not finalize a template still being migrated.
    assert_eq!(served.finalize(&hash).await, StatusCode::NO_CONTENT);
    let waiter = async {
        let (status, database) = served.take(&hash).await;
        assert_eq!(status, StatusCode::OK, "{database}");
        database
    };
    let initialize = async {
        sqlx::raw_sql("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
            .execute(&mut initializer)
            .await
            .unwrap();
        initializer.close().await.unwrap();
        assert_eq!(served.finalize(&hash).await, StatusCode::NO_CONTENT);
    };
    let (database, ()) = tokio::join!(waiter, initialize);
    assert!(
        notes(&mut connect(&database).await.unwrap())
            .await
            .is_empty()
    );
}

// An initializer that dies after migrating part of its template never finalizes it: once it
// has been gone for --abandon-after, the template is discarded, waiters learn why, and the next
// initializer starts over.
#[tokio::test]
async fn an_initializer_that_disconnects_without_finalizing_loses_the_template() {
    let served = Served::start(&["--abandon-after", "1"]);
    let hash = unique_hash(40);
    let (status, template) = served.initialize(&hash).await;
    assert_eq!(status, StatusCode::OK);
    let mut initializer = connect(&template).await.unwrap();
    sqlx::raw_sql("CREATE TABLE half (id int)")
        .execute(&mut initializer)
        .await
        .unwrap();
    drop(initializer);
    let (status, body) = served.take(&hash).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert!(
        detail(&body).contains("disconnected without finalizing"),
        "{body}"
    );
    let (status, body) = served.initialize(&hash).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// The role handed out owns its database and nothing else: no superuser powers, no program
// runs through COPY, no way into another test's database.
#[tokio::test]
async fn a_handed_out_role_is_confined_to_its_own_database() {
    let served = Served::start(&[]);
    let hash = unique_hash(40);
    ready_template(&served, &hash).await;
    let (_, mine) = served.take(&hash).await;
    let (_, theirs) = served.take(&hash).await;
    let mut connection = connect(&mine).await.unwrap();

    let (superuser, create_role, create_db): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert!(!superuser && !create_role && !create_db);
    let server_roles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_roles WHERE pg_has_role(current_user, oid, 'USAGE')
           AND rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(server_roles, 0);
    // It owns what the migrations made, extensions included.
    sqlx::query("INSERT INTO notes (body) VALUES ('Hello')")
        .execute(&mut connection)
        .await
        .unwrap();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM notes WHERE body = 'HELLO'")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(found, 1);
    let copy = sqlx::raw_sql("COPY notes TO PROGRAM 'true'")
        .execute(&mut connection)
        .await
        .unwrap_err();
    assert!(copy.to_string().contains("permission denied"), "{copy}");

    let mut intruder = mine.clone();
    intruder["database"]["config"]["database"] = theirs["database"]["config"]["database"].clone();
    let refused = connect(&intruder).await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
}

// The limit holds across templates: databases in use are never taken back, finished ones are.
#[tokio::test]
async fn at_the_limit_a_finished_database_is_recycled_and_else_the_answer_is_507() {
    let served = Served::start(&["--max-databases", "2", "--ready", "0"]);
    let hash = unique_hash(40);
    ready_template(&served, &hash).await;
    let (_, first) = served.take(&hash).await;
    let (_, second) = served.take(&hash).await;
    let first_connection = connect(&first).await.unwrap();
    let _second_connection = connect(&second).await.unwrap();
    let (status, body) = served.take(&hash).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert!(detail(&body).contains("--max-databases"), "{body}");
    first_connection.close().await.unwrap();
    wait_for_no_sessions(&first).await;
    let (status, third) = served.take(&hash).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert!(
        connect(&first).await.is_err(),
        "the finished database was recycled"
    );
}

// `testdb run` serves its command (here a helper test of this binary) through the variables
// the clients read, exits with the command's status, and drops what the command made.
#[tokio::test]
async fn testdb_run_serves_its_command_and_exits_with_its_status() {
    let workdir = std::env::temp_dir();
    let output = crate::helpers::pgharness(&workdir)
        .args(["testdb", "run", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "integresql::helper_initialize_through_the_environment",
            "--ignored",
            "--nocapture",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let database = stdout
        .lines()
        .find_map(|line| line.split("database=").nth(1))
        .unwrap_or_else(|| panic!("the helper reported no database:\n{stdout}"))
        .trim();
    let mut admin = pgharness::testing::server::attach()
        .await
        .unwrap()
        .connection;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "testdb run left {database} behind");

    let status = crate::helpers::pgharness(&workdir)
        .args(["testdb", "run", "--", "sh", "-c", "exit 3"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test]
#[ignore = "helper: run by testdb_run_serves_its_command_and_exits_with_its_status"]
async fn helper_initialize_through_the_environment() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = std::env::var("INTEGRESQL_CLIENT_BASE_URL").unwrap();
    let root = std::env::var("INTEGRESQL_URL").unwrap();
    assert_eq!(base, format!("{root}/api"));
    let response = Client::new()
        .post(format!("{base}/v1/templates"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("hash={}", unique_hash(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let template: Value = response.json().await.unwrap();
    println!(
        "database={}",
        template["database"]["config"]["database"].as_str().unwrap()
    );
}

// Under nextest (one process per test), `pgharness::testing` takes its databases from `testdb
// run`'s pool: each process is handed a migrated database of its own, sees only its own rows,
// and nothing is left once `testdb run` returns.
#[tokio::test]
async fn processes_running_one_test_each_take_their_databases_from_testdb_runs_pool() {
    let helper = format!(
        "'{}' --exact integresql::helper_a_test_on_a_pooled_database --ignored --nocapture",
        std::env::current_exe().unwrap().display()
    );
    let output = crate::helpers::pgharness(&std::env::temp_dir())
        .args(["testdb", "run", "--", "sh", "-c"])
        .arg(format!("{helper} && {helper} && {helper}"))
        .env("NEXTEST_EXECUTION_MODE", "process-per-test")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let databases: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split("database=").nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(databases.len(), 3, "{stdout}");
    let mut admin = pgharness::testing::server::attach()
        .await
        .unwrap()
        .connection;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = ANY($1)")
        .bind(&databases)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(left, 0, "testdb run left some of {databases:?} behind");
}

#[tokio::test]
#[ignore = "helper: run by processes_running_one_test_each_take_their_databases_from_testdb_runs_pool"]
async fn helper_a_test_on_a_pooled_database() {
    let db = pgharness::testing::TestDb::new().await.unwrap();
    assert!(
        db.name().starts_with("pgh_i_"),
        "not from the pool: {}",
        db.name()
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(users, 0, "another process's rows in {}", db.name());
    sqlx::query("INSERT INTO users (username, email) VALUES ('alice', 'alice@example.com')")
        .execute(db.pool())
        .await
        .unwrap();
    println!("database={}", db.name());
}

// What is served shows on the server's page and in `pgharness testdb list`.
#[tokio::test]
async fn served_templates_show_on_the_page_and_in_testdb_list() {
    let served = Served::start(&[]);
    let hash = unique_hash(40);
    ready_template(&served, &hash).await;
    let (status, _) = served.take(&hash).await;
    assert_eq!(status, StatusCode::OK);
    let page = served.page().await;
    assert!(page.contains(&hash) && page.contains("finalized"), "{page}");

    let listed = crate::helpers::pgharness(&std::env::temp_dir())
        .args(["testdb", "list"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&listed.stderr);
    let listed = String::from_utf8_lossy(&listed.stdout);
    let line = listed
        .lines()
        .find(|line| line.contains(&hash))
        .unwrap_or_else(|| panic!("{hash} not listed:\n{listed}{errors}"));
    assert!(
        line.contains(&format!("pid {}", served.child.id())),
        "{line}"
    );
}

// Stopping answers the requests still waiting for a template instead of holding the stop.
#[tokio::test]
async fn stopping_answers_the_requests_waiting_for_a_template() {
    let mut served = Served::start(&[]);
    let hash = unique_hash(40);
    assert_eq!(served.initialize(&hash).await.0, StatusCode::OK);
    let waiting = {
        let (client, url) = (
            served.client.clone(),
            format!("{}/templates/{hash}/tests", served.api),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    // Stopped once the request waits (the page counts it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = served.page().await;
        if page.contains("<span id=\"waiting\">1</span>") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request never waited:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_process(Pid::from_child(&served.child), Signal::TERM).unwrap();
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = answer.json().await.unwrap();
    assert!(detail(&body).contains("stopping"), "{body}");
    assert!(served.child.wait().unwrap().success());
}

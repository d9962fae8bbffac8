use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use pgharness::testing::{TestApp, app};
use rstest::rstest;

use crate::helpers::{Client as _, OwnServerApp, Reply, wait_for};

fn locations(reply_body: &Value) -> Vec<Value> {
    reply_body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["loc"].clone())
        .collect()
}

#[rstest]
#[tokio::test]
async fn health_reports_the_guides_body_when_the_database_answers(app: TestApp) {
    let reply = app.get("/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["status"], "healthy");
    // `pgharness::testing` assembles the app with APP_ENV=testing.
    assert_eq!(reply.body["environment"], "testing");
    assert_eq!(reply.body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.body["checks"], json!({"database": "healthy"}));
    assert!(reply.body["database"]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        reply.body["pool"]["max"],
        app.database.settings().max_connections()
    );
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(app.get("/health/ready").await.status, StatusCode::OK);
}

/// `GET path`, failing the test when the answer took anywhere near the pool's timeout
/// (`DATABASE_POOL_TIMEOUT`, 30 s): a database that is down is reported, not waited for.
async fn get_without_waiting_for_the_pool(app: &OwnServerApp, path: &str) -> Reply {
    let started = Instant::now();
    let reply = app.get(path).await;
    let pool_timeout = app.database.settings().timeout;
    assert!(
        started.elapsed() < pool_timeout / 2,
        "{path} took {:?}; the pool waits {pool_timeout:?}",
        started.elapsed()
    );
    reply
}

/// Waits until `GET /health` answers 200.
async fn wait_for_health(app: &OwnServerApp, what: &str) {
    wait_for(what, || async move {
        app.get("/health").await.status == StatusCode::OK
    })
    .await;
}

#[tokio::test]
async fn health_turns_503_when_the_database_stops_and_200_when_it_is_back() {
    let app = OwnServerApp::spawn().await;
    assert_eq!(app.get("/health").await.status, StatusCode::OK);

    assert_eq!(
        app.get("/api/database/state").await.body,
        json!({"status": "running"})
    );
    let stopped = app.call("POST", "/api/database/stop", json!({})).await;
    assert_eq!(stopped.body, json!({"status": "stopped"}));
    assert_eq!(
        app.get("/api/database/state").await.body,
        json!({"status": "stopped"})
    );
    let reply = get_without_waiting_for_the_pool(&app, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.header("retry-after"), "1");
    assert_eq!(reply.body["status"], "unhealthy");
    assert_eq!(reply.body["checks"]["database"], "unhealthy");
    assert!(reply.body["database"]["reason"].is_string());
    assert_eq!(
        app.get("/health/ready").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(app.get("/health/live").await.status, StatusCode::OK);

    let restarted = app.call("POST", "/api/database/start", json!({})).await;
    assert_eq!(restarted.body, json!({"status": "running"}));
    assert_eq!(
        app.get("/api/database/state").await.body,
        json!({"status": "running"})
    );
    // Health's own check gives the database 2 s: on a busy machine the first connections to a
    // server just started can take longer.
    wait_for_health(&app, "health to be 200 after a start").await;
    let restart = app.call("POST", "/api/database/restart", json!({})).await;
    assert_eq!(restart.status, StatusCode::OK);
    wait_for_health(&app, "health to be 200 after a restart").await;
    app.stop().await;
}

#[rstest]
#[tokio::test]
async fn the_database_state_is_refused_for_a_server_not_controlled_from_here(app: TestApp) {
    let reply = app.get("/api/database/state").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("only with the embedded server")),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn a_request_while_the_database_is_stopped_is_503_naming_the_refused_connection_at_once() {
    let app = OwnServerApp::spawn().await;
    app.call("POST", "/api/database/stop", json!({})).await;

    // The pool timeout is 30 s; a stopped server must not hold the request that long.
    let reply = get_without_waiting_for_the_pool(&app, "/users/1").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(
        reply.body["detail"],
        "database unavailable: connection refused"
    );

    app.call("POST", "/api/database/start", json!({})).await;
    assert_eq!(app.get("/users/1").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[rstest]
#[tokio::test]
async fn a_user_is_created_with_its_location_and_read_back(app: TestApp) {
    let reply = app.post_user("alice", "Alice@Example.com").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let id = reply.body["id"].as_i64().unwrap();
    assert_eq!(reply.headers["location"], format!("/users/{id}").as_str());
    assert_eq!(reply.body["username"], "alice");
    assert!(reply.body["created_at"].is_string());

    let read = app.get(&format!("/users/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body, reply.body);
}

#[rstest]
#[tokio::test]
async fn an_unknown_user_is_the_guides_404_and_a_non_integer_id_is_422(app: TestApp) {
    let missing = app.get("/users/4242").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"detail": "User not found"}));
    let bad = app.get("/users/abc").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(locations(&bad.body), vec![json!(["path", "user_id"])]);
}

#[rstest]
#[tokio::test]
async fn invalid_fields_are_422_naming_each_field(app: TestApp) {
    let reply = app.post_user("al", "not-an-address").await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        locations(&reply.body),
        vec![json!(["body", "username"]), json!(["body", "email"])]
    );
    let long_name = "x".repeat(51);
    let reply = app.post_user(&long_name, "x@y.z").await;
    assert_eq!(locations(&reply.body), vec![json!(["body", "username"])]);
    let missing = app
        .call("POST", "/users", json!({"username": "alice"}))
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.text.contains("email"), "{}", missing.text);
    assert_eq!(app.user_count().await, 0);
}

#[rstest]
#[tokio::test]
async fn a_taken_username_or_email_is_409_naming_which(app: TestApp) {
    app.create_user("alice", "alice@example.com").await;
    let same_name = app.post_user("alice", "other@example.com").await;
    assert_eq!(same_name.status, StatusCode::CONFLICT);
    assert_eq!(
        locations(&same_name.body),
        vec![json!(["body", "username"])]
    );
    let same_email = app.post_user("alicia", "ALICE@example.com").await;
    assert_eq!(same_email.status, StatusCode::CONFLICT);
    assert_eq!(locations(&same_email.body), vec![json!(["body", "email"])]);
    assert_eq!(app.user_count().await, 1);
}

#[rstest]
#[tokio::test]
async fn malformed_json_wrong_content_type_and_oversized_bodies_are_refused(app: TestApp) {
    let malformed = app
        .send(
            Request::post("/users")
                .header("content-type", "application/json")
                .body(Body::from("{\"username\": "))
                .unwrap(),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(
        malformed.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );

    let wrong_type = app
        .send(
            Request::post("/users")
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(wrong_type.body["detail"].is_string());

    let huge = format!(
        "[{}]",
        vec!["{\"username\":\"abcdef\",\"email\":\"a@b.c\"}"; 40_000].join(",")
    );
    let oversized = app
        .send(
            Request::post("/users/batch")
                .header("content-type", "application/json")
                .body(Body::from(huge))
                .unwrap(),
        )
        .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(oversized.body["detail"].as_str().unwrap().contains("limit"));
}

#[rstest]
#[tokio::test]
async fn a_batch_is_created_all_at_once(app: TestApp) {
    let users: Vec<Value> = (0..250)
        .map(|index| json!({"username": format!("user{index:03}"), "email": format!("u{index}@example.com")}))
        .collect();
    let reply = app.call("POST", "/users/batch", json!(users)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["created"], 250);
    assert_eq!(reply.body["users"][0]["username"], "user000");
    assert_eq!(reply.body["users"][249]["username"], "user249");
    assert_eq!(app.user_count().await, 250);
}

#[rstest]
#[tokio::test]
async fn a_batch_with_one_bad_row_inserts_nothing_and_names_the_row(app: TestApp) {
    app.create_user("taken", "taken@example.com").await;
    let invalid = app
        .call(
            "POST",
            "/users/batch",
            json!([
                {"username": "good1", "email": "g1@example.com"},
                {"username": "good2", "email": "nope"},
            ]),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(locations(&invalid.body), vec![json!(["body", 1, "email"])]);

    let duplicates = app
        .call(
            "POST",
            "/users/batch",
            json!([
                {"username": "good1", "email": "g1@example.com"},
                {"username": "good1", "email": "G1@example.com"},
                {"username": "taken", "email": "fresh@example.com"},
            ]),
        )
        .await;
    assert_eq!(duplicates.status, StatusCode::CONFLICT);
    assert_eq!(
        locations(&duplicates.body),
        vec![
            json!(["body", 1, "username"]),
            json!(["body", 1, "email"]),
            json!(["body", 2, "username"])
        ]
    );

    let too_many: Vec<Value> = (0..=pgharness::api::BATCH_LIMIT)
        .map(|index| json!({"username": format!("user{index}"), "email": format!("u{index}@x.io")}))
        .collect();
    let over = app.call("POST", "/users/batch", json!(too_many)).await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(over.text.contains("1 to 1000"), "{}", over.text);
    assert_eq!(app.user_count().await, 1);
}

#[rstest]
#[tokio::test]
async fn users_are_listed_by_page_search_and_creation_time(app: TestApp) {
    for name in ["alice", "bob", "carol", "al_x"] {
        app.create_user(name, &format!("{name}@example.com")).await;
    }
    let page = app.get("/users?limit=2&offset=1").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body["total"], 4);
    let names: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|user| user["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);

    let search = app.get("/users?q=AL").await;
    assert_eq!(search.body["total"], 2);
    // `_` in the search text is a character, not a wildcard.
    let literal = app.get("/users?q=l_").await;
    assert_eq!(literal.body["total"], 1);
    assert_eq!(literal.body["items"][0]["username"], "al_x");

    let future = app.get("/users?created_after=2999-01-01").await;
    assert_eq!(future.body["total"], 0);
    let past = app.get("/users?created_after=2000-01-01T00:00:00Z").await;
    assert_eq!(past.body["total"], 4);
    let beyond = app.get("/users?offset=10").await;
    assert_eq!(beyond.body["items"], json!([]));
    assert_eq!(beyond.body["total"], 4);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("created_after=yesterday", "created_after"),
    ] {
        let bad = app.get(&format!("/users?{query}")).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(
            locations(&bad.body),
            vec![json!(["query", field])],
            "{query}"
        );
    }
    let not_a_number = app.get("/users?limit=ten").await;
    assert_eq!(not_a_number.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[rstest]
#[tokio::test]
async fn a_user_is_updated_and_deleted(app: TestApp) {
    let alice = app.create_user("alice", "alice@example.com").await;
    app.create_user("bob", "bob@example.com").await;
    let uri = format!("/users/{}", alice["id"]);

    let renamed = app.call("PATCH", &uri, json!({"username": "alicia"})).await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["username"], "alicia");
    assert_eq!(renamed.body["email"], "alice@example.com");

    let clash = app
        .call("PATCH", &uri, json!({"email": "BOB@example.com"}))
        .await;
    assert_eq!(clash.status, StatusCode::CONFLICT);
    assert_eq!(locations(&clash.body), vec![json!(["body", "email"])]);
    let invalid = app.call("PATCH", &uri, json!({"username": "x"})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app
        .call("PATCH", "/users/999999", json!({"username": "nobody"}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"detail": "User not found"}));

    let deleted = app.call("DELETE", &uri, json!(null)).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&uri).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.call("DELETE", &uri, json!(null)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_exhausted_pool_is_503_with_retry_after() {
    let app = OwnServerApp::spawn_with(&[
        ("DATABASE_POOL_SIZE", "1"),
        ("DATABASE_MAX_OVERFLOW", "0"),
        ("DATABASE_POOL_TIMEOUT", "1"),
    ])
    .await;
    let held = app.database.acquire().await.unwrap();
    let reply = app.get("/users/1").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("connection pool exhausted")
    );
    drop(held);
    app.stop().await;
}

#[rstest]
#[tokio::test]
async fn a_500_shows_neither_sql_nor_credentials(app: TestApp) {
    sqlx::query("ALTER TABLE users RENAME TO people")
        .execute(app.database.maintenance_pool())
        .await
        .unwrap();
    let reply = app.get("/users/1").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, json!({"detail": "Internal server error"}));
}

#[tokio::test]
async fn the_connection_screen_shows_the_server_without_its_password() {
    let app = OwnServerApp::spawn().await;
    let reply = app.get("/api/connection").await;
    assert_eq!(reply.status, StatusCode::OK);
    let info = &reply.body;
    assert_eq!(info["mode"], "embedded");
    assert_eq!(info["host"], "127.0.0.1");
    assert_eq!(info["database"], "app_db");
    assert_eq!(info["user"], "postgres");
    assert_eq!(info["reachable"], true);
    assert!(info["server_version"].as_str().unwrap().starts_with("16."));
    assert!(info["active_connections"].as_i64().unwrap() >= 1);
    assert_eq!(info["url"], format!("127.0.0.1:{}/app_db", info["port"]));
    assert_eq!(info["pool_settings"]["size"], 5);
    assert_eq!(info["migrations"]["pending"], json!([]));
    assert_eq!(
        info["migrations"]["applied"].as_array().unwrap().len(),
        crate::helpers::migration_versions().len()
    );
    let password = app.server.url().expose_url();
    let password = password
        .split(':')
        .nth(2)
        .unwrap()
        .split('@')
        .next()
        .unwrap();
    assert!(!reply.text.contains(password), "password in {}", reply.text);
    app.stop().await;
}

#[tokio::test]
async fn slow_queries_come_from_pg_stat_statements() {
    let app = OwnServerApp::spawn().await;
    app.create_user("alice", "alice@example.com").await;
    let reply = app.get("/api/queries/slow").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["available"], true);
    let queries = reply.body["queries"].as_array().unwrap();
    assert!(
        queries.iter().any(|query| query["query"]
            .as_str()
            .unwrap()
            .contains("INSERT INTO users")),
        "{}",
        reply.text
    );
    app.stop().await;
}

/// `pgharness::testing`'s app runs on a database it does not own, as `DATABASE_URL` does.
#[rstest]
#[tokio::test]
async fn database_control_is_refused_against_an_external_server(app: TestApp) {
    for action in ["stop", "start", "restart"] {
        let reply = app
            .call("POST", &format!("/api/database/{action}"), json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{action}");
        assert!(
            reply.body["detail"].as_str().unwrap().contains("embedded"),
            "{}",
            reply.text
        );
    }
    assert_eq!(app.get("/api/connection").await.body["mode"], "external");
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
}

#[rstest]
#[tokio::test]
async fn metrics_count_requests_by_route_and_show_the_pool(app: TestApp) {
    app.get("/users/1").await;
    app.get("/users/2").await;
    let reply = app.get("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").starts_with("text/plain"));
    let text = reply.text;
    assert!(
        text.contains(
            r#"pgharness_http_requests_total{method="GET",route="/users/{user_id}",status="404"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains("pgharness_http_request_duration_seconds_bucket"),
        "{text}"
    );
    let pool_max = format!(
        "pgharness_pool_max {}",
        app.database.settings().max_connections()
    );
    for gauge in [
        "pgharness_pool_size",
        "pgharness_pool_idle",
        "pgharness_pool_in_use",
        &pool_max,
    ] {
        assert!(text.contains(gauge), "{gauge} missing:\n{text}");
    }
    assert!(text.contains("pgharness_pool_wait_seconds_total"), "{text}");
    assert!(
        text.contains("pgharness_pool_connection_errors_total"),
        "{text}"
    );
}

#[rstest]
#[tokio::test]
async fn made_up_methods_are_counted_under_one_label_not_one_series_each(app: TestApp) {
    for method in ["FOO", "BAR", "BAZ"] {
        assert_eq!(
            app.call(method, "/users/1", json!({})).await.status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    let text = app.get("/metrics").await.text;
    assert!(
        text.contains(
            r#"pgharness_http_requests_total{method="_OTHER",route="/users/{user_id}",status="405"} 3"#
        ),
        "{text}"
    );
    assert!(!text.contains(r#"method="FOO""#), "{text}");
}

/// A connection of its own to the test's database, named `application_name`, that ran
/// `statement`: a session the overview lists.
async fn session_of(app: &TestApp, application_name: &str, statement: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let options = app
        .db
        .url()
        .connect_options()
        .application_name(application_name);
    let mut connection = sqlx::PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}

/// The overview's sessions as (application, statement, internal, current).
fn sessions(reply: &Reply) -> Vec<(String, String, bool, bool)> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|session| {
            (
                session["application_name"].as_str().unwrap().to_owned(),
                session["query"].as_str().unwrap_or_default().to_owned(),
                session["internal"].as_bool().unwrap(),
                session["current"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[rstest]
#[tokio::test]
async fn the_overview_lists_the_applications_sessions_and_pgharnesss_own_only_when_asked(
    app: TestApp,
) {
    let count = "SELECT count(*) FROM users";
    let _worker = session_of(&app, "billing-worker", count).await;
    // pgharness's pool serving the application's request, and its own health probe.
    let _request = session_of(&app, "pgharness", count).await;
    let _probe = session_of(&app, "pgharness", "SELECT 1").await;
    let worker = ("billing-worker".to_owned(), count.to_owned(), false, false);
    let request = ("pgharness".to_owned(), count.to_owned(), false, false);
    let probe = ("pgharness".to_owned(), "SELECT 1".to_owned(), true, false);

    let shown = sessions(&app.get("/api/database/overview").await);
    assert!(shown.contains(&worker), "{shown:?}");
    assert!(shown.contains(&request), "{shown:?}");
    assert!(!shown.contains(&probe), "{shown:?}");
    assert!(
        !shown
            .iter()
            .any(|(_, _, internal, current)| *internal || *current),
        "{shown:?}"
    );

    let all = sessions(
        &app.get("/api/database/overview?include_internal=true")
            .await,
    );
    assert!(all.contains(&worker), "{all:?}");
    assert!(all.contains(&request), "{all:?}");
    assert!(all.contains(&probe), "{all:?}");
    assert!(
        all.iter()
            .any(|(name, _, internal, current)| name == "pgharness" && *internal && *current),
        "this request's own session is not listed as pgharness's: {all:?}"
    );

    let refused = app
        .get("/api/database/overview?include_internal=maybe")
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
}

/// The plan of `query` as one text, or the refusal's message.
async fn explained(app: &TestApp, query: &str, analyze: bool) -> Result<String, String> {
    let reply = app
        .call(
            "POST",
            "/api/queries/explain",
            json!({"query": query, "analyze": analyze}),
        )
        .await;
    match reply.status {
        StatusCode::OK => Ok(reply.body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line.as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")),
        StatusCode::UNPROCESSABLE_ENTITY => {
            assert_eq!(locations(&reply.body), [json!(["body", "query"])]);
            Err(reply.body["detail"][0]["msg"].as_str().unwrap().to_owned())
        }
        other => panic!("{other}: {}", reply.text),
    }
}

#[rstest]
#[tokio::test]
async fn explain_plans_a_statement_runs_it_only_when_asked_and_changes_nothing(app: TestApp) {
    let created = app
        .call(
            "POST",
            "/users",
            json!({"username": "kept", "email": "kept@example.com"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);

    let plan = explained(&app, "SELECT count(*) FROM users", false)
        .await
        .unwrap();
    assert!(plan.contains("Aggregate"), "{plan}");
    assert!(!plan.contains("actual time"), "{plan}");
    let analyzed = explained(&app, "SELECT count(*) FROM users", true)
        .await
        .unwrap();
    assert!(analyzed.contains("actual time"), "{analyzed}");

    // A write that is run is rolled back; a second statement is not run at all.
    let deleted = explained(&app, "DELETE FROM users", true).await.unwrap();
    assert!(deleted.contains("Delete on users"), "{deleted}");
    let second = explained(&app, "SELECT 1; DELETE FROM users", true).await;
    assert!(
        second
            .as_ref()
            .is_err_and(|message| message.contains("multiple commands")),
        "{second:?}"
    );
    assert_eq!(app.get("/users").await.body["total"], 1);

    let parameters = explained(&app, "SELECT * FROM users WHERE id = $1", false).await;
    assert!(
        parameters
            .as_ref()
            .is_err_and(|message| message.contains("`$1`-style parameters")),
        "{parameters:?}"
    );
    let typo = explained(&app, "SELEC 1", false).await;
    assert!(
        typo.as_ref()
            .is_err_and(|message| message.contains("syntax error")),
        "{typo:?}"
    );
}

#[rstest]
#[tokio::test]
async fn openapi_json_is_openapi_3_and_lists_every_route_with_its_status_codes(app: TestApp) {
    let reply = app.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    let spec = oas3::from_json(&reply.text).expect("a valid OpenAPI 3 document");
    assert!(spec.openapi.starts_with("3."));
    let paths = spec.paths.unwrap_or_default();
    for (path, method, statuses) in [
        ("/health", "get", &["200", "503"][..]),
        ("/health/live", "get", &["200"]),
        ("/health/ready", "get", &["200", "503"]),
        ("/users", "get", &["200", "422"]),
        (
            "/users",
            "post",
            &["201", "400", "409", "413", "415", "422"],
        ),
        ("/users/batch", "post", &["201", "409", "422"]),
        ("/users/{user_id}", "get", &["200", "404", "422"]),
        ("/users/{user_id}", "patch", &["200", "404", "409", "422"]),
        ("/users/{user_id}", "delete", &["204", "404", "422"]),
        ("/api/connection", "get", &["200"]),
        ("/api/queries/slow", "get", &["200", "503"]),
        (
            "/api/database/overview",
            "get",
            &["200", "401", "422", "503"],
        ),
        ("/api/database/state", "get", &["200", "403"]),
        ("/api/database/stop", "post", &["200", "403"]),
        ("/api/database/start", "post", &["200", "403"]),
        ("/api/database/restart", "post", &["200", "403"]),
        ("/metrics", "get", &["200"]),
    ] {
        let item = paths.get(path).unwrap_or_else(|| panic!("{path} missing"));
        let operation = match method {
            "get" => item.get.as_ref(),
            "post" => item.post.as_ref(),
            "patch" => item.patch.as_ref(),
            _ => item.delete.as_ref(),
        }
        .unwrap_or_else(|| panic!("{method} {path} missing"));
        let responses = operation.responses.clone().unwrap_or_default();
        for status in statuses {
            assert!(
                responses.contains_key(*status),
                "{method} {path} lacks {status}"
            );
        }
    }
}

#[rstest]
#[tokio::test]
async fn the_docs_page_and_its_assets_are_served_from_the_binary(app: TestApp) {
    let page = app.get("/docs").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    // Offline: nothing is loaded from another host.
    assert!(!page.text.contains("=\"http"), "{}", page.text);
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(page.text.contains(asset), "{asset} not referenced");
        let reply = app.get(asset).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(reply.header("cache-control").contains("max-age"));
    }
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert!(bundle.header("content-type").starts_with("text/javascript"));
    assert!(bundle.text.contains("SwaggerUIBundle"));
    assert!(
        app.get("/docs/init.js")
            .await
            .text
            .contains("/openapi.json")
    );
}

#[rstest]
#[tokio::test]
async fn the_web_ui_is_served_from_the_binary_with_a_strict_policy(app: TestApp) {
    let page = app.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    let policy = page.header("content-security-policy");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    for (asset, content_type) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        assert!(page.text.contains(asset), "{asset} not referenced");
        let reply = app.get(asset).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("content-type").starts_with(content_type));
        assert_eq!(reply.headers["cache-control"], "no-cache");
    }
    // Every module app.js imports, directly or not, is built in: one missing breaks the page.
    let modules = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/js")).unwrap();
    for module in modules {
        let name = module.unwrap().file_name().into_string().unwrap();
        let reply = app.get(&format!("/js/{name}")).await;
        assert_eq!(reply.status, StatusCode::OK, "/js/{name}");
        assert!(reply.header("content-type").starts_with("text/javascript"));
        assert_eq!(reply.headers["cache-control"], "no-cache");
    }
    assert_eq!(
        app.get("/js/missing.js").await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        !page.text.contains("=\"http"),
        "an external asset: {}",
        page.text
    );
}

#[tokio::test]
async fn the_connection_string_with_its_password_comes_only_on_an_explicit_post() {
    let app = OwnServerApp::spawn().await;
    let secret = app.server.url().expose_url();
    let revealed = app.call("POST", "/api/connection/reveal", json!({})).await;
    assert_eq!(revealed.status, StatusCode::OK);
    assert_eq!(revealed.body["url"], secret.as_str());
    assert_eq!(
        app.get("/api/connection/reveal").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    app.stop().await;
}

#[rstest]
#[tokio::test]
async fn nul_bytes_and_out_of_range_dates_are_422_naming_the_field(app: TestApp) {
    let nul_name = app.post_user("nul\u{0}user", "nul@example.com").await;
    assert_eq!(nul_name.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(locations(&nul_name.body), vec![json!(["body", "username"])]);
    let nul_email = app.post_user("nulmail", "nul\u{0}@example.com").await;
    assert_eq!(locations(&nul_email.body), vec![json!(["body", "email"])]);
    for (query, field) in [
        ("q=a%00b", "q"),
        ("created_after=-4714-01-01", "created_after"),
        ("created_after=0000-01-01", "created_after"),
        ("created_after=%2B10000-01-01", "created_after"),
    ] {
        let reply = app.get(&format!("/users?{query}")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {}",
            reply.text
        );
        assert_eq!(
            locations(&reply.body),
            vec![json!(["query", field])],
            "{query}"
        );
    }
    let earliest = app.get("/users?created_after=0001-01-01").await;
    assert_eq!(earliest.status, StatusCode::OK, "{}", earliest.text);
}

#[rstest]
#[tokio::test]
async fn total_counts_the_filtered_users_on_every_page(app: TestApp) {
    for name in ["alice", "bob", "carol"] {
        app.create_user(name, &format!("{name}@example.com")).await;
    }
    let nothing = app.get("/users?q=nomatch&offset=1").await;
    assert_eq!(nothing.body["total"], 0);
    let past_the_end = app.get("/users?q=ar&offset=5").await;
    assert_eq!(past_the_end.body["items"], json!([]));
    assert_eq!(past_the_end.body["total"], 1);
    let future = app.get("/users?created_after=2999-01-01&offset=1").await;
    assert_eq!(future.body["total"], 0);
}

#[rstest]
#[tokio::test]
async fn email_addresses_differing_only_in_case_are_one_address_in_any_script(app: TestApp) {
    app.create_user("oscar", "ÖX@example.com").await;
    let single = app.post_user("otto", "öx@example.com").await;
    assert_eq!(single.status, StatusCode::CONFLICT, "{}", single.text);
    assert_eq!(locations(&single.body), vec![json!(["body", "email"])]);

    let taken = app
        .call(
            "POST",
            "/users/batch",
            json!([{"username": "olga", "email": "öX@EXAMPLE.com"}]),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    assert_eq!(
        taken.body["detail"][0]["msg"],
        "email is already registered"
    );

    let repeated = app
        .call(
            "POST",
            "/users/batch",
            json!([
                {"username": "ulla", "email": "ÜY@example.com"},
                {"username": "uwe", "email": "üy@example.com"},
            ]),
        )
        .await;
    assert_eq!(repeated.status, StatusCode::CONFLICT, "{}", repeated.text);
    assert_eq!(
        repeated.body["detail"][0]["loc"],
        json!(["body", 1, "email"])
    );
    assert_eq!(
        repeated.body["detail"][0]["msg"],
        "email repeats row 0 of this batch"
    );
    assert_eq!(app.user_count().await, 1);
}

#[test]
fn the_username_pattern_refuses_exactly_the_invisible_and_blank_characters() {
    let pattern = regex::Regex::new(&pgharness::api::USERNAME_PATTERN).unwrap();
    // Unicode's tables as the regex crate has them.
    let invisible =
        regex::Regex::new(r"^[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\x{2800}]$")
            .unwrap();
    for character in (0..=0x0010_FFFF_u32).filter_map(char::from_u32) {
        let accepted = pattern.is_match(&format!("a{character}b"));
        let refused = invisible.is_match(&character.to_string());
        assert_eq!(accepted, !refused, "U+{:04X}", u32::from(character));
        let at_the_edges = pattern.is_match(&format!("{character}ab"))
            || pattern.is_match(&format!("ab{character}"));
        assert_eq!(
            at_the_edges,
            !refused && !character.is_whitespace(),
            "U+{:04X} at the start or end",
            u32::from(character)
        );
    }
}

/// `tests/pattern-samples.json`: values the API accepts and refuses, per field, shared with
/// the JavaScript check of the `OpenAPI` document's patterns.
fn pattern_samples() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pattern-samples.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn strings(samples: &Value) -> Vec<&str> {
    samples
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| sample.as_str().unwrap())
        .collect()
}

#[rstest]
#[tokio::test]
async fn the_shared_pattern_samples_are_accepted_and_refused_by_the_api(app: TestApp) {
    let samples = pattern_samples();
    for (index, username) in strings(&samples["username"]["accepted"])
        .into_iter()
        .enumerate()
    {
        let reply = app
            .post_user(username, &format!("u{index}@example.com"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{username:?}: {}",
            reply.text
        );
    }
    for (index, username) in strings(&samples["username"]["refused"])
        .into_iter()
        .enumerate()
    {
        let reply = app
            .post_user(username, &format!("r{index}@example.com"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{username:?}: {}",
            reply.text
        );
        assert_eq!(locations(&reply.body), vec![json!(["body", "username"])]);
    }
    for (index, email) in strings(&samples["email"]["accepted"])
        .into_iter()
        .enumerate()
    {
        let reply = app.post_user(&format!("mail{index}"), email).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{email:?}: {}",
            reply.text
        );
    }
    for email in strings(&samples["email"]["refused"]) {
        let reply = app.post_user("somebody", email).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{email:?}: {}",
            reply.text
        );
        assert_eq!(locations(&reply.body), vec![json!(["body", "email"])]);
    }
}

#[rstest]
#[tokio::test]
async fn usernames_differing_only_in_width_compatibility_forms_or_case_are_one_name(app: TestApp) {
    app.create_user("Bob", "bob@example.com").await;
    // Fullwidth letters (NFKC makes them ASCII), then case, then a ligature (ﬁ is fi).
    app.create_user("ﬁona", "fiona@example.com").await;
    for (username, email) in [
        ("ｂｏｂ", "b1@example.com"),
        ("BOB", "b2@example.com"),
        ("FIONA", "f1@example.com"),
    ] {
        let single = app.post_user(username, email).await;
        assert_eq!(
            single.status,
            StatusCode::CONFLICT,
            "{username}: {}",
            single.text
        );
        assert_eq!(
            single.body["detail"][0],
            json!({"loc": ["body", "username"], "msg": "username is already taken", "type": "unique_violation"})
        );
    }

    let batch = app
        .call(
            "POST",
            "/users/batch",
            json!([
                {"username": "ＢＯＢ", "email": "b3@example.com"},
                {"username": "carol", "email": "c1@example.com"},
                {"username": "CAROL", "email": "c2@example.com"},
            ]),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CONFLICT, "{}", batch.text);
    assert_eq!(
        locations(&batch.body),
        vec![
            json!(["body", 0, "username"]),
            json!(["body", 2, "username"])
        ]
    );

    let dave = app.create_user("dave", "dave@example.com").await;
    let renamed = app
        .call(
            "PATCH",
            &format!("/users/{}", dave["id"]),
            json!({"username": "bOb"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::CONFLICT, "{}", renamed.text);
    assert_eq!(locations(&renamed.body), vec![json!(["body", "username"])]);
    assert_eq!(app.user_count().await, 3);
}

#[tokio::test]
async fn a_connection_lost_mid_statement_is_503_with_retry_after_not_500() {
    use axum::response::IntoResponse as _;
    let app = OwnServerApp::spawn().await;
    let mut victim = app.database.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *victim)
        .await
        .unwrap();
    // What a database restart does to every open connection (57P01).
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(app.database.maintenance_pool())
        .await
        .unwrap();
    let error = sqlx::query("SELECT 1")
        .execute(&mut *victim)
        .await
        .unwrap_err();
    let response = pgharness::api::ApiError::from(error).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    drop(victim);
    app.stop().await;
}

#[rstest]
#[tokio::test]
async fn unknown_routes_and_methods_answer_json_and_every_answer_forbids_sniffing(app: TestApp) {
    let missing = app.get("/no/such/route").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"detail": "Not Found"}));
    let wrong_method = app.call("PUT", "/users", json!({})).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.body, json!({"detail": "Method Not Allowed"}));
    assert!(wrong_method.header("allow").contains("POST"));
    for path in ["/", "/health", "/users/1", "/docs", "/openapi.json"] {
        assert_eq!(
            app.get(path).await.header("x-content-type-options"),
            "nosniff",
            "{path}"
        );
    }
    let docs = app.get("/docs").await;
    let policy = docs.header("content-security-policy");
    assert!(
        policy.contains("frame-ancestors 'none'") && policy.contains("default-src 'self'"),
        "{policy}"
    );
}

#[rstest]
#[tokio::test]
async fn openapi_declares_query_parameters_limits_and_the_answers_before_the_handler(app: TestApp) {
    let spec = app.get("/openapi.json").await.body;
    let list = &spec["paths"]["/users"]["get"];
    let parameters = list["parameters"].as_array().unwrap();
    for parameter in parameters {
        assert_eq!(parameter["in"], "query", "{parameter}");
        assert_eq!(parameter["required"], false, "{parameter}");
    }
    let limit = parameters.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 100);
    let new_user = &spec["components"]["schemas"]["NewUser"]["properties"];
    assert_eq!(new_user["username"]["maxLength"], 50);
    assert_eq!(
        new_user["username"]["pattern"],
        *pgharness::api::USERNAME_PATTERN
    );
    assert_eq!(new_user["email"]["maxLength"], 254);
    let batch = &spec["paths"]["/users/batch"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert_eq!(batch["maxItems"], 1000);
    assert_eq!(batch["minItems"], 1);
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = &operation["responses"];
            assert!(responses.get("421").is_some(), "{method} {path} lacks 421");
            if method != "get" {
                for status in ["403", "415"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "408", "413", "422"] {
                    assert!(
                        responses.get(status).is_some(),
                        "{method} {path} lacks {status}"
                    );
                }
            }
        }
    }
}

#[rstest]
#[tokio::test]
async fn a_body_of_the_wrong_json_type_is_422_even_where_serde_would_read_it(app: TestApp) {
    let alice = app.create_user("alice", "alice@example.com").await;
    // serde reads a struct from an array of its fields; no client means that.
    let patch = app
        .call(
            "PATCH",
            &format!("/users/{}", alice["id"]),
            json!([null, null]),
        )
        .await;
    assert_eq!(
        patch.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        patch.text
    );
    assert_eq!(locations(&patch.body), vec![json!(["body"])]);
    let batch = app
        .call("POST", "/users/batch", json!([["bob", "bob@example.com"]]))
        .await;
    assert_eq!(
        batch.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        batch.text
    );
    assert_eq!(locations(&batch.body), vec![json!(["body", 0])]);
    let single = app.call("POST", "/users", json!("bob")).await;
    assert_eq!(single.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.user_count().await, 1);
}

#[rstest]
#[tokio::test]
async fn users_sort_by_any_column_both_ways_and_an_unknown_order_is_422(app: TestApp) {
    for (username, email) in [("mia", "zz@example.com"), ("zed", "aa@example.com")] {
        app.create_user(username, email).await;
    }
    let usernames = |reply: Reply| -> Vec<String> {
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|user| user["username"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        usernames(app.get("/users?sort=username").await),
        ["mia", "zed"]
    );
    assert_eq!(
        usernames(app.get("/users?sort=-username").await),
        ["zed", "mia"]
    );
    assert_eq!(
        usernames(app.get("/users?sort=email").await),
        ["zed", "mia"]
    );
    assert_eq!(usernames(app.get("/users?sort=-id").await), ["zed", "mia"]);
    let refused = app.get("/users?sort=password").await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[rstest]
#[tokio::test]
async fn resetting_or_seeding_an_external_database_is_refused_with_the_way_to_allow_it(
    app: TestApp,
) {
    app.create_user("kept", "kept@example.com").await;
    // `pgharness::testing` gives the app a database on the shared test server: external to it.
    let reset = app.call("POST", "/api/database/reset", json!({})).await;
    assert_eq!(reset.status, StatusCode::FORBIDDEN);
    assert!(
        reset.body["detail"]
            .as_str()
            .unwrap()
            .contains("PGHARNESS_DEV_DATA_ON_EXTERNAL=true"),
        "{}",
        reset.body
    );
    let load = app
        .call("POST", "/api/database/fixtures/users", json!({}))
        .await;
    assert_eq!(load.status, StatusCode::FORBIDDEN);
    let listed = app.get("/api/database/fixtures").await;
    assert_eq!(listed.body["allowed"], false);
    assert_eq!(app.user_count().await, 1);
}

#[tokio::test]
async fn a_fixture_is_loaded_whole_or_not_at_all_and_reset_empties_the_database() {
    let fixtures = pgharness::platform::files::scratch_dir().unwrap();
    std::fs::write(
        fixtures.path().join("two.sql"),
        "INSERT INTO users (username, email) VALUES ('one', 'one@example.com');\n\
         INSERT INTO users (username, email) VALUES ('two', 'two@example.com');\n",
    )
    .unwrap();
    std::fs::write(
        fixtures.path().join("broken.sql"),
        "INSERT INTO users (username, email) VALUES ('three', 'three@example.com');\n\
         INSERT INTO users (username, email) VALUES ('three', 'again@example.com');\n",
    )
    .unwrap();
    let dir = fixtures.path().to_str().unwrap().to_owned();
    let app = OwnServerApp::spawn_with(&[("PGHARNESS_FIXTURES_DIR", &dir)]).await;
    let listed = app.get("/api/database/fixtures").await;
    assert_eq!(listed.body["fixtures"], json!(["broken", "two"]));
    assert_eq!(listed.body["allowed"], true);

    let broken = app
        .call("POST", "/api/database/fixtures/broken", json!({}))
        .await;
    assert_eq!(broken.status, StatusCode::CONFLICT);
    assert!(
        broken.body["detail"].as_str().unwrap().contains("line 2"),
        "{}",
        broken.body
    );
    assert_eq!(app.user_count().await, 0, "half a fixture stayed");
    let missing = app
        .call("POST", "/api/database/fixtures/..%2Ftwo", json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Longer than a file name can be.
    let too_long = app
        .call(
            "POST",
            &format!("/api/database/fixtures/{}", "a".repeat(252)),
            json!({}),
        )
        .await;
    assert_eq!(too_long.status, StatusCode::NOT_FOUND, "{}", too_long.text);
    assert_eq!(too_long.body, json!({"detail": "Fixture not found"}));
    let spec = app.get("/openapi.json").await.body;
    assert_eq!(
        spec["paths"]["/api/database/fixtures/{name}"]["post"]["responses"]["404"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );

    let loaded = app
        .call("POST", "/api/database/fixtures/two", json!({}))
        .await;
    assert_eq!(loaded.status, StatusCode::NO_CONTENT);
    assert_eq!(app.user_count().await, 2);

    let reset = app.call("POST", "/api/database/reset", json!({})).await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.body);
    assert_eq!(app.user_count().await, 0);
    assert_eq!(app.get("/health").await.status, StatusCode::OK);
    let events = app.get("/api/health/events").await;
    let kinds: Vec<&str> = events.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect();
    let position = |kind| kinds.iter().position(|found| *found == kind).unwrap();
    assert!(
        position("database_reset") < position("fixture_loaded"),
        "{kinds:?}"
    );
    app.stop().await;
}

/// Round trips to `PostgreSQL` per request, counted by a proxy in front of the server: a read by
/// id is one, a single-row write one (it commits by itself), after the statement was prepared
/// on the connection. A ping per checkout or return would make them three.
#[tokio::test]
async fn a_read_by_id_is_one_round_trip_and_a_single_row_write_one() {
    let (_home, server) = crate::helpers::temporary_server().await;
    let proxy =
        crate::proxy::CountingProxy::start(format!("127.0.0.1:{}", server.port()).parse().unwrap())
            .await;
    let migrations = pgharness::migrations::Migrations::configured(None)
        .await
        .unwrap();
    let variables = [("DATABASE_POOL_SIZE", "1"), ("DATABASE_MAX_OVERFLOW", "0")];
    let config = pgharness::config::Config::from_lookup(|name| {
        variables
            .iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| (*value).to_owned())
    })
    .unwrap();
    let url = server.url().with_tcp_port(proxy.port);
    let harness = pgharness::Harness::on_database(config, url, migrations).unwrap();
    harness.prepare().await.unwrap();
    let router = pgharness::api::router(harness.api_context());
    let send = async |method: &str, uri: String, body: Option<Value>| {
        use tower::ServiceExt as _;
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    };
    // Each statement is prepared once per connection (one more round trip the first time).
    send(
        "POST",
        "/users".to_owned(),
        Some(json!({"username": "warm", "email": "warm@example.com"})),
    )
    .await;
    send("GET", "/users/1".to_owned(), None).await;
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for index in 0..9 {
        let before = proxy.client_flushes();
        send("GET", "/users/1".to_owned(), None).await;
        reads.push(proxy.client_flushes() - before);
        let before = proxy.client_flushes();
        let user = json!({"username": format!("user{index}"), "email": format!("user{index}@example.com")});
        send("POST", "/users".to_owned(), Some(user)).await;
        writes.push(proxy.client_flushes() - before);
    }
    // The median: the health sampler's own probe may fall inside one request's window.
    reads.sort_unstable();
    writes.sort_unstable();
    assert_eq!(reads[4], 1, "round trips per GET /users/{{id}}: {reads:?}");
    assert_eq!(writes[4], 1, "round trips per POST /users: {writes:?}");
    server.stop().await.unwrap();
}

use std::os::unix::fs::PermissionsExt as _;

use pgharness::embedded::{EmbeddedServer, ServerError};
use rustix::process::Signal;
use sqlx::Connection as _;

use pgharness::platform::process::is_postgres;

use crate::helpers::{
    Serve, binaries, options, pgharness, postmaster_pid, run, temporary_server, wait_for,
    wait_until,
};

/// A committed row in `serve`'s database: a `notes` table holding 'kept'.
async fn write_note(serve: &Serve) {
    let mut connection = sqlx::PgConnection::connect(&serve.url()).await.unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body text); INSERT INTO notes VALUES ('kept')")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

async fn read_note(serve: &Serve) -> String {
    let mut connection = sqlx::PgConnection::connect(&serve.url()).await.unwrap();
    let body = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    body
}

#[tokio::test]
async fn committed_rows_survive_kill_9_and_no_server_is_left_behind() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let first = Serve::start(workdir.path(), &home);
    write_note(&first).await;
    let killed_postmaster = postmaster_pid(&home).unwrap();

    first.signal(Signal::KILL);
    drop(first);

    let second = Serve::start(workdir.path(), &home);
    assert!(
        !is_postgres(killed_postmaster) || postmaster_pid(&home) == Some(killed_postmaster),
        "the killed run's server is still running beside the new one"
    );
    assert_eq!(read_note(&second).await, "kept");
    let postmaster = postmaster_pid(&home).unwrap();
    second.signal(Signal::TERM);
    wait_until("postgres to stop", || !is_postgres(postmaster));
    assert!(!is_postgres(killed_postmaster));
}

#[test]
fn sigterm_stops_serve_and_its_server() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let mut serve = Serve::start(workdir.path(), &home);
    let postmaster = postmaster_pid(&home).unwrap();
    assert!(is_postgres(postmaster));
    serve.signal(Signal::TERM);
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");
    assert!(!is_postgres(postmaster), "postgres outlived serve");
    assert!(!home.join("server.json").exists());
}

#[test]
fn check_attaches_to_the_server_a_running_serve_owns() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let serve = Serve::start(workdir.path(), &home);
    let postmaster = postmaster_pid(&home).unwrap();
    let port = serve
        .url()
        .rsplit_once(':')
        .unwrap()
        .1
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    let mut command = pgharness(workdir.path());
    command.arg("check").env("PGHARNESS_DATA_DIR", &home);
    let output = run(command);
    assert!(output.success, "{}{}", output.stdout, output.stderr);
    assert!(
        output.stdout.contains(&format!("  Port: {port}")),
        "{}",
        output.stdout
    );
    assert_eq!(
        postmaster_pid(&home),
        Some(postmaster),
        "check started a second server"
    );
    assert!(
        is_postgres(postmaster),
        "check stopped the server serve owns"
    );
}

#[tokio::test]
async fn a_configured_port_in_use_is_reported_with_the_fix() {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let home = pgharness::platform::files::scratch_dir().unwrap();
    let mut options = options(home.path());
    options.port = Some(port);
    let error = EmbeddedServer::start(&binaries().await, &options)
        .await
        .unwrap_err();
    assert!(matches!(error, ServerError::PortInUse { port: reported } if reported == port));
    let text = error.to_string();
    assert!(
        text.contains(&port.to_string()) && text.contains("PGHARNESS_PG_PORT"),
        "{text}"
    );
}

#[tokio::test]
async fn secrets_and_data_are_private_to_their_owner() {
    let (home, server) = temporary_server().await;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home.path()), 0o700);
    assert_eq!(mode(&home.path().join("password")), 0o600);
    assert_eq!(mode(&server.data_dir()), 0o700);
    let shown = format!("{:?} {}", server.url(), server.url());
    let password = std::fs::read_to_string(home.path().join("password")).unwrap();
    assert!(!shown.contains(password.trim()), "{shown}");
    server.stop().await.unwrap();
}

/// The address a session on `options` connects from: `None` through a Unix socket.
async fn client_address(options: &sqlx::postgres::PgConnectOptions) -> Option<String> {
    let mut connection = sqlx::PgConnection::connect_with(options).await.unwrap();
    let address = sqlx::query_scalar("SELECT host(inet_client_addr())")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    address
}

#[tokio::test]
async fn its_own_connections_go_through_a_unix_socket_while_its_url_still_works_over_tcp() {
    let (home, server) = temporary_server().await;
    assert_eq!(server.socket_dir(), Some(home.path()));
    assert_eq!(client_address(&server.url().connect_options()).await, None);
    let shown: sqlx::postgres::PgConnectOptions = server.url().expose_url().parse().unwrap();
    assert_eq!(
        client_address(&shown).await.as_deref(),
        Some("127.0.0.1"),
        "the URL given to tools such as psql"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_home_too_deep_for_a_socket_path_is_served_over_tcp() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("d".repeat(100));
    let server = EmbeddedServer::start(&binaries().await, &options(&home))
        .await
        .unwrap();
    assert_eq!(server.socket_dir(), None);
    assert_eq!(
        client_address(&server.url().connect_options())
            .await
            .as_deref(),
        Some("127.0.0.1")
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_server_is_stopped() {
    let (home, server) = temporary_server().await;
    let postmaster = postmaster_pid(home.path()).unwrap();
    drop(server);
    assert!(!is_postgres(postmaster));
}

#[tokio::test]
async fn a_restarted_server_keeps_its_data_and_password() {
    let (home, server) = temporary_server().await;
    let url = server.url().expose_url();
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE t (n int); INSERT INTO t VALUES (42)")
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    server.stop().await.unwrap();

    let server = EmbeddedServer::start(&binaries().await, &options(home.path()))
        .await
        .unwrap();
    let mut connection = sqlx::PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    let n: i32 = sqlx::query_scalar("SELECT n FROM t")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(n, 42);
    connection.close().await.unwrap();
    server.stop().await.unwrap();
}

/// As root, `PostgreSQL` runs as an unprivileged account, binaries and data wherever it can
/// reach them.
#[tokio::test]
async fn as_root_the_server_runs_as_an_unprivileged_account() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let installation = workdir.path().join("postgresql");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(binaries().await.installation_dir)
        .arg(&installation)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::set_permissions(&installation, std::fs::Permissions::from_mode(0o755)).unwrap();

    let home = workdir.path().join("data");
    let mut command = pgharness(workdir.path());
    command
        .arg("check")
        .env("PGHARNESS_PG_BIN_DIR", installation.join("bin"))
        .env("PGHARNESS_DATA_DIR", &home);
    let output = run(command);
    assert!(output.success, "{}{}", output.stdout, output.stderr);
    assert!(
        output.stdout.contains("PostgreSQL 16."),
        "{}",
        output.stdout
    );
    let owner = uzers::get_user_by_name("nobody").unwrap().uid();
    let metadata = std::fs::metadata(home.join("pgdata/PG_VERSION")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&metadata), owner);
}

/// The uids of `/proc/<pid>/status` (real, effective, saved, file system).
fn uids(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|uid| uid.parse().unwrap())
        .collect()
}

/// What a superuser of the database runs on the host (`COPY … TO PROGRAM`) acts as that
/// account, never as root: root's own files stay closed to it.
#[tokio::test]
async fn as_root_postgresql_never_acts_as_uid_0() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let serve = Serve::start(workdir.path(), &home);
    let postmaster = postmaster_pid(&home).unwrap();
    let postmaster_uids = uids(postmaster);
    assert!(
        postmaster_uids.iter().all(|&uid| uid != 0),
        "the postmaster runs with uids {postmaster_uids:?}"
    );

    let secret = workdir.path().join("root-only");
    std::fs::write(&secret, "root's secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut connection = sqlx::PgConnection::connect(&serve.url()).await.unwrap();
    let read = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TEMP TABLE leak (line text); COPY leak FROM PROGRAM 'cat {}'",
        secret.display()
    )))
    .execute(&mut connection)
    .await;
    let error = read.expect_err("a program run by PostgreSQL read a root-only file");
    assert!(error.to_string().contains("program"), "{error}");
    let appended = workdir.path().join("root-owned");
    std::fs::write(&appended, "").unwrap();
    let written = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COPY (SELECT 1) TO PROGRAM 'cat >> {}'",
        appended.display()
    )))
    .execute(&mut connection)
    .await;
    assert!(
        written.is_err(),
        "a program run by PostgreSQL wrote a root-owned file"
    );
    assert_eq!(std::fs::read_to_string(&appended).unwrap(), "");
    connection.close().await.unwrap();
}

/// A data directory whose files belong to root (as a server run inside a user namespace left
/// them) is handed to the server's account at the next start, every row kept.
#[tokio::test]
async fn as_root_a_data_directory_owned_by_root_is_handed_over_with_its_rows() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let first = Serve::start(workdir.path(), &home);
    write_note(&first).await;
    drop(first);
    let chowned = std::process::Command::new("chown")
        .args(["-R", "root:root"])
        .arg(&home)
        .status()
        .unwrap();
    assert!(chowned.success());

    let second = Serve::start(workdir.path(), &home);
    assert_eq!(read_note(&second).await, "kept");
    let owner = uzers::get_user_by_name("nobody").unwrap().uid();
    let metadata = std::fs::metadata(home.join("pgdata/base")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&metadata), owner);
    let password = std::fs::metadata(home.join("password")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&password),
        0,
        "the password file was handed to the server's account"
    );
}

/// A data directory the server's account cannot reach is refused before `PostgreSQL` starts,
/// naming the directory in the way and the setting to change.
#[test]
fn as_root_a_data_directory_the_account_cannot_reach_is_refused_with_the_fix() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: only meaningful as root");
        return;
    }
    let closed = tempfile::tempdir().unwrap();
    std::fs::set_permissions(closed.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut command = pgharness(closed.path());
    command
        .arg("check")
        .env("PGHARNESS_DATA_DIR", closed.path().join("data"));
    let output = run(command);
    assert!(!output.success);
    let text = format!("{}{}", output.stdout, output.stderr);
    assert!(
        text.contains("PGHARNESS_DATA_DIR") && text.contains(&closed.path().display().to_string()),
        "{text}"
    );
    assert!(!closed.path().join("data").exists(), "{text}");
}

#[rstest::rstest]
#[case::by_default(&[], true)]
#[case::unless_turned_off(&[("PGHARNESS_AUTO_MIGRATE", "false")], false)]
#[tokio::test]
async fn serve_applies_pending_migrations_at_start(
    #[case] variables: &[(&str, &str)],
    #[case] applied: bool,
) {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let serve = Serve::start_with(workdir.path(), &workdir.path().join("data"), variables);
    let mut connection = sqlx::PgConnection::connect(&serve.url()).await.unwrap();
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('users') IS NOT NULL")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(exists, applied);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn serve_answers_http_and_logs_each_request_to_rolling_files() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let logs = workdir.path().join("logs");
    let mut serve = Serve::start_with(
        workdir.path(),
        &workdir.path().join("data"),
        &[("PGHARNESS_LOG_DIR", logs.to_str().unwrap())],
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let health = reqwest::get(format!("{}/health", serve.api)).await.unwrap();
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    serve.signal(Signal::TERM);
    assert!(serve.child.wait().unwrap().success());

    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("pgharness.")
            && std::path::Path::new(&name)
                .extension()
                .is_some_and(|extension| extension == "log"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let request = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|entry| entry["span"]["route"] == "/health")
        .unwrap_or_else(|| panic!("no request entry in:\n{text}"));
    assert_eq!(request["span"]["method"], "GET");
    assert_eq!(request["fields"]["status"], 200);
    assert!(request["fields"]["latency_ms"].as_f64().is_some());
}

/// `GET path` on `serve`'s API: the status and body.
async fn get(serve: &Serve, path: &str) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::get(format!("{}{path}", serve.api)).await {
        Ok(answer) => (
            answer.status().as_u16(),
            answer.text().await.unwrap_or_default(),
        ),
        Err(error) => (0, error.to_string()),
    }
}

/// Waits until `serve` answers /health 200 and its timeline says it took the server over.
async fn wait_for_takeover(serve: &Serve) {
    wait_for(
        "the takeover on the timeline and a healthy database",
        async || {
            let (status, _) = get(serve, "/health").await;
            let (_, events) = get(serve, "/api/health/events").await;
            status == 200 && events.contains(r#""kind":"server_taken_over""#)
        },
    )
    .await;
}

/// A second `serve` attached to the first one's server takes it over when the first stops,
/// whether it stops cleanly or is killed, and keeps every committed row.
#[rstest::rstest]
#[case::stopped_cleanly(Signal::TERM)]
#[case::killed(Signal::KILL)]
#[tokio::test]
async fn an_attached_serve_takes_the_server_over_when_its_owner_stops(#[case] signal: Signal) {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let first = Serve::start(workdir.path(), &home);
    let second = Serve::start(workdir.path(), &home);
    assert!(
        second
            .startup
            .contains("attached to the server run by pgharness pid"),
        "{}",
        second.startup
    );
    write_note(&first).await;
    first.signal(signal);
    drop(first);

    wait_for_takeover(&second).await;
    assert_eq!(read_note(&second).await, "kept");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("server.json")).unwrap()).unwrap();
    assert_eq!(state["owner_pid"], second.child.id());
    // The new owner controls the server: no "owned by another pgharness".
    let _ = rustls::crypto::ring::default_provider().install_default();
    let restarted = reqwest::Client::new()
        .post(format!("{}/api/database/restart", second.api))
        .bearer_auth(second.admin_token.as_deref().unwrap())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        restarted.status(),
        200,
        "{}",
        restarted.text().await.unwrap()
    );
    let postmaster = postmaster_pid(&home).unwrap();
    drop(second);
    wait_until("the new owner to stop its server", || {
        !is_postgres(postmaster)
    });
}

/// A `serve` started while the owner shuts down waits for it, then runs the server itself.
#[tokio::test]
async fn a_serve_started_during_the_owners_shutdown_comes_up_all_the_same() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    let first = Serve::start(workdir.path(), &home);
    write_note(&first).await;
    let starting = std::thread::spawn({
        let workdir = workdir.path().to_owned();
        let home = home.clone();
        move || Serve::start(&workdir, &home)
    });
    first.signal(Signal::TERM);
    drop(first);
    let second = starting.join().expect("the racing serve did not come up");
    wait_for("the racing serve to be healthy", async || {
        get(&second, "/health").await.0 == 200
    })
    .await;
    assert_eq!(read_note(&second).await, "kept");
}

#[test]
fn log_files_and_their_folder_are_private_even_if_they_were_not() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    // The default folder, `logs/`, left readable by all with an old file in it.
    let logs = workdir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = logs.join("pgharness.2026-01-01.log");
    std::fs::write(&old, "{}\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let home = workdir.path().join("data");
    let serve = Serve::start(workdir.path(), &home);
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&logs), 0o700);
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&home.join("postgresql.log")), 0o600);
    drop(serve);
}

/// A port in use is reported before `PostgreSQL` is set up and migrations run, not after.
#[test]
fn serve_on_a_port_in_use_stops_before_starting_postgresql() {
    let workdir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let home = workdir.path().join("data");
    let mut command = pgharness(workdir.path());
    command
        .arg("serve")
        .env("PGHARNESS_DATA_DIR", &home)
        .env("APP_HOST", "127.0.0.1")
        .env("APP_PORT", &port);
    let output = run(command);
    assert!(!output.success, "{}", output.stdout);
    assert!(
        output.stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port}: the port is already in use"
        )),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("APP_PORT"), "{}", output.stderr);
    assert!(!home.exists(), "the data directory was set up first");
    assert!(
        !output.stdout.contains("Applied migration"),
        "{}",
        output.stdout
    );
}

#[test]
fn a_data_directory_that_is_a_file_is_named_with_its_variable() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let home = workdir.path().join("data");
    std::fs::write(&home, "not a directory").unwrap();
    let mut command = pgharness(workdir.path());
    command.arg("check").env("PGHARNESS_DATA_DIR", &home);
    let output = run(command);
    assert!(!output.success, "{}", output.stdout);
    assert!(
        output
            .stderr
            .contains(&format!("cannot create {}", home.display())),
        "{}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("PGHARNESS_DATA_DIR chooses the data directory"),
        "{}",
        output.stderr
    );
}

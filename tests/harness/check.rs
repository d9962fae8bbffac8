use crate::helpers::{Output, pgharness, run, temporary_server};

fn check_against(url: &str) -> Output {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let mut command = pgharness(workdir.path());
    command
        .arg("check")
        .env("DATABASE_URL", url)
        .env("DATABASE_POOL_TIMEOUT", "5");
    run(command)
}

#[test]
fn check_reports_the_embedded_server_ready_with_postgresql_16() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let mut command = pgharness(workdir.path());
    command
        .arg("check")
        .env("PGHARNESS_DATA_DIR", workdir.path().join("data"));
    let output = run(command);
    assert!(output.success, "{}{}", output.stdout, output.stderr);
    for line in [
        "Database Connection Test",
        "Configuration:",
        "  Environment: development",
        "  Pool Size: 5",
        "  Max Overflow: 10",
        "  Pool Timeout: 30s",
        "  Pool Recycle: 3600s",
        "Testing connection...",
        "✓ Connection successful!",
        "Database Information:",
        "  PostgreSQL Version: PostgreSQL 16.",
        "  Database: app_db",
        "  User: postgres",
        "  Host: 127.0.0.1",
        "  Driver: sqlx-postgres (async: True)",
        "✓ Database is ready for use!",
    ] {
        output.assert_shows(line);
    }
    output.assert_shows("  Database URL: 127.0.0.1:");
}

#[tokio::test]
async fn check_with_a_wrong_password_says_authentication_failed() {
    let (_home, server) = temporary_server().await;
    let output = check_against(&format!(
        "postgresql://postgres:wrong@127.0.0.1:{}/app_db",
        server.port()
    ));
    assert!(!output.success);
    output.assert_shows("✗ Connection failed: authentication failed");
    output.assert_shows("Verify the credentials");
    assert!(
        !output.stdout.contains("wrong"),
        "password shown: {}",
        output.stdout
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn check_against_an_unknown_database_says_it_does_not_exist() {
    let (_home, server) = temporary_server().await;
    let url = server.superuser_url("no_such_db").expose_url();
    let output = check_against(&url);
    assert!(!output.success);
    output.assert_shows("✗ Connection failed: database does not exist");
    output.assert_shows("CREATE DATABASE no_such_db");
    server.stop().await.unwrap();
}

#[test]
fn check_against_a_closed_port_says_connection_refused() {
    let port = {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.local_addr().unwrap().port()
    };
    let output = check_against(&format!("postgresql://postgres:pw@127.0.0.1:{port}/app_db"));
    assert!(!output.success);
    output.assert_shows("✗ Connection failed: connection refused");
    output.assert_shows("✗ Database is not ready!");
    assert!(
        output
            .stdout
            .contains(&format!("  Database URL: 127.0.0.1:{port}/app_db"))
    );
    // What listens on this port exactly, not every line that holds its digits.
    output.assert_shows(&format!("`ss -ltnp 'sport = :{port}'`"));
}

#[test]
fn real_environment_wins_over_dotenv() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    std::fs::write(
        workdir.path().join(".env"),
        "DATABASE_URL=postgresql+asyncpg://u:p@127.0.0.1:1/from_dotenv\nDATABASE_POOL_SIZE=3\nDATABASE_MAX_OVERFLOW=4\n",
    )
    .unwrap();
    let mut command = pgharness(workdir.path());
    command.arg("check").env("DATABASE_POOL_SIZE", "9");
    let output = run(command);
    output.assert_shows("  Database URL: 127.0.0.1:1/from_dotenv");
    output.assert_shows("  Pool Size: 9");
    output.assert_shows("  Max Overflow: 4");
}

#[test]
fn a_bad_variable_stops_the_cli_with_its_name() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let mut command = pgharness(workdir.path());
    command.arg("check").env("DATABASE_POOL_SIZE", "0");
    let output = run(command);
    assert!(!output.success);
    assert!(
        output.stderr.contains("DATABASE_POOL_SIZE=\"0\""),
        "{}",
        output.stderr
    );
}

#[test]
fn help_names_the_variables_most_people_set_and_where_all_are_listed() {
    let workdir = pgharness::platform::files::scratch_dir().unwrap();
    let mut command = pgharness(workdir.path());
    command.arg("--help");
    let output = run(command);
    assert!(output.success, "{}", output.stderr);
    for variable in [
        "PGHARNESS_DATA_DIR",
        "APP_PORT",
        "APP_HOST",
        "DATABASE_URL",
        "APP_ENV",
        "docs/configuration.md",
    ] {
        output.assert_shows(variable);
    }
}

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgharness::binaries::{self, Binaries};
use pgharness::config::Config;
use pgharness::embedded::{EmbeddedServer, ServerOptions};
use rustix::process::{Pid, Signal, kill_process};
use secrecy::ExposeSecret as _;
use tempfile::TempDir;
use tokio::sync::OnceCell;

/// The binaries every test uses, found (or downloaded) once per test process.
pub async fn binaries() -> Binaries {
    static BINARIES: OnceCell<Binaries> = OnceCell::const_new();
    BINARIES
        .get_or_init(|| async {
            pgharness::telemetry::init("warn");
            let config = Config::from_process_env().unwrap();
            binaries::provision(&(&config.embedded).into(), &pgharness::progress::quiet())
                .await
                .unwrap()
        })
        .await
        .clone()
}

/// The versions of the project's migrations, oldest first.
pub fn migration_versions() -> Vec<String> {
    let mut versions: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                name.ends_with(".up.sql")
                    .then(|| name.split('_').next().unwrap().to_owned())
            })
            .collect();
    versions.sort();
    versions
}

pub fn options(home: &Path) -> ServerOptions {
    ServerOptions::throwaway(home, "app_db")
}

/// A throwaway server in a temporary home.
pub async fn temporary_server() -> (TempDir, EmbeddedServer) {
    let home = pgharness::platform::files::scratch_dir().unwrap();
    let server = EmbeddedServer::start(&binaries().await, &options(home.path()))
        .await
        .unwrap();
    (home, server)
}

/// The `pgharness` binary, isolated from the developer's environment and `.env`.
pub fn pgharness(workdir: &Path) -> Command {
    isolated(Command::new(env!("CARGO_BIN_EXE_pgharness")), workdir)
}

/// The `pgharness` binary with at most `limit` open files (`prlimit`, util-linux).
pub fn pgharness_with_file_limit(workdir: &Path, limit: u32) -> Command {
    let mut command = Command::new("prlimit");
    command
        .arg(format!("--nofile={limit}:{limit}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_pgharness"));
    isolated(command, workdir)
}

/// The `pgharness` binary without root's power over files, as a user's own account runs it: in
/// a user namespace of its own (`unshare`, util-linux), where the permission bits of root's
/// files apply to it. `None` (and why) where this system allows no user namespace.
pub fn pgharness_without_root(workdir: &Path) -> Result<Command, String> {
    let probe = Command::new("unshare")
        .args(["--user", "--", "true"])
        .output()
        .map_err(|error| format!("cannot run unshare: {error}"))?;
    if !probe.status.success() {
        return Err(format!(
            "no user namespace here: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--"])
        .arg(env!("CARGO_BIN_EXE_pgharness"));
    Ok(isolated(command, workdir))
}

fn isolated(mut command: Command, workdir: &Path) -> Command {
    for variable in [
        "DATABASE_URL",
        "APP_ENV",
        "DATABASE_POOL_SIZE",
        "DATABASE_MAX_OVERFLOW",
        "DATABASE_POOL_TIMEOUT",
        "DATABASE_POOL_RECYCLE",
        "DATABASE_ECHO",
        "PGHARNESS_DATA_DIR",
        "PGHARNESS_PG_PORT",
        "PGHARNESS_DATABASE",
        "RUST_LOG",
        "APP_HOST",
    ] {
        command.env_remove(variable);
    }
    // Parallel tests must not compete for the API's default port.
    command.env("APP_PORT", "0").current_dir(workdir);
    command
}

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts that standard output holds `text`, showing all output when it does not.
    pub fn assert_shows(&self, text: &str) {
        assert!(
            self.stdout.contains(text),
            "missing {text:?} in:\n{}\n{}",
            self.stdout,
            self.stderr
        );
    }
}

pub fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `pgharness serve` on a data directory, waited for until it reports ready.
pub struct Serve {
    pub child: Child,
    pub home: PathBuf,
    /// `http://127.0.0.1:<port>`, as printed at start (on loopback whatever the listening address).
    pub api: String,
    /// The admin token from the link it printed (`/?token=…`); `None` when the admin routes are
    /// closed.
    pub admin_token: Option<String>,
    /// What it printed until it was ready.
    pub startup: String,
}

impl Serve {
    pub fn start(workdir: &Path, home: &Path) -> Self {
        Self::start_with(workdir, home, &[])
    }

    pub fn start_with(workdir: &Path, home: &Path, variables: &[(&str, &str)]) -> Self {
        Self::spawn(pgharness(workdir), home, variables)
    }

    /// `command` (a `pgharness` binary) with `serve`.
    pub fn spawn(mut command: Command, home: &Path, variables: &[(&str, &str)]) -> Self {
        let mut child = command
            .arg("serve")
            .env("PGHARNESS_DATA_DIR", home)
            .envs(variables.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read all along (so that serve never blocks on a full pipe), kept for a failed start.
        let stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut kept = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if kept.len() < 200 {
                    kept.push(line);
                }
            }
            kept
        });
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut printed_link = None;
        let mut startup = String::new();
        let ready = lines.by_ref().any(|line| {
            let line = line.unwrap_or_default();
            startup.push_str(&line);
            startup.push('\n');
            if let Some(rest) = line.strip_prefix("API and UI at ") {
                printed_link = rest.split_whitespace().next().map(str::to_owned);
            }
            line.starts_with("Press Ctrl-C")
        });
        if !ready {
            let _ = child.wait();
            let errors = errors.join().unwrap_or_default().join("\n");
            panic!("pgharness serve did not become ready; it printed:\n{startup}{errors}");
        }
        // Keep reading, so that serve never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let link = url::Url::parse(&printed_link.expect("serve printed no API address")).unwrap();
        let admin_token = link
            .query_pairs()
            .find_map(|(name, value)| (name == "token").then(|| value.into_owned()));
        Self {
            child,
            home: home.to_owned(),
            api: format!("http://127.0.0.1:{}", link.port().unwrap()),
            admin_token,
            startup,
        }
    }

    /// Port and password of its server, as an attaching process sees them.
    pub fn url(&self) -> String {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.home.join("server.json")).unwrap()).unwrap();
        let password = std::fs::read_to_string(self.home.join("password")).unwrap();
        format!(
            "postgresql://postgres:{}@127.0.0.1:{}/app_db",
            password.trim(),
            state["port"]
        )
    }

    pub fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).unwrap();
    }
}

impl Drop for Serve {
    /// SIGTERM, as a user would stop it: a SIGKILL would leave its server running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::TERM);
        }
        let _ = self.child.wait();
    }
}

/// The postmaster's pid of the server whose home is `home`, while it runs.
pub fn postmaster_pid(home: &Path) -> Option<u32> {
    pgharness::platform::process::postmaster_pid(&home.join("pgdata"))
}

/// SIGKILL, as a crash or the OOM killer would.
pub fn kill_hard(pid: u32) {
    let pid = Pid::from_raw(i32::try_from(pid).unwrap()).unwrap();
    kill_process(pid, Signal::KILL).unwrap();
}

/// How long a test waits for something that takes a moment, whatever it is: a ceiling against
/// hanging forever, far above the time it takes even on a loaded machine, not a claim of speed.
pub const PATIENCE: Duration = Duration::from_mins(1);

/// Waits until `condition` holds, or panics after [`PATIENCE`].
pub fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// As [`wait_until`], for a condition that awaits.
pub async fn wait_for<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API on a private embedded server of its own, assembled by `Harness::start` as `pgharness
/// serve` does: for tests that stop and start their database, or need its pool settings. Other
/// API tests take `pgharness::testing::TestApp`.
pub struct OwnServerApp {
    pub router: axum::Router,
    pub database: pgharness::database::Database,
    pub server: std::sync::Arc<EmbeddedServer>,
    harness: pgharness::Harness,
    _home: TempDir,
}

pub struct Reply {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
    pub text: String,
}

impl Reply {
    /// A header's value as text; panics when it is missing or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers[name].to_str().unwrap()
    }
}

impl OwnServerApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// With configuration variables (e.g. `DATABASE_POOL_SIZE`).
    pub async fn spawn_with(variables: &[(&str, &str)]) -> Self {
        let home = pgharness::platform::files::scratch_dir().unwrap();
        let bin_dir = binaries().await.bin_dir();
        let mut variables: std::collections::HashMap<&str, String> = variables
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        variables.insert("PGHARNESS_DATA_DIR", home.path().display().to_string());
        variables.insert("PGHARNESS_PG_BIN_DIR", bin_dir.display().to_string());
        // Throwaway data: no fsync.
        variables.insert(
            "PGHARNESS_PG_CONF",
            "fsync=off; synchronous_commit=off; full_page_writes=off".to_owned(),
        );
        let config = Config::from_lookup(|name| variables.get(name).cloned()).unwrap();
        let harness = pgharness::Harness::start(config, &pgharness::progress::quiet())
            .await
            .unwrap();
        harness.prepare().await.unwrap();
        Self {
            router: pgharness::api::router(harness.api_context()),
            database: harness.database().clone(),
            server: std::sync::Arc::clone(harness.server().unwrap()),
            harness,
            _home: home,
        }
    }

    pub async fn stop(self) {
        drop(self.server);
        self.harness.shutdown().await.unwrap();
    }
}

/// Requests to an API in-process, for both `pgharness::testing::TestApp` and [`OwnServerApp`].
pub trait Client {
    fn router(&self) -> &axum::Router;
    fn pool(&self) -> &sqlx::PgPool;
    /// Sent as a bearer token with every request, as a trusted tool would.
    fn admin_token(&self) -> &str;

    async fn send(&self, request: axum::http::Request<axum::body::Body>) -> Reply {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let mut request = request;
        request.headers_mut().insert(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", self.admin_token()).parse().unwrap(),
        );
        let response = self.router().clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(
            axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
    }

    async fn call(&self, method: &str, uri: &str, body: serde_json::Value) -> Reply {
        self.send(
            axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    /// `POST /users`, whatever the answer.
    async fn post_user(&self, username: &str, email: &str) -> Reply {
        self.call(
            "POST",
            "/users",
            serde_json::json!({"username": username, "email": email}),
        )
        .await
    }

    /// `POST /users` that must succeed; the created user.
    async fn create_user(&self, username: &str, email: &str) -> serde_json::Value {
        let reply = self.post_user(username, email).await;
        assert_eq!(
            reply.status,
            axum::http::StatusCode::CREATED,
            "{}",
            reply.text
        );
        reply.body
    }

    async fn user_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
}

impl Client for OwnServerApp {
    fn router(&self) -> &axum::Router {
        &self.router
    }
    fn admin_token(&self) -> &str {
        self.harness.admin_token().expose_secret()
    }
    fn pool(&self) -> &sqlx::PgPool {
        self.database.maintenance_pool()
    }
}

impl Client for pgharness::testing::TestApp {
    fn router(&self) -> &axum::Router {
        &self.router
    }
    fn admin_token(&self) -> &str {
        pgharness::testing::TestApp::admin_token(self)
    }
    fn pool(&self) -> &sqlx::PgPool {
        self.database.maintenance_pool()
    }
}

/// This test binary running only the ignored test `path` (`module::name`), with `variables`
/// added to its environment, its standard output piped: a test that needs a process of its own.
pub fn helper_process(path: &str, variables: &[(&str, &str)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            path,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        // Its own test databases, however this run takes its own (`pgharness testdb run`
        // passes a pool on to the processes it runs).
        .env_remove("PGHARNESS_TEST_POOL_URL")
        .envs(variables.iter().copied())
        // Held open by the `Child`: a helper that holds until its input ends goes away with the
        // test that started it, however the test ends.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

//! The `pgharness` command line: a thin front end over [`pgharness::Stack`] (`serve`) and
//! [`pgharness::Harness`] (the other commands).

#[path = "cli/migrate.rs"]
mod migrate;
#[path = "cli/snapshot.rs"]
mod snapshot;
#[path = "cli/testdb.rs"]
mod testdb;

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pgharness::config::{Config, DatabaseTarget, DatabaseUrl};
use pgharness::database::DatabaseError;
use pgharness::progress::{Progress, ProgressSink};
use pgharness::{Harness, HarnessError, Stack, StackError, check, telemetry};
use secrecy::ExposeSecret as _;

// With glibc's allocator the API spent a sixth more user-space instructions per request (`cargo
// bench --bench api`): tokio often frees on another thread than the one that allocated.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The variables most people set; `--help` ends with them.
const ENVIRONMENT_HELP: &str = "\
Environment (read from the environment, then from .env in the current directory):
  PGHARNESS_DATA_DIR  where the embedded PostgreSQL keeps its data (default: the user's data
                      directory, e.g. ~/.local/share/pgharness)
  APP_PORT            the API's port (default 8000; 0 picks a free one)
  APP_HOST            the API's address (default 127.0.0.1)
  DATABASE_URL        a PostgreSQL server to use instead of the embedded one
  APP_ENV             development (default), testing, staging or production: the pool's
                      presets (production needs DATABASE_URL)
Every variable: docs/configuration.md";

#[derive(Parser)]
#[command(version, about, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack and run until Ctrl-C (the default).
    Serve {
        /// Address to listen on (overrides `APP_HOST`).
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on, 0 for any free one (overrides `APP_PORT`).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Test the database connection, like the guide's `test_db_connection.py` (exit 1 on failure).
    Check,
    /// Find or fetch the `PostgreSQL` 16 binaries and print their installation directory.
    Binaries,
    /// Print the web UI's link with the admin token, as `serve` does at start (for `APP_HOST`
    /// and `APP_PORT`; keep it private: it opens the connection string and database control).
    Url,
    /// Manage schema migrations (the guide's Alembic commands).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Named snapshots of the dev database, kept on its server: save, restore, list, delete
    /// (development and testing only; a running `serve` follows a restore by itself).
    Snapshot {
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Test databases on the shared test server (started again if it has stopped since): those
    /// kept after failed tests (`pgharness::testing`), and test databases for any language
    /// through `IntegreSQL`'s API (`serve`, `run`).
    Testdb {
        #[command(subcommand)]
        action: TestdbAction,
    },
}

#[derive(Subcommand)]
enum TestdbAction {
    /// List the kept databases, newest first, with a URL psql opens (and the templates
    /// `testdb serve` holds).
    List,
    /// Drop one kept database, or all of them.
    Drop {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Open a kept database in psql.
    Psql { name: String },
    /// Serve test databases to any language through `IntegreSQL`'s HTTP API (v1, at the root;
    /// clients: `INTEGRESQL_CLIENT_BASE_URL`=<printed address>/api), until Ctrl-C.
    Serve {
        #[command(flatten)]
        options: ServeArgs,
    },
    /// Run a command (a test suite) with `testdb serve` on a free port, its address in
    /// `INTEGRESQL_CLIENT_BASE_URL` (…/api) and `INTEGRESQL_URL` (the root); exits with its status.
    Run {
        #[command(flatten)]
        options: ServeArgs,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on, 0 for any free one (`testdb run` always takes a free one).
    #[arg(long, default_value_t = 5000)]
    port: u16,
    /// Test databases kept ready per finalized template.
    #[arg(long, default_value_t = 3)]
    ready: usize,
    /// Test databases at most, across templates; beyond, handed-out ones nobody is connected
    /// to are dropped, else the request is refused (507).
    #[arg(long, default_value_t = 100)]
    max_databases: usize,
    /// Seconds after which a template whose initializer disconnected without finalizing it is
    /// discarded (ten times as long if it never connected).
    #[arg(long, default_value_t = 10)]
    abandon_after: u64,
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Save the database as a snapshot (its sessions are closed while it is copied).
    Save {
        /// 1 to 40 of a-z, 0-9, `_`, `-`, starting with a letter or a digit.
        name: String,
    },
    /// Replace the database with a snapshot (which stays).
    Restore {
        name: String,
        /// Then apply this code's migrations newer than the snapshot.
        #[arg(long)]
        migrate: bool,
    },
    /// List the snapshots: name, size, when saved, the migration they are at; total size.
    List,
    /// Delete a snapshot.
    Delete { name: String },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply pending migrations: all (`alembic upgrade head`), or up to --target.
    Up {
        #[arg(long)]
        target: Option<i64>,
    },
    /// Revert the newest migration (`alembic downgrade -1`), or --steps of them.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// List every migration, applied (with when) or pending.
    History,
    /// Show the newest applied migration.
    Current,
    /// Record the database as being at a version (or `head`) without running anything.
    Stamp { revision: String },
    /// Create a new timestamped up/down pair in the migrations directory (`alembic revision`).
    New {
        name: String,
        /// Write the change from the migrations' schema to the dev database's, as changed by
        /// hand, both ways; proven on a throwaway database and recorded as applied on the dev
        /// database (`alembic revision --autogenerate`).
        #[arg(long)]
        autogenerate: bool,
    },
    /// Exit 1 when migrations are pending, an applied file was edited, or one is missing.
    Status,
    /// Compare the live schema with what the migrations produce; exit 1 on drift.
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        host: None,
        port: None,
    });
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("✗ Configuration error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let _log_files = match &command {
        Command::Serve { host, port } => {
            config.api.host = host.clone().unwrap_or(config.api.host);
            config.api.port = port.unwrap_or(config.api.port);
            // sqlx reports PostgreSQL's NOTICEs (e.g. "already exists, skipping") at info.
            telemetry::init_with(
                "info,sqlx::postgres::notice=warn",
                config.logging.json,
                config.logging.dir.as_deref(),
            )
        }
        Command::Check
        | Command::Migrate { .. }
        | Command::Binaries
        | Command::Url
        | Command::Snapshot { .. }
        | Command::Testdb { .. } => {
            telemetry::init("warn");
            None
        }
    };
    match command {
        Command::Serve { .. } => serve(config).await,
        Command::Check => with_harness(config, check_connection).await,
        Command::Binaries => print_binaries(&config).await,
        Command::Url => print_admin_link(&config),
        Command::Testdb { action } => testdb::run(&action).await,
        Command::Migrate { action } => migrate::run(config, action).await,
        Command::Snapshot { action } => snapshot::run(config, action).await,
    }
}

/// Starts the harness (no API), runs `command` on it, and stops it.
async fn with_harness(
    config: Config,
    command: impl AsyncFnOnce(&Harness) -> Result<bool, HarnessError>,
) -> ExitCode {
    let harness = match Harness::start(config, &progress_bar()).await {
        Ok(harness) => harness,
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    let succeeded = match command(&harness).await {
        Ok(succeeded) => succeeded,
        Err(error) => {
            report_error(Some(harness.url()), &error);
            false
        }
    };
    if let Err(error) = harness.shutdown().await {
        eprintln!("✗ {error}");
        return ExitCode::FAILURE;
    }
    exit_code(succeeded)
}

fn exit_code(succeeded: bool) -> ExitCode {
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn check_connection(harness: &Harness) -> Result<bool, HarnessError> {
    let report = check::run(harness.config(), harness.url()).await;
    print!("{}", report.text());
    Ok(report.succeeded())
}

/// Prints an error; for a connection failure to a known URL, with the guide's steps to fix it.
fn report_error(url: Option<&DatabaseUrl>, error: &HarnessError) {
    eprintln!("✗ {error}");
    if let (Some(url), HarnessError::Database(DatabaseError::Connection(failure))) = (url, error) {
        eprintln!("Solutions:");
        for (number, remedy) in failure.kind.remedies(url).iter().enumerate() {
            eprintln!("  {}. {remedy}", number + 1);
        }
    }
}

async fn print_binaries(config: &Config) -> ExitCode {
    match pgharness::binaries::provision(&(&config.embedded).into(), &progress_bar()).await {
        Ok(binaries) => {
            println!("{}", binaries.installation_dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("✗ {error}");
            ExitCode::FAILURE
        }
    }
}

/// The UI's link with the admin token, for the configured address.
fn print_admin_link(config: &Config) -> ExitCode {
    let token = match &config.api.admin_token {
        Some(token) => token.expose_secret().to_owned(),
        None => match pgharness::api::load_or_create_admin_token(&config.embedded.data_dir) {
            Ok(token) => token.expose_secret().to_owned(),
            Err(error) => {
                eprintln!(
                    "✗ cannot read the admin token in {} (PGHARNESS_DATA_DIR): {error}",
                    config.embedded.data_dir.display()
                );
                return ExitCode::FAILURE;
            }
        },
    };
    let host = match config.api.host.as_str() {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        host => host,
    };
    println!("http://{host}:{}/?token={token}", config.api.port);
    ExitCode::SUCCESS
}

/// The whole stack in the foreground until Ctrl-C or SIGTERM.
async fn serve(config: Config) -> ExitCode {
    // Handlers first: a signal that arrives once "ready" is printed must stop us cleanly.
    let shutdown = match pgharness::platform::signals::shutdown_requested() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("✗ cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = api_port_free(&config.api.host, config.api.port) {
        eprintln!("✗ {error}");
        return ExitCode::FAILURE;
    }
    let external_url = match &config.database {
        DatabaseTarget::External(url) => Some(url.clone()),
        DatabaseTarget::Embedded => None,
    };
    let stack = match Stack::start(config, &progress_bar()).await {
        Ok(stack) => stack,
        Err(StackError::Harness(error)) => {
            report_error(external_url.as_ref(), &error);
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    for entry in stack.applied_migrations() {
        println!("Applied migration {}", entry.file);
    }
    if let Some(exposure) = stack.exposure() {
        println!("⚠ {exposure}");
    }
    println!("PostgreSQL is ready at {}", stack.harness().url());
    if let Some(server) = stack.harness().server() {
        println!("  data directory: {}", server.data_dir().display());
        if let Some(owner) = server.owner_pid() {
            println!("  (attached to the server run by pgharness pid {owner})");
        }
    }
    let url = stack.url();
    // The link carries the admin token: the terminal is the developer's, the log is not.
    let link = stack
        .admin_link()
        .map_or_else(|| format!("{url}/"), str::to_owned);
    println!("API and UI at {link}  (API docs: {url}/docs)");
    println!("Press Ctrl-C to stop.");
    let stopping = async {
        shutdown.await;
        println!("Stopping...");
    };
    match stack.run_until(stopping).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("✗ {error}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the API's address once and lets it go, so that a port in use is reported before
/// `PostgreSQL` starts and migrations run rather than after.
fn api_port_free(host: &str, port: u16) -> Result<(), pgharness::api::BindError> {
    use pgharness::api::BindError;
    let address = format!("{host}:{port}");
    match std::net::TcpListener::bind(&address) {
        Ok(_) => Ok(()),
        Err(source) if source.kind() == std::io::ErrorKind::AddrInUse => {
            Err(BindError::InUse { address })
        }
        Err(source) => Err(BindError::Other { address, source }),
    }
}

/// Download and extraction progress on stderr, hidden when nothing is downloaded.
fn progress_bar() -> ProgressSink {
    let bar = ProgressBar::hidden();
    Arc::new(move |event| match event {
        Progress::Step(message) => {
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_message(message);
        }
        Progress::Download { received, total } => {
            if let Some(total) = total {
                bar.set_length(total);
                bar.set_style(
                    ProgressStyle::with_template("{msg}\n{wide_bar} {bytes}/{total_bytes} ({eta})")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(received);
        }
        Progress::Done => bar.finish_and_clear(),
    })
}

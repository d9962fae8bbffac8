//! `pgharness testdb`: serving test databases through `IntegreSQL`'s API (`serve`, `run`) and the
//! databases kept after failed tests (`list`, `drop`, `psql`).

use std::process::ExitCode;

use pgharness::config::DatabaseUrl;
use pgharness::testing::server::KeptDatabase;

use super::{ServeArgs, TestdbAction};

impl ServeArgs {
    fn options(&self, port: u16) -> pgharness::testing::integresql::ServeOptions {
        use pgharness::testing::integresql::{PoolSettings, ServeOptions};
        ServeOptions {
            host: self.host.clone(),
            port,
            pool: PoolSettings {
                ready_per_template: self.ready,
                max_databases: self.max_databases.max(1),
                abandon_after: std::time::Duration::from_secs(self.abandon_after.max(1)),
                ..PoolSettings::default()
            },
        }
    }
}

/// `pgharness testdb …`.
pub(super) async fn run(action: &TestdbAction) -> ExitCode {
    use pgharness::testing::server;
    match action {
        TestdbAction::Serve { options } => return serve_testdbs(options).await,
        TestdbAction::Run { options, command } => return run_with_testdbs(options, command).await,
        TestdbAction::List | TestdbAction::Drop { .. } | TestdbAction::Psql { .. } => {}
    }
    // Started again if it has stopped since the tests ended (the kept databases are in it),
    // and held while this command (and its psql) runs.
    let admin = match server::attach().await {
        Ok(attached) => attached.admin,
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    let kept = match server::kept_databases(&admin).await {
        Ok(kept) => kept,
        Err(error) => {
            eprintln!("✗ cannot list the kept test databases: {error}");
            return ExitCode::FAILURE;
        }
    };
    match action {
        TestdbAction::List => {
            list_served(&admin).await;
            list_kept(&admin, &kept)
        }
        TestdbAction::Drop { name, all } => drop_kept(&admin, &kept, name.as_deref(), *all).await,
        TestdbAction::Psql { name } => open_kept(&admin, &kept, name),
        TestdbAction::Serve { .. } | TestdbAction::Run { .. } => ExitCode::SUCCESS,
    }
}

/// `testdb serve`: the `IntegreSQL` API until Ctrl-C or SIGTERM.
async fn serve_testdbs(arguments: &ServeArgs) -> ExitCode {
    use pgharness::testing::integresql::Listening;
    let shutdown = match pgharness::platform::signals::shutdown_requested() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("✗ cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let listening = match Listening::bind(&arguments.options(arguments.port)).await {
        Ok(listening) => listening,
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    let url = listening.url();
    println!("Test databases (IntegreSQL API) at {url}");
    println!("  Python, Go, Java: INTEGRESQL_CLIENT_BASE_URL={url}/api");
    println!("  Node: new IntegreSQLClient({{ url: '{url}' }})");
    println!("Press Ctrl-C to stop.");
    match listening.run_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("✗ {error}");
            ExitCode::FAILURE
        }
    }
}

/// `testdb run -- COMMAND…`: the API on a free port while the command runs; its exit status.
async fn run_with_testdbs(arguments: &ServeArgs, command: &[String]) -> ExitCode {
    use pgharness::testing::integresql::{Listening, client_environment};
    let Some((program, rest)) = command.split_first() else {
        eprintln!("✗ name the command to run after `--`");
        return ExitCode::FAILURE;
    };
    // Ctrl-C reaches the command too (same process group): this process outlives it, to drop
    // the databases it made once the command has ended.
    let _outlive_interrupts = pgharness::platform::signals::shutdown_requested();
    let listening = match Listening::bind(&arguments.options(0)).await {
        Ok(listening) => listening,
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    let url = listening.url();
    // On stderr: the command's output stays its own.
    eprintln!(
        "pgharness: test databases at {url} (INTEGRESQL_CLIENT_BASE_URL={url}/api, \
         INTEGRESQL_URL={url}, PGHARNESS_TEST_POOL_URL={url}; Node: new IntegreSQLClient({{ url: \
         process.env.INTEGRESQL_URL }}))"
    );
    let mut child = match tokio::process::Command::new(program)
        .args(rest)
        .envs(client_environment(&url))
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            eprintln!("✗ cannot run {program}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let (finished, done) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(listening.run_until(async {
        let _ = done.await;
    }));
    let status = child.wait().await;
    let _ = finished.send(());
    if let Ok(Err(error)) = serving.await {
        eprintln!("✗ {error}");
    }
    match status {
        Ok(status) => status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(error) => {
            eprintln!("✗ {program} failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The templates `testdb serve` processes hold, if any.
async fn list_served(admin: &DatabaseUrl) {
    use sqlx::Connection as _;
    let served = match sqlx::PgConnection::connect_with(&admin.connect_options()).await {
        Ok(mut connection) => {
            pgharness::testing::integresql::served_templates(&mut connection).await
        }
        Err(error) => Err(error),
    };
    match served {
        Ok(served) => {
            for template in served {
                #[expect(clippy::cast_precision_loss, reason = "megabytes to one decimal")]
                let megabytes = template.bytes as f64 / 1e6;
                println!(
                    "served by testdb serve (pid {}): template {}  {} test database(s), {megabytes:.1} MB  ({})",
                    template.pid, template.hash, template.test_databases, template.database
                );
            }
        }
        Err(error) => eprintln!("✗ cannot list the served templates: {error}"),
    }
}

fn list_kept(admin: &DatabaseUrl, kept: &[KeptDatabase]) -> ExitCode {
    if kept.is_empty() {
        println!("No kept test databases.");
    }
    for database in kept {
        let age = database
            .kept_at
            .elapsed()
            .map_or(0, |age| age.as_secs() / 60);
        println!(
            "{}  kept {age} min ago  {} {}\n  psql '{}'",
            database.name,
            database.crate_name,
            database.test,
            pgharness::testing::server::psql_url(admin, &database.name)
        );
    }
    ExitCode::SUCCESS
}

async fn drop_kept(
    admin: &DatabaseUrl,
    kept: &[KeptDatabase],
    name: Option<&str>,
    all: bool,
) -> ExitCode {
    let names: Vec<&str> = match (name, all) {
        (Some(name), _) if is_kept(kept, name) => vec![name],
        (Some(name), _) => {
            eprintln!("✗ {name} is not a kept test database: see `pgharness testdb list`");
            return ExitCode::FAILURE;
        }
        (None, true) => kept.iter().map(|database| database.name.as_str()).collect(),
        (None, false) => {
            eprintln!("✗ name a database to drop, or give --all");
            return ExitCode::FAILURE;
        }
    };
    for name in names {
        if let Err(error) = pgharness::testing::server::drop_database(admin, name).await {
            eprintln!("✗ cannot drop {name}: {error}");
            return ExitCode::FAILURE;
        }
        println!("Dropped {name}");
    }
    ExitCode::SUCCESS
}

fn open_kept(admin: &DatabaseUrl, kept: &[KeptDatabase], name: &str) -> ExitCode {
    if !is_kept(kept, name) {
        eprintln!("✗ {name} is not a kept test database: see `pgharness testdb list`");
        return ExitCode::FAILURE;
    }
    let url = pgharness::testing::server::psql_url(admin, name);
    match std::process::Command::new("psql").arg(&url).status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("✗ cannot run psql ({error}); open it yourself: psql '{url}'");
            ExitCode::FAILURE
        }
    }
}

fn is_kept(kept: &[KeptDatabase], name: &str) -> bool {
    kept.iter().any(|database| database.name == name)
}

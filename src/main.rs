//! The `pgharness` command line: a thin front end over [`pgharness::Harness`].

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pgharness::binaries::{Progress, ProgressSink};
use pgharness::config::Config;
use pgharness::{Harness, check, telemetry};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack and run until Ctrl-C (the default).
    Serve,
    /// Test the database connection, like the guide's test_db_connection.py (exit 1 on failure).
    Check,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    telemetry::init(match command {
        Command::Serve => "info",
        Command::Check => "warn",
    });
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("✗ Configuration error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let harness = match Harness::start(config, &progress_bar()).await {
        Ok(harness) => harness,
        Err(error) => {
            eprintln!("✗ {error}");
            return ExitCode::FAILURE;
        }
    };
    let succeeded = match command {
        Command::Serve => serve(&harness).await,
        Command::Check => {
            let report = check::run(harness.config(), harness.url()).await;
            print!("{}", report.text());
            report.succeeded()
        }
    };
    if let Err(error) = harness.shutdown().await {
        eprintln!("✗ {error}");
        return ExitCode::FAILURE;
    }
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(harness: &Harness) -> bool {
    // Handlers first: a signal that arrives once "ready" is printed must stop us cleanly.
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("✗ cannot install signal handlers: {error}");
            return false;
        }
    };
    if let Err(error) = harness.pool().acquire().await {
        let failure = pgharness::database::ConnectionFailure::new(&error);
        eprintln!("✗ Cannot connect to {}: {failure}", harness.url());
        for remedy in failure.kind.remedies(harness.url()) {
            eprintln!("  - {remedy}");
        }
        return false;
    }
    println!("PostgreSQL is ready at {}", harness.url());
    if let Some(server) = harness.server() {
        println!("  data directory: {}", server.data_dir().display());
        if let Some(owner) = server.owner_pid() {
            println!("  (attached to the server run by pgharness pid {owner})");
        }
    }
    println!("Press Ctrl-C to stop.");
    shutdown.await;
    println!("Stopping...");
    true
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
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

//! `pgharness migrate`: creating, applying, reverting and stamping migrations, and reporting
//! their status and the schema's drift.

use std::process::ExitCode;

use pgharness::config::Config;
use pgharness::migrations::Migrations;
use pgharness::{Harness, HarnessError};

use super::{MigrateAction, with_harness};

/// `pgharness migrate …`.
pub(super) async fn run(config: Config, action: MigrateAction) -> ExitCode {
    match action {
        MigrateAction::New { name } => new(&config, &name).await,
        MigrateAction::Up { target } => {
            with_harness(config, async |harness| up(harness, target).await).await
        }
        MigrateAction::Down { steps } => {
            with_harness(config, async |harness| down(harness, steps).await).await
        }
        MigrateAction::History => with_harness(config, history).await,
        MigrateAction::Current => with_harness(config, current).await,
        MigrateAction::Stamp { revision } => {
            with_harness(config, async |harness| stamp(harness, &revision).await).await
        }
        MigrateAction::Status => with_harness(config, status).await,
        MigrateAction::Check => with_harness(config, check).await,
    }
}

async fn new(config: &Config, name: &str) -> ExitCode {
    let created = match Migrations::configured(config.migrations.dir.as_deref()).await {
        Ok(migrations) => migrations.create(name),
        Err(error) => Err(error),
    };
    match created {
        Ok((up, down)) => {
            println!("Created {}\nCreated {}", up.display(), down.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("✗ {error}");
            ExitCode::FAILURE
        }
    }
}

async fn up(harness: &Harness, target: Option<i64>) -> Result<bool, HarnessError> {
    let applied = harness
        .migrations()
        .up(harness.database().maintenance_pool(), target)
        .await?;
    if applied.is_empty() {
        println!("Already up to date.");
    }
    for entry in applied {
        println!("Applied {}  {}", entry.version, entry.file);
    }
    Ok(true)
}

async fn down(harness: &Harness, steps: usize) -> Result<bool, HarnessError> {
    let reverted = harness
        .migrations()
        .down(harness.database().maintenance_pool(), steps)
        .await?;
    if reverted.is_empty() {
        println!("Nothing to revert: no migration is applied.");
    }
    for entry in reverted {
        println!("Reverted {}  {}", entry.version, entry.description);
    }
    Ok(true)
}

async fn history(harness: &Harness) -> Result<bool, HarnessError> {
    print!(
        "{}",
        harness
            .migrations()
            .status(harness.database().maintenance_pool())
            .await?
    );
    Ok(true)
}

async fn current(harness: &Harness) -> Result<bool, HarnessError> {
    let status = harness
        .migrations()
        .status(harness.database().maintenance_pool())
        .await?;
    match status.current() {
        Some(current) => {
            let head = status.migrations.last() == Some(current);
            let head = if head { " (head)" } else { "" };
            println!("{}  {}{head}", current.version, current.description);
        }
        None => println!("No migration applied."),
    }
    Ok(true)
}

async fn stamp(harness: &Harness, revision: &str) -> Result<bool, HarnessError> {
    let target = if revision.eq_ignore_ascii_case("head") {
        None
    } else if let Ok(version) = revision.parse() {
        Some(version)
    } else {
        eprintln!("✗ `{revision}` is not a migration version: give a version number or `head`");
        return Ok(false);
    };
    let (migrations, pool) = (harness.migrations(), harness.database().maintenance_pool());
    migrations.stamp(pool, target).await?;
    let status = migrations.status(pool).await?;
    match status.current() {
        Some(current) => println!(
            "Stamped the database at {}  {}",
            current.version, current.description
        ),
        None => println!("Stamped the database: no migration applied."),
    }
    Ok(true)
}

async fn status(harness: &Harness) -> Result<bool, HarnessError> {
    let status = harness
        .migrations()
        .status(harness.database().maintenance_pool())
        .await?;
    print!("{status}");
    for entry in status.modified() {
        println!(
            "✗ {} was changed after it was applied: restore it, or write a new migration",
            entry.file
        );
    }
    for (version, description) in &status.missing {
        println!(
            "✗ migration {version} ({description}) is applied but has no file: the database is ahead of this code"
        );
    }
    let pending = status.pending().count();
    if pending > 0 {
        println!(
            "✗ Target database is not up to date: {pending} pending migration(s). Run `pgharness migrate up`"
        );
    }
    if status.is_clean() {
        println!("✓ Database is up to date.");
    }
    Ok(status.is_clean())
}

async fn check(harness: &Harness) -> Result<bool, HarnessError> {
    let differences = harness.drift().await?;
    if differences.is_empty() {
        println!("✓ No drift: the live schema matches the migrations.");
        return Ok(true);
    }
    println!(
        "✗ Schema drift: {} difference(s) between the migrations and the live database:",
        differences.len()
    );
    for difference in differences {
        println!("  {difference}");
    }
    Ok(false)
}

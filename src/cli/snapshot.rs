//! `pgharness snapshot`: save, restore, list and delete named snapshots of the dev database,
//! on the server a running `serve` or desktop app holds (attached to, as `check` does) or on one
//! started for the command.

use std::process::ExitCode;

use pgharness::Harness;
use pgharness::config::Config;
use pgharness::dev_data::DevData;
use pgharness::dev_data::snapshots::{ReadyCopyDue, Snapshot, SnapshotError};

use super::{SnapshotAction, with_harness};

/// `pgharness snapshot …`.
pub(super) async fn run(config: Config, action: SnapshotAction) -> ExitCode {
    with_harness(config, async |harness| {
        let dev_data = harness.dev_data();
        let result = match action {
            SnapshotAction::Save { name } => save(harness, &dev_data, &name).await,
            SnapshotAction::Restore { name, migrate } => {
                restore(harness, &dev_data, &name, migrate).await
            }
            SnapshotAction::List => list(harness, &dev_data).await,
            SnapshotAction::Delete { name } => dev_data
                .delete_snapshot(harness.url(), &name)
                .await
                .map(|()| println!("Deleted snapshot {name}")),
        };
        if let Err(error) = &result {
            eprintln!("✗ {error}");
        }
        Ok(result.is_ok())
    })
    .await
}

async fn save(harness: &Harness, dev_data: &DevData, name: &str) -> Result<(), SnapshotError> {
    let (snapshot, ready_copy) = dev_data
        .save_snapshot(
            harness.url(),
            harness.database(),
            harness.migrations(),
            name,
        )
        .await?;
    println!(
        "Saved {} as snapshot {name} ({}, {})",
        harness.url().database,
        megabytes(snapshot.size_bytes),
        migration_of(&snapshot)
    );
    make(ready_copy).await;
    Ok(())
}

async fn restore(
    harness: &Harness,
    dev_data: &DevData,
    name: &str,
    migrate: bool,
) -> Result<(), SnapshotError> {
    let (restored, ready_copy) = dev_data
        .restore_snapshot(
            harness.url(),
            harness.database(),
            harness.migrations(),
            name,
            migrate,
        )
        .await?;
    println!(
        "Restored snapshot {name} into {} (saved {}, {})",
        harness.url().database,
        restored
            .snapshot
            .created_at
            .as_deref()
            .unwrap_or("at an unknown time"),
        migration_of(&restored.snapshot)
    );
    for entry in &restored.migrated {
        println!("Applied {}  {}", entry.version, entry.file);
    }
    if let Some(notice) = restored.notice() {
        println!("⚠ {notice}");
    }
    make(ready_copy).await;
    Ok(())
}

/// Makes the snapshot's ready copy, which the next restore swaps in without copying. Its
/// failure is a warning: the save or restore is done, the next restore copies first.
async fn make(ready_copy: ReadyCopyDue) {
    let name = ready_copy.snapshot().to_owned();
    println!("Copying snapshot {name} now, so that its next restore copies nothing");
    if let Err(error) = ready_copy.make().await {
        eprintln!(
            "⚠ {error}. The next restore of {name} copies the snapshot first (slower), then \
             tries again"
        );
    }
}

async fn list(harness: &Harness, dev_data: &DevData) -> Result<(), SnapshotError> {
    let listing = dev_data.snapshots(harness.url()).await?;
    if listing.snapshots.is_empty() {
        println!("No snapshots. Save one with `pgharness snapshot save NAME`.");
        return Ok(());
    }
    println!("{:<40}  {:>10}  {:<20}  MIGRATION", "NAME", "SIZE", "SAVED");
    for snapshot in &listing.snapshots {
        println!(
            "{:<40}  {:>10}  {:<20}  {}",
            snapshot.name,
            megabytes(snapshot.size_bytes),
            snapshot.created_at.as_deref().unwrap_or("?"),
            migration_of(snapshot)
        );
    }
    println!(
        "{} snapshot(s), {} in all (sizes include each snapshot's ready copy for a restore)",
        listing.snapshots.len(),
        megabytes(listing.total_bytes)
    );
    Ok(())
}

fn megabytes(bytes: i64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let megabytes = bytes as f64 / 1_000_000.0;
    format!("{megabytes:.1} MB")
}

fn migration_of(snapshot: &Snapshot) -> String {
    match (snapshot.migration, &snapshot.migration_description) {
        (Some(version), Some(description)) => format!("migration {version} {description}"),
        (Some(version), None) => format!("migration {version}"),
        (None, _) => "no migration".to_owned(),
    }
}

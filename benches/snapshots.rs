//! `cargo bench --bench snapshots`: saving and restoring a named snapshot of the dev database.
//!
//! Starts the stack in-process as `pgharness serve` does (embedded `PostgreSQL` 16, durable as
//! the dev server is: fsync on; the API's pool connected), fills the database to 10 MB and to
//! 100 MB, and at each size saves a snapshot and restores it in several rounds. Prints the
//! median and p99 of each, with the size on disk: a save until the snapshot exists, a restore
//! until the database is restored (from the ready copy the save left), and the ready copy made
//! again after the restore. Target: under 1 s for a save and a restore at 100 MB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pgharness::Stack;
use pgharness::config::Config;

const ROUNDS: usize = 9;
const TARGET: Duration = Duration::from_secs(1);

fn percentile(mut samples: Vec<Duration>, fraction: f64) -> Duration {
    samples.sort();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a handful of samples"
    )]
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

/// Prints the median and p99 of `samples`, measured against [`TARGET`] when `targeted`.
fn report(name: &str, samples: Vec<Duration>, targeted: bool) {
    let (median, p99) = (percentile(samples.clone(), 0.5), percentile(samples, 0.99));
    let verdict = match (targeted, p99 < TARGET) {
        (false, _) => "",
        (true, true) => "under 1 s",
        (true, false) => "OVER 1 s",
    };
    println!(
        "{name:<28} median {:>7.1} ms   p99 {:>7.1} ms   {verdict}",
        median.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
    );
}

/// Adds rows of about 1 kB until the database takes `megabytes` on disk.
async fn fill_to(stack: &Stack, megabytes: i64) -> i64 {
    let pool = stack.harness().database().maintenance_pool();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS filler (id bigserial PRIMARY KEY, payload text NOT NULL)",
    )
    .execute(pool)
    .await
    .unwrap();
    loop {
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(pool)
            .await
            .unwrap();
        if size >= megabytes * 1_000_000 {
            return size;
        }
        sqlx::raw_sql(
            "INSERT INTO filler (payload) \
             SELECT repeat(md5(random()::text), 30) FROM generate_series(1, 5000)",
        )
        .execute(pool)
        .await
        .unwrap();
    }
}

async fn measure(stack: &Stack, megabytes: i64) {
    let size = fill_to(stack, megabytes).await;
    let harness = stack.harness();
    let dev_data = harness.dev_data();
    let (url, database, migrations) = (harness.url(), harness.database(), harness.migrations());
    let (mut saves, mut restores, mut ready_copies) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let name = format!("bench-{megabytes}-{round}");
        let started = Instant::now();
        let (_, ready_copy) = dev_data
            .save_snapshot(url, database, migrations, &name)
            .await
            .unwrap();
        saves.push(started.elapsed());
        ready_copy.make().await.unwrap();
        let started = Instant::now();
        let (restore, ready_copy) = dev_data
            .restore_snapshot(url, database, migrations, &name, false)
            .await
            .unwrap();
        restores.push(started.elapsed());
        assert!(restore.snapshot.ready, "restored without the ready copy");
        let started = Instant::now();
        ready_copy.make().await.unwrap();
        ready_copies.push(started.elapsed());
        dev_data.delete_snapshot(url, &name).await.unwrap();
    }
    #[expect(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let shown = size as f64 / 1_000_000.0;
    println!("{shown:.1} MB on disk, {ROUNDS} rounds");
    report(&format!("save at {megabytes} MB"), saves, true);
    report(&format!("restore at {megabytes} MB"), restores, true);
    // Made after the restore has answered: no target.
    report(
        &format!("ready copy at {megabytes} MB"),
        ready_copies,
        false,
    );
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let directory = pgharness::platform::files::scratch_dir().unwrap();
    let data_dir = directory.path().join("data").display().to_string();
    runtime.block_on(async {
        pgharness::telemetry::init("warn");
        let config = Config::from_lookup(|name| match name {
            "PGHARNESS_DATA_DIR" => Some(data_dir.clone()),
            "APP_HOST" => Some("127.0.0.1".to_owned()),
            "APP_PORT" => Some("0".to_owned()),
            _ => std::env::var(name).ok(),
        })
        .unwrap();
        let stack = Stack::start(config, &pgharness::progress::quiet())
            .await
            .unwrap();
        for megabytes in [10, 100] {
            measure(&stack, megabytes).await;
        }
        stack.shutdown().await.unwrap();
    });
}

//! `cargo bench --bench snapshots`: saving and restoring a named snapshot of the dev database.
//!
//! Starts the stack in-process as `pgharness serve` does (embedded `PostgreSQL` 16, durable as
//! the dev server is: fsync on; the API's pool connected), fills the database to 10 MB and to
//! 100 MB, and at each size saves a snapshot and restores it in several rounds. Prints the
//! median and p99 of each, with the size on disk. Target: under 1 s each at 100 MB.

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

fn report(name: &str, samples: Vec<Duration>) {
    let (median, p99) = (percentile(samples.clone(), 0.5), percentile(samples, 0.99));
    println!(
        "{name:<28} median {:>7.1} ms   p99 {:>7.1} ms   {}",
        median.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        if p99 < TARGET {
            "under 1 s"
        } else {
            "OVER 1 s"
        }
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
    let (mut saves, mut restores) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let name = format!("bench-{megabytes}-{round}");
        let started = Instant::now();
        dev_data
            .save_snapshot(url, database, migrations, &name)
            .await
            .unwrap();
        saves.push(started.elapsed());
        let started = Instant::now();
        dev_data
            .restore_snapshot(url, database, migrations, &name, false)
            .await
            .unwrap();
        restores.push(started.elapsed());
        dev_data.delete_snapshot(url, &name).await.unwrap();
    }
    #[expect(clippy::cast_precision_loss, reason = "a size shown to one decimal")]
    let shown = size as f64 / 1_000_000.0;
    println!("{shown:.1} MB on disk, {ROUNDS} rounds");
    report(&format!("save at {megabytes} MB"), saves);
    report(&format!("restore at {megabytes} MB"), restores);
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

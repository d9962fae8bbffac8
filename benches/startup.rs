//! `cargo bench --bench startup`: medians of embedded server start-up, binaries cached.
//!
//! - warm start: an existing data directory, to accepting connections;
//! - new data dir: a new cluster (template copy or initdb) and start;
//! - reference: raw `pg_ctl start -w` of the same binaries on the same existing cluster,
//!   measured in the same run (the floor the harness is compared to).
//!
//! Targets on a 2-core machine: warm ≤ 250 ms, new data dir ≤ 1.5 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use pgharness::binaries::{self, Binaries};
use pgharness::config::Config;
use pgharness::embedded::{EmbeddedServer, Privilege, ServerOptions};
use sqlx::Connection as _;

const ROUNDS: usize = 15;

/// As `pgharness serve` runs it (durable), in `home`.
fn options(home: &std::path::Path) -> ServerOptions {
    ServerOptions {
        durable: true,
        ..ServerOptions::throwaway(home, "app_db")
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(name: &str, samples: Vec<Duration>, target: Option<Duration>) {
    let (min, max) = (
        *samples.iter().min().unwrap(),
        *samples.iter().max().unwrap(),
    );
    let median = median(samples);
    let verdict = match target {
        Some(target) if median <= target => format!("target ≤ {} ms: met", target.as_millis()),
        Some(target) => format!("target ≤ {} ms: MISSED", target.as_millis()),
        None => "reference".to_owned(),
    };
    println!(
        "{name:<34} median {:>6.1} ms   (min {:.1}, max {:.1}, n={ROUNDS})   {verdict}",
        median.as_secs_f64() * 1000.0,
        min.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
    );
}

/// Time from asking for the server to a first connection; the server is stopped afterwards.
async fn time_start(binaries: &pgharness::binaries::Binaries, home: &std::path::Path) -> Duration {
    let started = Instant::now();
    let server = EmbeddedServer::start(binaries, &options(home))
        .await
        .unwrap();
    let connection = sqlx::PgConnection::connect(&server.url().expose_url())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    connection.close().await.unwrap();
    server.stop().await.unwrap();
    elapsed
}

/// The reference: raw `pg_ctl start -w` on the cluster in `home`, under the same privilege
/// wrapper.
fn time_raw_pg_ctl(binaries: &Binaries, home: &std::path::Path) -> Vec<Duration> {
    let privilege = Privilege::detect(&pgharness::embedded::RootSettings::default()).unwrap();
    let pg_ctl = binaries.bin_dir().join("pg_ctl");
    let pgdata = home.join("pgdata");
    let mut raw = Vec::new();
    for _ in 0..ROUNDS {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args =
            |words: &[&str]| -> Vec<std::ffi::OsString> { words.iter().map(Into::into).collect() };
        let start_args = args(&[
            "start",
            "-w",
            "-D",
            pgdata.to_str().unwrap(),
            "-l",
            home.join("raw.log").to_str().unwrap(),
            "-o",
            &format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"),
        ]);
        let started = Instant::now();
        let status = privilege
            .command(&pg_ctl, &start_args, &[])
            .output()
            .unwrap();
        raw.push(started.elapsed());
        assert!(status.status.success());
        let stop_args = args(&["stop", "-w", "-m", "fast", "-D", pgdata.to_str().unwrap()]);
        privilege
            .command(&pg_ctl, &stop_args, &[])
            .output()
            .unwrap();
    }
    raw
}

#[tokio::main]
async fn main() {
    pgharness::telemetry::init("warn");
    let config = Config::from_process_env().unwrap();
    let settings = config.embedded;
    let binaries = binaries::provision(&(&settings).into(), &pgharness::progress::quiet())
        .await
        .unwrap();
    println!(
        "PostgreSQL {} from {}",
        binaries.version,
        binaries.installation_dir.display()
    );

    // New data directory each round (the first round may also build the cluster template).
    let mut new_dir = Vec::new();
    for _ in 0..ROUNDS {
        let home = pgharness::platform::files::scratch_dir().unwrap();
        new_dir.push(time_start(&binaries, home.path()).await);
    }

    // Existing data directory.
    let home = pgharness::platform::files::scratch_dir().unwrap();
    time_start(&binaries, home.path()).await;
    let mut warm = Vec::new();
    for _ in 0..ROUNDS {
        warm.push(time_start(&binaries, home.path()).await);
    }

    let raw = time_raw_pg_ctl(&binaries, home.path());

    report(
        "warm start (existing data dir)",
        warm,
        Some(Duration::from_millis(250)),
    );
    report(
        "new data dir (create + start)",
        new_dir,
        Some(Duration::from_millis(1500)),
    );
    report("raw pg_ctl start -w (reference)", raw, None);
}

//! `pgharness testdb serve`'s pool, in this process, and what is measured against it: handouts
//! over HTTP, connecting to a handed-out database, and clones made at once or in a row.

use std::path::Path;
use std::time::{Duration, Instant};

use pgharness::testing::integresql::{Listening, PoolSettings, ServeOptions};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

/// The pool, served on a free loopback port by a thread of its own until dropped, keeping
/// `ready` databases ready per template.
pub struct PoolServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PoolServer {
    pub fn start(ready: usize) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (listening, url) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let options = ServeOptions {
                    host: "127.0.0.1".to_owned(),
                    port: 0,
                    pool: PoolSettings {
                        ready_per_template: ready,
                        ..PoolSettings::default()
                    },
                };
                let served = Listening::bind(&options).await.unwrap();
                listening.send(served.url()).unwrap();
                served
                    .run_until(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            url: url.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for PoolServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A handed-out database's URL, as its own role sees it.
fn url_of(config: &Value) -> String {
    format!(
        "postgresql://{}:{}@{}:{}/{}",
        config["username"].as_str().unwrap(),
        config["password"].as_str().unwrap(),
        config["host"].as_str().unwrap(),
        config["port"],
        config["database"].as_str().unwrap()
    )
}

/// Handouts over HTTP from a warm pool, each on a new connection (as a test process makes
/// it), with a pause between them for the pool to refill; each database is given back to be
/// made again. Also, per handout, connecting to the database and a first query done, twice: the
/// first connection to a fresh clone, and a second one.
pub struct HttpHandouts {
    pub handout: Vec<Duration>,
    pub first_connection: Vec<Duration>,
    pub second_connection: Vec<Duration>,
}

pub async fn http_handouts(pool: &str, migrations: &Path, samples: usize) -> HttpHandouts {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let hash = format!("bench-{}", std::process::id());
    let initialized: Value = client
        .post(format!("{pool}/api/v1/templates"))
        .json(&json!({ "hash": hash }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let template: PgConnectOptions = url_of(&initialized["database"]["config"]).parse().unwrap();
    migrate(template, migrations).await;
    let finalized = client
        .put(format!("{pool}/api/v1/templates/{hash}"))
        .send()
        .await
        .unwrap();
    assert_eq!(finalized.status(), 204);
    let mut times = HttpHandouts {
        handout: Vec::new(),
        first_connection: Vec::new(),
        second_connection: Vec::new(),
    };
    // The first few are not sampled: the pool fills after the template is finalized.
    for sample in 0..samples + 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let answer: Value = client
            .get(format!("{pool}/api/v1/templates/{hash}/tests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let took = started.elapsed();
        let options: PgConnectOptions = url_of(&answer["database"]["config"]).parse().unwrap();
        let mut connections = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let mut connection = options.connect().await.unwrap();
            sqlx::query("SELECT 1")
                .execute(&mut connection)
                .await
                .unwrap();
            connections.push(started.elapsed());
            connection.close().await.unwrap();
        }
        if sample >= 5 {
            times.handout.push(took);
            times.first_connection.push(connections[0]);
            times.second_connection.push(connections[1]);
        }
        let id = &answer["id"];
        let given_back = client
            .post(format!(
                "{pool}/api/v1/templates/{hash}/tests/{id}/recreate"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(given_back.status(), 204);
    }
    times
}

/// Connecting to the shared server's `postgres` database as its superuser and a first query
/// done: over TCP on loopback, and through the Unix socket in the server's home.
pub async fn connection_costs(admin: &str, samples: usize) -> Vec<(&'static str, Vec<Duration>)> {
    let tcp: PgConnectOptions = admin.parse().unwrap();
    let home = pgharness::testing::server::TestSettings::get()
        .run_dir
        .join("server");
    let mut ways = vec![("TCP on loopback", tcp.clone())];
    if home.join(format!(".s.PGSQL.{}", tcp.get_port())).exists() {
        ways.push(("Unix socket", tcp.socket(&home)));
    }
    let mut costs = Vec::new();
    for (way, options) in ways {
        let mut times = Vec::new();
        for _ in 0..samples {
            let started = Instant::now();
            let mut connection = options.connect().await.unwrap();
            sqlx::query("SELECT 1")
                .execute(&mut connection)
                .await
                .unwrap();
            times.push(started.elapsed());
            connection.close().await.unwrap();
        }
        costs.push((way, times));
    }
    costs
}

/// `count` clones of a template of `migrations` with `strategy`, one after another on one
/// connection, then all at once on a connection each: per clone, and the checkpoints the
/// server ran meanwhile.
pub struct Clones {
    pub in_a_row: Vec<Duration>,
    pub in_a_row_checkpoints: i64,
    pub at_once: Vec<Duration>,
    pub at_once_wall: Duration,
    pub at_once_checkpoints: i64,
}

pub async fn clones(admin: &str, migrations: &Path, strategy: &str, count: usize) -> Clones {
    let admin: PgConnectOptions = admin.parse().unwrap();
    let mut connection = admin.connect().await.unwrap();
    let template = format!("bench_clone_source_{}", std::process::id());
    execute(
        &mut connection,
        &format!("DROP DATABASE IF EXISTS {template}"),
    )
    .await;
    execute(&mut connection, &format!("CREATE DATABASE {template}")).await;
    migrate(admin.clone().database(&template), migrations).await;
    let clone = |index: usize| {
        format!("CREATE DATABASE bench_clone_{index} TEMPLATE {template} STRATEGY {strategy}")
    };
    let checkpoints_before = checkpoints(&mut connection).await;
    let mut in_a_row = Vec::new();
    for index in 0..count {
        let started = Instant::now();
        execute(&mut connection, &clone(index)).await;
        in_a_row.push(started.elapsed());
    }
    let in_a_row_checkpoints = checkpoints(&mut connection).await - checkpoints_before;
    drop_clones(&mut connection, count).await;
    let mut sessions = Vec::new();
    for _ in 0..count {
        sessions.push(admin.connect().await.unwrap());
    }
    let checkpoints_before = checkpoints(&mut connection).await;
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for (index, mut session) in sessions.into_iter().enumerate() {
        let statement = clone(index);
        running.spawn(async move {
            let started = Instant::now();
            execute(&mut session, &statement).await;
            started.elapsed()
        });
    }
    let at_once = running.join_all().await;
    let at_once_wall = started.elapsed();
    let at_once_checkpoints = checkpoints(&mut connection).await - checkpoints_before;
    drop_clones(&mut connection, count).await;
    execute(&mut connection, &format!("DROP DATABASE {template}")).await;
    Clones {
        in_a_row,
        in_a_row_checkpoints,
        at_once,
        at_once_wall,
        at_once_checkpoints,
    }
}

/// The database `options` names, migrated with `migrations`.
async fn migrate(options: PgConnectOptions, migrations: &Path) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    pgharness::migrations::Migrations::from_dir(migrations)
        .await
        .unwrap()
        .up(&pool, None)
        .await
        .unwrap();
    pool.close().await;
}

async fn execute(connection: &mut PgConnection, statement: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(connection)
        .await
        .unwrap();
}

async fn checkpoints(connection: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        .fetch_one(connection)
        .await
        .unwrap()
}

async fn drop_clones(connection: &mut PgConnection, count: usize) {
    for index in 0..count {
        execute(
            connection,
            &format!("DROP DATABASE IF EXISTS bench_clone_{index}"),
        )
        .await;
    }
}
